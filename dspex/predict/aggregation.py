"""``majority``, ``BestOfN`` and ``Refine``: several samples, one answer (DSPy's shapes)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from dspex.evaluate.metrics import normalize_text
from dspex.primitives.module import Module
from dspex.primitives.prediction import Completions, Prediction
from dspex.settings import settings

__all__ = ["BestOfN", "Refine", "majority"]

log = logging.getLogger("dspex.aggregation")


def majority(
    prediction_or_completions: Prediction | Completions | list[Prediction],
    normalize: Callable[[str], str | None] | None = normalize_text,
    field: str | None = None,
) -> Prediction:
    """The completion whose ``field`` (default: the last output field) is most common."""
    if isinstance(prediction_or_completions, Prediction):
        completions = prediction_or_completions.completions
    elif isinstance(prediction_or_completions, Completions):
        completions = prediction_or_completions
    else:
        completions = Completions([p.toDict() for p in prediction_or_completions])
    keys = [k for k, _ in completions.items()]
    if not keys:
        raise ValueError("majority() needs at least one completion.")
    field = field or keys[-1]
    values = [normalize(str(v)) if normalize else str(v) for v in completions[field]]
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return completions[0]
    winner = counts.most_common(1)[0][0]
    for i, v in enumerate(values):
        if v == winner:
            return completions[i]
    return completions[0]


class BestOfN(Module):
    """Run ``module`` up to ``N`` times with fresh samples; return the prediction with the highest
    ``reward_fn(inputs, prediction)``, stopping early once one reaches ``threshold``."""

    def __init__(
        self,
        module: Module,
        N: int,  # noqa: N803 - DSPy's name
        reward_fn: Callable[[dict[str, Any], Prediction], float],
        threshold: float,
        fail_count: int | None = None,
    ) -> None:
        super().__init__()
        if N < 1:
            raise ValueError(f"N must be at least 1, got {N}.")
        self.module = module
        self.N = N
        self.reward_fn = reward_fn
        self.threshold = threshold
        self.fail_count = fail_count if fail_count is not None else N

    def _lm_for(self, idx: int) -> Any:
        lm = self.module.get_lm() if self.module.predictors() else settings.get("lm")
        if lm is None:
            lm = settings.get("lm")
        temperature = lm.kwargs.get("temperature") if lm is not None else None
        # Attempt 0 keeps the configured sampling; later ones sample afresh (rollout_id busts
        # the response cache as in DSPy).
        return lm.copy(rollout_id=idx, temperature=1.0 if idx else temperature) if lm is not None else None

    def forward(self, **kwargs: Any) -> Prediction:
        best: Prediction | None = None
        best_reward = float("-inf")
        failures = 0
        last_error: Exception | None = None
        for idx in range(self.N):
            try:
                with settings.context(lm=self._lm_for(idx)):
                    pred = self.module(**kwargs)
                reward = float(self.reward_fn(kwargs, pred))
            except Exception as exc:
                failures += 1
                last_error = exc
                log.warning("BestOfN attempt %d failed: %s", idx, exc)
                if failures >= self.fail_count:
                    raise
                continue
            if reward > best_reward:
                best, best_reward = pred, reward
            if reward >= self.threshold:
                break
        if best is None:
            assert last_error is not None
            raise last_error
        return best


class Refine(BestOfN):
    """BestOfN that, after a low-reward attempt, asks the LM for advice and passes it to the next
    attempt as a hint (DSPy's ``Refine``)."""

    def forward(self, **kwargs: Any) -> Prediction:
        from dspex.predict.predict import Predict

        from dspex.signatures.signature import make_signature

        advise = Predict(
            make_signature(
                "program_inputs, program_outputs, reward_value: float, target_threshold: float -> advice",
                "A program produced outputs whose reward is below the target. Give short, concrete advice the "
                "program should follow on its next attempt to reach the threshold.",
            )
        )
        best: Prediction | None = None
        best_reward = float("-inf")
        hint: str | None = None
        failures = 0
        for idx in range(self.N):
            try:
                with settings.context(lm=self._lm_for(idx)):
                    pred = self._run_with_hint(kwargs, hint)
                reward = float(self.reward_fn(kwargs, pred))
            except Exception as exc:
                failures += 1
                log.warning("Refine attempt %d failed: %s", idx, exc)
                if failures >= self.fail_count:
                    raise
                continue
            if reward > best_reward:
                best, best_reward = pred, reward
            if reward >= self.threshold or idx == self.N - 1:
                break
            try:
                hint = str(
                    advise(
                        program_inputs=str(kwargs),
                        program_outputs=str(pred.toDict()),
                        reward_value=reward,
                        target_threshold=self.threshold,
                    ).advice
                )
            except Exception as exc:
                log.warning("Refine could not get advice: %s", exc)
        if best is None:
            raise RuntimeError("Refine: every attempt failed.")
        return best

    def _run_with_hint(self, kwargs: dict[str, Any], hint: str | None) -> Prediction:
        if not hint:
            return self.module(**kwargs)
        from dspex.signatures.field import InputField

        saved = []
        for _, predictor in self.module.named_predictors():
            saved.append((predictor, predictor.signature))
            if "hint_" not in predictor.signature.input_fields:
                predictor.signature = predictor.signature.append(
                    "hint_", InputField(desc="A hint to the module from an earlier run"), str
                )
        try:
            # Predict fills its hint_ input from the refine_hint setting (see Predict._preprocess).
            with settings.context(refine_hint=hint):
                return self.module(**kwargs)
        finally:
            for predictor, sig in saved:
                predictor.signature = sig

