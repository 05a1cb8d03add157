"""Read and write Hugging Face checkpoint folders one tensor at a time.

Merging 30 checkpoints must not hold 30 models in memory, so the reader parses the safetensors
header itself and reads each tensor with a positioned read into a fresh buffer: nothing stays
mapped, and peak memory is one tensor per open checkpoint rather than one model.
Writes go to a temporary sibling first and are renamed into place, so an interrupted run never
leaves a half-written file or folder behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from .errors import CheckpointError

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
TORCH_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
ADAPTER_WEIGHTS_NAMES = ("adapter_model.safetensors", "adapter_model.bin")

_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class _SafetensorsFile:
    """One safetensors file: header parsed once, tensors read on demand with `os.pread`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as handle:
                prefix = handle.read(8)
                if len(prefix) != 8:
                    raise CheckpointError(
                        f"{path}: not a safetensors file (shorter than its 8-byte header length)."
                    )
                (header_size,) = struct.unpack("<Q", prefix)
                if header_size > _MAX_HEADER_BYTES:
                    raise CheckpointError(f"{path}: corrupt safetensors header (claims {header_size} bytes).")
                header = json.loads(handle.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{path}: corrupt safetensors header ({error}).") from error
        except OSError as error:
            raise CheckpointError(f"{path}: cannot be read ({error}).") from error
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + header_size
        file_size = path.stat().st_size
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for key, info in header.items():
            dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
            if dtype is None:
                raise CheckpointError(f"{path}: tensor '{key}' has unsupported dtype {info.get('dtype')!r}.")
            begin, end = info["data_offsets"]
            shape = tuple(info["shape"])
            expected = _numel(shape) * torch.empty((), dtype=dtype).element_size()
            if end - begin != expected or self._data_start + end > file_size:
                raise CheckpointError(
                    f"{path}: tensor '{key}' is truncated or corrupt "
                    f"(needs {expected} bytes at offset {begin}, file has {file_size} bytes)."
                )
            self.entries[key] = (dtype, shape, begin, end)

    def read(self, key: str) -> torch.Tensor:
        dtype, shape, begin, end = self.entries[key]
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        buffer = torch.empty(end - begin, dtype=torch.uint8)  # uninitialised: preadv fills it
        view = memoryview(buffer.numpy())
        with self.path.open("rb", buffering=0) as handle:
            offset, position = 0, self._data_start + begin
            while offset < len(view):
                count = os.preadv(handle.fileno(), [view[offset:]], position + offset)
                if count == 0:
                    raise CheckpointError(f"{self.path}: tensor '{key}' ends before its data does.")
                offset += count
        return buffer.view(dtype).reshape(shape)


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def resolve_weight_files(path: str | Path) -> list[Path]:
    """The weight files of a checkpoint folder (single or sharded), or the file itself."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    if path.is_file():
        return [path]
    for index_name in (SAFE_WEIGHTS_INDEX_NAME, TORCH_WEIGHTS_INDEX_NAME):
        index_path = path / index_name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise CheckpointError(f"{index_path}: corrupt shard index ({error}).") from error
            shards = [path / name for name in sorted(set(weight_map.values()))]
            missing = [str(shard) for shard in shards if not shard.is_file()]
            if missing:
                raise CheckpointError(f"{index_path} lists shard(s) that are missing: {', '.join(missing)}.")
            return shards
    for name in (SAFE_WEIGHTS_NAME, TORCH_WEIGHTS_NAME, *ADAPTER_WEIGHTS_NAMES):
        if (path / name).is_file():
            return [path / name]
    loose = sorted(path.glob("*.safetensors"))
    if len(loose) == 1:
        return loose
    raise CheckpointError(
        f"No weights found in {path}: expected {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME} or {TORCH_WEIGHTS_NAME}."
    )


class CheckpointReader(Mapping[str, torch.Tensor]):
    """A read-only mapping from tensor name to tensor over a checkpoint folder or file.

    Keys are the names on disk (the checkpoint key space). Tensors are read when asked for, so
    iterating over keys and reading one at a time keeps memory flat. `.bin` files are loaded
    whole with `weights_only=True` (they cannot be read lazily).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._files = resolve_weight_files(self.path)
        self._safetensors: dict[str, _SafetensorsFile] = {}
        self._eager: dict[str, torch.Tensor] = {}
        self._origin: dict[str, Path] = {}
        for file in self._files:
            if file.suffix == ".safetensors":
                handle = _SafetensorsFile(file)
                for key in handle.entries:
                    self._check_unique(key, file)
                    self._safetensors[key] = handle
            else:
                for key, tensor in _load_torch_file(file).items():
                    self._check_unique(key, file)
                    self._eager[key] = tensor

    def _check_unique(self, key: str, file: Path) -> None:
        if key in self._origin:
            raise CheckpointError(f"Tensor '{key}' appears in both {self._origin[key]} and {file}.")
        self._origin[key] = file

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self._safetensors:
            return self._safetensors[key].read(key)
        if key in self._eager:
            return self._eager[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._origin)

    def __len__(self) -> int:
        return len(self._origin)

    def __contains__(self, key: object) -> bool:
        return key in self._origin

    def path_of(self, key: str) -> Path:
        return self._origin[key]

    def shape(self, key: str) -> tuple[int, ...]:
        if key in self._safetensors:
            return self._safetensors[key].entries[key][1]
        return tuple(self._eager[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        if key in self._safetensors:
            return self._safetensors[key].entries[key][0]
        return self._eager[key].dtype

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    @property
    def metadata(self) -> dict[str, str]:
        """The `__metadata__` entries of the safetensors file(s) (later shards win on clashes)."""
        merged: dict[str, str] = {}
        for handle in dict.fromkeys(self._safetensors.values()):
            merged.update(handle.metadata)
        return merged

    @property
    def nbytes(self) -> int:
        return sum(file.stat().st_size for file in self._files)


def _load_torch_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or unsafe pickle
        raise CheckpointError(f"{path}: cannot be loaded safely with weights_only=True ({error}).") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a flat dict of tensors.")
    return state


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder or file, under its on-disk names."""
    reader = CheckpointReader(path)
    return {key: reader[key] for key in reader}


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces `path` only if the block succeeds.

    An exception or interrupt removes the temporary folder and leaves `path` as it was.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"Output folder {target} already exists; pass overwrite=True to replace it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, retired / target.name)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Atomically write one safetensors file (tensors made contiguous, storage not shared)."""
    from safetensors.torch import save

    payload = {key: tensor.detach().contiguous() for key, tensor in tensors.items()}
    atomic_write_bytes(path, save(payload, metadata=metadata))


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor], directory: str | Path, max_shard_size: int | str = "5GB"
) -> list[Path]:
    """Write a state dict in HF layout: `model.safetensors`, or shards plus an index when large."""
    from huggingface_hub import split_torch_state_dict_into_shards

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    split = split_torch_state_dict_into_shards(dict(state_dict), max_shard_size=max_shard_size)
    written = []
    for filename, keys in split.filename_to_tensors.items():
        save_safetensors(
            {key: state_dict[key] for key in keys}, directory / filename, metadata={"format": "pt"}
        )
        written.append(directory / filename)
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        atomic_write_text(
            directory / SAFE_WEIGHTS_INDEX_NAME, json.dumps(index, indent=2, sort_keys=True) + "\n"
        )
    return written
