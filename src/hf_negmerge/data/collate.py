"""Batches for image classifiers: rows ``{image, label}`` -> ``{"pixel_values", "labels"}`` tensors.

`ImageClassificationCollator` turns rows into one batch; `encode_split` is the one place a whole
split is preprocessed up front (evaluation scores it for every λ, θ₀ pretraining every epoch),
into memory or, for a split too large for that, into a file on disk (`pixel_file`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from torch.utils.data import DataLoader

from hf_negmerge.data.loading import IMAGE_COLUMN, LABEL_COLUMN
from hf_negmerge.data.pixel_file import PixelFile
from hf_negmerge.errors import ConfigError

ProcessorFn = Callable[[list[PIL.Image.Image]], torch.Tensor]
BatchTransform = Callable[[torch.Tensor], torch.Tensor]


class ImageClassificationCollator:
    """Preprocess a list of dataset rows into model inputs.

    ``processor_fn`` maps a list of PIL images to a float tensor ``[B, C, H, W]`` (for example a
    classifier's ``preprocess``, or a training transform from ``training.augment`` that crops and
    augments each PIL image itself); ``transform`` is an optional batched tensor transform applied
    after preprocessing, so it runs on whole batches instead of image by image.
    ``image_mode`` converts every image first (``"RGB"`` lets grayscale data such as the built-in digits
    feed RGB models; None leaves images untouched).
    """

    def __init__(
        self,
        processor_fn: ProcessorFn,
        transform: BatchTransform | None = None,
        image_mode: str | None = "RGB",
        image_column: str = IMAGE_COLUMN,
        label_column: str = LABEL_COLUMN,
    ) -> None:
        self.processor_fn = processor_fn
        self.transform = transform
        self.image_mode = image_mode
        self.image_column = image_column
        self.label_column = label_column

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ConfigError("cannot collate an empty batch")
        missing = [c for c in (self.image_column, self.label_column) if c not in rows[0]]
        if missing:
            raise ConfigError(f"batch rows lack column(s) {missing}; row columns: {sorted(rows[0])}")
        images = [self._image(row[self.image_column]) for row in rows]
        pixel_values = self.processor_fn(images)
        self._check_pixels(pixel_values, len(rows), "processor_fn")
        if self.transform is not None:
            pixel_values = self.transform(pixel_values)
            self._check_pixels(pixel_values, len(rows), "transform")
        labels = torch.tensor([int(row[self.label_column]) for row in rows], dtype=torch.long)
        return {"pixel_values": pixel_values, "labels": labels}

    def _image(self, image: Any) -> PIL.Image.Image:
        if not isinstance(image, PIL.Image.Image):
            raise ConfigError(
                f"column {self.image_column!r} must hold decoded PIL images, got {type(image).__name__}"
            )
        if self.image_mode is not None and image.mode != self.image_mode:
            return image.convert(self.image_mode)
        return image

    @staticmethod
    def _check_pixels(pixels: Any, batch_size: int, producer: str) -> None:
        if not isinstance(pixels, torch.Tensor) or not pixels.is_floating_point():
            raise ConfigError(f"{producer} must return a float torch.Tensor, got {type(pixels).__name__}")
        if pixels.ndim != 4 or pixels.shape[0] != batch_size:
            raise ConfigError(
                f"{producer} must return shape [B={batch_size}, C, H, W], got {tuple(pixels.shape)}"
            )


def make_dataloader(
    dataset: torch.utils.data.Dataset,
    collator: Callable[[list[Any]], dict[str, torch.Tensor]],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose shuffling order depends only on ``seed`` (its own torch.Generator)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if len(dataset) == 0:
        raise ConfigError("cannot build a DataLoader over an empty dataset")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collator,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )


@dataclass
class EncodedSplit:
    """A split preprocessed once: pixel rows float [N, C, H, W] and labels int64 [N], in row order.

    The pixels are a tensor in memory or a `PixelFile` on disk; `batches` reads either the same way.
    """

    name: str
    pixel_values: torch.Tensor | PixelFile
    labels: torch.Tensor

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self.labels), batch_size):
            stop = start + batch_size
            yield {"pixel_values": self.pixel_rows(start, stop), "labels": self.labels[start:stop]}

    def pixel_rows(self, start: int, stop: int) -> torch.Tensor:
        """Pixels of rows [start, stop), read from disk when the split lives there."""
        if isinstance(self.pixel_values, PixelFile):
            return self.pixel_values.read(start, stop)
        return self.pixel_values[start:stop]


def encode_split(
    classifier: Any,
    dataset: Any,
    name: str = "",
    batch_size: int = 256,
    disk_dir: str | Path | None = None,
    memory_bytes: int = 0,
) -> EncodedSplit:
    """Every row of `dataset` through `classifier.preprocess` (no augmentation), `batch_size` rows
    at a time so that only one batch of decoded images is held at once.

    The pixels stay in memory unless `disk_dir` is given and the split's pixels would take more
    than `memory_bytes`: then each batch goes to a `PixelFile` in `disk_dir` as soon as it is made.
    """
    collate = ImageClassificationCollator(classifier.preprocess)
    pixels: list[torch.Tensor] | PixelFile = []
    labels = []
    for start in range(0, len(dataset), batch_size):
        columns = dataset[start : start + batch_size]
        rows = [
            {IMAGE_COLUMN: image, LABEL_COLUMN: label}
            for image, label in zip(columns[IMAGE_COLUMN], columns[LABEL_COLUMN], strict=True)
        ]
        batch = collate(rows)
        batch_pixels = batch["pixel_values"]
        if start == 0:
            row_shape, dtype = tuple(batch_pixels.shape[1:]), batch_pixels.dtype
            split_bytes = len(dataset) * batch_pixels[0].nbytes
            if disk_dir is not None and split_bytes > memory_bytes:
                pixels = PixelFile(disk_dir, row_shape, dtype)
        elif tuple(batch_pixels.shape[1:]) != row_shape or batch_pixels.dtype != dtype:
            raise ConfigError(
                f"split {name!r}: rows {start}.. were preprocessed to {tuple(batch_pixels.shape[1:])} "
                f"{batch_pixels.dtype}, the first rows to {row_shape} {dtype}; the preprocessor must give "
                "every image the same shape and dtype"
            )
        pixels.append(batch_pixels)
        labels.append(batch["labels"])
    if not labels:
        raise ConfigError(f"cannot encode the empty split {name!r}")
    values = pixels if isinstance(pixels, PixelFile) else torch.cat(pixels)
    return EncodedSplit(name, values, torch.cat(labels))
