"""`ModelConfig`: which backbone to build or load, and which part of it is fine-tuned."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from .registry import CLASSIFIER_REGISTRY

# A small, generic subset of the CLIP paper's ImageNet prompt ensemble: enough to average out
# the wording of a single prompt without making the head slow to build.
DEFAULT_PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a blurry photo of a {}.",
    "a close-up photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
)

WEIGHT_DTYPES = {"float32", "bfloat16", "float16", "auto"}


@dataclass
class ModelConfig:
    """What to build: architecture, weights source and the fine-tuning switches of the paper."""

    architecture: str = field(
        default="clip",
        metadata={"help": "Registered architecture name: 'clip' (zero-shot head), 'vit' or 'resnet'."},
    )
    name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local folder of pretrained weights; None builds a tiny model from config."
        },
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Input side in pixels. Tiny models: default 16; real models: taken from their processor."
        },
    )
    tiny: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Overrides of the tiny config (hidden_size, num_hidden_layers, ...); name_or_path=None only."
        },
    )
    prompt_templates: list[str] = field(
        default_factory=lambda: list(DEFAULT_PROMPT_TEMPLATES),
        metadata={"help": "CLIP zero-shot prompts; '{}' is replaced by the class name."},
    )
    freeze_attention: bool | None = field(
        default=None,
        metadata={
            "help": "CLIP: freeze the visual attention projections (q/k/v/out), as the authors' code does. "
            "None: True for CLIP (the authors' trained set), False otherwise."
        },
    )
    train_projection: bool | None = field(
        default=None,
        metadata={
            "help": "CLIP: also fine-tune visual_projection (the image embedding projection), as the "
            "authors' code does. None: True for CLIP, False otherwise."
        },
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow custom code from the Hub repo. Off unless you trust the repo."},
    )
    revision: str | None = field(
        default=None, metadata={"help": "Hub revision (branch, tag or commit) when name_or_path is a Hub id."}
    )
    dtype: str = field(
        default="float32",
        metadata={
            "help": "Weight dtype: float32 (exact task vectors, stable fine-tuning), bfloat16, float16, "
            "or auto (whatever the checkpoint stores)."
        },
    )
    init_seed: int = field(
        default=0, metadata={"help": "Seed of the random initialisation of tiny models (reproducible θ₀)."}
    )
    replace_head: bool = field(
        default=False,
        metadata={
            "help": "ViT: replace a pretrained head whose labels differ from the data's classes with a new, "
            "randomly initialised one (only sensible when θ₀ is then trained here, original.train: true)."
        },
    )

    def __post_init__(self) -> None:
        if self.architecture not in CLASSIFIER_REGISTRY:
            raise ConfigError(
                f"ModelConfig.architecture={self.architecture!r} is not registered; "
                f"choose one of {sorted(CLASSIFIER_REGISTRY)}."
            )
        if self.name_or_path is not None and (
            not isinstance(self.name_or_path, str) or not self.name_or_path
        ):
            raise ConfigError(
                f"ModelConfig.name_or_path must be a non-empty string or None, got {self.name_or_path!r}."
            )
        if self.image_size is not None and (
            isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size <= 0
        ):
            raise ConfigError(
                f"ModelConfig.image_size must be a positive integer or None, got {self.image_size!r}."
            )
        if not isinstance(self.tiny, dict):
            raise ConfigError(
                f"ModelConfig.tiny must be a dict of config overrides, got {type(self.tiny).__name__}."
            )
        if self.tiny and self.name_or_path is not None:
            raise ConfigError(
                f"ModelConfig.tiny={self.tiny} only applies to tiny models (name_or_path=None), "
                f"but name_or_path={self.name_or_path!r}."
            )
        if isinstance(self.prompt_templates, str) or not self.prompt_templates:
            raise ConfigError(
                "ModelConfig.prompt_templates must be a non-empty list of strings containing '{}'."
            )
        self.prompt_templates = list(self.prompt_templates)
        for template in self.prompt_templates:
            if not isinstance(template, str) or template.count("{}") != 1:
                raise ConfigError(
                    f"Prompt template {template!r} must be a string with exactly one '{{}}' for the class name."
                )
        for flag in ("freeze_attention", "train_projection"):
            if getattr(self, flag) is None:  # CLIP fine-tunes the authors' trained set unless told
                # otherwise; it also unlearned far more reliably than the whole vision tower on the
                # digits sweep (docs/scenarios.md)
                setattr(self, flag, self.architecture == "clip")
        for flag in ("freeze_attention", "train_projection", "trust_remote_code", "replace_head"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"ModelConfig.{flag} must be True or False, got {getattr(self, flag)!r}.")
        if self.replace_head and self.architecture == "clip":
            raise ConfigError(
                "ModelConfig.replace_head applies to ViT and ResNet only: a CLIP's zero-shot head is built from the class names."
            )
        if self.dtype not in WEIGHT_DTYPES:
            raise ConfigError(f"ModelConfig.dtype={self.dtype!r} is not one of {sorted(WEIGHT_DTYPES)}.")
        if isinstance(self.init_seed, bool) or not isinstance(self.init_seed, int):
            raise ConfigError(f"ModelConfig.init_seed must be an integer, got {self.init_seed!r}.")

    @property
    def torch_dtype(self) -> torch.dtype | str:
        """The `dtype` argument for transformers' `from_pretrained` ("auto" passes through)."""
        return self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a plain dict (recipe YAML, saved JSON), naming any unknown key."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown ModelConfig key(s) {unknown}; known keys: {sorted(known)}.")
        return cls(**values)
