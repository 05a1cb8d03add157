"""The four numbers an unlearned classifier is judged by (SalUn's protocol, NegMerge §5.2).

RA (retain accuracy), UA (unlearn accuracy = 100 − forget accuracy), TA (test accuracy) and
MIA-Efficacy, all in percent. Computed from one `Predictions` per split, so each split is run
through the model once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .mia import mia_efficacy
from .predict import Predictions


@dataclass
class UnlearningMetrics:
    """Percentages (0–100) for one model; `control_accuracy` is set when a control set exists."""

    forget_accuracy: float = field(metadata={"help": "Top-1 on the forget set (lower = more forgotten)."})
    retain_accuracy: float = field(metadata={"help": "Top-1 on the retain set (RA)."})
    test_accuracy: float = field(metadata={"help": "Top-1 on the held-out test set (TA)."})
    mia_efficacy: float = field(metadata={"help": "Forget samples an SVC attack calls non-members (MIA)."})
    control_accuracy: float | None = field(
        default=None, metadata={"help": "Top-1 on a control set (e.g. ImageNet for CLIP)."}
    )

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            if not (math.isfinite(value) and 0.0 <= value <= 100.0):
                raise ValueError(f"UnlearningMetrics.{item.name}={value} must be a percentage in [0, 100].")

    @property
    def unlearn_accuracy(self) -> float:
        """UA = 100 − forget accuracy (higher = more forgotten)."""
        return 100.0 - self.forget_accuracy

    def to_dict(self) -> dict[str, Any]:
        values = {key: value for key, value in dataclasses.asdict(self).items() if value is not None}
        values["unlearn_accuracy"] = self.unlearn_accuracy
        return values


def compute_unlearning_metrics(
    forget: Predictions,
    retain: Predictions,
    test: Predictions,
    control: Predictions | None = None,
    mia_seed: int | None = None,
) -> UnlearningMetrics:
    """RA, forget accuracy, TA, MIA-Efficacy (and control accuracy) from one pass per split.

    `retain` must hold rows the original model trained on, in order: RA is measured on them and
    the attack's members are its first len(test) rows (SalUn); `mia_seed` draws them instead.
    """
    return UnlearningMetrics(
        forget_accuracy=forget.accuracy(),
        retain_accuracy=retain.accuracy(),
        test_accuracy=test.accuracy(),
        mia_efficacy=mia_efficacy(retain, test, forget, seed=mia_seed),
        control_accuracy=control.accuracy() if control is not None else None,
    )
