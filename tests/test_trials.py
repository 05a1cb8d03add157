"""Repeated trials (`hf-negmerge unlearn --seeds`, benchmarks/unlearning_seeds.py): what each trial
sets, the mean ± std and target counts against numpy, summary ownership, and a real two-seed run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_negmerge.errors import ConfigError, OutputError
from hf_negmerge.trials import Trial, run_trials, summarise, trials_for, write_summary


def _record(trial: str, original: tuple[float, float], rows: dict[str, tuple[float, float, float]]):
    """A trial record as `trial_record` returns it: (forget, retain, λ) per method."""
    return {
        "trial": trial,
        "original": {"forget_accuracy": original[0], "retain_accuracy": original[1]},
        "main": "negmerge",
        "status": "unlearned",
        "scenario": "class",
        "methods": {
            name: {"forget_accuracy": f, "retain_accuracy": r, "scale": s} for name, (f, r, s) in rows.items()
        },
    }


def test_each_trial_sets_its_seed_keys_and_class(tmp_path, monkeypatch):
    from hf_negmerge import trials

    seen = []
    monkeypatch.setattr(trials, "trial_record", lambda trial, folder: {"trial": trial.name})
    records = run_trials(
        None,  # the built-in default: class forgetting on digits
        ["grid.axes.learning_rate=[0.001]"],
        trials_for([2, 5], ["3", "8"]),
        tmp_path,
        ("data.seed",),
        run=lambda recipe: seen.append(recipe) or "done",
    )
    assert [r["trial"] for r in records] == [
        "class-3-seed-2",
        "class-3-seed-5",
        "class-8-seed-2",
        "class-8-seed-5",
    ]
    assert [(r.seed, r.data.seed, r.data.forget_classes) for r in seen] == [
        (2, 2, ["3"]),
        (5, 5, ["3"]),
        (2, 2, ["8"]),
        (5, 5, ["8"]),
    ]
    # The recipe's own overrides apply to every trial; its grid's seed axis is not a seed key.
    assert {(p.hyperparameters.seed, p.hyperparameters.learning_rate) for p in seen[0].grid.expand()} == {
        (0, 0.001),
        (1, 0.001),
        (2, 0.001),
    }
    assert [str(r.output_dir) for r in seen] == [str(tmp_path / r["trial"]) for r in records]
    # A non-main process (run returns None) reports nothing.
    assert run_trials(None, [], [Trial(0)], tmp_path, run=lambda recipe: None) == []


def test_trials_refuse_repeated_or_missing_seeds():
    with pytest.raises(ConfigError, match=r"Seeds repeat: \[1, 1\]"):
        trials_for([1, 1])
    with pytest.raises(ConfigError, match="at least one seed"):
        trials_for([])


def test_summary_mean_std_and_target_counts_match_numpy():
    records = [
        _record("seed-0", (95.0, 90.0), {"negmerge": (0.0, 88.0, 3.0), "uniform": (20.0, 89.0, 2.0)}),
        _record("seed-1", (97.0, 92.0), {"negmerge": (10.0, 86.0, 2.5), "uniform": (5.0, 90.0, 2.5)}),
        _record("seed-2", (93.0, 94.0), {"negmerge": (2.0, 90.0, 4.0), "uniform": (1.0, 80.0, 1.0)}),
    ]
    table = summarise(records, max_forget=15.0, retain_ratio=0.95)
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    forget = np.array([0.0, 10.0, 2.0])
    ratio = np.array([88 / 90, 86 / 92, 90 / 94])
    assert f"{forget.mean():.1f} ± {forget.std(ddof=1):.1f}" in lines["negmerge"]
    assert f"{ratio.mean():.3f} ± {ratio.std(ddof=1):.3f}" in lines["negmerge"]
    # negmerge: 88/90 = .978 ok, 86/92 = .935 misses, 90/94 = .957 ok → 2; uniform: forget 20 misses,
    # 90/92 ok, 80/94 misses → 1.
    assert lines["negmerge"].endswith(" 2 |") and lines["uniform"].endswith(" 1 |")
    assert "meets target (of 3)" in table
    assert "| seed-1 | 97.0 / 92.0 | 10.0 | 86.0 | 0.935 | 2.50 | no | unlearned |" in table


def test_summary_files_replace_only_their_own(tmp_path):
    records = [_record("seed-0", (95.0, 90.0), {"negmerge": (0.0, 88.0, 3.0)})]
    path = write_summary(tmp_path, records, summarise(records), {"seeds": [0]})
    assert json.loads(path.with_suffix(".json").read_text())["trials"][0]["trial"] == "seed-0"
    write_summary(tmp_path, records, "second", {})  # ours: replaced
    assert path.read_text() == "second\n"
    path.write_text("my notes\n")  # edited by the user: kept
    with pytest.raises(OutputError, match="not written by hf-negmerge"):
        write_summary(tmp_path, records, "third", {})
    assert path.read_text() == "my notes\n"


@pytest.mark.slow
def test_cli_seeds_runs_every_seed_and_summarises(tmp_path, capsys):
    from hf_negmerge.cli import main
    from hf_negmerge.results import RunResults

    out = tmp_path / "trials"
    args = ["unlearn", "--seeds", "0", "1", "--output-dir", str(out), "--no-progress"]
    args += ["grid.axes.seed=[0]", "grid.axes.learning_rate=[0.001]", "grid.base.epochs=1", "comparison=[]"]
    args += ["original.epochs=1", "model.tiny={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1}"]
    assert main([*args, f"original.cache_dir={tmp_path / 'cache'}", "merge.lambda_grid=[0,1]"]) == 0
    firsts = [RunResults.load(out / f"seed-{seed}") for seed in (0, 1)]
    assert firsts[0].original != firsts[1].original  # each seed trained its own θ₀
    summary = json.loads((out / "trials-summary.json").read_text())
    assert [t["trial"] for t in summary["trials"]] == ["seed-0", "seed-1"]
    forget = [r.original["forget_accuracy"] for r in firsts]
    assert f"{np.mean(forget):.1f} ± {np.std(forget, ddof=1):.1f}" in (out / "trials-summary.md").read_text()
    assert "Mean ± std over 2 trials" in capsys.readouterr().out
