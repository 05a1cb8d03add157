"""The 'dataset' scenario (the paper's CLIP setting): control splits use their own zero-shot head."""

from __future__ import annotations

import json

import pytest

from hf_negmerge.data import load_digits_dataset
from hf_negmerge.recipe import recipe_from_dict

CONTROL_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.mark.slow
def test_dataset_scenario_scores_control_with_its_own_head(tmp_path):
    from hf_negmerge.evaluation import predict_dataset
    from hf_negmerge.models import ImageClassifier
    from hf_negmerge.pipeline import run_unlearning

    control_dir = tmp_path / "control"
    load_digits_dataset(seed=1).save_to_disk(str(control_dir))
    recipe = recipe_from_dict(
        {
            "output_dir": str(tmp_path / "out"),
            "data": {
                "dataset": "digits",
                "scenario": "dataset",
                "control_dataset": str(control_dir),
                "control_class_names": CONTROL_NAMES,
                "max_samples": 300,
            },
            "model": {"architecture": "clip", "prompt_templates": ["a photo of a {}."]},
            "original": {"train": True, "epochs": 3, "cache_dir": str(tmp_path / "cache")},
            "grid": {
                "base": {"learning_rate": 0.001, "epochs": 1, "batch_size": 64, "warmup_steps": 0},
                "axes": {"seed": [0, 1]},
            },
            "merge": {"lambda_grid": [0.0, 0.5]},
            "comparison": ["uniform"],
        }
    )
    outcome = run_unlearning(recipe, progress=False)
    assert "control_accuracy" in outcome.original and "control_accuracy" in outcome.main.test
    # independent check: the original model with the control class names, scored directly
    (original_dir,) = list((tmp_path / "cache").iterdir())
    control = ImageClassifier.from_pretrained(original_dir, class_names=CONTROL_NAMES)
    from hf_negmerge.data import build_unlearning_data

    data = build_unlearning_data(recipe.data)
    expected = predict_dataset(control, data.control_test).accuracy()
    assert outcome.original["control_accuracy"] == pytest.approx(expected)
    # the forget head is untouched by control scoring: forget accuracy matches a direct check too
    forget = ImageClassifier.from_pretrained(original_dir)
    assert outcome.original["forget_accuracy"] == pytest.approx(
        predict_dataset(forget, data.forget_test).accuracy()
    )
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # published files name local paths relative to the output folder, never absolute
    assert metrics["scenario"] == "dataset" and metrics["control_dataset"] == "../control"


TINY_DEFAULT = [
    "--no-progress",
    "grid.axes.seed=[0,1]",
    "grid.base.epochs=1",
    "original.epochs=3",
    "comparison=[uniform]",
    "merge.lambda_grid=[0,0.5]",
]


@pytest.mark.slow
def test_two_processes_share_the_grid_and_match_one_process(tmp_path):
    """torchrun with 2 CPU processes: runs are split, the main process writes; same vector as 1 process."""
    import os
    import subprocess
    import sys

    import torch

    from hf_negmerge import TaskVector

    cache = f"original.cache_dir={tmp_path / 'cache'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = [
        sys.executable,
        "-m",
        "hf_negmerge.cli",
        "unlearn",
        "--output-dir",
        str(tmp_path / "one"),
        cache,
    ]
    subprocess.run([*single, *TINY_DEFAULT], check=True, env=env, capture_output=True, timeout=300)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [*launcher, "-m", "hf_negmerge.cli", "unlearn", "--output-dir", str(tmp_path / "two"), cache]
    subprocess.run([*command, *TINY_DEFAULT], check=True, env=env, capture_output=True, timeout=300)
    one = TaskVector.load(tmp_path / "one" / "merged_task_vector.safetensors")
    two = TaskVector.load(tmp_path / "two" / "merged_task_vector.safetensors")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    one_metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two_metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert one_metrics["scale"] == two_metrics["scale"]


@pytest.mark.slow
def test_excluded_tensors_stay_original_for_every_method(tmp_path):
    """merge.exclude applies to the merge AND to single-run task arithmetic (same parameters compared)."""
    import torch

    from hf_negmerge import TaskVector
    from hf_negmerge.data import build_unlearning_data
    from hf_negmerge.evaluation import predict_dataset
    from hf_negmerge.key_space import checkpoint_state_dict
    from hf_negmerge.models import ImageClassifier
    from hf_negmerge.pipeline import run_unlearning
    from hf_negmerge.recipe import load_recipe

    out = tmp_path / "out"
    recipe = load_recipe(
        None,
        [
            *TINY_DEFAULT[1:],
            "comparison=[task_arithmetic]",
            "merge.lambda_grid=[0,2,4]",
            "merge.exclude=[vit.embeddings.*]",
            f"output_dir={out}",
            f"original.cache_dir={tmp_path / 'cache'}",
        ],
    )
    outcome = run_unlearning(recipe, progress=False)
    (original_dir,) = list((tmp_path / "cache").iterdir())
    original = checkpoint_state_dict(ImageClassifier.from_pretrained(original_dir).model)
    unlearned = checkpoint_state_dict(ImageClassifier.from_pretrained(out).model)
    merged = TaskVector.load(out / "merged_task_vector.safetensors")
    embeddings = [key for key in original if key.startswith("vit.embeddings.")]
    assert embeddings and not any(key in merged for key in embeddings)
    for key in embeddings:  # bit-identical to θ₀
        assert torch.equal(unlearned[key], original[key]), key
    report = (out / "report.md").read_text()
    assert f"merge.exclude ['vit.embeddings.*'] left out {len(embeddings)} (`vit.embeddings." in report

    # single-run task arithmetic, recomputed here with the embeddings dropped by hand
    data = build_unlearning_data(recipe.data)
    assert len(outcome.per_run) == len(outcome.run_ids)
    for row in outcome.per_run:
        raw = TaskVector.load(out / "work" / "grid" / "runs" / row.run_id / "task_vector.safetensors")
        assert any(raw[key].abs().sum() > 0 for key in embeddings)  # the runs did train them
        kept = TaskVector({key: raw[key] for key in raw if not key.startswith("vit.embeddings.")})
        for point in row.selection.curve:
            model = ImageClassifier.from_pretrained(original_dir)
            kept.apply_to(model.model, scale=-point.scale)
            assert point.forget_accuracy == pytest.approx(predict_dataset(model, data.forget_val).accuracy())
            assert point.retain_accuracy == pytest.approx(predict_dataset(model, data.retain_val).accuracy())
