"""`ImageClassifier`: the common face of every backbone, and the registry that builds them.

A classifier wraps the Hugging Face model that is fine-tuned, merged and saved (`.model`) with
what turns it into class scores (a zero-shot head or the model's own classifier) and the image
processor. Saving writes a plain transformers folder plus `hf_negmerge_classifier.json`, so the
folder loads both here and with transformers' own `from_pretrained`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import nn
from transformers import PreTrainedModel

from ..checkpoints import atomic_output_dir
from ..errors import CheckpointError, ConfigError
from ._source import WeightsSource, fetch_file, resolve_weights_source
from .config import ModelConfig
from .registry import CLASSIFIER_REGISTRY
from .registry import register_classifier as register_classifier  # re-exported: vit, clip register with it

CLASSIFIER_METADATA_FILE = "hf_negmerge_classifier.json"
METADATA_FORMAT_VERSION = 1
# Config fields that describe the saved classifier (the rest say where weights came from).
_SAVED_CONFIG_FIELDS = (
    "architecture",
    "image_size",
    "prompt_templates",
    "freeze_attention",
    "train_projection",
)


def image_processor_class(name: str) -> Any:
    """transformers' `name` image processor, or its PIL twin `<name>Pil` without torchvision.

    Importing the plain name without torchvision makes transformers warn that it falls back to
    the PIL class on every run; asking for that class directly gives the same processor (saved
    under the same image_processor_type) and no warning.
    """
    import transformers
    from transformers.utils import is_torchvision_available

    return getattr(transformers, name if is_torchvision_available() else f"{name}Pil")


def processor_image_size(image_processor: Any) -> int:
    """The square side the processor outputs (crop size when it centre-crops, else resize size)."""
    size = (
        image_processor.crop_size
        if getattr(image_processor, "do_center_crop", False)
        else image_processor.size
    )
    side = size.get("height") or size.get("shortest_edge")
    if not side:
        raise CheckpointError(
            f"Cannot tell the image size from {type(image_processor).__name__} size={size}."
        )
    return int(side)


def seeded_init(seed: int, build: Callable[[], PreTrainedModel]) -> PreTrainedModel:
    """Run `build` under a private RNG seeded with `seed`, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def validate_class_names(class_names: Sequence[str]) -> list[str]:
    if isinstance(class_names, str) or not class_names:
        raise ConfigError("class_names must be a non-empty list of strings.")
    names = list(class_names)
    bad = [name for name in names if not isinstance(name, str) or not name.strip()]
    if bad:
        raise ConfigError(f"class_names must be non-empty strings; got {bad!r}.")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"class_names contains duplicates: {duplicates}.")
    return names


