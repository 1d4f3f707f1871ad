"""Rollout operations on the persisted state alone: start a rollout, send a manual control, read
the status. No supervisor is needed, so the CLI (another process) and a pipeline's trigger job
use them directly; the live controller uses them too and then executes the actions.

A control computes the new state with the pure ``step`` and stores it together with the actions
it asks for, as *pending* (compare-and-set on the revision read). Whichever controller ticks
next — a ``RolloutController`` loop or a ``rollout_tick`` job — executes the pending actions
before anything else, so ``dspex rollout pause`` takes effect within one tick wherever the
controller runs, and two writers never lose each other's change.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from dspex import telemetry
from dspex.errors import DeploymentError, NotFound
from dspex.telemetry.names import DEPLOYMENT_TRANSITION

from .actions import Action, Event, NewVersion, Retry
from .deployment import Deployment
from .gates import NonInferiorityTest
from .machine import allowed_actions, step
from .persistence import Persistence, RolloutRecord, active_record, pending_of
from .pipeline import ValidationReport
from .spec import RolloutSpec
from .state import RolloutState, start_rollout

__all__ = [
    "apply_control",
    "describe",
    "emit_deployment_transition",
    "new_deployment_id",
    "new_rollout_id",
    "rollout_status",
    "save_record",
    "submit_rollout",
    "undo_target",
]


def new_rollout_id(program: str, version: int) -> str:
    return f"{program}:{version}:{uuid.uuid4().hex[:10]}"


def new_deployment_id(program: str, version: int) -> str:
    return f"dep-{program}-{version}-{uuid.uuid4().hex[:10]}"


def save_record(
    persistence: Persistence, record: RolloutRecord, *, expected_revision: int | None
) -> RolloutRecord:
    """Store ``record`` (compare-and-set) and return it with its new revision."""
    from dataclasses import replace

    revision = persistence.save_state(record.to_doc(), expected_revision=expected_revision)
    return replace(record, revision=revision)


def emit_deployment_transition(deployment_id: str, before: str, after: str) -> None:
    if before != after:
        telemetry.emit(
            DEPLOYMENT_TRANSITION, {}, {"deployment": deployment_id, "from": before, "to": after}
        )


def submit_rollout(
    persistence: Persistence,
    program: str,
    version: int,
    spec: RolloutSpec,
    *,
    champion: int | None,
    now: float,
    recent_versions: Sequence[int] = (),
    pipeline: str | None = None,
    trigger_reason: str = "manual",
    validation: ValidationReport | None = None,
    program_snapshot: Mapping[str, Any] | None = None,
    non_inferiority_test: NonInferiorityTest | None = None,
) -> RolloutRecord:
    """Start rolling ``version`` out; with a rollout of the program still running, the new
    version replaces its canary and the rollout restarts from step 0 (the same version
    submitted twice is a no-op). The first controller tick deploys it."""
    active = active_record(persistence, program, non_inferiority_test=non_inferiority_test)
    if active is not None:
        if active.state.canary == version:
            return active
        record, _ = _control(persistence, active, NewVersion(version=version), now)
        return record
    rollout_id = new_rollout_id(program, version)
    state = start_rollout(
        spec,
        program=program,
        canary=version,
        champion=champion,
        now=now,
        recent_versions=recent_versions,
        rollout_id=rollout_id,
    )
    dep = Deployment(
        id=new_deployment_id(program, version),
        program=program,
        version=version,
        pipeline=pipeline,
        trigger_reason=trigger_reason,
        config=spec.to_dict(),
        created_at=now,
        program_snapshot=dict(program_snapshot or {}),
    ).apply(
        "start_validation",
        now,
        f"rollout {rollout_id} ({state.strategy.value}, champion {champion})",
    )
    if validation is not None:
        dep = dep.record_validation(validation, now)
    persistence.save_deployment(dep.to_dict())
    emit_deployment_transition(dep.id, "pending", dep.status.value)
    return save_record(persistence, RolloutRecord(state, deployment_id=dep.id), expected_revision=0)


def _control(
    persistence: Persistence, record: RolloutRecord, event: Event, now: float
) -> tuple[RolloutRecord, list[Action]]:
    from dataclasses import replace

    state, actions = step(record.state, event, None, now)
    pending = (*record.pending, *pending_of(actions))
    new = replace(record, state=state, pending=pending, error=None)
    return save_record(persistence, new, expected_revision=record.revision), actions


def _target(
    persistence: Persistence,
    program: str,
    event: Event,
    non_inferiority_test: NonInferiorityTest | None,
) -> RolloutRecord:
    record = active_record(persistence, program, non_inferiority_test=non_inferiority_test)
    if record is None and isinstance(event, Retry):
        latest = persistence.latest(program)
        if latest is not None:
            record = RolloutRecord.from_stored(latest, non_inferiority_test=non_inferiority_test)
    if record is None:
        raise NotFound(
            f"Program {program!r} has no rollout to {event.name.replace('_', ' ')}; "
            f"start one with 'dspex deploy {program} --version N'."
        )
    return record


def apply_control(
    persistence: Persistence,
    program: str,
    event: Event,
    now: float,
    *,
    non_inferiority_test: NonInferiorityTest | None = None,
) -> tuple[RolloutRecord, list[Action]]:
    """Apply a manual control to the program's rollout (``Retry``: to its latest, ended one).
    Raises ``InvalidTransition`` naming the phase when the rollout does not accept it."""
    record = _target(persistence, program, event, non_inferiority_test)
    return _control(persistence, record, event, now)


def describe(record: RolloutRecord, deployment: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``dspex rollout status`` shows: a summary, the allowed controls, and the details."""
    s: RolloutState = record.state
    gates = {
        r.gate: {
            "measurements": r.count,
            "successful": r.successful,
            "failed": r.failed,
            "inconclusive": r.inconclusive,
            "errors": r.errors,
            "last": None if r.last is None else r.last.message,
        }
        for r in s.gate_runs
    }
    return {
        "rollout_id": s.rollout_id,
        "program": s.program,
        "canary": s.canary,
        "champion": s.champion,
        "strategy": s.strategy.value,
        "phase": s.phase.value,
        "step": s.step_index + 1,
        "steps": len(s.spec.step_weights),
        "weight": s.weight,
        "failed_checks": s.failed_checks,
        "threshold": s.spec.threshold,
        "message": s.message,
        "allowed": list(allowed_actions(s)),
        "gates": gates,
        "pending_actions": [a.kind for a in record.pending],
        "error": record.error,
        "revision": record.revision,
        "restarts": s.restarts,
        "attempts": s.attempts,
        "started_at": s.started_at,
        "finished_at": s.finished_at,
        "deployment": None
        if deployment is None
        else {
            "id": deployment.get("id"),
            "status": deployment.get("status"),
            "trigger_reason": deployment.get("trigger_reason"),
            "pipeline": deployment.get("pipeline"),
        },
        "history": [t.to_dict() for t in s.history[-10:]],
    }


