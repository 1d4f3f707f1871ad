"""``History``: earlier turns of a conversation as an input field (DSPy's ``dspy.History``).

    class QA(dspex.Signature):
        question: str = dspex.InputField()
        history: dspex.History = dspex.InputField()
        answer: str = dspex.OutputField()

Each message is a dict of the signature's fields; adapters render them as user/assistant turns
before the current question.
"""

from __future__ import annotations

from typing import Any

import pydantic

__all__ = ["History"]


class History(pydantic.BaseModel):
    messages: list[dict[str, Any]]

    model_config = pydantic.ConfigDict(frozen=True, str_strip_whitespace=True, validate_assignment=True, extra="forbid")
