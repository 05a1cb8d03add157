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
from hf_negmerge.merging import MergeAccumulator, available_methods, merge, merge_task_vectors
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
        tensors, "ties", density=density, majority_sign_method=sign_method, accumulation_dtype="float64"
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
