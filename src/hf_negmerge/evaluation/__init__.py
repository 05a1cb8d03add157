"""Evaluation stage: accuracy, MIA-Efficacy, the gap to Retrain, reports, plots.

The pipeline's evaluation engine (`evaluation.engine`: λ searches and test metrics on pre-encoded
splits) is imported by its module path only: it depends on the recipe and the pipeline's stages,
which this package's plain metrics must not.

All accuracies, MIA-Efficacy and gaps are in percent (0–100), as in the paper.
"""

from .gap import GAP_COMPONENTS, avg_gap, metric_gaps
from .mia import SVC_PARAMETERS, fit_membership_attack, mia_efficacy, select_members
from .predict import Predictions, accuracy, predict, predict_dataset
from .report import (
    COLUMNS,
    comparison_json,
    markdown_table,
    summary_table,
    to_jsonable,
    write_comparison,
)
from .unlearning_metrics import UnlearningMetrics, compute_unlearning_metrics

__all__ = [
    "COLUMNS",
    "GAP_COMPONENTS",
    "SVC_PARAMETERS",
    "Predictions",
    "UnlearningMetrics",
    "accuracy",
    "avg_gap",
    "comparison_json",
    "compute_unlearning_metrics",
    "fit_membership_attack",
    "markdown_table",
    "metric_gaps",
    "mia_efficacy",
    "predict",
    "predict_dataset",
    "select_members",
    "summary_table",
    "to_jsonable",
    "write_comparison",
]
