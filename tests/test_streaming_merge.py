"""The blocked streaming merge against the in-memory fold, and the reader's zero-copy views."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from hf_negmerge import NegMergeConfig
from hf_negmerge.checkpoints import CheckpointReader
from hf_negmerge.merging import merge, merge_checkpoints, merge_task_vectors, streaming
from hf_negmerge.task_vector import TaskVector

SHAPES = {"w": (7, 5), "b": (11,), "s": (), "big": (3, 4, 9)}


def _write(folder, tensors, dtype=torch.float32):
    folder.mkdir()
    save_file(
        {key: value.to(dtype).contiguous() for key, value in tensors.items()}, folder / "model.safetensors"
    )


@pytest.fixture
def checkpoints(tmp_path):
    """A base and four runs on a dyadic grid (θ − θ₀ is exact), with zeros and sign ties."""
    generator = torch.Generator().manual_seed(4)
    grid = {key: (torch.randint(-8, 9, shape, generator=generator) / 4) for key, shape in SHAPES.items()}
    _write(tmp_path / "base", grid)
    runs = []
    for index in range(4):
        tau = {key: torch.randint(-3, 4, shape, generator=generator) / 8 for key, shape in SHAPES.items()}
        tau["w"][0] = 0.5  # one row every run agrees on
        runs.append(tau)
        _write(tmp_path / f"ft{index}", {key: grid[key] + tau[key] for key in grid})
    return tmp_path, runs


@pytest.mark.parametrize("method", ["negmerge", "uniform", "magmax"])
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("compiled", ["1", "0"], ids=["kernel-if-built", "torch-fold"])
def test_blocks_give_the_in_memory_fold_bit_for_bit(checkpoints, monkeypatch, method, workers, compiled):
    root, runs = checkpoints
    monkeypatch.setenv("HF_NEGMERGE_KERNEL", compiled)  # NegMerge: the compiled fold, or the generic one
    monkeypatch.setattr(streaming, "BLOCK_ELEMENTS", 4)  # many blocks, ragged tails, a scalar
    monkeypatch.setattr(streaming, "RELEASE_BYTES", 64)  # pages handed back after every block
    config = NegMergeConfig(method=method)
    streamed = merge_checkpoints(
        root / "base", [root / f"ft{i}" for i in range(4)], config, progress=False, workers=workers
    )
    in_memory = merge_task_vectors([TaskVector(dict(run)) for run in runs], config)
    for key in SHAPES:
        expected = in_memory.task_vector[key]
        actual = streamed.task_vector[key]
        assert actual.shape == expected.shape and actual.dtype == expected.dtype
        assert torch.equal(actual.view(torch.int32), expected.view(torch.int32)), key  # +0.0 vs −0.0 too
    assert streamed.stats.kept == in_memory.stats.kept
    assert streamed.stats.input_norms == pytest.approx(in_memory.stats.input_norms, rel=1e-6)
    assert streamed.stats.result_norm == pytest.approx(in_memory.stats.result_norm, rel=1e-6)


def test_bfloat16_checkpoints_are_upcast_before_the_difference(tmp_path):
    base = {"w": torch.tensor([1.0, 2.0, -3.0, 0.5])}
    tuned = [{"w": torch.tensor([1.5, 2.0, -3.5, 0.25])}, {"w": torch.tensor([1.25, 1.5, -3.25, 0.0])}]
    _write(tmp_path / "base", base, torch.bfloat16)
    for index, state in enumerate(tuned):
        _write(tmp_path / f"ft{index}", state, torch.bfloat16)
    result = merge_checkpoints(tmp_path / "base", [tmp_path / "ft0", tmp_path / "ft1"], progress=False)
    # τ = (0.5, 0, −0.5, −0.25) and (0.25, −0.5, −0.25, −0.5): unanimous at 0 and 2
    assert result.task_vector["w"].tolist() == [0.375, 0.0, -0.375, -0.375]


def test_an_overflowing_sum_is_dropped_or_kept_as_the_definition_says():
    huge = torch.finfo(torch.float32).max
    tensors = [
        torch.tensor([huge, huge, 1.0]),
        torch.tensor([huge, huge, -1.0]),
        torch.tensor([huge, -1.0, 1.0]),
    ]
    # element 0: unanimous and its float32 sum overflows (inf / 3 = inf); element 1: signs differ
    # and its sum overflows too (inf · 0 would be nan); element 2: signs differ
    assert merge(tensors).tolist() == [float("inf"), 0.0, 0.0]
    signs = torch.signbit(merge(tensors))
    assert not signs.any()  # dropped elements are +0.0, never −0.0 or nan


def test_views_are_the_values_on_disk_and_survive_release(tmp_path):
    tensors = {"a": torch.arange(5000.0).reshape(50, 100), "b": torch.randn(3)}
    _write(tmp_path / "ckpt", tensors)
    reader = CheckpointReader(tmp_path / "ckpt")
    view = reader.view("a")
    assert torch.equal(view, tensors["a"])
    reader.release("a", view.reshape(-1)[:4000])
    assert torch.equal(view, tensors["a"])  # the pages map the file again when read
    assert torch.equal(reader.view("b"), tensors["b"])
    assert torch.equal(reader["a"], tensors["a"])
