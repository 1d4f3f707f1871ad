"""A signature's compiled form, made once and cached by content hash.

Compilation walks the fields once and keeps what every call needs: each field's name, role,
type name and prompt note, a validator, and a stable content hash. The heavier products
(pydantic input/output models, JSON schemas per provider mode) are built on first use and then
kept. Adapters keep their rendered prompt pieces in ``templates``.

Two tiers: the compiled form is stored on the signature class itself (a hit is an attribute
read), and in a process-wide table by hash (two classes with equal content share one form).
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import threading
import time
import types
import typing
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, get_args, get_origin

import pydantic
from pydantic import TypeAdapter

from dspex import telemetry
from dspex.telemetry import names
from dspex.signatures.field import field_role

__all__ = [
    "CompiledSignature",
    "FieldSpec",
    "adopt_compiled",
    "cache_stats",
    "clear_cache",
    "compile_signature",
    "content_hash",
    "get_annotation_name",
    "local_compiled",
]

_COMPILE_EVENT = names.SIGNATURE_COMPILE


def get_annotation_name(annotation: Any) -> str:
    """DSPy's type names in prompts: ``list[str]``, ``Literal['a', 'b']``, ``Optional[int]``..."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is None:
        if annotation is None or annotation is type(None):
            return "None"
        return getattr(annotation, "__name__", str(annotation))
    if origin is Literal:
        inner = ", ".join(_quote_literal(a) if isinstance(a, str) else get_annotation_name(a) for a in args)
        return f"Literal[{inner}]"
    if origin is typing.Annotated:
        return get_annotation_name(args[0])
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1 and len(args) == 2:
            return f"Optional[{get_annotation_name(non_none[0])}]"
        return f"Union[{', '.join(get_annotation_name(a) for a in args)}]"
    name = getattr(origin, "__name__", str(origin))
    return f"{name}[{', '.join(get_annotation_name(a) for a in args)}]"


def _quote_literal(s: str) -> str:
    if "'" in s and '"' not in s:
        return f'"{s}"'
    return "'" + s.replace("'", "\\'") + "'"


def _move_type_to_front(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _move_type_to_front(v) for k, v in sorted(d.items(), key=lambda kv: (kv[0] != "type", kv[0]))}
    if isinstance(d, list):
        return [_move_type_to_front(x) for x in d]
    return d


def _type_note(annotation: Any) -> str:
    """The note DSPy puts next to an output field in the prompt's structure section."""
    if annotation is str:
        return ""
    if annotation is bool:
        desc = "must be True or False"
    elif annotation in (int, float):
        desc = f"must be a single {annotation.__name__} value"
    elif inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        desc = f"must be one of: {'; '.join(str(m.value) for m in annotation)}"
    elif get_origin(annotation) is Literal:
        desc = f"must exactly match (no extra characters) one of: {'; '.join(str(x) for x in get_args(annotation))}"
    else:
        schema = _move_type_to_front(TypeAdapter(annotation).json_schema())
        desc = f"must adhere to the JSON schema: {json.dumps(schema, ensure_ascii=False)}"
    return " " * 8 + f"# note: the value you produce {desc}"


@dataclass(slots=True)
class FieldSpec:
    name: str
    role: str
    annotation: Any
    type_name: str
    prefix: str
    #: the field's description, "" when it is DSPy's ``${name}`` placeholder
    desc: str
    constraints: str
    is_str: bool
    #: pydantic constraint objects (Ge, MaxLen, ...) from the field, enforced when parsing
    metadata: tuple[Any, ...] = ()
    _validator: TypeAdapter[Any] | None = None
    _note: str | None = None

    @property
    def validator(self) -> TypeAdapter[Any]:
        if self._validator is None:
            ann = typing.Annotated[(self.annotation, *self.metadata)] if self.metadata else self.annotation
            self._validator = TypeAdapter(ann)  # type: ignore[arg-type]
        return self._validator

    @property
    def note(self) -> str:
        """For output fields: the prompt's type note (``# note: the value you produce ...``)."""
        if self._note is None:
            self._note = _type_note(self.annotation) if self.role == "output" else ""
        return self._note


