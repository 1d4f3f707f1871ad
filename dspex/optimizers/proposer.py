"""Instruction proposals written by an LM (COPRO's and MIPROv2's proposal prompts).

The prompt shapes are DSPy's: COPRO asks with ``basic_instruction`` (or the
``attempted_instructions`` with their scores) for ``proposed_instruction`` and
``proposed_prefix_for_output_field``; MIPROv2's grounded proposer gives the LM what it knows
about the task (a dataset description written by the LM from training data, the program's
structure, example demos, a prompting tip, the current instruction) and asks for
``proposed_instruction``. Each input can be switched off, as in DSPy.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Sequence
from typing import Any

from dspex.predict.predict import Predict
from dspex.primitives.module import Module
from dspex.signatures.field import InputField, OutputField
from dspex.signatures.signature import Signature, make_signature

__all__ = [
    "TIPS",
    "BasicGenerateInstruction",
    "GenerateInstructionGivenAttempts",
    "GroundedProposer",
    "format_demos",
    "program_code",
]


def _sig(name: str, instructions: str, inputs: dict[str, tuple[Any, str]], outputs: dict[str, str]) -> type[Signature]:
    fields: dict[str, Any] = {k: (t, InputField(desc=d)) for k, (t, d) in inputs.items()}
    fields.update({k: (str, OutputField(desc=d)) for k, d in outputs.items()})
    return make_signature(fields, instructions, signature_name=name)


_PROPOSED = {
    "proposed_instruction": "The improved instruction for the language model",
    "proposed_prefix_for_output_field": "The text at the end of the prompt that helps the model start its answer",
}

#: COPRO's first proposals (DSPy's ``BasicGenerateInstruction`` fields)
BasicGenerateInstruction = _sig(
    "BasicGenerateInstruction",
    "You improve instructions for language models. Given the current instruction of a task, write a better "
    "instruction that makes a capable language model do the task well. Be inventive.",
    {"basic_instruction": (str, "The instruction before optimization")},
    _PROPOSED,
)

#: COPRO's later proposals, from scored attempts (DSPy's ``GenerateInstructionGivenAttempts`` fields)
GenerateInstructionGivenAttempts = _sig(
    "GenerateInstructionGivenAttempts",
    "You improve instructions for language models. Below are instructions already tried on a task with their "
    "validation scores, from the lowest score to the highest (higher is better). Write a new instruction that "
    "makes a capable language model do the task even better. Be inventive.",
    {"attempted_instructions": (list[str], "Instructions tried so far, each with its prefix and score")},
    _PROPOSED,
)

DescribeDataset = _sig(
    "DescribeDataset",
    "Look at the examples of a dataset and write down what you observe about them: the kind of task, the "
    "topics, the format of inputs and outputs, and what it takes to answer them correctly.",
    {"examples": (str, "Sample examples of the dataset")},
    {"observations": "What you observe about the dataset"},
)

SummarizeObservations = _sig(
    "SummarizeObservations",
    "Summarize the observations made about a dataset in two or three sentences, keeping what matters for "
    "solving its task.",
    {"observations": (str, "Observations about a dataset")},
    {"summary": "A short summary of the dataset and its task"},
)

DescribeProgram = _sig(
    "DescribeProgram",
    "Describe what this language-model program does and how its steps work together, in a few sentences.",
    {"program_code": (str, "The program's structure: its predictors and their signatures")},
    {"program_description": "What the program does"},
)


#: prompting tips, one drawn per proposal (MIPROv2's tip-aware proposer)
TIPS: dict[str, str] = {
    "none": "",
    "creative": "Be inventive: find an original way to phrase the instruction.",
    "simple": "Keep the instruction short, plain and direct.",
    "description": "Make the instruction detailed: say exactly what to do and what to watch out for.",
    "high_stakes": "Frame the task as one where mistakes are costly, so the model is careful.",
    "persona": 'Start the instruction with a persona suited to the task (e.g. "You are a ...").',
}

_PROPOSAL_INSTRUCTIONS = (
    "Use the information given about a task — a description of its dataset, the program that solves it, "
    "example inputs and outputs, and a prompting tip — to write a new instruction for one predictor of the "
    "program, so that a language model following it solves the task well."
)

_PROPOSAL_FIELDS: dict[str, str] = {
    "dataset_description": "A description of the task's dataset",
    "program_code": "The program's structure: its predictors and their signatures",
    "program_description": "What the program does",
    "module": "The predictor to write an instruction for",
    "task_demos": "Example inputs and outputs of the task",
    "basic_instruction": "The predictor's current instruction",
    "tip": "A tip for writing the instruction",
}


def proposal_signature(inputs: Sequence[str]) -> type[Signature]:
    """MIPROv2's proposal signature with only the enabled inputs."""
    fields: dict[str, Any] = {name: (str, InputField(desc=_PROPOSAL_FIELDS[name])) for name in inputs}
    fields["proposed_instruction"] = (str, OutputField(desc="The new instruction for the predictor"))
    return make_signature(fields, _PROPOSAL_INSTRUCTIONS, signature_name="GenerateSingleModuleInstruction")


