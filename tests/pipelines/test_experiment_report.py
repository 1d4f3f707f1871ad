"""Reports of finished experiments: JSON, Markdown and PNG files, from a result or a record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from dspex.pipelines.experiments.record import ExperimentArchive, ExperimentRecord
from dspex.pipelines.experiments.report import Report
from dspex.pipelines.experiments.result import ExperimentResult, pareto_front
from dspex.pipelines.experiments.runner import ExperimentRunner
from dspex.pipelines.experiments.spec import DatasetSpec, ExperimentSpec, LMSpec, VariantSpec
from matplotlib import image as mpimg

from dspex.clients.cache import configure_cache
from dspex.errors import ExperimentError
from dspex.sim import SimServer, get_task


@pytest.fixture(scope="module")
def finished(
    sim_server: SimServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ExperimentResult, ExperimentArchive]]:
    """One finished three-arm experiment (paid calls, so cost and latency are measured)."""
    configure_cache(disk_dir=tmp_path_factory.mktemp("cache"))
    archive = ExperimentArchive(tmp_path_factory.mktemp("archive"))
    spec = ExperimentSpec(
        name="report-demo",
        description="Prompt work against a bigger model.",
        hypothesis="Hints close most of the gap to sim-large at a fraction of the cost.",
        dataset=DatasetSpec(task="classification", n_train=0, n_test=60, seed=21),
        lm=LMSpec.from_sim(sim_server, "sim-small-fast", temperature=1.0),
        variants=[
            VariantSpec(name="hints", instructions=get_task("classification").best_instruction()),
            VariantSpec(
                name="large", model=LMSpec.from_sim(sim_server, "sim-large-fast", temperature=1.0)
            ),
        ],
        margin=0.02,
        n_resamples=999,
    )
    result = ExperimentRunner(backend="local", archive=archive).run(spec)
    yield result, archive
    configure_cache()


def _png(path: Path) -> tuple[int, ...]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0.01  # something was drawn
    return tuple(pixels.shape)


def test_report_writes_json_markdown_and_pngs(
    finished: tuple[ExperimentResult, ExperimentArchive], tmp_path: Path
) -> None:
    result, _ = finished
    paths = Report(result).write(tmp_path / "out")
    assert all(p.exists() and p.parent == tmp_path / "out" for p in paths.all())
    assert paths.cost_png is not None
    _png(paths.forest_png)
    _png(paths.cost_png)

    md = paths.markdown.read_text()
    for line in result.conclusion.splitlines():
        if line.strip():
            assert line.strip() in md
    assert "![Differences vs the baseline" in md and "(forest.png)" in md
    assert "(score_vs_cost.png)" in md
    assert "# Experiment: report-demo" in md and "**Hypothesis:**" in md
    assert "| large |" in md and "| hints |" in md and "| baseline |" in md
    if result.winner:
        assert "**winner**" in md

    data = json.loads(paths.json.read_text())
    assert data["name"] == "report-demo" and data["n"] == 60
    assert len(data["arms"]["hints"]["examples"]) == 60
    assert data["comparison"]["variants"][0]["name"] == "hints"


def test_a_stored_record_renders_the_same_report(
    finished: tuple[ExperimentResult, ExperimentArchive],
) -> None:
    result, archive = finished
    record = archive.load(result.experiment_id or "")
    assert Report.from_record(record).to_markdown() == Report(result).to_markdown()
    failed = ExperimentRecord(name="f", spec={}, status="failed", error="Arm 'x' failed: boom")
    with pytest.raises(
        ExperimentError, match="failed; only a completed experiment has a report: Arm 'x'"
    ):
        Report.from_record(failed)
    with pytest.raises(ExperimentError, match="no 'name'"):
        Report({"kind": "binary"})


def test_without_measured_cost_there_is_no_cost_figure(
    finished: tuple[ExperimentResult, ExperimentArchive], tmp_path: Path
) -> None:
    result, _ = finished
    data = result.to_dict()
    data["pareto"] = []
    for arm in data["arms"].values():
        arm["cost_per_example_usd"] = None
    paths = Report(data).write(tmp_path)
    assert paths.cost_png is None and not (tmp_path / "score_vs_cost.png").exists()
    md = paths.markdown.read_text()
    assert "score_vs_cost.png" not in md and "(forest.png)" in md
    _png(paths.forest_png)


def test_scored_results_render_with_score_units(sim: SimServer, tmp_path: Path) -> None:
    spec = ExperimentSpec(
        name="scored",
        dataset=DatasetSpec(task="arithmetic", n_train=0, n_test=12, seed=8),
        lm=LMSpec.from_sim(sim, "sim-small-fast", temperature=1.0),
        variants=[
            VariantSpec(
                name="medium", model=LMSpec.from_sim(sim, "sim-medium-fast", temperature=1.0)
            )
        ],
        repeats=2,
        n_resamples=999,
    )
    result = ExperimentRunner(backend="local").run(spec)
    assert result.kind == "scored"
    paths = Report(result).write(tmp_path)
    md = paths.markdown.read_text()
    assert "paired permutation + BCa bootstrap" in md and " pp" not in md.split("## Conclusion")[0]
    _png(paths.forest_png)


def test_pareto_front_marks_dominated_arms() -> None:
    front = {
        p.name: p.on_front
        for p in pareto_front({"a": (0.5, 1.0), "b": (0.7, 2.0), "c": (0.6, 3.0), "d": (0.5, 1.0)})
    }
    assert front == {"a": True, "b": True, "c": False, "d": True}