@dataclass
class CompiledSignature:
    """What every call of a signature needs, computed once."""

    hash: str
    name: str
    instructions: str
    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]
    compile_s: float = 0.0
    #: rendered prompt pieces, keyed by the adapter that made them
    templates: dict[Any, Any] = field(default_factory=dict)

    @cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.inputs)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.outputs)

    @cached_property
    def fields(self) -> dict[str, FieldSpec]:
        return {f.name: f for f in (*self.inputs, *self.outputs)}

    @cached_property
    def input_model(self) -> type[pydantic.BaseModel]:
        return _model(f"{self.name}Inputs", self.inputs)

    @cached_property
    def output_model(self) -> type[pydantic.BaseModel]:
        return _model(f"{self.name}Outputs", self.outputs)

    @cached_property
    def output_schema(self) -> dict[str, Any]:
        """Plain JSON schema of the outputs."""
        return self.output_model.model_json_schema()

    @cached_property
    def structured_output_schema(self) -> dict[str, Any]:
        """OpenAI strict structured-output schema: every field required, no extra properties."""
        return _strictify(self.output_model.model_json_schema())

    def response_format(self, mode: str) -> dict[str, Any] | None:
        """The ``response_format`` for a request mode: "json_schema", "json_object" or "plain"."""
        if mode == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "DSPyProgramOutputs", "strict": True, "schema": self.structured_output_schema},
            }
        if mode == "json_object":
            return {"type": "json_object"}
        return None

    def tool_schema(self, name: str = "respond") -> dict[str, Any]:
        """The outputs as one function's parameters, for tool / function calling."""
        return {
            "type": "function",
            "function": {
                "name": name,
                "description": self.instructions,
                "parameters": self.structured_output_schema,
            },
        }

    @cached_property
    def has_open_dict_output(self) -> bool:
        """True when an output is a free-form dict, which strict structured output cannot express."""
        for f in self.outputs:
            ann = f.annotation
            if ann is dict or get_origin(ann) is dict:
                return True
        return False


def _model(name: str, specs: tuple[FieldSpec, ...]) -> type[pydantic.BaseModel]:
    defs: dict[str, Any] = {f.name: (f.annotation, ...) for f in specs}
    return pydantic.create_model(name, **defs)


def _strictify(schema: dict[str, Any]) -> dict[str, Any]:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: walk(v) for k, v in node.items() if k not in ("title", "default")}
            if node.get("type") == "object" and "properties" in node:
                node["required"] = list(node["properties"])
                node["additionalProperties"] = False
            return node
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node

    return typing.cast(dict[str, Any], walk(schema))


_CONSTRAINT_WORDS = {
    "gt": "greater than",
    "ge": "greater than or equal to",
    "lt": "less than",
    "le": "less than or equal to",
    "multiple_of": "a multiple of",
    "min_length": "minimum length",
    "max_length": "maximum length",
}


def _describe_metadata(metadata: list[Any]) -> str:
    """Constraints carried by the type itself (``Annotated[float, Field(ge=0, le=1)]``), in words."""
    parts = []
    for item in metadata:
        for attr, words in _CONSTRAINT_WORDS.items():
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{words}: {value}")
    return ", ".join(parts)


def _type_key(annotation: Any) -> str:
    if inspect.isclass(annotation) and issubclass(annotation, pydantic.BaseModel):
        schema = json.dumps(annotation.model_json_schema(), sort_keys=True)
        return f"{annotation.__module__}.{annotation.__qualname__}:{hashlib.sha256(schema.encode()).hexdigest()[:16]}"
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return f"{annotation.__module__}.{annotation.__qualname__}:{[m.value for m in annotation]}"
    origin = get_origin(annotation)
    if origin is None:
        return getattr(annotation, "__qualname__", repr(annotation))
    return f"{_type_key(origin)}[{', '.join(_type_key(a) if not isinstance(a, str | int | float | bool) else repr(a) for a in get_args(annotation))}]"


