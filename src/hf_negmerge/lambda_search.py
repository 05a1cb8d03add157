"""Choosing the negation coefficient λ in θ₀ − λ·τ from validation accuracies.

The authors' rule: over a λ grid, take the lowest forget-validation accuracy among the λ whose
retain (or control) validation accuracy stays ≥ retain_ratio × the original model's. Their code
has no answer when no λ qualifies; here that case is reported plainly and a named fallback
decides. The rule is pure (numbers in, choice out) so it is tested apart from any model.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from .errors import ConfigError, MergeError, NegMergeWarning, warn

__all__ = [
    "FALLBACKS",
    "LambdaPoint",
    "LambdaSearchConfig",
    "LambdaSelection",
    "LambdaSelectionWarning",
    "check_scale",
    "default_lambda_grid",
    "search_lambda",
    "select_lambda",
]

#: Retain accuracies this close below the threshold still qualify, so 0.95 × 60.0 computed in
#: floating point cannot reject a point that sits exactly on it.
THRESHOLD_TOLERANCE = 1e-9


class LambdaSelectionWarning(NegMergeWarning):
    """The chosen λ needs a look: no λ kept the retain constraint, or λ = 0 forgets nothing."""


@dataclass
class LambdaPoint:
    """Validation accuracies of θ₀ − scale·τ (same unit for both, e.g. percent)."""

    scale: float = field(metadata={"help": "λ, the negation coefficient."})
    forget_accuracy: float = field(metadata={"help": "Forget-validation accuracy (lower = more forgotten)."})
    retain_accuracy: float = field(metadata={"help": "Retain- or control-validation accuracy."})

    def __post_init__(self) -> None:
        for name in ("scale", "forget_accuracy", "retain_accuracy"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise ConfigError(f"LambdaPoint.{name} must be a number, got {type(value).__name__}.")
            setattr(self, name, float(value))
        if not math.isfinite(self.scale):
            raise ConfigError(f"LambdaPoint.scale={self.scale} must be finite.")
        # NaN accuracies are allowed only for an original model whose forget accuracy is unknown.
        if math.isinf(self.forget_accuracy) or not math.isfinite(self.retain_accuracy):
            raise ConfigError(
                f"LambdaPoint at λ={self.scale}: accuracies must be finite, got forget={self.forget_accuracy}, "
                f"retain={self.retain_accuracy}."
            )

    def to_dict(self) -> dict[str, float | None]:
        values = dataclasses.asdict(self)
        return {
            key: (None if isinstance(value, float) and math.isnan(value) else value)
            for key, value in values.items()
        }


@dataclass
class LambdaSelection:
    """The chosen λ, why it was chosen, and the whole validation curve behind the choice."""

    scale: float
    point: LambdaPoint
    qualified: bool  # False when no λ met the retain threshold and a fallback chose
    reason: str
    curve: list[LambdaPoint]  # sorted by λ
    original: LambdaPoint  # the unmodified model (λ = 0)
    threshold: float  # retain accuracy a λ needed to qualify

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "point": self.point.to_dict(),
            "qualified": self.qualified,
            "reason": self.reason,
            "curve": [point.to_dict() for point in self.curve],
            "original": self.original.to_dict(),
            "threshold": self.threshold,
        }


def default_lambda_grid(stop: float = 1.0, step: float = 0.05) -> list[float]:
    """{0, step, …, stop}: the authors' 21-point grid by default, rounded to avoid float drift."""
    if not (math.isfinite(step) and step > 0):
        raise ConfigError(f"λ grid step={step} must be a positive number.")
    if not (math.isfinite(stop) and stop >= 0):
        raise ConfigError(f"λ grid stop={stop} must be a finite number ≥ 0.")
    count = math.floor(stop / step + 1e-9)
    return [round(index * step, 10) for index in range(count + 1)]


