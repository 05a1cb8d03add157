"""Read and write Hugging Face checkpoint folders one tensor at a time.

Merging 30 checkpoints must not hold 30 models in memory, so safetensors files are read with
the library's `safe_open` and its `pread` backend: each tensor lands in a fresh buffer, nothing
stays mapped, and peak memory is one tensor per open checkpoint rather than one model.
Every tensor a reader returns belongs to the caller (tied `.bin` entries are copied on read),
so changing it in place can never alter another key or a later read. The streaming merge reads
otherwise: its compiled NegMerge fold reads blocks straight into buffers it reuses
(`CheckpointReader.locate`, one `pread` each); the generic fold reads through
`CheckpointReader.view`, zero-copy read-only views of the mapped file whose pages it hands back
(`release`) as it goes. Either way no tensor-sized copy is made and the resident set stays flat.

Writes go to a temporary sibling first and are renamed into place, so an interrupted run never
leaves a half-written file or folder behind; `atomic_output_dir` replaces an existing folder
only when it carries the marker this tool writes into its own outputs.

The reader and the atomic writers share the folder layout (single or sharded safetensors,
`.bin`), and the writers' ownership rules (owner markers, stale staging from killed processes)
are what make every rerun in the package safe, so both directions stay in the one module every
writer imports.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import pickle
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError, safe_open

from .errors import CheckpointError, NegMergeError, OutputError
from .folder_kinds import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TORCH_WEIGHTS_INDEX_NAME,
    TORCH_WEIGHTS_NAME,
    check_model_folder,
    check_weight_content,
    read_json_file,
)
from .owned_files import MARKER_TOOL, carry_over, file_identity, inspect_owned, occupied

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
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@dataclass(frozen=True)
class RawFile:
    """An open safetensors file and the byte offset of each tensor's data."""

    handle: BinaryIO
    offsets: dict[str, int]


@dataclass(frozen=True)
class RawLocation:
    """A tensor's bytes in a file: `descriptor` at `offset`, for `os.preadv` into a buffer."""

    descriptor: int
    offset: int
    path: Path
    key: str

    def read_exactly(self, target: memoryview, start: int, done: int = 0) -> None:
        """Fill `target` with the bytes at `start` of the tensor, `done` of them already read.

        `os.preadv` may return fewer bytes than asked (signals, network file systems); a read
        that returns nothing means the file is shorter than its header says.
        """
        while done < len(target):
            try:
                count = os.preadv(self.descriptor, [target[done:]], self.offset + start + done)
            except OSError as error:
                raise CheckpointError(
                    f"{self.path}: tensor '{self.key}' cannot be read ({error})."
                ) from error
            if count == 0:
                raise CheckpointError(f"{self.path}: tensor '{self.key}' ends early (truncated file).")
            done += count