def format_demos(demos: Sequence[Any], signature: Any, limit: int = 3) -> str:
    """Demos as plain text blocks (``Question: ...``), for a proposal prompt."""
    blocks = []
    names = list(signature.input_fields) + list(signature.output_fields)
    for demo in list(demos)[:limit]:
        lines = [f"{n.replace('_', ' ').capitalize()}: {demo.get(n)}" for n in names if demo.get(n) is not None]
        if lines:
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def program_code(program: Module) -> str:
    """The program's source when it is a user class, plus each predictor's signature."""
    lines = []
    cls = type(program)
    if not cls.__module__.startswith("dspex."):
        try:
            lines.append(inspect.getsource(cls))
        except (OSError, TypeError):
            pass
    for name, p in program.named_predictors():
        lines.append(f"{name} = Predict({p.signature.signature!r})  # {p.signature.instructions}")
    return "\n".join(lines)


class GroundedProposer:
    """Proposes instruction candidates for each predictor of a program (MIPROv2's step 2)."""

    def __init__(
        self,
        *,
        prompt_model: Any = None,
        program_aware: bool = True,
        use_dataset_summary: bool = True,
        use_task_demos: bool = True,
        use_tip: bool = True,
        view_data_batch_size: int = 10,
        num_demos_in_context: int = 3,
        temperature: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.prompt_model = prompt_model
        self.program_aware = program_aware
        self.use_dataset_summary = use_dataset_summary
        self.use_task_demos = use_task_demos
        self.use_tip = use_tip
        self.view_data_batch_size = view_data_batch_size
        self.num_demos_in_context = num_demos_in_context
        self.temperature = temperature
        self.rng = rng or random.Random(0)

    async def _ask(self, signature: type[Signature], **inputs: Any) -> Any:
        predictor = Predict(signature, temperature=self.temperature)
        return await predictor.acall(lm=self.prompt_model, **inputs) if self.prompt_model else await predictor.acall(**inputs)

    async def describe_dataset(self, trainset: Sequence[Any], signature: Any) -> str:
        """Observations on batches of training data; summarized when there is more than one."""
        batches = [trainset[i : i + self.view_data_batch_size] for i in range(0, len(trainset), self.view_data_batch_size)][:3]
        replies = await asyncio.gather(
            *(self._ask(DescribeDataset, examples=format_demos(b, signature, limit=len(b))) for b in batches)
        )
        observations = [str(r.observations) for r in replies]
        if len(observations) == 1:
            return observations[0]
        summary = await self._ask(SummarizeObservations, observations="\n\n".join(observations))
        return str(summary.summary)

    async def propose(
        self,
        program: Module,
        trainset: Sequence[Any],
        num_candidates: int,
        demo_candidates: dict[int, list[list[Any]]] | None = None,
    ) -> dict[int, list[str]]:
        """``num_candidates`` instructions per predictor index; index 0 is the current one."""
        predictors = program.predictors()
        if num_candidates <= 1:
            return {i: [p.signature.instructions] for i, p in enumerate(predictors)}
        first_sig = predictors[0].signature
        description = await self.describe_dataset(trainset, first_sig) if self.use_dataset_summary and trainset else ""
        code = program_code(program) if self.program_aware else ""
        program_description = ""
        if self.program_aware:
            program_description = str((await self._ask(DescribeProgram, program_code=code)).program_description)
        tips = list(TIPS)
        jobs = []
        plan: list[tuple[int, int]] = []
        for i, p in enumerate(predictors):
            for k in range(1, num_candidates):
                inputs: dict[str, Any] = {"basic_instruction": p.signature.instructions}
                if self.use_dataset_summary and description:
                    inputs["dataset_description"] = description
                if self.program_aware:
                    inputs["program_code"] = code
                    inputs["program_description"] = program_description
                    inputs["module"] = f"{program.named_predictors()[i][0]}: {p.signature.signature}"
                if self.use_task_demos:
                    sets = (demo_candidates or {}).get(i) or []
                    shown = sets[k % len(sets)] if sets else list(trainset)[: self.num_demos_in_context]
                    if not shown:  # a zero-shot candidate shows no demos; show training data instead
                        shown = self.rng.sample(list(trainset), min(self.num_demos_in_context, len(trainset)))
                    inputs["task_demos"] = format_demos(shown, p.signature, self.num_demos_in_context)
                if self.use_tip:
                    inputs["tip"] = TIPS[tips[self.rng.randrange(len(tips))]]
                signature = proposal_signature([n for n in _PROPOSAL_FIELDS if n in inputs])
                jobs.append(self._ask(signature, **inputs))
                plan.append((i, k))
        replies = await asyncio.gather(*jobs)
        out: dict[int, list[str]] = {i: [p.signature.instructions] for i, p in enumerate(predictors)}
        for (i, _), reply in zip(plan, replies, strict=True):
            text = str(reply.proposed_instruction).strip()
            if text and text not in out[i]:
                out[i].append(text)
        return out
