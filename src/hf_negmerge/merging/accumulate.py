"""Merge whole task vectors: in memory, as runs finish (resumable), or streamed from disk.

`MergeAccumulator` folds one run's task vector at a time; its state is one merger per tensor,
so memory is a small multiple of one model whatever the number of runs. `merge_checkpoints`
walks tensor by tensor over N checkpoint folders, so it never holds more than one tensor per
run in memory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..checkpoints import CheckpointReader, save_safetensors
from ..config import MergeConfig, NegMergeConfig
from ..errors import CheckpointError, ConfigError, MergeError
from ..folder_kinds import check_distinct_weights, check_weight_content, check_weight_dtypes
from ..key_space import KeyNames
from ..task_vector import TaskVector, check_compatible, check_finite, select_keys
from .base import MergeSession, TensorMerger, accumulation_dtype, get_merge_method
from .stats import MergeStats, TensorStats
from .streaming import fold_tensors

_STATE_METADATA_KEY = "hf_negmerge_accumulator"


@dataclass
class MergeResult:
    task_vector: TaskVector
    stats: MergeStats


def _tensor_stats(merged: torch.Tensor) -> TensorStats:
    return TensorStats(merged.numel(), int(torch.count_nonzero(merged)), float(merged.double().norm()))


def _assemble(
    tensors: dict[str, torch.Tensor],
    per_tensor: dict[str, TensorStats],
    config: MergeConfig,
    squared_norms: list[float],
) -> MergeResult:
    num_models = len(squared_norms)
    stats = MergeStats(config.method, num_models, per_tensor, [math.sqrt(value) for value in squared_norms])
    metadata = {"method": config.method, "num_models": num_models, "config": config.to_dict()}
    return MergeResult(TaskVector(tensors, metadata), stats)


class MergeAccumulator:
    """Fold task vectors in one at a time; `result()` gives the merge of everything added.

    With `run_id`s the accumulator remembers what it has folded, and `save`/`load` persist its
    running state, so a grid that is killed resumes without folding any run twice.

    `key_names` (`KeyNames.of(base_model)`) lets include/exclude patterns use runtime names
    and checks each against all of the model's tensors; without it each pattern must match a
    tensor of the task vector itself.
    """

    def __init__(self, config: MergeConfig | None = None, key_names: KeyNames | None = None) -> None:
        self.config = config or NegMergeConfig()
        self.key_names = key_names
        self.method = get_merge_method(self.config.method)
        self.session = self.method.start(self.config)
        self.mergers: dict[str, TensorMerger] = {}
        self.squared_norms: list[float] = []
        self.run_ids: list[str] = []

    @property
    def count(self) -> int:
        return len(self.squared_norms)

    def add(self, task_vector: TaskVector, run_id: str | None = None) -> None:
        if run_id is not None and run_id in self.run_ids:
            raise MergeError(f"Run '{run_id}' was already folded into this accumulator.")
        names = self.key_names or KeyNames.identity(task_vector.keys(), f"task vector #{self.count + 1}")
        keys = select_keys(task_vector.keys(), self.config.include, self.config.exclude, names)
        if not keys:
            raise MergeError(
                f"No tensor of the task vector matches include={self.config.include} exclude={self.config.exclude}."
            )
        if self.mergers and set(keys) != set(self.mergers):
            difference_keys = sorted(set(keys) ^ set(self.mergers))
            raise CheckpointError(
                f"Task vector #{self.count + 1} covers different tensors than the first, e.g. "
                f"{', '.join(difference_keys[:5])}. Task vectors are keyed by checkpoint names: build those "
                "from live state dicts in runtime names with model= so they are translated."
            )
        if self.method.max_models is not None and self.count >= self.method.max_models:
            self.method.check_count(self.count + 1)
        if self.session.needs_run_pass:  # e.g. original TIES: this run's whole-model trim threshold
            self.session.begin_run(self.count, (task_vector.tensors[key] for key in keys))
        squared_norm = 0.0
        for key in keys:
            tensor = task_vector.tensors[key]
            tensor_norm = float(torch.linalg.vector_norm(tensor, dtype=torch.float64))
            if not math.isfinite(tensor_norm):
                check_finite(tensor, key, f"task vector #{self.count + 1}")
            merger = self.mergers.get(key)
            if merger is None:
                merger = self.mergers[key] = self.session.new_merger()
            elif merger.shape != tuple(tensor.shape):
                check_compatible(
                    merger.shape, tensor.shape, key, "first task vector", f"task vector #{self.count + 1}"
                )
            merger.add(tensor)
            squared_norm += tensor_norm**2
        self.squared_norms.append(squared_norm)
        if run_id is not None:
            self.run_ids.append(run_id)

    def result(self) -> MergeResult:
        self.method.check_count(self.count)
        self.session.finish(self.mergers.values())
        tensors = {key: merger.result() for key, merger in self.mergers.items()}
        per_tensor = {key: _tensor_stats(merged) for key, merged in tensors.items()}
        return _assemble(tensors, per_tensor, self.config, self.squared_norms)

    def save(self, path: str | Path) -> Path:
        """Persist the running state (one safetensors file, written atomically)."""
        tensors = {
            f"{key}::{name}": value
            for key, merger in self.mergers.items()
            for name, value in merger.state().items()
        }
        header = {
            "config": self.config.to_dict(),
            "squared_norms": self.squared_norms,
            "run_ids": self.run_ids,
            "keys": list(self.mergers),
        }
        save_safetensors(tensors, path, metadata={_STATE_METADATA_KEY: json.dumps(header)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, key_names: KeyNames | None = None) -> MergeAccumulator:
        reader = CheckpointReader(path)
        raw = reader.metadata.get(_STATE_METADATA_KEY)
        if raw is None:
            raise CheckpointError(f"{path} is not a saved MergeAccumulator state.")
        try:
            header = json.loads(raw)
            accumulator = cls(_config_of(header["config"]), key_names)
            accumulator.squared_norms = list(header["squared_norms"])
            accumulator.run_ids = list(header["run_ids"])
            keys = list(header["keys"])
        except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as error:
            raise CheckpointError(f"{path}: corrupt MergeAccumulator state header ({error}).") from error
        for key in keys:
            merger = accumulator.session.new_merger()
            merger.load_state(
                {name: reader[f"{key}::{name}"] for name in merger.state_fields}, accumulator.count
            )
            accumulator.mergers[key] = merger
        return accumulator


def _config_of(values: dict) -> MergeConfig:
    """The config a state was saved with: a `NegMergeConfig` when it holds the λ-search keys."""
    merge_keys = {field.name for field in dataclasses.fields(MergeConfig)}
    return (MergeConfig if set(values) <= merge_keys else NegMergeConfig).from_dict(values)


def merge_task_vectors(
    task_vectors: Iterable[TaskVector],
    config: MergeConfig | None = None,
    key_names: KeyNames | None = None,
) -> MergeResult:
    """Merge task vectors held in memory (any iterable: a generator keeps only one alive).

    `key_names`: see `MergeAccumulator` (patterns in runtime names, checked against the model).
    """
    accumulator = MergeAccumulator(config, key_names)
    for task_vector in task_vectors:
        accumulator.add(task_vector)
    return accumulator.result()


def _identity(path: str | Path) -> tuple[int, int] | str:
    """What makes two paths the same checkpoint: device and inode (symlinks, bind mounts), else the real path."""
    try:
        status = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (status.st_dev, status.st_ino)


def check_distinct_inputs(base: str | Path, finetuned: Sequence[str | Path]) -> None:
    """Refuse a checkpoint given twice, or the base given as a fine-tuned run.

    Either would pass silently and weight one run twice, or add a zero task vector that vetoes
    every sign consensus.
    """
    seen: dict[tuple[int, int] | str, str] = {_identity(base): f"the base {base}"}
    for path in finetuned:
        identity = _identity(path)
        if identity in seen:
            raise MergeError(
                f"The fine-tuned run {path} is the same checkpoint as {seen[identity]} "
                "(same folder, possibly through a symlink); give each run once and not the base."
            )
        seen[identity] = f"the fine-tuned run {path}"


def merge_checkpoints(
    base: str | Path,
    finetuned: Sequence[str | Path],
    config: MergeConfig | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> MergeResult:
    """Merge N fine-tuned checkpoint folders against their base, tensor by tensor from disk.

    Every folder is checked (keys, shapes) before any arithmetic, so a mismatch is reported
    with its file and key before minutes of work. Unanimous NegMerge on float32 safetensors goes
    through the compiled fold (`kernel`, `streaming.fold_compiled`): per worker, one block of
    each file is read into buffers it reuses (at most `streaming.COMPILED_BUFFER_BYTES`), so peak
    memory is the merged vector plus those buffers. Other elementwise methods (uniform, MagMax,
    k-of-n NegMerge) fold cache-sized blocks through all runs straight from the mapped files,
    adding at most `streaming.RELEASE_BYTES` of mapped pages plus one block (and the kernel's
    look-ahead) per run and worker. Whole-tensor methods (TIES) hold one tensor per run per worker.
    `workers` threads fold tensors in parallel (default: torch's thread count; each torch op
    then runs on one thread while the merge lasts).
    """
    config = config or NegMergeConfig()
    method = get_merge_method(config.method)
    method.check_count(len(finetuned))
    check_distinct_inputs(base, finetuned)
    session = method.start(config)
    base_reader = CheckpointReader(base)
    readers = [CheckpointReader(path) for path in finetuned]
    for reader in (base_reader, *readers):  # folders were checked when resolved; a file is here
        if reader.path.is_file():
            check_weight_content(reader.files)
    labelled = [(f"base {base_reader.path}", base_reader)]
    check_distinct_weights(labelled + [(f"fine-tuned run {reader.path}", reader) for reader in readers])
    check_weight_dtypes(base_reader, readers)
    # runtime names need the model built from config.json (imports transformers): only for patterns
    names = KeyNames.of_folder(base, base_reader.keys()) if config.include or config.exclude else None
    keys = [
        key
        for key in select_keys(base_reader.keys(), config.include, config.exclude, names)
        if base_reader.dtype(key).is_floating_point
    ]
    if not keys:
        raise CheckpointError(
            f"No floating-point tensor of {base_reader.path} matches include/exclude patterns."
        )
    for reader in readers:
        selected = names.select(reader, config.include, config.exclude) if names is not None else reader
        extra = [key for key in selected if key not in base_reader]
        if extra:
            raise CheckpointError(
                f"The fine-tuned run {reader.path} has tensor(s) the base {base_reader.path} lacks: "
                + ", ".join(f"'{key}'" for key in extra[:5])
                + (" …" if len(extra) > 5 else "")
                + "; the checkpoints do not share an architecture (tensors outside the include patterns are not compared)."
            )
        for key in keys:
            if key not in reader:
                raise CheckpointError(
                    f"Tensor '{key}' of the base {base_reader.path} is missing from {reader.path}."
                )
            check_compatible(
                base_reader.shape(key), reader.shape(key), key, base_reader.path, reader.path_of(key)
            )
    if session.needs_run_pass:
        _run_pass(session, base_reader, readers, keys)
    workers = torch.get_num_threads() if workers is None else workers
    with tqdm(total=len(keys), desc=f"{config.method} merge", unit="tensor", disable=not progress) as bar:
        folded = fold_tensors(keys, session, base_reader, readers, workers, bar)
    session.finish(outcome.merger for outcome in folded.values() if outcome.merger is not None)
    tensors, per_tensor, squared_norms = {}, {}, [0.0] * len(readers)
    for key, outcome in folded.items():  # key order, whatever order the workers finished in
        tensors[key] = outcome.merged if outcome.merger is None else outcome.merger.result()
        per_tensor[key] = outcome.stats or _tensor_stats(tensors[key])
        for index, value in enumerate(outcome.squared_norms):
            squared_norms[index] += value
    return _assemble(tensors, per_tensor, config, squared_norms)


def _run_pass(
    session: MergeSession, base_reader: CheckpointReader, readers: Sequence[CheckpointReader], keys: list[str]
) -> None:
    """A session's pre-pass (e.g. original TIES' trim thresholds): one run at a time, every key.

    Task tensors are computed as the main pass computes them (checkpoint tensor minus base, both
    in the accumulation dtype), so a threshold compares against exactly the values later folded.
    """
    dtype = accumulation_dtype(session.config)
    for index, reader in enumerate(readers):
        session.begin_run(index, (reader[key].to(dtype) - base_reader[key].to(dtype) for key in keys))
