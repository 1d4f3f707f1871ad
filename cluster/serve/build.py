"""``dspex serve build``: a Serve config file for ``serve deploy``, with dspex shipped as a wheel.

    from dspex.cluster.serve.build import write_serve_config
    write_serve_config([{"program": "qa", "versions": [{"version": 1, "factory": "app.qa:QA",
                        "lm": {"model": "openai/gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"}}],
                        "options": {"route_prefix": "/qa"}}],
                       "serve.yaml", wheel_dir="dist/serve")
    # then: serve deploy serve.yaml ; serve status

Each program becomes one application (name = program, ``import_path`` =
``dspex.cluster.serve.app:build_app``, ``args`` = the program's config). dspex goes into
every application's ``runtime_env["py_modules"]`` as a wheel built with ``pip wheel
--no-deps``: actors/, pipelines/ and cluster/ are mapped into the ``dspex`` package by the
packaging (DESIGN.md, "Layout"), so a bare ``working_dir`` copy of the repository would not
import as ``dspex.cluster``. The wheel is built from a copy of the sources, so the build
leaves nothing in the source tree. API keys never go into the file: versions name the
environment variable holding theirs (``lm.api_key_env``), set on the cluster's nodes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dspex.errors import ConfigurationError

from .options import ServeOptions

__all__ = ["BUILDER_IMPORT_PATH", "build_wheel", "load_programs", "serve_config", "wheel_uri", "write_serve_config"]

BUILDER_IMPORT_PATH = "dspex.cluster.serve.app:build_app"
_SOURCES = ("pyproject.toml", "README.md", "dspex", "actors", "pipelines", "cluster")
_SECRET_KEYS = ("api_key", "token", "password", "secret")


def _source_dir() -> Path:
    """The repository this dspex was installed from (editable installs), for building."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "dspex").is_dir():
            return parent
    raise ConfigurationError(
        "Cannot find dspex's sources (pyproject.toml beside dspex/) to build a wheel from; pass source_dir=."
    )


