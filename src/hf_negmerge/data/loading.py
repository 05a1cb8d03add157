"""Load image-classification data from any usual place into canonical ``image`` / ``label`` columns.

Sources: ``datasets`` objects handed over from Python, the built-in ``"digits"``, a Hub dataset id, a local image folder, local parquet file(s) and a
``save_to_disk`` folder. Everything is validated here, before any training starts, so that a typo in a
column name or a corrupt image fails in seconds with a message naming the problem.

Longer than most modules (~620 lines): one job, any source into one canonical, validated dataset.
Detecting the source kind, loading it, mapping its columns and labels onto ``image`` / ``label`` and
validating the result are steps of that one function (`load_image_dataset`); the recipe checks and
the dry-run budget reuse the same source detection, so it is written once, here.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import datasets
import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from hf_negmerge.data.digits import load_digits_dataset
from hf_negmerge.errors import ConfigError, HubUnavailableError

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"
DEFAULT_IMAGE_CHECK_LIMIT = 10_000
DEFAULT_HUB_TIMEOUT_S = 5.0

PathLike: TypeAlias = str | os.PathLike
DataSource: TypeAlias = PathLike | Mapping[str, PathLike | Sequence[PathLike]] | Sequence[PathLike]
DatasetOrDict: TypeAlias = datasets.Dataset | datasets.DatasetDict

BUILTIN_DATASETS: dict[str, Callable[[], datasets.DatasetDict]] = {"digits": load_digits_dataset}

# A Hub id is "name" or "owner/name" made of letters, digits, '-', '_' and '.'.
_HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_TRUE_STRINGS = {"1", "on", "yes", "true"}
# A missing "name.parquet" is a mistyped local file, not a Hub id.
_LOCAL_FILE_SUFFIXES = {
    ".parquet",
    ".arrow",
    ".csv",
    ".json",
    ".jsonl",
    ".png",
    ".jpg",
    ".jpeg",
    ".zip",
    ".tar",
}


# --------------------------------------------------------------------------- source kinds


@dataclass(frozen=True)
class LoadOptions:
    """Options a source loader may use; each loader ignores what does not apply to it."""

    split: str | None = None
    revision: str | None = None
    config_name: str | None = None
    cache_dir: str | None = None
    hub_timeout_s: float = DEFAULT_HUB_TIMEOUT_S
    image_column: str = IMAGE_COLUMN


@dataclass(frozen=True)
class SourceKind:
    """One way of reading data: ``matches`` recognises a source, ``load`` reads it."""

    name: str
    matches: Callable[[Any], bool]
    load: Callable[[Any, LoadOptions], DatasetOrDict]


def _as_path(source: Any) -> Path | None:
    return Path(source).expanduser() if isinstance(source, (str, os.PathLike)) else None


def is_in_memory(source: Any) -> bool:
    """A `datasets.Dataset` or `DatasetDict` object handed over from Python (no path to read)."""
    return isinstance(source, (datasets.Dataset, datasets.DatasetDict))


def source_label(source: Any) -> str:
    """How messages and published files name a source: its path or id, or what an object holds."""
    if isinstance(source, datasets.DatasetDict):
        return f"in-memory DatasetDict (splits {', '.join(source)})"
    if isinstance(source, datasets.Dataset):
        return f"in-memory Dataset ({len(source)} rows)"
    return str(source)


def _is_builtin(source: Any) -> bool:
    return isinstance(source, str) and source in BUILTIN_DATASETS


def _is_saved_to_disk(source: Any) -> bool:
    path = _as_path(source)
    return (
        path is not None
        and path.is_dir()
        and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())
    )


def _is_parquet(source: Any) -> bool:
    if isinstance(source, Mapping) or (isinstance(source, Sequence) and not isinstance(source, str)):
        return True
    path = _as_path(source)
    if path is None:
        return False
    if path.is_file():
        return path.suffix == ".parquet"
    return path.is_dir() and any(path.rglob("*.parquet"))


def _is_image_folder(source: Any) -> bool:
    path = _as_path(source)
    return path is not None and path.is_dir()


def _is_hub_id(source: Any) -> bool:
    path = _as_path(source)
    return (
        isinstance(source, str)
        and path is not None
        and not path.exists()
        and not source.startswith((".", "/", "~"))
        and ".." not in source
        and path.suffix.lower() not in _LOCAL_FILE_SUFFIXES
        and _HUB_ID_PATTERN.match(source) is not None
    )


class MissingSplitError(ConfigError):
    """The source has no split of the requested name (callers add which setting named it)."""


def _select_split(data: DatasetOrDict, split: str | None, source_name: str) -> DatasetOrDict:
    if split is None:
        return data
    if isinstance(data, datasets.Dataset):
        raise MissingSplitError(
            f"{source_name} holds a single dataset without splits; it has no split {split!r} "
            "(pass split=None, or save a DatasetDict)"
        )
    if split not in data:
        raise MissingSplitError(f"{source_name} has no split {split!r}; available splits: {sorted(data)}")
    return data[split]


def _load_in_memory(source: DatasetOrDict, options: LoadOptions) -> DatasetOrDict:
    return _select_split(source, options.split, source_label(source))


def _load_builtin(source: str, options: LoadOptions) -> DatasetOrDict:
    return _select_split(BUILTIN_DATASETS[source](), options.split, f"built-in dataset {source!r}")


def _load_saved_to_disk(source: PathLike, options: LoadOptions) -> DatasetOrDict:
    root = Path(source).expanduser()
    # datasets writes no data file for a 0-row dataset and then cannot read the folder back.
    for state in [root / "state.json", *root.glob("*/state.json")]:
        if state.is_file() and not json.loads(state.read_text(encoding="utf-8")).get("_data_files"):
            where = f"saved dataset {str(source)!r}" + (
                f" split {state.parent.name!r}" if state.parent != root else ""
            )
            raise ConfigError(f"{where} is empty (0 rows, no data files)")
    data = datasets.load_from_disk(str(root))
    return _select_split(data, options.split, f"saved dataset {str(source)!r}")


def _load_with_builder(source_name: str, options: LoadOptions, *args: Any, **kwargs: Any) -> DatasetOrDict:
    """``datasets.load_dataset`` for local files, turning an unknown split into a ConfigError."""
    try:
        return datasets.load_dataset(*args, split=options.split, cache_dir=options.cache_dir, **kwargs)
    except datasets.exceptions.DatasetGenerationError as err:
        raise ConfigError(f"{source_name} cannot be read: {err.__cause__ or err}") from err
    except ValueError as err:
        if "Unknown split" in str(err):
            raise MissingSplitError(f"{source_name}: {err}") from err
        raise


def _load_parquet(source: DataSource, options: LoadOptions) -> DatasetOrDict:
    check_parquet_image_column(source, options.image_column)
    if isinstance(source, Mapping):
        files = {split: _parquet_file_list(paths) for split, paths in source.items()}
        return _load_with_builder(f"parquet files {files}", options, "parquet", data_files=files)
    if isinstance(source, Sequence) and not isinstance(source, str):
        files = _parquet_file_list(source)
        return _load_with_builder(f"parquet files {files}", options, "parquet", data_files=files)
    path = Path(source).expanduser()
    if path.is_file():
        return _load_with_builder(f"parquet file {str(path)!r}", options, "parquet", data_files=str(path))
    # Split names come from the file names (train-00000-of-00001.parquet, test.parquet, train/…).
    return _load_with_builder(f"parquet folder {str(path)!r}", options, "parquet", data_dir=str(path))


def check_parquet_image_column(source: DataSource, column: str) -> None:
    """Refuse a parquet source whose image column cannot hold images, naming the file.

    Read from each file's schema (the footer alone), so `--dry-run` can check it too; datasets
    would otherwise fail deep inside Arrow ("Unsupported cast from int64 to struct"). A file
    without the column is left to the column check, which lists the columns there are.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(source, Mapping):
        files = [file for paths in source.values() for file in _parquet_file_list(paths)]
    elif isinstance(source, Sequence) and not isinstance(source, str):
        files = _parquet_file_list(source)
    else:
        path = Path(source).expanduser()
        files = [str(path)] if path.is_file() else [str(file) for file in sorted(path.rglob("*.parquet"))]
    for file in files:
        try:
            schema = pq.read_schema(file)
        except (OSError, pa.ArrowException) as err:
            raise ConfigError(f"parquet file {file!r} cannot be read: {err}") from err
        if column not in schema.names:
            continue
        kind = schema.field(column).type
        fields = {kind.field(i).name for i in range(kind.num_fields)} if pa.types.is_struct(kind) else set()
        if not (
            pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or (fields and fields <= {"bytes", "path"})
        ):
            raise ConfigError(
                f"parquet file {file!r}: image column {column!r} holds {kind} values, which are not images; "
                "expected encoded image bytes (binary), image file paths (string) or a struct of bytes and "
                "path (what datasets.Image writes); if the images are in another column, name that one as the image column."
            )


