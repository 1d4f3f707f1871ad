"""What of a compiled signature crosses the actor boundary, and how a worker rebuilds from it.

A ``CompiledSignature`` holds Python type objects (field annotations, pydantic validators and
models), which are tied to the process that imported the signature's module; shipping them
through an actor would mean pickling classes by value and getting look-alike classes back.
So the cluster-wide cache stores ``SignatureArtifacts``: plain data only (strings, numbers,
JSON schemas), keyed by the signature's content hash, which is stable across processes:

- per field: name, role, type name, prefix, description, constraints, prompt type note;
- the instructions and the signature's name;
- the output JSON schemas (plain and strict structured-output), the costly part of a compile;
- the adapters' rendered prompt pieces (``templates`` whose keys and values are strings).

A worker that gets artifacts *hydrates*: it walks its own class's fields for the type objects
and fills everything else from the artifacts, so no schema is generated and no prompt piece
rendered again. Validators and pydantic models stay lazy and are built locally on first use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import SignatureError
from dspex.signatures.compiled import (
    CompiledSignature,
    FieldSpec,
    adopt_compiled,
    compile_signature,
    content_hash,
)
from dspex.signatures.compiled import local_compiled as core_local_compiled

__all__ = ["SignatureArtifacts", "adopt", "build_artifacts", "hydrate", "local_compiled"]

#: the artifact layout; a cache entry of another layout is treated as a miss
LAYOUT = 1


@dataclass(frozen=True)
class FieldArtifact:
    name: str
    role: str
    type_name: str
    prefix: str
    desc: str
    constraints: str
    is_str: bool
    note: str


@dataclass(frozen=True)
class SignatureArtifacts:
    """Plain data describing one compiled signature (see the module docstring)."""

    hash: str
    name: str
    instructions: str
    fields: tuple[FieldArtifact, ...]
    output_schema: dict[str, Any] | None = None
    structured_output_schema: dict[str, Any] | None = None
    templates: tuple[tuple[tuple[str, ...], str | None], ...] = ()
    compile_s: float = 0.0
    layout: int = LAYOUT
    extra: dict[str, Any] = field(default_factory=dict)

    def size_hint(self) -> int:
        """A rough byte size, for stats."""
        n = len(self.instructions) + sum(len(f.desc) + len(f.note) + 64 for f in self.fields)
        n += len(str(self.output_schema or "")) + len(str(self.structured_output_schema or ""))
        return n + sum(len(v or "") for _, v in self.templates)


def _warm(sig: Any, compiled: CompiledSignature) -> None:
    """Build the expensive, shareable products of a compile: notes, schemas, adapter prompts."""
    for spec in compiled.outputs:
        _ = spec.note
    try:
        _ = compiled.output_schema
        if not compiled.has_open_dict_output:
            _ = compiled.structured_output_schema
    except Exception:  # a type pydantic cannot describe as JSON schema: leave it to first use
        pass
    from dspex.adapters.chat_adapter import ChatAdapter
    from dspex.adapters.json_adapter import JSONAdapter

    for adapter in (ChatAdapter(), JSONAdapter()):
        try:
            adapter.system_message(sig, compiled)
            adapter.user_message_output_requirements(sig)
        except Exception:  # an adapter that cannot render this signature renders on first use
            pass


def build_artifacts(sig: Any, compiled: CompiledSignature | None = None) -> SignatureArtifacts:
    """Compile ``sig`` fully (schemas and adapter prompts included) and describe it as data."""
    t0 = time.perf_counter()
    compiled = compiled or compile_signature(sig)
    _warm(sig, compiled)
    fields = tuple(
        FieldArtifact(
            name=f.name,
            role=f.role,
            type_name=f.type_name,
            prefix=f.prefix,
            desc=f.desc,
            constraints=f.constraints,
            is_str=f.is_str,
            note=f.note,
        )
        for f in (*compiled.inputs, *compiled.outputs)
    )
    templates = tuple(
        (tuple(k), v)
        for k, v in compiled.templates.items()
        if isinstance(k, tuple) and all(isinstance(p, str) for p in k) and (v is None or isinstance(v, str))
    )
    cached = compiled.__dict__
    return SignatureArtifacts(
        hash=compiled.hash,
        name=compiled.name,
        instructions=compiled.instructions,
        fields=fields,
        output_schema=cached.get("output_schema"),
        structured_output_schema=cached.get("structured_output_schema"),
        templates=templates,
        compile_s=compiled.compile_s + (time.perf_counter() - t0),
    )


def hydrate(sig: Any, artifacts: SignatureArtifacts) -> CompiledSignature:
    """A ``CompiledSignature`` for the local class ``sig`` from shared artifacts.

    Raises ``SignatureError`` when the artifacts describe another signature (a hash or field
    mismatch), which would mean two different signatures share a content hash.
    """
    local_hash = content_hash(sig)
    if artifacts.hash != local_hash or artifacts.layout != LAYOUT:
        raise SignatureError(
            f"The shared compiled form for {getattr(sig, '__name__', sig)!r} has hash {artifacts.hash[:12]} "
            f"(layout {artifacts.layout}) but the local signature hashes to {local_hash[:12]} (layout {LAYOUT}); "
            "the workers run different code. Deploy the same dspex and program code everywhere."
        )
    by_name = {f.name: f for f in artifacts.fields}
    inputs: list[FieldSpec] = []
    outputs: list[FieldSpec] = []
    for name, info in sig.fields.items():
        art = by_name.get(name)
        if art is None:
            raise SignatureError(
                f"The shared compiled form for {sig.__name__!r} has no field {name!r}; the workers run "
                "different code. Deploy the same program code everywhere."
            )
        spec = FieldSpec(
            name=name,
            role=art.role,
            annotation=info.annotation,
            type_name=art.type_name,
            prefix=art.prefix,
            desc=art.desc,
            constraints=art.constraints,
            is_str=art.is_str,
            metadata=tuple(info.metadata),
            _note=art.note,
        )
        (inputs if spec.role == "input" else outputs).append(spec)
    compiled = CompiledSignature(
        hash=artifacts.hash,
        name=sig.__name__,
        instructions=artifacts.instructions,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        compile_s=0.0,
        templates={k: v for k, v in artifacts.templates},
    )
    # cached_property values live in the instance dict: pre-filling them skips the schema work.
    if artifacts.output_schema is not None:
        compiled.__dict__["output_schema"] = artifacts.output_schema
    if artifacts.structured_output_schema is not None:
        compiled.__dict__["structured_output_schema"] = artifacts.structured_output_schema
    return compiled


def adopt(sig: Any, compiled: CompiledSignature) -> CompiledSignature:
    """Install ``compiled`` in the core's process-local cache (class attribute and hash table),
    so ``compile_signature(sig)`` is an attribute read from now on. Returns the form in use:
    when the process compiled the same hash meanwhile, that one wins."""
    return adopt_compiled(sig, compiled)


def local_compiled(sig: Any) -> CompiledSignature | None:
    """The compiled form this process already has for ``sig`` (class attribute, then the
    core's table by hash), without compiling and without any actor call."""
    return core_local_compiled(sig)
