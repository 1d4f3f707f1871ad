"""Programs, immutable versions, tags and aliases with their audit trail, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import text, update

from dspex.errors import AlreadyExists, NotFound, StoreError, ValidationError
from dspex.primitives.example import Example
from dspex.store import Programs, Store
from dspex.store.programs import hash_trainset
from dspex.store.schema import ProgramVersionRow


def test_versions_are_numbered_and_keep_everything(store: Store) -> None:
    p = Programs(store)
    v1 = p.save_version(
        "qa",
        {"predict": {"demos": [{"q": "1+1", "a": "2"}], "instructions": "Answer."}},
        signature_hashes={"predict": "abc123"},
        score=0.61,
        created_by="mipro-run-1",
        trainset_hash="t" * 64,
        notes={"optimizer": "MIPROv2"},
        tags=["baseline", "baseline"],
    )
    v2 = p.save_version("qa", {"predict": {"demos": []}}, score=0.7)
    assert (v1.version, v2.version) == (1, 2)
    got = p.version("qa", 1)
    assert got.state == {"predict": {"demos": [{"q": "1+1", "a": "2"}], "instructions": "Answer."}}
    assert got.signature_hashes == {"predict": "abc123"}
    assert (got.score, got.created_by, got.trainset_hash, got.tags) == (0.61, "mipro-run-1", "t" * 64, ("baseline",))
    assert got.notes == {"optimizer": "MIPROv2"}
    assert got.created_at.tzinfo is not None
    assert p.version("qa", "latest").version == 2
    assert [v.version for v in p.versions("qa")] == [1, 2]
    assert [i.name for i in p.all()] == ["qa"]


def test_the_database_refuses_to_change_a_version(store: Store) -> None:
    p = Programs(store)
    p.save_version("qa", {"x": 1}, score=0.5)
    with pytest.raises(StoreError, match="immutable"):
        store.write(lambda s: s.execute(update(ProgramVersionRow).values(score=0.99)))
    with pytest.raises(StoreError, match="immutable"):
        store.write(lambda s: s.execute(text("UPDATE program_versions SET state = '{}'")))
    assert p.version("qa", 1).score == 0.5


def test_aliases_move_and_every_move_is_audited(store: Store) -> None:
    p = Programs(store)
    for i in range(3):
        p.save_version("qa", {"i": i})
    p.set_alias("qa", "champion", 1, actor="alice", reason="first")
    p.set_alias("qa", "canary", 2, actor="pipeline", reason="canary start")
    p.set_alias("qa", "champion", "canary", actor="pipeline", reason="promoted")
    p.remove_alias("qa", "canary", actor="pipeline", reason="canary done")
    assert p.aliases("qa") == {"champion": 2}
    assert p.version("qa", "champion").version == 2
    hist = [(e.alias, e.from_version, e.to_version, e.actor, e.reason) for e in p.alias_history("qa")]
    assert hist == [
        ("champion", None, 1, "alice", "first"),
        ("canary", None, 2, "pipeline", "canary start"),
        ("champion", 1, 2, "pipeline", "promoted"),
        ("canary", 2, None, "pipeline", "canary done"),
    ]
    assert [e.to_version for e in p.alias_history("qa", "champion")] == [1, 2]


def test_tags(store: Store) -> None:
    p = Programs(store)
    p.save_version("qa", {}, tags=["a"])
    assert p.tag("qa", 1, "b", "a").tags == ("a", "b")
    assert p.untag("qa", 1, "a").tags == ("b",)
    assert p.version("qa", 1).tags == ("b",)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda p: p.get("missing"), NotFound),
        (lambda p: p.version("qa", 9), NotFound),
        (lambda p: p.version("qa", "nope"), NotFound),
        (lambda p: p.version("qa", 1.5), ValidationError),
        (lambda p: p.version("qa", True), ValidationError),
        (lambda p: p.remove_alias("qa", "nope"), NotFound),
        (lambda p: p.set_alias("qa", "latest", 1), ValidationError),
        (lambda p: p.set_alias("qa", "bad alias!", 1), ValidationError),
        (lambda p: p.save_version("bad name with spaces", {}), ValidationError),
        (lambda p: p.save_version("qa", {"f": object()}), ValidationError),
        (lambda p: p.save_version("qa", {}, tags=["no spaces allowed"]), ValidationError),
        (lambda p: p.create("qa"), AlreadyExists),
    ],
)
def test_bad_input_is_refused_with_the_right_error(store: Store, call: object, error: type[Exception]) -> None:
    p = Programs(store)
    p.save_version("qa", {"x": 1})
    with pytest.raises(error):
        call(p)  # type: ignore[operator]


def test_delete_program_removes_versions_and_aliases(store: Store) -> None:
    p = Programs(store)
    p.save_version("gone", {})
    p.set_alias("gone", "champion", 1)
    p.delete("gone")
    with pytest.raises(NotFound):
        p.versions("gone")
    assert store.read(lambda s: s.execute(text("SELECT count(*) FROM program_versions")).scalar()) == 0


def test_hash_trainset_is_stable_and_order_of_keys_free() -> None:
    a = [Example(question="q1", answer="a1"), Example(question="q2", answer="a2")]
    b = [{"answer": "a1", "question": "q1"}, {"answer": "a2", "question": "q2"}]
    assert hash_trainset(a) == hash_trainset(b)
    assert hash_trainset(a) != hash_trainset(list(reversed(a)))
    assert len(hash_trainset([])) == 64
