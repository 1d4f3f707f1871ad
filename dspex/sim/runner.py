"""Starting the simulator: in-process (a uvicorn thread) or out-of-process (a subprocess).

    with SimServer(SimConfig.for_tests()) as sim:
        sim.base_url            # http://127.0.0.1:<port>     (Anthropic SDK base_url)
        sim.openai_base_url     # http://127.0.0.1:<port>/v1  (OpenAI SDK / dspex.LM api_base)
        sim.set_faults("sim-small", error_rate=0.5)
        sim.stats()["models"]["sim-small"]["requests"]

``SimProcess`` has the same interface but runs ``python -m dspex.sim serve`` in a child
process, so a benchmark's client does not share a GIL with the server it measures.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from types import TracebackType
from typing import Any

import httpx

from dspex.errors import ConfigurationError
from dspex.sim.config import SimConfig

__all__ = ["SimClient", "SimProcess", "SimServer", "uvicorn_config_kwargs"]

READY_PREFIX = "dspex.sim listening on "


def uvicorn_config_kwargs() -> dict[str, Any]:
    """uvloop and httptools when installed (a large share of the server's speed), no access log."""
    kw: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        "backlog": 4096,
        # uvicorn's default, stated: idle connections close after 5 s, as vLLM's do
        # (dspex.LM's pool lets them go after 4 s: PoolLimits.keepalive_expiry_s)
        "timeout_keep_alive": 5,
    }
    try:
        import uvloop  # noqa: F401

        kw["loop"] = "uvloop"
    except ImportError:
        kw["loop"] = "asyncio"
    try:
        import httptools  # noqa: F401

        kw["http"] = "httptools"
    except ImportError:
        kw["http"] = "h11"
    return kw


class SimClient:
    """Admin calls on a running simulator (either mode). The API key, when the server needs
    one, is sent but never shown in a repr."""

    base_url: str

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http: httpx.Client | None = None

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    def register_prices(self, config: SimConfig) -> None:
        """Teach this process's LM clients the simulated models' prices, so ``cost_usd`` of a
        call to a sim model is its configured price (as for a real provider's model)."""
        from dspex.clients.pricing import register_price

        for model in config.models:
            register_price(model.name, model.price.input_per_1m_usd, model.price.output_per_1m_usd)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._http is None:  # one client: building one per call costs ~40 ms (SSL context)
            self._http = httpx.Client(timeout=10.0)
        r = self._http.request(method, self.base_url + path, json=body, headers=self._headers)
        if r.status_code >= 400:
            raise ConfigurationError(
                f"The simulator refused {method} {path}: {r.status_code} {r.text}"
            )
        return r.json()

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/admin/stats"))

    def model_stats(self, model: str) -> dict[str, Any]:
        return dict(self.stats()["models"][model])

    def faults(self) -> dict[str, Any]:
        return dict(self._call("GET", "/admin/faults"))

    def set_faults(self, model: str = "*", **faults: Any) -> dict[str, Any]:
        return dict(self._call("POST", "/admin/faults", {"model": model, "faults": faults}))

    def outage(self, model: str = "*", on: bool = True) -> dict[str, Any]:
        return dict(self._call("POST", "/admin/outage", {"model": model, "on": on}))

    def reset(self, *, counters: bool = True, faults: bool = True) -> None:
        self._call("POST", "/admin/reset", {"counters": counters, "faults": faults})

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"


def _first_key(config: SimConfig) -> str | None:
    return config.api_keys[0] if config.api_keys else None


class SimServer(SimClient):
    """The simulator on a uvicorn server in a background thread of this process."""

    def __init__(
        self, config: SimConfig | None = None, *, host: str | None = None, port: int | None = None
    ) -> None:
        from dspex.sim.server import SimApp

        self.config = config or SimConfig.default()
        self.sim = SimApp(self.config)
        self.host = host or self.config.host
        self.port = self.config.port if port is None else port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        super().__init__(f"http://{self.host}:{self.port}", _first_key(self.config))

    def start(self, timeout_s: float = 10.0) -> SimServer:
        import uvicorn

        if self._thread is not None:
            return self
        self.register_prices(self.config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        config = uvicorn.Config(
            self.sim.app, **uvicorn_config_kwargs(), timeout_graceful_shutdown=1
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="dspex-sim", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigurationError(
                    f"The simulator did not start on {self.base_url} within {timeout_s}s."
                )
            time.sleep(0.01)
        sock.close()  # uvicorn serves on its own duplicate of the socket
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._server is None or self._thread is None:
            return
        self.close()
        self.sim.stopping = True
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._server = None
        self._thread = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SimProcess(SimClient):
    """The simulator in a child process (``python -m dspex.sim serve``)."""

    def __init__(
        self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SimConfig.default()
        self.host = host
        self.port = port
        self._proc: subprocess.Popen[str] | None = None
        self._config_path: str | None = None
        super().__init__(f"http://{host}:{port}", _first_key(self.config))

    def start(self, timeout_s: float = 30.0) -> SimProcess:
        if self._proc is not None:
            return self
        self.register_prices(self.config)
        fd, path = tempfile.mkstemp(prefix="dspex-sim-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(self.config.model_dump(mode="json"), f)
        self._config_path = path
        cmd = [
            sys.executable,
            "-m",
            "dspex.sim",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--config",
            path,
        ]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        ready: list[str] = []

        def read() -> None:
            assert self._proc is not None and self._proc.stdout is not None
            for line in self._proc.stdout:
                if line.startswith(READY_PREFIX):
                    ready.append(line[len(READY_PREFIX) :].strip())
                    break

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(max(0.0, deadline - time.monotonic()))
        if not ready:
            self.stop()
            raise ConfigurationError(
                f"The simulator subprocess did not report ready within {timeout_s}s."
            )
        self.base_url = ready[0]
        self.port = int(self.base_url.rsplit(":", 1)[1])
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.close()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._config_path:
            try:
                os.unlink(self._config_path)
            except OSError:
                pass
            self._config_path = None

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
