"""cluster/: the Grafana dashboard queries only metrics (and labels) the telemetry catalog
defines, and covers what the issue lists; the Ray cluster launcher YAML and the Serve config
YAML validate against Ray's own schemas and carry no secrets."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from dspex.telemetry.catalog import METRICS_BY_NAME

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
DASHBOARD = CLUSTER / "grafana" / "dspex_dashboard.json"
METRIC = re.compile(r"\$\{prefix\}(dspex_[a-z0-9_]+)(\{[^}]*\})?")
BY = re.compile(r"by \(([^)]*)\)")
MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")


def _queries(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


def _base(name: str) -> tuple[str, str | None]:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in METRICS_BY_NAME:
            return name[: -len(suffix)], suffix
    return name, None


def test_every_metric_and_label_the_dashboard_queries_is_in_the_catalog() -> None:
    dash = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for expr in _queries(dash):
        found = METRIC.findall(expr)
        assert found, f"no dspex metric in {expr!r}"
        labels_here: set[str] = set()
        for raw, selector in found:
            name, suffix = _base(raw)
            assert name in METRICS_BY_NAME, f"{raw} (in {expr!r}) is not in dspex/telemetry/catalog.py"
            defn = METRICS_BY_NAME[name]
            if suffix is not None:
                assert defn.kind == "histogram", f"{raw}: {name} is a {defn.kind}, not a histogram"
            allowed = set(defn.labels) | ({"le"} if suffix == "_bucket" else set())
            for label in MATCHER.findall(selector or ""):
                assert label in allowed, f"{name} has no label {label!r} (it has {defn.labels})"
            labels_here |= allowed
            used.add(name)
        for group in BY.findall(expr):
            for label in (x.strip() for x in group.split(",")):
                assert label in labels_here, f"'by ({group})' in {expr!r}: no metric there has {label!r}"
        for label in re.findall(r"label_values\([^,]+,\s*([a-z_]+)\)", expr):
            assert label in labels_here, f"{expr!r}: {label!r} is not a label of its metric"
    # what the issue asks the dashboard to show
    assert {
        "dspex_predictions_total",
        "dspex_program_calls_total",
        "dspex_lm_calls_total",
        "dspex_program_duration_seconds",
        "dspex_tokens_total",
        "dspex_cost_usd_total",
        "dspex_cache_hits_total",
        "dspex_circuit_breaker_state",
        "dspex_rollout_weight",
        "dspex_rollout_phase",
    } <= used
    assert any("histogram_quantile(0.95" in e for e in _queries(dash))


def test_the_dashboard_imports_as_rays_own_do() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "dspex" and dash["title"] and dash["schemaVersion"] >= 27
    names = {v["name"]: v for v in dash["templating"]["list"]}
    assert names["datasource"]["type"] == "datasource" and names["datasource"]["query"] == "prometheus"
    assert names["prefix"]["query"] == "ray_"  # Ray's metrics agent prefixes every metric
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    boxes = []
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert all(t["datasource"] == p["datasource"] for t in p["targets"])
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        boxes.append((g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"], p["title"]))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
            assert not overlap, f"panels {a[4]!r} and {b[4]!r} overlap"


def test_the_ray_cluster_yaml_validates_against_rays_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "configs" / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["provider"]["type"] == "local"
    head = " ".join(config["head_start_ray_commands"])
    assert "--include-dashboard=true" in head and "--dashboard-port=8265" in head  # the CLI's job server


def test_the_serve_yaml_validates_and_names_the_dspex_builder() -> None:
    from ray.serve.schema import ServeDeploySchema

    text = (CLUSTER / "configs" / "serve.yaml").read_text()
    config = yaml.safe_load(text)
    ServeDeploySchema.model_validate(config)
    for app in config["applications"]:
        assert app["import_path"] == "dspex.cluster.serve.app:build_app"
        assert app["args"]["program"] == app["name"] and app["args"]["versions"]
        assert set(app["args"]["weights"]) == {str(v["version"]) for v in app["args"]["versions"]}
    from dspex.cluster.serve.app import build_app

    assert callable(build_app)
    for path in (CLUSTER / "configs").glob("*.yaml"):
        body = path.read_text().lower()
        assert "sk-" not in body and "password" not in body.replace("database password", "")
        assert not re.search(r"\bapi_key\s*:", body), f"{path.name} holds a key"
