"""The program registry, with MLflow's model-registry semantics, on ``dspex.store.Programs``.

* **Versions** are immutable and numbered 1, 2, ... per program. Each holds the saved state
  (``program.dump_state()``), the signature hash of every predictor, and its lineage: the
  optimizer run that produced it, the trainset's hash, the measured scores, and the recipe
  (import path or signature) that rebuilds its code.
* **Aliases** (``champion``, ``challenger``, ``canary``, or any name) are mutable pointers to a
  version; every move is kept in an audit trail (who, why, from which version to which).
* **Deploying is moving an alias; rolling back is moving it back** to the version it pointed at
  before (``rollback``), and "the last N live versions" (Argo's rollback window) is read from the
  champion's trail (``recent``).

    registry = ProgramRegistry(open_store())
    v = registry.register("qa", compiled, scores={"accuracy": 0.81}, optimizer_run="job:42",
                          trainset=train, recipe={"import": "my_pkg.programs:qa"})
    registry.set_alias("qa", "champion", v.version, actor="alice", reason="beats v3 by 4 pp")
    registry.rollback("qa")                       # champion back to where it was
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dspex.errors import DeploymentError, NotFound, ValidationError
from dspex.store import AliasEvent, Programs, ProgramVersion
from dspex.store.programs import hash_trainset

from .pipeline import CandidateVersion

__all__ = [
    "ALIASES",
    "ProgramRegistry",
    "RecipeFactory",
    "RegisteredVersion",
    "RegistrySpecs",
    "signature_hashes",
]

#: the aliases a rollout moves; any other name works too
ALIASES = ("champion", "challenger", "canary")


def signature_hashes(program: Any) -> dict[str, str]:
    """``{predictor name: signature content hash}`` of a dspex program."""
    named = getattr(program, "named_predictors", None)
    if not callable(named):
        return {}
    out: dict[str, str] = {}
    for name, predictor in named():
        sig = getattr(predictor, "signature", None)
        if sig is not None and hasattr(sig, "content_hash"):
            out[name or "self"] = str(sig.content_hash())
    return out


@dataclass(frozen=True)
class RegisteredVersion:
    """A stored version with its lineage read out of the store's record."""

    record: ProgramVersion

    @property
    def program(self) -> str:
        return self.record.program

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def state(self) -> dict[str, Any]:
        return self.record.state

    @property
    def signature_hashes(self) -> dict[str, Any]:
        return self.record.signature_hashes

    @property
    def scores(self) -> dict[str, float]:
        """Measured scores by metric name; the headline ``score`` is included as ``"score"``."""
        out = {str(k): float(v) for k, v in (self.record.notes.get("scores") or {}).items()}
        if self.record.score is not None:
            out.setdefault("score", float(self.record.score))
        return out

    @property
    def lineage(self) -> dict[str, Any]:
        notes = self.record.notes
        return {
            "optimizer_run": notes.get("optimizer_run") or self.record.created_by,
            "trainset_hash": self.record.trainset_hash,
            "parent": notes.get("parent"),
            "recipe": notes.get("recipe"),
        }

    @property
    def tags(self) -> tuple[str, ...]:
        return self.record.tags

    def to_dict(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "version": self.version,
            "scores": self.scores,
            "signature_hashes": self.signature_hashes,
            "lineage": self.lineage,
            "tags": list(self.tags),
            "created_at": self.record.created_at.isoformat(),
        }