class _SafetensorsFile:
    """One safetensors file opened with the library's own `safe_open` (pread backend).

    The library validates the header (offsets in range, contiguous, not overlapping, sizes that
    match shape and dtype) exactly as every other safetensors reader does; the `pread` backend
    reads each tensor into a fresh buffer, so nothing stays mapped and peak memory is one tensor
    per open file. Shapes and dtypes come from the header without reading any data.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mapped: safe_open | None = None  # opened on the first `view`
        self._raw: RawFile | None = None  # opened on the first `locate`
        self._raw_lock = threading.Lock()  # one handle per file, even when workers locate at once
        try:
            with path.open("rb"):  # an unreadable file is named as such, not as a corrupt header
                pass
            self._handle = safe_open(str(path), framework="pt", backend="pread")
            self.metadata: dict[str, str] = dict(self._handle.metadata() or {})
            self.entries: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
            for key in self._handle.offset_keys():  # file order: reads run front to back
                info = self._handle.get_slice(key)
                dtype = _SAFETENSORS_DTYPES.get(info.get_dtype())
                if dtype is None:
                    raise CheckpointError(
                        f"{path}: tensor '{key}' has dtype {info.get_dtype()!r}, which hf-negmerge does not handle."
                    )
                self.entries[key] = (dtype, tuple(info.get_shape()))
        except SafetensorError as error:
            raise CheckpointError(
                f"{path}: corrupt safetensors header or truncated file ({error})."
            ) from error
        except OSError as error:
            raise CheckpointError(f"{path}: cannot be read ({error.strerror or error}).") from error

    def read(self, key: str) -> torch.Tensor:
        """A tensor in a buffer of its own: the caller may change it freely."""
        try:
            return self._handle.get_tensor(key)
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{self.path}: tensor '{key}' cannot be read ({error}).") from error

    def locate(self, key: str) -> RawLocation:
        """Where the tensor's bytes are, for reads straight into the caller's buffer (`RawLocation`).

        Offsets come from the header the library has already validated (`__init__`): the data
        section starts after the 8-byte length and the JSON, each tensor at its `data_offsets[0]`.
        The file is opened once, under a lock: a second handle made by another worker would
        replace the first and close it while its descriptor is being read.
        """
        with self._raw_lock:
            if self._raw is None:
                handle = self.path.open("rb", buffering=0)
                header_size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(header_size))
                header.pop("__metadata__", None)
                offsets = {name: 8 + header_size + entry["data_offsets"][0] for name, entry in header.items()}
                self._raw = RawFile(handle, offsets)
        return RawLocation(self._raw.handle.fileno(), self._raw.offsets[key], self.path, key)

    def view(self, key: str) -> torch.Tensor:
        """A zero-copy view of the tensor in the mapped file (the library's `mmap` backend).

        The mapping is private and shared by every view of this file: writing into a view would
        change later views, so callers must only read it.
        """
        try:
            if self._mapped is None:
                self._mapped = safe_open(str(self.path), framework="pt", backend="mmap")
            return self._mapped.get_tensor(key)
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{self.path}: tensor '{key}' cannot be read ({error}).") from error


def _libc_madvise() -> Callable[..., int] | None:
    """libc's `madvise`, where the platform has it with `MADV_DONTNEED` (not on Windows)."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_MADVISE = _libc_madvise()


def _release_mapped_pages(view: torch.Tensor) -> None:
    """Unmap the whole pages under `view` from this process (they stay in the page cache).

    Only for read-only views of a private file mapping: the pages were never written, so a later
    access maps the same file contents again. Without `madvise` (Windows) nothing is released.
    """
    if _MADVISE is None or view.numel() == 0:
        return
    start = view.data_ptr()
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last = (start + view.numel() * view.element_size()) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        _MADVISE(first, last - first, mmap.MADV_DONTNEED)


def resolve_weight_files(path: str | Path) -> list[Path]:
    """The weight files of a checkpoint folder (single or sharded), or the file itself.

    A folder is read as transformers' `from_pretrained` reads it: `model.safetensors` first, then
    `model.safetensors.index.json`, `pytorch_model.bin`, `pytorch_model.bin.index.json`, so the
    tensors merged are the ones the model loads. Otherwise one loose `.safetensors` file is taken.
    A folder must hold model weights: an adapter, a task vector or a merge output is refused,
    naming what it is (`folder_kinds.check_model_folder`); a file is read whatever it holds.
    """
    path = Path(path)
    try:
        return _resolve_weight_files(path)
    except OSError as error:  # e.g. a folder without read or search permission
        raise CheckpointError(f"Checkpoint {path} cannot be read ({error.strerror or error}).") from error


def _resolve_weight_files(path: Path) -> list[Path]:
    if not path.exists():
        if os.path.islink(path):
            raise CheckpointError(
                f"Checkpoint {path} is a broken or looping symlink (it points to {os.readlink(path)!r}, "
                "which does not resolve to a file or folder)."
            )
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    if path.is_file():
        return [path]
    check_model_folder(path)
    for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, TORCH_WEIGHTS_NAME, TORCH_WEIGHTS_INDEX_NAME):
        if not (path / name).is_file():
            continue
        files = _index_shards(path, path / name) if name.endswith(".index.json") else [path / name]
        check_weight_content(files)
        return files
    loose = sorted(path.glob("*.safetensors"))
    if len(loose) == 1:
        return loose
    if len(loose) > 1:
        raise CheckpointError(
            f"{path} holds {len(loose)} .safetensors files ({', '.join(file.name for file in loose[:5])}"
            + (" …" if len(loose) > 5 else "")
            + f") and neither {SAFE_WEIGHTS_NAME} nor {SAFE_WEIGHTS_INDEX_NAME}, so which of them are the "
            f"weights is unclear. Name a single weights file {SAFE_WEIGHTS_NAME}, or list the shards in "
            f"{SAFE_WEIGHTS_INDEX_NAME}."
        )
    raise CheckpointError(
        f"No weights found in {path}: expected {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME} or {TORCH_WEIGHTS_NAME}."
    )


