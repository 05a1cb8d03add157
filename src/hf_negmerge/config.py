"""`NegMergeConfig`: every choice that turns a pool of fine-tuned runs into an unlearned model.

Saved as JSON next to the artifacts it produced (like peft's adapter configs), so a merged
vector or an unlearned model always says how it was made.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .lambda_search import FALLBACKS, default_lambda_grid

CONFIG_NAME = "negmerge_config.json"

ACCUMULATION_DTYPES = ("float32", "float64")
MAJORITY_SIGN_METHODS = ("total", "frequency")
TIES_VARIANTS = ("original", "peft")


@dataclass
class NegMergeConfig:
    """How task vectors are merged and how the negation coefficient λ is chosen.

    The defaults reproduce the paper: unanimous sign consensus, plain mean on kept elements,
    λ ∈ {0, 0.05, …, 1} chosen as the lowest forget accuracy whose retain accuracy stays
    ≥ 0.95 × the original model's.
    """

    method: str = field(
        default="negmerge",
        metadata={"help": "Merge method: negmerge, task_arithmetic, uniform, ties or magmax."},
    )
    consensus_fraction: float = field(
        default=1.0,
        metadata={
            "help": "negmerge only. 1.0 keeps an element only when all n runs share its non-zero sign "
            "(the paper). EXTENSION, not in the paper: a value f in (0.5, 1) keeps elements where at "
            "least ceil(f·n) runs share the sign, still averaging over all n runs.",
            "methods": ("negmerge",),
        },
    )
    ties_variant: str = field(
        default="original",
        metadata={
            "help": "ties only. 'original' (the paper's baseline, the TIES authors' code): each run "
            "trimmed over its whole flattened task vector (kthvalue threshold, ties at it kept), sign "
            "of the summed trimmed entries with exact-zero sums taking the model-wide majority sign, "
            "mean of the entries of that sign. 'peft': peft.utils.merge_utils.ties per tensor.",
            "methods": ("ties",),
            "choices": TIES_VARIANTS,
        },
    )
    density: float = field(
        default=0.2,
        metadata={
            "help": "ties only: fraction of each run's largest-magnitude entries kept (over the whole "
            "model with ties_variant='original', per tensor with 'peft'); 1.0 keeps everything.",
            "methods": ("ties",),
        },
    )
    ties_total_elements: int | None = field(
        default=None,
        metadata={
            "help": "ties, original variant: d of the whole-model trim. None: the entries of the tensors "
            "taking part. A larger d counts the rest as zero entries, as the authors' flattened image "
            "encoder holds frozen tensors (τ = 0) that a merge of the trained tensors leaves out.",
            "methods": ("ties",),
        },
    )
    majority_sign_method: str = field(
        default="total",
        metadata={
            "help": "ties only: elect the sign of the sum ('total') or of the sign count ('frequency', "
            "peft variant only).",
            "methods": ("ties",),
            "choices": MAJORITY_SIGN_METHODS,
        },
    )
    include: list[str] | None = field(
        default=None,
        metadata={"help": "fnmatch patterns of tensor names that take part (None: every float tensor)."},
    )
    exclude: list[str] | None = field(
        default=None,
        metadata={"help": "fnmatch patterns of tensor names left out (applied after `include`)."},
    )
    accumulation_dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype of running sums: float32, or float64 for bit-stable references.",
            "choices": ACCUMULATION_DTYPES,
        },
    )
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
    scale: float | None = field(
        default=None,
        metadata={"help": "A fixed λ; skips the search when set."},
    )

    def __post_init__(self) -> None:
        """Check every field's type and range, naming the field (wrong types included)."""
        from .merging import available_methods  # late import: merging imports this module

        _check_choice("method", self.method, tuple(available_methods()), "merge method")
        self.consensus_fraction = _number("consensus_fraction", self.consensus_fraction)
        if not (0.5 < self.consensus_fraction <= 1.0):
            raise ConfigError(
                f"NegMergeConfig.consensus_fraction={self.consensus_fraction} must be in (0.5, 1]; "
                "1.0 is the paper's unanimous rule."
            )
        self.density = _number("density", self.density)
        if not (0.0 < self.density <= 1.0):
            raise ConfigError(f"NegMergeConfig.density={self.density} must be in (0, 1].")
        _check_choice("majority_sign_method", self.majority_sign_method, MAJORITY_SIGN_METHODS)
        _check_choice("ties_variant", self.ties_variant, TIES_VARIANTS)
        if self.ties_total_elements is not None and (
            isinstance(self.ties_total_elements, bool)
            or not isinstance(self.ties_total_elements, int)
            or self.ties_total_elements < 1
        ):
            raise ConfigError(
                f"NegMergeConfig.ties_total_elements={self.ties_total_elements!r} must be a positive "
                "integer (or None)."
            )
        if self.method == "ties" and self.ties_variant == "original" and self.majority_sign_method != "total":
            raise ConfigError(
                f"NegMergeConfig.majority_sign_method={self.majority_sign_method!r} needs "
                "ties_variant='peft'; the original TIES elects the sign of the total ('total')."
            )
        _check_choice("accumulation_dtype", self.accumulation_dtype, ACCUMULATION_DTYPES)
        _check_choice("fallback", self.fallback, tuple(FALLBACKS))
        for name in ("include", "exclude"):
            patterns = getattr(self, name)
            if patterns is not None:
                if isinstance(patterns, str):
                    patterns = [patterns]
                if not isinstance(patterns, list | tuple) or not all(
                    isinstance(p, str) and p for p in patterns
                ):
                    raise ConfigError(
                        f"NegMergeConfig.{name} must be a list of non-empty strings, got {patterns!r}."
                    )
                setattr(self, name, list(patterns))
        if isinstance(self.lambda_grid, str) or not isinstance(self.lambda_grid, list | tuple):
            raise ConfigError(
                f"NegMergeConfig.lambda_grid must be a list of numbers λ ≥ 0, got {self.lambda_grid!r}."
            )
        if not self.lambda_grid:
            raise ConfigError("NegMergeConfig.lambda_grid is empty; give at least one λ.")
        self.lambda_grid = [_number("lambda_grid", value) for value in self.lambda_grid]
        if not all(math.isfinite(value) and value >= 0 for value in self.lambda_grid):
            raise ConfigError(f"NegMergeConfig.lambda_grid must hold finite λ ≥ 0, got {self.lambda_grid}.")
        self.retain_ratio = _number("retain_ratio", self.retain_ratio)
        if not (0.0 < self.retain_ratio <= 1.0):
            raise ConfigError(f"NegMergeConfig.retain_ratio={self.retain_ratio} must be in (0, 1].")
        if self.scale is not None:
            from .unlearn import check_scale

            self.scale = check_scale(self.scale, "NegMergeConfig.scale")

    @property
    def is_unanimous(self) -> bool:
        return self.consensus_fraction == 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NegMergeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown NegMergeConfig key(s) {unknown}; known keys are {sorted(known)}.")
        return cls(**values)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `negmerge_config.json` into `directory` (atomically)."""
        from .checkpoints import atomic_write_text

        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.to_json_string())
        return path

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, revision: str | None = None, token: str | bool | None = None
    ) -> NegMergeConfig:
        """Load from a folder (or a `negmerge_config.json` file), or from a Hub repo id."""
        path = Path(name_or_path)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            if Path(name_or_path).exists():
                raise ConfigError(f"No {CONFIG_NAME} in {name_or_path}.")
            from .hub.download import download_file

            path = download_file(str(name_or_path), CONFIG_NAME, revision=revision, token=token)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path} is not valid JSON: {error}") from error
        except OSError as error:
            raise ConfigError(f"{path} cannot be read ({error.strerror or error}).") from error
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a JSON object, got {type(values).__name__}.")
        try:
            return cls.from_dict(values)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from error


def _check_choice(name: str, value: object, choices: tuple[str, ...], what: str = "choice") -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"NegMergeConfig.{name}={value!r} is not a known {what}; choose one of {', '.join(choices)}."
        )


def _number(name: str, value: object) -> float:
    """`value` as a float, or a ConfigError naming the field (bools and strings are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"NegMergeConfig.{name} must be a number, got {type(value).__name__} {value!r}.")
    return float(value)
