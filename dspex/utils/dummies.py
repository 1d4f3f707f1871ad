"""``DummyLM``: a scripted LM for tests and docs, in DSPy's three modes.

- a list of answers: each call returns the next dict of output values, formatted as the
  adapter's reply (``[[ ## answer ## ]]`` sections by default);
- a dict ``{prompt substring: answers}``: the first key found in the last message wins;
- ``follow_examples=True``: answer with the outputs of the demo whose inputs match the final
  user message (so a program "learns" from its demos).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from dspex.clients.base_lm import BaseLM, Choice, LMResponse, Usage

__all__ = ["DummyLM"]

_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]")


class DummyLM(BaseLM):
    provider = "dummy"

    def __init__(
        self,
        answers: list[dict[str, Any]] | dict[str, dict[str, Any]],
        follow_examples: bool = False,
        adapter: Any = None,
    ) -> None:
        super().__init__("dummy", "chat", temperature=0.0, max_tokens=1000, cache=False)
        self.answers: Any
        if isinstance(answers, dict):
            self.answers = answers
        else:
            self._answer_list = list(answers)
            self.answers = iter(self._answer_list)
        self.follow_examples = follow_examples
        self.adapter = adapter
        self.calls = 0

    def _format(self, values: dict[str, Any]) -> str:
        if self.adapter is not None and hasattr(self.adapter, "format_field_with_value"):
            return str(self.adapter.format_field_with_value(values, role="assistant"))
        return "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in values.items())

    def _use_example(self, messages: list[dict[str, Any]]) -> str:
        counts: dict[str, int] = {}
        for message in messages:
            content = message.get("content")
            if isinstance(content, str):
                m = _FIELD.match(content)
                if m:
                    counts[m.group(0)] = counts.get(m.group(0), 0) + 1
        final_input = str(messages[-1]["content"]).split("\n\n")[0]
        for inp, out in zip(reversed(messages[:-1]), reversed(messages), strict=False):
            if out.get("role") == "assistant" and final_input in str(inp.get("content", "")):
                return str(out["content"])
        return "[[ ## answer ## ]]\nNo matching example."

    def forward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> LMResponse:
        messages = messages or [{"role": "user", "content": prompt or ""}]
        n = int(kwargs.get("n", 1) or 1)
        choices = []
        for _ in range(n):
            self.calls += 1
            if self.follow_examples:
                text = self._use_example(messages)
            elif isinstance(self.answers, dict):
                last = str(messages[-1].get("content", ""))
                text = next(
                    (self._format(v) for k, v in self.answers.items() if k in last),
                    "No more responses",
                )
            else:
                text = self._format(next(self.answers, {"answer": "No more responses"}))
            choices.append(Choice(text=text, finish_reason="stop"))
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        out_chars = sum(len(c.text or "") for c in choices)
        return LMResponse(
            model="dummy",
            choices=choices,
            usage=Usage(prompt_tokens=prompt_chars // 4, completion_tokens=out_chars // 4, estimated=True),
            cost_usd=0.0,
            provider=self.provider,
        )

    def reset(self) -> None:
        """Start the list of answers again."""
        if not isinstance(self.answers, dict):
            self.answers = iter(self._answer_list)

    def cycle(self) -> DummyLM:
        """Repeat the list of answers forever (handy for benchmarks and long loops)."""
        if not isinstance(self.answers, dict):
            self.answers = itertools.cycle(self._answer_list)
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> DummyLM:
        # An LM is shared, not copied, when a program is deep-copied (as DSPy's LMs are).
        return self


