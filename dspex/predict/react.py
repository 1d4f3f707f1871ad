"""``ReAct``: an agent loop that calls tools until it can answer (DSPy's prompt and trajectory).

Each step asks for ``next_thought``, ``next_tool_name`` and ``next_tool_args``; the tool's
result is appended to the trajectory as an observation; after ``finish`` (or ``max_iters``)
a ChainOfThought extracts the signature's outputs from the trajectory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from dspex.errors import AdapterParseError, ContextWindowExceeded, ToolError
from dspex.predict.chain_of_thought import ChainOfThought
from dspex.predict.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.primitives.tool import Tool
from dspex.settings import settings
from dspex.signatures.field import InputField, OutputField
from dspex.signatures.signature import Signature, ensure_signature, make_signature

__all__ = ["ReAct"]

log = logging.getLogger("dspex.react")


class ReAct(Module):
    def __init__(self, signature: str | type[Signature], tools: list[Callable[..., Any] | Tool], max_iters: int = 20) -> None:
        super().__init__()
        self.signature = sig = ensure_signature(signature)
        self.max_iters = max_iters
        tool_list = [t if isinstance(t, Tool) else Tool(t) for t in tools]
        by_name = {t.name: t for t in tool_list}
        if len(by_name) != len(tool_list):
            raise ToolError("Two ReAct tools share a name; give each a distinct name=.")
        if "finish" in by_name:
            raise ToolError("'finish' is reserved by ReAct; rename that tool.")

        inputs = ", ".join(f"`{k}`" for k in sig.input_fields)
        outputs = ", ".join(f"`{k}`" for k in sig.output_fields)
        instr = [f"{sig.instructions}\n"] if sig.instructions else []
        instr.extend(
            [
                f"You are an Agent. In each episode, you will be given the fields {inputs} as input. And you can see your past trajectory so far.",
                f"Your goal is to use one or more of the supplied tools to collect any necessary information for producing {outputs}.\n",
                "To do this, you will interleave next_thought, next_tool_name, and next_tool_args in each turn, and also when finishing the task.",
                "After each tool call, you receive a resulting observation, which gets appended to your trajectory.\n",
                "When writing next_thought, you may reason about the current situation and plan for future steps.",
                "When selecting the next_tool_name and its next_tool_args, the tool must be one of:\n",
            ]
        )
        by_name["finish"] = Tool(
            func=lambda: "Completed.",
            name="finish",
            desc=f"Marks the task as complete. That is, signals that all information for producing the outputs, i.e. {outputs}, are now available to be extracted.",
            args={},
        )
        for idx, tool in enumerate(by_name.values()):
            instr.append(f"({idx + 1}) {tool}")
        instr.append("When providing `next_tool_args`, the value inside the field must be in JSON format")

        react_fields: dict[str, Any] = {k: (v.annotation, v) for k, v in sig.input_fields.items()}
        react_fields["trajectory"] = (str, InputField())
        react_fields["next_thought"] = (str, OutputField())
        react_fields["next_tool_name"] = (Literal[tuple(by_name)], OutputField())
        react_fields["next_tool_args"] = (dict[str, Any], OutputField())
        react_sig = make_signature(react_fields, "\n".join(instr))
        extract_fields: dict[str, Any] = {k: (v.annotation, v) for k, v in sig.input_fields.items()}
        extract_fields["trajectory"] = (str, InputField())
        extract_fields.update({k: (v.annotation, v) for k, v in sig.output_fields.items()})
        fallback_sig = make_signature(extract_fields, sig.instructions)
        self.tools = by_name
        self.react = Predict(react_sig)
        self.extract = ChainOfThought(fallback_sig)

    def _format_trajectory(self, trajectory: dict[str, Any]) -> str:
        from dspex.adapters.chat_adapter import ChatAdapter

        adapter = settings.get("adapter") or ChatAdapter()
        if not trajectory:
            return ""
        traj_sig = make_signature(f"{', '.join(trajectory)} -> x")
        return str(adapter.format_user_message_content(traj_sig, trajectory))

    def forward(self, **input_args: Any) -> Prediction:
        trajectory: dict[str, Any] = {}
        max_iters = input_args.pop("max_iters", self.max_iters)
        for idx in range(max_iters):
            try:
                pred = self._with_truncation(self.react, trajectory, input_args)
            except (AdapterParseError, ValueError) as err:
                log.warning("Ending the trajectory: the agent failed to select a valid tool: %s", err)
                break
            trajectory[f"thought_{idx}"] = pred.next_thought
            trajectory[f"tool_name_{idx}"] = pred.next_tool_name
            trajectory[f"tool_args_{idx}"] = pred.next_tool_args
            try:
                trajectory[f"observation_{idx}"] = self.tools[pred.next_tool_name](**pred.next_tool_args)
            except Exception as err:
                trajectory[f"observation_{idx}"] = f"Execution error in {pred.next_tool_name}: {err}"
            if pred.next_tool_name == "finish":
                break
        extract = self._with_truncation(self.extract, trajectory, input_args)
        return Prediction(trajectory=trajectory, **extract)

    async def aforward(self, **input_args: Any) -> Prediction:
        trajectory: dict[str, Any] = {}
        max_iters = input_args.pop("max_iters", self.max_iters)
        for idx in range(max_iters):
            try:
                pred = await self._awith_truncation(self.react, trajectory, input_args)
            except (AdapterParseError, ValueError) as err:
                log.warning("Ending the trajectory: the agent failed to select a valid tool: %s", err)
                break
            trajectory[f"thought_{idx}"] = pred.next_thought
            trajectory[f"tool_name_{idx}"] = pred.next_tool_name
            trajectory[f"tool_args_{idx}"] = pred.next_tool_args
            try:
                trajectory[f"observation_{idx}"] = await self.tools[pred.next_tool_name].acall(**pred.next_tool_args)
            except Exception as err:
                trajectory[f"observation_{idx}"] = f"Execution error in {pred.next_tool_name}: {err}"
            if pred.next_tool_name == "finish":
                break
        extract = await self._awith_truncation(self.extract, trajectory, input_args)
        return Prediction(trajectory=trajectory, **extract)

    def _with_truncation(self, module: Module, trajectory: dict[str, Any], input_args: dict[str, Any]) -> Any:
        for _ in range(3):
            try:
                return module(**input_args, trajectory=self._format_trajectory(trajectory))
            except ContextWindowExceeded:
                log.warning("Trajectory exceeded the context window; dropping the oldest tool call.")
                trajectory = self._truncate(trajectory)
        raise ContextWindowExceeded("The trajectory does not fit the context window even after truncation.")

    async def _awith_truncation(self, module: Module, trajectory: dict[str, Any], input_args: dict[str, Any]) -> Any:
        for _ in range(3):
            try:
                return await module.acall(**input_args, trajectory=self._format_trajectory(trajectory))
            except ContextWindowExceeded:
                log.warning("Trajectory exceeded the context window; dropping the oldest tool call.")
                trajectory = self._truncate(trajectory)
        raise ContextWindowExceeded("The trajectory does not fit the context window even after truncation.")

    @staticmethod
    def _truncate(trajectory: dict[str, Any]) -> dict[str, Any]:
        keys = list(trajectory)
        if len(keys) < 4:
            raise ContextWindowExceeded("The trajectory is too long to truncate further.")
        for k in keys[:4]:
            trajectory.pop(k)
        return trajectory