def _check_scores(scores: Mapping[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in (scores or {}).items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValidationError(
                f"Score {name!r} must be a finite number, got {value!r}.",
                field="scores",
                constraint="finite",
            )
        out[str(name)] = float(value)
    return out


class ProgramRegistry:
    """Versions, aliases and lineage of programs in a store (see the module docstring)."""

    def __init__(self, store: Any = None, *, actor: str = "dspex") -> None:
        if isinstance(store, Programs):
            self.programs = store
        else:
            from dspex.store import open_store

            self.programs = Programs(store if store is not None else open_store())
        self.actor = actor

    # -- versions ------------------------------------------------------------------------------
    def register(
        self,
        program: str,
        source: Any,
        *,
        scores: Mapping[str, float] | None = None,
        optimizer_run: str | None = None,
        trainset: Iterable[Any] | None = None,
        trainset_hash: str | None = None,
        recipe: Mapping[str, Any] | None = None,
        parent: int | None = None,
        tags: Iterable[str] = (),
        notes: Mapping[str, Any] | None = None,
        created_by: str | None = None,
    ) -> RegisteredVersion:
        """Save ``source`` (a dspex program, or its ``dump_state()`` dict) as a new version.

        ``scores``: measured scores by metric; the first (or ``"score"``) is the headline score.
        ``recipe``: how to rebuild the code (``{"import": "pkg.mod:attr"}`` or
        ``{"signature": "q -> a", "module": "Predict"}``) so a controller can serve it.
        """
        if isinstance(source, Mapping):
            state, hashes = dict(source), {}
        elif callable(getattr(source, "dump_state", None)):
            state, hashes = source.dump_state(), signature_hashes(source)
        else:
            raise ValidationError(
                f"register() takes a dspex program or its dump_state() dict, got {type(source).__name__}.",
                field="source",
            )
        measured = _check_scores(scores)
        headline = measured.get("score", next(iter(measured.values()), None))
        if trainset is not None and trainset_hash is None:
            trainset_hash = hash_trainset(trainset)
        extra = dict(notes or {})
        extra.update(
            scores=measured,
            optimizer_run=optimizer_run,
            parent=parent,
            recipe=None if recipe is None else dict(recipe),
        )
        record = self.programs.save_version(
            program,
            _strip_lm(state),
            signature_hashes=hashes,
            score=headline,
            created_by=created_by or optimizer_run,
            trainset_hash=trainset_hash,
            notes=extra,
            tags=tags,
        )
        return RegisteredVersion(record)

    def version(self, program: str, ref: int | str) -> RegisteredVersion:
        """A version by number, alias name, or ``"latest"``."""
        return RegisteredVersion(self.programs.version(program, ref))

    def versions(self, program: str) -> list[RegisteredVersion]:
        return [RegisteredVersion(v) for v in self.programs.versions(program)]

    def tag(self, program: str, version: int, *tags: str) -> RegisteredVersion:
        return RegisteredVersion(self.programs.tag(program, version, *tags))

    def untag(self, program: str, version: int, *tags: str) -> RegisteredVersion:
        return RegisteredVersion(self.programs.untag(program, version, *tags))

    def candidates(self, program: str) -> tuple[CandidateVersion, ...]:
        """Every version with its measured scores (what a pipeline's triggers compare)."""
        return tuple(CandidateVersion(v.version, v.scores) for v in self.versions(program))

    # -- aliases -------------------------------------------------------------------------------
    def aliases(self, program: str) -> dict[str, int]:
        try:
            return self.programs.aliases(program)
        except NotFound:
            return {}

    def alias(self, program: str, alias: str) -> int | None:
        return self.aliases(program).get(alias)

    def set_alias(
        self,
        program: str,
        alias: str,
        version: int,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> AliasEvent | None:
        """Point ``alias`` at ``version``; None (and no audit entry) when it already does."""
        if self.alias(program, alias) == version:
            return None
        return self.programs.set_alias(
            program, alias, version, actor=actor or self.actor, reason=reason
        )

    def remove_alias(
        self, program: str, alias: str, *, actor: str | None = None, reason: str | None = None
    ) -> AliasEvent | None:
        """Remove ``alias``; None when it did not exist (removing is idempotent)."""
        if self.alias(program, alias) is None:
            return None
        return self.programs.remove_alias(program, alias, actor=actor or self.actor, reason=reason)

    def move_alias(
        self,
        program: str,
        alias: str,
        version: int | None,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> AliasEvent | None:
        """``set_alias`` or, with ``version=None``, ``remove_alias``."""
        if version is None:
            return self.remove_alias(program, alias, actor=actor, reason=reason)
        return self.set_alias(program, alias, version, actor=actor, reason=reason)

    def history(self, program: str, alias: str | None = None) -> list[AliasEvent]:
        """The audit trail, oldest first."""
        return self.programs.alias_history(program, alias)

    def deploy(
        self,
        program: str,
        version: int,
        *,
        alias: str = "champion",
        actor: str | None = None,
        reason: str | None = None,
    ) -> AliasEvent | None:
        """Deploying, in registry terms: move ``alias`` to ``version``."""
        self.version(program, version)  # NotFound for a version that does not exist
        return self.set_alias(program, alias, version, actor=actor, reason=reason or "deployed")

    def previous(self, program: str, alias: str = "champion") -> int | None:
        """The version ``alias`` pointed at before its current one (None: it never moved)."""
        current = self.alias(program, alias)
        for ev in reversed(self.history(program, alias)):
            if (
                ev.to_version == current
                and ev.from_version is not None
                and ev.from_version != current
            ):
                return ev.from_version
        return None

    def rollback(
        self,
        program: str,
        alias: str = "champion",
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> AliasEvent:
        """Move ``alias`` back to the version it pointed at before."""
        before = self.previous(program, alias)
        if before is None:
            raise DeploymentError(
                f"The {alias!r} alias of {program!r} has no earlier version to go back to; "
                "set it explicitly with set_alias()."
            )
        event = self.set_alias(program, alias, before, actor=actor, reason=reason or "rolled back")
        assert event is not None
        return event

    def recent(self, program: str, alias: str = "champion", limit: int = 10) -> list[int]:
        """Versions ``alias`` pointed at before its current one, most recent first, distinct."""
        current = self.alias(program, alias)
        out: list[int] = []
        for ev in reversed(self.history(program, alias)):
            for v in (ev.to_version, ev.from_version):
                if v is not None and v != current and v not in out:
                    out.append(v)
        return out[:limit]


def _strip_lm(value: Any) -> Any:
    """A stored version must not pin an LM (its address and key belong to the deployment)."""
    if isinstance(value, dict):
        return {k: _strip_lm(v) for k, v in value.items() if k != "lm"}
    if isinstance(value, list):
        return [_strip_lm(v) for v in value]
    return value


# -- from a stored version to what the supervisor hosts ------------------------------------------
@dataclass(frozen=True)
class RecipeFactory:
    """Builds a version's program from its recipe (picklable: it travels to Ray workers)."""

    recipe: Mapping[str, Any]

    def __call__(self) -> Any:
        recipe = self.recipe
        if recipe.get("import"):
            from dspex.pipelines.experiments.spec import ProgramSpec

            return ProgramSpec(factory=str(recipe["import"])).build()
        if recipe.get("signature"):
            import dspex

            module = str(recipe.get("module") or "Predict")
            if module not in ("Predict", "ChainOfThought"):
                raise DeploymentError(
                    f"Unknown program module {module!r} in a stored recipe; use Predict or ChainOfThought."
                )
            return getattr(dspex, module)(str(recipe["signature"]))
        raise DeploymentError(
            "The stored version has no recipe (import path or signature) to rebuild its program; "
            "register it with recipe=... or give the controller a factory."
        )


class RegistrySpecs:
    """``specs(version) -> VersionSpec`` for the controller: the stored state of ``program``'s
    version, loaded into ``factory()`` (default: the version's recipe), served with ``lm``
    (an LM, or a function of the ``RegisteredVersion`` returning one)."""

    def __init__(
        self,
        registry: ProgramRegistry,
        program: str,
        *,
        factory: Callable[[], Any] | None = None,
        lm: Any = None,
        **spec_options: Any,
    ) -> None:
        self.registry = registry
        self.program = program
        self.factory = factory
        self.lm = lm
        self.spec_options = spec_options

    def __call__(self, version: int) -> Any:
        from dspex.actors.spec import VersionSpec

        stored = self.registry.version(self.program, version)
        factory = self.factory
        if factory is None:
            recipe = stored.lineage.get("recipe")
            if not isinstance(recipe, Mapping):
                raise DeploymentError(
                    f"Version {version} of {self.program!r} has no recipe to rebuild its program; "
                    "give the controller factory=... (a function returning the program)."
                )
            factory = RecipeFactory(dict(recipe))
        lm = self.lm(stored) if callable(self.lm) and not hasattr(self.lm, "aforward") else self.lm
        return VersionSpec(
            self.program,
            version,
            factory=factory,
            state=stored.state or None,
            lm=lm,
            metadata={"registry_version": version},
            **self.spec_options,
        )


def as_specs(
    specs: Callable[[int], Any] | Mapping[int, Any] | Sequence[Any],
) -> Callable[[int], Any]:
    """Accept a function, a dict by version, or a list of ``VersionSpec`` objects."""
    if callable(specs):
        return specs
    table = dict(specs) if isinstance(specs, Mapping) else {s.version: s for s in specs}

    def lookup(version: int) -> Any:
        try:
            return table[version]
        except KeyError:
            raise NotFound(
                f"No VersionSpec for version {version}; known: {sorted(table)}."
            ) from None

    return lookup
