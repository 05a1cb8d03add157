"""Unlearning recipes: one YAML file (plus `key=value` overrides) describing a whole run.

A recipe has one section per stage (`data`, `model`, `original`, `grid`, `merge`,
`comparison`, `evaluation`) and is validated completely — unknown keys and wrong types by
pydantic (recipe_schema.py), ranges and cross-field rules by the section dataclasses, each error
named by its dotted path — before anything is downloaded or trained.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import NegMergeConfig
from .data import DataConfig
from .errors import ConfigError
from .merging import available_methods
from .models import ModelConfig
from .recipe_files import BUILTIN_RECIPES_DIR, DEFAULT_RECIPE, available_recipes, load_yaml, yaml_problem
from .recipe_schema import MappingSchema
from .training.grid import GridSpec, HyperparameterError


@dataclass
class OriginalModelConfig:
    """θ₀: an existing classifier folder, or (tiny/offline models) one trained here and cached."""

    path: str | None = field(
        default=None,
        metadata={
            "help": "A folder written by ImageClassifier.save_pretrained; None: use `model` as is or train it."
        },
    )
    train: bool = field(
        default=False,
        metadata={
            "help": "Train θ₀ on the full training split first (the built-in default); cached by settings."
        },
    )
    epochs: int | None = field(
        default=None, metadata={"help": "Training epochs for θ₀ (None: architecture default)."}
    )
    learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate for θ₀ (None: default)."}
    )
    batch_size: int = field(default=128, metadata={"help": "Batch size for θ₀ training."})
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where trained θ₀ folders are cached (None: ~/.cache/hf_negmerge/originals)."},
    )

    def __post_init__(self) -> None:
        _optional_text("original.path", self.path)
        _optional_text("original.cache_dir", self.cache_dir)
        _flag("original.train", self.train)
        if self.epochs is not None:
            _positive_int("original.epochs", self.epochs)
        if self.learning_rate is not None:
            _positive_number("original.learning_rate", self.learning_rate)
        _positive_int("original.batch_size", self.batch_size)
        if self.path is not None and self.train:
            raise ConfigError(
                f"original.path={self.path!r} and original.train=true both say where θ₀ comes from; "
                "keep one (the path is used as is, train builds θ₀ here)."
            )


@dataclass
class EvaluationConfig:
    batch_size: int = field(default=256, metadata={"help": "Images per evaluation forward pass."})
    mia: bool | None = field(
        default=None, metadata={"help": "Compute MIA-Efficacy (None: only for the 'random' scenario)."}
    )
    retrain: bool = field(
        default=False,
        metadata={
            "help": "Also train a model from scratch without the forget set and report the Avg. Gap to it."
        },
    )
    retrain_epochs: int | None = field(default=None, metadata={"help": "Epochs of the retrained reference."})
    per_run_task_arithmetic: bool = field(
        default=True,
        metadata={"help": "Evaluate task arithmetic for every single run (and report the best)."},
    )
    log_with: list[str] = field(
        default_factory=list,
        metadata={
            "help": "accelerate trackers that also receive the training logs and λ curves "
            "(e.g. [tensorboard]); the JSONL logs are always written."
        },
    )

    def __post_init__(self) -> None:
        _positive_int("evaluation.batch_size", self.batch_size)
        if self.retrain_epochs is not None:
            _positive_int("evaluation.retrain_epochs", self.retrain_epochs)
        if self.mia is not None:
            _flag("evaluation.mia", self.mia)
        _flag("evaluation.retrain", self.retrain)
        _flag("evaluation.per_run_task_arithmetic", self.per_run_task_arithmetic)
        if not isinstance(self.log_with, list) or not all(isinstance(name, str) for name in self.log_with):
            raise ConfigError(
                f"evaluation.log_with must be a tracker name or a list of them, got {self.log_with!r}."
            )


@dataclass
class UnlearnRecipe:
    """Everything one `hf-negmerge unlearn` run does."""

    output_dir: str = field(default="negmerge-output", metadata={"help": "Where results are written."})
    seed: int = field(default=0, metadata={"help": "Seed for θ₀ training and the retrained reference."})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    original: OriginalModelConfig = field(default_factory=OriginalModelConfig)
    grid: GridSpec = field(default_factory=GridSpec)
    merge: NegMergeConfig = field(default_factory=NegMergeConfig)
    comparison: list[str] = field(
        default_factory=lambda: ["task_arithmetic", "uniform", "ties", "magmax"],
        metadata={"help": "Baselines evaluated from the same grid, each with its own λ."},
    )
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    keep_checkpoints: bool = field(default=False, metadata={"help": "Keep every fine-tuned run's weights."})

    def __post_init__(self) -> None:
        if not isinstance(self.output_dir, str | Path) or not str(self.output_dir).strip():
            raise ConfigError(
                f"output_dir must name a folder, got {self.output_dir!r} (an empty name would write "
                "into the current directory)."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}.")
        _flag("keep_checkpoints", self.keep_checkpoints)
        if isinstance(self.comparison, str) or not isinstance(self.comparison, list | tuple):
            raise ConfigError(f"comparison must be a list of method names, got {self.comparison!r}.")
        self.comparison = list(self.comparison)
        unknown = [method for method in self.comparison if method not in available_methods()]
        if unknown:
            raise ConfigError(f"comparison: unknown method(s) {unknown}; choose from {available_methods()}.")
        repeated = sorted({method for method in self.comparison if self.comparison.count(method) > 1})
        if repeated:
            raise ConfigError(f"comparison lists {repeated} more than once.")
        sections = {
            "data": DataConfig,
            "model": ModelConfig,
            "original": OriginalModelConfig,
            "grid": GridSpec,
            "merge": NegMergeConfig,
            "evaluation": EvaluationConfig,
        }
        for name, cls in sections.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(
                    f"UnlearnRecipe.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}."
                )

    @property
    def mia_enabled(self) -> bool:
        return self.evaluation.mia if self.evaluation.mia is not None else self.data.scenario == "random"

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": self.output_dir,
            "seed": self.seed,
            "data": self.data.to_dict(),
            "model": self.model.to_dict(),
            "original": dataclasses.asdict(self.original),
            "grid": self.grid.to_dict(),
            "merge": self.merge.to_dict(),
            "comparison": list(self.comparison),
            "evaluation": dataclasses.asdict(self.evaluation),
            "keep_checkpoints": self.keep_checkpoints,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}.")


def _positive_number(key: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{key} must be a finite number > 0, got {value!r}.")


def _flag(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}.")


def _optional_text(key: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{key} must be a non-empty string or null, got {value!r}.")


# section name -> how to build it from its mapping (already checked by _SCHEMA)
_SECTIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "data": lambda values: DataConfig(**values),
    "model": lambda values: ModelConfig(**values),
    "original": lambda values: OriginalModelConfig(**values),
    "grid": GridSpec.from_dict,  # a file format of its own: base + axes or points, or a preset
    "merge": lambda values: NegMergeConfig(**values),
    "evaluation": lambda values: EvaluationConfig(**values),
}

# Keys and types, checked by pydantic against the dataclasses' annotations; `grid` is checked by
# GridSpec.from_dict, whose errors name grid.base.…, grid.axes.… and grid.points[i].….
_SCHEMA = MappingSchema(UnlearnRecipe, replace={"grid": dict[str, Any] | None})


def _build_section(name: str, values: dict[str, Any]) -> Any:
    """The section's dataclass; its range and cross-field errors prefixed by the section."""
    try:
        return _SECTIONS[name](values)
    except HyperparameterError as error:
        raise ConfigError(f"Recipe key '{name}.{error.where}.{error.name}': {error}") from error
    except ConfigError as error:
        raise ConfigError(f"Recipe section '{name}': {error}") from error


