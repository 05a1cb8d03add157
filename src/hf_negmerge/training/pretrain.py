"""Train the built-in default's "original model" θ₀ once, and cache it by its recipe.

Unlearning needs a model that *knows* the forget set. Real runs start from pretrained Hub
weights; the offline default starts from a tiny randomly initialised model, so this module
trains it on every training class first:

- tiny CLIP: the whole CLIPModel (both towers, logit scale) with the zero-shot classification
  loss, i.e. cross-entropy of exp(s)·norm(image) @ headᵀ where the head is recomputed from the
  text tower at every step (prompt embeddings normalised, averaged per class, normalised), so
  the text tower learns class prompts the image tower can match;
- tiny ViT: plain cross-entropy on its classification head.

The result is written with `ImageClassifier.save_pretrained` to `output_dir/<arch>-<hash>`, the
hash covering model config, class names, data fingerprint and training recipe; a folder that
already holds `pretrain.json` is reused without training.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checkpoints import atomic_write_text
from ..errors import ConfigError
from .grid import canonical_json

PRETRAIN_RECORD_FILE = "pretrain.json"
_RECIPE_VERSION = 3  # 2: fused AdamW; 3: the torch thread count is part of the key

Objective = Callable[[Any], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class PretrainRecipe:
    """Defaults for one architecture: how long, how fast, and which loss."""

    epochs: int
    learning_rate: float
    objective: Objective


def _classification_objective(classifier: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(classifier(pixel_values), labels)

    return loss


def _clip_zero_shot_objective(classifier: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Zero-shot classification loss with a differentiable head (same recipe as the frozen head)."""
    clip = classifier.clip_model
    templates = classifier.config.prompt_templates
    prompts = [template.replace("{}", name) for name in classifier.class_names for template in templates]
    max_length = min(classifier.tokenizer.model_max_length, clip.config.text_config.max_position_embeddings)
    tokens = classifier.tokenizer(
        prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )

    def loss(pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        device = pixel_values.device
        text = clip.get_text_features(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        )
        text = text if isinstance(text, torch.Tensor) else text.pooler_output
        text = F.normalize(text, dim=-1).view(len(classifier.class_names), len(templates), -1).mean(dim=1)
        head = F.normalize(text, dim=-1)
        image = clip.get_image_features(pixel_values=pixel_values)
        image = F.normalize(image if isinstance(image, torch.Tensor) else image.pooler_output, dim=-1)
        return F.cross_entropy(clip.logit_scale.exp() * image @ head.T, labels)

    return loss


PRETRAIN_RECIPES: dict[str, PretrainRecipe] = {
    "clip": PretrainRecipe(epochs=30, learning_rate=3e-3, objective=_clip_zero_shot_objective),
    "vit": PretrainRecipe(epochs=20, learning_rate=3e-3, objective=_classification_objective),
}


def prepare_original_model(
    model_config: Any,
    dataset: Any,
    output_dir: str | Path,
    epochs: int | None = None,
    learning_rate: float | None = None,
    batch_size: int = 64,
    weight_decay: float = 0.01,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    eval_dataset: Any | None = None,
    progress: bool = True,
) -> Path:
    """Train (or reuse) θ₀ on `dataset` (rows `image`, `label`) and return its classifier folder.

    `class_names` default to the dataset's ClassLabel names. `eval_dataset`, when given, is
    scored after training and its accuracy stored in `pretrain.json` (zero-shot for CLIP).
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
    if model_config.name_or_path is not None:  # the same path may later hold other weights
        from ..models._source import resolve_weights_source, source_weights_sha256

        source = resolve_weights_source(model_config.name_or_path, model_config.revision)
        settings["source_sha256"] = source_weights_sha256(source)
    digest = hashlib.sha256(canonical_json(settings).encode("utf-8")).hexdigest()[:12]
    target = Path(output_dir) / f"{model_config.architecture}-{digest}"
    if (target / PRETRAIN_RECORD_FILE).is_file():
        return target

    started = time.time()
    classifier = build_classifier(model_config, names)
    for parameter in classifier.model.parameters():
        parameter.requires_grad_(True)
    pixels, labels = _encode(classifier, dataset)
    objective = recipe.objective(classifier)
    # fused: one kernel for all tensors, ~10% faster steps for tiny models on CPU (torch ≥ 2.4)
    optimizer = torch.optim.AdamW(
        classifier.model.parameters(), lr=learning_rate, weight_decay=weight_decay, fused=True
    )
    steps_per_epoch = -(-len(labels) // batch_size)
    scheduler = _warmup_cosine(optimizer, total_steps=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    classifier.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        epochs_bar = tqdm(
            range(epochs),
            desc=f"θ₀ ({model_config.architecture})",
            unit="epoch",
            disable=not progress,
            dynamic_ncols=True,
        )
        for _ in epochs_bar:
            order = torch.randperm(len(labels), generator=generator)
            for start in range(0, len(labels), batch_size):
                batch = order[start : start + batch_size]
                loss = objective(pixels[batch], labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(classifier.model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
            epochs_bar.set_postfix_str(f"loss {float(loss.detach()):.4f}", refresh=False)
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
    atomic_write_text(target / PRETRAIN_RECORD_FILE, json.dumps(record, indent=2) + "\n")
    return target


def _fraction_correct(classifier: Any, dataset: Any) -> float:
    """Top-1 accuracy as a fraction (0–1), for the θ₀ record; evaluation's one `accuracy` does the work."""
    from ..evaluation import predict_dataset

    return predict_dataset(classifier, dataset, batch_size=256).accuracy() / 100.0


def _encode(classifier: Any, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """All images preprocessed once (small datasets: avoids re-running the processor every epoch)."""
    from ..data.collate import ImageClassificationCollator

    rows = [dataset[i] for i in range(len(dataset))]
    batch = ImageClassificationCollator(classifier.preprocess)(rows)
    return batch["pixel_values"], batch["labels"]


def _warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, max(1, total_steps // 20), total_steps)
