"""MIA-Efficacy: how many forget samples a membership-inference attack calls "unseen".

The definition is SalUn's (Fan et al., ICLR 2024), used by NegMerge's CIFAR-10 table: an RBF SVC
(C=3, gamma="auto") learns member vs non-member from one feature, the model's softmax probability
of the true class (their `SVC_MIA(...)["confidence"]`, the entry their README reports as MIA).
Members are the FIRST len(test) retain samples (label 1; their `Subset(retain, range(len(test)))`),
non-members the test set (label 0), fitted in that order. Applied to the forget set, MIA-Efficacy
is the percentage of forget samples predicted non-member: higher means the forget set looks less
like training data. The retain samples must be rows the original model trained on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.svm import SVC

from ..errors import NegMergeWarning, warn
from .predict import Predictions

#: SalUn's attack classifier, unchanged.
SVC_PARAMETERS: dict[str, Any] = {"C": 3, "gamma": "auto", "kernel": "rbf"}

MEMBER, NON_MEMBER = 1, 0


class MembershipAttackWarning(NegMergeWarning):
    """The MIA figure is computed on unbalanced classes (fewer retain samples than test samples)."""


def true_class_confidence(split: Predictions | Any, name: str) -> np.ndarray:
    """The MIA feature of a split as float64 [N]: `Predictions.true_class_probability` or a 1-D array."""
    values = split.true_class_probability if isinstance(split, Predictions) else split
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(
            f"The {name} confidences must be 1-D (one probability per sample), got shape {values.shape}."
        )
    if values.size == 0:
        raise ValueError(f"The {name} set is empty; MIA-Efficacy needs retain, test and forget samples.")
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise ValueError(f"The {name} confidences must be probabilities in [0, 1].")
    return values


def select_members(retain_confidence: np.ndarray, count: int, seed: int | None = None) -> np.ndarray:
    """`count` retain confidences used as the attack's members.

    seed=None (default) takes the first `count` in order, as SalUn's code does
    (`Subset(retain, range(n))`); an integer draws a random subset without replacement instead
    (not SalUn's; it moves the figure by about a point). When the retain set is smaller than
    `count` every retain sample is used and a warning says so (SalUn's code would fail there).
    """
    if retain_confidence.size < count:
        warn(
            f"MIA: the retain set ({retain_confidence.size}) is smaller than the test set ({count}); "
            "using every retain sample as a member, so the attack's classes are unbalanced.",
            MembershipAttackWarning,
        )
        return retain_confidence
    if seed is None:
        return retain_confidence[:count]
    chosen = np.random.default_rng(seed).choice(retain_confidence.size, size=count, replace=False)
    return retain_confidence[np.sort(chosen)]


def fit_membership_attack(member_confidence: np.ndarray, non_member_confidence: np.ndarray) -> SVC:
    """Fit SalUn's SVC on members (label 1) and non-members (label 0), one feature each."""
    features = np.concatenate([member_confidence, non_member_confidence])[:, None]
    targets = np.concatenate(
        [np.full(member_confidence.size, MEMBER), np.full(non_member_confidence.size, NON_MEMBER)]
    )
    return SVC(**SVC_PARAMETERS).fit(features, targets)


def mia_efficacy(
    retain: Predictions | Any,
    test: Predictions | Any,
    forget: Predictions | Any,
    seed: int | None = None,
) -> float:
    """MIA-Efficacy in percent (0–100): forget samples the attack predicts as non-members.

    Each split is `Predictions` or a 1-D array of true-class probabilities. The attack is fitted
    on `select_members(retain, len(test), seed)` vs `test` and applied to `forget`.
    """
    retain_confidence = true_class_confidence(retain, "retain")
    test_confidence = true_class_confidence(test, "test")
    forget_confidence = true_class_confidence(forget, "forget")
    members = select_members(retain_confidence, test_confidence.size, seed)
    attack = fit_membership_attack(members, test_confidence)
    predicted = attack.predict(forget_confidence[:, None])
    return 100.0 * float(np.mean(predicted == NON_MEMBER))
