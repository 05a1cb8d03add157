"""Exactness and properties of the merge methods against independent references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft.utils.merge_utils import ties as peft_ties

from hf_negmerge import NegMergeConfig
from hf_negmerge.errors import ConfigError, MergeError
from hf_negmerge.merging import (
    MergeAccumulator,
    available_methods,
    merge,
    merge_checkpoints,
    merge_task_vectors,
)
from hf_negmerge.task_vector import TaskVector


def random_task_tensors(n: int, shape=(7, 5), zero_fraction=0.2, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for _ in range(n):
        values = torch.randn(shape, generator=generator, dtype=torch.float64)
        values[torch.rand(shape, generator=generator) < zero_fraction] = 0.0
        tensors.append(values.to(dtype))
    return tensors


def negmerge_reference(tensors) -> np.ndarray:
    """Straight from the paper's definition, element by element, in float64 numpy."""
    stack = np.stack([t.double().numpy() for t in tensors])
    n = stack.shape[0]
    out = np.zeros(stack.shape[1:])
    for index in np.ndindex(*stack.shape[1:]):
        column = stack[(slice(None), *index)]
        signs = [np.sign(value) for value in column]
        if all(s == 1 for s in signs) or all(s == -1 for s in signs):
            out[index] = sum(column) / n
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
def test_negmerge_equals_float64_definition(n):
    tensors = random_task_tensors(n, seed=n)
    expected = negmerge_reference(tensors)
    exact = merge(tensors, "negmerge", accumulation_dtype="float64")
    np.testing.assert_allclose(exact.numpy(), expected, rtol=0, atol=1e-12)
    single = merge(tensors, "negmerge")
    assert single.dtype == torch.float32
    np.testing.assert_allclose(single.numpy(), expected, rtol=1e-6, atol=1e-6)
    # the kept set itself must be exact, whatever the accumulation dtype
    assert torch.equal(single != 0, torch.from_numpy(expected != 0))


def test_zero_in_any_run_drops_the_element():
    tensors = [torch.tensor([1.0, 2.0, -3.0]), torch.tensor([0.5, 0.0, -1.0]), torch.tensor([2.0, 4.0, -2.0])]
    assert merge(tensors).tolist() == pytest.approx([3.5 / 3, 0.0, -2.0])


def test_n1_reduces_to_task_arithmetic():
    (tensor,) = random_task_tensors(1, seed=3)
    assert torch.equal(merge([tensor], "negmerge"), merge([tensor], "task_arithmetic"))
    assert torch.equal(merge([tensor], "task_arithmetic"), tensor)


def test_agreeing_everywhere_gives_the_uniform_mean():
    base = torch.rand(6, 4) + 0.1  # strictly positive
    tensors = [base * scale for scale in (0.5, 1.0, 3.0)]
    torch.testing.assert_close(merge(tensors, "negmerge"), merge(tensors, "uniform"))
    torch.testing.assert_close(merge(tensors, "uniform"), torch.stack(tensors).mean(0))


@given(n=st.integers(1, 6), seed=st.integers(0, 10_000), zero_fraction=st.sampled_from([0.0, 0.3, 0.9]))
@settings(max_examples=40, deadline=None)
def test_negmerge_is_order_invariant(n, seed, zero_fraction):
    tensors = random_task_tensors(n, shape=(11,), zero_fraction=zero_fraction, seed=seed, dtype=torch.float64)
    reference = merge(tensors, accumulation_dtype="float64")
    for permutation in itertools.islice(itertools.permutations(tensors), 6):
        torch.testing.assert_close(
            merge(list(permutation), accumulation_dtype="float64"), reference, rtol=0, atol=1e-12
        )


@given(
    n=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    density=st.sampled_from([1.0, 0.7, 0.3]),
    sign_method=st.sampled_from(["total", "frequency"]),
)
@settings(max_examples=60, deadline=None)
def test_ties_matches_peft(n, seed, density, sign_method):
    tensors = random_task_tensors(n, shape=(9, 4), seed=seed, dtype=torch.float64)
    with pytest.warns(UserWarning) if density >= 1 else _no_warning_check():
        expected = peft_ties(tensors, torch.ones(n, dtype=torch.float64), density, sign_method)
    ours = merge(
        tensors,
        "ties",
        ties_variant="peft",
        density=density,
        majority_sign_method=sign_method,
        accumulation_dtype="float64",
    )
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


