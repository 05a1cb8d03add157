"""Recipe reading and validation, table-driven: bad recipes fail before any data is loaded.

Each CLI case is a recipe text (or a packaged recipe) plus overrides, the exit code of
`hf-negmerge unlearn` and a fragment its message must contain. Error cases run twice — with
`--dry-run` and as a real run — and in both the data stage must never be reached, the
recipe file must be byte-identical afterwards and no output folder may appear.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field

import datasets
import numpy as np
import PIL.Image
import pytest

from hf_negmerge import pipeline, plan, unlearner
from hf_negmerge.cli import main
from hf_negmerge.errors import ConfigError, NegMergeError
from hf_negmerge.recipe import (
    EvaluationConfig,
    OriginalModelConfig,
    UnlearnRecipe,
    load_recipe,
    recipe_from_dict,
)
from hf_negmerge.training.grid import (
    GridSpec,
    HyperparameterError,
    TrainingHyperparameters,
    WarmupWarning,
    grid_preset,
    optimizer_steps,
    rows_for_warmup,
    warmup_warning,
)

# A small class-forgetting recipe on the built-in digits; {tmp} becomes the test's folder.
BASE = """\
output_dir: {tmp}/out
data:
  dataset: digits
  scenario: class
  forget_classes: ['0']
model:
  architecture: vit
