"""The optimizers on Ray: the Ray evaluator, the Ray trial runner and the Ray Tune runner, with
failing trials, dying workers, the shared LM cache and resumed searches."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.optimizers import QuadraticObjective, ToyLM, exact_match, toy_data

import dspex
from dspex.errors import ExecutionAborted
from dspex.optimizers import (
    BayesianOptimizer,
    BootstrapFewShotWithRandomSearch,
    Categorical,
    FloatRange,
    LocalEvaluator,
    LocalTrialRunner,
    MIPROv2,
    MultiObjective,
    TPESearcher,
)
from dspex.optimizers.evaluation import metered
from dspex.sim import SimServer, get_task, load_task

pytestmark = pytest.mark.ray

TASK = get_task("arithmetic")
MODEL = "sim-medium-fast"
TRAIN = load_task("arithmetic", n=30, seed=0, split="train")


@pytest.fixture(scope="module")
def pool(ray_session: Any) -> Iterator[Any]:
    from dspex.pipelines.optimization import WorkerPool

    # a quarter CPU each: leaves room on the session's 2 CPUs for the Tune trials below
    with WorkerPool(2, num_threads=32, num_cpus_per_worker=0.25) as p:
        p.actors()
        yield p


@pytest.fixture
def sim_lm(sim: SimServer) -> dspex.LM:
    lm = dspex.LM(f"openai/{MODEL}", api_base=sim.openai_base_url, api_key="sim", num_retries=0)
    dspex.configure(lm=lm)
    return lm


def space() -> dict[str, Any]:
    return {"x": FloatRange(0.0, 1.0), "k": Categorical([0, 1, 2])}


# -- evaluation --------------------------------------------------------------------------------
def test_ray_evaluator_matches_local_and_shares_the_lm_cache(pool: Any, sim: SimServer, sim_lm: dspex.LM) -> None:
    from dspex.pipelines.optimization import RayEvaluator, split_pairs

    dev = load_task("arithmetic", n=50, seed=21, split="dev")
    programs = [dspex.Predict(TASK.signature), dspex.ChainOfThought(TASK.signature)]
    ray_ev = RayEvaluator(pool=pool)
    with metered() as meter:
        remote = ray_ev.evaluate(programs, dev, TASK.metric)
    assert meter.lm_calls == 100  # the workers' usage counts on the driver
    local = LocalEvaluator(num_threads=32).evaluate(programs, dev, TASK.metric)
    for r, lo in zip(remote, local, strict=True):
        assert r.scores == lo.scores and [x.index for x in r.results] == list(range(50))
    assert sum(ev.paid_calls for ev in local) == 0  # the workers paid; the driver hit their cache
    before = sim.model_stats(MODEL)["requests"]
    again = ray_ev.evaluate(list(reversed(programs)), dev, TASK.metric)  # other worker, other share
    assert sim.model_stats(MODEL)["requests"] == before and sum(ev.paid_calls for ev in again) == 0
    assert [len(s) for s in split_pairs([(0, i) for i in range(7)], 3)] == [3, 2, 2]


def test_ray_evaluator_counts_failures_and_aborts_past_max_errors(pool: Any) -> None:
    from dspex.pipelines.optimization import RayEvaluator

    dspex.configure(lm=ToyLM(fail=True))  # shipped to the workers with the driver's settings
    ev = RayEvaluator(pool=pool, max_errors=10).evaluate_one(dspex.Predict("question -> answer"), toy_data(4), exact_match)
    assert ev.errors == 4 and ev.scores == [0.0] * 4 and "toy LM is down" in (ev.results[0].error or "")
    with pytest.raises(ExecutionAborted, match="max_errors=1"):
        RayEvaluator(pool=pool, max_errors=1).evaluate([dspex.Predict("question -> answer")], toy_data(4), exact_match)


def test_random_search_gives_the_same_program_in_process_and_on_ray(pool: Any, sim_lm: dspex.LM) -> None:
    from dspex.pipelines.optimization import RayEvaluator

    dev = load_task("arithmetic", n=40, seed=22, split="dev")

    def run(evaluator: Any) -> Any:
        return BootstrapFewShotWithRandomSearch(
            metric=TASK.metric, max_bootstrapped_demos=3, max_labeled_demos=4, num_candidate_programs=2, progress=False
        ).compile(dspex.Predict(TASK.signature), trainset=TRAIN, valset=dev, evaluator=evaluator)

    local, remote = run(LocalEvaluator(num_threads=32)), run(RayEvaluator(pool=pool))
    assert [d["score"] for d in local.candidate_programs] == [d["score"] for d in remote.candidate_programs]
    assert [d.toDict() for d in local.demos] == [d.toDict() for d in remote.demos]


def test_multi_objective_generations_are_scored_on_ray(pool: Any, sim_lm: dspex.LM) -> None:
    from dspex.pipelines.optimization import RayEvaluator

    dev = load_task("arithmetic", n=20, seed=23, split="dev")
    configs = [{"num_demos": d, "reasoning": r} for d in range(3) for r in range(2)]
    opt = MultiObjective(metric=TASK.metric, max_demos=2, objectives={"accuracy": 0.7, "latency": 0.3}, progress=False)
    compiled = opt.compile(dspex.Predict(TASK.signature), trainset=TRAIN, valset=dev, evaluator=RayEvaluator(pool=pool), configurations=configs)
    result = compiled.optimization_result
    assert len(result.candidates) == 6 and result.pareto_front and result.hypervolume_history[0] > 0
    assert all(c.objectives["latency_ms"] > 0 for c in result.candidates)  # type: ignore[index]


# -- the Ray trial runner ------------------------------------------------------------------------
def test_ray_trial_runner_records_failures_and_survives_a_dying_worker(pool: Any, tmp_path: Path) -> None:
    from dspex.pipelines.optimization import RayTrialRunner

    searcher = TPESearcher(space(), seed=2, n_startup_trials=20)
    objective = QuadraticObjective(fail_k2=True, crash_on=3, crash_flag=str(tmp_path / "crashed"), log_path=str(tmp_path / "calls"))
    records = RayTrialRunner(pool=pool, max_retries=1).run(objective, searcher, num_trials=10, evaluator=LocalEvaluator())
    assert len(records) == 10 and sorted(r.number for r in records) == list(range(10))
    failed = [r for r in records if r.state == "failed"]
    assert failed and all(r.params["k"] == 2 and r.attempts == 2 and "k=2 is broken" in (r.error or "") for r in failed)
    assert all(r.params["k"] != 2 for r in records if r.state == "complete")
    assert (tmp_path / "crashed").exists()  # trial 3 killed its worker once and was sent again
    calls = (tmp_path / "calls").read_text().split()
    third = next(r for r in records if r.number == 3)
    assert calls.count("3") == third.attempts + 1 and len(pool.actors()) == 2  # + the call that died


def test_a_stopped_bayesian_search_on_ray_resumes_where_it_was(pool: Any, sim_lm: dspex.LM, tmp_path: Path) -> None:
    from dspex.pipelines.optimization import RayEvaluator, RayTrialRunner

    dev = load_task("arithmetic", n=30, seed=24, split="dev")

    def optimizer(trials: int) -> BayesianOptimizer:
        return BayesianOptimizer(metric=TASK.metric, max_demos=3, num_trials=trials, seed=4, progress=False)

    runner = RayTrialRunner(pool=pool, max_concurrent=1)  # one at a time: the order is reproducible
    straight = optimizer(7).compile(dspex.Predict(TASK.signature), trainset=TRAIN, valset=dev, trial_runner=runner)
    ckpt = tmp_path / "search"
    optimizer(3).compile(dspex.Predict(TASK.signature), trainset=TRAIN, valset=dev, trial_runner=runner, checkpoint_dir=ckpt)
    resumed = optimizer(7).compile(
        dspex.Predict(TASK.signature), trainset=TRAIN, valset=dev, trial_runner=runner, checkpoint_dir=ckpt, evaluator=RayEvaluator(pool=pool)
    )
    a, b = straight.optimization_result.trials, resumed.optimization_result.trials
    assert [(t.params, t.values["score"]) for t in a] == [(t.params, t.values["score"]) for t in b]  # type: ignore[index]
    assert resumed.optimization_result.extras["best_params"] == straight.optimization_result.extras["best_params"]


def test_mipro_runs_its_trials_on_ray(pool: Any, sim_lm: dspex.LM) -> None:
    from dspex.pipelines.optimization import RayEvaluator, RayTrialRunner

    dev = load_task("arithmetic", n=40, seed=25, split="dev")
    opt = MIPROv2(metric=TASK.metric, auto=None, num_candidates=3, seed=3, progress=False)
    with metered() as meter:
        compiled = opt.compile(
            dspex.Predict(TASK.signature), trainset=TRAIN, valset=dev, num_trials=6, minibatch_size=20,
            evaluator=RayEvaluator(pool=pool), trial_runner=RayTrialRunner(pool=pool),
        )
    result = compiled.optimization_result
    assert len([t for t in result.trials if not t.user_attrs.get("full_eval")]) == 6
    assert result.best_score is not None and result.best_score >= result.trials[0].values["score"]  # type: ignore[index]
    assert meter.lm_calls >= 6 * 20 and result.lm_calls == meter.lm_calls


# -- Ray Tune ----------------------------------------------------------------------------------
def test_tune_runner_records_failed_trials_and_resumes_a_crashed_search(ray_session: Any, tmp_path: Path) -> None:
    from dspex.pipelines.optimization import TuneTrialRunner
    from ray import tune

    flag = tmp_path / "driver-crashed"

    class CrashAfter(tune.Callback):
        """The driver dies (raises) after the k-th trial result, once."""

        def __init__(self, k: int) -> None:
            self.k, self.n = k, 0

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
            self.n += 1
            if self.n >= self.k and not flag.exists():
                flag.touch()
                raise RuntimeError("the driver crashed")

    def searcher() -> TPESearcher:
        return TPESearcher(space(), seed=0, n_startup_trials=2)

    objective = QuadraticObjective(fail_k2=True, log_path=str(tmp_path / "calls"))
    straight = searcher()
    TuneTrialRunner(max_concurrent=1, max_retries=0, cpus_per_trial=0.25, storage_path=tmp_path / "tune").run(
        objective, straight, num_trials=6, evaluator=LocalEvaluator()
    )
    (tmp_path / "calls").unlink()

    exp = tmp_path / "search.pkl"
    crashed = searcher()
    with pytest.raises(Exception, match="crashed"):
        TuneTrialRunner(max_concurrent=1, max_retries=0, cpus_per_trial=0.25, callbacks=[CrashAfter(3)]).run(
            objective, crashed, num_trials=6, evaluator=LocalEvaluator(), checkpoint_path=exp
        )
    runner = TuneTrialRunner(max_concurrent=1, max_retries=0, cpus_per_trial=0.25)
    records = runner.run(objective, crashed, num_trials=6, evaluator=LocalEvaluator(), checkpoint_path=exp)
    assert [r.params for r in records] == [r.params for r in straight.records()]  # the searcher's state came back
    assert [r.state for r in records] == [r.state for r in straight.records()]
    assert [r.user_attrs["tune_trial_number"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert any(r.state == "failed" for r in records) and any(r.state == "complete" for r in records)
    calls = (tmp_path / "calls").read_text().split()
    assert len(calls) <= 6 + 1  # finished trials were not run again (at most the one in flight)
    assert sorted(p.name for p in (tmp_path / "search.pkl.tune").iterdir()) == ["run-001"]
    assert [r.params for r in TPESearcher.load(exp).records()] == [r.params for r in records]


def test_bayesian_optimizer_through_tune(ray_session: Any, sim_lm: dspex.LM, tmp_path: Path) -> None:
    from dspex.pipelines.optimization import TuneTrialRunner

    dev = load_task("arithmetic", n=30, seed=26, split="dev")
    opt = BayesianOptimizer(metric=TASK.metric, max_demos=2, num_trials=4, seed=1, progress=False)
    compiled = opt.compile(
        dspex.Predict(TASK.signature), trainset=TRAIN, valset=dev, trial_runner=TuneTrialRunner(max_concurrent=2, cpus_per_trial=0.25, storage_path=tmp_path)
    )
    result = compiled.optimization_result
    assert len(result.trials) == 4 and all(t.state == "complete" for t in result.trials)
    local = LocalEvaluator().evaluate_one(compiled, dev, TASK.metric)
    assert local.score == result.best_score
    assert os.path.isdir(tmp_path) and any(tmp_path.iterdir())  # Tune's experiment directory


def test_local_runner_and_ray_runner_agree_one_at_a_time(pool: Any) -> None:
    from dspex.pipelines.optimization import RayTrialRunner

    a, b = TPESearcher(space(), seed=9, n_startup_trials=3), TPESearcher(space(), seed=9, n_startup_trials=3)
    LocalTrialRunner().run(QuadraticObjective(), a, num_trials=6, evaluator=LocalEvaluator())
    RayTrialRunner(pool=pool, max_concurrent=1).run(QuadraticObjective(), b, num_trials=6, evaluator=LocalEvaluator())
    assert [r.params for r in a.records()] == [r.params for r in b.records()]
