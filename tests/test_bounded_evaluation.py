"""Encoded splits past the in-memory budget live in files on disk and score exactly as in memory."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from conftest import make_tiny_vit
from hf_negmerge.data import EncodedSplit, encode_split
from hf_negmerge.data import pixel_file as pixel_file_module
from hf_negmerge.data.pixel_file import PixelFile
from hf_negmerge.errors import ConfigError
from hf_negmerge.evaluation import engine
from hf_negmerge.evaluation.predict import predict


def _images(count: int, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)) for _ in range(count)]
    return datasets.Dataset.from_dict({"image": images, "label": [i % 10 for i in range(count)]})


def _preprocess(images):
    """16 × 16 float pixels, channels moved last-to-first (a non-contiguous tensor, like many processors)."""
    arrays = np.stack([np.asarray(image.resize((16, 16)), dtype=np.float32) / 255.0 for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) * 2.0 - 1.0


CLASSIFIER = SimpleNamespace(preprocess=_preprocess)


def _row_bytes() -> int:
    return 3 * 16 * 16 * 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_pixel_file_reads_back_the_bytes_written_in_any_range(tmp_path, dtype):
    written = torch.randn(23, 3, 4, 5).to(dtype)
    pixels = PixelFile(tmp_path, (3, 4, 5), dtype)
    for start in range(0, 23, 7):
        pixels.append(written[start : start + 7])
    assert pixels.rows == 23 and pixels.nbytes == written.nbytes
    for start, stop in [(0, 23), (0, 7), (5, 6), (20, 40), (7, 7), (30, 40)]:
        read = pixels.read(start, stop)
        assert read.dtype == dtype and read.is_contiguous()
        assert torch.equal(read.view(torch.uint8), written[start:stop].contiguous().view(torch.uint8))


def test_pixel_file_leaves_no_file_behind_and_refuses_other_rows(tmp_path):
    pixels = PixelFile(tmp_path, (2, 2), torch.float32)
    pixels.append(torch.ones(4, 2, 2))
    assert list(tmp_path.iterdir()) == []  # anonymous: the OS removes it with the process
    with pytest.raises(ConfigError, match=r"shape \(4, 3, 2\).*rows of shape \(2, 2\)"):
        pixels.append(torch.ones(4, 3, 2))
    with pytest.raises(ConfigError, match=r"dtype torch\.float64"):
        pixels.append(torch.ones(4, 2, 2, dtype=torch.float64))
    assert pixels.rows == 4


def test_split_past_the_budget_goes_to_disk_and_one_within_stays_in_memory(tmp_path):
    rows = _images(11)
    split_bytes = 11 * _row_bytes()
    at_budget = encode_split(
        CLASSIFIER, rows, "at", batch_size=4, disk_dir=tmp_path, memory_bytes=split_bytes
    )
    past_budget = encode_split(
        CLASSIFIER, rows, "past", batch_size=4, disk_dir=tmp_path, memory_bytes=split_bytes - 1
    )
    without_dir = encode_split(CLASSIFIER, rows, "none", batch_size=4)
    assert isinstance(at_budget.pixel_values, torch.Tensor)
    assert isinstance(without_dir.pixel_values, torch.Tensor)
    assert isinstance(past_budget.pixel_values, PixelFile)
    expected = _preprocess(rows["image"])  # the whole split preprocessed in one go
    assert torch.equal(past_budget.pixel_values.read(0, 11), expected)
    assert torch.equal(at_budget.pixel_values, expected)
    assert torch.equal(past_budget.labels, at_budget.labels)


@pytest.mark.parametrize("batch_size", [1, 3, 5, 64])
def test_disk_and_memory_splits_give_identical_batches_and_logits(tmp_path, batch_size):
    rows = _images(13, seed=batch_size)
    memory = encode_split(CLASSIFIER, rows, "memory", batch_size=batch_size)
    disk = encode_split(CLASSIFIER, rows, "disk", batch_size=batch_size, disk_dir=tmp_path, memory_bytes=0)
    assert isinstance(disk.pixel_values, PixelFile)
    memory_batches, disk_batches = list(memory.batches(batch_size)), list(disk.batches(batch_size))
    assert [len(batch["labels"]) for batch in disk_batches] == [
        len(batch["labels"]) for batch in memory_batches
    ]
    for from_memory, from_disk in zip(memory_batches, disk_batches, strict=True):
        assert torch.equal(from_memory["pixel_values"], from_disk["pixel_values"])
        assert torch.equal(from_memory["labels"], from_disk["labels"])
    model = make_tiny_vit()
    in_memory = predict(model, memory.batches(batch_size), keep_logits=True)
    on_disk = predict(model, disk.batches(batch_size), keep_logits=True)
    assert torch.equal(in_memory.logits, on_disk.logits)
    assert torch.equal(in_memory.true_class_probability, on_disk.true_class_probability)
    assert in_memory.accuracy() == on_disk.accuracy()


def test_a_preprocessor_changing_shape_midway_is_named(tmp_path):
    def uneven(images):
        size = 16 if len(images) == 4 else 8
        return torch.zeros(len(images), 3, size, size)

    for disk_dir in (None, tmp_path):
        with pytest.raises(ConfigError, match=r"split 'odd': rows 8\.\. .*\(3, 8, 8\).*\(3, 16, 16\)"):
            encode_split(SimpleNamespace(preprocess=uneven), _images(10), "odd", 4, disk_dir, 0)


@pytest.fixture
def pixel_file_folders(monkeypatch):
    """The folder of every PixelFile created while the test runs, in order."""
    folders = []
    real_init = PixelFile.__init__

    def recording_init(self, directory, row_shape, dtype):
        folders.append(Path(directory))
        real_init(self, directory, row_shape, dtype)

    monkeypatch.setattr(pixel_file_module.PixelFile, "__init__", recording_init)
    return folders


def _scenario(tmp_path, work: bool):
    if work:
        (tmp_path / "work").mkdir()
    splits = {
        "forget_val": _images(3),
        "forget_test": _images(5),
        "retain_val": _images(4),
        "test": _images(6),
    }
    data = SimpleNamespace(splits=lambda: dict(splits), retain_train=None, retain_test=None)
    recipe = SimpleNamespace(mia_enabled=False, evaluation=SimpleNamespace(batch_size=4), output_dir=tmp_path)
    return data, recipe


def test_encode_splits_keeps_splits_in_memory_up_to_the_total_budget_then_uses_the_work_folder(
    tmp_path, monkeypatch, pixel_file_folders
):
    data, recipe = _scenario(tmp_path, work=True)
    # forget_val (3 rows) and retain_val (4 rows) fit; forget_test (5 rows) would pass the total
    monkeypatch.setattr(engine, "IN_MEMORY_PIXEL_BYTES", 7 * _row_bytes())
    encoded = engine.encode_splits(CLASSIFIER, data, recipe)
    on_disk = {name for name, split in encoded.items() if isinstance(split.pixel_values, PixelFile)}
    assert on_disk == {"forget_test", "test"}
    assert pixel_file_folders == [tmp_path / "work"] * 2
    assert list((tmp_path / "work").iterdir()) == []
    for name, split in encoded.items():
        assert isinstance(split, EncodedSplit) and len(split.labels) == len(data.splits()[name])


def test_encode_splits_without_a_work_folder_uses_the_temporary_folder(
    tmp_path, monkeypatch, pixel_file_folders
):
    data, recipe = _scenario(tmp_path, work=False)
    monkeypatch.setattr(engine, "IN_MEMORY_PIXEL_BYTES", 0)
    encoded = engine.encode_splits(CLASSIFIER, data, recipe)
    assert all(isinstance(split.pixel_values, PixelFile) for split in encoded.values())
    assert pixel_file_folders == [Path(tempfile.gettempdir())] * len(encoded)
    assert list(tmp_path.iterdir()) == []  # nothing created in a folder the run does not own


@pytest.fixture
def one_thread():
    """The packaged θ₀ (no training) is keyed by one torch thread, the default run's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _default_run(tmp_path, name):
    from hf_negmerge.pipeline import run_unlearning
    from hf_negmerge.recipe import load_recipe

    output = tmp_path / name
    recipe = load_recipe(None, [f"output_dir={output}", f"original.cache_dir={tmp_path / 'cache'}"])
    run_unlearning(recipe, progress=False)
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    measured = {key: metrics[key] for key in ("original", "selection", "comparison", "comparison_curves")}
    return measured, (output / "model.safetensors").read_bytes()


def test_default_run_measures_the_same_numbers_with_every_split_on_disk(
    tmp_path, monkeypatch, one_thread, pixel_file_folders
):
    created = pixel_file_folders
    in_memory, in_memory_model = _default_run(tmp_path, "memory")
    assert created == []  # the default run's splits fit the in-memory budget
    monkeypatch.setattr(engine, "IN_MEMORY_PIXEL_BYTES", 0)
    on_disk, on_disk_model = _default_run(tmp_path, "disk")
    assert created and set(created) == {tmp_path / "disk" / "work"}
    assert on_disk == in_memory
    assert on_disk_model == in_memory_model
