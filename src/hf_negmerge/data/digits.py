"""Built-in 8x8 handwritten digits (scikit-learn's copy of UCI optdigits) as a ``datasets.DatasetDict``.

The data ships inside the scikit-learn wheel, so tests, examples and tiny end-to-end runs work on a
machine without network access.
"""

from __future__ import annotations

import functools

import datasets
import numpy as np
import PIL.Image

from hf_negmerge.errors import ConfigError

DIGITS_CLASS_NAMES: list[str] = [str(digit) for digit in range(10)]
# sklearn stores ink intensity as integers 0..16; images use the full 8-bit range.
DIGITS_MAX_INTENSITY = 16.0

DIGITS_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=DIGITS_CLASS_NAMES),
        "sample_id": datasets.Value("int32"),
    }
)


def digits_intensity_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map sklearn's 0..16 intensities to 0..255 pixels (rounded to the nearest integer)."""
    return np.rint(np.asarray(values, dtype=np.float64) * (255.0 / DIGITS_MAX_INTENSITY)).astype(np.uint8)


def _digits_split(images: np.ndarray, labels: np.ndarray, sample_ids: np.ndarray) -> datasets.Dataset:
    pil_images = [PIL.Image.fromarray(digits_intensity_to_uint8(images[i]), mode="L") for i in sample_ids]
    return datasets.Dataset.from_dict(
        {"image": pil_images, "label": labels[sample_ids].tolist(), "sample_id": sample_ids.tolist()},
        features=DIGITS_FEATURES,
    )


@functools.lru_cache(maxsize=8)
def _cached_digits(test_fraction: float, seed: int) -> datasets.DatasetDict:
    # Imported here: scikit-learn takes seconds to import and most runs never touch the digits.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_ids, test_ids = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )
    # Ascending ids keep each split in sklearn's order, so row order never depends on the seed.
    return datasets.DatasetDict(
        {
            "train": _digits_split(bunch.images, labels, np.sort(train_ids)),
            "test": _digits_split(bunch.images, labels, np.sort(test_ids)),
        }
    )


def load_digits_dataset(test_fraction: float = 0.25, seed: int = 0) -> datasets.DatasetDict:
    """The 1,797 sklearn digits as splits ``train`` and ``test`` (stratified by label, deterministic).

    Columns: ``image`` (PIL, mode ``"L"``, 8x8, pixels 0..255 = round(intensity * 255 / 16)),
    ``label`` (ClassLabel ``"0"``..``"9"``) and ``sample_id`` (row index in ``sklearn.datasets.load_digits``).
    Results are cached per process; datasets are immutable, so sharing the cached object is safe.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}")
    return _cached_digits(float(test_fraction), int(seed))
