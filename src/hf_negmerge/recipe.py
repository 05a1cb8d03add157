"""Unlearning recipes: one YAML file (plus `key=value` overrides) describing a whole run.

A recipe has one section per stage (`data`, `model`, `original`, `grid`, `merge`,
`comparison`, `evaluation`) and is validated completely — unknown keys and wrong types named
by their dotted path — before anything is downloaded or trained.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import NegMergeConfig
from .data import DataConfig
from .errors import ConfigError
from .merging import available_methods
from .models import ModelConfig
from .recipe_files import BUILTIN_RECIPES_DIR, DEFAULT_RECIPE, available_recipes
from .training.grid import GridSpec


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
        unknown = [method for method in self.comparison if method not in available_methods()]
        if unknown:
            raise ConfigError(f"comparison: unknown method(s) {unknown}; choose from {available_methods()}.")

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


# section name -> how to build it from a dict
_SECTIONS: dict[str, Any] = {
    "data": DataConfig,
    "model": ModelConfig,
    "original": OriginalModelConfig,
    "merge": NegMergeConfig,
    "evaluation": EvaluationConfig,
}


def _matches(value: Any, annotation: Any) -> bool:
    """A shallow type check of YAML values against a dataclass annotation."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_matches(entry, item) for entry in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return True


def _build_section(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"Recipe section '{where}' must be a mapping, got {type(values).__name__}.")
    hints = typing.get_type_hints(cls)
    known = {item.name for item in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"Unknown recipe key '{where}.{key}'; known keys of '{where}': {sorted(known)}."
            )
        if not _matches(value, hints[key]):
            raise ConfigError(
                f"Recipe key '{where}.{key}' has the wrong type: got {value!r} ({type(value).__name__}), "
                f"expected {hints[key]}."
            )
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(f"Recipe section '{where}': {error}") from error
    except TypeError as error:
        raise ConfigError(f"Recipe section '{where}': {error}") from error


def recipe_from_dict(values: dict[str, Any]) -> UnlearnRecipe:
    """Build and validate a recipe; every error names the dotted key it is about."""
    if not isinstance(values, dict):
        raise ConfigError(f"A recipe must be a mapping of sections, got {type(values).__name__}.")
    top = {item.name for item in dataclasses.fields(UnlearnRecipe)}
    unknown = sorted(set(values) - top)
    if unknown:
        raise ConfigError(f"Unknown recipe key(s) {unknown}; known top-level keys: {sorted(top)}.")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name in _SECTIONS:
            kwargs[name] = _build_section(_SECTIONS[name], value or {}, name)
        elif name == "grid":
            if not isinstance(value, dict):
                raise ConfigError(f"Recipe section 'grid' must be a mapping, got {type(value).__name__}.")
            try:
                kwargs[name] = GridSpec.from_dict(value)
            except ConfigError as error:
                raise ConfigError(f"Recipe section 'grid': {error}") from error
        else:
            hints = typing.get_type_hints(UnlearnRecipe)
            if not _matches(value, hints[name]):
                raise ConfigError(
                    f"Recipe key '{name}' has the wrong type: got {value!r}, expected {hints[name]}."
                )
            kwargs[name] = value
    return UnlearnRecipe(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`grid.base.epochs=3` -> (["grid", "base", "epochs"], 3); values are parsed as YAML."""
    key, separator, raw = text.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"Override {text!r} must look like key.subkey=value.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"Override {text!r}: the value is not valid YAML ({error}).") from error
    return key.strip().split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for override in overrides:
        path, value = parse_override(override)
        node = values
        for part in path[:-1]:
            child = node.setdefault(part, {})
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


def load_recipe(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> UnlearnRecipe:
    """Read a recipe (default: the built-in digits run), apply overrides, validate."""
    path = resolve_recipe_path(name_or_path or DEFAULT_RECIPE)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    try:
        return recipe_from_dict(apply_overrides(values, overrides or []))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