class ImageClassifier(nn.Module, ABC):
    """forward(pixel_values: FloatTensor[B, C, H, W]) -> logits FloatTensor[B, num_classes]."""

    architecture: ClassVar[str]
    # Short module names LoRA adapts by default (transformers 5 names).
    default_lora_targets: ClassVar[tuple[str, ...]]
    # True when the model brings its own trained head whose labels the data is mapped onto by name
    # (ViT, ResNet); False when the head is made from the class names (CLIP's zero-shot head).
    has_trained_head: ClassVar[bool] = False

    def __init__(
        self, model: PreTrainedModel, image_processor: Any, class_names: Sequence[str], config: ModelConfig
    ) -> None:
        super().__init__()
        self.model = model
        self.image_processor = image_processor
        self.class_names = validate_class_names(class_names)
        self.config = config

    # ----- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def trainable_parameter_patterns(self) -> list[str]:
        """fnmatch globs over checkpoint key names of the fine-tuned tensors (the task-vector keys)."""

    @abstractmethod
    def _is_trainable(self, parameter_name: str) -> bool:
        """Whether a `self.model.named_parameters()` name is fine-tuned under this config."""

    @classmethod
    @abstractmethod
    def build_tiny(cls, config: ModelConfig, class_names: list[str]) -> ImageClassifier:
        """A small randomly initialised model built offline from config (seeded by config.init_seed)."""

    @classmethod
    @abstractmethod
    def load_pretrained(
        cls, source: WeightsSource, config: ModelConfig, class_names: list[str]
    ) -> ImageClassifier:
        """Load weights, processor (and tokenizer) from a resolved local folder or Hub id."""

    def _save_extra(self, directory: Path) -> None:
        """Hook for files beside the model and processor (CLIP: the tokenizer)."""

    # ----- shared behaviour --------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """pixel_values FloatTensor[B, 3, S, S] from PIL images (converted to RGB) via the image processor."""
        rgb = [image.convert("RGB") for image in images]
        return self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]

    def mark_trainable(self) -> None:
        """Set requires_grad on `self.model` so exactly the fine-tuned part receives gradients.

        With LoRA adapters attached only the adapter matrices train.
        """
        from peft import PeftModel

        lora_attached = isinstance(self.model, PeftModel)
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_("lora_" in name if lora_attached else self._is_trainable(name))

    def lora_target_modules(self, target_modules: Sequence[str] | str | None = None) -> list[str] | str:
        """Full names of the Linear modules LoRA should adapt, for peft's `target_modules`.

        `target_modules` are short names (`q_proj`); only Linear layers whose weight is fine-tuned
        under this config qualify, so CLIP's text tower and frozen attention are never adapted.
        The default (None) is every Linear of the blocks (`default_lora_targets`) that is
        fine-tuned here: adapting only q/v gave a merged vector too small to forget anything on
        the digits default (docs/scenarios.md). A string is a raw peft regex, passed through.
        """
        if isinstance(target_modules, str):
            return target_modules
        eligible = {
            name: name.rsplit(".", 1)[-1]
            for name, module in self.model.named_modules()
            if isinstance(module, nn.Linear) and self._is_trainable(f"{name}.weight")
        }
        available = sorted(set(eligible.values()))
        if target_modules is None:
            wanted = [short for short in self.default_lora_targets if short in available]
            missing = [] if wanted else list(self.default_lora_targets)
        else:
            wanted = list(target_modules)
            missing = [short for short in wanted if short not in available]
        if not wanted or missing:
            raise ConfigError(
                f"LoRA target module(s) {missing or wanted} are not fine-tuned Linear layers of this "
                f"{self.architecture} classifier (freeze_attention={self.config.freeze_attention}); "
                f"choose from {available}."
            )
        return [name for name, short in eligible.items() if short in wanted]

    def set_class_names(self, class_names: Sequence[str]) -> None:
        """Point the classifier at another label set. Only zero-shot heads can do this."""
        raise ConfigError(
            f"{type(self).__name__} has a trained classification head for {self.num_classes} classes; "
            "it cannot switch label sets. Build a new classifier with the new class_names instead."
        )

    def save_pretrained(self, directory: str | Path) -> None:
        """Write model + image processor (+ tokenizer) + hf_negmerge_classifier.json, atomically.

        The folder is replaced as a whole, so stale files of an earlier save never linger; an
        existing folder is replaced only if it is empty or an earlier save (holds the metadata file).
        """
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            raise ConfigError(
                "This classifier still carries unmerged LoRA adapters; call "
                "hf_negmerge.models.merge_lora(classifier) first so the saved weights are dense."
            )
        metadata = {
            "format_version": METADATA_FORMAT_VERSION,
            "class_names": self.class_names,
            **{name: getattr(self.config, name) for name in _SAVED_CONFIG_FIELDS},
        }
        with atomic_output_dir(directory, overwrite=True, owned_marker=CLASSIFIER_METADATA_FILE) as staging:
            self.model.save_pretrained(staging)
            self.image_processor.save_pretrained(staging)
            self._save_extra(staging)
            (staging / CLASSIFIER_METADATA_FILE).write_text(
                json.dumps(metadata, indent=2) + "\n", encoding="utf-8"
            )

    @classmethod
    def from_pretrained(cls, directory_or_id: str | Path, **overrides: Any) -> ImageClassifier:
        """Load a classifier saved by `save_pretrained` (local folder or Hub repo).

        `overrides` replace saved ModelConfig fields or `class_names` (e.g. a CLIP head for
        another label set); `trust_remote_code` and `revision` are accepted here too.
        """
        name = str(directory_or_id)
        source = resolve_weights_source(name, overrides.get("revision"))
        metadata_path = fetch_file(source, CLASSIFIER_METADATA_FILE)
        if metadata_path is None:
            raise CheckpointError(
                f"{name!r} has no {CLASSIFIER_METADATA_FILE}, so it was not saved by hf-negmerge. To start from "
                "plain pretrained weights use build_classifier(ModelConfig(name_or_path=...), class_names)."
            )
        try:
            metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise CheckpointError(f"Cannot read {metadata_path}: {error}.") from error
        if metadata.get("format_version") != METADATA_FORMAT_VERSION:
            raise CheckpointError(
                f"{metadata_path} has format_version {metadata.get('format_version')!r}; "
                f"this hf-negmerge reads version {METADATA_FORMAT_VERSION}."
            )
        class_names = overrides.pop("class_names", metadata.get("class_names"))
        saved = {key: metadata[key] for key in _SAVED_CONFIG_FIELDS if key in metadata}
        config = ModelConfig.from_dict({**saved, **overrides, "name_or_path": name})
        if cls is not ImageClassifier and config.architecture != cls.architecture:
            raise CheckpointError(
                f"{name!r} holds a {config.architecture!r} classifier, not {cls.architecture!r}; "
                "use ImageClassifier.from_pretrained to load whatever is saved."
            )
        classifier = CLASSIFIER_REGISTRY[config.architecture].load_pretrained(
            source, config, validate_class_names(class_names or [])
        )
        classifier.mark_trainable()
        return classifier


def build_classifier(config: ModelConfig, class_names: Sequence[str]) -> ImageClassifier:
    """Build the classifier `config` describes: tiny and offline when name_or_path is None."""
    names = validate_class_names(class_names)
    classifier_cls = CLASSIFIER_REGISTRY[config.architecture]
    if config.name_or_path is None:
        classifier = classifier_cls.build_tiny(config, names)
    else:
        source = resolve_weights_source(config.name_or_path, config.revision)
        classifier = classifier_cls.load_pretrained(source, config, names)
    classifier.mark_trainable()
    return classifier
