"""The model registry and router (Stage 4 §1): models with a status machine and measured
health, program<->model assignments with routing strategies and conditions, a router with
fallbacks and cooldowns, ``RoutedLM`` to route any program, and periodic health checks.

    from dspex.registry import ModelRegistry, ModelRouter, RoutedLM
    registry = ModelRegistry()                      # the store at DSPEX_DATABASE_URL or .dspex/
    registry.register("fast", "openai", "gpt-4o-mini", secret_ref="OPENAI_API_KEY",
                      input_price_per_1m_usd=0.15, output_price_per_1m_usd=0.6, context_window=128_000)
    registry.approve("fast")
    registry.assign("qa", "fast", strategy="primary")
    dspex.configure(lm=RoutedLM("qa", ModelRouter(registry)))
"""

from dspex.registry.assignment import CONDITIONS, ProgramModel, Strategy
from dspex.registry.cooldown import (
    CooldownPolicy,
    CooldownState,
    CooldownTracker,
    Phase,
    counts_for_cooldown,
)
from dspex.registry.health import HealthChecker
from dspex.registry.lm_factory import lm_for
from dspex.registry.model import CostEstimate, HealthStatus, Model, ModelStatus
from dspex.registry.registry import HealthCheckResult, ModelRegistry
from dspex.registry.route import Route
from dspex.registry.routed_lm import RoutedLM
from dspex.registry.router import CallUsage, ModelRouter
from dspex.registry.strategies import (
    CostOptimizedStrategy,
    FirstByPriority,
    LatencyOptimizedStrategy,
    LoadBalancedStrategy,
    PrimaryStrategy,
    RouteRequest,
    RoutingContext,
    RoutingStrategy,
)

__all__ = [
    "CONDITIONS",
    "CallUsage",
    "CooldownPolicy",
    "CooldownState",
    "CooldownTracker",
    "CostEstimate",
    "CostOptimizedStrategy",
    "FirstByPriority",
    "HealthCheckResult",
    "HealthChecker",
    "HealthStatus",
    "LatencyOptimizedStrategy",
    "LoadBalancedStrategy",
    "Model",
    "ModelRegistry",
    "ModelRouter",
    "ModelStatus",
    "Phase",
    "PrimaryStrategy",
    "ProgramModel",
    "Route",
    "RouteRequest",
    "RoutedLM",
    "RoutingContext",
    "RoutingStrategy",
    "Strategy",
    "counts_for_cooldown",
    "lm_for",
]
