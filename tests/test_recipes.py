"""Packaged recipes validate and plan offline; bad recipes name the key; a tiny recipe runs end to end."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from hf_negmerge.cli import main
from hf_negmerge.errors import ConfigError
from hf_negmerge.recipe import available_recipes, load_recipe

EXPECTED_GRID_SIZES = {
    "clip-vit-": 30,
    "vit/random-forgetting": 27,
    "resnet18-cifar10/random-forgetting": 27,
    "default": 6,
    "digits/random-forgetting": 8,
    "digits/lora": 6,
}


@pytest.mark.parametrize("name", available_recipes())
def test_every_packaged_recipe_dry_runs_offline(name, capsys):
    assert main(["unlearn", "--config", name, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    size = next(value for prefix, value in EXPECTED_GRID_SIZES.items() if name.startswith(prefix))
    assert f"grid: {size} fine-tuning run(s)" in plan
    assert "outputs:" in plan
    if name.startswith("clip-vit-"):  # the authors' trained set and ImageNet's own head text
        assert "trained: vision tower except its attention q/k/v/out projections + visual_projection" in plan
        assert "control head: templates 'imagenet' (80), class names 'imagenet' (1000)" in plan


def test_all_paper_datasets_have_a_recipe():
    names = set(available_recipes())
    for backbone in ("clip-vit-b32", "clip-vit-b16", "clip-vit-l14"):
        for dataset in ("sun397", "cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"):
            assert f"{backbone}/{dataset}" in names
    assert not any(name.startswith("accelerate") for name in names)


def _write(tmp_path, values):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"data": {"colour": "red"}}, "data.colour"),
        ({"grid": {"base": {"epochs": "many"}}}, "epochs"),
        ({"merge": {"retain_ratio": "high"}}, "merge.retain_ratio"),
        ({"evaluation": {"mia": "yes"}}, "evaluation.mia"),
        ({"comparison": ["median"]}, "median"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_recipes_name_the_key(tmp_path, values, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_recipe(_write(tmp_path, values))


def test_overrides_apply_and_bad_ones_are_named(capsys):
    recipe = load_recipe(
        "default", ["merge.retain_ratio=0.9", "grid.base.epochs=2", "data.forget_classes=['5']"]
    )
    assert recipe.merge.retain_ratio == 0.9
    assert all(point.hyperparameters.epochs == 2 for point in recipe.grid.expand())
    assert recipe.data.forget_classes == ["5"]
    with pytest.raises(ConfigError, match=r"merge\.retain_ratio"):
        load_recipe("default", ["merge.retain_ratio=lots"])
    assert main(["unlearn", "--dry-run", "model.colour=red"]) == 2
    assert "model.colour" in capsys.readouterr().err


TINY = [
    "grid.axes.epochs=[1]",
    "grid.axes.weight_decay=[0.0001]",
    "grid.axes.label_smoothing=[0.0, 0.1]",
    "merge.lambda_grid=[0.0, 0.5, 1.0]",
    "original.epochs=3",
    "evaluation.retrain=false",
    "data.max_samples=400",
]


@pytest.mark.slow
def test_tiny_recipe_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
    from hf_negmerge.models import ImageClassifier
    from hf_negmerge.training import runner

    out = tmp_path / "out"
    args = ["unlearn", "--config", "digits/random-forgetting", "--output-dir", str(out), "--no-progress"]
    args += [*TINY, f"original.cache_dir={tmp_path / 'cache'}"]
    assert main(args) == 0
    for name in (
        "config.json",
        "model.safetensors",
        "metrics.json",
        "report.md",
        "README.md",
        "lambda_curves.png",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scale"] in (0.0, 0.5, 1.0)
    assert {"forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy"} <= metrics[
        "unlearned"
    ].keys()
    assert [row["method"] for row in metrics["comparison"]][:2] == ["original", "negmerge"]

    # the saved model is θ₀ − λ·τ with the saved vector
    from hf_negmerge import TaskVector
    from hf_negmerge.key_space import checkpoint_state_dict

    unlearned = ImageClassifier.from_pretrained(out)
    originals = list((tmp_path / "cache").iterdir())
    assert len(originals) == 1
    original = ImageClassifier.from_pretrained(originals[0])
    tau = TaskVector.load(out / "merged_task_vector.safetensors")
    expected = tau.apply_to(checkpoint_state_dict(original.model), scale=-metrics["scale"])
    got = checkpoint_state_dict(unlearned.model)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value)

    # resume: drop one finished run; only that one trains again
    runs = sorted((out / "work" / "grid" / "runs").iterdir())
    assert len(runs) == 2
    import shutil

    shutil.rmtree(runs[0])
    (out / "work" / "grid" / "accumulator.safetensors").unlink()
    trained = []
    real_finetune = runner.finetune

    def counting_finetune(*a, **kw):
        trained.append(1)
        return real_finetune(*a, **kw)

    monkeypatch.setattr(runner, "finetune", counting_finetune)
    assert main(args) == 0
    assert len(trained) == 1
    assert json.loads((out / "metrics.json").read_text())["unlearned"] == metrics["unlearned"]
