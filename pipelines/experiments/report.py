"""The experiment report: JSON (everything, per-example results included), Markdown and PNGs.

    paths = Report(result).write("reports/hints-vs-bootstrap")
    paths.markdown, paths.json, paths.forest_png, paths.cost_png

A report renders from a live ``ExperimentResult`` or from the stored JSON of a finished one
(``Report.from_record(archive.load(id))``), so an old experiment can be re-rendered
without rerunning anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspex.pipelines.experiments.plots import cost_plot, forest_plot
from dspex.pipelines.experiments.record import ExperimentRecord, jsonable
from dspex.pipelines.experiments.result import ExperimentResult

from dspex.errors import ExperimentError

__all__ = ["ExperimentReport", "Report", "ReportPaths"]

_VERDICTS = {
    "better": "better",
    "worse": "worse",
    "below_margin": "significant, below margin",
    "no_detectable_difference": "no detectable difference",
}


@dataclass(frozen=True)
class ReportPaths:
    json: Path
    markdown: Path
    forest_png: Path
    cost_png: Path | None

    def all(self) -> list[Path]:
        return [
            p for p in (self.json, self.markdown, self.forest_png, self.cost_png) if p is not None
        ]


def _pct(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.1f}%" if kind == "binary" else f"{value:.4g}"


def _diff(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    return f"{value * 100:+.1f} pp" if kind == "binary" else f"{value:+.4g}"


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return "<0.0001" if value < 1e-4 else f"{value:.3g}"


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:.6f}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


class ExperimentReport:
    """Renders one finished experiment."""

    def __init__(self, result: ExperimentResult | dict[str, Any]) -> None:
        data = result.to_dict() if isinstance(result, ExperimentResult) else jsonable(result)
        for key in ("name", "kind", "comparison", "arms", "conclusion", "baseline"):
            if key not in data:
                raise ExperimentError(
                    f"Cannot render a report: the result has no {key!r}; pass an ExperimentResult "
                    "or the 'result' of a completed experiment record."
                )
        self.data: dict[str, Any] = data

    @classmethod
    def from_record(cls, record: ExperimentRecord) -> ExperimentReport:
        if record.status != "completed" or record.result is None:
            raise ExperimentError(
                f"Experiment {record.name!r} is {record.status}; only a completed experiment has a "
                f"report{': ' + record.error if record.error else ''}."
            )
        return cls(record.result)

    # -- renderings ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.data

    def to_json(self) -> str:
        return json.dumps(self.data, indent=1, allow_nan=False)

    def to_markdown(self, figures: dict[str, str] | None = None) -> str:
        """Markdown; ``figures`` maps "forest" / "cost" to image paths relative to the file."""
        d = self.data
        spec = d.get("spec") or {}
        out = [f"# Experiment: {d['name']}", ""]
        if spec.get("description"):
            out += [spec["description"], ""]
        if spec.get("hypothesis"):
            out += [f"**Hypothesis:** {spec['hypothesis']}", ""]
        out += self._setup(spec)
        out += self._results()
        out += ["## Conclusion", ""]
        out += [line.strip() + "  " for line in d["conclusion"].splitlines() if line.strip()]
        out += [""]
        out += self._power()
        if figures:
            out += ["## Figures", ""]
            if "forest" in figures:
                out += [
                    f"![Differences vs the baseline with confidence intervals]({figures['forest']})",
                    "",
                ]
            if "cost" in figures:
                out += [f"![Score vs cost per example, Pareto front]({figures['cost']})", ""]
        out += [
            "Per-example results (every arm on the same test examples, in order) are in the "
            "JSON file beside this report.",
            "",
        ]
        return "\n".join(out)

    def _setup(self, spec: dict[str, Any]) -> list[str]:
        d = self.data
        split = d.get("split") or {}
        data = spec.get("dataset") or {}
        source = (
            f"simulated task `{data['task']}` (seed {data.get('seed', 0)})"
            if data.get("task")
            else "given examples"
        )
        comp = d["comparison"]
        out = ["## Setup", ""]
        out.append(
            f"- Data: {source}; {split.get('train_size', '?')} train / {d['n']} test examples"
            + (f", stratified by `{split['stratified_by']}`" if split.get("stratified_by") else "")
            + f"; split seed {spec.get('seed', '?')}; {d.get('repeats', 1)} repeat(s) per example."
        )
        test = (
            "McNemar (exact below 25 discordant pairs)"
            if d["kind"] == "binary"
            else "paired permutation + BCa bootstrap"
        )
        out.append(
            f"- Statistics: {d['kind']} metric `{spec.get('metric', '?')}`, {test}, alpha {comp['alpha']:g}, "
            f"{comp['correction']} correction, practical margin {_diff(comp['margin'], d['kind']).lstrip('+')}."
        )
        out += ["", "| Arm | Model | Optimizer | Changes |", "|---|---|---|---|"]
        arms_spec = {
            a["name"]: a for a in [spec.get("baseline") or {}, *(spec.get("variants") or [])] if a
        }
        for name, arm in d["arms"].items():
            s = arms_spec.get(name, {})
            changes = []
            if s.get("instructions"):
                changes.append(f"instructions: “{s['instructions'][:80]}”")
            if s.get("demos") is not None:
                changes.append(f"{len(s['demos'])} demos")
            if s.get("optimizer_params"):
                changes.append(", ".join(f"{k}={v}" for k, v in s["optimizer_params"].items()))
            out.append(
                f"| {_cell(name)} | {_cell(arm['model'])} | {_cell(arm.get('optimizer') or '—')} | "
                f"{_cell('; '.join(changes) or '—')} |"
            )
        return [*out, ""]

    def _results(self) -> list[str]:
        d = self.data
        kind = d["kind"]
        comp = d["comparison"]
        by_name = {v["name"]: v for v in comp["variants"]}
        out = [
            "## Results",
            "",
            "| Arm | Score (CI) | Difference vs baseline (CI) | p | adjusted p | Verdict | Cost / example | p50 ms | p95 ms |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, arm in d["arms"].items():
            v = by_name.get(name)
            iv = comp.get("baseline_interval") if v is None else v.get("variant_interval")
            score = _pct(arm["mean"], kind)
            if iv:
                score += f" ({_pct(iv['low'], kind)} – {_pct(iv['high'], kind)})"
            if v is None:
                diff, p, padj, verdict = "baseline", "—", "—", "—"
            else:
                di = v["difference_interval"]
                diff = f"{_diff(v['difference'], kind)} ({_diff(di['low'], kind)} to {_diff(di['high'], kind)})"
                p, padj = _p(v["p_value"]), _p(v["p_value_adjusted"])
                verdict = _VERDICTS.get(v["verdict"], v["verdict"])
                if name == d.get("winner"):
                    verdict = f"**winner** ({verdict})"
            out.append(
                f"| {_cell(name)} | {score} | {diff} | {p} | {padj} | {verdict} | "
                f"{_usd(arm.get('cost_per_example_usd'))} | {_ms(arm.get('latency_p50_ms'))} | "
                f"{_ms(arm.get('latency_p95_ms'))} |"
            )
        return [*out, ""]

    def _power(self) -> list[str]:
        d = self.data
        kind = d["kind"]
        out = ["## Power", ""]
        if d.get("planning"):
            out += [d["planning"]["message"], ""]
        out += ["| Variant | MDE (80% power) | Needed n for the margin |", "|---|---|---|"]
        for v in d["comparison"]["variants"]:
            pw = v["power"]
            mde = (
                _diff(pw.get("mde"), kind).lstrip("+")
                if pw.get("mde") is not None
                else "none detectable"
            )
            need = f"{pw['n_for_margin']:,}" if pw.get("n_for_margin") else "—"
            out.append(f"| {_cell(v['name'])} | {mde} | {need} |")
        return [*out, ""]

    # -- files -----------------------------------------------------------------------------
    def write(self, directory: str | Path) -> ReportPaths:
        """Write experiment.json, report.md, forest.png and (when cost was measured)
        score_vs_cost.png into ``directory``; returns their paths."""
        root = Path(directory)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExperimentError(f"Cannot create the report folder {root}: {exc}.") from exc
        json_path = root / "experiment.json"
        json_path.write_text(self.to_json())
        forest = forest_plot(self.data, root / "forest.png")
        cost = cost_plot(self.data, root / "score_vs_cost.png")
        figures = {"forest": forest.name}
        if cost is not None:
            figures["cost"] = cost.name
        md_path = root / "report.md"
        md_path.write_text(self.to_markdown(figures))
        return ReportPaths(json=json_path, markdown=md_path, forest_png=forest, cost_png=cost)


#: The short name the issue uses.
Report = ExperimentReport
