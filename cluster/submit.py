"""Ray job submission for dspex: the runtime environment dspex ships in, and the submitter.

    sub = Submitter("http://127.0.0.1:8265")
    s = sub.submit("optimize", {...})            # job record + Ray job, submission id = job id
    sub.follow(s.job_id)                          # tail the logs until it ends

**The runtime environment.** actors/, pipelines/ and cluster/ install as ``dspex.actors``,
``dspex.pipelines`` and ``dspex.cluster`` (DESIGN.md), so a Ray job cannot get dspex from a
``working_dir`` copy of the repository: it gets the dspex wheel in ``py_modules``. The wheel
is built with ``pip wheel --no-deps`` from the source tree and cached under
``$DSPEX_HOME/wheels/<digest of the sources>/`` (rebuilt only when a source file changes).
Ray installs a ``py_modules`` wheel with ``pip install --target`` *including its
dependencies*, which would put ray, numpy and ~100 other packages into every job's
environment (measured: a dry run resolves 110 packages); so the cached wheel is **code only**
(its ``Requires-Dist`` lines removed): the cluster's Python provides the dependencies, as its
nodes must anyway to run Ray, and ``pip=[...]`` adds any a job needs beyond them.

``env_vars`` carries ``DSPEX_DATABASE_URL`` (absolute for an SQLite file) so the job writes
to the same store, and ``DSPEX_HOME``; never a password or an API key: Ray shows a job's
runtime_env on its dashboard, so a URL with a password is left out (set it in the cluster's
environment), and models name the variable holding their key, never the key.

**Submission.** The job record is written first, then the Ray job is submitted with
``submission_id`` = the job's id and entry point ``python -m dspex.jobs.<kind> --job-id <id>``.
Submitting the same id again finds the record and the Ray job and starts nothing; the entry
point itself refuses to run a job that is already completed. So a submission is idempotent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspex.errors import ConfigurationError, JobError, NotFound

__all__ = [
    "ENTRYPOINT_MODULES",
    "Submission",
    "Submitter",
    "build_wheel",
    "code_only_wheel",
    "entrypoint",
    "project_root",
    "runtime_env",
    "source_digest",
]

#: job kind -> the ``dspex.jobs`` module whose entry point runs it (others: ``run``)
ENTRYPOINT_MODULES = {"optimize": "optimize", "evaluate": "evaluate", "experiment": "experiment", "health_check": "health"}
_SOURCE_DIRS = ("dspex", "actors", "pipelines", "cluster")
_SOURCE_SUFFIXES = frozenset({".py", ".toml", ".json", ".yaml", ".yml", ".ini", ".mako", ".md", ".typed"})
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


# -- the wheel ------------------------------------------------------------------------------
def project_root() -> Path | None:
    """The source tree dspex was installed from (an editable install), or None."""
    import dspex

    root = Path(dspex.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "dspex"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def source_digest(root: Path) -> str:
    """A digest of every source file's path, size and modification time."""
    h = hashlib.sha256()
    files = [root / "pyproject.toml"]
    for top in _SOURCE_DIRS:
        files += [p for p in (root / top).rglob("*") if p.suffix in _SOURCE_SUFFIXES and "__pycache__" not in p.parts]
    for p in sorted(files):
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def code_only_wheel(src: Path, dst: Path) -> Path:
    """Copy the wheel ``src`` to ``dst`` without its dependency metadata (``Requires-Dist``,
    ``Provides-Extra``), with a RECORD that matches."""
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        meta = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        record = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
        if meta is None or record is None:
            raise JobError(f"{src} is not a wheel (no METADATA or RECORD).")
        header, sep, body = zin.read(meta).decode("utf-8").partition("\n\n")
        kept = [ln for ln in header.split("\n") if not ln.startswith(("Requires-Dist:", "Provides-Extra:"))]
        new_meta = ("\n".join(kept) + sep + body).encode("utf-8")
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
        rows = []
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                if info.filename == record:
                    continue
                data = new_meta if info.filename == meta else zin.read(info)
                zout.writestr(info, data)
                rows.append(f"{info.filename},{_record_hash(data)},{len(data)}")
            rows.append(f"{record},,")
            zout.writestr(record, "\n".join(rows) + "\n")
    os.replace(tmp, dst)
    return dst


