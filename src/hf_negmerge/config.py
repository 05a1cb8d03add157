"""The configs of an unlearning merge: `MergeConfig` (how τ is built) and `NegMergeConfig`.

- `MergeConfig`: the merge method and its own parameters, include/exclude, the accumulation
  dtype — everything that changes the merged task vector τ. A resumed grid is keyed by it.
- `LambdaSearchConfig` (in `lambda_search`): the λ grid, retain ratio, fallback and a fixed λ —
  how λ is chosen once τ exists. Changing it never retrains or re-merges.
- `NegMergeConfig`: the name users know (a recipe's `merge:` section, `negmerge_config.json`):
  both, as one flat dataclass that IS a `MergeConfig` and a `LambdaSearchConfig`.

Saved as JSON next to the artifacts it produced (like peft's adapter configs), so a merged
vector or an unlearned model always says how it was made. `save_pretrained`, `from_pretrained`
and `push_to_hub` follow huggingface_hub's `ModelHubMixin` (whose `push_to_hub` saves into a
temporary folder with `save_pretrained` and uploads it).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

from huggingface_hub import ModelHubMixin

from .errors import ConfigError
from .json_files import read_json_file
from .lambda_search import LambdaSearchConfig, default_lambda_grid

__all__ = [
    "CONFIG_NAME",
    "MERGE_METHOD_NAMES",
    "LambdaSearchConfig",
    "MergeConfig",
    "NegMergeConfig",
    "default_lambda_grid",
]

CONFIG_NAME = "negmerge_config.json"

ACCUMULATION_DTYPES = ("float32", "float64")
MAJORITY_SIGN_METHODS = ("total", "frequency")
TIES_VARIANTS = ("original", "peft")
#: The `method` values a config accepts, in the merging registry's order. The implementations
#: live in `hf_negmerge.merging` (which imports torch); `register_merge_method` adds a new name
#: here, so a config is validated without importing the merging code (and without a cycle).
MERGE_METHOD_NAMES: list[str] = ["task_arithmetic", "uniform", "ties", "magmax", "negmerge"]


class _ConfigFile(ModelHubMixin):
    """JSON persistence shared by the configs: one `negmerge_config.json`, written atomically."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown {cls.__name__} key(s) {unknown}; known keys are {sorted(known)}.")
        return cls(**values)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | Path,
        *,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        **push_to_hub_kwargs: Any,
    ) -> Path:
        """Write `negmerge_config.json` into `save_directory` (atomically); optionally push it.

        `config`/`model_card_kwargs`, which `ModelHubMixin.push_to_hub` passes, are ignored: the
        JSON file is the whole config and no model card is written for it.
        """
        push_to_hub_kwargs.pop("config", None)
        push_to_hub_kwargs.pop("model_card_kwargs", None)
        from .checkpoints import atomic_write_text  # torch: a config alone (e.g. for --help) stays light

        path = Path(save_directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.to_json_string())
        if push_to_hub:
            self.push_to_hub(repo_id or Path(save_directory).name, **push_to_hub_kwargs)
        return path

    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool = False,
        token: str | bool | None = None,
        revision: str | None = None,
        **_: Any,
    ) -> str:
        """Upload `negmerge_config.json` alone (like peft's config push); returns the commit URL.

        Goes through hf-negmerge's upload (bounded waits, retries, branch creation), not the
        mixin's plain one. `from_pretrained(repo_id)` loads it back.
        """
        from .hub._upload import push_saved

        return push_saved(
            self.save_pretrained,
            repo_id,
            private=private,
            revision=revision,
            token=token,
            commit_message=commit_message or f"Upload {CONFIG_NAME}",
        )

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, name_or_path: str | Path, revision: str | None = None, token: str | bool | None = None, **_: Any
    ) -> Any:
        """Load from a folder (or a `negmerge_config.json` file), or from a Hub repo id.

        A `MergeConfig` read from a full `NegMergeConfig` file leaves out the λ-search keys.
        """
        path = Path(name_or_path)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            if Path(name_or_path).exists():
                raise ConfigError(f"No {CONFIG_NAME} in {name_or_path}.")
            from .hub.download import download_file

            path = download_file(str(name_or_path), CONFIG_NAME, revision=revision, token=token)
        values = read_json_file(path)
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a JSON object, got {type(values).__name__}.")
        own = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        selection = {f.name for f in dataclasses.fields(LambdaSearchConfig)} - own
        try:
            return cls.from_dict({key: value for key, value in values.items() if key not in selection})
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from error


