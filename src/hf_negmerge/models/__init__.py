"""Image classifiers that NegMerge fine-tunes and merges: CLIP zero-shot, ViT and ResNet, tiny or pretrained."""

from .base import (
    CLASSIFIER_METADATA_FILE,
    CLASSIFIER_REGISTRY,
    ImageClassifier,
    build_classifier,
    register_classifier,
)
from .clip import CLIPZeroShotClassifier
from .config import DEFAULT_PROMPT_TEMPLATES, ModelConfig
from .lora import apply_lora, merge_lora
from .resnet import ResNetClassifier
from .templates import PROMPT_TEMPLATE_SETS, prompt_templates_for
from .vit import ViTClassifier

__all__ = [
    "CLASSIFIER_METADATA_FILE",
    "CLASSIFIER_REGISTRY",
    "DEFAULT_PROMPT_TEMPLATES",
    "PROMPT_TEMPLATE_SETS",
    "CLIPZeroShotClassifier",
    "ImageClassifier",
    "ModelConfig",
    "ResNetClassifier",
    "ViTClassifier",
    "apply_lora",
    "build_classifier",
    "merge_lora",
    "prompt_templates_for",
    "register_classifier",
]
