"""``dspex serve build``: the config file, its wheel, and the application it deploys.

The test deploys the written config's application through Serve's Python API
(``build_app(args)`` + ``serve.run`` with the config's name and route prefix): ``serve deploy``
needs the dashboard's REST API, which the test session's Ray runs without. So the wheel in
``runtime_env.py_modules`` is checked (built, importable contents, referenced by the file)
but not installed by Serve here.
"""

from __future__ import annotations

import asyncio
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.serve]


@pytest.mark.parametrize("colocated", [False, True], ids=["split", "colocated"])
def test_build_writes_a_deployable_config_with_the_wheel(tmp_path: Path, serve_session: Any, colocated: bool) -> None:
    import ray
    from dspex.cluster.serve import build_app, delete_program, program_supervisor
    from dspex.cluster.serve.build import write_serve_config
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    programs = [
        {
            "program": "built",
            "versions": [
                {"version": 1, "factory": "fixtures.serve:qa_program", "lm": {"model": "openai/sim-small-fast", "api_base": "http://127.0.0.1:9/v1"}},
            ],
            "options": {"route_prefix": "/built", "max_ongoing_requests": 128, "colocate_versions": colocated},
        }
    ]
    out = write_serve_config(programs, tmp_path / "serve.yaml", http_port=serve_session.port)
    config = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(config)
    app = config["applications"][0]
    wheel_uri = app["runtime_env"]["py_modules"][0]
    assert wheel_uri.startswith("file://") and wheel_uri.endswith(".whl")
    wheel = Path(wheel_uri.removeprefix("file://"))
    names = zipfile.ZipFile(wheel).namelist()
    # actors/ and cluster/ are inside the dspex package in the wheel, as the packaging maps them
    assert "dspex/cluster/serve/app.py" in names and "dspex/actors/supervisor.py" in names
    assert not (Path(__file__).resolve().parents[2] / "build").exists()  # nothing left in the source tree

    serve.run(build_app(app["args"]), name=app["name"], route_prefix=app["route_prefix"])
    try:
        assert serve.status().applications["built"].status.value == "RUNNING"
        deadline = time.monotonic() + 30
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:  # the ingress hands the config's version to a supervisor
            try:
                status = ray.get(program_supervisor("built").status.remote())
                if status["weights"].get(1) == 100.0:
                    break
            except Exception:
                pass
            time.sleep(0.2)
        assert status.get("active") == 1 and status["weights"] == {1: 100.0}
        if not colocated:
            # the supervisor adopted the running deployment (no second copy of the version)
            assert set(serve.status().applications["built"].deployments) == {"ingress", "v1-cfg"}
        else:
            # the ingress hosts the config's version itself, under the name the supervisor adopted
            assert set(serve.status().applications["built"].deployments) == {"ingress"}
            assert status["versions"] == {1: [status["versions"][1][0]]}
            hosted = ray.get(program_supervisor("built").predictors.remote())
            assert [(p["deployment"], [r["hosted"] for r in p["replicas"]]) for p in hosted] == [("v1-cfg", [True])]

        async def health() -> httpx.Response:
            async with httpx.AsyncClient(timeout=10) as client:
                return await client.get(f"{serve_session.url}/built/healthz")

        r = asyncio.run(health())
        assert r.status_code == 200 and r.json()["weights"] == {"1": 100.0}
    finally:
        delete_program("built")
