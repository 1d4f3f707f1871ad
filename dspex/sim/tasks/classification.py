"""Support-ticket intent classification: six labels, one cluster per label.

Hard tickets mention a second, confusable topic; the gold label is the main request.
"""

from __future__ import annotations

import random

from dspex.sim.tasks._base import Hint, SimExample, Task, clip01, unique_distractors

__all__ = ["ClassificationTask"]

LABELS = ("billing", "shipping", "technical", "account", "refund", "product")

# (explicit cue, vague cue) sentences per label
_CUES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "billing": (
        (
            "I was charged twice on my last invoice.",
            "My credit card was billed the wrong amount this month.",
        ),
        ("The number on my statement does not look right.", "Something is off with what I paid."),
    ),
    "shipping": (
        (
            "My package has not arrived and the tracking number shows no updates.",
            "The courier delivered my order to the wrong address.",
        ),
        (
            "It has been two weeks and nothing is at my door.",
            "The box still says it is somewhere in transit.",
        ),
    ),
    "technical": (
        (
            "The app crashes every time I open the settings page.",
            "I get an error 500 when I upload a file.",
        ),
        (
            "Things just stop working after a few minutes.",
            "The screen freezes and I have to restart.",
        ),
    ),
    "account": (
        (
            "I cannot reset my password and I am locked out of my account.",
            "Please change the email address on my profile.",
        ),
        ("I can't get in anymore.", "My login details need to be updated."),
    ),
    "refund": (
        (
            "I returned the item and want my money back.",
            "Please refund the order I cancelled yesterday.",
        ),
        (
            "I sent it back, so I expect to be reimbursed.",
            "I would like what I paid returned to me.",
        ),
    ),
    "product": (
        (
            "Does the blender come with a glass jug or a plastic one?",
            "Is this jacket available in a larger size?",
        ),
        ("I am wondering what the dimensions are before I buy.", "Which colours does it come in?"),
    ),
}
# the topic a hard ticket also mentions, per gold label
_CONFUSABLE = {
    "billing": "refund",
    "shipping": "refund",
    "technical": "account",
    "account": "billing",
    "refund": "billing",
    "product": "technical",
}
_GREETINGS = ("Hi there.", "Hello,", "Good morning.", "Hey support team.", "")
_CLOSINGS = ("Thanks in advance.", "Kind regards.", "Please help.", "Cheers.", "")
_BASE = {
    "billing": 0.30,
    "shipping": 0.15,
    "technical": 0.20,
    "account": 0.25,
    "refund": 0.40,
    "product": 0.10,
}


class ClassificationTask(Task):
    name = "classification"
    signature = "text -> label"
    key_input = "text"
    input_fields = ("text",)
    answer_field = "label"
    clusters = LABELS
    hints = (
        Hint("focus on the customer's main request", 0.45),
        Hint("a refund request is not a billing question", 0.35),
        Hint("ignore greetings and pleasantries", 0.30),
        Hint("answer with exactly one label from: " + ", ".join(LABELS), 0.30),
    )
    misleading = (
        Hint("choose the first topic the customer mentions", -0.50),
        Hint("when unsure, answer technical", -0.40),
    )
    description = (
        "customer support tickets to be labelled with their main intent, one of "
        + ", ".join(LABELS)
    )

    def _generate(self, rng: random.Random, seed: int, split: str, index: int) -> SimExample:
        label = rng.choice(LABELS)
        explicit, vague = _CUES[label]
        is_vague = rng.random() < 0.35
        main = rng.choice(vague if is_vague else explicit)
        parts = [rng.choice(_GREETINGS)]
        confusable = _CONFUSABLE[label]
        mixed = rng.random() < 0.4
        if mixed:  # a second topic, placed first half of the time to mislead a naive reader
            side = rng.choice(_CUES[confusable][0])
            if rng.random() < 0.5:
                parts += [side, "But my main issue is this:", main]
            else:
                parts += [main, "A smaller thing:", side]
        else:
            parts.append(main)
        parts.append(rng.choice(_CLOSINGS))
        text = " ".join(p for p in parts if p)
        difficulty = clip01(
            _BASE[label]
            + (0.35 if mixed else 0.0)
            + (0.15 if is_vague else 0.0)
            + rng.uniform(-0.08, 0.08)
        )
        others = [lb for lb in LABELS if lb not in (label, confusable)]
        rng.shuffle(others)
        distractors = unique_distractors(label, [confusable, *others], [])
        why = f'The customer\'s main request is about {label}: "{main}"'
        return SimExample(
            task=self.name,
            seed=seed,
            split=split,
            index=index,
            inputs={"text": self.tag(text, seed, split, index)},
            answer=label,
            cluster=label,
            difficulty=difficulty,
            distractors=distractors,
            rationale=why,
        )
