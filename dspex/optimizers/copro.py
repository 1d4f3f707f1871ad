"""``COPRO``: instructions proposed by an LM and refined over rounds (DSPy's semantics).

For each predictor, the prompt model proposes ``breadth - 1`` instructions (plus output-field
prefixes) from the current one, which is kept as a candidate. Each round (``depth``) scores
every new candidate of every predictor - that predictor set to the candidate, the others at
their best so far - then shows the prompt model the best attempts with their scores, lowest
first, and asks for ``breadth`` more. The best-scoring program evaluated is returned.

All candidates of one predictor in one round are scored as one batch through the evaluator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dspex.errors import OptimizerError
from dspex.optimizers._edit import last_output_field, output_prefix, set_instructions
from dspex.optimizers.base import Teleprompter, check_dataset, check_positive, check_program
from dspex.optimizers.evaluation import Evaluator, resolve_evaluator
from dspex.optimizers.proposer import BasicGenerateInstruction, GenerateInstructionGivenAttempts
from dspex.predict.predict import Predict
from dspex.primitives.module import Module
from dspex.utils.asyncio_bridge import run_sync

__all__ = ["COPRO"]

Candidate = tuple[str, str]  # (instruction, prefix)


class COPRO(Teleprompter):
    description = "Coordinate-ascent instruction optimization: the LM proposes instructions, refined over rounds from scored attempts."
    param_docs = {
        "prompt_model": "LM that writes the proposals (default: the configured lm).",
        "metric": "metric(example, prediction, trace=None) -> bool or float used to score candidates.",
        "breadth": "Proposals per predictor per round (must be > 1).",
        "depth": "Rounds of proposing and scoring.",
        "init_temperature": "Sampling temperature of the proposals.",
        "track_stats": "Record the best / mean score per round in the result's extras.",
        "num_threads": "Examples scored at once by the default (local) evaluator.",
        "seed": "Recorded with the result (the proposals are the LM's; the scoring is deterministic).",
        "progress": "Show progress bars.",
    }

    def __init__(
        self,
        prompt_model: Any = None,
        metric: Callable[..., Any] | None = None,
        breadth: int = 10,
        depth: int = 3,
        init_temperature: float = 1.4,
        track_stats: bool = False,
        *,
        num_threads: int | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        if breadth <= 1:
            raise OptimizerError(f"COPRO's breadth must be greater than 1 (the current instruction is one candidate), got {breadth}.")
        check_positive("depth", depth, allow_zero=False)
        if metric is None or not callable(metric):
            raise OptimizerError("COPRO needs metric=: a callable metric(example, prediction, trace=None).")
        self.prompt_model = prompt_model
        self.metric = metric
        self.breadth = breadth
        self.depth = depth
        self.init_temperature = init_temperature
        self.track_stats = track_stats
        self.num_threads = num_threads
        self.seed = seed
        self.progress = progress

    def compile(  # type: ignore[override]
        self,
        student: Module,
        *,
        trainset: list[Any],
        eval_kwargs: dict[str, Any] | None = None,
        valset: list[Any] | None = None,
        teacher: Module | None = None,
        evaluator: Evaluator | None = None,
    ) -> Module:
        """Candidates are scored on ``valset`` when given, else on the trainset (as DSPy).
        ``eval_kwargs`` is accepted for DSPy compatibility (``num_threads`` is honoured)."""
        check_program(student)
        trainset = check_dataset(trainset, "trainset")
        devset = check_dataset(valset, "valset") if valset is not None else trainset
        threads = (eval_kwargs or {}).get("num_threads", self.num_threads)
        evaluator = resolve_evaluator(evaluator, num_threads=threads)
        module = student.deepcopy()
        predictors = module.predictors()
        with self._run(seed=self.seed, progress=self.progress) as run:
            bar = run.progress_bar(self.depth * len(predictors), "rounds")
            best: dict[int, Candidate] = {i: (p.signature.instructions, output_prefix(p) or "") for i, p in enumerate(predictors)}
            scores: dict[int, dict[Candidate, float]] = {i: {} for i in range(len(predictors))}
            programs: list[tuple[float, Module]] = []
            new: dict[int, list[Candidate]] = run_sync(self._initial(predictors))
            stats: list[dict[str, float]] = []
            for depth in range(self.depth):
                for i in range(len(predictors)):
                    todo = [c for c in dict.fromkeys(new[i]) if c not in scores[i]]
                    progs = [self._program(module, best, i, c) for c in todo]
                    evals = evaluator.evaluate(progs, devset, self.metric) if progs else []
                    for cand, prog, ev in zip(todo, progs, evals, strict=True):
                        scores[i][cand] = ev.score
                        programs.append((ev.score, prog))
                        run.candidate(ev.score, program=prog, config={"predictor": i, "depth": depth, "instruction": cand[0], "prefix": cand[1]})
                    best[i] = max(scores[i], key=lambda c: scores[i][c])
                    round_scores = [ev.score for ev in evals]
                    if round_scores:
                        stats.append({"depth": depth, "predictor": i, "max": max(round_scores), "mean": sum(round_scores) / len(round_scores)})
                    run.iteration(scores[i][best[i]], converged=depth == self.depth - 1, depth=depth, predictor=i)
                    bar.update(1)
                if depth < self.depth - 1:
                    new = run_sync(self._refine(scores))
            bar.close()
            top_score, top_program = max(programs, key=lambda sp: sp[0])
        extras: dict[str, Any] = {"results_best": stats} if self.track_stats else {}
        chosen = next(c.index for c in run.candidates if c.program is top_program)
        return run.finish(top_program.deepcopy(), best_score=top_score, chosen_index=chosen, extras=extras)

    def _program(self, module: Module, best: dict[int, Candidate], index: int, cand: Candidate) -> Module:
        prog: Module = module.deepcopy()
        for j, p in enumerate(prog.predictors()):
            instruction, prefix = cand if j == index else best[j]
            set_instructions(p, instruction, prefix or None)
        return prog

    async def _propose(self, signature: Any, n: int, **inputs: Any) -> list[Candidate]:
        predictor = Predict(signature, n=n, temperature=self.init_temperature)
        kwargs = {"lm": self.prompt_model} if self.prompt_model is not None else {}
        pred = await predictor.acall(**kwargs, **inputs)
        comps = pred.completions
        return [
            (str(comps.proposed_instruction[k]).strip(), str(comps.proposed_prefix_for_output_field[k]).strip())
            for k in range(len(comps))
            if str(comps.proposed_instruction[k]).strip()
        ]

    async def _initial(self, predictors: list[Any]) -> dict[int, list[Candidate]]:
        proposals = await asyncio.gather(
            *(self._propose(BasicGenerateInstruction, self.breadth - 1, basic_instruction=p.signature.instructions) for p in predictors)
        )
        out: dict[int, list[Candidate]] = {}
        for i, p in enumerate(predictors):
            current = (p.signature.instructions, output_prefix(p) or f"{last_output_field(p).capitalize()}:")
            out[i] = [*proposals[i], current]
        return out

    async def _refine(self, scores: dict[int, dict[Candidate, float]]) -> dict[int, list[Candidate]]:
        async def one(i: int) -> list[Candidate]:
            ranked = sorted(scores[i].items(), key=lambda kv: kv[1])[-self.breadth :]  # lowest first
            attempts = []
            for k, ((instruction, prefix), score) in enumerate(ranked, start=1):
                attempts.append(f"Instruction #{k}: {instruction}")
                attempts.append(f"Prefix #{k}: {prefix}")
                attempts.append(f"Resulting Score #{k}: {score}")
            return await self._propose(GenerateInstructionGivenAttempts, self.breadth, attempted_instructions=attempts)

        results = await asyncio.gather(*(one(i) for i in scores))
        return dict(zip(scores, results, strict=True))
