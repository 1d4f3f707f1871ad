"""Arithmetic word problems (GSM8K-like), six kinds of problem."""

from __future__ import annotations

import random

from dspex.sim.tasks._base import Hint, SimExample, Task, clip01, unique_distractors

__all__ = ["ArithmeticTask"]

_NAMES = (
    "Ava",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Liam",
)
_ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards")
_OTHER = ("chairs", "windows", "lamps", "plants", "posters")

# base difficulty per kind of problem: more operations and less familiar ones are harder
_BASE = {
    "add": 0.10,
    "subtract": 0.20,
    "multiply": 0.35,
    "divide": 0.40,
    "percent": 0.55,
    "multi_step": 0.70,
}


class ArithmeticTask(Task):
    name = "arithmetic"
    signature = "question -> answer"
    key_input = "question"
    input_fields = ("question",)
    answer_field = "answer"
    clusters = tuple(_BASE)
    hints = (
        Hint("ignore numbers that are irrelevant to the question", 0.45),
        Hint("check each calculation before answering", 0.40),
        Hint("identify the operation the question asks for", 0.35),
        Hint("answer with a single number and no units", 0.25),
    )
    misleading = (
        Hint("estimate roughly instead of computing exactly", -0.50),
        Hint("round the result to the nearest ten", -0.55),
    )
    description = (
        "short arithmetic word problems (addition, subtraction, multiplication, division, "
        "percentages and two-step problems) whose answer is one whole number"
    )

    def _generate(self, rng: random.Random, seed: int, split: str, index: int) -> SimExample:
        kind = rng.choice(self.clusters)
        big = rng.random() < 0.4  # larger numbers are harder
        a_name, b_name = rng.sample(_NAMES, 2)
        item = rng.choice(_ITEMS)
        lo, hi = (12, 95) if big else (2, 15)
        wrong: list[int]
        if kind == "add":
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
            gold = a + b
            text = f"{a_name} has {a} {item}. {b_name} gives {a_name} {b} more. How many {item} does {a_name} have now?"
            why = f"{a_name} starts with {a} and gets {b} more: {a} + {b} = {gold}."
            wrong = [abs(a - b), a * b, gold + 1, gold - 1]
        elif kind == "subtract":
            a = rng.randint(lo + 5, hi + 20)
            b = rng.randint(1, a - 1)
            gold = a - b
            text = f"{a_name} had {a} {item} and gave {b} of them to {b_name}. How many {item} does {a_name} have left?"
            why = f"{a_name} keeps {a} - {b} = {gold}."
            wrong = [a + b, gold + 1, gold - 1, b]
        elif kind == "multiply":
            a, b = rng.randint(2, 12 if not big else 25), rng.randint(3, 12)
            gold = a * b
            text = f"A shelf holds {a} boxes with {b} {item} in each box. How many {item} are on the shelf?"
            why = f"{a} boxes of {b} make {a} * {b} = {gold}."
            wrong = [a + b, gold + b, gold - a, (a - 1) * b]
        elif kind == "divide":
            each, k = rng.randint(2, 12 if not big else 30), rng.randint(2, 9)
            total = each * k
            gold = each
            text = f"{a_name} shares {total} {item} equally among {k} friends. How many {item} does each friend get?"
            why = f"{total} / {k} = {gold} each."
            wrong = [total - k, each + 1, total * k, each - 1]
        elif kind == "percent":
            price = rng.randint(2, 20 if not big else 60) * 20
            pct = rng.choice((10, 20, 25, 50))
            off = price * pct // 100
            gold = price - off
            text = f"A jacket costs ${price}. It is on sale for {pct}% off. What is the sale price in dollars?"
            why = f"{pct}% of {price} is {off}, so the price is {price} - {off} = {gold}."
            wrong = [off, price + off, price - pct, gold + 10]
        else:  # multi_step
            count = rng.randint(2, 6 if not big else 12)
            unit = rng.randint(2, 9 if not big else 15)
            cost = count * unit
            bill = next(b for b in (10, 20, 50, 100, 200) if b > cost)
            gold = bill - cost
            text = (
                f"{a_name} buys {count} notebooks at ${unit} each and pays with a ${bill} bill. "
                f"How much change, in dollars, does {a_name} get?"
            )
            why = f"The notebooks cost {count} * {unit} = {cost}; the change is {bill} - {cost} = {gold}."
            wrong = [cost, bill - unit, gold + unit, bill - count]
        irrelevant = rng.random() < 0.4
        if irrelevant:  # a sentence with a number that plays no part
            text = f"There are {rng.randint(3, 40)} {rng.choice(_OTHER)} in the room. " + text
        difficulty = clip01(
            _BASE[kind]
            + (0.15 if big else 0.0)
            + (0.12 if irrelevant else 0.0)
            + rng.uniform(-0.08, 0.08)
        )
        fill = [str(gold + d) for d in (2, -2, 10, -10, 3)]
        distractors = unique_distractors(str(gold), [str(w) for w in wrong if w > 0], fill)
        return SimExample(
            task=self.name,
            seed=seed,
            split=split,
            index=index,
            inputs={"question": self.tag(text, seed, split, index)},
            answer=str(gold),
            cluster=kind,
            difficulty=difficulty,
            distractors=distractors,
            rationale=why,
        )
