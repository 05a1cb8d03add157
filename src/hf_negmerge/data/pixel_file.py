"""Encoded pixels kept on disk, so that scoring a large split needs one batch of memory, not the split.

The rows go batch by batch into an anonymous temporary file (unlinked at creation on POSIX systems, so
the OS removes it when the file is closed, the object is collected or the process is killed) and come
back with plain reads into fresh tensors, one batch at a time: no mapping of the whole file stays resident.
The bytes are the tensors' own, so a batch read back equals the batch written, bit for bit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from hf_negmerge.errors import ConfigError


class PixelFile:
    """Rows of one shape and dtype, appended in order and read back by row range."""

    def __init__(self, directory: str | Path | None, row_shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.row_shape = row_shape
        self.dtype = dtype
        self.row_bytes = torch.empty(row_shape, dtype=dtype).nbytes
        self.rows = 0
        # no with-block: the file lives as long as this object, and goes with it
        self._file = tempfile.TemporaryFile(prefix="encoded-pixels-", dir=directory)  # noqa: SIM115

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes

    def append(self, pixels: torch.Tensor) -> None:
        """Write `pixels` [B, *row_shape] after the rows already there."""
        if tuple(pixels.shape[1:]) != self.row_shape or pixels.dtype != self.dtype:
            raise ConfigError(
                f"cannot append pixels of shape {tuple(pixels.shape)} and dtype {pixels.dtype} to rows of "
                f"shape {self.row_shape} and dtype {self.dtype}"
            )
        raw = pixels.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._file.seek(self.nbytes)
        self._file.write(memoryview(raw))
        self.rows += int(pixels.shape[0])

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as a new tensor (clipped to the rows written, like a slice)."""
        start, stop = max(0, start), min(stop, self.rows)
        out = torch.empty((max(0, stop - start), *self.row_shape), dtype=self.dtype)
        buffer = memoryview(out.reshape(-1).view(torch.uint8).numpy())
        self._file.seek(start * self.row_bytes)
        if self._file.readinto(buffer) != len(buffer):
            raise OSError(f"the encoded pixel file {self._file.name} ended before row {stop}")
        return out
