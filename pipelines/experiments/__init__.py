"""Experiments: statistics for offline variant comparisons and online A/B tests.

Offline (``stats``): paired tests on per-example results of variants evaluated on the same
test examples, with multiple-comparison correction, effect sizes, power / MDE and a written
conclusion (``compare_variants``), and ``non_inferiority`` for canary vs champion.
Online (``online_stats``): sticky weighted assignment, sample-ratio-mismatch checks, Welch /
two-proportion tests, always-valid confidence sequences and guardrails (``online_verdict``).

The statistics are pure computation over numpy arrays (scipy / statsmodels underneath), with
frozen dataclass results that serialise with ``.to_dict()``.

Running experiments: ``ExperimentSpec`` (program, data, metric, baseline and variants) ->
``ExperimentRunner.run`` (one arm per Ray task or thread, the same test examples for every
arm, the LM response cache throughout) -> ``ExperimentResult`` (statistics, cost, latency,
Pareto view, written conclusion) -> ``Report(result).write(dir)`` (JSON, Markdown, PNG).
``ExperimentArchive`` keeps the records. ``OnlineExperiment`` is the transport-free core of
a live A/B test (assignment, accumulation, SRM, sequential verdicts, guardrails).
"""

from dspex.pipelines.experiments.arm import ArmJob, ArmResult, ExampleOutcome, run_arm
from dspex.pipelines.experiments.assignment import Assigner, assign, unit_bucket
from dspex.pipelines.experiments.online import OnlineExperiment
from dspex.pipelines.experiments.online_stats import (
    ArmComparison,
    ArmSummary,
    Guardrail,
    GuardrailResult,
    OnlinePlan,
    OnlineVerdict,
    SRMResult,
    TwoSampleResult,
    online_verdict,
    sequential_difference,
    srm_check,
    two_proportion_z_test,
    welch_t_test,
)
from dspex.pipelines.experiments.paired_tests import (
    AdjustedPValues,
    BootstrapResult,
    CohensDz,
    Interval,
    McNemarResult,
    PermutationResult,
    adjust_p_values,
    cohens_dz,
    mcnemar_test,
    paired_bootstrap,
    paired_permutation,
    tango_interval,
    wilson_interval,
)
from dspex.pipelines.experiments.power import (
    PowerReport,
    mcnemar_mde,
    mcnemar_power,
    mcnemar_sample_size,
    paired_t_mde,
    paired_t_power,
    paired_t_sample_size,
    power_report,
    power_report_from_results,
)
from dspex.pipelines.experiments.record import ExperimentArchive, ExperimentRecord, RecordSink
from dspex.pipelines.experiments.report import ExperimentReport, Report, ReportPaths
from dspex.pipelines.experiments.result import ExperimentResult, ParetoPoint, analyze, pareto_front
from dspex.pipelines.experiments.runner import ExperimentRunner, run_experiment
from dspex.pipelines.experiments.sequential import (
    SequentialMonitor,
    SequentialResult,
    difference_sequence,
    mixture_rho,
    sequence_p_value,
    sequence_radius,
)
from dspex.pipelines.experiments.spec import (
    DatasetSpec,
    ExperimentSpec,
    LMSpec,
    ProgramSpec,
    VariantSpec,
)
from dspex.pipelines.experiments.split import Split, split_examples
from dspex.pipelines.experiments.stats import (
    ComparisonReport,
    NonInferiorityResult,
    VariantComparison,
    compare_variants,
    non_inferiority,
)

__all__ = [
    "AdjustedPValues",
    "ArmComparison",
    "ArmJob",
    "ArmResult",
    "ArmSummary",
    "Assigner",
    "BootstrapResult",
    "CohensDz",
    "ComparisonReport",
    "DatasetSpec",
    "ExampleOutcome",
    "ExperimentArchive",
    "ExperimentRecord",
    "ExperimentReport",
    "ExperimentResult",
    "ExperimentRunner",
    "ExperimentSpec",
    "Guardrail",
    "GuardrailResult",
    "Interval",
    "LMSpec",
    "McNemarResult",
    "NonInferiorityResult",
    "OnlineExperiment",
    "OnlinePlan",
    "OnlineVerdict",
    "ParetoPoint",
    "PermutationResult",
    "PowerReport",
    "ProgramSpec",
    "RecordSink",
    "Report",
    "ReportPaths",
    "SRMResult",
    "SequentialMonitor",
    "SequentialResult",
    "Split",
    "TwoSampleResult",
    "VariantComparison",
    "VariantSpec",
    "adjust_p_values",
    "analyze",
    "assign",
    "cohens_dz",
    "compare_variants",
    "difference_sequence",
    "mcnemar_mde",
    "mcnemar_power",
    "mcnemar_sample_size",
    "mcnemar_test",
    "mixture_rho",
    "non_inferiority",
    "online_verdict",
    "paired_bootstrap",
    "paired_permutation",
    "paired_t_mde",
    "paired_t_power",
    "paired_t_sample_size",
    "pareto_front",
    "power_report",
    "power_report_from_results",
    "run_arm",
    "run_experiment",
    "sequence_p_value",
    "sequence_radius",
    "sequential_difference",
    "split_examples",
    "srm_check",
    "tango_interval",
    "two_proportion_z_test",
    "unit_bucket",
    "welch_t_test",
    "wilson_interval",
]


def __getattr__(name: str) -> object:
    if name == "StoreArchive":
        from dspex.pipelines.experiments.store_archive import StoreArchive

        globals()[name] = StoreArchive
        return StoreArchive
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
