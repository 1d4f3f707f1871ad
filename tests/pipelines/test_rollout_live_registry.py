"""The program registry (MLflow semantics) on a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

import dspex
from dspex.errors import DeploymentError, NotFound, ValidationError
from dspex.pipelines.rollouts.registry import (
    ProgramRegistry,
    RecipeFactory,
    RegistrySpecs,
    signature_hashes,
)


@pytest.fixture
def registry(tmp_path: Path) -> ProgramRegistry:
    from dspex.store import open_store

    return ProgramRegistry(
        open_store(f"sqlite:///{tmp_path / 'reg.db'}", shared=False), actor="tester"
    )


def compiled_program() -> dspex.Module:
    program = dspex.Predict("question -> answer")
    program.demos = [dspex.Example(question="2+2?", answer="4")]
    return program


def test_versions_are_immutable_numbers_with_lineage(registry: ProgramRegistry) -> None:
    train = [dspex.Example(question="1+1?", answer="2"), dspex.Example(question="2+3?", answer="5")]
    program = compiled_program()
    v1 = registry.register(
        "qa",
        program,
        scores={"accuracy": 0.81, "latency_p95_ms": 140},
        optimizer_run="job:42",
        trainset=train,
        recipe={"signature": "question -> answer"},
        tags=["bootstrap"],
    )
    v2 = registry.register("qa", {"predict": {"demos": []}}, scores={"score": 0.7})
    assert (v1.version, v2.version) == (1, 2)
    assert v1.scores == {"accuracy": 0.81, "latency_p95_ms": 140.0, "score": 0.81}
    assert v1.signature_hashes == signature_hashes(program) and v1.signature_hashes
    assert v1.lineage["optimizer_run"] == "job:42" and len(v1.lineage["trainset_hash"]) == 64
    assert v1.tags == ("bootstrap",)
    assert registry.version("qa", 1).state == v1.state  # read back unchanged
    assert [c.version for c in registry.candidates("qa")] == [1, 2]
    with pytest.raises(ValidationError, match="finite"):
        registry.register("qa", {}, scores={"accuracy": float("nan")})
    with pytest.raises(ValidationError, match="dump_state"):
        registry.register("qa", object())


def test_aliases_move_with_an_audit_trail_and_roll_back(registry: ProgramRegistry) -> None:
    for _ in range(3):
        registry.register("qa", {}, scores={"score": 0.5})
    assert registry.deploy("qa", 1) is not None
    assert registry.set_alias("qa", "champion", 1) is None  # already there: no audit noise
    registry.deploy("qa", 2, reason="beats v1")
    registry.deploy("qa", 3)
    registry.set_alias("qa", "canary", 3)
    registry.remove_alias("qa", "canary")
    assert registry.remove_alias("qa", "canary") is None
    assert registry.aliases("qa") == {"champion": 3}
    assert registry.recent("qa") == [2, 1]
    event = registry.rollback("qa")
    assert (event.from_version, event.to_version, event.actor) == (3, 2, "tester")
    trail = [(e.from_version, e.to_version) for e in registry.history("qa", "champion")]
    assert trail == [(None, 1), (1, 2), (2, 3), (3, 2)]
    with pytest.raises(NotFound):
        registry.deploy("qa", 9)
    registry.register("solo", {})
    registry.deploy("solo", 1)
    with pytest.raises(DeploymentError, match="no earlier version"):
        registry.rollback("solo")
    assert registry.aliases("unknown") == {}


def test_registry_specs_rebuild_the_program_with_its_stored_state(
    registry: ProgramRegistry,
) -> None:
    program = compiled_program()
    registry.register("qa", program, recipe={"signature": "question -> answer"})
    registry.register("qa", {"predict": {}})  # no recipe
    specs = RegistrySpecs(registry, "qa", max_in_flight=8)
    spec = specs(1)
    assert (spec.program, spec.version, spec.max_in_flight) == ("qa", 1, 8)
    assert isinstance(spec.factory, RecipeFactory)
    built = spec.build()
    assert [d.toDict() for d in built.demos] == [d.toDict() for d in program.demos]
    with pytest.raises(DeploymentError, match="no recipe"):
        specs(2)
    with_factory = RegistrySpecs(
        registry, "qa", factory=lambda: dspex.Predict("question -> answer")
    )
    assert with_factory(2).version == 2
    with pytest.raises(NotFound):
        specs(7)
    import pickle

    assert pickle.loads(pickle.dumps(spec.factory)) == spec.factory  # travels to Ray workers
