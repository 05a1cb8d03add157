"""Terminal stream, logs, dry-run budget and plots of `hf-negmerge unlearn` (issue 13)."""

from __future__ import annotations

import json
import math
import re

import pytest

from hf_negmerge.cli import main
from hf_negmerge.evaluation import summary_table
from hf_negmerge.recipe import load_recipe

ROWS = [
    {"method": "original", "scale": 0.0, "forget_accuracy": 95.555, "unlearn_accuracy": 4.445},
    {
        "method": "task_arithmetic (best: s0-lr0.0005-e25e16)",
        "scale": 4.0,
        "qualified": True,
        "val_forget_accuracy": 0.0,
        "val_retain_accuracy": 92.1488,
        "forget_accuracy": 0.0,
        "unlearn_accuracy": 100.0,
        "retain_accuracy": 89.876,
        "test_accuracy": 80.8888,
        "kept_fraction": 0.7709,
        "status": "retain constraint not met",
    },
]


def test_summary_fits_100_columns_with_two_decimals_and_a_legend():
    text = summary_table(ROWS)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].split() == ["method", "λ", "forget", "↓", "UA", "↑", "retain", "↑", "test", "↑", "status"]
    assert "val_forget_accuracy" not in text and "kept" not in lines[0]  # raw names stay in report.md
    assert lines[2].split()[:3] == ["original", "0.00", "95.56"]  # rounded to 2 decimals
    assert lines[3].split()[:6] == ["task_arithmetic*", "4.00", "0.00", "100.00", "89.88", "80.89"]
    assert lines[3].endswith("retain not met")
    assert "* best single run: s0-lr0.0005-e25e16" in lines
    assert "UA = 100 − forget" in lines[-1] and "validation" in lines[-1]


def test_summary_drops_ua_then_cuts_names_when_too_wide():
    rows = [{**ROWS[1], "method": "x" * 80, "control_accuracy": 1.0, "mia_efficacy": 2.0, "avg_gap": 3.0}]
    text = summary_table(rows)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "UA" not in text.splitlines()[0] and "…" in text


def _plan_numbers(text: str) -> dict[str, str]:
    found = {}
    for key, pattern in {
        "rows": r"budget \((\d+) forget-train rows\)",
        "original": r"θ₀: (\d+) optimizer steps",
        "each": r"(\d+) runs \(.*\): (\d+) epochs, (\d+) optimizer steps each",
        "total": r"total: (\d+) optimizer steps over (\d+) runs",
        "evaluations": r"evaluations: (\d+) λ points on validation \+ (\d+) test evaluations",
        "disk": r"disk: run task vectors ≈ ([\d.]+ MB) \((\d+) × ([\d,]+) parameters × 4 bytes\)",
    }.items():
        match = re.search(pattern, text)
        found[key] = match.groups() if match else None
    return found


def test_dry_run_budget_of_the_default_recipe(capsys):
    from hf_negmerge.data import build_unlearning_data
    from hf_negmerge.models import build_classifier

    assert main(["unlearn", "--dry-run"]) == 0
    text = capsys.readouterr().out
    numbers = _plan_numbers(text)
    recipe = load_recipe(None, [])
    data = build_unlearning_data(recipe.data)
    rows = len(data.forget_train)  # counted here from the data, the figures below by hand
    assert numbers["rows"] == (str(rows),)
    steps = math.ceil(rows / 32) * 4  # batch 32, 4 epochs, no accumulation (default.yaml)
    assert numbers["each"] == ("6", "4", str(steps))
    assert numbers["total"] == (str(6 * steps), "6")
    # θ₀ trains on train minus validation rows: forget + retain training rows of the data stage
    theta_rows = len(data.forget_train) + len(data.retain_train) - len(data.retain_val)
    assert numbers["original"] == (str(40 * math.ceil(theta_rows / 32)),)
    # 21 λ points (0..10 in steps of 0.5, default.yaml) × (negmerge + 6 single runs + uniform,
    # ties, magmax); one test evaluation each
    assert numbers["evaluations"] == (str(21 * 10), "10")
    model = build_classifier(recipe.model, data.class_names).model
    trained = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("classifier"))
    trained += sum(p.numel() for name, p in model.named_parameters() if name.startswith("classifier"))
    assert numbers["disk"][1:] == ("6", f"{trained:,}")
    assert numbers["disk"][0] == f"{6 * trained * 4 / 1e6:.1f} MB"
    time = re.search(r"time: ≈ ([\d.]+) min on 1 CPU thread .*, of which θ₀ ≈ ([\d.]+) min: none when", text)
    from hf_negmerge.plan import ORIGINAL_STEPS_PER_SECOND

    theta_minutes = 40 * math.ceil(theta_rows / 32) / ORIGINAL_STEPS_PER_SECOND["vit"] / 60
    assert time and float(time.group(2)) == round(theta_minutes, 1) < float(time.group(1))
    assert "download:" not in text  # built-in data, tiny model: nothing to fetch