"""


@dataclass
class Case:
    id: str
    overrides: list[str] = field(default_factory=list)
    rc: int = 2
    fragment: str = ""
    text: str | bytes | None = BASE  # None: use `config` (a packaged recipe) instead of a file
    config: str | None = None


CASES = [
    # --- YAML that is not a recipe -------------------------------------------------------------
    Case("yaml-list", text="- a\n- b\n", fragment="recipe.yaml: a recipe must be a mapping of sections"),
    Case("yaml-list+override", ["seed=1"], text="- a\n", fragment="got a YAML list"),
    Case("yaml-scalar", text="42\n", fragment="got a YAML int"),
    Case("yaml-scalar+override", ["data.seed=1"], text="hello\n", fragment="got a YAML str"),
    Case("yaml-not-utf8", text=b"seed: 0\nmodel: {architecture: \xff}\n", fragment="is not UTF-8"),
    Case("yaml-latin1", text="output_dir: caf\xe9\n".encode("latin-1"), fragment="byte 15 is 0xe9"),
    Case("yaml-duplicate-top", text=BASE + "seed: 1\nseed: 2\n", fragment="line 9: duplicate key 'seed'"),
    Case(
        "yaml-duplicate-nested",
        text="grid:\n  base:\n    epochs: 1\n    epochs: 2\n",
        fragment="line 4: duplicate key 'epochs' (first given on line 3)",
    ),
    Case("yaml-duplicate-section", text=BASE + "data:\n  seed: 1\n", fragment="duplicate key 'data'"),
    Case("override-duplicate", ["grid.base={epochs: 1, epochs: 2}"], fragment="duplicate key 'epochs'"),
    Case("yaml-non-string-key", text=BASE + "1: one\n", fragment="recipe keys must be strings"),
    Case("yaml-empty", text="", fragment="recipe.yaml is empty"),
    Case("yaml-only-comments", text="# nothing here\n", fragment="--config default"),
    Case(
        "yaml-syntax",
        text="data: [unclosed\n",
        fragment="is not valid YAML: line 2, column 1: expected ',' or ']'",
    ),
    # --- values that used to fail only after training ------------------------------------------
    Case("evaluation.batch_size=0", ["evaluation.batch_size=0"], fragment="evaluation.batch_size"),
    Case(
        "evaluation.retrain_epochs=-5", ["evaluation.retrain_epochs=-5"], fragment="evaluation.retrain_epochs"
    ),
    Case("original.epochs=0", ["original.epochs=0"], fragment="original.epochs must be a positive integer"),
    Case("original.epochs=-2", ["original.train=true", "original.epochs=-2"], fragment="original.epochs"),
    Case("original.learning_rate=0", ["original.learning_rate=0"], fragment="original.learning_rate"),
    Case("original.learning_rate=-1", ["original.learning_rate=-1e-3"], fragment="original.learning_rate"),
    Case("original.learning_rate=nan", ["original.learning_rate=.nan"], fragment="original.learning_rate"),
    Case("original.learning_rate=inf", ["original.learning_rate=.inf"], fragment="finite number > 0"),
    Case("original.batch_size=0", ["original.batch_size=0"], fragment="original.batch_size"),
    Case("original.train-not-bool", ["original.train=yes please"], fragment="original.train"),
    Case("original.path+train", ["original.path=x", "original.train=true"], fragment="keep one"),
    Case("output_dir-empty", ["output_dir=''"], fragment="output_dir must name a folder"),
    Case("output_dir-blank", ["output_dir='  '"], fragment="output_dir must name a folder"),
    Case("output_dir-null", ["output_dir=null"], fragment="Recipe key 'output_dir'"),
    Case("output_dir-file", ["output_dir={tmp}/rows.csv"], fragment="output_dir='{tmp}/rows.csv' is a file"),
    Case("seed-negative", ["seed=-1"], fragment="seed must be a non-negative integer"),
    Case("seed-float", ["seed=1.5"], fragment="Recipe key 'seed'"),
    Case("seed-bool", ["seed=true"], fragment="Recipe key 'seed'"),
    Case("data.seed-string", ["data.seed=abc"], fragment="data.seed"),
    Case("grid.base.seed-negative", ["grid.base.seed=-1"], fragment="Recipe key 'grid.base.seed'"),
    Case("grid.base.epochs=0", ["grid.base.epochs=0"], fragment="Recipe key 'grid.base.epochs'"),
    Case("grid.base.lr=0", ["grid.base.learning_rate=0"], fragment="Recipe key 'grid.base.learning_rate'"),
    Case(
        "grid.base.scheduler", ["grid.base.scheduler=[cosine]"], fragment="Recipe key 'grid.base.scheduler'"
    ),
    Case("grid.axes.epochs", ["grid.axes.epochs=[1, 0]"], fragment="Recipe key 'grid.axes.epochs'"),
    Case(
        "grid.points[1].lr",
        ["grid.points=[{epochs: 1}, {learning_rate: 0}]"],
        fragment="Recipe key 'grid.points[1].learning_rate'",
    ),
    Case("grid.base-not-mapping", ["grid.base=3"], fragment="GridSpec.base must be a mapping"),
    Case("grid.axes-not-mapping", ["grid.axes=[1, 2]"], fragment="GridSpec.axes must be a mapping"),
    Case("grid.points-not-list", ["grid.points=7"], fragment="GridSpec.points must be a list"),
    Case("grid.preset-unknown", ["grid.preset=cifar"], fragment="Unknown grid preset 'cifar'"),
    Case("grid.preset-list", ["grid.preset=[a]"], fragment="Unknown grid preset"),
    Case(
        "comparison-repeated",
        ["comparison=[ties, ties]"],
        fragment="comparison lists ['ties'] more than once",
    ),
    Case("comparison-unknown", ["comparison=[median]"], fragment="median"),
    Case("comparison-string", ["comparison=ties"], fragment="Recipe key 'comparison'"),
    Case("keep_checkpoints-string", ["keep_checkpoints=maybe"], fragment="keep_checkpoints"),
    # --- keys and types (pydantic): the full dotted key, list indices and mapping keys included --
    Case("unknown-nested-key", ["data.colour=red"], fragment="Unknown recipe key 'data.colour'; known keys"),
    Case("unknown-top-key", ["colour=red"], fragment="Unknown recipe key 'colour'; known top-level keys"),
    Case(
        "list-item-type",
        ["merge.lambda_grid=[0, 0.5, lots]"],
        fragment="Recipe key 'merge.lambda_grid[2]' has the wrong type: got 'lots' (str), "
        "expected a valid number (merge.lambda_grid is list[float])",
    ),
    Case(
        "list-item-union",
        ["data.forget_classes=['0', [1]]"],
        fragment="Recipe key 'data.forget_classes[1]' has the wrong type: got [1] (list), "
        "expected a valid integer or a valid string",
    ),
    Case(
        "list-or-string-item",
        ["data.control_prompt_templates=['a photo of {}', 3]"],
        fragment="Recipe key 'data.control_prompt_templates[1]' has the wrong type: got 3 (int)",
    ),
    Case("mapping-value-type", ["data.label_mapping={'0': 0}"], fragment="Recipe key 'data.label_mapping.0'"),
    Case("int-not-float", ["data.seed=1.0"], fragment="Recipe key 'data.seed' has the wrong type: got 1.0"),
    Case("bool-not-string", ["model.dtype=true"], fragment="got True (bool), expected str"),
    Case(
        "section-not-mapping", ["model=vit"], fragment="Recipe section 'model' must be a mapping, got 'vit'"
    ),
    Case("grid-not-mapping", ["grid=3"], fragment="Recipe section 'grid' must be a mapping, got 3 (int)"),
    Case(
        "two-problems",
        ["data.seed=x", "evaluation.colour=1"],
        fragment="Recipe key 'data.seed' has the wrong type: got 'x' (str), expected int "
        "(also wrong: 'evaluation.colour').",
    ),
    Case("section-null", ["evaluation=null"], 0, "outputs:"),
    # --- presets: dropped or narrowed, never silently kept ---------------------------------------
    Case(
        "preset+points",
        ["grid.points=[{epochs: 1}]"],
        text=None,
        config="clip-vit-b32/cars",
        fragment="drop the preset (preset: null)",
    ),
    Case(
        "preset+foreign-axis",
        ["grid.axes.epochs=[1, 2]"],
        text=None,
        config="clip-vit-b32/cars",
        fragment="['epochs'] are not axes of preset 'clip_randaugment'",
    ),
    Case("preset-dropped", ["grid.preset=null"], 0, "grid: 1 fine-tuning run(s)", None, "clip-vit-b32/cars"),
    Case(
        "preset-dropped+own-axes",
        ["grid.preset=null", "grid.axes.seed=[0, 1]"],
        0,
        "grid: 2 fine-tuning run(s)",
        None,
        "clip-vit-b32/cars",
    ),
    Case(
        "preset-narrowed",
        ["grid.axes.randaugment_magnitude=[1, 5]"],
        0,
        "grid: 6 fine-tuning run(s)",
        None,
        "clip-vit-b32/cars",
    ),
    Case(
        "preset-narrowed-to-one",
        ["grid.axes.randaugment_magnitude=[3]", "grid.axes.randaugment_num_ops=[2]"],
        0,
        "ra-m3-n2-",
        None,
        "clip-vit-b32/cars",
    ),
    Case("preset-warmup-plan", [], 0, "more than 896 forget-train rows", None, "clip-vit-b32/cars"),
    Case(
        "preset-hub-ids",
        [],
        0,
        "data.control_dataset='ILSVRC/imagenet-1k' is a Hub id: not checked offline",
        None,
        "clip-vit-b32/cars",
    ),
    # --- local paths and splits -------------------------------------------------------------------
    Case(
        "original.path-plain-pretrained",
        ["original.path={tmp}/plain"],
        fragment="set model.name_or_path={tmp}/plain instead and remove original.path",
    ),
    Case(
        "original.path-missing",
        ["original.path={tmp}/missing"],
        fragment="original.path='{tmp}/missing': no such folder",
    ),
    Case(
        "original.path-file",
        ["original.path={tmp}/one.parquet"],
        fragment="original.path='{tmp}/one.parquet' is a file",
    ),
    Case("original.path-not-a-model", ["original.path={tmp}/empty"], fragment="is not a classifier folder"),
    Case("original.path-classifier", ["original.path={tmp}/classifier"], 0, "outputs:"),
    Case(
        "original.path-hub", ["original.path=someone/model"], 0, "original.path='someone/model' is a Hub id"
    ),
    Case("model.name_or_path-missing", ["model.name_or_path={tmp}/missing"], fragment="model.name_or_path="),
    Case(
        "model.name_or_path-dot",
        ["model.name_or_path=./not-here"],
        fragment="model.name_or_path='./not-here': no such",
    ),
    Case(
        "model.name_or_path-nested",
        ["model.name_or_path=a/b/c"],
        fragment="model.name_or_path='a/b/c': no such",
    ),
    Case("model.name_or_path-home", ["model.name_or_path=~/no-such-model-xyz"], fragment="no such folder"),
    Case("model.name_or_path-no-config", ["model.name_or_path={tmp}/empty"], fragment="has no config.json"),
    Case("model.name_or_path-file", ["model.name_or_path={tmp}/one.parquet"], fragment="is a file"),
    Case("model.name_or_path-local", ["model.name_or_path={tmp}/plain"], 0, "model: {tmp}/plain"),
    Case(
        "model.name_or_path-hub",
        ["model.name_or_path=openai/clip-vit-base-patch32"],
        0,
        "model.name_or_path='openai/clip-vit-base-patch32' is a Hub id: not checked offline",
    ),
    Case(
        "data.dataset-missing",
        ["data.dataset={tmp}/missing"],
        fragment="data.dataset='{tmp}/missing': no such",
    ),
    Case("data.dataset-hub", ["data.dataset=owner/name"], 0, "data.dataset='owner/name' is a Hub id"),
    Case(
        "data.train_split-digits",
        ["data.train_split=training"],
        fragment="data.train_split='training' is not a split",
    ),
    Case(
        "image-folder-without-test",
        ["data.dataset={tmp}/imgs_train"],
        fragment="data.test_split='test' is not a split of data.dataset='{tmp}/imgs_train'; splits found: "
        "['train']. Set data.test_split",
    ),
    Case("image-folder-with-test", ["data.dataset={tmp}/imgs"], 0, "outputs:"),
    Case(
        "image-folder-validation",
        ["data.dataset={tmp}/imgs", "data.validation_split=validation"],
        fragment="Set data.validation_split",
    ),
    Case(
        "image-folder-val-dir",
        ["data.dataset={tmp}/imgs_val", "data.validation_split=validation"],
        0,
        "outputs:",
    ),
    Case("empty-folder", ["data.dataset={tmp}/empty"], fragment="the folder holds no data files"),
    Case("saved-train-only", ["data.dataset={tmp}/saved"], fragment="data.test_split='test'"),
    Case("saved-both", ["data.dataset={tmp}/saved", "data.test_split=train"], 0, "outputs:"),
    Case("saved-single-dataset", ["data.dataset={tmp}/saved_single"], fragment="single saved Dataset"),
    Case("parquet-file", ["data.dataset={tmp}/one.parquet"], fragment="splits found: ['train']"),
    Case("parquet-file-train", ["data.dataset={tmp}/one.parquet", "data.test_split=train"], 0, "outputs:"),
    Case(
        "parquet-folder",
        ["data.dataset={tmp}/pq", "data.train_split=validation"],
        fragment="data.train_split",
    ),
    Case("parquet-folder-ok", ["data.dataset={tmp}/pq"], 0, "outputs:"),
    Case(
        "parquet-mapping-missing-file",
        ["data.dataset={train: {tmp}/nope.parquet}"],
        fragment="does not exist",
    ),
    Case("csv-file", ["data.dataset={tmp}/rows.csv"], fragment="data.dataset: cannot read dataset source"),
    Case(
        "control-test-split",
        ["data.control_dataset={tmp}/imgs_train"],
        fragment="data.control_test_split='test' is not a split of data.control_dataset",
    ),
    Case(
        "control-validation-split",
        ["data.control_dataset={tmp}/imgs", "data.control_validation_split=validation"],
        fragment="data.control_validation_split='validation'",
    ),
    Case("control-ok", ["data.control_dataset={tmp}/imgs"], 0, "outputs:"),
]


def _png(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(path)


@pytest.fixture
def sources(tmp_path):
    """Local models and datasets of every kind, built here."""
    for label, value in (("a", 10), ("b", 200)):
        for split in ("train", "test"):
            _png(tmp_path / "imgs" / split / label / "x.png", value)
        for split in ("train", "val", "test"):  # datasets names a val/ folder "validation"
            _png(tmp_path / "imgs_val" / split / label / "x.png", value)
        _png(tmp_path / "imgs_train" / "train" / label / "x.png", value)
    rows = datasets.Dataset.from_dict({"image": [b"not used"], "label": [0]})
    datasets.DatasetDict({"train": rows}).save_to_disk(str(tmp_path / "saved"))
    rows.save_to_disk(str(tmp_path / "saved_single"))
    rows.to_parquet(str(tmp_path / "one.parquet"))
    (tmp_path / "pq").mkdir()
    rows.to_parquet(str(tmp_path / "pq" / "train.parquet"))
    rows.to_parquet(str(tmp_path / "pq" / "test.parquet"))
    (tmp_path / "rows.csv").write_text("image,label\nx,0\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "config.json").write_text("{}")
    (tmp_path / "classifier" / "hf_negmerge_classifier.json").write_text("{}")
    return tmp_path


@pytest.fixture
def no_data_stage(monkeypatch):
    """Fail loudly if a run ever gets as far as loading data or training."""

    def reached(*args, **kwargs):
        raise AssertionError("the run went past validation")

    monkeypatch.setattr(unlearner, "build_unlearning_data", reached)
    monkeypatch.setattr(plan, "build_unlearning_data", reached)  # the --dry-run budget counts rows
    monkeypatch.setattr(pipeline, "run_unlearning", reached)


def _recipe_bytes(case: Case, tmp) -> bytes:
    if isinstance(case.text, bytes):
        return case.text
    return case.text.replace("{tmp}", str(tmp)).encode("utf-8")


def _invoke(case: Case, tmp, dry_run: bool, monkeypatch, capsys) -> tuple[int, str, bytes | None]:
    monkeypatch.chdir(tmp)
    args = ["unlearn", "--no-progress"] + (["--dry-run"] if dry_run else [])
    if case.text is None:
        args += ["--config", case.config, f"output_dir={tmp}/out"]
    else:
        (tmp / "recipe.yaml").write_bytes(_recipe_bytes(case, tmp))
        args += ["--config", "recipe.yaml"]
    args += [override.replace("{tmp}", str(tmp)) for override in case.overrides]
    code = main(args)
    captured = capsys.readouterr()
    recipe = (tmp / "recipe.yaml").read_bytes() if case.text is not None else None
    return code, captured.out + captured.err, recipe


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real-run"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_recipe_case(case, dry_run, sources, no_data_stage, monkeypatch, capsys):
    if case.rc == 0 and not dry_run:
        pytest.skip("a valid recipe would train; its real run is covered in test_recipes.py")
    if case.rc == 0:  # a valid dry run counts the local data's rows for its budget; it never trains
        from hf_negmerge.data import build_unlearning_data

        monkeypatch.setattr(plan, "build_unlearning_data", build_unlearning_data)
    code, output, recipe_after = _invoke(case, sources, dry_run, monkeypatch, capsys)
    assert code == case.rc, output
    assert case.fragment.replace("{tmp}", str(sources)) in output
    if case.rc:
        assert output.startswith("hf-negmerge unlearn: error: ") and "Traceback" not in output
        assert "\n" not in output.strip(), output  # one message line, no plan printed before it
    if case.text is not None:
        assert recipe_after == _recipe_bytes(case, sources)  # the recipe file is never rewritten
    assert not (sources / "out").exists()  # nothing written, valid or not


# ---------------------------------------------------------------------------------------------
# The Python API: the same checks, as exceptions naming the field.

API_CASES = [
    ("output_dir-empty", lambda: UnlearnRecipe(output_dir=""), ConfigError, "output_dir"),
    ("seed-string", lambda: UnlearnRecipe(seed="0"), ConfigError, "seed must be"),
    ("comparison-tuple-ok", lambda: UnlearnRecipe(comparison=("ties",)).comparison == ["ties"], None, ""),
    ("section-dict", lambda: UnlearnRecipe(original={"epochs": 1}), ConfigError, "UnlearnRecipe.original"),
    ("original.epochs", lambda: OriginalModelConfig(epochs=0), ConfigError, "original.epochs"),
    (
        "original.lr-nan",
        lambda: OriginalModelConfig(learning_rate=math.nan),
        ConfigError,
        "original.learning_rate",
    ),
    ("original.path-empty", lambda: OriginalModelConfig(path=""), ConfigError, "original.path"),
    ("evaluation.batch_size", lambda: EvaluationConfig(batch_size=0), ConfigError, "evaluation.batch_size"),
    ("evaluation.retrain_epochs", lambda: EvaluationConfig(retrain_epochs=-5), ConfigError, "retrain_epochs"),
    ("evaluation.mia", lambda: EvaluationConfig(mia="yes"), ConfigError, "evaluation.mia"),
    ("hyperparameter", lambda: TrainingHyperparameters(epochs=0), HyperparameterError, "epochs=0"),
    (
        "grid.axes-type",
        lambda: GridSpec(axes=[("epochs", [1])]),
        ConfigError,
        "GridSpec.axes must be a mapping",
    ),
    ("grid.points-str", lambda: GridSpec(points="epochs"), ConfigError, "GridSpec.points must be a list"),
]


@pytest.mark.parametrize(("name", "build", "error", "fragment"), API_CASES, ids=[c[0] for c in API_CASES])
def test_api_case(name, build, error, fragment):
    if error is None:
        assert build()
        return
    with pytest.raises(error) as raised:
        build()
    assert isinstance(raised.value, NegMergeError)
    assert fragment in str(raised.value)


def test_type_errors_name_the_full_key_and_build_from_unchanged_values():
    with pytest.raises(ConfigError) as nested:
        recipe_from_dict({"evaluation": {"log_with": ["tensorboard", ["wandb"]]}})
    assert str(nested.value) == (
        "Recipe key 'evaluation.log_with[1]' has the wrong type: got ['wandb'] (list), "
        "expected a valid string (evaluation.log_with is list[str])."
    )
    # pydantic only checks: the dataclasses get the values as written (an int stays an int)
    recipe = recipe_from_dict({"original": {"learning_rate": 1, "epochs": 2}, "data": None})
    assert type(recipe.original.learning_rate) is int and recipe.original == OriginalModelConfig(
        learning_rate=1, epochs=2
    )
    assert recipe.data == UnlearnRecipe().data  # an empty section is the defaults


def test_hyperparameter_errors_say_where_in_the_grid():
    with pytest.raises(HyperparameterError) as base:
        GridSpec(base={"warmup_steps": -1})
    assert (base.value.name, base.value.where) == ("warmup_steps", "base")
    with pytest.raises(HyperparameterError) as axis:
        GridSpec(axes={"epochs": [2, 0]})
    assert (axis.value.name, axis.value.where) == ("epochs", "axes")
    with pytest.raises(HyperparameterError) as point:
        GridSpec(base={"epochs": 2}, points=[{}, {"seed": 3, "weight_decay": -1.0}])
    assert (point.value.name, point.value.where) == ("weight_decay", "points[1]")


def test_preset_axes_are_replaced_not_crossed():
    narrowed = GridSpec.from_dict(
        {
            "preset": "standard",
            "base": {"learning_rate": 3e-4},
            "axes": {"epochs": [1], "label_smoothing": [0.0]},
        }
    )
    points = narrowed.expand()
    assert len(points) == 3  # weight decay's 3 values x 1 x 1
    assert {p.hyperparameters.weight_decay for p in points} == {1e-4, 5e-5, 1e-5}
    assert {(p.hyperparameters.epochs, p.hyperparameters.learning_rate) for p in points} == {(1, 3e-4)}
    by_hand = GridSpec(
        base=TrainingHyperparameters(learning_rate=3e-4, warmup_steps=0, batch_size=128, epochs=40),
        axes={"epochs": [1], "weight_decay": [1e-4, 5e-5, 1e-5], "label_smoothing": [0.0]},
    )
    assert [p.id for p in points] == [p.id for p in by_hand.expand()]
    assert len(grid_preset("standard", learning_rate=3e-4)) == 27  # the preset itself is unchanged
    assert len(GridSpec.from_dict({"preset": None, "base": {"epochs": 2}})) == 1


def test_exponent_floats_are_numbers_in_files_and_overrides(tmp_path):
    # PyYAML alone reads `1e-4` as the string "1e-4", which then failed as "not a number".
    path = tmp_path / "recipe.yaml"
    path.write_text("grid:\n  base:\n    learning_rate: 1e-4\n    weight_decay: 5E-2\n")
    recipe = load_recipe(path, ["merge.lambda_grid=[0, 1e-1, 2e0]"])
    assert recipe.grid.base.learning_rate == 0.0001 and recipe.grid.base.weight_decay == 0.05
    assert recipe.merge.lambda_grid == [0.0, 0.1, 2.0]
    assert load_recipe(path, ["output_dir=run1e5"]).output_dir == "run1e5"


def test_recipe_round_trips_after_shrinking_a_preset(tmp_path):
    recipe = load_recipe("clip-vit-b32/cars", ["grid.axes.randaugment_magnitude=[2, 4]"])
    saved = tmp_path / "resolved.yaml"
    saved.write_text(recipe.to_yaml())
    again = load_recipe(saved)
    assert [p.id for p in again.grid.expand()] == [p.id for p in recipe.grid.expand()]
    assert len(again.grid) == 6


# ---------------------------------------------------------------------------------------------
# Warm-up longer than a run: computed once, with the numbers to change.


def test_optimizer_steps_and_rows_for_warmup_agree_with_counting():
    for batch, accumulation, epochs, warmup in [
        (128, 1, 30, 500),
        (32, 1, 4, 5),
        (8, 3, 2, 7),
        (16, 2, 5, 0),
    ]:
        hp = TrainingHyperparameters(
            batch_size=batch, gradient_accumulation_steps=accumulation, epochs=epochs, warmup_steps=warmup
        )
        threshold = rows_for_warmup(hp)
        for rows in range(1, 3 * threshold + 40):
            batches = len(range(0, rows, batch))  # what a DataLoader yields per epoch
            steps = len(range(0, batches, accumulation)) * epochs
            assert optimizer_steps(hp, rows) == steps
            assert (warmup < steps) == (rows >= threshold), (batch, accumulation, epochs, warmup, rows)


def test_paper_setting_on_a_small_dataset_gets_one_warning_with_advice():
    points = grid_preset("clip_randaugment").expand()  # lr 1e-5, 500 warm-up steps, 30 epochs, batch 128
    message = warmup_warning(points, num_rows=1000)
    steps = 8 * 30  # ceil(1000 / 128) batches per epoch, 30 epochs
    assert "30 of 30 grid run(s)" in message
    assert f"warmup_steps=500 ≥ their {steps} optimizer steps on 1000 forget-train rows" in message
    assert "peak (1e-05)" in message and "λ = 0" in message
    assert f"Lower grid.base.warmup_steps to at most {steps - 1}" in message
    assert warmup_warning(points, num_rows=2049) is None  # 17 batches x 30 epochs = 510 > 500
    varied = GridSpec(base={"epochs": 1}, axes={"warmup_steps": [0, 5, 50]}).expand()
    message = warmup_warning(varied, num_rows=64)
    assert "2 of 3 grid run(s)" in message and "warmup_steps=5/50" in message
    assert "grid.axes.warmup_steps" in message


def test_grid_runner_warns_once_not_per_run(tmp_path):
    from hf_negmerge.data import load_digits_dataset
    from hf_negmerge.models import ModelConfig, build_classifier
    from hf_negmerge.training.runner import run_grid

    digits = load_digits_dataset()["train"].select(range(40))
    base = tmp_path / "base"
    build_classifier(ModelConfig(architecture="vit"), [str(i) for i in range(10)]).save_pretrained(base)
    spec = GridSpec(
        base={"epochs": 2, "batch_size": 8, "warmup_steps": 50, "learning_rate": 1e-3},
        axes={"seed": [0, 1, 2]},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_grid(base, digits, spec, tmp_path / "grid", progress=False)
    warmup = [w for w in caught if "warmup_steps" in str(w.message)]  # of any category
    assert len(warmup) == 1, [str(w.message) for w in warmup]
    assert issubclass(warmup[0].category, WarmupWarning)
    assert "3 of 3 grid run(s)" in str(warmup[0].message)
    assert "≥ their 10 optimizer steps" in str(warmup[0].message)  # 5 batches x 2 epochs
    assert len(json.loads((tmp_path / "grid" / "grid.json").read_text())) == 3


def test_run_unlearning_checks_sources_before_any_work(tmp_path):
    """The Python API refuses a missing dataset folder like --dry-run does, writing nothing."""
    from hf_negmerge.pipeline import run_unlearning
    from hf_negmerge.recipe import load_recipe

    output_dir = tmp_path / "out"
    recipe = load_recipe("default", [f"output_dir={output_dir}", f"data.dataset={tmp_path / 'no-such-data'}"])
    with pytest.raises(ConfigError, match=r"data\.dataset"):
        run_unlearning(recipe, progress=False)
    assert not output_dir.exists()
