"""``Signature``: the typed input/output contract of a predictor, in DSPy's two forms.

    class QA(dspex.Signature):
        '''Answer questions with short factoid answers.'''
        question: str = dspex.InputField()
        answer: str = dspex.OutputField(desc="often between 1 and 5 words")

    QA2 = dspex.Signature("question, context: list[str] -> answer: float", "Answer precisely.")

A signature is a pydantic model class (as in DSPy), so field metadata is pydantic's. Unlike
DSPy, classes are not compared with ``==`` by content (that would confuse pydantic's own
caches); use ``Sig.equals(other)`` or compare ``Sig.content_hash()``.
"""

from __future__ import annotations

import ast
import builtins
import copy
import inspect
import sys
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

import pydantic
from pydantic.fields import FieldInfo

from dspex.errors import SignatureError
from dspex.signatures.field import InputField, OutputField, field_role, infer_prefix

__all__ = ["Signature", "SignatureMeta", "ensure_signature", "make_signature"]


def _default_instructions(input_names: list[str], output_names: list[str]) -> str:
    inputs = ", ".join(f"`{n}`" for n in input_names)
    outputs = ", ".join(f"`{n}`" for n in output_names)
    return f"Given the fields {inputs}, produce the fields {outputs}."


class SignatureMeta(type(pydantic.BaseModel)):  # type: ignore[misc]
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Signature:
            # Signature("question -> answer", "instructions") builds a new signature class.
            return make_signature(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def __new__(mcs, signature_name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> Any:
        annotations = dict(namespace.get("__annotations__", {}))
        for name, value in namespace.items():
            # A field written without an annotation is a str field, as in DSPy.
            if isinstance(value, FieldInfo) and not name.startswith("_") and name not in annotations:
                annotations[name] = str
        namespace["__annotations__"] = annotations
        try:
            cls = super().__new__(mcs, signature_name, bases, namespace, **kwargs)
        except pydantic.PydanticSchemaGenerationError as exc:
            raise SignatureError(
                f"Signature {signature_name} has a field whose type pydantic cannot describe: {exc}. "
                "Use a JSON-compatible type (str, int, float, bool, list, dict, Literal, a pydantic model)."
            ) from exc
        except pydantic.PydanticUserError as exc:
            raise SignatureError(f"Signature {signature_name} is malformed: {exc}") from exc
        except NameError as exc:
            raise SignatureError(
                f"Signature {signature_name} refers to an unknown type: {exc}. Import it where the signature is defined."
            ) from exc

        if cls.__doc__ is None:
            for base in bases:
                if isinstance(base, SignatureMeta) and base is not Signature and base.__doc__:
                    cls.__doc__ = base.__doc__
                    break
        if signature_name != "Signature" or any(isinstance(b, SignatureMeta) for b in bases):
            cls._finalize_fields()
        return cls

    def _finalize_fields(cls) -> None:
        for name, info in cls.model_fields.items():
            role = field_role(info)
            if role not in ("input", "output"):
                raise SignatureError(
                    f"Field {name!r} of signature {cls.__name__} is not declared with InputField() or "
                    f"OutputField(); write `{name}: <type> = dspex.InputField()` (or OutputField())."
                )
            extra = dict(info.json_schema_extra or {})
            extra.setdefault("prefix", infer_prefix(name) + ":")
            extra.setdefault("desc", f"${{{name}}}")
            info.json_schema_extra = extra
        cls.__dspex_compiled__ = None  # compiled form, filled on first use (compiled.py)

    # -- the DSPy class-level API ----------------------------------------------------------------
    @property
    def instructions(cls) -> str:
        doc = cls.__doc__
        if doc:
            return inspect.cleandoc(doc)
        return _default_instructions(list(cls.input_fields), list(cls.output_fields))

    @instructions.setter
    def instructions(cls, value: str) -> None:
        cls.__doc__ = value
        cls.__dspex_compiled__ = None

    @property
    def input_fields(cls) -> dict[str, FieldInfo]:
        return {k: v for k, v in cls.model_fields.items() if field_role(v) == "input"}

    @property
    def output_fields(cls) -> dict[str, FieldInfo]:
        return {k: v for k, v in cls.model_fields.items() if field_role(v) == "output"}

    @property
    def fields(cls) -> dict[str, FieldInfo]:
        return {**cls.input_fields, **cls.output_fields}

    @property
    def signature(cls) -> str:
        return f"{', '.join(cls.input_fields)} -> {', '.join(cls.output_fields)}"

    def __repr__(cls) -> str:
        parts = [f"{name} = Field({info.json_schema_extra})" for name, info in cls.fields.items()]
        body = "\n    ".join(parts)
        return f"{cls.__name__}({cls.signature}\n    instructions={cls.instructions!r}\n    {body}\n)"


class Signature(pydantic.BaseModel, metaclass=SignatureMeta):
    """Base class of every signature. See the module docstring."""

    __dspex_compiled__: ClassVar[Any] = None

    @classmethod
    def with_instructions(cls, instructions: str) -> type[Signature]:
        return make_signature(_field_items(cls), instructions, signature_name=cls.__name__)

    @classmethod
    def with_updated_fields(cls, name: str, type_: Any = None, **kwargs: Any) -> type[Signature]:
        if name not in cls.model_fields:
            raise SignatureError(f"Signature {cls.__name__} has no field {name!r}; its fields are {list(cls.fields)}.")
        items = _field_items(cls)
        annotation, info = items[name]
        info = copy.deepcopy(info)
        extra = dict(info.json_schema_extra or {})  # type: ignore[arg-type]
        extra.update(kwargs)
        info.json_schema_extra = extra
        items[name] = (type_ if type_ is not None else annotation, info)
        return make_signature(items, cls.instructions, signature_name=cls.__name__)

    @classmethod
    def prepend(cls, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        return cls.insert(0, name, field, type_)

    @classmethod
    def append(cls, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        return cls.insert(-1, name, field, type_)

    @classmethod
    def insert(cls, index: int, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        role = field_role(field)
        if role is None:
            raise SignatureError(f"Insert {name!r} as dspex.InputField() or dspex.OutputField(), got {field!r}.")
        if name in cls.model_fields:
            raise SignatureError(f"Signature {cls.__name__} already has a field {name!r}; use with_updated_fields.")
        if type_ is None:
            type_ = field.annotation if field.annotation is not None else str
        items = _field_items(cls)
        inputs = [(k, v) for k, v in items.items() if field_role(v[1]) == "input"]
        outputs = [(k, v) for k, v in items.items() if field_role(v[1]) == "output"]
        lst = inputs if role == "input" else outputs
        pos = index + len(lst) + 1 if index < 0 else index
        if not 0 <= pos <= len(lst):
            raise SignatureError(
                f"Index {index} is out of range for the {len(lst)} {role} fields of {cls.__name__}."
            )
        lst.insert(pos, (name, (type_, field)))
        return make_signature(dict(inputs + outputs), cls.instructions, signature_name=cls.__name__)

    @classmethod
    def delete(cls, name: str) -> type[Signature]:
        items = _field_items(cls)
        if name not in items:
            return cls
        items.pop(name)
        return make_signature(items, cls.instructions, signature_name=cls.__name__)

    @classmethod
    def equals(cls, other: Any) -> bool:
        """Same instructions, field names, roles, types and metadata (DSPy's ``equals``)."""
        if not isinstance(other, SignatureMeta):
            return False
        from dspex.signatures.compiled import content_hash

        return content_hash(cls) == content_hash(other)

    @classmethod
    def content_hash(cls) -> str:
        """A stable hash of the signature's content (same across processes and runs)."""
        from dspex.signatures.compiled import content_hash

        return content_hash(cls)

    @classmethod
    def dump_state(cls) -> dict[str, Any]:
        """DSPy's saved form: instructions and each field's prefix and description."""
        state: dict[str, Any] = {"instructions": cls.instructions, "fields": []}
        for info in cls.fields.values():
            extra = info.json_schema_extra or {}
            state["fields"].append({"prefix": extra.get("prefix"), "description": extra.get("desc")})  # type: ignore[union-attr]
        return state

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> type[Signature]:
        new = cls.with_instructions(state.get("instructions", cls.instructions))
        saved = state.get("fields", [])
        for (name, _info), field_state in zip(list(new.fields.items()), saved, strict=False):
            kwargs = {}
            if field_state.get("prefix") is not None:
                kwargs["prefix"] = field_state["prefix"]
            if field_state.get("description") is not None:
                kwargs["desc"] = field_state["description"]
            if kwargs:
                new = new.with_updated_fields(name, **kwargs)
        return new


def _field_items(sig: type[Signature]) -> dict[str, tuple[Any, FieldInfo]]:
    return {name: (info.annotation, info) for name, info in sig.fields.items()}


def make_signature(
    signature: str | Mapping[str, Any] | type[Signature],
    instructions: str | None = None,
    signature_name: str = "StringSignature",
    custom_types: Mapping[str, Any] | None = None,
) -> type[Signature]:
    """Build a signature class from a string or a ``{name: (type, field)}`` mapping."""
    if isinstance(signature, SignatureMeta):
        return signature.with_instructions(instructions) if instructions is not None else signature
    if isinstance(signature, str):
        namespace = dict(_caller_namespace())
        if custom_types:
            namespace.update(custom_types)
        fields = _parse_signature(signature, namespace)
    elif isinstance(signature, Mapping):
        fields = {}
        for name, value in signature.items():
            if isinstance(value, FieldInfo):
                fields[name] = (value.annotation if value.annotation is not None else str, value)
            elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], FieldInfo):
                fields[name] = value
            else:
                raise SignatureError(
                    f"Field {name!r}: expected a (type, InputField()/OutputField()) pair, got {value!r}."
                )
    else:
        raise SignatureError(
            f"A signature is a string like 'question -> answer', a dict of fields, or a Signature "
            f"class; got {type(signature).__name__}."
        )
    for name in fields:
        if not name.isidentifier() or name.startswith("_"):
            raise SignatureError(f"Field name {name!r} is not a valid identifier (letters, digits, underscores; not leading _).")
    if not any(field_role(info) == "output" for _, info in fields.values()):
        raise SignatureError(
            f"Signature {signature!r} has no output fields; add at least one after '->'."
            if isinstance(signature, str)
            else "A signature needs at least one OutputField."
        )
    if instructions is None:
        ins = [n for n, (_, f) in fields.items() if field_role(f) == "input"]
        outs = [n for n, (_, f) in fields.items() if field_role(f) == "output"]
        instructions = _default_instructions(ins, outs)
    # Fresh FieldInfo objects so two signatures never share mutable metadata.
    defs: dict[str, Any] = {name: (ann, copy.deepcopy(info)) for name, (ann, info) in fields.items()}
    try:
        sig: type[pydantic.BaseModel] = pydantic.create_model(signature_name, __base__=Signature, __doc__=instructions, **defs)
    except SignatureError:
        raise
    except Exception as exc:
        raise SignatureError(f"Could not build signature {signature!r}: {exc}") from exc
    return typing.cast(type[Signature], sig)


def ensure_signature(signature: str | type[Signature] | None, instructions: str | None = None) -> type[Signature]:
    if signature is None:
        raise SignatureError("A predictor needs a signature, e.g. Predict('question -> answer').")
    if isinstance(signature, str):
        return make_signature(signature, instructions)
    if isinstance(signature, SignatureMeta):
        if instructions is not None:
            raise SignatureError("Pass instructions only with a string signature; use Sig.with_instructions(...) otherwise.")
        return signature
    raise SignatureError(
        f"A signature is a string like 'question -> answer' or a Signature class, got {type(signature).__name__}."
    )


# -- string form --------------------------------------------------------------------------------

_TYPING_NAMES: dict[str, Any] = {
    name: getattr(typing, name)
    for name in ("Any", "List", "Dict", "Tuple", "Set", "Optional", "Union", "Literal", "Annotated")
}
_BUILTIN_TYPES: dict[str, Any] = {
    name: getattr(builtins, name) for name in ("str", "int", "float", "bool", "list", "dict", "tuple", "set", "bytes")
}
_BUILTIN_TYPES["None"] = None


def _caller_namespace() -> dict[str, Any]:
    """Names visible where the signature string was written (DSPy resolves custom types there)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("dspex."):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return {}
    return {**frame.f_globals, **frame.f_locals}


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _parse_signature(text: str, namespace: Mapping[str, Any]) -> dict[str, tuple[Any, FieldInfo]]:
    if text.count("->") != 1:
        raise SignatureError(
            f"Invalid signature {text!r}: it must contain exactly one '->' between inputs and outputs, "
            "e.g. 'question -> answer'."
        )
    left, right = text.split("->")
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    for side, maker in ((left, InputField), (right, OutputField)):
        for part in _split_top_level(side):
            name, _, type_text = part.partition(":")
            name = name.strip()
            if not name.isidentifier() or name.startswith("_"):
                raise SignatureError(f"In signature {text!r}: {name!r} is not a valid field name.")
            if name in fields:
                raise SignatureError(f"In signature {text!r}: field {name!r} appears more than once.")
            annotation: Any = str
            if type_text.strip():
                annotation = _eval_type(type_text.strip(), name, text, namespace)
            fields[name] = (annotation, maker())
    return fields


def _eval_type(type_text: str, field: str, sig: str, namespace: Mapping[str, Any]) -> Any:
    try:
        tree = ast.parse(type_text, mode="eval")
    except SyntaxError as exc:
        raise SignatureError(f"In signature {sig!r}: the type {type_text!r} of field {field!r} is not valid syntax.") from exc

    def resolve_name(name: str) -> Any:
        for table in (namespace, _BUILTIN_TYPES, _TYPING_NAMES):
            if name in table:
                return table[name]
        registered = _registered_type(name)
        if registered is not None:
            return registered
        raise SignatureError(
            f"In signature {sig!r}: unknown type {name!r} for field {field!r}. Use a built-in type, "
            f"a typing name, a registered dspex type, or pass custom_types={{{name!r}: {name}}}."
        )

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Name):
            return resolve_name(node.id)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Attribute):
            return getattr(ev(node.value), node.attr)
        if isinstance(node, ast.Subscript):
            base = ev(node.value)
            sl = node.slice
            args = tuple(ev(e) for e in sl.elts) if isinstance(sl, ast.Tuple) else ev(sl)
            return base[args]
        if isinstance(node, ast.Tuple | ast.List):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return ev(node.left) | ev(node.right)
        raise SignatureError(f"In signature {sig!r}: cannot read the type {type_text!r} of field {field!r}.")

    try:
        return ev(tree.body)
    except SignatureError:
        raise
    except Exception as exc:
        raise SignatureError(f"In signature {sig!r}: invalid type {type_text!r} for field {field!r}: {exc}") from exc


def _registered_type(name: str) -> Any:
    try:
        from dspex import types as dspex_types
    except ImportError:
        return None
    getter = getattr(dspex_types, "get_type", None)
    if getter is None:
        return None
    try:
        return getter(name)
    except Exception:
        return None

