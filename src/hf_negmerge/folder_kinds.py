"""What a folder holds (model weights, a task vector, a merge output, a LoRA adapter), told by content.

File names do not say what a file holds: a run folder of `hf-negmerge unlearn` has one
`task_vector.safetensors`, a merge output one `merged_task_vector.safetensors`, and a reader that
takes "the one `.safetensors` file" for weights would merge differences as if they were weights
and report a plausible result. So a folder or file that must hold model weights is checked by what
its files carry before any work: the `hf_negmerge` metadata `TaskVector.save` writes into the
safetensors header, the accumulator state's own metadata key, the merge output marker, a PEFT
`adapter_config.json`, integer dtypes where float weights belong, and the identity (inode) and
content of every weight file, so one checkpoint given twice cannot count as two runs.

Only headers, small JSON files and a few sampled bytes are read; a weight file is hashed only when
its size, header and sampled bytes all equal another's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import CheckpointError
from .json_files import parse_json

if TYPE_CHECKING:
    from .checkpoints import CheckpointReader

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
TORCH_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
ADAPTER_WEIGHTS_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
#: the marker file of every output folder this tool writes (`checkpoints.OUTPUT_MARKER`)
OUTPUT_MARKER = ".hf_negmerge_output.json"

#: safetensors metadata key `TaskVector.save` writes (the vector's own metadata, as JSON)
TASK_VECTOR_METADATA_KEY = "hf_negmerge"
#: safetensors metadata key of a saved `MergeAccumulator` state
ACCUMULATOR_METADATA_KEY = "hf_negmerge_accumulator"
ADAPTER_CONFIG_NAME = "adapter_config.json"
#: names transformers loads weights from; a folder holding one of them is a model folder
MODEL_WEIGHT_NAMES = (
    SAFE_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    TORCH_WEIGHTS_NAME,
    TORCH_WEIGHTS_INDEX_NAME,
)
#: integer dtypes of quantized weights (int8/uint8 bitsandbytes, int32 GPTQ packs); int64 and bool
#: are the dtypes of real integer buffers (position ids, `num_batches_tracked`, masks)
QUANTIZED_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32)
REMERGE_HINT = (
    "To merge the task vectors of a grid again, merge them in Python: "
    "`hf_negmerge.merge_task_vectors((TaskVector.load(p) for p in runs), "
    "NegMergeConfig.from_pretrained(output_dir))` with the run's own settings (see docs/merging.md, "
    "'Merging a grid's runs again'), or pass the runs' `checkpoint/` folders (kept with "
    "keep_checkpoints) to `merge --finetuned`."
)
_SAMPLES = 16  # spread reads of the data section compared before a file is hashed
_SAMPLE_BYTES = 4096
_HASH_CHUNK = 1 << 20


def read_json_file(path: str | Path, what: str) -> Any:
    """The JSON value in `path`, or a `CheckpointError` naming the file and what it should hold
    (invalid JSON or UTF-8, an empty file, a repeated key, nesting too deep to walk)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path}: the {what} is not valid JSON ({error}).") from error
    except OSError as error:
        raise CheckpointError(f"{path}: the {what} cannot be read ({error.strerror or error}).") from error
    return parse_json(text, f"{path}: the {what}", CheckpointError)


def safetensors_header(path: Path) -> bytes | None:
    """The raw JSON header of a safetensors file (None when it has none that can be read)."""
    try:
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size <= 0 or size > os.fstat(handle.fileno()).st_size:
                return None
            return handle.read(size)
    except OSError:
        return None


