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
    assert metrics["scenario"] == "dataset" and metrics["control_dataset"] == str(control_dir)
