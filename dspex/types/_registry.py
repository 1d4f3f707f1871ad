"""The type registry: ML types by name, built-in and user-registered, and ``validate``.

Names are snake_case; a CamelCase name is looked up as its snake_case form, so a signature
string may say ``"question -> confidence: ConfidenceScore"`` or ``confidence_score``. A name is
registered once; registering it again is an error (unregister a user type first).

Pydantic builds a validator for a type the first time it is used, not at import or
registration of a built-in, so ``import dspex.types`` stays cheap. User types are built when
registered, so a type pydantic cannot handle fails there, not in the middle of a prediction.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import pydantic
from pydantic import AfterValidator, TypeAdapter

from dspex import telemetry
from dspex.errors import (
    AlreadyExists,
    ConfigurationError,
    NotFound,
    SignatureError,
    ValidationError,
)
from dspex.types._errors import fail, from_pydantic_error

__all__ = [
    "TypeSpec",
    "get_type",
    "get_type_spec",
    "list_types",
    "register_type",
    "unregister_type",
    "validate",
]

_REGISTERED = ("dspex", "types", "registered")
_INVALID = ("dspex", "types", "invalid")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@functools.lru_cache(maxsize=1024)
def type_key(name: str) -> str:
    """``ConfidenceScore`` / ``confidence_score`` -> ``confidence_score``."""
    return _CAMEL_BOUNDARY.sub("_", name.strip()).lower()


@dataclass(frozen=True)
class TypeSpec:
    """A registered type: its name, the annotation to use in signatures, and what it means."""

    name: str
    annotation: Any
    description: str
    category: str = "custom"
    builtin: bool = False
    # a one-slot cache for the built adapter (the spec itself is frozen)
    _adapter: list[TypeAdapter[Any]] = field(default_factory=list, repr=False, compare=False)

    def adapter(self) -> TypeAdapter[Any]:
        """The pydantic ``TypeAdapter``, built on first use."""
        if not self._adapter:
            self._adapter.append(TypeAdapter(self.annotation))
        return self._adapter[0]

    def json_schema(self) -> dict[str, Any]:
        return self.adapter().json_schema()


_lock = threading.Lock()
_types: dict[str, TypeSpec] = {}


def _wrap_validator(name: str, validator: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Run a user validator inside pydantic, turning its failures into our error shape.

    The validator gets the value already checked against the annotation. It may return a new
    value, return ``None`` or ``True`` to keep the value, return ``False`` or raise
    ``ValueError`` / ``TypeError`` / ``AssertionError`` / ``dspex.errors.ValidationError`` to
    reject it.
    """
    label = getattr(validator, "__name__", type(validator).__name__)
    if label == "<lambda>":
        label = name  # a lambda has no name of its own; the type's name says more
    constraint = f"validator:{label}"

    def run(value: Any) -> Any:
        try:
            out = validator(value)
        except ValidationError as exc:
            fail(constraint, f"failed validator {label!r}: {exc.message}")
        except (ValueError, TypeError, AssertionError) as exc:
            fail(
                constraint,
                f"failed validator {label!r}: {exc}" if str(exc) else f"failed validator {label!r}",
            )
        if out is False:
            fail(constraint, f"failed validator {label!r}")
        return value if out is None or out is True else out

    return run


def _add(spec: TypeSpec) -> None:
    key = type_key(spec.name)
    with _lock:
        existing = _types.get(key)
        if existing is not None:
            what = "built-in type" if existing.builtin else "type"
            raise AlreadyExists(
                f"An ML {what} named {existing.name!r} is already registered; choose another name"
                + (
                    "."
                    if existing.builtin
                    else f" or call unregister_type({existing.name!r}) first."
                ),
                name=existing.name,
            )
        _types[key] = spec
    telemetry.emit(_REGISTERED, {"count": 1}, {"name": spec.name, "builtin": spec.builtin})