def safetensors_metadata(path: Path) -> dict[str, Any]:
    """The `__metadata__` of a safetensors file ({} when it has none or is unreadable here)."""
    header = safetensors_header(path)
    try:
        values = json.loads(header) if header is not None else {}
    except (ValueError, RecursionError):
        return {}
    metadata = values.get("__metadata__") if isinstance(values, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _is_merge_output_vector(raw: object) -> bool:
    """True when a task vector's metadata is a merge result's (`method`, `num_models`)."""
    try:
        values = json.loads(raw) if isinstance(raw, str) else None
    except (ValueError, RecursionError):
        return False
    return isinstance(values, dict) and "method" in values and "num_models" in values


def not_weights_reason(file: Path, metadata: dict[str, Any]) -> str | None:
    """Why a safetensors file with this metadata is not model weights (None when it may be)."""
    if ACCUMULATOR_METADATA_KEY in metadata:
        return f"{file} is the saved state of a merge accumulator (hf-negmerge's running merge), not model weights."
    if TASK_VECTOR_METADATA_KEY not in metadata:
        return None
    if _is_merge_output_vector(metadata[TASK_VECTOR_METADATA_KEY]):
        return (
            f"{file} is the merged task vector of an hf-negmerge merge output, not model weights; "
            "a merge output cannot be a run or a base. Pass the fine-tuned models it was merged from, "
            "or its unlearned_model/ folder (written with --scale) where a model is meant."
        )
    return (
        f"{file} is a task vector saved by hf-negmerge (τ = θ_run − θ₀, with 'hf_negmerge' metadata), "
        f"not model weights: merging it as a checkpoint would subtract the base from a difference. {REMERGE_HINT}"
    )


def check_model_folder(path: Path) -> None:
    """Refuse a folder that holds something other than model weights, naming what it holds.

    Checked: a PEFT adapter (its config or weights), and, in a folder without a transformers
    weight file, the loose `.safetensors` files' metadata and the merge output marker.
    """
    if not path.is_dir():
        return
    adapter = [name for name in (ADAPTER_CONFIG_NAME, *ADAPTER_WEIGHTS_NAMES) if (path / name).is_file()]
    if adapter:
        raise CheckpointError(
            f"{path} is a PEFT (LoRA) adapter ({', '.join(adapter)}), not full model weights. Merge it into "
            "its base model first: `PeftModel.from_pretrained(base_model, folder).merge_and_unload()"
            ".save_pretrained(merged_folder)` and pass merged_folder; or build its task vector with "
            "`TaskVector.from_lora(base_model, folder)` and merge the vectors with `hf_negmerge.merge_task_vectors`."
        )
    if any((path / name).is_file() for name in MODEL_WEIGHT_NAMES):
        return
    for file in sorted(path.glob("*.safetensors")):
        reason = not_weights_reason(file, safetensors_metadata(file))
        if reason is not None:
            raise CheckpointError(reason)
    if (path / OUTPUT_MARKER).is_file():
        raise CheckpointError(
            f"{path} is an hf-negmerge output folder ({OUTPUT_MARKER}) without model weights; "
            "a merge output cannot be a run or a base."
        )


def check_weight_content(files: Sequence[Path]) -> None:
    """Refuse weight files whose safetensors metadata says they are a task vector or merge state."""
    for file in files:
        if file.suffix == ".safetensors":
            reason = not_weights_reason(file, safetensors_metadata(file))
            if reason is not None:
                raise CheckpointError(reason)


def _integer_message(source: CheckpointReader, key: str, expected: str) -> str:
    return (
        f"{source.path_of(key)}: tensor '{key}' has dtype {str(source.dtype(key)).removeprefix('torch.')}, "
        f"{expected}; quantized or integer weights cannot be merged. Give the float (unquantized) "
        "checkpoint, e.g. dequantize it and save it with save_pretrained."
    )


def check_weight_dtypes(base: CheckpointReader, runs: Sequence[CheckpointReader]) -> None:
    """Refuse integer tensors where float weights belong, naming the tensor, dtype and file.

    A tensor that is float on one side and integer on the other is refused, and so is a
    quantization dtype (int8, uint8, int16, int32) in the base. Integer buffers that are integer
    in the base and every run alike (int64 position ids, bool masks) pass through untouched.
    """
    for key in base:
        base_dtype = base.dtype(key)
        if base_dtype in QUANTIZED_DTYPES:
            raise CheckpointError(_integer_message(base, key, "a quantized weight dtype in the base"))
        for run in runs:
            if key not in run:
                continue
            run_dtype = run.dtype(key)
            if base_dtype.is_floating_point and not run_dtype.is_floating_point:
                raise CheckpointError(_integer_message(run, key, f"but {base_dtype} in the base {base.path}"))
            if run_dtype.is_floating_point and not base_dtype.is_floating_point:
                raise CheckpointError(_integer_message(base, key, f"but {run_dtype} in the run {run.path}"))


def _file_identity(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _content_sample(path: Path, size: int) -> str:
    """A digest of the header (safetensors) and `_SAMPLES` spread chunks of the file: cheap."""
    header = safetensors_header(path) if path.suffix == ".safetensors" else None
    digest = hashlib.blake2b(header or b"")
    with path.open("rb") as handle:
        for index in range(_SAMPLES):
            handle.seek(size * index // _SAMPLES)
            digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def _content_hash(path: Path) -> str:
    """A digest of every byte of the file."""
    digest = hashlib.blake2b()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(files: Sequence[Path], deep: bool) -> tuple:
    """What makes two checkpoints' weights the same bytes: sizes and samples, or (deep) hashes."""
    sizes = [file.stat().st_size for file in files]
    if deep:
        return tuple(sizes), tuple(_content_hash(file) for file in files)
    return tuple(sizes), tuple(_content_sample(file, size) for file, size in zip(files, sizes, strict=True))


def check_distinct_weights(sources: Sequence[tuple[str, CheckpointReader]]) -> None:
    """Refuse two checkpoints that share a weight file (hard link, symlink, a shard index pointing
    into another folder) or hold the same bytes (a copy), naming both.

    Either would count one run twice, or add a zero task vector (the base) that vetoes every
    sign consensus. Identity is `os.stat`'s device and inode; content is compared by size,
    header and sampled bytes first, and hashed only for checkpoints that agree on all three.
    """
    owners: dict[tuple[int, int], str] = {}
    for label, source in sources:
        for file in source.files:
            identity = _file_identity(file)
            if identity in owners and owners[identity] != label:
                raise CheckpointError(
                    f"The {label} and the {owners[identity]} share the weight file {file} (the same file, "
                    "through a hard link, symlink or shard index); give each checkpoint once and not the base."
                )
            owners[identity] = label
    groups: dict[tuple, list[str]] = {}
    by_label = dict(sources)
    for label, source in sources:
        groups.setdefault(_fingerprint(source.files, deep=False), []).append(label)
    for labels in groups.values():
        hashed: dict[tuple, str] = {}
        for label in labels if len(labels) > 1 else ():
            fingerprint = _fingerprint(by_label[label].files, deep=True)
            if fingerprint in hashed:
                raise CheckpointError(
                    f"The {label} holds the same weights, byte for byte, as the {hashed[fingerprint]} "
                    "(a copy); give each checkpoint once and not the base."
                )
            hashed[fingerprint] = label


def check_model_config(folder: Path, required: bool) -> dict[str, Any]:
    """A model folder's `config.json` as a dict, checked before any work ({} when absent and not
    `required`).

    It must be a JSON object; when `required` (an unlearned model will be written from this base
    and must load with `from_pretrained`) it must exist, and one that names a `model_type` must
    load with transformers' `AutoConfig`.
    """
    path = folder / "config.json"
    if not path.is_file():
        if required:
            raise CheckpointError(
                f"{path} is missing: a model written from this base (e.g. with --scale) could not be "
                "loaded with from_pretrained. Give a base folder with its config.json."
            )
        return {}
    values = read_json_file(path, "model config")
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: the model config must be a JSON object, got {type(values).__name__}.")
    if required and "model_type" in values:
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(folder)
        except Exception as error:  # transformers raises many types for a config it cannot build
            raise CheckpointError(
                f"{path}: transformers' AutoConfig cannot load this config ({error})."
            ) from error
    return values