def _parquet_file_list(paths: PathLike | Sequence[PathLike]) -> list[str]:
    listed = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = [str(Path(p).expanduser()) for p in listed]
    for file in files:
        if not Path(file).is_file():
            raise ConfigError(f"parquet file {file!r} does not exist")
    if not files:
        raise ConfigError("an empty list of parquet files was given")
    return files


def _load_image_folder(source: PathLike, options: LoadOptions) -> DatasetOrDict:
    # Class names come from the sub-folder names; splits from train/ test/ folders when present.
    path = str(Path(source).expanduser())
    return _load_with_builder(f"image folder {path!r}", options, "imagefolder", data_dir=path)


def hub_is_offline() -> bool:
    """True when HF_HUB_OFFLINE is set, read from huggingface_hub, datasets and the environment."""
    from huggingface_hub import constants

    env_value = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE or env_value in _TRUE_STRINGS)


def _hub_unavailable(repo_id: str, reason: str) -> HubUnavailableError:
    return HubUnavailableError(
        f"cannot load dataset {repo_id!r} from the Hugging Face Hub: {reason}. "
        "To work without the Hub, fetch it once on a connected machine "
        f"(datasets.load_dataset({repo_id!r}).save_to_disk('my_dataset')) and pass the local folder "
        "as the source instead (a save_to_disk folder, parquet file(s) or an image folder all work); "
        "with HF_HUB_OFFLINE=1 set before Python starts, Hub datasets already in the local cache are used."
    )


