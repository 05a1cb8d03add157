"""ResNet classifier: `ResNetForImageClassification`, every tensor trained (the standard setting).

The paper's standard setting (REFERENCE §2.2) is SalUn's CIFAR ResNet-18: a 3×3 stride-1 stem
convolution and no max-pool, so 32×32 inputs keep their resolution into the first stage.
`transformers.ResNetConfig` cannot express that stem: `ResNetEmbeddings` hard-codes a 7×7
stride-2 convolution followed by a 3×3 stride-2 max-pool (a 4× downsampling meant for 224×224
ImageNet images). With `stem: cifar` this module builds the transformers model and swaps the stem
for SalUn's (a 3×3 stride-1 convolution, the max-pool replaced by identity); the choice is stored
in the model's `config.json` as `hf_negmerge_stem`, and `load_pretrained` rebuilds it from there.
Module and checkpoint key names are unchanged (`resnet.embedder.embedder.convolution.weight`,
now 64×3×3×3), so task vectors, merging and the safetensors files work as for any model; only
transformers' own `from_pretrained` would rebuild the 7×7 stem and refuse that weight's shape.

BatchNorm running means and variances are float buffers in the state dict; they are part of the
task vector and merged like weights (`trainable_parameter_patterns` covers the whole model), so
a merged model carries statistics moved by the same rule as the weights they normalise. Integer
`num_batches_tracked` counters pass through from θ₀ (TaskVector skips non-float tensors).
"""

from __future__ import annotations

from typing import Any

from safetensors.torch import load_file
from torch import nn
from transformers import (
    AutoConfig,
    PreTrainedModel,
    ResNetConfig,
    ResNetForImageClassification,
)

from ..errors import CheckpointError, ConfigError
from ._source import WeightsSource, fetch_file
from .base import image_processor_class, register_classifier, seeded_init
from .config import ModelConfig
from .vit import (
    FullyTrainedClassifier,
    check_trained_head,
    label_maps,
    reject_clip_only_switches,
)

STEM_ATTRIBUTE = "hf_negmerge_stem"  # key in config.json
STEMS = ("imagenet", "cifar")
# A two-stage basic-block ResNet small enough for offline tests (a few thousand weights).
_TINY_RESNET: dict[str, Any] = {
    "embedding_size": 8,
    "hidden_sizes": [8, 16],
    "depths": [1, 1],
    "layer_type": "basic",
    "stem": "cifar",
}
# ResNet-18 as SalUn trains it on CIFAR-10 (`tiny: {**RESNET18_CIFAR}` builds it from config).
RESNET18_CIFAR: dict[str, Any] = {
    "embedding_size": 64,
    "hidden_sizes": [64, 128, 256, 512],
    "depths": [2, 2, 2, 2],
    "layer_type": "basic",
    "stem": "cifar",
}
DEFAULT_TINY_IMAGE_SIZE = 32
# SalUn normalises CIFAR-10 inputs with these per-channel statistics inside its network.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_RESERVED_TINY_KEYS = {"num_labels", "id2label", "label2id", "num_channels", "out_features", "out_indices"}


def use_cifar_stem(model: ResNetForImageClassification) -> None:
    """Replace the ImageNet stem (7×7/2 conv + 3×3/2 max-pool) by SalUn's CIFAR stem, in place."""
    embedder = model.resnet.embedder
    layer = embedder.embedder.convolution
    embedder.embedder.convolution = nn.Conv2d(
        layer.in_channels, layer.out_channels, kernel_size=3, stride=1, padding=1, bias=False
    ).to(dtype=layer.weight.dtype)
    # transformers' own ResNet initialisation for convolutions (kaiming normal, fan_out, relu)
    nn.init.kaiming_normal_(embedder.embedder.convolution.weight, mode="fan_out", nonlinearity="relu")
    embedder.pooler = nn.Identity()
    setattr(model.config, STEM_ATTRIBUTE, "cifar")


