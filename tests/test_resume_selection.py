"""A finished run rerun with other λ-search settings repeats only the λ search (issue 10).

The grid's merge state is keyed by the merge fields alone (`MergeConfig`): a new retain_ratio or
λ grid reuses every fine-tuning run (fine-tuning is made to fail to prove it) and publishes the
new selection; a change of a merge field is refused, naming the field and both values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import hf_negmerge.training.runner as runner
from hf_negmerge.cli import main as cli_main
from hf_negmerge.results import RunResults

BASE = [
    "--no-progress",
    "grid.axes.seed=[0,1]",
    "grid.base.epochs=1",
    "grid.base.warmup_steps=0",
    "original.epochs=3",
    "comparison=[uniform]",
    "data.max_samples=200",
]


def unlearn(out: Path, cache: Path, *extra: str) -> list[str]:
    return ["unlearn", "--output-dir", str(out), f"original.cache_dir={cache}", *BASE, *extra]


def run_files(out: Path) -> dict[str, str]:
    """Every file of the fine-tuning runs, by sha256."""
    runs = out / "work" / "grid" / "runs"
    return {
        str(path.relative_to(runs)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(runs.rglob("*"))
        if path.is_file()
    }


def no_finetuning(*args, **kwargs):
    raise AssertionError("a run was fine-tuned again")


@pytest.mark.slow
def test_selection_changes_rerun_only_the_lambda_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out, cache = tmp_path / "out", tmp_path / "originals"
    assert cli_main(unlearn(out, cache, "merge.lambda_grid=[0,0.5]")) == 0
    first = RunResults.load(out)
    runs_before = run_files(out)
    grid_ids = [point["id"] for point in json.loads((out / "work" / "grid" / "grid.json").read_text())]
    assert sorted(name for name in runs_before if name.endswith("run.json")) == [
        f"{run_id}/run.json" for run_id in sorted(grid_ids)
    ]
    monkeypatch.setattr(runner, "finetune", no_finetuning)

    # 1. Another retain ratio: the threshold is the new ratio × the original's retain accuracy.
    assert cli_main(unlearn(out, cache, "merge.lambda_grid=[0,0.5]", "merge.retain_ratio=0.5")) == 0, (
        capsys.readouterr().err
    )
    ratio = RunResults.load(out)
    assert ratio.config["retain_ratio"] == 0.5 and first.config["retain_ratio"] == 0.95
    assert ratio.selection.threshold == pytest.approx(0.5 * ratio.selection.original.retain_accuracy)
    assert ratio.selection.threshold < first.selection.threshold
    qualifying = [p for p in ratio.selection.curve if p.retain_accuracy >= ratio.selection.threshold]
    assert ratio.scale == min(qualifying, key=lambda p: (p.forget_accuracy, p.scale)).scale

    # 2. Another λ grid: the curve holds exactly the new grid, evaluated on the same merged vector.
    grid = [0.0, 0.25, 0.5, 1.0]
    assert cli_main(unlearn(out, cache, "merge.lambda_grid=[0,0.25,0.5,1]")) == 0, capsys.readouterr().err
    wider = RunResults.load(out)
    assert [point.scale for point in wider.selection.curve] == grid
    assert wider.config["lambda_grid"] == grid
    at_half = {p.scale: p for p in first.selection.curve}[0.5]
    assert {p.scale: p for p in wider.selection.curve}[0.5] == at_half  # same τ, same accuracies
    assert run_files(out) == runs_before  # nothing retrained or rewritten

    # 3. A merge field is part of the key: refused, naming the field and both values.
    code = cli_main(unlearn(out, cache, "merge.lambda_grid=[0,0.5]", "merge.consensus_fraction=0.8"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "merge.consensus_fraction: 1.0 → 0.8" in err
    assert "retain_ratio" not in err and "Traceback" not in err
    assert RunResults.load(out).config["lambda_grid"] == grid  # the published run is untouched
