"""``Predict``: one LM call through an adapter for one signature (DSPy's ``dspy.Predict``)."""

from __future__ import annotations

import logging
import random
from typing import Any

from dspex import telemetry
from dspex.telemetry import names
from dspex.adapters.base import Adapter
from dspex.adapters.chat_adapter import ChatAdapter
from dspex.clients.base_lm import BaseLM
from dspex.errors import ConfigurationError
from dspex.primitives.example import Example
from dspex.primitives.module import Module, Parameter, atracked, tracked
from dspex.primitives.prediction import Prediction
from dspex.settings import settings
from dspex.signatures.compiled import compile_signature
from dspex.signatures.signature import Signature, ensure_signature
from dspex.utils.callback import active_callbacks, with_callbacks, with_callbacks_async

__all__ = ["Predict"]

log = logging.getLogger("dspex.predict")

_PREDICT_EVENT = names.PREDICT
_DEFAULT_ADAPTER = ChatAdapter()
_CALL_KEYS = ("signature", "demos", "config", "lm")


class Predict(Module, Parameter):
    """Predict the signature's outputs from its inputs with one LM call.

    ``Predict("question -> answer", n=3, temperature=0.7)``; call with the input fields as
    keyword arguments; per call, ``demos=``, ``config=``, ``lm=`` and ``signature=`` override
    the predictor's own.
    """

    def __init__(self, signature: str | type[Signature], callbacks: list[Any] | None = None, **config: Any) -> None:
        super().__init__(callbacks=callbacks)
        self.stage = f"{random.getrandbits(32):08x}"
        self.signature = ensure_signature(signature)
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.lm: BaseLM | None = None
        self.traces: list[Any] = []
        self.train: list[Any] = []
        self.demos: list[Any] = []

    def get_config(self) -> dict[str, Any]:
        return dict(self.config)

    def update_config(self, **kwargs: Any) -> None:
        self.config = {**self.config, **kwargs}

    # -- state --------------------------------------------------------------------------------------
    def dump_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"traces": list(self.traces), "train": list(self.train)}
        state["demos"] = [_demo_to_dict(d) for d in self.demos]
        state["signature"] = self.signature.dump_state()
        state["lm"] = self.lm.dump_state() if self.lm is not None else None
        return state

    def load_state(self, state: dict[str, Any]) -> Predict:
        for name in ("traces", "train"):
            if name in state:
                setattr(self, name, list(state[name]))
        self.demos = [Example(**d) if isinstance(d, dict) else d for d in state.get("demos", [])]
        if state.get("signature"):
            self.signature = self.signature.load_state(state["signature"])
        lm_state = state.get("lm")
        if lm_state:
            from dspex.clients import LM

            self.lm = LM(**lm_state)
        return self

    # -- calling ------------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        if args:
            raise ValueError(
                f"Predict takes keyword arguments only (the input fields {list(self.signature.input_fields)}), "
                f"e.g. predict(question=...); got {len(args)} positional argument(s)."
            )
        if settings.get("track_usage") and settings.get("usage_tracker") is None:
            return tracked(lambda: self(**kwargs))
        cbs = active_callbacks(self)
        if cbs:
            return with_callbacks(cbs, "module", self, kwargs, lambda: self.forward(**kwargs))
        return self.forward(**kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Prediction:
        if args:
            raise ValueError("Predict takes keyword arguments only (its input fields).")
        if settings.get("track_usage") and settings.get("usage_tracker") is None:
            return await atracked(lambda: self.acall(**kwargs))
        cbs = active_callbacks(self)
        if cbs:
            return await with_callbacks_async(cbs, "module", self, kwargs, lambda: self.aforward(**kwargs))
        return await self.aforward(**kwargs)

    def forward(self, **kwargs: Any) -> Prediction:
        lm, config, signature, demos, inputs = self._preprocess(kwargs)
        adapter: Adapter = settings.get("adapter") or _DEFAULT_ADAPTER
        with telemetry.span(_PREDICT_EVENT, signature=signature.__name__, predictor=type(self).__name__, predictor_id=self.stage):
            completions = adapter(lm, lm_kwargs=config, signature=signature, demos=demos, inputs=inputs)
        return self._postprocess(completions, signature, inputs)

    async def aforward(self, **kwargs: Any) -> Prediction:
        lm, config, signature, demos, inputs = self._preprocess(kwargs)
        adapter: Adapter = settings.get("adapter") or _DEFAULT_ADAPTER
        async with telemetry.span(_PREDICT_EVENT, signature=signature.__name__, predictor=type(self).__name__, predictor_id=self.stage):
            if settings.get("send_stream") is not None:
                with settings.context(caller_predict=self):
                    completions = await adapter.acall(lm, lm_kwargs=config, signature=signature, demos=demos, inputs=inputs)
            else:
                completions = await adapter.acall(lm, lm_kwargs=config, signature=signature, demos=demos, inputs=inputs)
        return self._postprocess(completions, signature, inputs)

    def _preprocess(self, kwargs: dict[str, Any]) -> tuple[BaseLM, dict[str, Any], Any, list[Any], dict[str, Any]]:
        if any(k in kwargs for k in _CALL_KEYS):
            signature = ensure_signature(kwargs.pop("signature", self.signature))
            demos = kwargs.pop("demos", self.demos)
            config = {**self.config, **kwargs.pop("config", {})}
            lm = kwargs.pop("lm", None) or self.lm or settings.get("lm")
        else:
            signature, demos, config = self.signature, self.demos, self.config
            lm = self.lm or settings.get("lm")
        if lm is None:
            raise ConfigurationError(
                "No LM is configured. Call dspex.configure(lm=dspex.LM('openai/gpt-4o-mini')) or pass lm= "
                "to the call (for offline runs, start the simulator: python -m dspex.sim serve)."
            )
        if not isinstance(lm, BaseLM):
            raise ConfigurationError(f"The configured lm must be a dspex.BaseLM (e.g. dspex.LM(...)), got {type(lm).__name__}.")
        n = config.get("n", config.get("num_generations", 1)) or 1
        if n > 1:
            temperature = config.get("temperature", lm.kwargs.get("temperature"))
            if temperature is None or temperature <= 0.15:
                config = {**config, "temperature": 0.7}
        compiled = compile_signature(signature)
        if "hint_" in compiled.input_names and "hint_" not in kwargs:
            kwargs["hint_"] = settings.get("refine_hint") or "No hint."
        present = [k for k in compiled.input_names if k in kwargs]
        if len(present) != len(compiled.input_names):
            missing = [k for k in compiled.input_names if k not in kwargs]
            log.warning(
                "Not all input fields were given to %s: missing %s (present %s).", signature.__name__, missing, present
            )
        return lm, config, signature, demos, kwargs

    def _postprocess(self, completions: list[dict[str, Any]], signature: Any, inputs: dict[str, Any]) -> Prediction:
        pred = Prediction.from_completions(completions, signature=signature)
        trace = settings.get("trace")
        if trace is not None:
            max_size = settings.get("max_trace_size", 10_000)
            if max_size and len(trace) >= max_size:
                del trace[0]
            trace.append((self, dict(inputs), pred))
        return pred

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature.__name__}({self.signature.signature}))"


def _demo_to_dict(demo: Any) -> dict[str, Any]:
    if isinstance(demo, Example):
        return demo.toDict()
    return dict(demo)