def recipe_from_dict(values: dict[str, Any]) -> UnlearnRecipe:
    """Build and validate a recipe; every error names the dotted key it is about."""
    if not isinstance(values, dict):
        raise ConfigError(f"A recipe must be a mapping of sections, got {type(values).__name__}.")
    _SCHEMA.check(values)
    kwargs = {
        name: _build_section(name, value or {}) if name in _SECTIONS else value
        for name, value in values.items()
    }
    return UnlearnRecipe(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`grid.base.epochs=3` -> (["grid", "base", "epochs"], 3); values are parsed as YAML."""
    key, separator, raw = text.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"Override {text!r} must look like key.subkey=value.")
    try:
        value = load_yaml(raw, "recipe") if raw.strip() else None
    except ConfigError as error:
        raise ConfigError(f"Override {text!r}: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(
            f"Override {text!r}: the value is not valid YAML ({yaml_problem(error)})."
        ) from error
    return key.strip().split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `dotted.key=value` in `values` (in place), creating sections as needed."""
    for override in overrides:
        path, value = parse_override(override)
        node = values
        for part in path[:-1]:
            child = node.get(part)
            if child is None:  # an absent section, or one left empty in the YAML (`data:`)
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"Override {override!r}: '{part}' is not a section.")
            node = child
        node[path[-1]] = value
    return values


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of a packaged recipe (e.g. 'default', 'clip-vit-b32/cars')."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = BUILTIN_RECIPES_DIR / f"{name_or_path}.yaml"
    if packaged.is_file():
        return packaged
    raise ConfigError(
        f"Recipe {name_or_path} is neither a file nor a packaged recipe; packaged: {', '.join(available_recipes())}."
    )