def _wheel_cache_dir() -> Path:
    return Path(os.environ.get("DSPEX_HOME", ".dspex")).resolve() / "wheels"


def build_wheel(
    *,
    root: Path | None = None,
    cache_dir: Path | None = None,
    timeout_s: float = 600.0,
) -> Path:
    """The code-only dspex wheel of the source tree, built once per source digest.

    The build itself is ``dspex.cluster.serve.build.build_wheel`` (``pip wheel --no-deps`` of
    a copy of the sources, so nothing is written into the source tree)."""
    from dspex.cluster.serve.build import build_wheel as pip_wheel

    root = root or project_root()
    if root is None:
        raise ConfigurationError(
            "dspex is not installed from a source tree, so there is no wheel to build; install dspex "
            "on the cluster's nodes (the cluster YAML's setup_commands) and submit without py_modules."
        )
    cache = (cache_dir or _wheel_cache_dir()) / source_digest(root)[:16]
    found = sorted(cache.glob("dspex-*.whl")) if cache.is_dir() else []
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".build-") as tmp:
        built = pip_wheel(tmp, root, timeout_s=timeout_s)
        wheel = code_only_wheel(built, cache / built.name)
    _clean_cache(cache.parent)
    return wheel


# -- the runtime environment ----------------------------------------------------------------
def _store_url_for_job(store_url: str | None) -> str | None:
    """The store URL a job should use, or None when it must come from the cluster's own
    environment (it holds a password)."""
    from dspex.store._url import resolve_url

    url = resolve_url(store_url)
    if url.password:
        return None
    if url.get_backend_name() == "sqlite" and url.database:
        url = url.set(database=str(Path(url.database).resolve()))
    return url.render_as_string(hide_password=False)


def runtime_env(
    *,
    wheel: Path | None = None,
    store_url: str | None = None,
    pip: Iterable[str] = (),
    env_vars: Mapping[str, str] | None = None,
    build: bool = True,
) -> dict[str, Any]:
    """The runtime_env of a dspex Ray job: the wheel in ``py_modules`` (built unless given, or
    left out with ``build=False`` when the cluster has dspex installed), the store's URL and
    ``DSPEX_HOME`` in ``env_vars``, and ``pip`` requirements the cluster lacks."""
    env: dict[str, Any] = {}
    if wheel is None and build:
        wheel = build_wheel()
    if wheel is not None:
        env["py_modules"] = [str(Path(wheel).resolve())]
    variables = {"DSPEX_HOME": str(Path(os.environ.get("DSPEX_HOME", ".dspex")).resolve())}
    url = _store_url_for_job(store_url)
    if url is not None:
        variables["DSPEX_DATABASE_URL"] = url
    for key, value in (env_vars or {}).items():
        if any(word in key.upper() for word in ("KEY", "TOKEN", "SECRET", "PASSWORD")):
            raise ConfigurationError(
                f"env_vars must not carry secrets ({key!r}): Ray shows a job's runtime_env on its dashboard. "
                "Set the variable in the cluster's environment instead."
            )
        variables[key] = str(value)
    env["env_vars"] = variables
    requirements = [str(r) for r in pip]
    if requirements:
        env["pip"] = requirements
    return env


def entrypoint(kind: str, job_id: str, *, python: str = "python") -> str:
    """The job's command. ``-P`` keeps the current directory off ``sys.path``: a job runs in the
    directory Ray was started from, which may hold another dspex (a source checkout) that would
    shadow the shipped wheel."""
    module = ENTRYPOINT_MODULES.get(kind, "run")
    return f"{python} -P -m dspex.jobs.{module} --job-id {job_id}"


# -- submitting -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Submission:
    job_id: str
    kind: str
    entrypoint: str
    #: False when this job id had been submitted before (nothing new was started)
    created: bool
    status: str


