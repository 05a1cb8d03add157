"""Evaluation stage: accuracy, MIA-Efficacy, the gap to Retrain, offline metric modules, reports, plots.

All accuracies, MIA-Efficacy and gaps are in percent (0–100), as in the paper.
"""

from .gap import GAP_COMPONENTS, avg_gap, metric_gaps
from .metrics import PACKAGED_METRICS, available_metrics, load_metric, metric_path
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
    "PACKAGED_METRICS",
    "SVC_PARAMETERS",
    "Predictions",
    "UnlearningMetrics",
    "accuracy",
    "available_metrics",
    "avg_gap",
    "comparison_json",
    "compute_unlearning_metrics",
    "fit_membership_attack",
    "load_metric",
    "markdown_table",
    "metric_gaps",
    "metric_path",
    "mia_efficacy",
    "predict",
    "predict_dataset",
    "select_members",
    "summary_table",
    "to_jsonable",
    "write_comparison",
]