def read_recipe_file(path: Path) -> dict[str, Any]:
    """The recipe file's sections; ConfigError naming the file for anything but a YAML mapping.

    An empty file is an error rather than a silent run of the dataclass defaults (a tiny
    CLIP on random forgetting, which no packaged recipe describes).
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}); "
            "save the recipe as UTF-8."
        ) from error
    except OSError as error:
        raise ConfigError(f"Cannot read recipe {path}: {error.strerror or error}.") from error
    try:
        values = load_yaml(text, "recipe")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(error)}") from error
    if values is None:
        raise ConfigError(
            f"{path} is empty: a recipe needs at least one section (data:, model:, grid:, ...). "
            f"Start from a packaged recipe instead (e.g. `--config {DEFAULT_RECIPE}` plus key=value "
            "overrides, or a copy of its YAML from src/hf_negmerge/recipes/)."
        )
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}: a recipe must be a mapping of sections (data:, model:, grid:, ...), "
            f"got a YAML {type(values).__name__}."
        )
    return values


def _validation_error(values: dict[str, Any], overrides: list[str]) -> str | None:
    """The message recipe_from_dict gives for the file plus these overrides; None: valid."""
    try:
        recipe_from_dict(apply_overrides(copy.deepcopy(values), overrides))
    except ConfigError as error:
        return str(error)
    return None


def _error_source(path: Path, values: dict[str, Any], overrides: list[str], message: str) -> str:
    """Who an invalid recipe's error is about: the file, or the override that brought the error in.

    The source is the last override without which the error reads differently; the file itself
    when the error reads the same without any override.
    """
    for count in reversed(range(len(overrides))):
        if _validation_error(values, overrides[:count]) != message:
            return f"Override {overrides[count]!r} from the command line"
    return str(path)


def load_recipe(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> UnlearnRecipe:
    """Read a recipe (default: the built-in digits run), apply overrides, validate.

    An error names its source: the recipe file, or the `key=value` override it comes from.
    """
    path = resolve_recipe_path(name_or_path or DEFAULT_RECIPE)
    values = read_recipe_file(path)
    overrides = list(overrides or [])
    combined = apply_overrides(copy.deepcopy(values), overrides)  # override syntax errors name themselves
    try:
        return recipe_from_dict(combined)
    except ConfigError as error:
        raise ConfigError(f"{_error_source(path, values, overrides, str(error))}: {error}") from error
