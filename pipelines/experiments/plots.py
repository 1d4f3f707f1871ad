"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

- ``forest_plot``: each variant's difference from the baseline with its interval, the zero
  line and the practical margin; colour by verdict.
- ``cost_plot``: score against cost per example for every arm whose cost was measured, with
  the Pareto front drawn when quality and cost trade off.

Both read the JSON form of a result (``ExperimentResult.to_dict()``), so a stored experiment
can be plotted again without rerunning it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["cost_plot", "forest_plot"]

_VERDICT_COLOURS = {
    "better": "#1a7f37",
    "worse": "#cf222e",
    "below_margin": "#9a6700",
    "no_detectable_difference": "#57606a",
}


def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _scale(kind: str) -> tuple[float, str]:
    return (100.0, "percentage points") if kind == "binary" else (1.0, "score")


def forest_plot(result: dict[str, Any], path: str | Path) -> Path:
    """Differences vs the baseline with their intervals; returns the PNG's path."""
    comparison = result["comparison"]
    variants = comparison["variants"]
    factor, unit = _scale(result["kind"])
    fig = _figure(7.5, 1.2 + 0.55 * len(variants))
    ax = fig.add_subplot(1, 1, 1)
    for row, v in enumerate(reversed(variants)):
        iv = v["difference_interval"]
        diff = (v["difference"] or 0.0) * factor
        low = (iv["low"] if iv["low"] is not None else v["difference"]) * factor
        high = (iv["high"] if iv["high"] is not None else v["difference"]) * factor
        colour = _VERDICT_COLOURS.get(v["verdict"], "#57606a")
        ax.errorbar(
            [diff], [row], xerr=[[diff - low], [high - diff]], fmt="o", color=colour, capsize=4
        )
        p_adj = v["p_value_adjusted"]
        label = f"p_adj={p_adj:.3g}" if p_adj is not None else ""
        ax.annotate(
            label, (high, row), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8
        )
    ax.margins(x=0.12)
    ax.axvline(0.0, color="black", linewidth=1)
    margin = float(comparison.get("margin") or 0.0) * factor
    if margin > 0:
        for x in (-margin, margin):
            ax.axvline(x, color="#9a6700", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(len(variants)))
    ax.set_yticklabels([v["name"] for v in reversed(variants)])
    ax.set_ylim(-0.7, len(variants) - 0.3)
    level = variants[0]["difference_interval"].get("level") if variants else None
    shown = f"{level * 100:.0f}% CI" if level else "CI"
    ax.set_xlabel(f"difference vs {result['baseline']} ({unit}), {shown}")
    ax.set_title(f"{result['name']}: variants vs baseline (n={result['n']})", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    return out


def cost_plot(result: dict[str, Any], path: str | Path) -> Path | None:
    """Score vs cost per example; None (no file) when no arm's cost was measured."""
    points = [p for p in result.get("pareto", []) if p.get("cost_per_example_usd") is not None]
    if not points:
        return None
    factor, _ = _scale(result["kind"])
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for p in points:
        colour = "#0969da" if p["on_front"] else "#8c959f"
        ax.scatter([p["cost_per_example_usd"]], [p["score"] * factor], color=colour, s=40, zorder=3)
        ax.annotate(
            p["name"],
            (p["cost_per_example_usd"], p["score"] * factor),
            xytext=(5, 4),
            textcoords="offset points",
            fontsize=8,
        )
    front = sorted((p for p in points if p["on_front"]), key=lambda p: p["cost_per_example_usd"])
    if result.get("trade_off") and len(front) > 1:
        ax.plot(
            [p["cost_per_example_usd"] for p in front],
            [p["score"] * factor for p in front],
            color="#0969da",
            linestyle="-",
            linewidth=1,
            label="Pareto front",
            zorder=2,
        )
        ax.legend(loc="lower right", fontsize=8)
    ax.margins(x=0.1, y=0.12)
    costs = [p["cost_per_example_usd"] for p in points]
    if min(costs) > 0 and max(costs) / min(costs) > 10:
        ax.set_xscale("log")
    ax.set_xlabel("cost per test example (USD)")
    ax.set_ylabel("score (%)" if result["kind"] == "binary" else "mean score")
    ax.set_title(f"{result['name']}: quality vs cost", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    return out
