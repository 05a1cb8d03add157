"""One torch thread policy for `hf-negmerge unlearn` and `run_unlearning` from Python."""

from __future__ import annotations

import json

import pytest
import torch

import hf_negmerge.pipeline as pipeline
from hf_negmerge.cli import main
from hf_negmerge.recipe import load_recipe
from hf_negmerge.threads import chosen_thread_count, policy_threads


@pytest.fixture
def caller_threads():
    """The caller's own torch setting (3), put back afterwards whatever the test did."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


@pytest.mark.parametrize(("omp", "expected"), [(None, 1), ("2", 2), ("0", 1), ("lots", 1)])
def test_run_unlearning_uses_the_cli_policy_and_restores_the_callers_count(
    monkeypatch, caller_threads, omp, expected
):
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    seen = []
    monkeypatch.setattr(pipeline, "_run_with_policy_threads", lambda *a: seen.append(torch.get_num_threads()))
    pipeline.run_unlearning(object(), progress=False)
    assert seen == [expected] == [chosen_thread_count()]
    assert torch.get_num_threads() == caller_threads


def test_policy_threads_restores_the_count_when_the_block_raises(monkeypatch, caller_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with pytest.raises(RuntimeError), policy_threads() as threads:
        assert threads == torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == caller_threads


@pytest.mark.slow
def test_a_folder_made_by_the_cli_resumes_from_python_without_retraining(tmp_path, monkeypatch):
    """The thread count is part of θ₀'s cache key: one policy means one θ₀ for both entry points."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cache = tmp_path / "cache"
    overrides = [
        f"original.cache_dir={cache}",
        "original.epochs=3",
        "grid.axes.seed=[0]",
        "grid.base.epochs=1",
        "comparison=[]",
        "merge.lambda_grid=[0,0.5]",
    ]
    out = tmp_path / "out"
    assert main(["unlearn", "--output-dir", str(out), "--no-progress", *overrides]) == 0
    cli_metrics = json.loads((out / "metrics.json").read_text())
    cached = sorted(cache.iterdir())

    torch.set_num_threads(2)  # a Python user's own setting, different from the policy's
    recipe = load_recipe(None, [*overrides, f"output_dir={out}"])
    outcome = pipeline.run_unlearning(recipe, progress=False)
    assert sorted(cache.iterdir()) == cached  # θ₀ reused, not trained again under another key
    assert outcome.original == pytest.approx(cli_metrics["original"])
    assert outcome.main.test == pytest.approx(cli_metrics["unlearned"])
    assert outcome.main.selection.scale == cli_metrics["scale"]
    assert torch.get_num_threads() == 2
