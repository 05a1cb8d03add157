"""The compiled NegMerge fold against the generic torch fold and an element-by-element oracle."""

from __future__ import annotations

import shutil
import sysconfig

import pytest
import torch
from safetensors.torch import save_file

from hf_negmerge import NegMergeConfig
from hf_negmerge.errors import CheckpointError
from hf_negmerge.merging import kernel, merge_checkpoints, streaming

requires_kernel = pytest.mark.skipif(not kernel.kernel_available(), reason="compiled kernel not built")


def test_the_kernel_is_built_where_a_compiler_is_found():
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the install falls back to the torch fold")
    assert kernel._negmerge_kernel is not None, "setup.py's optional extension was not built"


def _write(folder, tensors):
    folder.mkdir()
    save_file({key: value.contiguous() for key, value in tensors.items()}, folder / "model.safetensors")


def _oracle(base, runs):
    """NegMerge element by element in float32: difference, sum in run order, unanimous sign."""
    merged = torch.zeros_like(base)
    flat = merged.view(-1)
    tasks = [(run - base).view(-1) for run in runs]
    for index in range(flat.numel()):
        values = [task[index] for task in tasks]
        total = torch.zeros((), dtype=torch.float32)
        for value in values:
            total = total + value
        if all(value > 0 for value in values) or all(value < 0 for value in values):
            flat[index] = total / len(runs) + 0.0
    return merged


