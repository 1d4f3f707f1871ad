"""DSPy's module name for the optimizers: ``from dspex.teleprompt import BootstrapFewShot``
works as ``from dspy.teleprompt import BootstrapFewShot`` does. Everything lives in
``dspex.optimizers``."""

from dspex.optimizers import (
    COPRO,
    AdvancedBootstrap,
    BayesianOptimizer,
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    LabeledFewShot,
    MIPROv2,
    MultiObjective,
    Optimizer,
    Teleprompter,
    get_optimizer,
    list_optimizers,
)

__all__ = [
    "COPRO",
    "AdvancedBootstrap",
    "BayesianOptimizer",
    "BootstrapFewShot",
    "BootstrapFewShotWithRandomSearch",
    "LabeledFewShot",
    "MIPROv2",
    "MultiObjective",
    "Optimizer",
    "Teleprompter",
    "get_optimizer",
    "list_optimizers",
]