def rollout_status(
    persistence: Persistence,
    program: str,
    *,
    non_inferiority_test: NonInferiorityTest | None = None,
) -> dict[str, Any]:
    """The program's active rollout, else its latest one, described."""
    record = active_record(persistence, program, non_inferiority_test=non_inferiority_test)
    if record is None:
        latest = persistence.latest(program)
        if latest is None:
            raise NotFound(
                f"Program {program!r} has no rollout yet; start one with 'dspex deploy {program} --version N'."
            )
        record = RolloutRecord.from_stored(latest, non_inferiority_test=non_inferiority_test)
    deployment = None
    if record.deployment_id is not None:
        try:
            deployment = persistence.load_deployment(record.deployment_id)
        except NotFound:
            deployment = None
    return describe(record, deployment)


def undo_target(
    persistence: Persistence,
    program: str,
    *,
    previous: int | None,
    recent: Sequence[int],
    non_inferiority_test: NonInferiorityTest | None = None,
) -> tuple[int, RolloutSpec]:
    """What ``undo`` redeploys when no rollout runs: the previous champion (``previous``, from
    the registry's audit trail; else the champion the latest successful rollout replaced), with
    the latest rollout's spec, provided it is within that spec's rollback window of ``recent``
    (previously live versions, newest first), so it goes back at once without gates."""
    stored = persistence.latest(program)
    latest = (
        None
        if stored is None
        else RolloutRecord.from_stored(stored, non_inferiority_test=non_inferiority_test)
    )
    target = previous
    if target is None and latest is not None and latest.state.phase.value == "succeeded":
        target = latest.state.champion
    if target is None:
        raise DeploymentError(f"{program!r} has no earlier champion to go back to.")
    spec = latest.state.spec if latest is not None else RolloutSpec()
    window = list(recent)[: spec.rollback_window]
    if target not in window:
        raise DeploymentError(
            f"Version {target} of {program!r} is outside the rollback window (the last {spec.rollback_window} "
            f"live versions); deploy it with gates: 'dspex deploy {program} --version {target}'."
        )
    return target, spec


def check_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DeploymentError(f"A program version is a positive integer, got {version!r}.")
    return version