def test_dry_run_budget_of_the_clip_cars_recipe_offline(capsys):
    assert main(["unlearn", "--dry-run", "--config", "clip-vit-b32/cars"]) == 0
    text = capsys.readouterr().out
    numbers = _plan_numbers(text)
    assert numbers["each"] is None and "70 epochs, ? optimizer steps each" in text
    assert "30 runs (" in text and "row count unknown" in text
    # 21 λ points × (negmerge + 30 single runs + uniform, ties, magmax) = 714; 34 test evaluations
    assert numbers["evaluations"] == ("714", "34")
    for repo in ("openai/clip-vit-base-patch32", "tanganke/stanford_cars", "ILSVRC/imagenet-1k"):
        assert f"'{repo}': size unknown offline" in text
    assert "× 30 runs (parameter count unknown offline), kept" in text
    assert "no measured throughput" in text


def test_dry_run_with_no_comparison_does_not_keep_run_vectors(capsys):
    assert main(["unlearn", "--dry-run", "comparison=[]"]) == 0
    text = capsys.readouterr().out
    assert "deleted after each fold" in text
    assert _plan_numbers(text)["evaluations"] == ("21", "1")  # the 21 λ points of default.yaml, once


@pytest.mark.parametrize(
    ("tracker", "fragment"),
    [("tensorboard", "not installed (pip install tensorboard)"), ("nonsense", "unknown tracker")],
)
def test_unavailable_tracker_is_a_clear_error(capsys, tracker, fragment):
    from accelerate.tracking import get_available_trackers

    if tracker in {str(t) for t in get_available_trackers()}:
        pytest.skip(f"{tracker} is installed here")
    assert main(["unlearn", "--dry-run", f"evaluation.log_with=[{tracker}]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-negmerge unlearn: error: evaluation.log_with") and fragment in err


def test_only_rank_zero_prints(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert main(["unlearn", "--dry-run"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["unlearn", "--dry-run"]) == 0
    assert "budget (" in capsys.readouterr().out


def test_tiny_processors_do_not_trigger_the_torchvision_fallback_warning(capfd):
    import subprocess
    import sys

    code = (
        "from hf_negmerge.models import build_classifier\n"
        "from hf_negmerge.models.config import ModelConfig\n"
        "for arch in ('vit', 'clip'): build_classifier(ModelConfig(architecture=arch), ['a', 'b'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "falling back" not in done.stderr + done.stdout


@pytest.mark.slow
def test_run_writes_jsonl_logs_and_plots_listed_in_the_manifest(tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "unlearn",
        "--quiet",
        "--output-dir",
        str(out),
        "grid.axes.seed=[0,1]",
        "grid.axes.learning_rate=[0.001]",
        "grid.base.epochs=1",
        "grid.base.warmup_steps=0",
        "original.epochs=2",
        f"original.cache_dir={tmp_path / 'cache'}",
        "comparison=[uniform]",
        "merge.lambda_grid=[0,1,2]",
    ]
    assert main(args) == 0
    printed = capsys.readouterr()
    lines = printed.out.strip().splitlines()
    assert lines[0].split()[:2] == ["method", "λ"]  # --quiet: the summary, nothing before it
    assert "Loading weights" not in printed.err and "%|" not in printed.err  # no bars at all
    assert "Warning" not in printed.err  # --quiet: warnings only with the summary (stdout)
    assert max(len(line) for line in lines[:6]) <= 100
    forget_rows = json.loads((out / "work/grid/inputs.json").read_text())["forget_train"]["rows"]
    steps = math.ceil(forget_rows / 32)  # 1 epoch of batch 32
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    runs = sorted({row["run"] for row in log})
    assert len(runs) == 2
    for run in runs:
        rows = [row for row in log if row["run"] == run]
        assert [row["step"] for row in rows] == list(range(1, steps + 1))
        assert all(row["loss"] > 0 for row in rows)
        assert rows[0]["learning_rate"] == pytest.approx(0.001)  # no warm-up: the peak rate first
        per_run = (out / "work/grid/runs" / run / "train_log.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in per_run] == [
            {k: v for k, v in row.items() if k != "run"} for row in rows
        ]
    curves = [json.loads(line) for line in (out / "lambda_curves.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {row["method"] for row in curves} >= {"negmerge", "uniform"}
    chosen = [row for row in curves if row["method"] == "negmerge" and row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["scale"] == metrics["lambda"] if "lambda" in metrics else True
    manifest = json.loads((out / "hf_negmerge_outputs.json").read_text())
    listed = json.dumps(manifest)
    for name in ("training_log.jsonl", "lambda_curves.jsonl", "loss_curves.png"):
        assert name in listed
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_two_processes_print_the_plan_bars_and_summary_once(tmp_path):
    """torchrun with 2 CPU processes: one plan, one summary, no third-party bars or warnings."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [
        *launcher,
        "-m",
        "hf_negmerge.cli",
        "unlearn",
        "--output-dir",
        str(tmp_path / "two"),
        f"original.cache_dir={tmp_path / 'cache'}",
        "grid.axes.seed=[0,1]",
        "grid.axes.learning_rate=[0.001]",
        "grid.base.epochs=1",
        "grid.base.warmup_steps=0",
        "original.epochs=2",
        "comparison=[uniform]",
        "merge.lambda_grid=[0,1,2]",
    ]
    done = subprocess.run(command, check=True, env=env, capture_output=True, text=True, timeout=600)
    shown = done.stdout + done.stderr
    for once in ("data: 'digits'", "torch threads per process", "Status:", "Unlearned model and report"):
        assert shown.count(once) == 1, (once, shown)
    assert len(re.findall(r"^method\s+λ", done.stdout, flags=re.MULTILINE)) == 1
    for noise in ("Loading weights", "Writing model shards", "Filter", "falling back"):
        assert noise not in shown, noise
    assert "evaluate" in done.stderr or "test uniform" in done.stderr  # our evaluation bar, once


def test_dry_run_budget_online_reads_sizes_and_gated_access_from_hub_metadata(capsys, monkeypatch):
    """Online: sizes are summed from the files' metadata; a gated dataset the token cannot read
    is said so; nothing is downloaded (only *_info calls are made)."""
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    import hf_negmerge.data.loading as loading

    calls = []

    class FakeApi:
        def model_info(self, repo_id, files_metadata=False):
            calls.append(("model", repo_id, files_metadata))
            files = [SimpleNamespace(size=605_000_000), SimpleNamespace(size=4_000)]
            return SimpleNamespace(
                siblings=files, safetensors=SimpleNamespace(total=151_277_313), gated=False
            )

        def dataset_info(self, repo_id, files_metadata=False):
            calls.append(("dataset", repo_id, files_metadata))
            if repo_id == "ILSVRC/imagenet-1k":
                raise GatedRepoError(
                    "gated", response=SimpleNamespace(headers={}, status_code=403, request=None)
                )
            return SimpleNamespace(siblings=[SimpleNamespace(size=1_950_000_000)], gated=False)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(loading, "hub_is_offline", lambda: False)
    assert main(["unlearn", "--dry-run", "--config", "clip-vit-b32/cars"]) == 0
    text = capsys.readouterr().out
    assert "model 'openai/clip-vit-base-patch32': 605.0 MB" in text  # 605,004,000 bytes
    assert "dataset 'tanganke/stanford_cars': 1.9 GB" in text  # 1.95 GB, one decimal
    assert "dataset 'ILSVRC/imagenet-1k': gated: your token cannot read it" in text
    # 30 runs × 151,277,313 parameters × 4 bytes: an upper bound (every parameter of the model)
    expected = (
        f"≤ {30 * 151_277_313 * 4 / 1e9:.1f} GB (30 × 151,277,313 parameters of the whole model × 4 bytes)"
    )
    assert expected in text
    assert sorted(calls) == [
        ("dataset", "ILSVRC/imagenet-1k", True),
        ("dataset", "tanganke/stanford_cars", True),
        ("model", "openai/clip-vit-base-patch32", True),
    ]


def test_dry_run_budget_without_network_says_so_instead_of_a_traceback(capsys, monkeypatch):
    """No DNS / no route: huggingface_hub's HTTP client raises its own errors (not OSError); the
    plan still prints, saying the metadata is unavailable and why."""
    import huggingface_hub

    import hf_negmerge.data.loading as loading

    class ConnectError(Exception):  # what httpx raises for "Name or service not known"
        pass

    class UnreachableApi:
        def model_info(self, repo_id, files_metadata=False):
            raise ConnectError("[Errno -2] Name or service not known")

        dataset_info = model_info

    monkeypatch.setattr(huggingface_hub, "HfApi", UnreachableApi)
    monkeypatch.setattr(loading, "hub_is_offline", lambda: False)
    assert main(["unlearn", "--dry-run", "--config", "clip-vit-b32/cars"]) == 0
    text = capsys.readouterr().out
    expected = (
        "metadata unavailable: the Hub did not answer (ConnectError: [Errno -2] Name or service not known)"
    )
    assert f"model 'openai/clip-vit-base-patch32': {expected}" in text
    assert f"dataset 'ILSVRC/imagenet-1k': {expected}" in text


def test_library_settings_are_restored_after_the_command():
    """The CLI quiets libraries only while it runs: an in-process caller keeps its own settings."""
    import logging

    import datasets
    import transformers

    before = (
        transformers.utils.logging.get_verbosity(),
        transformers.utils.logging.is_progress_bar_enabled(),
        datasets.is_progress_bar_enabled(),
        logging.getLogger().level,
        logging.getLogger("hf_negmerge").level,
    )
    for flags in (["--quiet"], []):
        assert main(["unlearn", "--dry-run", *flags]) == 0
        after = (
            transformers.utils.logging.get_verbosity(),
            transformers.utils.logging.is_progress_bar_enabled(),
            datasets.is_progress_bar_enabled(),
            logging.getLogger().level,
            logging.getLogger("hf_negmerge").level,
        )
        assert after == before


def test_send_to_trackers_logs_every_step_and_lambda_point(monkeypatch, tmp_path):
    """What reaches accelerate's trackers (a recording stand-in for Accelerator; no tracker
    package is installed here): loss and learning rate by step, validation accuracies by λ index."""
    import accelerate

    import hf_negmerge.tracking as tracking

    recorded = {}

    class RecordingAccelerator:
        def __init__(self, log_with, project_dir):
            recorded.update(log_with=log_with, project_dir=project_dir, logs=[])

        def init_trackers(self, name, config):
            recorded.update(name=name, config=config)

        def log(self, values, step):
            recorded["logs"].append((step, values))

        def end_training(self):
            recorded["ended"] = True

    monkeypatch.setattr(accelerate, "Accelerator", RecordingAccelerator)
    monkeypatch.setattr(tracking, "check_trackers", lambda names: None)
    logs = {
        "r1": [
            {"step": 1, "loss": 0.5, "learning_rate": 1e-3},
            {"step": 2, "loss": 0.25, "learning_rate": 5e-4},
        ]
    }
    curve = [
        {"method": "negmerge", "scale": 0.0, "forget_accuracy": 90.0, "retain_accuracy": 95.0},
        {"method": "negmerge", "scale": 1.0, "forget_accuracy": 10.0, "retain_accuracy": 93.0},
    ]
    tracking.send_to_trackers(["tensorboard"], tmp_path, logs, curve, {"method": "negmerge"})
    assert recorded["log_with"] == ["tensorboard"] and recorded["project_dir"] == str(tmp_path)
    assert recorded["ended"] is True
    assert recorded["logs"] == [
        (1, {"train/r1/loss": 0.5, "train/r1/learning_rate": 1e-3}),
        (2, {"train/r1/loss": 0.25, "train/r1/learning_rate": 5e-4}),
        (
            0,
            {
                "lambda/negmerge/forget_accuracy": 90.0,
                "lambda/negmerge/retain_accuracy": 95.0,
                "lambda/negmerge/scale": 0.0,
            },
        ),
        (
            1,
            {
                "lambda/negmerge/forget_accuracy": 10.0,
                "lambda/negmerge/retain_accuracy": 93.0,
                "lambda/negmerge/scale": 1.0,
            },
        ),
    ]
