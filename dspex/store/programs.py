"""Programs, their immutable versions, tags, and aliases with an audit trail.

A version is written once (``save_version``) and never changed; the database refuses an
UPDATE of a version row. Deployments move *aliases* (``champion``, ``canary``) between
versions; every set, move and removal of an alias appends an ``AliasEvent`` (who, why, from
which version to which), so "what served as champion last Tuesday" has an answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dspex.errors import AlreadyExists, NotFound, ValidationError
from dspex.store.engine import Store
from dspex.store.schema import (
    ProgramAliasEventRow,
    ProgramAliasRow,
    ProgramRow,
    ProgramVersionRow,
    ProgramVersionTagRow,
)

__all__ = ["AliasEvent", "ProgramInfo", "ProgramVersion", "Programs", "hash_trainset"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True, slots=True)
class ProgramInfo:
    id: str
    name: str
    description: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ProgramVersion:
    id: str
    program: str
    version: int
    state: dict[str, Any]
    signature_hashes: dict[str, Any]
    score: float | None
    created_by: str | None
    trainset_hash: str | None
    notes: dict[str, Any]
    tags: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AliasEvent:
    program: str
    alias: str
    from_version: int | None  # None: the alias was new
    to_version: int | None  # None: the alias was removed
    actor: str | None
    reason: str | None
    at: datetime


def hash_trainset(examples: Iterable[Any]) -> str:
    """A stable SHA-256 of a trainset (Examples or dicts), independent of key order."""
    h = hashlib.sha256()
    for ex in examples:
        data = ex.toDict() if hasattr(ex, "toDict") else dict(ex)
        h.update(json.dumps(data, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def _check_name(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ValidationError(
            f"{kind} {value!r} is not valid: use letters, digits and _ . : - "
            f"(up to {200 if pattern is _NAME else 64} characters, starting with a letter or digit).",
            field=kind,
        )
    return value


def _json_doc(kind: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    doc = dict(value or {})
    try:
        json.dumps(doc)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{kind} must be JSON-serialisable (dicts, lists, strings, numbers, booleans, None): {exc}.",
            field=kind,
        ) from exc
    return doc


class Programs:
    """Programs and their versions in a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- programs -------------------------------------------------------------------------
    def create(self, name: str, description: str | None = None) -> ProgramInfo:
        _check_name("program name", name, _NAME)

        def fn(s: Session) -> ProgramInfo:
            if s.scalar(select(ProgramRow.id).where(ProgramRow.name == name)) is not None:
                raise AlreadyExists(f"A program named {name!r} already exists.", hint="Pick another name.")
            row = ProgramRow(name=name, description=description)
            s.add(row)
            s.flush()
            return _info(row)

        return self.store.write(fn)

    def ensure(self, name: str, description: str | None = None) -> ProgramInfo:
        """The program named ``name``, created if missing."""
        try:
            return self.get(name)
        except NotFound:
            try:
                return self.create(name, description)
            except AlreadyExists:  # created meanwhile by another writer
                return self.get(name)

    def get(self, name: str) -> ProgramInfo:
        return self.store.read(lambda s: _info(_program(s, name)))

    def all(self) -> list[ProgramInfo]:
        return self.store.read(
            lambda s: [_info(r) for r in s.scalars(select(ProgramRow).order_by(ProgramRow.name))]
        )

    def delete(self, name: str) -> None:
        """Delete a program with its versions, aliases, tags and assignments."""
        self.store.write(lambda s: s.delete(_program(s, name)))

    # -- versions -------------------------------------------------------------------------
    def save_version(
        self,
        program: str,
        state: Mapping[str, Any],
        *,
        signature_hashes: Mapping[str, Any] | None = None,
        score: float | None = None,
        created_by: str | None = None,
        trainset_hash: str | None = None,
        notes: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
    ) -> ProgramVersion:
        """Write a new immutable version (numbered 1, 2, ...) of ``program`` (created if missing)."""
        doc = _json_doc("state", state)
        hashes = _json_doc("signature_hashes", signature_hashes)
        extra = _json_doc("notes", notes)
        tag_list = sorted({_check_name("tag", t, _LABEL) for t in tags})
        self.ensure(program)

        def fn(s: Session) -> ProgramVersion:
            prog = _program(s, program)
            last = s.scalar(select(func.max(ProgramVersionRow.version)).where(ProgramVersionRow.program_id == prog.id))
            row = ProgramVersionRow(
                program_id=prog.id,
                version=(last or 0) + 1,
                state=doc,
                signature_hashes=hashes,
                score=None if score is None else float(score),
                created_by=created_by,
                trainset_hash=trainset_hash,
                notes=extra,
            )
            s.add(row)
            s.flush()
            for tag in tag_list:
                s.add(ProgramVersionTagRow(version_id=row.id, tag=tag))
            s.flush()
            return _version(row, program, tuple(tag_list))

        # Two writers may pick the same next number; the unique key catches it, and the
        # loser simply takes the next one.
        for _ in range(8):
            try:
                return self.store.write(fn)
            except AlreadyExists:
                continue
        raise AlreadyExists(f"Could not number a new version of {program!r}; too many concurrent writers.")

    def version(self, program: str, version: int | str) -> ProgramVersion:
        """A version by number, or by alias name (``"champion"``), or ``"latest"``."""

        def fn(s: Session) -> ProgramVersion:
            prog = _program(s, program)
            row = _version_row(s, prog, version)
            return _version(row, program, _tags(s, row.id))

        return self.store.read(fn)

    def versions(self, program: str) -> list[ProgramVersion]:
        def fn(s: Session) -> list[ProgramVersion]:
            prog = _program(s, program)
            rows = s.scalars(
                select(ProgramVersionRow)
                .where(ProgramVersionRow.program_id == prog.id)
                .order_by(ProgramVersionRow.version)
            ).all()
            return [_version(r, program, _tags(s, r.id)) for r in rows]

        return self.store.read(fn)

    # -- tags -----------------------------------------------------------------------------
    def tag(self, program: str, version: int | str, *tags: str) -> ProgramVersion:
        wanted = {_check_name("tag", t, _LABEL) for t in tags}

        def fn(s: Session) -> ProgramVersion:
            prog = _program(s, program)
            row = _version_row(s, prog, version)
            have = set(_tags(s, row.id))
            for tag in sorted(wanted - have):
                s.add(ProgramVersionTagRow(version_id=row.id, tag=tag))
            s.flush()
            return _version(row, program, tuple(sorted(have | wanted)))

        return self.store.write(fn)

    def untag(self, program: str, version: int | str, *tags: str) -> ProgramVersion:
        def fn(s: Session) -> ProgramVersion:
            prog = _program(s, program)
            row = _version_row(s, prog, version)
            s.execute(
                delete(ProgramVersionTagRow).where(
                    ProgramVersionTagRow.version_id == row.id, ProgramVersionTagRow.tag.in_(tags)
                )
            )
            return _version(row, program, _tags(s, row.id))

        return self.store.write(fn)

    # -- aliases --------------------------------------------------------------------------
    def set_alias(
        self,
        program: str,
        alias: str,
        version: int | str,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> AliasEvent:
        """Point ``alias`` at ``version`` (a number, or another alias) and record the move."""
        _check_name("alias", alias, _LABEL)
        if alias == "latest":
            raise ValidationError("'latest' is reserved (it always means the newest version).", field="alias")

        def fn(s: Session) -> AliasEvent:
            prog = _program(s, program)
            target = _version_row(s, prog, version)
            current = s.get(ProgramAliasRow, (prog.id, alias))
            from_id = current.version_id if current is not None else None
            if current is None:
                s.add(ProgramAliasRow(program_id=prog.id, alias=alias, version_id=target.id))
            else:
                current.version_id = target.id
            ev = ProgramAliasEventRow(
                program_id=prog.id,
                alias=alias,
                from_version_id=from_id,
                to_version_id=target.id,
                actor=actor,
                reason=reason,
            )
            s.add(ev)
            s.flush()
            return _event(s, ev, program)

        return self.store.write(fn)

    def remove_alias(
        self, program: str, alias: str, *, actor: str | None = None, reason: str | None = None
    ) -> AliasEvent:
        def fn(s: Session) -> AliasEvent:
            prog = _program(s, program)
            current = s.get(ProgramAliasRow, (prog.id, alias))
            if current is None:
                raise NotFound(f"Program {program!r} has no alias {alias!r}.")
            ev = ProgramAliasEventRow(
                program_id=prog.id,
                alias=alias,
                from_version_id=current.version_id,
                to_version_id=None,
                actor=actor,
                reason=reason,
            )
            s.delete(current)
            s.add(ev)
            s.flush()
            return _event(s, ev, program)

        return self.store.write(fn)

    def aliases(self, program: str) -> dict[str, int]:
        """alias -> version number."""

        def fn(s: Session) -> dict[str, int]:
            prog = _program(s, program)
            rows = s.execute(
                select(ProgramAliasRow.alias, ProgramVersionRow.version)
                .join(ProgramVersionRow, ProgramVersionRow.id == ProgramAliasRow.version_id)
                .where(ProgramAliasRow.program_id == prog.id)
            ).all()
            return {a: v for a, v in rows}

        return self.store.read(fn)

    def alias_history(self, program: str, alias: str | None = None) -> list[AliasEvent]:
        """The audit trail, oldest first (all aliases, or one)."""

        def fn(s: Session) -> list[AliasEvent]:
            prog = _program(s, program)
            q = select(ProgramAliasEventRow).where(ProgramAliasEventRow.program_id == prog.id)
            if alias is not None:
                q = q.where(ProgramAliasEventRow.alias == alias)
            return [_event(s, ev, program) for ev in s.scalars(q.order_by(ProgramAliasEventRow.id))]

        return self.store.read(fn)


# -- row helpers ----------------------------------------------------------------------------
def _program(s: Session, name: str) -> ProgramRow:
    row = s.scalar(select(ProgramRow).where(ProgramRow.name == name))
    if row is None:
        raise NotFound(f"No program named {name!r} in the store.", hint="Create it with Programs.create().")
    return row


def _version_row(s: Session, prog: ProgramRow, version: int | str) -> ProgramVersionRow:
    q = select(ProgramVersionRow).where(ProgramVersionRow.program_id == prog.id)
    if isinstance(version, bool) or not isinstance(version, int | str):
        raise ValidationError(f"A version is a number or an alias name, got {version!r}.", field="version")
    if isinstance(version, int):
        row = s.scalar(q.where(ProgramVersionRow.version == version))
    elif version == "latest":
        row = s.scalar(q.order_by(ProgramVersionRow.version.desc()).limit(1))
    else:
        alias = s.get(ProgramAliasRow, (prog.id, version))
        row = s.get(ProgramVersionRow, alias.version_id) if alias is not None else None
    if row is None:
        raise NotFound(f"Program {prog.name!r} has no version {version!r}.")
    return row


def _tags(s: Session, version_id: str) -> tuple[str, ...]:
    return tuple(
        s.scalars(
            select(ProgramVersionTagRow.tag)
            .where(ProgramVersionTagRow.version_id == version_id)
            .order_by(ProgramVersionTagRow.tag)
        )
    )


def _number(s: Session, version_id: str | None) -> int | None:
    if version_id is None:
        return None
    return s.scalar(select(ProgramVersionRow.version).where(ProgramVersionRow.id == version_id))


def _info(row: ProgramRow) -> ProgramInfo:
    return ProgramInfo(row.id, row.name, row.description, row.created_at)


def _version(row: ProgramVersionRow, program: str, tags: tuple[str, ...]) -> ProgramVersion:
    return ProgramVersion(
        id=row.id,
        program=program,
        version=row.version,
        state=dict(row.state),
        signature_hashes=dict(row.signature_hashes),
        score=row.score,
        created_by=row.created_by,
        trainset_hash=row.trainset_hash,
        notes=dict(row.notes),
        tags=tags,
        created_at=row.created_at,
    )


def _event(s: Session, ev: ProgramAliasEventRow, program: str) -> AliasEvent:
    return AliasEvent(
        program=program,
        alias=ev.alias,
        from_version=_number(s, ev.from_version_id),
        to_version=_number(s, ev.to_version_id),
        actor=ev.actor,
        reason=ev.reason,
        at=ev.created_at,
    )