class Submitter:
    """Submits dspex jobs to a Ray cluster's job server and follows them.

    Args:
        address: the Ray dashboard's address (``http://head:8265``; default ``RAY_ADDRESS``
            when it is an http address, else ``http://127.0.0.1:8265``).
        store: the store holding the job records (default: ``open_store()``).
        env: the runtime_env (default: ``runtime_env(store_url=<store's URL>)``, built on the
            first submission).
        python: the Python that runs the entry point on the cluster.
        client: a ``JobSubmissionClient`` (made from ``address`` when not given).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        store: Any = None,
        env: dict[str, Any] | None = None,
        python: str = "python",
        client: Any = None,
    ) -> None:
        from dspex.store import open_store

        if address is None:
            ray_address = os.environ.get("RAY_ADDRESS", "")
            address = ray_address if ray_address.startswith("http") else "http://127.0.0.1:8265"
        self.address = address
        self.store = store if store is not None else open_store()
        self._env = env
        self.python = python
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.address)
            except Exception as exc:
                raise ConfigurationError(
                    f"Cannot reach a Ray job server at {self.address} ({type(exc).__name__}); start the cluster "
                    "with `ray start --head --include-dashboard=true` (or `ray up cluster/configs/ray-cluster.yaml`) "
                    "and pass its dashboard address with --address."
                ) from exc
        return self._client

    def env(self) -> dict[str, Any]:
        if self._env is None:
            self._env = runtime_env(store_url=self.store.url.render_as_string(hide_password=False))
        return self._env

    def _info(self, job_id: str) -> Any | None:
        try:
            return self.client.get_job_info(job_id)
        except RuntimeError:  # the job server answers 404 with a RuntimeError
            return None

    def submit(
        self,
        kind: str,
        args: Mapping[str, Any],
        *,
        job_id: str | None = None,
        max_attempts: int | None = None,
        entrypoint_num_cpus: float = 0.25,
        metadata: Mapping[str, str] | None = None,
    ) -> Submission:
        """Write the job record and submit it (both idempotent by ``job_id``)."""
        from dspex.pipelines.jobs import JobEngine

        engine = JobEngine(self.store)
        job = engine.enqueue(kind, dict(args), job_id=job_id or uuid.uuid4().hex, max_attempts=max_attempts).job
        command = entrypoint(kind, job.id, python=self.python)
        info = self._info(job.id)
        if info is not None:
            return Submission(job.id, kind, command, created=False, status=str(info.status))
        try:
            self.client.submit_job(
                entrypoint=command,
                submission_id=job.id,
                runtime_env=self.env(),
                metadata={"dspex_kind": kind, **dict(metadata or {})},
                entrypoint_num_cpus=entrypoint_num_cpus,
            )
        except RuntimeError as exc:
            info = self._info(job.id)
            if info is None:  # not a duplicate: the server refused it
                raise JobError(f"The Ray job server refused job {job.id}: {exc}") from exc
            return Submission(job.id, kind, command, created=False, status=str(info.status))
        engine.jobs.set_submission_id(job.id, job.id)
        return Submission(job.id, kind, command, created=True, status=str(self.status(job.id)))

    def status(self, job_id: str) -> str:
        info = self._info(job_id)
        if info is None:
            raise NotFound(f"The Ray job server at {self.address} has no job {job_id!r}.")
        return str(getattr(info.status, "value", info.status))

    def logs(self, job_id: str) -> str:
        return str(self.client.get_job_logs(job_id))

    def stop(self, job_id: str) -> bool:
        return bool(self.client.stop_job(job_id))

    def wait(self, job_id: str, *, timeout_s: float = 600.0, poll_s: float = 1.0) -> str:
        """Block until the Ray job ends; returns its status (SUCCEEDED / FAILED / STOPPED)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if status in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise JobError(f"Ray job {job_id} is still {status} after {timeout_s:.0f} s.")
            time.sleep(poll_s)  # the job server has no blocking wait

    def follow(self, job_id: str, write: Callable[[str], Any] = print, *, timeout_s: float = 3600.0) -> str:
        """Stream the Ray job's logs to ``write`` until it ends; returns its final status."""

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                if chunk:
                    write(chunk.rstrip("\n"))

        try:
            asyncio.run(asyncio.wait_for(tail(), timeout=timeout_s))
        except TimeoutError:
            pass
        return self.wait(job_id, timeout_s=60.0)


def _clean_cache(cache_dir: Path, keep: int = 3) -> None:
    """Remove all but the ``keep`` newest built wheels."""
    dirs = sorted((p for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
    for old in dirs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
