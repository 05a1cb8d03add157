"""θ₀ and the Retrain reference: where they come from, what they train on, where they are cached.

θ₀ is given (`original.path`), built from `model` and saved under the run's `work/original`, or
trained here on the train split minus every held-out row (cached by its settings, like Retrain,
which trains on the same rows less the forget set). The data carving lives here because it is what
θ₀ saw: RA and the MIA members are measured on exactly those rows (evaluation.engine).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import SOURCE_INDEX_COLUMN, UnlearningData, align_to_labels, class_names_of, load_image_dataset
from .errors import ConfigError

if TYPE_CHECKING:
    from .recipe import UnlearnRecipe

logger = logging.getLogger(__name__)

ORIGINAL_SOURCE_FILE = "hf_negmerge_source.json"


def originals_cache(recipe: UnlearnRecipe) -> Path:
    """Where trained θ₀ (and Retrain) folders are cached, keyed by their settings."""
    return Path(recipe.original.cache_dir) if recipe.original.cache_dir else default_cache_dir() / "originals"


def default_cache_dir() -> Path:
    """$HF_NEGMERGE_CACHE, else $XDG_CACHE_HOME/hf_negmerge, else ~/.cache/hf_negmerge."""
    root = os.environ.get("HF_NEGMERGE_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    )
    return Path(root) / "hf_negmerge"


def original_training_split(recipe: UnlearnRecipe, data: UnlearningData) -> Any:
    """What θ₀ trains on: the train split minus the held-out retain validation rows.

    Validation rows must be unseen by θ₀, or the retain constraint of the λ search measures
    memorised samples and lets through a λ that hurts held-out accuracy. Rows carved out of the
    train split as test rows (data.test_split: null) are left out too.
    """
    from datasets import concatenate_datasets

    if data.retain_train is not None:
        return concatenate_datasets([data.forget_train, retain_without_validation(data)])
    train = load_image_dataset(
        recipe.data.dataset,
        split=recipe.data.train_split,
        image_column=recipe.data.image_column,
        label_column=recipe.data.label_column,
        class_names=recipe.data.class_names,
        label_mapping=recipe.data.label_mapping,
    )
    if data.class_names is not None and class_names_of(train) != data.class_names:
        train = align_to_labels(train, data.class_names, "θ₀ training split")
    if data.test_carved:
        held_out = set(data.forget_test[SOURCE_INDEX_COLUMN])
        if recipe.data.validation_from == "test":
            held_out |= set(data.forget_val[SOURCE_INDEX_COLUMN])
        train = train.filter(
            lambda _, index: index not in held_out,
            with_indices=True,
            new_fingerprint=_fingerprint_without(train, "row", held_out),
        )
    return train


def retain_without_validation(data: UnlearningData) -> Any:
    """retain_train minus the retain validation rows (which the data stage carves inside it)."""
    if data.retain_val is None:
        return data.retain_train
    held_out = set(data.retain_val[SOURCE_INDEX_COLUMN])
    return data.retain_train.filter(
        lambda index: index not in held_out,
        input_columns=SOURCE_INDEX_COLUMN,
        new_fingerprint=_fingerprint_without(data.retain_train, SOURCE_INDEX_COLUMN, held_out),
    )


def _fingerprint_without(dataset: Any, key: str, held_out: set[int]) -> str:
    """The fingerprint of `dataset` less the `held_out` rows (by `key`), from what is removed.

    θ₀'s cache key covers its training split's fingerprint; datasets would derive it from the
    filter function's module and name, so moving this code would retrain every cached θ₀.
    """
    removed = ",".join(str(index) for index in sorted(held_out))
    return hashlib.sha256(f"{dataset._fingerprint}|{key}|{removed}".encode()).hexdigest()[:16]


def model_label_names(recipe: UnlearnRecipe) -> list[str] | None:
    """The labels θ₀'s head already has, in id order; the data's classes are mapped onto them by name.

    None when the head is made from the data's class names: tiny models, a CLIP zero-shot head
    built from a pretrained folder, or a ViT/ResNet whose head is replaced (model.replace_head).
    """
    from .models import CLASSIFIER_METADATA_FILE, CLASSIFIER_REGISTRY
    from .models._source import fetch_file, resolve_weights_source
    from .models.vit import pretrained_labels

    if recipe.original.path is not None:
        metadata = fetch_file(resolve_weights_source(recipe.original.path), CLASSIFIER_METADATA_FILE)
        if metadata is None:
            raise ConfigError(
                f"original.path={recipe.original.path!r} has no {CLASSIFIER_METADATA_FILE}: it was not "
                "saved by hf-negmerge. For a plain pretrained model folder set model.name_or_path instead."
            )
        return list(json.loads(metadata.read_text(encoding="utf-8"))["class_names"])
    model = recipe.model
    if (
        model.name_or_path is None
        or not CLASSIFIER_REGISTRY[model.architecture].has_trained_head
        or model.replace_head
    ):
        return None
    return pretrained_labels(resolve_weights_source(model.name_or_path, model.revision))


def note_validation_source(recipe: UnlearnRecipe, data: UnlearningData) -> None:
    """Warn when validation rows may be rows a user's pretrained θ₀ was trained on."""
    pretrained = recipe.original.path is not None or (
        recipe.model.name_or_path is not None and not recipe.original.train
    )
    if pretrained and recipe.data.validation_split is None and recipe.data.validation_from == "train":
        data.validation_warning = (
            f"validation rows were carved from data.train_split={recipe.data.train_split!r}, which the "
            "pretrained original model may have been trained on: λ is then chosen on memorised rows. Set "
            "data.validation_split to a held-out split, or data.validation_from: test."
        )
        logger.warning(data.validation_warning)


