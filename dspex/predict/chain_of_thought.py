"""``ChainOfThought``: Predict with a ``reasoning`` output before the others (DSPy's shape)."""

from __future__ import annotations

from typing import Any

from pydantic.fields import FieldInfo

from dspex import telemetry
from dspex.telemetry import names
from dspex.predict.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.signatures.field import OutputField
from dspex.signatures.signature import Signature, ensure_signature

__all__ = ["ChainOfThought"]

_COT_EVENT = names.CHAIN_OF_THOUGHT


class ChainOfThought(Module):
    """Ask the LM to reason step by step before answering.

    The wrapped predictor is ``self.predict`` (so saved state is keyed ``"<name>.predict"``, as
    in DSPy); the prediction carries ``reasoning`` and the signature's outputs.
    """

    def __init__(
        self,
        signature: str | type[Signature],
        rationale_field: FieldInfo | None = None,
        rationale_field_type: Any = str,
        **config: Any,
    ) -> None:
        super().__init__()
        sig = ensure_signature(signature)
        if rationale_field is not None and rationale_field.annotation is not None:
            rationale_field_type = rationale_field.annotation
        field = rationale_field or OutputField(
            prefix="Reasoning: Let's think step by step in order to", desc="${reasoning}"
        )
        self.predict = Predict(sig.prepend("reasoning", field, rationale_field_type), **config)

    @property
    def signature(self) -> Any:
        return self.predict.signature

    def forward(self, **kwargs: Any) -> Prediction:
        with telemetry.span(_COT_EVENT, signature=self.predict.signature.__name__):
            return self.predict(**kwargs)

    async def aforward(self, **kwargs: Any) -> Prediction:
        async with telemetry.span(_COT_EVENT, signature=self.predict.signature.__name__):
            return await self.predict.acall(**kwargs)
