"""Offline experiments on Ray: one task per arm, every call through the shared response cache."""

from __future__ import annotations

import uuid

import pytest

from dspex.errors import ExperimentError
from dspex.pipelines.experiments.runner import ExperimentRunner
from dspex.pipelines.experiments.spec import DatasetSpec, ExperimentSpec, LMSpec, VariantSpec
from dspex.sim import SimServer, get_task

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster(ray_session: object) -> None:
    """The session's Ray (tests/fixtures/ray_session.py)."""


def test_backend_ray_without_ray_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import dspex.actors._ray as ray_helpers

    monkeypatch.setattr(ray_helpers, "ray_ready", lambda: False)
    with pytest.raises(ExperimentError, match=r"call ray.init\(\)"):
        ExperimentRunner(backend="ray").use_ray()
    assert ExperimentRunner(backend="auto").use_ray() is False


def test_arms_run_as_ray_tasks_and_share_the_response_cache(
    sim: SimServer, ray_cluster: None
) -> None:
    # A fresh seed: this run's requests are new to the cache on disk.
    seed = uuid.uuid4().int % 1_000_000
    spec = ExperimentSpec(
        name="on-ray",
        dataset=DatasetSpec(task="classification", n_train=12, n_test=40, seed=seed),
        lm=LMSpec.from_sim(sim, "sim-small-fast", temperature=1.0),
        variants=[
            VariantSpec(name="hints", instructions=get_task("classification").best_instruction()),
            VariantSpec(
                name="bootstrap",
                optimizer="BootstrapFewShot",
                optimizer_params={"max_bootstrapped_demos": 2, "max_labeled_demos": 2},
            ),
        ],
        seed=seed,
        n_resamples=999,
    )
    on_ray = ExperimentRunner(backend="auto")
    assert on_ray.use_ray()
    result = on_ray.run(spec)
    for arm in result.arms.values():
        assert len(arm.examples) == 40
        assert arm.paid_calls == arm.lm_calls == 40  # paid in the workers
        assert arm.cost_per_example_usd is not None and arm.cost_per_example_usd > 0
    spent = sum(a.cost_usd + a.optimization["cost_usd"] for a in result.arms.values())
    assert spent == pytest.approx(sim.stats()["models"]["sim-small-fast"]["cost_usd"], rel=1e-6)

    # The same spec in this process: the workers' answers come back from the shared cache.
    local = ExperimentRunner(backend="local").run(spec)
    for name, arm in local.arms.items():
        assert arm.scores == result.arms[name].scores
        assert arm.paid_calls == 0
    assert local.comparison.to_dict() == result.comparison.to_dict()


def test_a_failing_arm_on_ray_names_the_arm(sim: SimServer, ray_cluster: None) -> None:
    spec = ExperimentSpec(
        name="ray-ghost",
        dataset=DatasetSpec(task="classification", n_train=0, n_test=10, seed=1),
        lm=LMSpec.from_sim(sim, "sim-small-fast"),
        variants=[
            VariantSpec(
                name="ghost",
                model=LMSpec(model="openai/sim-ghost", api_base=sim.openai_base_url, num_retries=0),
            )
        ],
    )
    with pytest.raises(ExperimentError, match="Arm 'ghost' failed"):
        ExperimentRunner(backend="ray").run(spec)
