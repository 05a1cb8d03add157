"""Avg. Gap: how far an unlearned model's metrics are from a model retrained without the forget set.

Retraining from scratch is the gold standard of unlearning, so SalUn and NegMerge score a method
by mean |method − Retrain| over RA, UA, TA and MIA-Efficacy (percent; lower is better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .unlearning_metrics import UnlearningMetrics

#: Gap component -> how it is read from a metrics mapping (percentages). UA = 100 − forget accuracy.
GAP_COMPONENTS: dict[str, Callable[[Mapping[str, float]], float]] = {
    "retain_accuracy": lambda metrics: metrics["retain_accuracy"],
    "unlearn_accuracy": lambda metrics: 100.0 - metrics["forget_accuracy"],
    "test_accuracy": lambda metrics: metrics["test_accuracy"],
    "mia_efficacy": lambda metrics: metrics["mia_efficacy"],
}

_REQUIRED_KEYS = ("retain_accuracy", "forget_accuracy", "test_accuracy", "mia_efficacy")


def _as_mapping(metrics: Mapping[str, Any] | UnlearningMetrics, role: str) -> Mapping[str, float]:
    if isinstance(metrics, UnlearningMetrics):
        return metrics.to_dict()
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"{role} metrics must be a mapping or UnlearningMetrics, got {type(metrics).__name__}."
        )
    missing = [key for key in _REQUIRED_KEYS if metrics.get(key) is None]
    if missing:
        raise KeyError(f"{role} metrics lack {missing}; Avg. Gap needs {list(_REQUIRED_KEYS)} (percent).")
    for key in _REQUIRED_KEYS:
        value = float(metrics[key])
        if not (math.isfinite(value) and 0.0 <= value <= 100.0):
            raise ValueError(f"{role} metrics[{key!r}]={metrics[key]} must be a percentage in [0, 100].")
    return metrics


def metric_gaps(
    method_metrics: Mapping[str, Any] | UnlearningMetrics,
    retrain_metrics: Mapping[str, Any] | UnlearningMetrics,
) -> dict[str, float]:
    """|method − Retrain| for each of RA, UA, TA, MIA-Efficacy, in percentage points."""
    method = _as_mapping(method_metrics, "method")
    retrain = _as_mapping(retrain_metrics, "retrain")
    return {name: abs(float(read(method)) - float(read(retrain))) for name, read in GAP_COMPONENTS.items()}


def avg_gap(
    method_metrics: Mapping[str, Any] | UnlearningMetrics,
    retrain_metrics: Mapping[str, Any] | UnlearningMetrics,
) -> float:
    """Mean of `metric_gaps` (percentage points; 0 = indistinguishable from Retrain)."""
    gaps = metric_gaps(method_metrics, retrain_metrics)
    return sum(gaps.values()) / len(gaps)