def stem_of(config: Any) -> str:
    stem = getattr(config, STEM_ATTRIBUTE, "imagenet")
    if stem not in STEMS:
        raise CheckpointError(f"config.json has {STEM_ATTRIBUTE}={stem!r}; expected one of {list(STEMS)}.")
    return stem


@register_classifier("resnet")
class ResNetClassifier(FullyTrainedClassifier):
    """ResNetForImageClassification (backbone, BatchNorm statistics and head all fine-tuned)."""

    default_lora_targets = ("1",)  # the head's Linear (`classifier.1`): the only Linear in a ResNet
    backbone_prefix = "resnet"
    model_class = ResNetForImageClassification
    display_name = "ResNet"

    @classmethod
    def build_tiny(cls, config: ModelConfig, class_names: list[str]) -> ResNetClassifier:
        """A ResNet built from `config.tiny` (ResNetConfig options plus `stem`), randomly initialised."""
        reject_clip_only_switches(config, "ResNet")
        options = {**_TINY_RESNET, **config.tiny}
        known = (set(ResNetConfig().to_dict()) - _RESERVED_TINY_KEYS) | {"stem"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"Unknown tiny ResNet option(s) {unknown}; see transformers.ResNetConfig, plus "
                f"'stem' ({' or '.join(STEMS)})."
            )
        stem = options.pop("stem")
        if stem not in STEMS:
            raise ConfigError(f"model.tiny.stem={stem!r} is not one of {list(STEMS)}.")
        image_size = config.image_size or DEFAULT_TINY_IMAGE_SIZE
        resnet_config = ResNetConfig(**options, num_channels=3, **label_maps(class_names))

        def build() -> ResNetForImageClassification:
            model = ResNetForImageClassification(resnet_config)
            if stem == "cifar":
                use_cifar_stem(model)
            return model

        model = seeded_init(config.init_seed, build)
        if config.dtype != "auto":
            model = model.to(config.torch_dtype)
        processor = image_processor_class("ViTImageProcessor")(
            size={"height": image_size, "width": image_size},
            do_resize=True,
            image_mean=list(CIFAR10_MEAN),
            image_std=list(CIFAR10_STD),
        )
        resolved = ModelConfig.from_dict({**config.to_dict(), "image_size": image_size})
        return cls(model.eval(), processor, class_names, resolved)

    @classmethod
    def _load_model(
        cls, source: WeightsSource, config: ModelConfig, class_names: list[str]
    ) -> PreTrainedModel:
        hf_config = AutoConfig.from_pretrained(source.location, **source.load_kwargs)
        if stem_of(hf_config) == "cifar":  # transformers would rebuild the 7×7 stem and refuse the weights
            return _load_cifar_stem_model(source, config, class_names)
        return super()._load_model(source, config, class_names)


def _load_cifar_stem_model(
    source: WeightsSource, config: ModelConfig, class_names: list[str]
) -> ResNetForImageClassification:
    """Rebuild the CIFAR-stem model from its config.json and load `model.safetensors` into it."""
    hf_config = AutoConfig.from_pretrained(source.location, **label_maps(class_names), **source.load_kwargs)
    weights_path = fetch_file(source, "model.safetensors")
    if weights_path is None:
        raise CheckpointError(
            f"{source.location!r} has a CIFAR-stem ResNet config but no model.safetensors to load."
        )
    state = load_file(str(weights_path))
    model = seeded_init(config.init_seed, lambda: ResNetForImageClassification(hf_config))
    use_cifar_stem(model)
    head = {key for key in state if key.startswith("classifier.")}
    expected_head = {key: value.shape for key, value in model.state_dict().items() if key in head}
    head_fits = all(state[key].shape == shape for key, shape in expected_head.items())
    if config.replace_head and not head_fits:  # the new head keeps its random initialisation
        state = {key: value for key, value in state.items() if key not in head}
    result = model.load_state_dict(state, strict=False)
    check_trained_head(list(result.missing_keys), source, config)
    missing = [key for key in result.missing_keys if not key.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{weights_path} does not fit its CIFAR-stem ResNet config: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}."
        )
    if config.dtype != "auto":
        model = model.to(config.torch_dtype)
    return model
