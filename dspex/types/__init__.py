"""ML types for signature fields, with their constraints, coercions and a registry.

Use them as field annotations::

    class Judge(dspex.Signature):
        answer: str = dspex.InputField()
        confidence: ConfidenceScore = dspex.OutputField()
        steps: ReasoningChain = dspex.OutputField()

or validate a value directly::

    validate("confidence_score", "0.87")            # -> 0.87
    validate(ConfidenceScore, 1.3, field="confidence")
    # ValidationError: confidence must be <= 1 (ge=0, le=1), got 1.3

===================  =============================================================  ===========
name                 what                                                           category
===================  =============================================================  ===========
confidence_score     float in [0, 1], 3 decimals; "87%" accepted                    numeric
probability          float in [0, 1]; "25%" accepted                                numeric
similarity_score     float in [-1, 1]                                               numeric
token_count          int in [0, 1_000_000]; "1,024" accepted                        metrics
token_usage          prompt + completion = total tokens (OpenAI / Anthropic names)  metrics
embedding            1..10,000 finite floats, non-zero; ``embedding(dim, normalize)``  vector
reasoning_step       thought (10-1000 chars), reasoning (20-2000), confidence       reasoning
reasoning_chain      1..50 steps numbered 1, 2, 3, ... in order, no repeated thought  reasoning
function_call        name, JSON-object arguments, call id (OpenAI / Anthropic shapes)  function
tool_result          tool name, result, success, error only (and always) on failure  function
model_output         content, model, usage, finish reason, tool calls               model
prompt_template      text with well-formed {{variable}} placeholders                text
===================  =============================================================  ===========

Invalid values raise ``dspex.errors.ValidationError`` with ``field``, ``constraint`` and
``errors`` (every problem as ``(location, constraint, sentence)``). Adapters that validate
whole output models translate pydantic's errors the same way with ``from_pydantic_error``.
Telemetry: ``("dspex", "types", "registered")`` per registration and ``("dspex", "types",
"invalid")`` per failed ``validate`` call (metadata: field, constraint).
"""

from __future__ import annotations

from dspex.types._calls import FunctionCall, ToolResult
from dspex.types._embedding import MAX_EMBEDDING_DIM, Embedding, embedding
from dspex.types._errors import from_pydantic_error
from dspex.types._model_output import ModelOutput, TokenUsage
from dspex.types._numeric import (
    MAX_TOKEN_COUNT,
    ConfidenceScore,
    Probability,
    SimilarityScore,
    TokenCount,
)
from dspex.types._reasoning import MAX_REASONING_STEPS, ReasoningChain, ReasoningStep
from dspex.types._registry import (
    TypeSpec,
    _builtin,
    get_type,
    get_type_spec,
    list_types,
    register_type,
    unregister_type,
    validate,
)
from dspex.types._template import (
    MAX_TEMPLATE_CHARS,
    PromptTemplate,
    prompt_template,
    render_template,
    template_variables,
)

__all__ = [
    "MAX_EMBEDDING_DIM",
    "MAX_REASONING_STEPS",
    "MAX_TEMPLATE_CHARS",
    "MAX_TOKEN_COUNT",
    "ConfidenceScore",
    "Embedding",
    "FunctionCall",
    "ModelOutput",
    "Probability",
    "PromptTemplate",
    "ReasoningChain",
    "ReasoningStep",
    "SimilarityScore",
    "TokenCount",
    "TokenUsage",
    "ToolResult",
    "TypeSpec",
    "embedding",
    "from_pydantic_error",
    "get_type",
    "get_type_spec",
    "list_types",
    "prompt_template",
    "register_type",
    "render_template",
    "template_variables",
    "unregister_type",
    "validate",
]

for _name, _annotation, _description, _category in (
    ("confidence_score", ConfidenceScore, "How sure a model is, 0 to 1 (3 decimals).", "numeric"),
    ("probability", Probability, "A probability, 0 to 1.", "numeric"),
    ("similarity_score", SimilarityScore, "A similarity such as a cosine, -1 to 1.", "numeric"),
    ("token_count", TokenCount, "A number of tokens, 0 to 1,000,000.", "metrics"),
    ("token_usage", TokenUsage, "Prompt, completion and total tokens of a call.", "metrics"),
    ("embedding", Embedding, "A vector of 1 to 10,000 finite numbers, not all zero.", "vector"),
    ("reasoning_step", ReasoningStep, "One step of a chain of thought.", "reasoning"),
    ("reasoning_chain", ReasoningChain, "1 to 50 reasoning steps numbered in order.", "reasoning"),
    ("function_call", FunctionCall, "A call of a named function with JSON arguments.", "function"),
    ("tool_result", ToolResult, "The outcome of running a tool.", "function"),
    ("model_output", ModelOutput, "A model's completion with usage and finish reason.", "model"),
    ("prompt_template", PromptTemplate, "A prompt with {{variable}} placeholders.", "text"),
):
    _builtin(_name, _annotation, _description, _category)
del _name, _annotation, _description, _category