def _probe_hub(repo_id: str, timeout_s: float) -> None:
    """Fail within ``timeout_s`` when the Hub endpoint is unreachable, instead of after minutes of retries."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout_s)
    except Exception as err:  # any transport failure means the same thing to the user: no Hub
        raise _hub_unavailable(repo_id, f"{constants.ENDPOINT} is unreachable ({err})") from err


def _load_from_hub(repo_id: str, options: LoadOptions) -> DatasetOrDict:
    if hub_is_offline():
        if not datasets.config.HF_HUB_OFFLINE:
            # datasets read HF_HUB_OFFLINE at import time and would still go online (and retry).
            raise _hub_unavailable(repo_id, "HF_HUB_OFFLINE was set after datasets was imported")
    else:
        _probe_hub(repo_id, options.hub_timeout_s)
    try:
        return datasets.load_dataset(
            repo_id,
            options.config_name,
            split=options.split,
            revision=options.revision,
            cache_dir=options.cache_dir,
        )
    except datasets.exceptions.DatasetNotFoundError as err:
        raise ConfigError(f"Hub dataset {repo_id!r} was not found or is gated: {err}") from err
    except ConnectionError as err:
        reason = "offline mode is on and no cached copy exists" if hub_is_offline() else str(err)
        raise _hub_unavailable(repo_id, reason) from err
    except ValueError as err:
        if "Unknown split" in str(err):
            raise MissingSplitError(f"Hub dataset {repo_id!r}: {err}") from err
        raise


# Order matters: the first kind whose `matches` accepts the source reads it.
SOURCE_KINDS: dict[str, SourceKind] = {
    kind.name: kind
    for kind in (
        SourceKind("in_memory", is_in_memory, _load_in_memory),  # before parquet: a DatasetDict is a Mapping
        SourceKind("builtin", _is_builtin, _load_builtin),
        SourceKind("saved_to_disk", _is_saved_to_disk, _load_saved_to_disk),
        SourceKind("parquet", _is_parquet, _load_parquet),
        SourceKind("imagefolder", _is_image_folder, _load_image_folder),
        SourceKind("hub", _is_hub_id, _load_from_hub),
    )
}


def detect_source_kind(source: DataSource) -> str:
    """Name of the :data:`SOURCE_KINDS` entry that reads ``source``; ConfigError when none does."""
    for kind in SOURCE_KINDS.values():
        if kind.matches(source):
            return kind.name
    path = _as_path(source)
    if path is not None and not path.exists():
        raise ConfigError(
            f"dataset source {str(source)!r} is not a built-in dataset ({sorted(BUILTIN_DATASETS)}), "
            "not an existing file or folder, and not a Hub id like 'owner/name'"
        )
    raise ConfigError(
        f"cannot read dataset source {source!r}: expected a datasets.Dataset or "
        "DatasetDict object, a built-in name, a save_to_disk folder, parquet file(s), an image folder or a Hub id"
    )


# --------------------------------------------------------------------------- canonical columns


def _map_columns(dataset: datasets.Dataset, image_column: str, label_column: str, where: str):
    available = list(dataset.column_names)
    for role, column in (("image_column", image_column), ("label_column", label_column)):
        if column not in available:
            raise ConfigError(f"{where}: no column {column!r} ({role}); available columns: {available}")
    if image_column == label_column:
        raise ConfigError(f"{where}: image_column and label_column are both {image_column!r}")
    renames = {image_column: IMAGE_COLUMN, label_column: LABEL_COLUMN}
    for old, new in renames.items():
        if old != new and new in available and new not in renames:
            raise ConfigError(
                f"{where}: cannot rename column {old!r} to {new!r}: a column {new!r} already exists "
                f"(available columns: {available}); remove it first"
            )
    dataset = dataset.rename_columns({old: new for old, new in renames.items() if old != new})
    if not isinstance(dataset.features[IMAGE_COLUMN], datasets.Image):
        try:
            dataset = dataset.cast_column(IMAGE_COLUMN, datasets.Image())
        except (TypeError, ValueError, NotImplementedError) as err:  # Arrow's "unsupported cast" included
            raise ConfigError(
                f"{where}: column {image_column!r} holds {dataset.features[IMAGE_COLUMN]}, which is not "
                f"an image (expected image bytes, file paths or a datasets.Image feature): {err}"
            ) from err
    return dataset


def label_ids(dataset: datasets.Dataset) -> np.ndarray:
    """The label column as a numpy array, honouring any row selection on the dataset."""
    column = dataset.select_columns([LABEL_COLUMN]).with_format("arrow")[:][LABEL_COLUMN]
    if column.null_count:
        first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ConfigError(f"column {LABEL_COLUMN!r} is empty (null) in row {first}")
    return column.to_numpy(zero_copy_only=False)


def _names_are_ids(names: Sequence[str]) -> bool:
    """True for names "0", "1", … in id order: they say nothing beyond the position."""
    return list(names) == [str(index) for index in range(len(names))]


def _resolve_class_labels(
    dataset: datasets.Dataset, class_names: Sequence[str] | None, where: str
) -> datasets.Dataset:
    """Make ``label`` a ClassLabel when class names are known (from the feature or given explicitly).

    Given ``class_names`` name plain integer ids by position. Classes that already have names
    (a ClassLabel, string labels, image-folder sub-folders) are never renamed by position: the
    given names must be the same set, and only set the order (labels are remapped by name).
    The one exception is a ClassLabel named "0", "1", … in id order, whose names are the ids.
    """
    feature = dataset.features[LABEL_COLUMN]
    if isinstance(feature, datasets.ClassLabel):
        if class_names is None:
            return dataset
        if len(class_names) != feature.num_classes:
            raise ConfigError(
                f"{where}: {len(class_names)} class_names were given but the label feature has "
                f"{feature.num_classes} classes ({feature.names})"
            )
        if _names_are_ids(feature.names):
            return dataset.cast_column(LABEL_COLUMN, datasets.ClassLabel(names=list(class_names)))
        if set(class_names) != set(feature.names):
            raise ConfigError(
                f"{where}: the dataset names its classes {feature.names}; class_names {list(class_names)} "
                "would rename them by position, which is how labels get scrambled. class_names may only "
                "reorder the dataset's own names; to rename classes use label_mapping "
                "(data.label_mapping: {dataset_name: new_name})"
            )
        return remap_labels(dataset, list(class_names), where)
    dtype = getattr(feature, "dtype", None)
    if dtype in ("string", "large_string"):
        found = sorted({str(v) for v in label_ids(dataset)})
        names = list(class_names) if class_names is not None else found
        unknown = sorted(set(found) - set(names))
        if unknown:
            raise ConfigError(f"{where}: label values {unknown} are not among the class_names {names}")
        return dataset.cast_column(LABEL_COLUMN, datasets.ClassLabel(names=names))
    if dtype is None or not dtype.startswith(("int", "uint")):
        raise ConfigError(
            f"{where}: label column holds {feature}; expected integer class ids, class-name strings "
            "or a ClassLabel feature"
        )
    if class_names is None:
        return dataset
    check_labels_in_range(dataset, len(class_names), where)
    return dataset.cast_column(LABEL_COLUMN, datasets.ClassLabel(names=list(class_names)))


def remap_labels(dataset: datasets.Dataset, target_names: Sequence[str], where: str) -> datasets.Dataset:
    """Renumber a ClassLabel ``label`` column by name onto ``target_names`` (a superset of its names).

    Rows keep their order and other columns; only the ids change, so class ``"three"`` keeps its
    images whatever position it had before.
    """
    names = class_names_of(dataset)
    if names is None:
        raise ConfigError(f"{where}: the label column has no class names to map by name")
    target = list(target_names)
    missing = [name for name in names if name not in target]
    if missing:
        raise ConfigError(f"{where}: class(es) {missing} are not among {target}")
    if names == target:
        return dataset
    lookup = np.asarray([target.index(name) for name in names], dtype=np.int64)
    new_ids = lookup[label_ids(dataset)]
    # remove + add (not map): the fingerprint stays a hash of the ids, the same in every process
    remapped = dataset.remove_columns(LABEL_COLUMN).add_column(LABEL_COLUMN, new_ids)
    return remapped.cast_column(LABEL_COLUMN, datasets.ClassLabel(names=target))


def align_to_labels(dataset: datasets.Dataset, label_names: Sequence[str], where: str) -> datasets.Dataset:
    """Map the dataset's classes by name onto a classifier's labels (``label_names`` in id order).

    Plain integer labels are taken as the classifier's label ids. A class the classifier does not
    know is a ConfigError listing both lists: matching by position is how labels get scrambled.
    """
    target = list(label_names)
    names = class_names_of(dataset)
    if names is None:
        check_labels_in_range(dataset, len(target), where)
        return dataset.cast_column(LABEL_COLUMN, datasets.ClassLabel(names=target))
    missing = [name for name in names if name not in target]
    if missing:
        raise ConfigError(
            f"{where}: the dataset's {len(names)} classes {names} do not match the model's "
            f"{len(target)} labels {target}; not among the model's labels: {missing}. Labels are matched "
            "by name: map them with data.label_mapping: {dataset_name: model_label}, or set "
            "model.replace_head: true (with original.train: true) to train a new head for the dataset's classes"
        )
    return remap_labels(dataset, target, where)


def rename_classes(dataset: datasets.Dataset, mapping: Mapping[str, str], where: str) -> datasets.Dataset:
    """Rename classes by name (``{old: new}``); names not in ``mapping`` stay. Ids are unchanged."""
    names = class_names_of(dataset)
    if names is None:
        raise ConfigError(
            f"{where}: label_mapping renames classes by name, but the label column has no class names "
            "(plain integer ids); give class_names for the ids first"
        )
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise ConfigError(
            f"{where}: label_mapping key(s) {unknown} are not classes of the dataset; its classes: {names}"
        )
    renamed = [str(mapping.get(name, name)) for name in names]
    duplicates = sorted({name for name in renamed if renamed.count(name) > 1})
    if duplicates:
        raise ConfigError(
            f"{where}: label_mapping maps several classes onto {duplicates}; merging classes is not supported"
        )
    return dataset.cast_column(LABEL_COLUMN, datasets.ClassLabel(names=renamed))


# --------------------------------------------------------------------------- validation


def class_names_of(dataset: DatasetOrDict) -> list[str] | None:
    """Class names from the ``label`` ClassLabel feature, or None when labels are plain integers."""
    if isinstance(dataset, datasets.DatasetDict):
        dataset = next(iter(dataset.values()))
    feature = dataset.features.get(LABEL_COLUMN)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def require_class_names(
    source: DatasetOrDict | Sequence[str] | None, purpose: str = "this model"
) -> list[str]:
    """Class names or a ConfigError: e.g. a CLIP zero-shot head needs one text prompt per class."""
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        names = class_names_of(source)
    else:
        names = None if source is None else [str(name) for name in source]
    if not names:
        raise ConfigError(
            f"{purpose} needs class names, but none are known: the label column is not a ClassLabel "
            "feature and no class_names were given (set class_names, e.g. class_names: [airplane, car])"
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"{purpose}: class names must be unique; repeated: {duplicates}")
    return names


def check_labels_in_range(dataset: datasets.Dataset, num_classes: int, where: str = "dataset") -> None:
    """ConfigError naming the first row whose label is not in ``0 .. num_classes - 1``."""
    labels = label_ids(dataset)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        row = int(bad[0])
        raise ConfigError(
            f"{where}: label {labels[row]} in row {row} is outside the {num_classes} classes "
            f"(valid ids 0..{num_classes - 1}); {bad.size} rows are out of range"
        )


def check_images_decode(
    dataset: datasets.Dataset, limit: int | None = DEFAULT_IMAGE_CHECK_LIMIT, where: str = "dataset"
) -> int:
    """Decode the first ``limit`` images (all when None); ConfigError names the first bad row.

    Returns the number of images checked. Decoding is the only reliable test: a file can have an
    image extension and still be truncated or not an image at all.
    """
    count = len(dataset) if limit is None else min(limit, len(dataset))
    raw = dataset.select(range(count)).select_columns([IMAGE_COLUMN])
    raw = raw.cast_column(IMAGE_COLUMN, datasets.Image(decode=False))
    row = 0
    with tqdm(total=count, desc=f"checking images ({where})", unit="img", disable=count < 5000) as bar:
        for batch in raw.iter(batch_size=256):
            for value in batch[IMAGE_COLUMN]:
                _decode_or_raise(value, row, where)
                row += 1
            bar.update(len(batch[IMAGE_COLUMN]))
    return count


def _decode_or_raise(value: Mapping[str, Any] | None, row: int, where: str) -> None:
    if value is None or (value.get("bytes") is None and value.get("path") is None):
        raise ConfigError(f"{where}: row {row} has no image")
    origin = value.get("path") or "embedded bytes"
    try:
        if value.get("bytes") is not None:
            image = PIL.Image.open(io.BytesIO(value["bytes"]))
        else:
            image = PIL.Image.open(value["path"])
        with image:
            image.load()
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        raise ConfigError(f"{where}: image in row {row} ({origin}) cannot be decoded: {err}") from err


def validate_image_dataset(
    dataset: datasets.Dataset,
    where: str = "dataset",
    image_check_limit: int | None = DEFAULT_IMAGE_CHECK_LIMIT,
) -> None:
    """Non-empty, labels inside the class names (when known), images decodable."""
    if len(dataset) == 0:
        raise ConfigError(f"{where} is empty (0 rows)")
    names = class_names_of(dataset)
    if names is not None:
        check_labels_in_range(dataset, len(names), where)
    else:
        negative = np.flatnonzero(label_ids(dataset) < 0)
        if negative.size:
            raise ConfigError(f"{where}: label in row {int(negative[0])} is negative")
    if image_check_limit != 0:
        check_images_decode(dataset, image_check_limit, where)


# --------------------------------------------------------------------------- entry point


def load_image_dataset(
    source: DataSource,
    split: str | None = None,
    image_column: str = IMAGE_COLUMN,
    label_column: str = LABEL_COLUMN,
    class_names: Sequence[str] | None = None,
    *,
    revision: str | None = None,
    config_name: str | None = None,
    cache_dir: str | None = None,
    validate: bool = True,
    image_check_limit: int | None = DEFAULT_IMAGE_CHECK_LIMIT,
    hub_timeout_s: float = DEFAULT_HUB_TIMEOUT_S,
    label_mapping: Mapping[str, str] | None = None,
) -> DatasetOrDict:
    """Read ``source`` and return it with columns ``image`` (datasets.Image) and ``label``.

    ``source``: a ``datasets.Dataset`` / ``DatasetDict`` object, ``"digits"``, a Hub id (``"owner/name"``), an image folder (class sub-folders, optionally
    under ``train/`` and ``test/``), a ``.parquet`` file / folder / list / ``{split: files}`` mapping, or a
    ``save_to_disk`` folder. ``split`` picks one split (a ``Dataset`` is returned), ``None`` keeps all
    (a ``DatasetDict``). ``image_column`` / ``label_column`` are renamed to ``image`` / ``label``.
    ``class_names`` name plain integer label ids by position, or set the order of classes that already
    have names (same names required: a named class is never renamed by position) and turn string labels
    into ids. ``label_mapping`` ``{old: new}`` renames classes by name. With ``validate`` every split is checked (non-empty, labels in range, the first
    ``image_check_limit`` images decode; None checks all, 0 none). Raises ConfigError or HubUnavailableError.
    """
    if class_names is not None:
        class_names = require_class_names(class_names, purpose="class_names")
    kind = SOURCE_KINDS[detect_source_kind(source)]
    options = LoadOptions(split, revision, config_name, cache_dir, hub_timeout_s, image_column)
    loaded = kind.load(source, options)
    if is_in_memory(source):
        name = source_label(source)
    elif isinstance(source, (str, os.PathLike)):
        name = f"dataset {str(source)!r}"
    else:
        name = "parquet dataset"
    if isinstance(loaded, datasets.Dataset):
        return _standardise(
            loaded, image_column, label_column, class_names, name, validate, image_check_limit, label_mapping
        )
    standardised = datasets.DatasetDict(
        {
            split_name: _standardise(
                part,
                image_column,
                label_column,
                class_names,
                f"{name} split {split_name!r}",
                validate,
                image_check_limit,
                label_mapping,
            )
            for split_name, part in loaded.items()
        }
    )
    _check_same_class_names(standardised, name)
    return standardised


def _standardise(
    dataset: datasets.Dataset,
    image_column: str,
    label_column: str,
    class_names: Sequence[str] | None,
    where: str,
    validate: bool,
    image_check_limit: int | None,
    label_mapping: Mapping[str, str] | None = None,
) -> datasets.Dataset:
    dataset = _map_columns(dataset, image_column, label_column, where)
    dataset = _resolve_class_labels(dataset, class_names, where)
    if label_mapping:
        dataset = rename_classes(dataset, label_mapping, where)
    if validate:
        validate_image_dataset(dataset, where, image_check_limit)
    return dataset


def _check_same_class_names(data: datasets.DatasetDict, name: str) -> None:
    per_split = {split: class_names_of(part) for split, part in data.items()}
    if len({tuple(names) if names else None for names in per_split.values()}) > 1:
        raise ConfigError(f"{name}: splits disagree on the class names: {per_split}")