def register_type(
    name: str,
    annotation: Any,
    *,
    description: str = "",
    validator: Callable[[Any], Any] | None = None,
    category: str = "custom",
) -> Any:
    """Register ``annotation`` (a type, ``Annotated[...]`` or a pydantic model) as ``name``.

    ``validator`` runs after pydantic's own checks (see ``_wrap_validator`` for its contract).
    Returns the annotation to use in signatures (with the validator attached).
    Raises ``AlreadyExists`` for a taken name and ``SignatureError`` when pydantic cannot build
    a validator or a JSON schema for the annotation.
    """
    if not isinstance(name, str) or not type_key(name).isidentifier():
        raise ValidationError(
            f"A type name must be an identifier such as 'sentiment_score', got {name!r}.",
            field="name",
            constraint="identifier",
        )
    if validator is not None and not callable(validator):
        raise ValidationError(
            f"validator must be a callable taking the value, got {type(validator).__name__}.",
            field="validator",
            constraint="callable",
        )
    key = type_key(name)
    final = (
        Annotated[annotation, AfterValidator(_wrap_validator(key, validator))]
        if validator
        else annotation
    )
    spec = TypeSpec(key, final, description or f"User type {key}.", category=category)
    try:
        spec.json_schema()  # builds the validator too
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as exc:
        raise SignatureError(
            f"Cannot register type {key!r}: pydantic cannot build a validator and JSON schema for "
            f"{annotation!r} ({exc.__class__.__name__}). Use a pydantic-compatible annotation: a "
            "built-in type, Annotated[...] with Field constraints, or a pydantic BaseModel.",
            name=key,
        ) from exc
    _add(spec)
    return final


def _builtin(name: str, annotation: Any, description: str, category: str) -> None:
    _add(TypeSpec(name, annotation, description, category=category, builtin=True))


def unregister_type(name: str) -> None:
    """Remove a user type. Built-in types cannot be removed."""
    key = type_key(name)
    with _lock:
        spec = _types.get(key)
        if spec is None:
            raise _not_found(name)
        if spec.builtin:
            raise ConfigurationError(
                f"{spec.name!r} is a built-in ML type and cannot be unregistered; register your "
                "variant under another name."
            )
        del _types[key]


def _not_found(name: str) -> NotFound:
    import difflib  # only on this error path; keeps the import of dspex.types cheap

    known = sorted(_types)
    close = difflib.get_close_matches(type_key(name), known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return NotFound(
        f"No ML type named {name!r} is registered.{hint} Registered: {', '.join(known)}. "
        "Add your own with dspex.types.register_type(name, annotation).",
        name=name,
    )


def get_type_spec(name: str) -> TypeSpec:
    spec = _types.get(type_key(name)) if isinstance(name, str) else None
    if spec is None:
        raise _not_found(str(name))
    return spec


def get_type(name: str) -> Any:
    """The annotation registered as ``name``, to use as a signature field's type."""
    return get_type_spec(name).annotation


def list_types(category: str | None = None) -> list[str]:
    """Registered type names, sorted; only those of ``category`` when given."""
    return sorted(
        k for k, spec in list(_types.items()) if category is None or spec.category == category
    )


@functools.lru_cache(maxsize=256)
def _adapter_for(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def validate(type_name_or_annotation: Any, value: Any, *, field: str | None = None) -> Any:
    """Validate (and coerce) ``value`` against a registered type name or any annotation.

    Returns the validated value. Raises ``dspex.errors.ValidationError`` whose message names the
    field (``field``, else the type name, else "value") and the constraint broken.
    """
    if isinstance(type_name_or_annotation, str):
        spec = get_type_spec(type_name_or_annotation)
        adapter, annotation, label = spec.adapter(), spec.annotation, field or spec.name
    else:
        annotation, label = type_name_or_annotation, field or "value"
        try:
            adapter = _adapter_for(annotation)
        except TypeError:  # an unhashable annotation: build without the cache
            adapter = _build_adapter(annotation)
        except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError) as exc:
            raise _bad_annotation(annotation, exc) from exc
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as exc:
        err = from_pydantic_error(exc, annotation=annotation, field=label)
        telemetry.emit(
            _INVALID,
            {"count": 1},
            {"field": err.fields["field"], "constraint": err.fields["constraint"]},
        )
        raise err from exc


def _build_adapter(annotation: Any) -> TypeAdapter[Any]:
    try:
        return TypeAdapter(annotation)
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError) as exc:
        raise _bad_annotation(annotation, exc) from exc


def _bad_annotation(annotation: Any, exc: Exception) -> SignatureError:
    return SignatureError(
        f"Cannot validate against {annotation!r}: pydantic cannot build a validator for it "
        f"({exc.__class__.__name__}). Use a pydantic-compatible annotation or a registered type name."
    )
