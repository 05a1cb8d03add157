"""Train the built-in default's "original model" θ₀ once, and cache it by its recipe.

Unlearning needs a model that *knows* the forget set. Real runs start from pretrained Hub
weights; the offline default starts from a tiny randomly initialised model, so this module
trains it on every training class first:

- tiny CLIP: the whole CLIPModel (both towers, logit scale) with the zero-shot classification
  loss, i.e. cross-entropy of exp(s)·norm(image) @ headᵀ where the head is recomputed from the
  text tower at every step (prompt embeddings normalised, averaged per class, normalised), so
  the text tower learns class prompts the image tower can match;
- tiny ViT: plain cross-entropy on its classification head;
- ResNet: SalUn's CIFAR recipe (their `main_train.py` defaults): SGD with momentum 0.9, learning
  rate 0.1 divided by 10 at epochs 91 and 136 of 182 (scaled to other epoch counts), weight decay
  5e-4, CIFAR's pad-4 random crop and horizontal flip on every batch, no gradient clipping.

The result is written with `ImageClassifier.save_pretrained` to `output_dir/<arch>-<hash>`, the
hash covering model config, class names, data fingerprint and training recipe; a folder whose
`pretrain.json` records these settings and the sha256 its weights still have is reused without
training (`cached_original_is_intact`), and so is a folder shipped in the package under the same
name and settings (the built-in default's θ₀, `packaged.py`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..checkpoints import atomic_write_text, check_output_dir
from ..data.collate import encode_split
from ..errors import CheckpointError, ConfigError
from ..models._source import WEIGHT_FILE_PATTERNS, weights_sha256
from ..models.base import CLASSIFIER_METADATA_FILE
from .grid import canonical_json
from .loop import TensorBatches, image_spec, train_loop
from .packaged import find_packaged_original, settings_key

logger = logging.getLogger(__name__)

PRETRAIN_RECORD_FILE = "pretrain.json"
WEIGHTS_SHA256_FIELD = "weights_sha256"  # in pretrain.json: what the cached weights hashed to when saved
_RECIPE_VERSION = 3  # 2: fused AdamW; 3: the torch thread count is part of the key

Objective = Callable[[Any], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class PretrainRecipe:
    """Defaults for one architecture: how long, how fast, which loss, optimizer and augmentation.

    `optimizer="adamw"`: fused AdamW, 5% linear warm-up then cosine decay, gradients clipped to 1.
    `optimizer="sgd"`: SGD with momentum 0.9 and the learning rate divided by 10 after half and
    after 136/182 of the epochs (SalUn's 91/136 of 182), no clipping.
    """

    epochs: int
    learning_rate: float
    objective: Objective
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    pad_crop_flip: bool = False  # CIFAR's zero-pad-4 random crop + horizontal flip on every batch


def _classification_objective(classifier: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(classifier(pixel_values), labels)

    return loss


def _clip_zero_shot_objective(classifier: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Zero-shot classification loss through the head builder with gradients (text tower trains)."""
    from ..models.clip import zero_shot_head

    clip = classifier.clip_model
    templates = classifier.config.prompt_templates

    def loss(pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        head = zero_shot_head(clip, classifier.tokenizer, classifier.class_names, templates)
        image = clip.get_image_features(pixel_values=pixel_values)
        image = F.normalize(image if isinstance(image, torch.Tensor) else image.pooler_output, dim=-1)
        return F.cross_entropy(clip.logit_scale.exp() * image @ head.T, labels)

    return loss


PRETRAIN_RECIPES: dict[str, PretrainRecipe] = {
    "clip": PretrainRecipe(epochs=30, learning_rate=3e-3, objective=_clip_zero_shot_objective),
    "vit": PretrainRecipe(epochs=20, learning_rate=3e-3, objective=_classification_objective),
    "resnet": PretrainRecipe(
        epochs=182,
        learning_rate=0.1,
        objective=_classification_objective,
        weight_decay=5e-4,
        optimizer="sgd",
        pad_crop_flip=True,
    ),
}
SGD_MOMENTUM = 0.9
# SalUn's `--decreasing_lr 91,136` over `--epochs 182`, as fractions of the run.
SGD_DECAY_AT = (91 / 182, 136 / 182)
SGD_DECAY_FACTOR = 0.1


def prepare_original_model(
    model_config: Any,
    dataset: Any,
    output_dir: str | Path,
    epochs: int | None = None,
    learning_rate: float | None = None,
    batch_size: int = 64,
    weight_decay: float | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    eval_dataset: Any | None = None,
    progress: bool = True,
    use_packaged: bool = True,
) -> Path:
    """Train (or reuse) θ₀ on `dataset` (rows `image`, `label`) and return its classifier folder.

    `class_names` default to the dataset's ClassLabel names. `eval_dataset`, when given, is
    scored after training and its accuracy stored in `pretrain.json` (zero-shot for CLIP).
    A folder cached under `output_dir` comes first, then (`use_packaged`) one shipped in the
    package for exactly these settings (`packaged.py`, read-only), else θ₀ is trained here.
    """
    from ..data import require_class_names
    from ..data.loading import check_labels_in_range
    from ..models import build_classifier

    if len(dataset) == 0:
        raise ConfigError("prepare_original_model: the training dataset is empty.")
    recipe = PRETRAIN_RECIPES.get(model_config.architecture)
    if recipe is None:
        raise ConfigError(
            f"No pretraining recipe for architecture {model_config.architecture!r}; "
            f"known: {', '.join(sorted(PRETRAIN_RECIPES))}."
        )
    names = require_class_names(class_names if class_names is not None else dataset, "the original model")
    check_labels_in_range(dataset, len(names), "prepare_original_model dataset")
    epochs = recipe.epochs if epochs is None else epochs
    learning_rate = recipe.learning_rate if learning_rate is None else learning_rate
    weight_decay = recipe.weight_decay if weight_decay is None else weight_decay
    if epochs < 1 or learning_rate <= 0 or batch_size < 1:
        raise ConfigError(
            f"prepare_original_model needs epochs ≥ 1, learning_rate > 0, batch_size ≥ 1; "
            f"got {epochs}, {learning_rate}, {batch_size}."
        )
    model_settings = model_config.to_dict()
    if not model_settings.get("replace_head"):  # added later: off keeps earlier cache keys valid
        model_settings.pop("replace_head", None)
    settings = {
        "version": _RECIPE_VERSION,
        "model_config": model_settings,
        "class_names": names,
        "data_fingerprint": getattr(dataset, "_fingerprint", None) or str(len(dataset)),
        "epochs": epochs,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "weight_decay": weight_decay,
        "seed": seed,
        # CPU kernels sum in another order with another thread count, so θ₀'s weights depend on it
        "torch_threads": torch.get_num_threads(),
    }
    if recipe.optimizer != "adamw" or recipe.pad_crop_flip:  # absent for AdamW: earlier keys stay valid
        settings.update(optimizer=recipe.optimizer, pad_crop_flip=recipe.pad_crop_flip)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cpu":  # GPU kernels give other weights; CPU keys stay as they were
        settings["device"] = device.type
    if model_config.name_or_path is not None:  # the same path may later hold other weights
        from ..models._source import resolve_weights_source, source_weights_sha256

        source = resolve_weights_source(model_config.name_or_path, model_config.revision)
        settings["source_sha256"] = source_weights_sha256(source)
    digest = settings_key(settings)
    target = Path(output_dir) / f"{model_config.architecture}-{digest}"
    if cached_original_is_intact(target, settings):
        return target
    packaged = find_packaged_original(target.name, digest, settings) if use_packaged else None
    if packaged is not None:
        return packaged
    check_output_dir(target, overwrite=True, owned_marker=CLASSIFIER_METADATA_FILE)  # before training

    started = time.time()
    classifier = build_classifier(model_config, names).to(device)  # a GPU when there is one
    for parameter in classifier.model.parameters():
        parameter.requires_grad_(True)
    encoded = encode_split(classifier, dataset, "θ₀ training split")  # once, not every epoch
    pixels, labels = encoded.pixel_values, encoded.labels
    objective = recipe.objective(classifier)
    steps_per_epoch = -(-len(labels) // batch_size)
    optimizer, scheduler = _optimizer_and_schedule(
        recipe, classifier.model.parameters(), learning_rate, weight_decay, epochs, steps_per_epoch
    )
    generator = torch.Generator().manual_seed(seed)
    fill = _padding_fill(classifier) if recipe.pad_crop_flip else None
    batches = TensorBatches(
        pixels,
        labels,
        batch_size,
        generator,
        transform=None if fill is None else lambda inputs, rng: pad_crop_flip(inputs, fill, rng),
    )
    parameters = list(classifier.model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        train_loop(
            classifier,
            parameters,
            batches,
            objective,
            optimizer,
            scheduler,
            epochs=epochs,
            grad_clip=1.0 if recipe.optimizer == "adamw" else None,
            device=device,
            progress=progress,
            description=f"θ₀ ({model_config.architecture})",
            leave=True,
        )
    classifier.eval()
    if hasattr(classifier, "rebuild_head"):  # the zero-shot head follows the trained text tower
        classifier.rebuild_head()
    classifier.mark_trainable()
    record = {
        **settings,
        "seconds": round(time.time() - started, 2),
        "train_accuracy": _fraction_correct(classifier, dataset),
    }
    if eval_dataset is not None:
        record["eval_accuracy"] = _fraction_correct(classifier, eval_dataset)
    classifier.save_pretrained(target)
    record[WEIGHTS_SHA256_FIELD] = weights_sha256(target)
    atomic_write_text(target / PRETRAIN_RECORD_FILE, json.dumps(record, indent=2) + "\n")
    return target


def cached_original_is_intact(target: Path, settings: dict[str, Any]) -> bool:
    """Whether the cached θ₀ in `target` can be reused: its weights still hash as recorded.

    A folder whose `pretrain.json` holds these settings is this tool's cache entry: weights that
    were edited, truncated or replaced (or a record without their hash) are logged and retrained
    in place, deterministically from the same settings. A record that is not such an entry is
    refused, so a folder the tool did not write is never used or replaced.
    """
    record_path = target / PRETRAIN_RECORD_FILE
    if not record_path.is_file():
        return False
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"Cached θ₀ record {record_path} cannot be read ({error}); move {target} away so θ₀ is trained again."
        ) from error
    if not isinstance(record, dict) or canonical_json(
        {name: record.get(name) for name in settings}
    ) != canonical_json(settings):
        raise CheckpointError(
            f"Cached θ₀ record {record_path} does not hold the settings its folder name stands for, so "
            f"hf-negmerge did not write it; move {target} away (or set original.cache_dir) so θ₀ is trained again."
        )
    recorded = record.get(WEIGHTS_SHA256_FIELD)
    weights = sorted(path.name for pattern in WEIGHT_FILE_PATTERNS for path in target.glob(pattern))
    try:
        found = weights_sha256(target)
    except CheckpointError:
        found = None
    if recorded is not None and found == recorded:
        return True
    logger.warning(
        "Cached θ₀ %s: %s; training θ₀ again in its place.",
        target,
        f"no weights sha256 recorded in {PRETRAIN_RECORD_FILE}"
        if recorded is None
        else f"weight file(s) {', '.join(weights) or '(none)'} hash {str(found)[:16]}, "
        f"{PRETRAIN_RECORD_FILE} records {str(recorded)[:16]} (changed or truncated on disk)",
    )
    return False


def _fraction_correct(classifier: Any, dataset: Any) -> float:
    """Top-1 accuracy as a fraction (0–1), for the θ₀ record; evaluation's one `accuracy` does the work."""
    from ..evaluation import predict_dataset

    return predict_dataset(classifier, dataset, batch_size=256).accuracy() / 100.0


def _optimizer_and_schedule(
    recipe: PretrainRecipe,
    parameters: Any,
    learning_rate: float,
    weight_decay: float,
    epochs: int,
    steps_per_epoch: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The recipe's optimizer and its per-step learning-rate schedule."""
    if recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            parameters, lr=learning_rate, momentum=SGD_MOMENTUM, weight_decay=weight_decay
        )
        milestones = sorted({round(fraction * epochs) * steps_per_epoch for fraction in SGD_DECAY_AT})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=SGD_DECAY_FACTOR)
        return optimizer, scheduler
    # fused: one kernel for all tensors, ~10% faster steps for tiny models on CPU (torch ≥ 2.4)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=True)
    return optimizer, _warmup_cosine(optimizer, total_steps=epochs * steps_per_epoch)


def _padding_fill(classifier: Any) -> torch.Tensor:
    """Per-channel value of a black (zero) pixel after the processor's normalisation."""
    spec = image_spec(classifier)
    if spec.mean is None:
        return torch.zeros(3)
    return -torch.tensor(spec.mean) / torch.tensor(spec.std)


def pad_crop_flip(
    pixels: torch.Tensor, fill: torch.Tensor, generator: torch.Generator, padding: int = 4
) -> torch.Tensor:
    """CIFAR's training augmentation on a preprocessed batch [B, C, H, W].

    Each image is padded by `padding` pixels of `fill` (black after normalisation), cropped back
    to H×W at an offset uniform over 0..2·padding in each direction, and mirrored with p = 0.5:
    the same distribution as `PadCropFlipTransform` on PIL images.
    """
    count, channels, height, width = pixels.shape
    padded = (
        fill.to(pixels.dtype)
        .view(1, channels, 1, 1)
        .repeat(count, 1, height + 2 * padding, width + 2 * padding)
    )
    padded[:, :, padding : padding + height, padding : padding + width] = pixels
    offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=generator)
    flips = torch.rand(count, generator=generator) < 0.5
    crops = []
    for image, (left, top), flip in zip(padded, offsets.tolist(), flips.tolist(), strict=True):
        crop = image[:, top : top + height, left : left + width]
        crops.append(crop.flip(-1) if flip else crop)
    return torch.stack(crops)


def _warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, max(1, total_steps // 20), total_steps)