def check_scale(scale: object, source: str = "scale") -> float:
    """λ must be a finite number ≥ 0: θ_u = θ₀ − λ·τ, and λ < 0 would add the forget task vector."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ConfigError(f"{source} must be a number λ ≥ 0, got {type(scale).__name__} {scale!r}.")
    if not math.isfinite(scale):
        raise ConfigError(f"{source}={scale} must be finite.")
    if scale < 0:
        raise ConfigError(
            f"{source}={scale} is negative. The unlearned model is θ_u = θ₀ − λ·τ, where τ is what "
            "fine-tuning on the forget data added; λ < 0 adds it again and strengthens the data to be "
            "forgotten. Use λ ≥ 0 (0 leaves the model unchanged)."
        )
    return float(scale)


def _least_retain_drop(curve: Sequence[LambdaPoint], threshold: float) -> LambdaPoint:
    """Highest retain accuracy; ties -> lowest forget accuracy, then the smaller λ."""
    return min(curve, key=lambda point: (-point.retain_accuracy, point.forget_accuracy, point.scale))


def _raise_no_qualifier(curve: Sequence[LambdaPoint], threshold: float) -> LambdaPoint:
    best = _least_retain_drop(curve, threshold)
    raise MergeError(
        f"No λ keeps retain accuracy ≥ {threshold:.4f} (retain_ratio × original); the best retain accuracy "
        f"seen is {best.retain_accuracy:.4f} at λ={best.scale:g}. Lower retain_ratio, try smaller λ, "
        "or choose fallback='least_retain_drop'."
    )


#: What to do when no λ meets the retain threshold. Each takes (curve, threshold) -> chosen point.
FALLBACKS: dict[str, Callable[[Sequence[LambdaPoint], float], LambdaPoint]] = {
    "least_retain_drop": _least_retain_drop,
    "error": _raise_no_qualifier,
}


@dataclass
class LambdaSearchConfig:
    """How λ is chosen once the merged vector exists: nothing here changes a trained run or τ.

    So a finished output folder rerun with other values here repeats only the λ search (and the
    test evaluation), reusing every fine-tuning run. `NegMergeConfig` carries these fields flat
    next to the merge's (a recipe's `merge.retain_ratio`); `NegMergeConfig.lambda_search_config()`
    gives them as this object.
    """

    lambda_grid: list[float] = field(
        default_factory=default_lambda_grid,
        metadata={
            "help": "Negation coefficients λ tried on validation data (θ = θ₀ − λ·τ).",
            "lambda_search": True,
        },
    )
    retain_ratio: float = field(
        default=0.95,
        metadata={
            "help": "λ must keep retain/control validation accuracy ≥ this × the original's.",
            "lambda_search": True,
        },
    )
    fallback: str = field(
        default="least_retain_drop",
        metadata={
            "help": "When no λ qualifies: 'least_retain_drop' (highest retain accuracy) or 'error'.",
            "lambda_search": True,
        },
    )
    # No "lambda_search" tag: `hf-negmerge merge --scale` also takes it (to write θ₀ − λ·τ).
    scale: float | None = field(
        default=None,
        metadata={"help": "A fixed λ; skips the search when set."},
    )

    def __post_init__(self) -> None:
        """Check every field, naming it as `<class>.<field>` (wrong types included)."""
        owner = type(self).__name__
        if not isinstance(self.fallback, str) or self.fallback not in FALLBACKS:
            raise ConfigError(
                f"{owner}.fallback={self.fallback!r} is not a known choice; choose one of {', '.join(FALLBACKS)}."
            )
        if isinstance(self.lambda_grid, str) or not isinstance(self.lambda_grid, list | tuple):
            raise ConfigError(
                f"{owner}.lambda_grid must be a list of numbers λ ≥ 0, got {self.lambda_grid!r}."
            )
        if not self.lambda_grid:
            raise ConfigError(f"{owner}.lambda_grid is empty; give at least one λ.")
        self.lambda_grid = [_number(owner, "lambda_grid", value) for value in self.lambda_grid]
        if not all(math.isfinite(value) and value >= 0 for value in self.lambda_grid):
            raise ConfigError(f"{owner}.lambda_grid must hold finite λ ≥ 0, got {self.lambda_grid}.")
        self.retain_ratio = _number(owner, "retain_ratio", self.retain_ratio)
        if not (0.0 < self.retain_ratio <= 1.0):
            raise ConfigError(f"{owner}.retain_ratio={self.retain_ratio} must be in (0, 1].")
        if self.scale is not None:
            self.scale = check_scale(self.scale, f"{owner}.scale")

    @property
    def scales(self) -> list[float]:
        """The λ to evaluate: the fixed `scale` alone when set, else the grid."""
        return self.lambda_grid if self.scale is None else [self.scale]


def _number(owner: str, name: str, value: object) -> float:
    """`value` as a float, or a ConfigError naming the field (bools and strings are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{owner}.{name} must be a number, got {type(value).__name__} {value!r}.")
    return float(value)


def _validate_ratio_and_fallback(retain_ratio: float, fallback: str) -> None:
    if not (isinstance(retain_ratio, numbers.Real) and 0.0 < retain_ratio <= 1.0):
        raise ConfigError(f"retain_ratio={retain_ratio} must be in (0, 1].")
    if fallback not in FALLBACKS:
        raise ConfigError(f"fallback={fallback!r} is not one of {', '.join(FALLBACKS)}.")


def _original_point(original: float | LambdaPoint, curve: Sequence[LambdaPoint]) -> LambdaPoint:
    if isinstance(original, LambdaPoint):
        return original
    if not isinstance(original, numbers.Real) or not math.isfinite(original) or original < 0:
        raise ConfigError(f"original_retain_accuracy={original} must be a finite number ≥ 0.")
    at_zero = [point for point in curve if point.scale == 0.0]
    forget = at_zero[0].forget_accuracy if at_zero else math.nan
    return LambdaPoint(scale=0.0, forget_accuracy=forget, retain_accuracy=float(original))


def select_lambda(
    curve: Iterable[LambdaPoint],
    original_retain_accuracy: float | LambdaPoint,
    retain_ratio: float = 0.95,
    fallback: str = "least_retain_drop",
) -> LambdaSelection:
    """Apply the authors' λ rule to validation results; the curve's order does not matter.

    Qualifying λ: retain_accuracy ≥ retain_ratio × original retain accuracy. Among them the lowest
    forget accuracy wins; ties go to the smaller λ (the lighter edit). With no qualifier a warning
    is issued and `FALLBACKS[fallback]` decides ("least_retain_drop": highest retain accuracy,
    ties to the lower forget accuracy; "error": raise MergeError). A chosen λ = 0 is flagged in
    `reason`: the original model is returned and nothing is forgotten.
    original_retain_accuracy: a number, or the λ = 0 `LambdaPoint` of the unmodified model.
    """
    _validate_ratio_and_fallback(retain_ratio, fallback)
    points = list(curve)
    if not points:
        raise ConfigError("The λ curve is empty: evaluate at least one λ before selecting.")
    for point in points:
        if not isinstance(point, LambdaPoint):
            raise ConfigError(f"The λ curve must hold LambdaPoint objects, got {type(point).__name__}.")
        if math.isnan(point.forget_accuracy):
            raise ConfigError(f"The λ curve's point at λ={point.scale} has no forget accuracy.")
    points.sort(key=lambda point: point.scale)
    scales = [point.scale for point in points]
    duplicates = sorted({scale for scale in scales if scales.count(scale) > 1})
    if duplicates:
        raise ConfigError(f"The λ curve has several points for λ={duplicates}; give one result per λ.")
    original = _original_point(original_retain_accuracy, points)
    threshold = retain_ratio * original.retain_accuracy

    qualifying = [point for point in points if point.retain_accuracy >= threshold - THRESHOLD_TOLERANCE]
    if qualifying:
        chosen = min(qualifying, key=lambda point: (point.forget_accuracy, point.scale))
        reason = (
            f"λ={chosen.scale:g} has the lowest forget accuracy ({chosen.forget_accuracy:.4f}) among "
            f"{len(qualifying)} of {len(points)} λ whose retain accuracy is ≥ {threshold:.4f} "
            f"({retain_ratio:g} × original {original.retain_accuracy:.4f})."
        )
    else:
        best_retain = max(point.retain_accuracy for point in points)
        message = (
            f"No λ in the grid keeps retain accuracy ≥ {threshold:.4f} ({retain_ratio:g} × original "
            f"{original.retain_accuracy:.4f}); the best seen is {best_retain:.4f}."
        )
        chosen = FALLBACKS[fallback](points, threshold)
        reason = f"{message} Fallback {fallback!r} chose λ={chosen.scale:g}."
        warn(reason, LambdaSelectionWarning)
    if chosen.scale == 0.0:
        reason += " λ = 0 means the original model is kept: nothing is forgotten."
        warn(
            "λ selection chose λ = 0: the negation is not applied and nothing is forgotten.",
            LambdaSelectionWarning,
        )
    return LambdaSelection(
        scale=chosen.scale,
        point=chosen,
        qualified=bool(qualifying),
        reason=reason,
        curve=points,
        original=original,
        threshold=threshold,
    )


def search_lambda(
    evaluate_at: Callable[[float], LambdaPoint],
    grid: Iterable[float] | None = None,
    original_retain_accuracy: float | LambdaPoint | None = None,
    retain_ratio: float = 0.95,
    fallback: str = "least_retain_drop",
    progress: bool = True,
) -> LambdaSelection:
    """Evaluate every λ of `grid` (default: `default_lambda_grid()`) and apply `select_lambda`.

    evaluate_at(λ) returns the validation `LambdaPoint` of θ₀ − λ·τ. Duplicate λ are evaluated once,
    in increasing order. With original_retain_accuracy=None the λ = 0 point is the original model
    (evaluated even if the grid lacks 0), so nothing is evaluated twice.
    """
    _validate_ratio_and_fallback(retain_ratio, fallback)
    grid = default_lambda_grid() if grid is None else list(grid)
    if not grid:
        raise ConfigError("The λ grid is empty; give at least one λ.")
    for value in grid:
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ConfigError(f"The λ grid holds {value!r}; every λ must be a finite number.")
    scales = sorted({float(value) for value in grid})

    def evaluate(scale: float) -> LambdaPoint:
        point = evaluate_at(scale)
        if not isinstance(point, LambdaPoint):
            raise TypeError(
                f"evaluate_at({scale}) returned {type(point).__name__}; it must return a LambdaPoint."
            )
        if not math.isclose(point.scale, scale, rel_tol=0.0, abs_tol=1e-12):
            raise ValueError(f"evaluate_at({scale}) returned a point for λ={point.scale}.")
        return point

    curve = [evaluate(scale) for scale in tqdm(scales, desc="λ search", disable=not progress)]
    if original_retain_accuracy is None:
        at_zero = [point for point in curve if point.scale == 0.0]
        original_retain_accuracy = at_zero[0] if at_zero else evaluate(0.0)
    return select_lambda(curve, original_retain_accuracy, retain_ratio=retain_ratio, fallback=fallback)