class _no_warning_check:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_negmerge_equals_peft_ties_masked_to_unanimous_elements():
    """REFERENCE §3: with density 1, NegMerge is peft's TIES result masked to unanimous elements."""
    tensors = random_task_tensors(4, seed=11, dtype=torch.float64)
    signs = torch.stack([t.sign() for t in tensors])
    unanimous = signs.sum(0).abs() == len(tensors)
    with pytest.warns(UserWarning):
        expected = peft_ties(tensors, torch.ones(4, dtype=torch.float64), 1.0, "total") * unanimous
    torch.testing.assert_close(merge(tensors, accumulation_dtype="float64"), expected)


def test_magmax_takes_the_largest_magnitude():
    tensors = random_task_tensors(5, seed=5, dtype=torch.float64)
    stack = torch.stack(tensors)
    expected = stack.gather(0, stack.abs().argmax(0, keepdim=True)).squeeze(0)
    torch.testing.assert_close(merge(tensors, "magmax", accumulation_dtype="float64"), expected)


def test_magmax_last_run_wins_exact_magnitude_ties():
    """MagMax's merge_max_abs replaces on `>=`: of equal magnitudes the later run's entry is kept."""
    generator = torch.Generator().manual_seed(3)
    tensors = [torch.randint(-3, 4, (60,), generator=generator).double() / 2 for _ in range(4)]
    expected = torch.zeros(60, dtype=torch.float64)
    for index in range(60):
        best = tensors[0][index]
        for tensor in tensors[1:]:
            if abs(tensor[index]) >= abs(best):
                best = tensor[index]
        expected[index] = best
    ours = merge(tensors, "magmax", accumulation_dtype="float64")
    assert torch.equal(ours, expected)
    first_wins = torch.stack(tensors).gather(0, torch.stack(tensors).abs().argmax(0, keepdim=True))[0]
    assert not torch.equal(ours, first_wins)  # opposite-sign ties occur: the rule is exercised
    assert merge([torch.tensor([0.5, -2.0]), torch.tensor([-0.5, 2.0])], "magmax").tolist() == [-0.5, 2.0]


# --- original TIES (the paper's baseline) ------------------------------------------------------------


def original_ties_reference(runs: list[dict[str, np.ndarray]], density: float) -> dict[str, np.ndarray]:
    """The TIES authors' definition in float64, written out: whole-model kthvalue trim per run,
    sign of the summed trimmed entries (exact-zero sums take the sign of the sum of elected signs;
    if that is 0 too, their `where(sign > 0, T > 0, T < 0)` keeps the negative entries), then the
    mean of the entries of the elected sign."""
    keys = sorted(runs[0])
    flat = np.stack([np.concatenate([run[key].ravel() for key in keys]) for run in runs]).astype(np.float64)
    size = flat.shape[1]
    trimmed = np.zeros_like(flat)
    for row in range(flat.shape[0]):
        if density >= 1:
            trimmed[row] = flat[row]
            continue
        kth = np.sort(np.abs(flat[row]))[size - int(size * density) - 1]  # 1-based (d - int(d·k))-th smallest
        trimmed[row] = np.where(np.abs(flat[row]) >= kth, flat[row], 0.0)
    elected = np.sign(trimmed.sum(axis=0))
    elected[elected == 0] = np.sign(elected.sum())
    merged = np.zeros(size)
    for column in range(size):
        entries = trimmed[:, column]
        chosen = entries[entries > 0] if elected[column] > 0 else entries[entries < 0]
        merged[column] = chosen.mean() if chosen.size else 0.0
    out, start = {}, 0
    for key in keys:
        shape = runs[0][key].shape
        out[key] = merged[start : start + int(np.prod(shape))].reshape(shape)
        start += int(np.prod(shape))
    return out