def _describe(sig: Any) -> tuple[str, list[tuple[str, str, str, str, str, str]]]:
    rows = []
    for name, info in sig.fields.items():
        extra = info.json_schema_extra or {}
        rows.append(
            (
                name,
                field_role(info) or "",
                _type_key(info.annotation),
                str(extra.get("prefix", "")),
                str(extra.get("desc", "")),
                str(extra.get("constraints", "")),
            )
        )
    return sig.instructions, rows


def content_hash(sig: Any) -> str:
    """Stable across processes: instructions, and each field's name, role, type and metadata."""
    instructions, rows = _describe(sig)
    blob = json.dumps({"instructions": instructions, "fields": rows}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class _Stats:
    __slots__ = ("compiles", "hits", "misses")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.compiles = 0


_lock = threading.Lock()
_by_hash: dict[str, CompiledSignature] = {}
_stats = _Stats()


def compile_signature(sig: Any) -> CompiledSignature:
    """The compiled form of ``sig``; compiles on first use, then an attribute read."""
    compiled = sig.__dict__.get("__dspex_compiled__")
    if compiled is not None:
        _stats.hits += 1
        return typing.cast(CompiledSignature, compiled)
    return _compile_slow(sig)


def _compile_slow(sig: Any) -> CompiledSignature:
    h = content_hash(sig)
    with _lock:
        compiled = _by_hash.get(h)
        if compiled is not None:
            _stats.hits += 1
            sig.__dspex_compiled__ = compiled
            telemetry.emit(names.CACHE_HIT, {"count": 1}, {"cache": "signature"})
            return compiled
        _stats.misses += 1
    telemetry.emit(names.CACHE_MISS, {"count": 1}, {"cache": "signature"})
    with telemetry.span(_COMPILE_EVENT, signature=sig.__name__, fields=len(sig.model_fields)):
        t0 = time.perf_counter()
        inputs: list[FieldSpec] = []
        outputs: list[FieldSpec] = []
        for name, info in sig.fields.items():
            extra = info.json_schema_extra or {}
            desc = str(extra.get("desc", ""))
            spec = FieldSpec(
                name=name,
                role=field_role(info) or "",
                annotation=info.annotation,
                type_name=get_annotation_name(info.annotation),
                prefix=str(extra.get("prefix", "")),
                desc="" if desc == f"${{{name}}}" else desc,
                constraints=str(extra.get("constraints", "")) or _describe_metadata(info.metadata),
                is_str=info.annotation is str and not info.metadata,
                metadata=tuple(info.metadata),
            )
            (inputs if spec.role == "input" else outputs).append(spec)
        compiled = CompiledSignature(
            hash=h,
            name=sig.__name__,
            instructions=sig.instructions,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
        )
        compiled.compile_s = time.perf_counter() - t0
    with _lock:
        compiled = _by_hash.setdefault(h, compiled)
        _stats.compiles += 1
    sig.__dspex_compiled__ = compiled
    return compiled


def adopt_compiled(sig: Any, compiled: CompiledSignature) -> CompiledSignature:
    """Install a compiled form made elsewhere (e.g. rebuilt from a cluster-wide cache entry) in
    this process's cache, so ``compile_signature(sig)`` becomes an attribute read. Returns the
    form in use: when this process already has one for the same hash, that one wins."""
    with _lock:
        existing = _by_hash.setdefault(compiled.hash, compiled)
    sig.__dspex_compiled__ = existing
    return existing


def local_compiled(sig: Any) -> CompiledSignature | None:
    """The compiled form this process already has for ``sig``, without compiling."""
    found = sig.__dict__.get("__dspex_compiled__")
    if found is not None:
        return typing.cast(CompiledSignature, found)
    h = content_hash(sig)
    with _lock:
        existing = _by_hash.get(h)
    if existing is not None:
        sig.__dspex_compiled__ = existing
    return existing


def cache_stats() -> dict[str, int]:
    """Hits, misses and compilations of the process-local signature cache."""
    return {"hits": _stats.hits, "misses": _stats.misses, "compiles": _stats.compiles, "size": len(_by_hash)}


def clear_cache() -> None:
    with _lock:
        _by_hash.clear()
        _stats.hits = _stats.misses = _stats.compiles = 0
