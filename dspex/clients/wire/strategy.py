"""Pick a request strategy from what the caller asked for and what the endpoint can do.

The caller (an adapter) asks through DSPy's keyword arguments: ``response_format`` (a dict in
OpenAI's shape, or a pydantic model class) and ``tools``. When the endpoint lacks the native
feature the request degrades: structured output -> forced tool call -> JSON mode -> plain;
JSON mode -> plain. Plain still works because DSPy's prompts state the format in words.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from dspex.clients.providers import Capabilities
from dspex.clients.wire._types import Strategy
from dspex.errors import ConfigurationError

__all__ = ["Plan", "plan_request", "strict_schema"]

STRUCTURED_TOOL = "json_tool_call"


@dataclass(slots=True)
class Plan:
    strategy: Strategy
    response_format: dict[str, Any] | None = None  # to send natively
    tools: list[dict[str, Any]] | None = None  # OpenAI-shaped tools to send
    tool_choice: Any = None
    structured_tool: str | None = None  # a forced tool standing in for structured output


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a JSON schema in OpenAI's strict form: every object closed, every key required."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(out)
    return out


def _normalize_response_format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None:
        return None
    if isinstance(fmt, type) and hasattr(fmt, "model_json_schema"):
        return {
            "type": "json_schema",
            "json_schema": {"name": fmt.__name__, "strict": True, "schema": strict_schema(fmt.model_json_schema())},
        }
    if isinstance(fmt, dict) and fmt.get("type") in ("text", "json_object", "json_schema"):
        if fmt["type"] == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise ConfigurationError(
                    "response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}."
                )
        return fmt
    raise ConfigurationError(
        f"response_format must be a pydantic model class or a dict with type text, json_object or "
        f"json_schema; got {fmt!r}."
    )


def _normalize_tools(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list) or not tools:
        raise ConfigurationError("tools must be a non-empty list of {'type': 'function', 'function': {...}}.")
    out = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ConfigurationError(
                f"Each tool must look like {{'type': 'function', 'function': {{'name': ..., "
                f"'parameters': {{...}}}}}}; got {tool!r}."
            )
        out.append({"type": "function", "function": fn})
    return out


def plan_request(kwargs: dict[str, Any], caps: Capabilities) -> Plan:
    """Choose the strategy; pops ``response_format``, ``tools`` and ``tool_choice`` from kwargs."""
    fmt = _normalize_response_format(kwargs.pop("response_format", None))
    tools = _normalize_tools(kwargs.pop("tools", None))
    tool_choice = kwargs.pop("tool_choice", None)
    if tools is not None:
        if not caps.tools:
            raise ConfigurationError(
                "This endpoint does not support tool calling (capabilities.tools is False); "
                "use ReAct's text protocol or another model."
            )
        return Plan(Strategy.TOOLS, tools=tools, tool_choice=tool_choice)
    if fmt is None or fmt["type"] == "text":
        return Plan(Strategy.PLAIN)
    if fmt["type"] == "json_schema":
        if caps.json_schema:
            return Plan(Strategy.STRUCTURED, response_format=fmt)
        if caps.tools:
            spec = fmt["json_schema"]
            tool = {
                "type": "function",
                "function": {
                    "name": STRUCTURED_TOOL,
                    "description": f"Respond with the {spec.get('name', 'output')} object.",
                    "parameters": spec["schema"],
                },
            }
            return Plan(
                Strategy.STRUCTURED,
                tools=[tool],
                tool_choice={"type": "function", "function": {"name": STRUCTURED_TOOL}},
                structured_tool=STRUCTURED_TOOL,
            )
        fmt = {"type": "json_object"}
    if caps.json_object:
        return Plan(Strategy.JSON_MODE, response_format={"type": "json_object"})
    return Plan(Strategy.PLAIN)
