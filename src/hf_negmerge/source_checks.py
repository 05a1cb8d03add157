"""Source checks: what a recipe's local paths hold, seen without loading data or weights.

`check_sources` runs before `--dry-run` prints its plan and before a real run starts, so a wrong
folder or split name fails at once, naming the recipe key, instead of after hours of training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError
from .recipe import UnlearnRecipe


def check_sources(recipe: UnlearnRecipe) -> list[str]:
    """Check that the recipe's local paths exist and hold the splits it names, loading nothing.

    Raises ConfigError naming the recipe key to fix; returns a note for each source it could
    not check (Hub ids: `--dry-run` downloads nothing).
    """
    data = recipe.data
    named = {
        "data.train_split": data.train_split,
        "data.test_split": data.test_split,  # None: carved from train (data.test_fraction)
        "data.validation_split": data.validation_split,
    }
    forget_splits = {key: split for key, split in named.items() if split is not None}
    output = Path(recipe.output_dir).expanduser()
    if output.exists() and not output.is_dir():
        raise ConfigError(
            f"output_dir={recipe.output_dir!r} is a file; name a folder (new or from an earlier run)."
        )
    notes = _check_model_folder(recipe.model.name_or_path)
    notes += _check_original_folder(recipe.original.path)
    notes += _check_dataset("data.dataset", data.dataset, forget_splits, data.image_column)
    if data.control_dataset is not None:
        control_splits = {"data.control_test_split": data.control_test_split}
        if data.control_validation_split is not None:
            control_splits["data.control_validation_split"] = data.control_validation_split
        elif data.control_validation_from == "train":
            control_splits["data.control_train_split"] = data.control_train_split
        notes += _check_dataset(
            "data.control_dataset", data.control_dataset, control_splits, data.control_image_column
        )
    return notes


def _local_path(value: Any) -> Path | None:
    """The local path `value` names, or None when it is a Hub id (the data loader's rule)."""
    from .data.loading import _as_path, _is_hub_id

    return None if _is_hub_id(value) else _as_path(value)


def _not_checked(key: str, value: Any) -> list[str]:
    from .data.loading import hub_is_offline

    why = "not checked offline" if hub_is_offline() else "not checked (--dry-run downloads nothing)"
    return [f"{key}={value!r} is a Hub id: {why}"]


def _existing(key: str, value: Any, path: Path, what: str) -> Path:
    if not path.exists():
        raise ConfigError(
            f"{key}={value!r}: no such {what} ({path.resolve()}); a Hub id would look like 'owner/name'."
        )
    return path


def _check_model_folder(name_or_path: str | None) -> list[str]:
    if name_or_path is None:
        return []
    path = _local_path(name_or_path)
    if path is None:
        return _not_checked("model.name_or_path", name_or_path)
    if not _existing("model.name_or_path", name_or_path, path, "folder").is_dir():
        raise ConfigError(
            f"model.name_or_path={name_or_path!r} is a file; give the folder that holds config.json."
        )
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.name_or_path={name_or_path!r} has no config.json; give a folder written by "
            "save_pretrained (transformers) or a Hub id."
        )
    return []


def _check_original_folder(folder: str | None) -> list[str]:
    from .models.base import CLASSIFIER_METADATA_FILE

    if folder is None:
        return []
    path = _local_path(folder)
    if path is None:
        return _not_checked("original.path", folder)
    if not _existing("original.path", folder, path, "folder").is_dir():
        raise ConfigError(f"original.path={folder!r} is a file; give a classifier folder.")
    if (path / CLASSIFIER_METADATA_FILE).is_file():
        return []
    if (path / "config.json").is_file():
        raise ConfigError(
            f"original.path={folder!r} is a plain pretrained folder (no {CLASSIFIER_METADATA_FILE}), not a "
            f"classifier saved by hf-negmerge. To start from its weights, set model.name_or_path={folder} "
            "instead and remove original.path."
        )
    raise ConfigError(
        f"original.path={folder!r} is not a classifier folder saved by hf-negmerge "
        f"(no {CLASSIFIER_METADATA_FILE} and no config.json)."
    )


def _check_dataset(key: str, source: Any, splits: dict[str, str], image_column: str) -> list[str]:
    """The named splits must be among those the source holds (found by listing, not loading), and
    parquet files must hold images in the image column (read from their schemas)."""
    from .data.loading import (
        BUILTIN_DATASETS,
        _parquet_file_list,
        check_parquet_image_column,
        detect_source_kind,
        is_in_memory,
        source_label,
    )

    if is_in_memory(source):
        _check_splits(key, source_label(source), splits, list(source) if isinstance(source, dict) else [])
        return []
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        available = list(BUILTIN_DATASETS[source]())
    elif isinstance(source, dict):
        for files in source.values():
            _named(key, _parquet_file_list, files)
        available = [str(split) for split in source]
    elif isinstance(source, list):
        _named(key, _parquet_file_list, source)
        available = ["train"]
    elif not isinstance(source, str):
        raise ConfigError(
            f"{key} must be a dataset name, a path, a list of parquet files, a {{split: files}} mapping "
            f"or (from Python, e.g. NegMergeUnlearner(dataset=...)) a datasets.DatasetDict, got "
            f"{type(source).__name__}."
        )
    else:
        path = _local_path(source)
        if path is None:
            return _not_checked(key, source)
        available = _local_splits(key, source, _existing(key, source, path, "file or folder"))
    _check_splits(key, source, splits, available)
    if _named(key, detect_source_kind, source) == "parquet":
        _named(key, check_parquet_image_column, source, image_column)
    return []


def _check_splits(key: str, source: Any, splits: dict[str, str], available: list[str]) -> None:
    for split_key, split in splits.items():
        if split not in available:
            raise ConfigError(
                f"{split_key}={split!r} is not a split of {key}={source!r}; splits found: {available}. "
                f"Set {split_key} to one of them."
            )


def _named(key: str, check: Any, *args: Any) -> Any:
    """Run one of the data loader's checks, naming the recipe key in its error."""
    try:
        return check(*args)
    except ConfigError as error:
        raise ConfigError(f"{key}: {error}") from error


def _local_splits(key: str, source: Any, path: Path) -> list[str]:
    """Split names of a local dataset, as `datasets` will name them when it loads it."""
    import json

    from datasets.data_files import EmptyDatasetError, get_data_patterns

    from .data.loading import detect_source_kind

    if _named(key, detect_source_kind, source) == "saved_to_disk":
        listing = path / "dataset_dict.json"
        if not listing.is_file():
            raise ConfigError(
                f"{key}={source!r} is a single saved Dataset without splits; save a DatasetDict "
                "(e.g. DatasetDict({'train': ..., 'test': ...}).save_to_disk(...))."
            )
        try:
            return [str(split) for split in json.loads(listing.read_text(encoding="utf-8"))["splits"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                f"{key}={source!r}: cannot read the split list in {listing}: {error}"
            ) from error
    if path.is_file():
        return ["train"]  # a single parquet file is one split, named "train" by datasets
    try:
        return [str(split) for split in get_data_patterns(str(path))]
    except EmptyDatasetError as error:
        raise ConfigError(f"{key}={source!r}: the folder holds no data files.") from error