@pytest.fixture
def folders(tmp_path):
    """A base and runs with ties at zero, a shared sign pattern and sizes that are not multiples of 16."""

    def make(count: int, shapes: dict[str, tuple[int, ...]], seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        base = {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}
        runs = []
        for index in range(count):
            noise = {key: torch.randn(shape, generator=generator) * 1e-3 for key, shape in shapes.items()}
            run = {key: base[key] + noise[key] + 1e-3 for key in shapes}  # mostly positive tasks
            for key in shapes:
                flat = run[key].view(-1)
                flat[::5] = base[key].view(-1)[::5]  # τ = 0 exactly: no consensus there
            runs.append(run)
            _write(tmp_path / f"ft{index}", run)
        _write(tmp_path / "base", base)
        return tmp_path / "base", [tmp_path / f"ft{i}" for i in range(count)], base, runs

    return make


SHAPES = {"w": (37, 29), "b": (13,), "s": (), "one": (1,), "big": (3, 4, 1000)}


@requires_kernel
@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_compiled_fold_matches_the_oracle_and_the_generic_fold(folders, monkeypatch, count):
    base_path, run_paths, base, runs = folders(count, SHAPES, seed=count)
    monkeypatch.setattr(streaming, "COMPILED_BUFFER_BYTES", 4 * 4096 * (count + 1))  # 4096-element blocks
    compiled = merge_checkpoints(base_path, run_paths, NegMergeConfig(), progress=False, workers=2)
    monkeypatch.setenv(kernel.KERNEL_ENV, "0")
    generic = merge_checkpoints(base_path, run_paths, NegMergeConfig(), progress=False, workers=2)
    for key in SHAPES:
        expected = _oracle(base[key], [run[key] for run in runs])
        for result in (compiled, generic):
            assert torch.equal(result.task_vector[key].view(torch.int32), expected.view(torch.int32)), key
    assert compiled.stats.kept == generic.stats.kept
    assert compiled.stats.input_norms == pytest.approx(generic.stats.input_norms, rel=1e-6)
    assert compiled.stats.result_norm == pytest.approx(generic.stats.result_norm, rel=1e-6)
    exact_norms = [
        sum(float((run[key].double() - base[key].double()).square().sum()) for key in SHAPES) ** 0.5
        for run in runs
    ]
    assert compiled.stats.input_norms == pytest.approx(exact_norms, rel=1e-5)


@requires_kernel
def test_one_run_is_its_task_vector(folders):
    base_path, run_paths, base, runs = folders(1, {"w": (300,)})
    merged = merge_checkpoints(base_path, run_paths, progress=False).task_vector["w"]
    task = runs[0]["w"] - base["w"]
    assert torch.equal(merged, task + 0.0)  # zeros of τ stay +0.0


@requires_kernel
def test_runs_in_any_order_give_the_same_merge(folders):
    base_path, run_paths, *_ = folders(5, {"w": (1000,)})
    forward = merge_checkpoints(base_path, run_paths, progress=False).task_vector["w"]
    backward = merge_checkpoints(base_path, run_paths[::-1], progress=False).task_vector["w"]
    assert torch.equal(forward != 0, backward != 0)
    torch.testing.assert_close(forward, backward, rtol=1e-6, atol=0)


@requires_kernel
def test_a_nan_is_traced_to_its_file(folders):
    base_path, run_paths, _, runs = folders(3, {"w": (100,)})
    runs[1]["w"][17] = float("nan")
    (run_paths[1] / "model.safetensors").unlink()
    save_file({"w": runs[1]["w"]}, run_paths[1] / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"ft1/model.safetensors: tensor 'w' contains NaN"):
        merge_checkpoints(base_path, run_paths, progress=False)


@requires_kernel
def test_a_square_that_overflows_float32_is_recomputed_in_float64(tmp_path):
    _write(tmp_path / "base", {"w": torch.zeros(40)})
    _write(tmp_path / "ft0", {"w": torch.full((40,), 1e20)})  # 1e40 per element: inf in float32
    result = merge_checkpoints(tmp_path / "base", [tmp_path / "ft0"], progress=False)
    assert result.stats.input_norms[0] == pytest.approx(1e20 * 40**0.5, rel=1e-6)


@requires_kernel
def test_a_file_truncated_after_opening_is_named(folders, monkeypatch):
    base_path, run_paths, *_ = folders(2, {"w": (5000,)})
    from hf_negmerge.checkpoints import CheckpointReader

    opened = CheckpointReader

    def reader_then_truncate(path):
        reader = opened(path)
        if str(path).endswith("ft1"):
            file = path / "model.safetensors"
            with file.open("r+b") as handle:
                handle.truncate(file.stat().st_size - 1000)
        return reader

    monkeypatch.setattr("hf_negmerge.merging.accumulate.CheckpointReader", reader_then_truncate)
    with pytest.raises(CheckpointError, match=r"ft1.*'w' ends early"):
        merge_checkpoints(base_path, run_paths, progress=False)


def test_the_switch_and_other_methods_use_the_generic_fold(monkeypatch):
    float32 = [torch.float32, torch.float32]
    monkeypatch.setenv(kernel.KERNEL_ENV, "0")
    assert not kernel.kernel_applies(NegMergeConfig(), float32)
    monkeypatch.delenv(kernel.KERNEL_ENV)
    available = kernel.kernel_available()
    assert kernel.kernel_applies(NegMergeConfig(), float32) is available
    assert not kernel.kernel_applies(NegMergeConfig(method="uniform"), float32)
    assert not kernel.kernel_applies(NegMergeConfig(consensus_fraction=0.75), float32)
    assert not kernel.kernel_applies(NegMergeConfig(accumulation_dtype="float64"), float32)
    assert not kernel.kernel_applies(NegMergeConfig(), [torch.float32, torch.bfloat16])


@requires_kernel
def test_the_kernel_checks_its_buffers():
    buffers = kernel.RunBlocks(runs=2, block=64)
    with pytest.raises(ValueError, match="at most 64"):
        buffers.fold(torch.empty(65), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="2 float64"):
        buffers.fold(torch.empty(8), torch.zeros(3, dtype=torch.float64))


def test_workers_locating_at_once_share_one_open_file(folders):
    from concurrent.futures import ThreadPoolExecutor

    from hf_negmerge.checkpoints import CheckpointReader

    base_path, _, base, _ = folders(1, {"w": (300,)})
    reader = CheckpointReader(base_path)
    with ThreadPoolExecutor(8) as pool:
        locations = list(pool.map(lambda _: reader.locate("w"), range(64)))
    assert len({location.descriptor for location in locations}) == 1
    target = torch.empty(300)
    locations[0].read_exactly(memoryview(target.numpy()).cast("B"), 0)  # the descriptor is still open
    assert torch.equal(target, base["w"])
