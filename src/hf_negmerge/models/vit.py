"""ViT classifier: `ViTForImageClassification`, fully fine-tuned (the standard-classification setting)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoImageProcessor, ViTConfig, ViTForImageClassification, ViTImageProcessor

from ..errors import ConfigError
from ._source import WeightsSource
from .base import ImageClassifier, processor_image_size, register_classifier, seeded_init
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


def _label_maps(class_names: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(class_names),
        "id2label": dict(enumerate(class_names)),
        "label2id": {name: index for index, name in enumerate(class_names)},
    }


def _reject_clip_only_switches(config: ModelConfig) -> None:
    for flag in ("freeze_attention", "train_projection"):
        if getattr(config, flag):
            raise ConfigError(
                f"ModelConfig.{flag}=True applies to CLIP only; the ViT classifier trains everything."
            )


@register_classifier("vit")
class ViTClassifier(ImageClassifier):
    """ViTForImageClassification whose every tensor (backbone and head) is fine-tuned."""

    default_lora_targets = ("q_proj", "v_proj")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values.to(self.model.dtype)).logits

    def trainable_parameter_patterns(self) -> list[str]:
        return ["vit.*", "classifier.*"]

    def _is_trainable(self, parameter_name: str) -> bool:
        return True

    @classmethod
    def build_tiny(cls, config: ModelConfig, class_names: list[str]) -> ViTClassifier:
        _reject_clip_only_switches(config)
        known = set(ViTConfig().to_dict()) - _RESERVED_TINY_KEYS
        unknown = sorted(set(config.tiny) - known)
        if unknown:
            raise ConfigError(
                f"Unknown tiny ViT option(s) {unknown}; see transformers.ViTConfig for the options."
            )
        image_size = config.image_size or DEFAULT_TINY_IMAGE_SIZE
        vit_config = ViTConfig(
            **{**_TINY_VIT, **config.tiny}, image_size=image_size, num_channels=3, **_label_maps(class_names)
        )
        model = seeded_init(config.init_seed, lambda: ViTForImageClassification(vit_config))
        if config.dtype != "auto":
            model = model.to(config.torch_dtype)
        processor = ViTImageProcessor(
            size={"height": image_size, "width": image_size},
            do_resize=True,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        resolved = ModelConfig.from_dict({**config.to_dict(), "image_size": image_size})
        return cls(model.eval(), processor, class_names, resolved)

    @classmethod
    def load_pretrained(
        cls, source: WeightsSource, config: ModelConfig, class_names: list[str]
    ) -> ViTClassifier:
        _reject_clip_only_switches(config)
        # A head of another size (e.g. ImageNet's 1000 classes) is re-initialised for class_names.
        model = ViTForImageClassification.from_pretrained(
            source.location,
            dtype=config.torch_dtype,
            ignore_mismatched_sizes=True,
            **_label_maps(class_names),
            **source.load_kwargs,
        )
        processor = AutoImageProcessor.from_pretrained(
            source.location, trust_remote_code=config.trust_remote_code, **source.load_kwargs
        )
        image_size = processor_image_size(processor)
        if config.image_size is not None and config.image_size != image_size:
            raise ConfigError(
                f"ModelConfig.image_size={config.image_size} but {source.location!r}'s processor outputs "
                f"{image_size}x{image_size}; leave image_size unset for pretrained models."
            )
        resolved = ModelConfig.from_dict({**config.to_dict(), "image_size": image_size})
        return cls(model.eval(), processor, class_names, resolved)
