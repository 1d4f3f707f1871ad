"""Per-call overhead of dspex.Predict with DummyLM: prompt formatting + parsing + validation.

The floor is DummyLM's own work (building the reply text and its response object), measured
in the same run; the overhead is the Predict call minus that floor. No I/O anywhere.
Reference: DSPy 3.4.1 measured 483 µs per call on this machine kind; target <= 50 µs.

    python benchmarks/overhead.py [--calls N]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable

import dspex
from dspex.utils.dummies import DummyLM


def per_call_us(fn: Callable[[], object], calls: int, repeats: int = 5) -> float:
    for _ in range(min(calls, 500)):
        fn()
    samples = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return min(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    args = ap.parse_args()

    cases = {
        "Predict str->str": (
            dspex.Predict("question -> answer"),
            {"question": "What is the capital of France?"},
            {"answer": "Paris"},
        ),
        "Predict 2 typed outputs": (
            dspex.Predict("question, context: list[str] -> answer: float, confident: bool"),
            {"question": "2+2?", "context": ["a", "b"]},
            {"answer": "4.0", "confident": "True"},
        ),
        "ChainOfThought": (
            dspex.ChainOfThought("question -> answer"),
            {"question": "Why?"},
            {"reasoning": "Because.", "answer": "42"},
        ),
    }
    rows = []
    for name, (program, inputs, answer) in cases.items():
        lm = DummyLM([answer]).cycle()
        msgs = [{"role": "user", "content": "x"}]
        floor = per_call_us(lambda lm=lm, msgs=msgs: lm.forward(messages=msgs), args.calls)  # type: ignore[misc]
        with dspex.context(lm=lm):
            total = per_call_us(lambda p=program, i=inputs: p(**i), args.calls)  # type: ignore[misc]
        rows.append((name, total, floor, total - floor))

    print(f"{'case':<28}{'dspex µs/call':>15}{'floor µs':>11}{'overhead µs':>13}")
    for name, total, floor, over in rows:
        print(f"{name:<28}{total:>15.1f}{floor:>11.1f}{over:>13.1f}")
    print("reference: DSPy 3.4.1 483 µs per Predict call on this machine kind; target <= 50 µs")
    result = {
        "dspex_overhead_us": round(rows[0][3], 2),
        "dspex_call_us": round(rows[0][1], 2),
        "floor_us": round(rows[0][2], 2),
        "typed_overhead_us": round(rows[1][3], 2),
        "cot_overhead_us": round(rows[2][3], 2),
        "median_overhead_us": round(statistics.median(r[3] for r in rows), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
