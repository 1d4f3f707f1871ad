"""Signatures: typed input/output contracts, class-based or from a string, compiled once."""

from dspex.signatures.compiled import (
    CompiledSignature,
    FieldSpec,
    adopt_compiled,
    cache_stats,
    clear_cache,
    compile_signature,
    content_hash,
    get_annotation_name,
    local_compiled,
)
from dspex.signatures.field import (
    InputField,
    OldField,
    OldInputField,
    OldOutputField,
    OutputField,
    field_role,
    infer_prefix,
)
from dspex.signatures.signature import Signature, SignatureMeta, ensure_signature, make_signature

__all__ = [
    "CompiledSignature",
    "FieldSpec",
    "InputField",
    "OldField",
    "OldInputField",
    "OldOutputField",
    "OutputField",
    "Signature",
    "SignatureMeta",
    "adopt_compiled",
    "cache_stats",
    "clear_cache",
    "compile_signature",
    "content_hash",
    "ensure_signature",
    "field_role",
    "get_annotation_name",
    "infer_prefix",
    "local_compiled",
    "make_signature",
]