def _source_record(recipe: UnlearnRecipe, class_names: list[str]) -> dict[str, Any]:
    """What work/original is built from: the model's settings, its weights' hash, the class names."""
    from .models._source import resolve_weights_source, source_weights_sha256

    model = recipe.model
    sha256 = None
    if model.name_or_path is not None:
        sha256 = source_weights_sha256(resolve_weights_source(model.name_or_path, model.revision))
    return {
        "name_or_path": model.name_or_path,
        "sha256": sha256,
        "model": model.to_dict(),
        "class_names": class_names,
    }


def prepare_original(
    recipe: UnlearnRecipe, data: UnlearningData, work: Path, progress: bool, use_packaged: bool = True
) -> Path:
    """θ₀'s classifier folder: given, trained here (cached), or built from `model` and saved.

    `use_packaged=False` trains even when the package ships this θ₀ (how
    `scripts/build_default_original.py` builds it).

    A folder built from `model` in an earlier run is reused only if the model's weights and
    settings are unchanged; otherwise the runs beside it belong to another θ₀ and this refuses.
    """
    from .checkpoints import atomic_write_text
    from .models import build_classifier
    from .training.pretrain import prepare_original_model

    if recipe.model.replace_head and not recipe.original.train:
        raise ConfigError(
            "model.replace_head: true gives the model a new, randomly initialised head, so θ₀ would score "
            "at chance. Set original.train: true to train θ₀ here, or keep the model's head and map the "
            "dataset's classes onto its labels (data.label_mapping)."
        )
    if recipe.original.path is not None:
        return Path(recipe.original.path)
    if data.class_names is None:
        raise ConfigError("The forget dataset has no class names; set data.class_names (CLIP needs them).")
    if recipe.original.train:
        return prepare_original_model(
            recipe.model,
            original_training_split(recipe, data),
            originals_cache(recipe),
            epochs=recipe.original.epochs,
            learning_rate=recipe.original.learning_rate,
            batch_size=recipe.original.batch_size,
            seed=recipe.seed,
            class_names=data.class_names,
            progress=progress,
            use_packaged=use_packaged,
        )
    target = work / "original"
    source = json.loads(json.dumps(_source_record(recipe, data.class_names)))
    if (target / "hf_negmerge_classifier.json").is_file():
        record_path = target / ORIGINAL_SOURCE_FILE
        recorded = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else None
        if recorded == source:
            return target
        if recorded is None:
            changed = f"{target} has no {ORIGINAL_SOURCE_FILE}, so what it was built from cannot be checked"
        elif recorded["sha256"] != source["sha256"]:
            changed = (
                f"θ₀ weights changed: {str(recorded['sha256'])[:16]} → {str(source['sha256'])[:16]} "
                f"(model.name_or_path={source['name_or_path']!r}, was {recorded['name_or_path']!r})"
            )
        else:
            keys = sorted(k for k in source["model"] if source["model"][k] != recorded["model"].get(k))
            changed = (
                f"θ₀ settings changed: model.{', model.'.join(keys)}"
                if keys
                else (f"θ₀ class names changed: {recorded['class_names']} → {source['class_names']}")
            )
        raise ConfigError(
            f"{recipe.output_dir} was built from another original model: {changed}. Its runs belong to "
            "that model; choose another output_dir."
        )
    build_classifier(recipe.model, data.class_names).save_pretrained(target)
    atomic_write_text(target / ORIGINAL_SOURCE_FILE, json.dumps(source, indent=2) + "\n")
    return target


