"""Optimizers (DSPy's teleprompters) and the seams they run through.

    from dspex.optimizers import BootstrapFewShot, MIPROv2, get_optimizer
    compiled = BootstrapFewShot(metric=exact_match).compile(student, trainset=train)

Every optimizer scores candidates through an ``Evaluator`` (``LocalEvaluator`` here,
``RayEvaluator`` in ``dspex.pipelines.optimization``) and runs searches through a
``TrialRunner`` (``LocalTrialRunner`` here; Ray runners above), so the same optimizer runs in
process or on a cluster. ``import dspex.teleprompt`` gives the same names under DSPy's module.
"""

from dspex.optimizers.advanced_bootstrap import AdvancedBootstrap
from dspex.optimizers.base import Optimizer, OptimizerInfo, ParamInfo, Teleprompter
from dspex.optimizers.bayesian import BayesianOptimizer
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.optimizers.copro import COPRO
from dspex.optimizers.evaluation import (
    Evaluator,
    ExampleResult,
    LocalEvaluator,
    Meter,
    ProgramEvaluation,
    metered,
)
from dspex.optimizers.labeled import LabeledFewShot
from dspex.optimizers.mipro import MIPROv2
from dspex.optimizers.multi_objective import MultiObjective, front_hypervolume
from dspex.optimizers.objectives import HyperObjective, PromptObjective
from dspex.optimizers.proposer import GroundedProposer
from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch
from dspex.optimizers.registry import get_optimizer, info, list_optimizers, register_optimizer
from dspex.optimizers.result import CandidateRecord, OptimizationResult, TrialRecord
from dspex.optimizers.search import (
    Categorical,
    FloatRange,
    IntRange,
    LocalTrialRunner,
    Objective,
    Searcher,
    TPESearcher,
    TrialRunner,
)

__all__ = [
    "COPRO",
    "AdvancedBootstrap",
    "BayesianOptimizer",
    "BootstrapFewShot",
    "BootstrapFewShotWithRandomSearch",
    "CandidateRecord",
    "Categorical",
    "Evaluator",
    "ExampleResult",
    "FloatRange",
    "GroundedProposer",
    "HyperObjective",
    "IntRange",
    "LabeledFewShot",
    "LocalEvaluator",
    "LocalTrialRunner",
    "MIPROv2",
    "Meter",
    "MultiObjective",
    "Objective",
    "OptimizationResult",
    "Optimizer",
    "OptimizerInfo",
    "ParamInfo",
    "ProgramEvaluation",
    "PromptObjective",
    "Searcher",
    "TPESearcher",
    "Teleprompter",
    "TrialRecord",
    "TrialRunner",
    "front_hypervolume",
    "get_optimizer",
    "info",
    "list_optimizers",
    "metered",
    "register_optimizer",
]
