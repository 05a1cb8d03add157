"""CLIP zero-shot classifier: a fine-tunable vision tower scored against a frozen text head.

Follows the NegMerge/task-vectors setting: only the image encoder is fine-tuned; each class's
head row is the renormalised mean of its L2-normalised prompt embeddings from the text tower,
and logits are exp(logit_scale) · normalize(image_features) @ headᵀ.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
)

from ..errors import CheckpointError, ConfigError
from ._source import WeightsSource
from ._tiny_tokenizer import build_word_level_tokenizer
from .base import (
    ImageClassifier,
    image_processor_class,
    processor_image_size,
    register_classifier,
    seeded_init,
    validate_class_names,
)
from .config import ModelConfig

_ATTENTION_PROJECTION = re.compile(r"\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.")
# Keys of the vision tower outside the attention projections (for freeze_attention=True).
_VISION_WITHOUT_ATTENTION = [
    "vision_model.embeddings.*",
    "vision_model.pre_layrnorm.*",
    "vision_model.encoder.layers.*.layer_norm1.*",
    "vision_model.encoder.layers.*.mlp.*",
    "vision_model.encoder.layers.*.layer_norm2.*",
    "vision_model.post_layernorm.*",
]
_TINY_TOWER = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
_TINY_TOP = {"projection_dim": 64}
_TINY_SHARED_KEYS = {*_TINY_TOWER, "hidden_act", "layer_norm_eps", "attention_dropout"}
_TINY_TOP_KEYS = {"projection_dim", "logit_scale_init_value"}
_TINY_VISION_KEYS = {"patch_size"}
_TINY_NESTED_KEYS = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}
DEFAULT_TINY_IMAGE_SIZE = 16
_MIN_TEXT_POSITIONS = 32
_HEAD_PROGRESS_MIN_CLASSES = 50


def _tiny_clip_config(
    config: ModelConfig, tokenizer: Any, text_positions: int, image_size: int
) -> CLIPConfig:
    overrides = dict(config.tiny)
    allowed = _TINY_SHARED_KEYS | _TINY_TOP_KEYS | _TINY_VISION_KEYS | set(_TINY_NESTED_KEYS)
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ConfigError(f"Unknown tiny CLIP option(s) {unknown}; allowed: {sorted(allowed)}.")
    shared = {**_TINY_TOWER, **{key: overrides[key] for key in _TINY_SHARED_KEYS & set(overrides)}}
    nested: dict[str, dict[str, Any]] = {}
    for key, config_cls in _TINY_NESTED_KEYS.items():
        nested[key] = dict(overrides.get(key, {}))
        known = set(config_cls().to_dict())
        bad = sorted(set(nested[key]) - known)
        if bad:
            raise ConfigError(f"Unknown tiny CLIP {key} option(s) {bad}.")
    text = {
        **shared,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": text_positions,
        # CLIP's text tower pools at the EOS token: its ids must be the tokenizer's own.
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **nested["text_config"],
    }
    vision = {
        **shared,
        "image_size": image_size,
        "patch_size": overrides.get("patch_size", 4),
        "num_channels": 3,
        **nested["vision_config"],
    }
    top = {**_TINY_TOP, **{key: overrides[key] for key in _TINY_TOP_KEYS & set(overrides)}}
    return CLIPConfig(text_config=text, vision_config=vision, **top)


def _check_tokenizer_matches(model: CLIPModel, tokenizer: Any, where: str) -> None:
    text_config = model.config.text_config
    # eos_token_id == 2 is transformers' legacy marker for "pool at the largest id" (OpenAI vocab).
    if text_config.eos_token_id != 2 and text_config.eos_token_id != tokenizer.eos_token_id:
        raise CheckpointError(
            f"{where}: text config eos_token_id={text_config.eos_token_id} differs from the tokenizer's "
            f"eos_token_id={tokenizer.eos_token_id}; the zero-shot head would pool the wrong token."
        )
    if len(tokenizer) > text_config.vocab_size:
        raise CheckpointError(
            f"{where}: tokenizer has {len(tokenizer)} tokens but the text tower only {text_config.vocab_size}."
        )


def zero_shot_head(
    clip: CLIPModel,
    tokenizer: Any,
    class_names: Sequence[str],
    templates: Sequence[str],
    classes_per_batch: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The one zero-shot head builder: per class, normalise each prompt's text embedding, average
    over the templates, normalise again → FloatTensor[num_classes, projection_dim].

    Differentiable under the caller's grad mode and in the model's current train/eval mode, so θ₀
    pretraining trains the text tower through it and `compute_head` freezes it. Prompts are
    tokenised `classes_per_batch` classes at a time (None: all in one batch).
    """
    names = list(class_names)
    step = classes_per_batch or len(names)
    max_length = min(tokenizer.model_max_length, clip.config.text_config.max_position_embeddings)
    device = next(clip.parameters()).device
    rows = []
    for start in tqdm(range(0, len(names), step), desc="zero-shot head", disable=not progress):
        chunk = names[start : start + step]
        prompts = [template.replace("{}", name) for name in chunk for template in templates]
        tokens = tokenizer(
            prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        output = clip.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        )
        embeddings = output if isinstance(output, torch.Tensor) else output.pooler_output
        per_class = F.normalize(embeddings, dim=-1).view(len(chunk), len(templates), -1).mean(dim=1)
        rows.append(F.normalize(per_class, dim=-1))
    return torch.cat(rows)