@dataclass
class MergeConfig(_ConfigFile):
    """How task vectors are merged into τ: what a grid's accumulated merge depends on.

    The defaults reproduce the paper: unanimous sign consensus, plain mean on kept elements.
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

    def __post_init__(self) -> None:
        """Check every merge field's type and range, naming it (wrong types included)."""
        owner = type(self).__name__
        _check_choice(owner, "method", self.method, tuple(MERGE_METHOD_NAMES), "merge method")
        self.consensus_fraction = _number(owner, "consensus_fraction", self.consensus_fraction)
        if not (0.5 < self.consensus_fraction <= 1.0):
            raise ConfigError(
                f"{owner}.consensus_fraction={self.consensus_fraction} must be in (0.5, 1]; "
                "1.0 is the paper's unanimous rule."
            )
        self.density = _number(owner, "density", self.density)
        if not (0.0 < self.density <= 1.0):
            raise ConfigError(f"{owner}.density={self.density} must be in (0, 1].")
        _check_choice(owner, "majority_sign_method", self.majority_sign_method, MAJORITY_SIGN_METHODS)
        _check_choice(owner, "ties_variant", self.ties_variant, TIES_VARIANTS)
        if self.ties_total_elements is not None and (
            isinstance(self.ties_total_elements, bool)
            or not isinstance(self.ties_total_elements, int)
            or self.ties_total_elements < 1
        ):
            raise ConfigError(
                f"{owner}.ties_total_elements={self.ties_total_elements!r} must be a positive "
                "integer (or None)."
            )
        if self.method == "ties" and self.ties_variant == "original" and self.majority_sign_method != "total":
            raise ConfigError(
                f"{owner}.majority_sign_method={self.majority_sign_method!r} needs "
                "ties_variant='peft'; the original TIES elects the sign of the total ('total')."
            )
        _check_choice(owner, "accumulation_dtype", self.accumulation_dtype, ACCUMULATION_DTYPES)
        for name in ("include", "exclude"):
            patterns = getattr(self, name)
            if patterns is not None:
                if isinstance(patterns, str):
                    patterns = [patterns]
                if not isinstance(patterns, list | tuple) or not all(
                    isinstance(p, str) and p for p in patterns
                ):
                    raise ConfigError(
                        f"{owner}.{name} must be a list of non-empty strings, got {patterns!r}."
                    )
                setattr(self, name, list(patterns))

    @property
    def is_unanimous(self) -> bool:
        return self.consensus_fraction == 1.0

    def merge_config(self) -> MergeConfig:
        """The merge part alone (a plain `MergeConfig`, also from a `NegMergeConfig`)."""
        return MergeConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MergeConfig)})

    def merge_differences(self, other: MergeConfig) -> list[str]:
        """'field: old → new' for each merge field that differs (λ-search fields never count)."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} → {getattr(other, f.name)!r}"
            for f in dataclasses.fields(MergeConfig)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


@dataclass
class NegMergeConfig(LambdaSearchConfig, MergeConfig):
    """How task vectors are merged and how the negation coefficient λ is chosen (both, flat).

    The defaults reproduce the paper: unanimous sign consensus, plain mean on kept elements,
    λ ∈ {0, 0.05, …, 1} chosen as the lowest forget accuracy whose retain accuracy stays
    ≥ 0.95 × the original model's. Fields tagged `lambda_search` in their metadata (and `scale`)
    belong to `LambdaSearchConfig`; the rest to `MergeConfig`.
    """

    def __post_init__(self) -> None:
        MergeConfig.__post_init__(self)
        LambdaSearchConfig.__post_init__(self)

    def lambda_search_config(self) -> LambdaSearchConfig:
        """The λ-search part alone."""
        return LambdaSearchConfig(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(LambdaSearchConfig)}
        )


def _check_choice(
    owner: str, name: str, value: object, choices: tuple[str, ...], what: str = "choice"
) -> None:
    if not isinstance(value, str):
        raise ConfigError(
            f"{owner}.{name} must be a string, one of {', '.join(choices)}; "
            f"got {type(value).__name__} {value!r}."
        )
    if value not in choices:
        raise ConfigError(
            f"{owner}.{name}={value!r} is not a known {what}; choose one of {', '.join(choices)}."
        )


def _number(owner: str, name: str, value: object) -> float:
    """`value` as a float, or a ConfigError naming the field (bools and strings are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{owner}.{name} must be a number, got {type(value).__name__} {value!r}.")
    return float(value)