def build_wheel(wheel_dir: str | Path, source_dir: str | Path | None = None, timeout_s: float = 300.0) -> Path:
    """Build dspex's wheel (``pip wheel --no-deps``) into ``wheel_dir``; its path."""
    src = Path(source_dir) if source_dir is not None else _source_dir()
    out = Path(wheel_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    missing = [name for name in _SOURCES if not (src / name).exists() and name != "README.md"]
    if missing:
        raise ConfigurationError(f"{src} is not dspex's source tree (missing {missing}).")
    with tempfile.TemporaryDirectory(prefix="dspex-wheel-") as tmp:
        copy = Path(tmp) / "src"
        copy.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for name in _SOURCES:
            path = src / name
            if path.is_dir():
                shutil.copytree(path, copy / name, ignore=ignore)
            elif path.exists():
                shutil.copy2(path, copy / name)
        before = set(out.glob("dspex-*.whl"))
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(copy)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        if proc.returncode != 0:
            raise ConfigurationError(f"pip wheel failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    wheels = sorted(out.glob("dspex-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise ConfigurationError(f"pip wheel produced no dspex wheel in {out}.")
    fresh = [w for w in wheels if w not in before]
    return (fresh or wheels)[-1]


def wheel_uri(wheel: str | Path) -> str:
    """The URI Serve configs need for the wheel: a URI as given (``https://``, ``s3://``,
    ``gs://``, ``file://``), a local path as ``file://`` (good on one node or a filesystem
    every node shares; upload the wheel and pass its URL for other clusters)."""
    text = str(wheel)
    if "://" in text:
        return text
    return Path(text).resolve().as_uri()


def _check_no_secrets(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if any(s == str(k).lower() or str(k).lower().endswith("_" + s) for s in _SECRET_KEYS):
                raise ConfigurationError(
                    f"{where}.{k} looks like a secret; config files are stored and shown by Serve. "
                    "Name an environment variable instead (lm.api_key_env)."
                )
            _check_no_secrets(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_no_secrets(v, f"{where}[{i}]")


def serve_config(
    programs: Sequence[Mapping[str, Any]],
    *,
    wheel: str | Path | None,
    http_host: str = "0.0.0.0",
    http_port: int = 8000,
    env_vars: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Serve config (``ServeDeploySchema``'s shape) for ``programs`` (pure)."""
    if not programs:
        raise ConfigurationError("A Serve config needs at least one program.")
    apps = []
    seen: set[str] = set()
    for i, prog in enumerate(programs):
        if not isinstance(prog, Mapping) or not prog.get("program") or not prog.get("versions"):
            raise ConfigurationError(f"programs[{i}] needs 'program' and a non-empty 'versions' list.")
        name = str(prog["program"])
        if name in seen:
            raise ConfigurationError(f"Program {name!r} is listed twice.")
        seen.add(name)
        _check_no_secrets(dict(prog), f"programs[{i}]")
        options = ServeOptions.from_dict(prog.get("options"))
        runtime_env: dict[str, Any] = {}
        if wheel is not None:
            runtime_env["py_modules"] = [wheel_uri(wheel)]
        if env_vars:
            runtime_env["env_vars"] = dict(env_vars)
        app: dict[str, Any] = {
            "name": name,
            "route_prefix": options.route_prefix or "/",
            "import_path": BUILDER_IMPORT_PATH,
            "args": {k: prog[k] for k in ("program", "versions", "weights", "options") if k in prog},
        }
        if runtime_env:
            app["runtime_env"] = runtime_env
        apps.append(app)
    prefixes = [a["route_prefix"] for a in apps]
    if len(set(prefixes)) != len(prefixes):
        raise ConfigurationError(f"Each program needs its own route prefix (options.route_prefix); got {prefixes}.")
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": http_host, "port": int(http_port)},
        "applications": apps,
    }


def write_serve_config(
    programs: Sequence[Mapping[str, Any]],
    output: str | Path,
    *,
    wheel_dir: str | Path | None = None,
    wheel_base_url: str | None = None,
    source_dir: str | Path | None = None,
    build: bool = True,
    http_host: str = "0.0.0.0",
    http_port: int = 8000,
    env_vars: Mapping[str, str] | None = None,
) -> Path:
    """Build the wheel (unless ``build=False``) into ``wheel_dir`` (default: beside
    ``output``, in ``dspex-wheels/``) and write the Serve config YAML to ``output``.
    ``wheel_base_url``: where the wheel will be uploaded (the config then points at
    ``<wheel_base_url>/<wheel file>``); default: the local file, as a ``file://`` URI."""
    out = Path(output)
    wheel: str | Path | None = None
    if build:
        # Code only: Ray installs a py_modules wheel with its dependencies (about 110 packages,
        # Ray itself among them); the cluster's Python already has them. Built once per
        # source digest and cached under $DSPEX_HOME/wheels, shared with `dspex submit`.
        from dspex.cluster.submit import build_wheel as cached_wheel

        target = Path(wheel_dir if wheel_dir is not None else out.parent / "dspex-wheels").resolve()
        cached = cached_wheel(root=Path(source_dir).resolve() if source_dir is not None else _source_dir())
        target.mkdir(parents=True, exist_ok=True)
        built = target / cached.name
        if cached.resolve() != built.resolve():
            shutil.copy2(cached, built)
        wheel = f"{wheel_base_url.rstrip('/')}/{built.name}" if wheel_base_url else built
    config = serve_config(programs, wheel=wheel, http_host=http_host, http_port=http_port, env_vars=env_vars)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Written by `dspex serve build`; deploy with `serve deploy " + out.name + "`.\n" + yaml.safe_dump(config, sort_keys=False))
    return out


def load_programs(path: str | Path) -> list[dict[str, Any]]:
    """The programs of a YAML/JSON file (``{"programs": [...]}`` or a list) for the CLI."""
    data = yaml.safe_load(Path(path).read_text())
    programs = data.get("programs") if isinstance(data, dict) else data
    if not isinstance(programs, list):
        raise ConfigurationError(f"{path}: expected a list of programs or {{'programs': [...]}}.")
    return programs