def dyadic_runs(n: int, seed: int, positive: float) -> list[dict[str, torch.Tensor]]:
    """Task vectors of quarters (sums exact, magnitudes tie), positive with probability `positive`;
    a few elements are planted as +1.5 / −1.5 pairs in runs 0 and 1, so sums are exactly 0 there."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (10, 8), "b.bias": (12,), "c.weight": (4, 5, 3)}
    scales = {"a.weight": 1.0, "b.bias": 0.5, "c.weight": 2.0}  # a whole-model trim differs from per-tensor
    runs = []
    for _ in range(n):
        run = {}
        for key, shape in shapes.items():
            magnitude = torch.randint(0, 4, shape, generator=generator).double() / 4 * scales[key]
            sign = torch.where(
                torch.rand(shape, generator=generator, dtype=torch.float64) < positive, 1.0, -1.0
            )
            run[key] = (sign * magnitude).float()
        runs.append(run)
    for index in range(1, n):
        runs[index]["a.weight"][0, :4] = 0.0
    runs[0]["a.weight"][0, :4], runs[1]["a.weight"][0, :4] = 1.5, -1.5
    return runs


def _check_reference_is_exercised(runs, density):
    """The case must contain what the definition treats specially, or the comparison proves little."""
    keys = sorted(runs[0])
    flat = np.stack([np.concatenate([run[k].double().numpy().ravel() for k in keys]) for run in runs])
    size = flat.shape[1]
    kth = [np.sort(np.abs(row))[size - int(size * density) - 1] for row in flat]
    assert any(
        np.count_nonzero(np.abs(row) == value) > 1 for row, value in zip(flat, kth, strict=True)
    )  # threshold ties
    trimmed = np.stack([np.where(np.abs(row) >= value, row, 0) for row, value in zip(flat, kth, strict=True)])
    zero_sum = (trimmed.sum(0) == 0) & (np.abs(trimmed).sum(0) > 0)
    assert zero_sum.any()  # exact zero sums with non-zero entries: the majority-sign rule decides
    return int(np.sign(np.sign(trimmed.sum(0)).sum()))


@pytest.mark.parametrize(("n", "seed", "positive"), [(2, 0, 0.5), (3, 1, 0.8), (4, 2, 0.2), (5, 3, 0.3)])
def test_original_ties_equals_float64_reference_via_accumulator(n, seed, positive):
    runs = dyadic_runs(n, seed, positive)
    majority = _check_reference_is_exercised(runs, 0.2)
    if positive != 0.5:
        assert majority == (1 if positive > 0.5 else -1)  # both majority signs are covered
    expected = original_ties_reference([{k: v.numpy() for k, v in run.items()} for run in runs], 0.2)
    for dtype, tolerance in (("float64", 1e-12), ("float32", 1e-6)):
        result = merge_task_vectors(
            [TaskVector(dict(run)) for run in runs], NegMergeConfig(method="ties", accumulation_dtype=dtype)
        )
        for key, value in expected.items():
            np.testing.assert_allclose(
                result.task_vector[key].double().numpy(), value, rtol=0, atol=tolerance
            )
    per_tensor = original_ties_reference([{"only": run["a.weight"].numpy()} for run in runs], 0.2)["only"]
    assert not np.allclose(per_tensor, expected["a.weight"])  # the trim really is over the whole model


def _save_folder(path, tensors):
    from safetensors.torch import save_file

    path.mkdir()
    save_file({key: value.contiguous() for key, value in tensors.items()}, path / "model.safetensors")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_original_ties_equals_float64_reference_via_merge_checkpoints(tmp_path, dtype):
    runs = dyadic_runs(4, seed=5, positive=0.3)
    _check_reference_is_exercised(runs, 0.3)
    generator = torch.Generator().manual_seed(9)
    base = {
        key: (torch.randint(-20, 21, value.shape, generator=generator) / 8).float()
        for key, value in runs[0].items()
    }
    _save_folder(tmp_path / "base", base)
    for index, run in enumerate(runs):  # θ = θ₀ + τ is exact on this grid, so θ − θ₀ gives τ back
        _save_folder(tmp_path / f"ft{index}", {key: base[key] + run[key] for key in base})
    config = NegMergeConfig(method="ties", density=0.3, accumulation_dtype=dtype)
    result = merge_checkpoints(
        tmp_path / "base", [tmp_path / f"ft{i}" for i in range(4)], config, progress=False
    )
    expected = original_ties_reference([{k: v.numpy() for k, v in run.items()} for run in runs], 0.3)
    streamed = merge_task_vectors([TaskVector(dict(run)) for run in runs], config)
    for key, value in expected.items():
        np.testing.assert_allclose(result.task_vector[key].double().numpy(), value, rtol=0, atol=1e-6)
        assert torch.equal(result.task_vector[key], streamed.task_vector[key])
    assert result.stats.kept == sum(int(np.count_nonzero(value)) for value in expected.values())


def test_original_ties_zero_sum_with_no_majority_keeps_negative_entries():
    """Signs +, −, 0 sum to 0: their resolve_zero_signs leaves 0 and disjoint_merge keeps T < 0."""
    tensors = [torch.tensor([2.0, -2.0, 1.0]), torch.tensor([-1.0, 1.0, -1.0])]
    assert merge(tensors, "ties", density=1.0).tolist() == [2.0, -2.0, -1.0]
    # peft elects + on a zero sum instead
    assert merge(tensors, "ties", ties_variant="peft", density=1.0).tolist() == [2.0, -2.0, 1.0]


def test_original_ties_trim_keeps_one_more_than_k_and_every_tie():
    """kthvalue(d − int(d·k)) with `>=`: int(d·k) + 1 entries when distinct, all equal ones on ties."""
    distinct = torch.arange(1.0, 11.0)
    assert int(torch.count_nonzero(merge([distinct], "ties", density=0.2))) == 3
    tied = torch.tensor([1.0, 2, 3, 3, 3, 3, 3, 3, 3, 3])
    assert int(torch.count_nonzero(merge([tied], "ties", density=0.2))) == 8


def test_original_ties_total_elements_count_frozen_tensors_as_zeros():
    """The authors flatten the whole image encoder, frozen tensors (τ = 0) included: d grows."""
    runs = dyadic_runs(3, seed=8, positive=0.5)
    frozen = np.zeros((30, 10))
    expected = original_ties_reference(
        [{**{k: v.numpy() for k, v in run.items()}, "frozen.weight": frozen} for run in runs], 0.2
    )
    taking_part = sum(value.numel() for value in runs[0].values())
    config = NegMergeConfig(
        method="ties", accumulation_dtype="float64", ties_total_elements=taking_part + 300
    )
    result = merge_task_vectors([TaskVector(dict(run)) for run in runs], config)
    for key in runs[0]:
        np.testing.assert_allclose(result.task_vector[key].numpy(), expected[key], rtol=0, atol=1e-12)
    without = merge_task_vectors([TaskVector(dict(run)) for run in runs], NegMergeConfig(method="ties"))
    assert result.stats.kept > without.stats.kept  # more entries kept, as in their code
    everything = NegMergeConfig(
        method="ties", ties_total_elements=100 * taking_part
    )  # rank falls in the zeros
    kept_all = merge_task_vectors([TaskVector(dict(run)) for run in runs], everything)
    dense = merge_task_vectors(
        [TaskVector(dict(run)) for run in runs], NegMergeConfig(method="ties", density=1.0)
    )
    assert all(torch.equal(kept_all.task_vector[k], dense.task_vector[k]) for k in runs[0])
    with pytest.raises(MergeError, match="ties_total_elements=10 is smaller"):
        merge_task_vectors(
            [TaskVector(dict(run)) for run in runs], NegMergeConfig(method="ties", ties_total_elements=10)
        )


def test_ties_options_are_checked():
    with pytest.raises(ConfigError, match="ties_variant"):
        NegMergeConfig(method="ties", ties_variant="global")
    with pytest.raises(ConfigError, match="majority_sign_method='frequency' needs ties_variant='peft'"):
        NegMergeConfig(method="ties", majority_sign_method="frequency")
    with pytest.raises(ConfigError, match="density"):
        NegMergeConfig(method="ties", density=0.0)
    with pytest.raises(ConfigError, match="ties_total_elements"):
        NegMergeConfig(method="ties", ties_total_elements=0)
    assert NegMergeConfig(method="ties").density == 0.2 and NegMergeConfig().ties_variant == "original"


def test_original_ties_session_refuses_folds_without_a_threshold():
    from hf_negmerge.merging import get_merge_method

    session = get_merge_method("ties").start(NegMergeConfig(method="ties"))
    merger = session.new_merger()
    with pytest.raises(MergeError, match="whole-model trim threshold"):
        merger.add(torch.ones(3))


def test_k_of_n_extension_against_reference():
    tensors = random_task_tensors(5, shape=(40,), zero_fraction=0.1, seed=2, dtype=torch.float64)
    stack = torch.stack(tensors)
    agreeing = torch.maximum((stack > 0).sum(0), (stack < 0).sum(0))
    expected = torch.where(agreeing >= 4, stack.mean(0), torch.zeros(()))  # ceil(0.8 * 5) = 4
    ours = merge(tensors, consensus_fraction=0.8, accumulation_dtype="float64")
    torch.testing.assert_close(ours, expected)
    assert (ours != 0).sum() > (merge(tensors, accumulation_dtype="float64") != 0).sum()


@pytest.mark.parametrize("method", ["negmerge", "uniform", "ties", "magmax"])
def test_every_method_needs_at_least_one_vector(method):
    with pytest.raises(MergeError, match="at least 1"):
        merge([], method)


def test_task_arithmetic_refuses_several_vectors():
    with pytest.raises(MergeError, match="at most 1"):
        merge(random_task_tensors(2), "task_arithmetic")


def test_unknown_method_and_bad_options_are_named():
    with pytest.raises(ConfigError, match="'median'"):
        merge(random_task_tensors(2), "median")
    with pytest.raises(ConfigError, match="consensus_fraction"):
        merge(random_task_tensors(2), consensus_fraction=0.4)
    with pytest.raises(MergeError, match="shape"):
        merge([torch.zeros(3), torch.zeros(4)])
    assert set(available_methods()) >= {"negmerge", "task_arithmetic", "uniform", "ties", "magmax"}


def _vectors(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        TaskVector(
            {
                "a.weight": torch.randn(4, 3, generator=generator),
                "b.bias": torch.randn(5, generator=generator),
            }
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("method", ["negmerge", "uniform", "ties", "magmax"])
def test_accumulator_resume_equals_uninterrupted(tmp_path, method):
    vectors = _vectors(4, seed=7)
    config = NegMergeConfig(method=method, density=0.5 if method == "ties" else 1.0)
    uninterrupted = merge_task_vectors(vectors, config)
    first = MergeAccumulator(config)
    for index, vector in enumerate(vectors[:2]):
        first.add(vector, run_id=f"run{index}")
    first.save(tmp_path / "state.safetensors")
    resumed = MergeAccumulator.load(tmp_path / "state.safetensors")
    assert resumed.run_ids == ["run0", "run1"]
    for index, vector in enumerate(vectors[2:], start=2):
        resumed.add(vector, run_id=f"run{index}")
    result = resumed.result()
    for key in uninterrupted.task_vector:
        assert torch.equal(result.task_vector[key], uninterrupted.task_vector[key])
    assert result.stats.input_norms == pytest.approx(uninterrupted.stats.input_norms)
    with pytest.raises(MergeError, match="already folded"):
        resumed.add(vectors[0], run_id="run0")


def test_stats_count_consensus_and_norms():
    vectors = _vectors(3, seed=1)
    result = merge_task_vectors(vectors)
    merged = result.task_vector
    assert result.stats.kept == merged.count_nonzero()
    assert result.stats.numel == 4 * 3 + 5
    assert result.stats.kept_fraction == pytest.approx(merged.count_nonzero() / 17)
    assert result.stats.input_norms == pytest.approx([v.norm() for v in vectors])
    assert result.stats.result_norm == pytest.approx(merged.norm())
    by_tensor = result.stats.kept_fraction_by_tensor()
    assert by_tensor["b.bias"] == pytest.approx(int((merged["b.bias"] != 0).sum()) / 5)


def test_include_exclude_select_tensors():
    vectors = _vectors(2)
    result = merge_task_vectors(vectors, NegMergeConfig(include=["a.*"]))
    assert result.task_vector.keys() == ["a.weight"]
    result = merge_task_vectors(vectors, NegMergeConfig(exclude=["a.*"]))
    assert result.task_vector.keys() == ["b.bias"]
    with pytest.raises(ConfigError, match=r"include pattern 'nothing\.\*' matches no tensor.*'a\.weight'"):
        merge_task_vectors(vectors, NegMergeConfig(include=["nothing.*"]))
    with pytest.raises(MergeError, match="No tensor"):  # each pattern matches, together they leave nothing
        merge_task_vectors(vectors, NegMergeConfig(include=["a.*"], exclude=["a.*"]))


def test_merge_cli_ties_uses_the_config_defaults_and_the_variant_flag(tmp_path):
    """Unset --density/--ties-variant must mean NegMergeConfig's defaults (original TIES, 0.2)."""
    from hf_negmerge.cli import main

    runs = dyadic_runs(3, seed=6, positive=0.5)
    base = {key: torch.zeros_like(value) for key, value in runs[0].items()}
    _save_folder(tmp_path / "base", base)
    for index, run in enumerate(runs):
        _save_folder(tmp_path / f"ft{index}", run)
    folders = [str(tmp_path / f"ft{index}") for index in range(3)]

    def cli_merge(out, *extra):
        command = [
            "merge",
            "--base",
            str(tmp_path / "base"),
            "--finetuned",
            *folders,
            "--out",
            str(tmp_path / out),
        ]
        assert main([*command, "--method", "ties", "--no-progress", *extra]) == 0
        return TaskVector.load(tmp_path / out / "merged_task_vector.safetensors")

    default = cli_merge("default")
    expected = original_ties_reference([{k: v.numpy() for k, v in run.items()} for run in runs], 0.2)
    for key, value in expected.items():
        np.testing.assert_allclose(default[key].double().numpy(), value, rtol=0, atol=1e-6)
    peft = cli_merge(
        "peft", "--ties-variant", "peft", "--density", "0.5", "--majority-sign-method", "frequency"
    )
    config = NegMergeConfig(method="ties", ties_variant="peft", density=0.5, majority_sign_method="frequency")
    for key, value in merge_task_vectors(
        [TaskVector(dict(run)) for run in runs], config
    ).task_vector.tensors.items():
        assert torch.equal(peft[key], value)
