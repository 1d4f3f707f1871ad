"""``RoutedLM``: a ``BaseLM`` that sends each call through the router.

    registry = ModelRegistry(open_store())
    router = ModelRouter(registry)
    dspex.configure(lm=RoutedLM("qa", router))   # every module now routes, with fallbacks

Each call is routed on its own messages (their size decides context-window fits and
``input_size_max``), with the LM's ``context`` merged with a per-call ``routing_context=``.
The reply's ``model`` names the model that served it.

Pickling (for Ray): the router does not travel. A ``RoutedLM`` pickles as its program, its
settings and the store's URL; the receiving process opens that store and builds its own
registry and router (with ``DSPEX_DATABASE_URL`` when the URL carries a password, which is
never pickled).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspex.clients.base_lm import BaseLM, LMResponse
from dspex.registry.assignment import ProgramModel
from dspex.registry.router import CallUsage, ModelRouter

__all__ = ["RoutedLM"]


def _measure(response: LMResponse) -> CallUsage:
    u = response.usage
    return CallUsage(u.prompt_tokens, u.completion_tokens, response.cost_usd, response.cache_hit)


class RoutedLM(BaseLM):
    provider = "router"

    def __init__(
        self,
        program: str,
        router: ModelRouter,
        *,
        context: Mapping[str, Any] | None = None,
        version_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=f"router/{program}", **kwargs)
        self.program = program
        self.router = router
        self.context: dict[str, Any] = dict(context or {})
        self.version_id = version_id

    async def aforward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> LMResponse:
        msgs = self._messages(prompt, messages)
        extra = kwargs.pop("routing_context", None)
        ctx = {**self.context, **extra} if extra else self.context
        reply_tokens = kwargs.get("max_tokens") or kwargs.get("max_completion_tokens") or 0

        async def call(lm: BaseLM, pm: ProgramModel) -> LMResponse:
            return await lm.aforward(messages=msgs, **{**lm.kwargs, **kwargs})

        return await self.router.aexecute(
            self.program, msgs, call, context=ctx, output_tokens=int(reply_tokens),
            version_id=self.version_id, measure=_measure,
        )

    def explain(self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None,
                **kwargs: Any) -> str:
        """Where a call with these messages would go, and why (changes no state)."""
        msgs = self._messages(prompt, messages)
        ctx = {**self.context, **(kwargs.get("routing_context") or {})}
        reply_tokens = kwargs.get("max_tokens") or self.kwargs.get("max_tokens") or 0
        return self.router.explain(self.program, msgs, ctx, output_tokens=int(reply_tokens))

    def __reduce__(self) -> tuple[Any, ...]:
        url = self.router.registry.store.url
        shipped = None if url.password else url.render_as_string(hide_password=True)
        settings = {"context": self.context, "version_id": self.version_id, "cache": self.cache,
                    "model_type": self.model_type, **self.kwargs}
        return (_rebuild, (self.program, shipped, settings))


def _rebuild(program: str, url: str | None, settings: dict[str, Any]) -> RoutedLM:
    from dspex.registry.registry import ModelRegistry
    from dspex.store import open_store

    registry = ModelRegistry(open_store(url))
    return RoutedLM(program, ModelRouter(registry), **settings)
