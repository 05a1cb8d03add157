"""Fine-tuning hyperparameters and the grid that expands them into a pool of runs.

NegMerge needs n models fine-tuned on the forget set with *different* hyperparameters. A
`GridSpec` says how they differ (named axes crossed, or an explicit list of points); each
`GridPoint` carries a stable id derived from its full hyperparameters, so a rerun recognises
the runs it already finished and never folds one twice.

Longer than most modules (~620 lines): `TrainingHyperparameters` and `GridSpec` share their value
checks and `HyperparameterError`, whose `where` ("base", "axes", "points[i]") lets a recipe name the
key to fix; the run id is derived from the full hyperparameters, so the two types stay together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, NegMergeWarning
from .augment import AUGMENTATIONS

MIXED_PRECISION_MODES = ("no", "fp16", "bf16")


class HyperparameterError(ConfigError):
    """An invalid hyperparameter value; says which field and where in a GridSpec it was set.

    `where` is "base", "axes" or "points[<i>]", so a recipe can name the key to fix
    (`grid.base.epochs`, `grid.axes.epochs`, `grid.points[2].epochs`).
    """

    def __init__(self, name: str, message: str, where: str = "base") -> None:
        super().__init__(message)
        self.name = name
        self.where = where


class WarmupWarning(NegMergeWarning):
    """Warm-up at least as long as the run: the learning rate never reaches its peak."""


class LoraLearningRateWarning(NegMergeWarning):
    """LoRA runs at learning rates too small to move their adapters enough to forget anything."""


#: digits/lora's learning rates, which forget the digit on the tiny ViT (docs/scenarios.md,
#: "LoRA at full fine-tuning learning rates"). With the largest LoRA rate below the smaller of
#: them the merged vector was too small: 0.0005 / 0.001 (the default's) ended "not unlearned"
#: (forget 84%), 0.001 / 0.0015 only just passed at λ = 9.5 of 10 (forget 31%).
LORA_LEARNING_RATES = (0.002, 0.005)


SCHEDULERS = ("cosine", "linear", "constant_with_warmup")

# Epochs the authors used per forget set in the CLIP RandAugment pool (REFERENCE §2.1).
CLIP_EPOCHS_BY_DATASET: dict[str, int] = {
    "cars": 70,
    "dtd": 100,
    "eurosat": 40,
    "gtsrb": 40,
    "mnist": 30,
    "resisc45": 40,
    "sun397": 40,
    "svhn": 30,
}


@dataclass
class TrainingHyperparameters:
    """Everything that defines one fine-tuning run on the forget set.

    Defaults are the paper's CLIP setting (REFERENCE §2.1) without augmentation.
    """

    learning_rate: float = field(default=1e-5, metadata={"help": "Peak AdamW learning rate."})
    epochs: int = field(default=1, metadata={"help": "Passes over the forget-train split."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW decoupled weight decay."})
    label_smoothing: float = field(default=0.0, metadata={"help": "Cross-entropy label smoothing in [0, 1)."})
    warmup_steps: int = field(
        default=500, metadata={"help": "Optimizer steps of linear warm-up before the decay schedule."}
    )
    scheduler: str = field(
        default="cosine", metadata={"help": "Decay after warm-up: cosine, linear or constant_with_warmup."}
    )
    batch_size: int = field(default=128, metadata={"help": "Images per forward pass on each process."})
    grad_clip: float | None = field(
        default=1.0, metadata={"help": "Max global gradient norm (None: no clipping)."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Forward/backward passes per optimizer step."}
    )
    randaugment_magnitude: int | None = field(
        default=None,
        metadata={
            "help": "RandAugment magnitude m on timm's 0..10 scale (the paper uses 1..10); None: no augmentation."
        },
    )
    randaugment_num_ops: int | None = field(
        default=None, metadata={"help": "RandAugment number of operations n per image (the paper uses 1..3)."}
    )
    augmentation: str = field(
        default="timm_randaugment",
        metadata={
            "help": "Registered training transform: timm_randaugment (the authors': random resized crop, "
            "flip, RandAugment) and randaugment (RandAugment on the whole image: for tiny low-resolution "
            "images) apply only when randaugment_magnitude/num_ops are set, else the plain processor; "
            "cifar_pad_crop_flip (pad 4, random crop, flip: the standard ResNet setting) applies to every run."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seeds shuffling, augmentation and dropout."})
    lora_rank: int | None = field(
        default=None, metadata={"help": "LoRA rank r; None means full fine-tuning of the trainable part."}
    )
    lora_alpha: float | None = field(
        default=None, metadata={"help": "LoRA alpha (None: twice the rank, scale 2)."}
    )
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Short Linear names LoRA adapts (None: every fine-tuned Linear of the blocks)."},
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch."})
    mixed_precision: str = field(
        default="no", metadata={"help": "accelerate mixed precision: no, fp16 or bf16."}
    )

    def __post_init__(self) -> None:
        self.learning_rate = _number("learning_rate", self.learning_rate, minimum=0.0, strict=True)
        self.weight_decay = _number("weight_decay", self.weight_decay, minimum=0.0)
        self.label_smoothing = _number("label_smoothing", self.label_smoothing, minimum=0.0)
        if self.label_smoothing >= 1.0:
            raise HyperparameterError(
                "label_smoothing",
                f"TrainingHyperparameters.label_smoothing={self.label_smoothing} must be below 1.",
            )
        self.epochs = _integer("epochs", self.epochs, minimum=1)
        self.warmup_steps = _integer("warmup_steps", self.warmup_steps, minimum=0)
        self.batch_size = _integer("batch_size", self.batch_size, minimum=1)
        self.gradient_accumulation_steps = _integer(
            "gradient_accumulation_steps", self.gradient_accumulation_steps, minimum=1
        )
        self.seed = _integer("seed", self.seed, minimum=0)
        if self.grad_clip is not None:
            self.grad_clip = _number("grad_clip", self.grad_clip, minimum=0.0, strict=True)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        self._check_augmentation()
        _choice("mixed_precision", self.mixed_precision, MIXED_PRECISION_MODES)
        self._check_randaugment()
        self._check_lora()

    def _check_augmentation(self) -> None:
        """A registered transform name, so a typo fails when the recipe is read, not when a run starts."""
        if not isinstance(self.augmentation, str) or self.augmentation not in AUGMENTATIONS:
            raise HyperparameterError(
                "augmentation",
                f"TrainingHyperparameters.augmentation={self.augmentation!r} is not a registered transform; "
                f"known: {', '.join(sorted(AUGMENTATIONS))} (more with @register_augmentation).",
            )

    def _check_randaugment(self) -> None:
        magnitude, num_ops = self.randaugment_magnitude, self.randaugment_num_ops
        if (magnitude is None) != (num_ops is None):
            raise HyperparameterError(
                "randaugment_magnitude" if magnitude is None else "randaugment_num_ops",
                "TrainingHyperparameters.randaugment_magnitude and randaugment_num_ops go together: "
                f"got magnitude={magnitude!r}, num_ops={num_ops!r}; set both or neither.",
            )
        if magnitude is not None:
            # timm clips every drawn magnitude to 10, so a larger m would silently act as 10.
            self.randaugment_magnitude = _integer("randaugment_magnitude", magnitude, minimum=0, maximum=10)
            self.randaugment_num_ops = _integer("randaugment_num_ops", num_ops, minimum=1)

    def _check_lora(self) -> None:
        if self.lora_rank is None:
            stray = [
                name for name in ("lora_alpha", "lora_target_modules") if getattr(self, name) is not None
            ]
            if stray or self.lora_dropout:
                stray += ["lora_dropout"] if self.lora_dropout else []
                raise HyperparameterError(
                    stray[0],
                    f"TrainingHyperparameters.{stray[0]} is set but lora_rank is None (full fine-tuning); "
                    "set lora_rank to use LoRA.",
                )
            return
        self.lora_rank = _integer("lora_rank", self.lora_rank, minimum=1)
        if self.lora_alpha is not None:
            self.lora_alpha = _number("lora_alpha", self.lora_alpha, minimum=0.0, strict=True)
        self.lora_dropout = _number("lora_dropout", self.lora_dropout, minimum=0.0)
        if self.lora_dropout >= 1.0:
            raise HyperparameterError(
                "lora_dropout", f"TrainingHyperparameters.lora_dropout={self.lora_dropout} must be below 1."
            )
        if self.lora_target_modules is not None:
            targets = (
                [self.lora_target_modules]
                if isinstance(self.lora_target_modules, str)
                else self.lora_target_modules
            )
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise HyperparameterError(
                    "lora_target_modules",
                    "TrainingHyperparameters.lora_target_modules must be a non-empty list of module names, "
                    f"got {self.lora_target_modules!r}.",
                )
            self.lora_target_modules = list(targets)

    @property
    def uses_lora(self) -> bool:
        return self.lora_rank is not None

    @property
    def uses_augmentation(self) -> bool:
        """Whether RandAugment is configured (the run id's "ra" prefix).

        The RandAugment transforms need it; `augmentation="cifar_pad_crop_flip"` augments without it.
        """
        return self.randaugment_magnitude is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingHyperparameters:
        _reject_unknown_keys("TrainingHyperparameters", values)
        return cls(**dict(values))

    def replace(self, **overrides: Any) -> TrainingHyperparameters:
        _reject_unknown_keys("TrainingHyperparameters", overrides)
        return dataclasses.replace(self, **overrides)


HYPERPARAMETER_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainingHyperparameters))

# Short names used in readable run ids; a name absent here is used as is.
_ID_ABBREVIATIONS: dict[str, str] = {
    "learning_rate": "lr",
    "epochs": "ep",
    "weight_decay": "wd",
    "label_smoothing": "ls",
    "warmup_steps": "wu",
    "batch_size": "bs",
    "grad_clip": "clip",
    "gradient_accumulation_steps": "acc",
    "randaugment_magnitude": "m",
    "randaugment_num_ops": "n",
    "augmentation": "aug",
    "seed": "s",
    "lora_rank": "r",
    "lora_alpha": "a",
    "lora_dropout": "ld",
    "mixed_precision": "mp",
}


@dataclass(frozen=True)
class GridPoint:
    """One run of the pool: full hyperparameters plus the values that set it apart."""

    hyperparameters: TrainingHyperparameters
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Readable prefix + 6 hex digits of the SHA-256 of the canonical hyperparameter JSON."""
        digest = hashlib.sha256(canonical_json(self.hyperparameters.to_dict()).encode("utf-8")).hexdigest()[
            :6
        ]
        parts = ["ra"] if self.hyperparameters.uses_augmentation else []
        parts += ["lora"] if self.hyperparameters.uses_lora else []
        parts += [
            f"{_ID_ABBREVIATIONS.get(name, name)}{_format_value(value)}"
            for name, value in self.overrides.items()
        ]
        return "-".join([*parts, digest])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "overrides": dict(self.overrides),
            "hyperparameters": self.hyperparameters.to_dict(),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GridPoint:
        point = cls(
            TrainingHyperparameters.from_dict(values["hyperparameters"]), dict(values.get("overrides", {}))
        )
        if "id" in values and values["id"] != point.id:
            raise ConfigError(
                f"Grid point id {values['id']!r} does not match its hyperparameters (expected {point.id!r}); "
                "the file was edited or written by another version."
            )
        return point


@dataclass
class GridSpec:
    """A pool of runs: `base` hyperparameters varied along `axes` (crossed) or at explicit `points`.

    `axes={"randaugment_magnitude": [1, 2], "randaugment_num_ops": [1, 2]}` gives 4 points;
    `points=[{"learning_rate": 1e-4}, {"learning_rate": 1e-3, "epochs": 2}]` gives exactly those.
    With neither, the grid is the single base point.
    """

    base: TrainingHyperparameters = field(
        default_factory=TrainingHyperparameters, metadata={"help": "Values every point shares."}
    )
    axes: dict[str, list[Any]] | None = field(
        default=None, metadata={"help": "Hyperparameter name -> values; the grid is their cartesian product."}
    )
    points: list[dict[str, Any]] | None = field(
        default=None, metadata={"help": "Explicit overrides of `base`, one dict per point."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.base, Mapping):
            self.base = TrainingHyperparameters.from_dict(self.base)
        if not isinstance(self.base, TrainingHyperparameters):
            raise ConfigError(
                f"GridSpec.base must be TrainingHyperparameters or a dict, got {type(self.base).__name__}."
            )
        if self.axes is not None and self.points is not None:
            raise ConfigError(
                "GridSpec takes `axes` (a cartesian product) or `points` (an explicit list), not both."
            )
        if self.axes is not None:
            _check_axes_type(self.axes)
            self.axes = {name: _axis_values(name, values) for name, values in dict(self.axes).items()}
            if not self.axes:
                raise ConfigError("GridSpec.axes is empty; give at least one axis or leave it None.")
        if self.points is not None:
            if isinstance(self.points, (str, bytes, Mapping)) or not isinstance(self.points, Sequence):
                raise ConfigError(f"GridSpec.points must be a list of dicts, got {self.points!r}.")
            if not self.points:
                raise ConfigError("GridSpec.points is empty; give at least one point or leave it None.")
            for index, point in enumerate(self.points):
                if not isinstance(point, Mapping):
                    raise ConfigError(f"GridSpec.points[{index}] must be a dict of overrides, got {point!r}.")
                _reject_unknown_keys(f"GridSpec.points[{index}]", point)
            self.points = [dict(point) for point in self.points]
        self.expand()  # every point validated now, before any training starts

    def expand(self) -> list[GridPoint]:
        """All points, in a deterministic order; raises ConfigError on an invalid or repeated point."""
        if self.axes is not None:
            names = list(self.axes)
            overrides = [
                dict(zip(names, combo, strict=True)) for combo in itertools.product(*self.axes.values())
            ]
            where = [", ".join(f"{k}={v!r}" for k, v in o.items()) for o in overrides]
        elif self.points is not None:
            overrides = self.points
            where = [f"points[{i}]" for i in range(len(overrides))]
        else:
            overrides, where = [{}], ["base"]
        grid: list[GridPoint] = []
        seen: dict[str, str] = {}
        for values, label in zip(overrides, where, strict=True):
            try:
                hyperparameters = self.base.replace(**values)
            except HyperparameterError as error:
                source = "base"  # the offending value came from `base` unless this point sets it
                if error.name in values:
                    source = "axes" if self.axes is not None else label
                raise HyperparameterError(error.name, f"GridSpec point ({label}): {error}", source) from error
            except ConfigError as error:
                raise ConfigError(f"GridSpec point ({label}): {error}") from error
            point = GridPoint(hyperparameters, values)
            if point.id in seen:
                raise ConfigError(
                    f"GridSpec points {seen[point.id]} and {label} have identical hyperparameters; "
                    "each run of the pool must differ."
                )
            seen[point.id] = label
            grid.append(point)
        return grid

    def __len__(self) -> int:
        return len(self.expand())

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "axes": self.axes, "points": self.points}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GridSpec:
        """Build from a recipe's `grid` section: `base` + `axes` or `points`, or a `preset`.

        With a preset, `axes` entries replace the values of the preset's axis of the same name,
        which is how a pool is shrunk (`axes: {randaugment_magnitude: [1, 5]}`); `preset: null`
        means no preset.
        """
        unknown = sorted(str(key) for key in set(values) - {"base", "axes", "points", "preset"})
        if unknown:
            raise ConfigError(f"Unknown GridSpec key(s) {unknown}; known keys: base, axes, points, preset.")
        base = values.get("base") or {}
        if not isinstance(base, Mapping):
            raise ConfigError(f"GridSpec.base must be a mapping of hyperparameters, got {base!r}.")
        axes, points, preset = values.get("axes"), values.get("points"), values.get("preset")
        if preset is None:
            return cls(base=base, axes=axes, points=points)
        if points is not None:
            raise ConfigError(
                f"GridSpec: preset {preset!r} defines the runs with axes, so `points` cannot be added; "
                "drop `points`, or drop the preset (preset: null)."
            )
        spec = grid_preset(preset, **base)
        if axes is None:
            return spec
        _check_axes_type(axes)
        preset_axes = dict(spec.axes or {})
        foreign = sorted(str(name) for name in set(axes) - set(preset_axes))
        if foreign:
            raise ConfigError(
                f"GridSpec: {foreign} are not axes of preset {preset!r} (its axes: {', '.join(preset_axes)}); "
                "with a preset, `axes` only replaces the values of the preset's own axes. "
                "For axes of your own, drop the preset (preset: null)."
            )
        return cls(base=spec.base, axes={**preset_axes, **axes})


# ---------------------------------------------------------------------------------------------
# Presets: the paper's two pools.

GRID_PRESETS: dict[str, Callable[..., GridSpec]] = {}


def register_grid_preset(name: str) -> Callable[[Callable[..., GridSpec]], Callable[..., GridSpec]]:
    def decorator(builder: Callable[..., GridSpec]) -> Callable[..., GridSpec]:
        if name in GRID_PRESETS:
            raise ConfigError(f"Grid preset {name!r} is already registered.")
        GRID_PRESETS[name] = builder
        return builder

    return decorator


def available_grid_presets() -> list[str]:
    return sorted(GRID_PRESETS)


def grid_preset(name: str, **base_overrides: Any) -> GridSpec:
    """A named pool; `base_overrides` change the shared values (e.g. `epochs=30` for MNIST)."""
    if not isinstance(name, str) or name not in GRID_PRESETS:
        raise ConfigError(
            f"Unknown grid preset {name!r}; choose one of {', '.join(available_grid_presets())}."
        )
    return GRID_PRESETS[name](**base_overrides)


@register_grid_preset("clip_randaugment")
def _clip_randaugment(**base_overrides: Any) -> GridSpec:
    """REFERENCE §2.1: 30 runs, RandAugment m ∈ 1..10 × n ∈ 1..3; everything else fixed.

    Epochs depend on the forget set (`CLIP_EPOCHS_BY_DATASET`); the default 30 is MNIST's.
    """
    base = TrainingHyperparameters(
        learning_rate=1e-5,
        weight_decay=0.1,
        warmup_steps=500,
        scheduler="cosine",
        grad_clip=1.0,
        batch_size=128,
        label_smoothing=0.0,
        epochs=CLIP_EPOCHS_BY_DATASET["mnist"],
        randaugment_magnitude=1,
        randaugment_num_ops=1,
    )
    return GridSpec(
        base=base.replace(**base_overrides),
        axes={"randaugment_magnitude": list(range(1, 11)), "randaugment_num_ops": [1, 2, 3]},
    )


@register_grid_preset("standard")
def _standard(**base_overrides: Any) -> GridSpec:
    """REFERENCE §2.2: 27 runs, epochs {40,50,60} × weight decay {1e-4,5e-5,1e-5} × smoothing {0,0.05,0.1}.

    The paper does not state the optimizer for this pool; the base keeps our AdamW loop with
    learning rate 1e-4, no warm-up and cosine decay (the weight decays are then AdamW's decoupled
    decay, not SGD's L2 term). Override them to match another setup; the ResNet-18 recipe adds
    `augmentation: cifar_pad_crop_flip`.
    """
    base = TrainingHyperparameters(learning_rate=1e-4, warmup_steps=0, batch_size=128, epochs=40)
    return GridSpec(
        base=base.replace(**base_overrides),
        axes={
            "epochs": [40, 50, 60],
            "weight_decay": [1e-4, 5e-5, 1e-5],
            "label_smoothing": [0.0, 0.05, 0.1],
        },
    )


# ---------------------------------------------------------------------------------------------
# Warm-up against run length: one warning for the whole grid, with the numbers to change.


def optimizer_steps(hyperparameters: TrainingHyperparameters, num_rows: int, num_processes: int = 1) -> int:
    """Optimizer steps of one run over `num_rows` forget-train rows (as the training loop counts them)."""
    batches = math.ceil(num_rows / (hyperparameters.batch_size * num_processes))
    return math.ceil(batches / hyperparameters.gradient_accumulation_steps) * hyperparameters.epochs


def rows_for_warmup(hyperparameters: TrainingHyperparameters) -> int:
    """Fewest forget-train rows (one process) for which warm-up ends before the run does."""
    per_epoch = hyperparameters.warmup_steps // hyperparameters.epochs
    return hyperparameters.batch_size * hyperparameters.gradient_accumulation_steps * per_epoch + 1


def hyperparameter_key(points: Sequence[GridPoint], name: str) -> str:
    """The recipe key that sets these points' `name`: an axis when it varies, else the base."""
    varied = any(name in point.overrides for point in points)
    return f"grid.axes.{name}" if varied else f"grid.base.{name}"


def warmup_key(points: Sequence[GridPoint]) -> str:
    """The recipe key that sets these points' warm-up."""
    return hyperparameter_key(points, "warmup_steps")


def lora_learning_rate_warning(points: Sequence[GridPoint]) -> str | None:
    """One message when the grid has LoRA runs and all of them train below `LORA_LEARNING_RATES`.

    Adapters start at zero and train few weights, so at full fine-tuning rates their merged
    change stays small: the λ search then ends at the grid's edge with little forgotten.
    """
    lora = [point for point in points if point.hyperparameters.uses_lora]
    rates = sorted({point.hyperparameters.learning_rate for point in lora})
    if not lora or rates[-1] >= LORA_LEARNING_RATES[0]:
        return None
    ranks = "/".join(str(rank) for rank in sorted({point.hyperparameters.lora_rank for point in lora}))
    key = hyperparameter_key(lora, "learning_rate")
    advice = (
        f"{key}, e.g. to [{', '.join(f'{rate:g}' for rate in LORA_LEARNING_RATES)}] as digits/lora does"
        if ".axes." in key
        else f"{key} to at least {LORA_LEARNING_RATES[0]:g}"
    )
    return (
        f"LoRA is on (lora_rank={ranks}) in {len(lora)} of {len(points)} grid run(s), all at learning "
        f"rates below {LORA_LEARNING_RATES[0]:g} ({'/'.join(f'{rate:g}' for rate in rates)}): adapters "
        "move the weights much less than full fine-tuning at the same rate, so the run likely ends "
        "'not unlearned'. On the digits ViT, LoRA at the full fine-tuning rates 0.0005/0.001 left 84% "
        f"of the digit recognised, digits/lora's {'/'.join(f'{rate:g}' for rate in LORA_LEARNING_RATES)} "
        f"forgot all of it (docs/scenarios.md). Raise {advice}."
    )


def warmup_warning(points: Sequence[GridPoint], num_rows: int, num_processes: int = 1) -> str | None:
    """One message for every run whose warm-up is at least as long as the run, or None.

    Such runs never reach their peak learning rate; with a small one (the paper's 1e-5 over
    500 warm-up steps) they barely move the weights and the λ search keeps λ = 0.
    """
    short = [
        (point, steps)
        for point in points
        if point.hyperparameters.warmup_steps
        >= (steps := optimizer_steps(point.hyperparameters, num_rows, num_processes))
    ]
    if not short:
        return None
    warmups = sorted({point.hyperparameters.warmup_steps for point, _ in short})
    steps = sorted({steps for _, steps in short})
    rates = sorted({point.hyperparameters.learning_rate for point, _ in short})
    shortest = steps[0]
    return (
        f"warm-up is at least as long as the run in {len(short)} of {len(points)} grid run(s): "
        f"warmup_steps={'/'.join(map(str, warmups))} ≥ their "
        f"{'..'.join(map(str, dict.fromkeys([steps[0], steps[-1]])))} optimizer steps on "
        f"{num_rows} forget-train rows, so the learning rate never reaches its peak "
        f"({'/'.join(f'{rate:g}' for rate in rates)}). Such runs barely change the weights, and the "
        "λ search then likely keeps λ = 0 (nothing forgotten). "
        f"Lower {warmup_key([point for point, _ in short])} to at most {shortest - 1} "
        f"(about {max(1, shortest // 10)}, a tenth of the shortest run, is usual) or raise the epochs."
    )


# ---------------------------------------------------------------------------------------------
# Helpers.


def canonical_json(values: Mapping[str, Any]) -> str:
    """Key-sorted, whitespace-free JSON: equal hyperparameters always give equal text."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def as_grid_points(grid: GridSpec | Sequence[GridPoint] | Sequence[Mapping[str, Any]]) -> list[GridPoint]:
    """Accept a spec, a list of points, or a list of `GridPoint.to_dict()` dicts; ids must be unique."""
    if isinstance(grid, GridSpec):
        return grid.expand()
    points = [p if isinstance(p, GridPoint) else GridPoint.from_dict(p) for p in grid]
    if not points:
        raise ConfigError("The grid is empty; give at least one grid point.")
    ids = [p.id for p in points]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ConfigError(f"Grid point id(s) {repeated} appear more than once; each run must differ.")
    return points


def _check_axes_type(axes: Any) -> None:
    if not isinstance(axes, Mapping):
        raise ConfigError(f"GridSpec.axes must be a mapping of name -> list of values, got {axes!r}.")


def _axis_values(name: str, values: Any) -> list[Any]:
    if name not in HYPERPARAMETER_NAMES:
        raise ConfigError(
            f"GridSpec axis {name!r} is not a hyperparameter; known names: {', '.join(HYPERPARAMETER_NAMES)}."
        )
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"GridSpec axis {name!r} must be a list of values, got {values!r}.")
    values = list(values)
    if not values:
        raise ConfigError(f"GridSpec axis {name!r} has no values.")
    canonical = [canonical_json({"v": v}) for v in values]
    if len(set(canonical)) != len(canonical):
        raise ConfigError(f"GridSpec axis {name!r} repeats a value: {values!r}.")
    return values


def _reject_unknown_keys(owner: str, values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - set(HYPERPARAMETER_NAMES))
    if unknown:
        raise ConfigError(
            f"{owner}: unknown hyperparameter(s) {unknown}; known names: {', '.join(HYPERPARAMETER_NAMES)}."
        )


def _number(name: str, value: Any, minimum: float, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HyperparameterError(
            name, f"TrainingHyperparameters.{name} must be a finite number, got {value!r}."
        )
    if value < minimum or (strict and value == minimum):
        bound = ">" if strict else "≥"
        raise HyperparameterError(
            name, f"TrainingHyperparameters.{name}={value!r} must be {bound} {minimum}."
        )
    return float(value)


def _integer(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    ):
        raise HyperparameterError(name, f"TrainingHyperparameters.{name} must be an integer, got {value!r}.")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and ≤ {maximum}" if maximum is not None else ""
        raise HyperparameterError(name, f"TrainingHyperparameters.{name}={value} must be ≥ {minimum}{upper}.")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise HyperparameterError(
            name, f"TrainingHyperparameters.{name}={value!r} is not one of {', '.join(choices)}."
        )


def _format_value(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "", text.replace("e-0", "e-").replace("e+0", "e")) or "x"
