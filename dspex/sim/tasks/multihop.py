"""Multi-hop questions over a knowledge base generated from the seed.

The knowledge base (people, cities, countries, companies and their relations) is invented,
so no model can know it: the answer has to be found by chaining the facts given in
``context``, which mixes the supporting facts with distractor facts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from dspex.sim._draw import digest
from dspex.sim.tasks._base import Hint, SimExample, Task, clip01, unique_distractors

__all__ = ["KnowledgeBase", "MultiHopTask", "knowledge_base"]

_ONSET = (
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "tr",
    "st",
    "kl",
)
_VOWEL = ("a", "e", "i", "o", "u", "ai", "ou")
_CODA = ("", "n", "r", "s", "l", "th", "nd")


def _word(rng: random.Random, syllables: int) -> str:
    w = "".join(rng.choice(_ONSET) + rng.choice(_VOWEL) for _ in range(syllables)) + rng.choice(
        _CODA
    )
    return w.capitalize()


@dataclass(frozen=True)
class KnowledgeBase:
    people: tuple[str, ...]
    cities: tuple[str, ...]
    countries: tuple[str, ...]
    companies: tuple[str, ...]
    born_in: dict[str, str]  # person -> city
    country_of: dict[str, str]  # city -> country
    founder: dict[str, str]  # company -> person
    hq: dict[str, str]  # company -> city
    employer: dict[str, str]  # person -> company

    def fact(self, relation: str, subject: str) -> str:
        if relation == "born_in":
            return f"{subject} was born in {self.born_in[subject]}."
        if relation == "country_of":
            return f"{subject} is a city in {self.country_of[subject]}."
        if relation == "founder":
            return f"{subject} was founded by {self.founder[subject]}."
        if relation == "hq":
            return f"{subject} is headquartered in {self.hq[subject]}."
        if relation == "employer":
            return f"{subject} works for {self.employer[subject]}."
        raise KeyError(relation)


def _unique_names(rng: random.Random, n: int, make: object, taken: set[str]) -> tuple[str, ...]:
    out: list[str] = []
    while len(out) < n:
        name = make(rng)  # type: ignore[operator]
        if name not in taken:
            taken.add(name)
            out.append(name)
    return tuple(out)


@lru_cache(maxsize=64)
def knowledge_base(seed: int) -> KnowledgeBase:
    """The knowledge base of ``seed`` (a pure function of it)."""
    rng = random.Random(int.from_bytes(digest("kb", seed)[:8], "big"))
    taken: set[str] = set()
    countries = _unique_names(rng, 8, lambda r: _word(r, 2) + "ia", taken)
    cities = _unique_names(rng, 24, lambda r: _word(r, 2), taken)
    people = _unique_names(rng, 48, lambda r: f"{_word(r, 2)} {_word(r, 2)}", taken)
    companies = _unique_names(
        rng, 24, lambda r: _word(r, 2) + r.choice((" Labs", " Works", " Systems", " Foods")), taken
    )
    country_of = {c: rng.choice(countries) for c in cities}
    born_in = {p: rng.choice(cities) for p in people}
    founders = rng.sample(people, len(companies))
    founder = dict(zip(companies, founders, strict=True))
    hq = {c: rng.choice(cities) for c in companies}
    employer = {p: rng.choice(companies) for p in people}
    return KnowledgeBase(
        people, cities, countries, companies, born_in, country_of, founder, hq, employer
    )


# cluster -> (base difficulty, number of hops)
_KINDS = {
    "birth_country": (0.15, 2),
    "hq_country": (0.20, 2),
    "founder_birthplace": (0.25, 2),
    "employer_founder": (0.30, 2),
    "founder_birth_country": (0.55, 3),
    "employer_hq_country": (0.60, 3),
}


class MultiHopTask(Task):
    name = "multihop"
    signature = "context: list[str], question -> answer"
    key_input = "question"
    input_fields = ("context", "question")
    answer_field = "answer"
    clusters = tuple(_KINDS)
    hints = (
        Hint("follow the chain of facts one hop at a time", 0.45),
        Hint("identify the bridge entity first", 0.40),
        Hint("use only the facts given in the context", 0.30),
        Hint("answer with the entity name only", 0.25),
    )
    misleading = (
        Hint("answer from general knowledge", -0.50),
        Hint("pick the first entity mentioned in the context", -0.45),
    )
    description = (
        "questions about an invented world of people, companies, cities and countries that "
        "need two or three facts from the given context chained together; the answer is one name"
    )

    def _generate(self, rng: random.Random, seed: int, split: str, index: int) -> SimExample:
        kb = knowledge_base(seed)
        kind = rng.choice(self.clusters)
        base, hops = _KINDS[kind]
        chain: list[tuple[str, str]]  # (relation, subject) facts on the path
        if kind == "birth_country":
            p = rng.choice(kb.people)
            city = kb.born_in[p]
            gold, bridge = kb.country_of[city], city
            q = f"In which country was {p} born?"
            chain = [("born_in", p), ("country_of", city)]
            pool = kb.countries
        elif kind == "hq_country":
            c = rng.choice(kb.companies)
            city = kb.hq[c]
            gold, bridge = kb.country_of[city], city
            q = f"In which country is {c} headquartered?"
            chain = [("hq", c), ("country_of", city)]
            pool = kb.countries
        elif kind == "founder_birthplace":
            c = rng.choice(kb.companies)
            f = kb.founder[c]
            gold, bridge = kb.born_in[f], f
            q = f"In which city was the founder of {c} born?"
            chain = [("founder", c), ("born_in", f)]
            pool = kb.cities
        elif kind == "employer_founder":
            p = rng.choice(kb.people)
            c = kb.employer[p]
            gold, bridge = kb.founder[c], c
            q = f"Who founded the company that {p} works for?"
            chain = [("employer", p), ("founder", c)]
            pool = kb.people
        elif kind == "founder_birth_country":
            c = rng.choice(kb.companies)
            f = kb.founder[c]
            city = kb.born_in[f]
            gold, bridge = kb.country_of[city], city
            q = f"In which country was the founder of {c} born?"
            chain = [("founder", c), ("born_in", f), ("country_of", city)]
            pool = kb.countries
        else:  # employer_hq_country
            p = rng.choice(kb.people)
            c = kb.employer[p]
            city = kb.hq[c]
            gold, bridge = kb.country_of[city], city
            q = f"In which country is the company that {p} works for headquartered?"
            chain = [("employer", p), ("hq", c), ("country_of", city)]
            pool = kb.countries
        n_noise = rng.randint(2, 5)
        facts = [kb.fact(r, s) for r, s in chain]
        noise = self._noise_facts(rng, kb, chain, n_noise)
        context = facts + noise
        rng.shuffle(context)
        # wrong answers: the bridge (stopping one hop early), answers found in noise facts,
        # then other names of the right kind
        in_noise = [name for name in pool if any(name in f for f in noise)]
        others = [name for name in pool if name != gold]
        rng.shuffle(others)
        distractors = unique_distractors(gold, [bridge, *in_noise], others)
        difficulty = clip01(base + 0.05 * n_noise + rng.uniform(-0.08, 0.08))
        why = " ".join(facts) + f" So the answer is {gold}."
        return SimExample(
            task=self.name,
            seed=seed,
            split=split,
            index=index,
            inputs={"context": context, "question": self.tag(q, seed, split, index)},
            answer=gold,
            cluster=kind,
            difficulty=difficulty,
            distractors=distractors,
            rationale=why,
            extra={"hops": hops},
        )

    @staticmethod
    def _noise_facts(
        rng: random.Random, kb: KnowledgeBase, chain: list[tuple[str, str]], n: int
    ) -> list[str]:
        """Facts of the same relations about other subjects (look-alikes of the path)."""
        on_path = {s for _, s in chain}
        out: list[str] = []
        subjects = {
            "born_in": kb.people,
            "country_of": kb.cities,
            "founder": kb.companies,
            "hq": kb.companies,
            "employer": kb.people,
        }
        while len(out) < n:
            rel = rng.choice([r for r, _ in chain])
            subj = rng.choice(subjects[rel])
            if subj in on_path:
                continue
            fact = kb.fact(rel, subj)
            if fact not in out:
                out.append(fact)
        return out