def describe_original(recipe: UnlearnRecipe, base_dir: Path) -> dict[str, Any]:
    """What θ₀ actually was, for metrics.json: where it came from and the sha256 of its weights."""
    from .models._source import resolve_weights_source, source_weights_sha256, weights_sha256
    from .training.packaged import packaged_original_record

    model = recipe.model
    record: dict[str, Any] = {"sha256": weights_sha256(base_dir)}
    if recipe.original.path is not None:
        record.update(base_model=recipe.original.path, source="original.path")
    elif recipe.original.train:
        record.update(base_model=str(base_dir), source="original.train", trained_from=model.name_or_path)
        record.update(packaged_original_record(base_dir))  # θ₀ shipped in the package: say so
        record.update(_training_accuracy(base_dir))  # how well θ₀ fit its rows: a failed training shows
    elif model.name_or_path is not None:
        record.update(base_model=model.name_or_path, source="model.name_or_path", folder=str(base_dir))
        record["source_sha256"] = source_weights_sha256(
            resolve_weights_source(model.name_or_path, model.revision)
        )
    else:
        record.update(base_model=str(base_dir), source="model (tiny, built from config)")
    return record


def _training_accuracy(base_dir: Path) -> dict[str, float]:
    """`{"train_accuracy": fraction}` from the folder's θ₀ training record, when it has one."""
    from .training.pretrain import PRETRAIN_RECORD_FILE

    record_path = base_dir / PRETRAIN_RECORD_FILE
    if not record_path.is_file():
        return {}
    accuracy = json.loads(record_path.read_text(encoding="utf-8")).get("train_accuracy")
    return {} if accuracy is None else {"train_accuracy": float(accuracy)}


def prepare_retrained(recipe: UnlearnRecipe, data: UnlearningData, progress: bool) -> Path | None:
    """A model trained from scratch like θ₀ but without the forget set (the 'Retrain' reference)."""
    from .training.pretrain import prepare_original_model

    if data.retain_train is None:
        logger.warning("Retrain reference skipped: scenario %r has no retain set.", data.scenario)
        return None
    retain = retain_without_validation(data)  # the same rows θ₀ saw, less the forget set
    cache = originals_cache(recipe)
    return prepare_original_model(
        recipe.model,
        retain,
        cache,
        epochs=recipe.evaluation.retrain_epochs or recipe.original.epochs,
        learning_rate=recipe.original.learning_rate,
        batch_size=recipe.original.batch_size,
        seed=recipe.seed,
        class_names=data.class_names,
        progress=progress,
    )
