"""ViT classifier: `ViTForImageClassification`, fully fine-tuned (the standard-classification setting)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    PreTrainedModel,
    ViTConfig,
    ViTForImageClassification,
)

from ..errors import ConfigError
from ._source import WeightsSource
from .base import (
    ImageClassifier,
    image_processor_class,
    processor_image_size,
    register_classifier,
    seeded_init,
)
from .config import ModelConfig

_TINY_VIT = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "patch_size": 4,
}
DEFAULT_TINY_IMAGE_SIZE = 16
# Set from the class names and image_size, never through `tiny`.
_RESERVED_TINY_KEYS = {"image_size", "num_labels", "id2label", "label2id", "num_channels"}


def label_maps(class_names: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(class_names),
        "id2label": dict(enumerate(class_names)),
        "label2id": {name: index for index, name in enumerate(class_names)},
    }


def pretrained_labels(source: WeightsSource) -> list[str]:
    """The head's labels of a pretrained ViT folder or Hub id, in id order (its config's id2label)."""
    config = AutoConfig.from_pretrained(source.location, **source.load_kwargs)
    id2label = {int(key): str(value) for key, value in (config.id2label or {}).items()}
    return [id2label.get(index, f"LABEL_{index}") for index in range(config.num_labels)]


def reject_clip_only_switches(config: ModelConfig, name: str = "ViT") -> None:
    for flag in ("freeze_attention", "train_projection"):
        if getattr(config, flag):
            raise ConfigError(
                f"ModelConfig.{flag}=True applies to CLIP only; the {name} classifier trains everything."
            )


class FullyTrainedClassifier(ImageClassifier):
    """A `*ForImageClassification` model with its own trained head, every tensor fine-tuned.

    Subclasses name the backbone's checkpoint prefix (`backbone_prefix`), the transformers class
    (`model_class`) and the name used in messages (`display_name`).
    """

    has_trained_head = True
    backbone_prefix: str
    model_class: ClassVar[type[PreTrainedModel]]
    display_name: ClassVar[str]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values.to(self.model.dtype)).logits

    def trainable_parameter_patterns(self) -> list[str]:
        return [f"{self.backbone_prefix}.*", "classifier.*"]

    def _is_trainable(self, parameter_name: str) -> bool:
        return True

    @classmethod
    def load_pretrained(
        cls, source: WeightsSource, config: ModelConfig, class_names: list[str]
    ) -> FullyTrainedClassifier:
        """Weights with the head checked against the data's labels (by name), and the processor."""
        reject_clip_only_switches(config, cls.display_name)
        check_head_labels(source, config, class_names)
        model = cls._load_model(source, config, class_names)
        processor = AutoImageProcessor.from_pretrained(
            source.location, trust_remote_code=config.trust_remote_code, **source.load_kwargs
        )
        return cls(model.eval(), processor, class_names, resolve_image_size(processor, source, config))

    @classmethod
    def _load_model(
        cls, source: WeightsSource, config: ModelConfig, class_names: list[str]
    ) -> PreTrainedModel:
        model, info = cls.model_class.from_pretrained(
            source.location,
            dtype=config.torch_dtype,
            ignore_mismatched_sizes=config.replace_head,
            output_loading_info=True,
            **label_maps(class_names),
            **source.load_kwargs,
        )
        check_trained_head(info.get("missing_keys", []), source, config)
        return model


@register_classifier("vit")
class ViTClassifier(FullyTrainedClassifier):
    """ViTForImageClassification whose every tensor (backbone and head) is fine-tuned."""

    default_lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")
    backbone_prefix = "vit"
    model_class = ViTForImageClassification
    display_name = "ViT"

    @classmethod
    def build_tiny(cls, config: ModelConfig, class_names: list[str]) -> ViTClassifier:
        reject_clip_only_switches(config)
        known = set(ViTConfig().to_dict()) - _RESERVED_TINY_KEYS
        unknown = sorted(set(config.tiny) - known)
        if unknown:
            raise ConfigError(
                f"Unknown tiny ViT option(s) {unknown}; see transformers.ViTConfig for the options."
            )
        image_size = config.image_size or DEFAULT_TINY_IMAGE_SIZE
        vit_config = ViTConfig(
            **{**_TINY_VIT, **config.tiny}, image_size=image_size, num_channels=3, **label_maps(class_names)
        )
        model = seeded_init(config.init_seed, lambda: ViTForImageClassification(vit_config))
        if config.dtype != "auto":
            model = model.to(config.torch_dtype)
        processor = image_processor_class("ViTImageProcessor")(
            size={"height": image_size, "width": image_size},
            do_resize=True,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        resolved = ModelConfig.from_dict({**config.to_dict(), "image_size": image_size})
        return cls(model.eval(), processor, class_names, resolved)


def check_head_labels(source: WeightsSource, config: ModelConfig, class_names: list[str]) -> None:
    """A pretrained head is kept only for exactly the data's labels (matched by name, in id order)."""
    labels = pretrained_labels(source)
    if labels != class_names and not config.replace_head:
        raise ConfigError(
            f"{source.location!r} has a classification head for {len(labels)} labels {labels}, but "
            f"{len(class_names)} classes {class_names} were asked for. Labels are matched by name "
            "(data.label_mapping maps dataset classes onto the model's labels); set "
            "model.replace_head: true to replace the head with a new one (then train θ₀ here, "
            "original.train: true)."
        )


def check_trained_head(missing_keys: list[str], source: WeightsSource, config: ModelConfig) -> None:
    """Refuse a checkpoint without head weights (a random head at chance) unless it is replaced."""
    fresh_head = [key for key in missing_keys if key.startswith("classifier.")]
    if fresh_head and not config.replace_head:
        raise ConfigError(
            f"{source.location!r} holds no trained classification head ({fresh_head} missing), so it "
            "would start from a random head at chance level. Set model.replace_head: true and train θ₀ "
            "here (original.train: true)."
        )


def resolve_image_size(processor: Any, source: WeightsSource, config: ModelConfig) -> ModelConfig:
    """`config` with image_size set from the processor; a different explicit image_size is refused."""
    image_size = processor_image_size(processor)
    if config.image_size is not None and config.image_size != image_size:
        raise ConfigError(
            f"ModelConfig.image_size={config.image_size} but {source.location!r}'s processor outputs "
            f"{image_size}x{image_size}; leave image_size unset for pretrained models."
        )
    return ModelConfig.from_dict({**config.to_dict(), "image_size": image_size})
