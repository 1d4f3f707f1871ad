"""``VersionSpec``: one version of one program, as a Predictor hosts it.

A version is either a program *factory* (a ``dspex.Module`` subclass or any callable
returning a program) plus the learned state to load into it (``program.dump_state()``, as
saved by ``program.save("x.json")``), or a whole program *instance* (copied on load). The
spec travels to the predictor's process with Ray's cloudpickle, so the factory must be
importable there or defined in a module registered with
``ray.cloudpickle.register_pickle_by_value``.

``lm`` (any ``BaseLM``, typically a ``RemoteLM`` so every predictor shares one
``ProviderClient``) and ``adapter`` are set for the program's calls through
``dspex.context``; a predictor with its own ``lm`` keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import ConfigurationError

__all__ = ["VersionId", "VersionSpec"]

VersionId = int | str


@dataclass(frozen=True, eq=False)
class VersionSpec:
    program: str
    version: VersionId
    factory: Callable[[], Any] | None = None
    state: Mapping[str, Any] | None = None
    instance: Any = None
    lm: Any = None
    adapter: Any = None
    #: calls running at once; beyond it (and the queue) a call is rejected with Overloaded
    max_in_flight: int = 64
    #: calls allowed to wait for a slot before rejection starts
    max_queued: int = 0
    #: a call running longer is cancelled and fails with ProviderTimeout
    call_timeout_s: float | None = None
    #: executions kept in memory for ``history()``
    history_size: int = 1000
    #: keep each call's inputs in its execution record (off: inputs may be large or private)
    record_inputs: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.program, str) or not self.program.strip():
            raise ConfigurationError(f"A VersionSpec needs a program name, got {self.program!r}.")
        if isinstance(self.version, bool) or not isinstance(self.version, int | str) or self.version == "":
            raise ConfigurationError(
                f"A version id is an int or a non-empty str, got {self.version!r} for program {self.program!r}."
            )
        if (self.factory is None) == (self.instance is None):
            raise ConfigurationError(
                f"VersionSpec {self.label}: give exactly one of factory= (a Module class or a function "
                "returning a program, with state= to load) or instance= (a program object)."
            )
        if self.factory is not None and not callable(self.factory):
            raise ConfigurationError(f"VersionSpec {self.label}: factory must be callable, got {self.factory!r}.")
        if self.max_in_flight < 1 or self.max_queued < 0 or self.history_size < 0:
            raise ConfigurationError(
                f"VersionSpec {self.label} needs max_in_flight >= 1, max_queued >= 0 and history_size >= 0; "
                f"got {self.max_in_flight}, {self.max_queued}, {self.history_size}."
            )
        if self.call_timeout_s is not None and self.call_timeout_s <= 0:
            raise ConfigurationError(f"VersionSpec {self.label}: call_timeout_s must be positive or None.")
        if self.state is not None and not isinstance(self.state, Mapping):
            raise ConfigurationError(
                f"VersionSpec {self.label}: state must be a dict from program.dump_state(), got {type(self.state).__name__}."
            )

    @property
    def label(self) -> str:
        return f"{self.program}@{self.version}"

    def build(self) -> Any:
        """A fresh program object of this version, learned state loaded."""
        if self.instance is not None:
            program = self.instance.deepcopy() if hasattr(self.instance, "deepcopy") else self.instance
        else:
            assert self.factory is not None
            try:
                program = self.factory()
            except Exception as exc:
                raise ConfigurationError(f"The factory of {self.label} raised: {exc}") from exc
        if self.state is not None:
            state = {k: v for k, v in self.state.items() if k != "metadata"}
            program.load_state(state)
        if not hasattr(program, "acall"):
            raise ConfigurationError(
                f"{self.label} built a {type(program).__name__}, which is not a dspex program (no acall); "
                "the factory must return a dspex.Module."
            )
        return program

    def replace(self, **changes: Any) -> VersionSpec:
        from dataclasses import replace

        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """Plain data about the spec (no program objects, no LM secrets)."""
        lm = self.lm
        return {
            "program": self.program,
            "version": self.version,
            "factory": getattr(self.factory, "__qualname__", None) if self.factory is not None else None,
            "instance": type(self.instance).__name__ if self.instance is not None else None,
            "lm": repr(lm) if lm is not None else None,
            "max_in_flight": self.max_in_flight,
            "max_queued": self.max_queued,
            "call_timeout_s": self.call_timeout_s,
            "metadata": dict(self.metadata),
        }