def _index_shards(folder: Path, index_path: Path) -> list[Path]:
    """The shard files a shard index names, each a relative path inside `folder`."""
    index = read_json_file(index_path, "shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        got = type(weight_map).__name__ if isinstance(index, dict) and "weight_map" in index else "nothing"
        raise CheckpointError(
            f"{index_path}: corrupt shard index: 'weight_map' must be an object mapping tensor names "
            f"to shard files, got {got}."
        )
    if not weight_map:
        raise CheckpointError(
            f"{index_path}: corrupt shard index: 'weight_map' is empty (no tensor is listed)."
        )
    for key, name in weight_map.items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(
                f"{index_path}: corrupt shard index: weight_map['{key}'] must be a shard file name, got {name!r}."
            )
        if os.path.isabs(name) or ".." in Path(name).parts or ".." in name.split("\\"):
            raise CheckpointError(
                f"{index_path}: weight_map['{key}'] = {name!r} points outside the checkpoint folder "
                f"{folder}; shard files must be relative names inside it."
            )
    shards = [folder / name for name in sorted(set(weight_map.values()))]
    missing = [str(shard) for shard in shards if not shard.is_file()]
    if missing:
        raise CheckpointError(f"{index_path} lists shard(s) that are missing: {', '.join(missing)}.")
    return shards


class CheckpointReader(Mapping[str, torch.Tensor]):
    """A read-only mapping from tensor name to tensor over a checkpoint folder or file.

    Keys are the names on disk (the checkpoint key space). Tensors are read when asked for, so
    iterating over keys and reading one at a time keeps memory flat. `.bin` files are loaded
    whole with `weights_only=True` (they cannot be read lazily). Every file is opened (and its
    header validated) here, so an unreadable or corrupt input fails before any work.

    Each `reader[key]` is a new tensor owned by the caller: `.bin` entries are cloned on read,
    because tied weights (e.g. `lm_head.weight` and the embeddings) share one storage and the
    loaded dict is kept for later reads.
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
            return self._eager[key].clone()
        raise KeyError(key)

    def view(self, key: str) -> torch.Tensor:
        """The tensor without a copy, READ-ONLY: a view of the mapped safetensors file.

        For the streaming merge, which reads each tensor once: no buffer is filled, and
        `release` lets the pages already read leave the resident set. `.bin` entries are the
        loaded tensors themselves. Never write into a view (use `reader[key]` for a copy).
        """
        if key in self._safetensors:
            return self._safetensors[key].view(key)
        if key in self._eager:
            return self._eager[key]
        raise KeyError(key)

    def locate(self, key: str) -> RawLocation | None:
        """Where the tensor's bytes are in its safetensors file; None for `.bin` entries.

        For the compiled streaming merge, which reads blocks straight into buffers it reuses
        (`RawLocation.read_exactly`): no tensor-sized memory is created and nothing is mapped.
        """
        if key in self._safetensors:
            return self._safetensors[key].locate(key)
        if key in self._eager:
            return None
        raise KeyError(key)

    def release(self, key: str, view: torch.Tensor) -> None:
        """Unmap the pages under `view`, a slice of `self.view(key)` that will not be read again."""
        if key in self._safetensors:
            _release_mapped_pages(view)

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
    """A `.bin` state dict, loaded with `weights_only=True`: a pickle that needs more never runs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = next((line.strip() for line in str(error).splitlines() if "GLOBAL" in line), "").rstrip(".")
        raise CheckpointError(
            f"{path}: refused: this pickle holds more than tensors, and loading it would run code from "
            "the file (hf-negmerge loads pickles only with weights_only=True"
            + (f"; {blocked}" if blocked else "")
            + "). Convert it to safetensors where you trust its source, e.g. "
            "`AutoModel.from_pretrained(folder).save_pretrained(new_folder, safe_serialization=True)`, "
            "and pass the new folder."
        ) from error
    except Exception as error:  # torch raises many types for a corrupt or unsafe pickle
        raise CheckpointError(f"{path}: cannot be loaded safely with weights_only=True ({error}).") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a flat dict of tensors.")
    return state


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder or file, under its on-disk names."""
    reader = CheckpointReader(path)
    return {key: reader[key] for key in reader}


#: file that marks a folder as an output of this tool; `overwrite` may replace only such folders
OUTPUT_MARKER = ".hf_negmerge_output.json"
#: owner record (pid, host) inside staging and retired folders, so a later run can tell a
#: killed run's leftovers from a live concurrent run's
_STAGING_OWNER = ".hf_negmerge_staging.json"
_STAGING_NAME_BYTES = 64  # ".NAME.tmp-XXXXXXXX" must fit the 255-byte file-name limit
_PATH_MAX = 4096


def _short_name(name: str) -> str:
    return name.encode("utf-8", "surrogateescape")[:_STAGING_NAME_BYTES].decode("utf-8", "ignore")


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _is_owned(folder: Path, marker: str) -> bool:
    """True for a folder holding `marker` (written by this tool) or an empty folder."""
    try:
        return (folder / marker).is_file() or not any(folder.iterdir())
    except OSError:
        return False


def check_path_resolves(path: Path) -> None:
    """Refuse a path whose '..' leaves a folder that does not exist, as the OS would.

    `x/../y` names `y` only if `x` exists; creating the folders on the way would leave a stray
    `x` behind, so such a path is an error and nothing is created.
    """
    parts = path.parts
    for index, part in enumerate(parts):
        if part == ".." and index > 0 and not os.path.isdir(Path(*parts[:index])):
            raise OutputError(
                f"Output path {path}: {Path(*parts[:index])} does not exist or is not a folder, so the "
                "'..' after it cannot be followed; nothing was created. Give the path without it."
            )


def output_target(path: str | Path) -> Path:
    """The folder an output path names: a symlink's target, so that the link itself stays."""
    target = Path(path)
    if not os.path.islink(target):
        return target
    if not os.path.exists(target):
        raise OutputError(
            f"Output {target} is a symlink to {os.readlink(target)}, which does not exist; create that "
            "folder or give another output path. The link is left as it is."
        )
    return Path(os.path.realpath(target))


def check_output_dir(path: str | Path, overwrite: bool = False, owned_marker: str | None = None) -> Path:
    """Refuse, before any work is done, an output folder that cannot or must not be written.

    Raises `OutputError` (a name or path over the OS limits, a '..' after a missing folder, a
    file in the way, a parent that is not writable, an existing folder without `owned_marker`,
    or one whose files the tool wrote were edited since) or `FileExistsError` (the folder
    exists and `overwrite` is false). Returns the folder to write: a symlink's target.
    """
    if str(path) == "":
        raise OutputError("The output folder is empty (''); give a folder name.")
    check_path_resolves(Path(path))
    target = output_target(path)
    absolute = Path(os.path.abspath(target))
    if len(os.fsencode(absolute)) >= _PATH_MAX:
        raise OutputError(
            f"Output path {str(target)[:80]}… is {len(os.fsencode(absolute))} bytes long; "
            f"the OS allows paths of at most {_PATH_MAX - 1} bytes."
        )
    ancestor = _existing_ancestor(absolute)
    name_max = _name_max(ancestor if ancestor.is_dir() else ancestor.parent)
    for part in absolute.parts:
        if len(os.fsencode(part)) > name_max:
            raise OutputError(
                f"Output path {str(target)[:80]}…: the name {part[:40]!r}… is {len(os.fsencode(part))} "
                f"bytes long; file names may have at most {name_max} bytes."
            )
    if os.path.lexists(target):
        if not os.path.isdir(target):
            raise OutputError(f"Output {target} exists and is not a folder; choose another output path.")
        if not overwrite:
            raise FileExistsError(
                f"Output folder {target} already exists; pass overwrite=True to replace it."
            )
        if owned_marker is not None and not _is_owned(target, owned_marker):
            raise OutputError(
                f"Output folder {target} was not written by hf-negmerge (it has no {owned_marker}); "
                "refusing to replace it. Choose another output folder, or move it away yourself."
            )
        if owned_marker is not None:
            _check_unedited(target, owned_marker)
        ancestor = _existing_ancestor(absolute.parent)
    if not ancestor.is_dir():
        raise OutputError(f"Cannot create {target}: {ancestor} is a file, not a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot create {target}: the folder {ancestor} is not writable.")
    return target


def _check_unedited(target: Path, marker: str) -> None:
    """Refuse an earlier output whose tool-written files were edited: they are the user's now.

    Only the manifest `_write_marker` writes (`OUTPUT_MARKER`) lists files; a folder marked by its
    own metadata file (a saved classifier) is replaced as a whole.
    """
    if marker != OUTPUT_MARKER or not (target / marker).is_file():
        return  # another kind of marker, or an empty folder
    changed = inspect_owned(target, marker, skip=(_STAGING_OWNER,)).changed
    if changed:
        one = len(changed) == 1
        raise OutputError(
            f"Output folder {target} holds {', '.join(changed)}, which hf-negmerge wrote but which "
            f"changed since (the sha256 differs from the one in {marker}); --overwrite replaces only "
            f"files the tool wrote, unchanged. Move {'it' if one else 'them'} away and run again, or "
            "choose another output folder."
        )


def check_no_overlap(output: str | Path, inputs: Iterable[tuple[str, str | Path]]) -> None:
    """Refuse an output that is, contains or lies inside an input (symlinks resolved).

    Replacing or filling such a folder would delete or change the inputs, whatever the flags.
    `inputs` are (description, path) pairs, e.g. ("base", "models/base").
    """
    out = Path(os.path.realpath(output))
    for label, path in inputs:
        real = Path(os.path.realpath(path))
        if out == real:
            relation = "is the same folder as"
        elif real.is_relative_to(out):
            relation = "contains"
        elif out.is_relative_to(real):
            relation = "lies inside"
        else:
            continue
        raise OutputError(
            f"The output {output} {relation} the {label} {path}"
            + (f" (both resolve into {real})" if relation == "is the same folder as" else "")
            + "; writing there could delete or change an input. Choose an output folder outside every input."
        )


def _write_owner(folder: Path) -> None:
    record = {"tool": "hf-negmerge", "pid": os.getpid(), "host": socket.gethostname()}
    (folder / _STAGING_OWNER).write_text(json.dumps(record), encoding="utf-8")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(folder: Path) -> bool:
    """A staging/retired folder of this tool whose creating process (on this host) is gone."""
    try:
        record = json.loads((folder / _STAGING_OWNER).read_text(encoding="utf-8"))
        pid, host, tool = int(record["pid"]), record["host"], record["tool"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # not ours, or being written right now: leave it
    return tool == "hf-negmerge" and host == socket.gethostname() and not _process_alive(pid)


@contextlib.contextmanager
def owned_scratch_folder(prefix: str, parent: str | Path | None = None) -> Iterator[Path]:
    """A scratch folder `<parent>/<prefix>*/work`, removed on exit, that a killed process leaves
    for the next caller: folders of `prefix` whose owner record names a process that is gone
    (SIGKILL, power loss) are removed first. `parent` defaults to the system temp folder.
    """
    parent = Path(parent or tempfile.gettempdir())
    for folder in parent.glob(f"{prefix}*"):
        if folder.is_dir() and not folder.is_symlink() and _is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        _write_owner(root)
        (root / "work").mkdir()
        yield root / "work"  # the owner record stays outside what the caller fills
    finally:
        shutil.rmtree(root, ignore_errors=True)


def remove_stale_staging(path: str | Path) -> list[Path]:
    """Clean up after a killed run writing `path`: its `.NAME.tmp-*` and `.NAME.old-*` folders.

    Only folders that carry this tool's owner record and whose process is gone are touched; a
    live concurrent run's staging folder is left alone. A retired old output whose replacement
    never landed (killed between the two renames) is moved back to `path`; one whose replacement
    landed first hands the user's files it still holds to the new output (`_publish`), and is
    kept where one of them cannot move.
    """
    target = output_target(path)
    short = _short_name(target.name)
    try:
        entries = sorted(target.parent.iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        kind = next((k for k in ("tmp", "old") if entry.name.startswith(f".{short}.{k}-")), None)
        if kind is None or entry.is_symlink() or not entry.is_dir() or not _is_stale(entry):
            continue
        old = entry / target.name
        if kind == "old" and old.is_dir() and not os.path.lexists(target):
            os.replace(old, target)
        elif kind == "old" and old.is_dir() and not _handed_over(old, target):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _handed_over(old: Path, target: Path) -> bool:
    """Move the user's entries of a retired output into `target`; False when some must stay."""
    try:
        added = (
            inspect_owned(old, OUTPUT_MARKER, skip=(_STAGING_OWNER,)).added
            if (old / OUTPUT_MARKER).is_file()
            else []
        )
        return not carry_over(old, target, added)
    except (OutputError, OSError):
        return False  # cannot tell the user's files apart: keep everything


def _write_marker(staging: Path, marker: str) -> None:
    """The folder's manifest: every file with its sha256 (`owned_files`), so a later
    `overwrite` can tell the tool's files from the user's and from edited ones."""
    from . import __version__

    files = sorted(
        str(item.relative_to(staging))
        for item in staging.rglob("*")
        if item.is_file() and not item.is_symlink() and item.name != _STAGING_OWNER
    )
    record = {
        "written_by": MARKER_TOOL,
        "version": __version__,
        "files": files,
        "written": {name: file_identity(staging / name) for name in files},
    }
    atomic_write_text(staging / marker, json.dumps(record, indent=2) + "\n")


@contextlib.contextmanager
def atomic_output_dir(
    path: str | Path, overwrite: bool = False, owned_marker: str | None = None
) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces `path` only if the block succeeds.

    An exception or interrupt removes the temporary folder and leaves `path` as it was; an
    `OSError` in the block (disk full, permissions) becomes an `OutputError` naming `path`.
    Every check (`check_output_dir`) runs before the block, so nothing is computed for an
    output that could not be written.

    `owned_marker` names a file that marks the folder as this tool's output: the block may
    write it (e.g. a model's own metadata file), otherwise a small manifest of the folder's
    files is written under that name. With it, `overwrite` replaces only a folder that holds
    that file (or an empty folder), never one the tool did not write; entries of that folder its
    manifest does not list (the user's) are moved into the new folder, and a listed file edited
    since stops the call before the block runs. Without it, `overwrite` is only for the caller's
    own private work folders. A `path` that is a symlink stays one: its target is replaced.

    The folder gets ordinary permissions (0777 & ~umask); staging folders left by a killed
    run of this tool are removed first (`remove_stale_staging`).
    """
    target = check_output_dir(path, overwrite, owned_marker)
    remove_stale_staging(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{_short_name(target.name)}.tmp-", dir=target.parent))
        os.chmod(staging, 0o777 & ~_UMASK)
        _write_owner(staging)
    except OSError as error:
        raise OutputError(f"Cannot create the output folder {target} ({error}).") from error
    try:
        yield staging
        if owned_marker is not None and not (staging / owned_marker).exists():
            _write_marker(staging, owned_marker)
        check_output_dir(target, overwrite, owned_marker)  # another process may have made it meanwhile
        _publish(staging, target, _users_entries(staging, target, owned_marker))
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, NegMergeError | FileExistsError):
            raise OutputError(
                f"Writing {target} failed ({error}); nothing was written there and the partial copy "
                "was removed."
            ) from error
        raise


def _users_entries(staging: Path, target: Path, marker: str | None) -> list[str]:
    """The entries of the old `target` its manifest does not list; refused when the new output
    has one of their names (the user's file would have to be replaced)."""
    if marker != OUTPUT_MARKER or not (target / marker).is_file():
        return []
    added = inspect_owned(target, marker, skip=(_STAGING_OWNER,)).added
    clashes = [name for name in added if occupied(staging, name)]
    if clashes:
        raise OutputError(
            f"Output folder {target} holds {', '.join(clashes)}, which hf-negmerge did not write; the new "
            "output has entries of the same name, and --overwrite never replaces the user's files. Move "
            "them away and run again, or choose another output folder."
        )
    return added


def _publish(staging: Path, target: Path, kept: list[str]) -> None:
    """Move `staging` to `target`; an old `target` is first retired into an owned `.old-` folder,
    and the user's entries in it (`kept`) are moved into the new `target`.

    The staging folder keeps its owner record until it has landed, so a kill between the two
    renames leaves only owned leftovers: the next run puts the old output back and removes
    the staging copy. A kill after the second rename leaves the user's entries in the retired
    folder, which the next run hands to the new output before removing it (`remove_stale_staging`).
    """
    if os.path.lexists(target):
        retired = Path(tempfile.mkdtemp(prefix=f".{_short_name(target.name)}.old-", dir=target.parent))
        _write_owner(retired)
        os.replace(target, retired / target.name)
        os.replace(staging, target)
        if not carry_over(retired / target.name, target, kept):
            shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)
    (target / _STAGING_OWNER).unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{_short_name(path.name)}.", suffix=".tmp", dir=path.parent
    )
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
    """Atomically write one safetensors file (tensors made contiguous, storage not shared).

    Tied tensors (two keys on one storage) and views into a larger storage are copied, since
    safetensors refuses shared memory ("Some tensors share memory").
    """
    from safetensors.torch import save

    payload, seen = {}, set()
    for key, tensor in tensors.items():
        tensor = tensor.detach().contiguous()
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != tensor.nbytes:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        payload[key] = tensor
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