@register_classifier("clip")
class CLIPZeroShotClassifier(ImageClassifier):
    """CLIPModel + frozen zero-shot head (buffer `zero_shot_head`: FloatTensor[num_classes, projection_dim])."""

    default_lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

    def __init__(
        self,
        model: CLIPModel,
        image_processor: Any,
        tokenizer: Any,
        class_names: Sequence[str],
        config: ModelConfig,
    ) -> None:
        super().__init__(model, image_processor, class_names, config)
        self.tokenizer = tokenizer
        # Not persistent: the head is a function of the text tower, recomputed on load.
        self.register_buffer("zero_shot_head", self.compute_head(), persistent=False)

    @property
    def clip_model(self) -> CLIPModel:
        """The CLIPModel itself, also when `model` is wrapped by peft."""
        from peft import PeftModel

        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    # ----- zero-shot head -------------------------------------------------------------------
    @torch.no_grad()
    def compute_head(
        self, class_names: Sequence[str] | None = None, templates: Sequence[str] | None = None
    ) -> torch.Tensor:
        """The frozen head, FloatTensor[num_classes, projection_dim] (`zero_shot_head`, eval mode,
        one class per text batch so ImageNet's 1000 × 80 prompts never sit in memory together).
        Defaults: this model's class names and templates (another dataset, e.g. the control set,
        brings its own)."""
        clip = self.clip_model
        names = self.class_names if class_names is None else list(class_names)
        was_training = clip.training
        clip.eval()
        try:
            return zero_shot_head(
                clip,
                self.tokenizer,
                names,
                self.config.prompt_templates if templates is None else list(templates),
                classes_per_batch=1,
                progress=len(names) >= _HEAD_PROGRESS_MIN_CLASSES,
            )
        finally:
            clip.train(was_training)

    def rebuild_head(self) -> None:
        """Recompute the head, e.g. after the text tower or the prompt templates changed."""
        self.zero_shot_head = self.compute_head()

    def set_class_names(self, class_names: Sequence[str]) -> None:
        """Score another label set with the same image encoder (e.g. the control set)."""
        names = validate_class_names(class_names)
        head = self.compute_head(names)
        self.class_names = names
        self.zero_shot_head = head

    # ----- forward and fine-tuned part ----------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        clip = self.clip_model
        output = clip.get_image_features(pixel_values=pixel_values.to(clip.dtype))
        # transformers 5 returns an output object whose pooler_output is the projected embedding.
        features = output if isinstance(output, torch.Tensor) else output.pooler_output
        features = F.normalize(features, dim=-1)
        return clip.logit_scale.exp() * features @ self.zero_shot_head.T

    def trainable_parameter_patterns(self) -> list[str]:
        patterns = list(_VISION_WITHOUT_ATTENTION) if self.config.freeze_attention else ["vision_model.*"]
        if self.config.train_projection:
            patterns.append("visual_projection.*")
        return patterns

    def _is_trainable(self, parameter_name: str) -> bool:
        if parameter_name.startswith("vision_model."):
            return not (self.config.freeze_attention and _ATTENTION_PROJECTION.search(parameter_name))
        return self.config.train_projection and parameter_name.startswith("visual_projection.")

    def _save_extra(self, directory: Any) -> None:
        self.tokenizer.save_pretrained(directory)

    # ----- builders ------------------------------------------------------------------------------
    @classmethod
    def build_tiny(cls, config: ModelConfig, class_names: list[str]) -> CLIPZeroShotClassifier:
        image_size = config.image_size or DEFAULT_TINY_IMAGE_SIZE
        prompts = [
            template.replace("{}", name) for template in config.prompt_templates for name in class_names
        ]
        probe = build_word_level_tokenizer(prompts, model_max_length=10**6)
        longest = max(len(ids) for ids in probe(prompts)["input_ids"])
        text_positions = max(_MIN_TEXT_POSITIONS, longest)
        tokenizer = build_word_level_tokenizer(prompts, model_max_length=text_positions)
        clip_config = _tiny_clip_config(config, tokenizer, text_positions, image_size)
        model = seeded_init(config.init_seed, lambda: CLIPModel(clip_config))
        if config.dtype != "auto":
            model = model.to(config.torch_dtype)
        processor = image_processor_class("CLIPImageProcessor")(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
            do_center_crop=True,
        )
        resolved = ModelConfig.from_dict({**config.to_dict(), "image_size": image_size})
        return cls(model.eval(), processor, tokenizer, class_names, resolved)

    @classmethod
    def load_pretrained(
        cls, source: WeightsSource, config: ModelConfig, class_names: list[str]
    ) -> CLIPZeroShotClassifier:
        remote = {"trust_remote_code": config.trust_remote_code, **source.load_kwargs}
        model = CLIPModel.from_pretrained(source.location, dtype=config.torch_dtype, **source.load_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source.location, **remote)
        processor = AutoImageProcessor.from_pretrained(source.location, **remote)
        _check_tokenizer_matches(model, tokenizer, source.location)
        image_size = processor_image_size(processor)
        if config.image_size is not None and config.image_size != image_size:
            raise ConfigError(
                f"ModelConfig.image_size={config.image_size} but {source.location!r}'s processor outputs "
                f"{image_size}x{image_size}; leave image_size unset for pretrained models."
            )
        resolved = ModelConfig.from_dict({**config.to_dict(), "image_size": image_size})
        return cls(model.eval(), processor, tokenizer, class_names, resolved)
