"""Bring your own model and data: labels by name, head size, stale θ₀, held-out validation, splits.

Every model and dataset is built here: a tiny ViT trained on digits and saved as a plain
transformers folder (numeric label order), image folders written with PIL, parquet and
save_to_disk copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from hf_negmerge.data import (
    SOURCE_INDEX_COLUMN,
    DataConfig,
    build_unlearning_data,
    load_digits_dataset,
    load_image_dataset,
)
from hf_negmerge.errors import ConfigError
from hf_negmerge.models import ModelConfig, build_classifier
from hf_negmerge.recipe import recipe_from_dict

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PLAIN_MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
TINY_GRID = {
    "base": {"learning_rate": 0.001, "epochs": 1, "batch_size": 64, "warmup_steps": 0},
    "axes": {"seed": [0]},
}


# --------------------------------------------------------------------------- built here


def write_image_folder(root: Path, splits: dict[str, datasets.Dataset], names: list[str] = NAMES) -> None:
    """<split>/<class name>/<row>.png from digits rows (label id d goes to folder names[d])."""
    for split, rows in splits.items():
        for index, row in enumerate(rows):
            folder = root / split / names[row["label"]]
            folder.mkdir(parents=True, exist_ok=True)
            row["image"].save(folder / f"{index}.png")


def image_key(image: PIL.Image.Image) -> bytes:
    return np.asarray(image.convert("L")).tobytes()


@pytest.fixture(scope="module")
def digits() -> datasets.DatasetDict:
    return load_digits_dataset()


@pytest.fixture(scope="module")
def user_vit(tmp_path_factory, digits) -> Path:
    """A ViT trained on digits with id2label in numeric order, saved as a plain transformers folder."""
    from hf_negmerge.training.pretrain import prepare_original_model

    work = tmp_path_factory.mktemp("user_vit")
    train = digits["train"].cast_column("label", datasets.ClassLabel(names=NAMES))
    trained = prepare_original_model(
        ModelConfig(architecture="vit", tiny={"hidden_size": 64, "intermediate_size": 128}),
        train,
        work / "cache",
        epochs=12,
        batch_size=32,
        progress=False,
    )
    folder = work / "model"
    folder.mkdir()
    for name in PLAIN_MODEL_FILES:
        shutil.copy(trained / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory, digits) -> Path:
    """train/ and test/ with class folders zero..nine: the loader numbers them alphabetically."""
    root = tmp_path_factory.mktemp("folder") / "digits"
    write_image_folder(root, {"train": digits["train"], "test": digits["test"]})
    return root


def plain_accuracy(model_dir: Path, folder: Path, classes: list[str]) -> float:
    """Accuracy of a saved ViT on image-folder images, computed with transformers alone."""
    from transformers import AutoImageProcessor, ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    correct = total = 0
    for name in classes:
        files = sorted((folder / name).glob("*.png"))
        images = [PIL.Image.open(path).convert("RGB") for path in files]
        with torch.no_grad():
            logits = model(**processor(images=images, return_tensors="pt")).logits
        predicted = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
        correct += sum(p == name for p in predicted)
        total += len(files)
    return 100.0 * correct / total


def class_recipe(tmp_path: Path, model_dir: Path, dataset: Path, **data: object) -> dict:
    return {
        "output_dir": str(tmp_path / "out"),
        "data": {"dataset": str(dataset), "scenario": "class", "forget_classes": ["three"], **data},
        "model": {"architecture": "vit", "name_or_path": str(model_dir)},
        "grid": TINY_GRID,
        "merge": {"lambda_grid": [0.0, 0.5]},
        "comparison": [],
    }


# --------------------------------------------------------------------------- 1. labels by name


@pytest.mark.slow
def test_class_folders_in_another_order_keep_the_models_labels(tmp_path, user_vit, digit_folder):
    from hf_negmerge.originals import model_label_names
    from hf_negmerge.pipeline import run_unlearning

    recipe = recipe_from_dict(class_recipe(tmp_path, user_vit, digit_folder))
    outcome = run_unlearning(recipe, progress=False)

    retained = [name for name in NAMES if name != "three"]
    expected_retain = plain_accuracy(user_vit, digit_folder / "test", retained)
    expected_forget = plain_accuracy(user_vit, digit_folder / "test", ["three"])
    assert expected_retain > 80  # the user's model is good; a scrambled mapping would score ~10 %
    assert outcome.original["retain_accuracy"] == pytest.approx(expected_retain)
    assert outcome.original["forget_accuracy"] == pytest.approx(expected_forget)

    # the forgotten rows are exactly the images of folder three/
    data = build_unlearning_data(recipe.data, model_label_names(recipe))
    forget_images = {image_key(image) for image in data.forget_test["image"]}
    folder_images = {image_key(PIL.Image.open(p)) for p in (digit_folder / "test" / "three").glob("*.png")}
    assert forget_images == folder_images and data.forget_classes == [3]

    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    original = json.loads((user_vit / "config.json").read_text())
    assert saved["id2label"] == original["id2label"]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # published files carry no absolute local path: θ₀ is named relative to the output folder
    assert metrics["base_model"] == os.path.relpath(user_vit, tmp_path / "out")
    file_hash = hashlib.sha256((user_vit / "model.safetensors").read_bytes()).hexdigest()
    expected = hashlib.sha256(f"model.safetensors\0{file_hash}\n".encode()).hexdigest()
    assert metrics["original_model"]["source_sha256"] == expected
    assert metrics["original_model"]["source"] == "model.name_or_path"
    used = tmp_path / "out" / "work" / "original" / "model.safetensors"
    used_hash = hashlib.sha256(
        f"model.safetensors\0{hashlib.sha256(used.read_bytes()).hexdigest()}\n".encode()
    )
    assert metrics["base_model_sha256"] == used_hash.hexdigest()
    report = (tmp_path / "out" / "report.md").read_text()
    named = os.path.relpath(user_vit, tmp_path / "out")
    assert f"`{named}` (model.name_or_path), weights sha256 `{used_hash.hexdigest()}`" in report
    assert str(tmp_path) not in report and str(user_vit) not in report
    # validation was carved from the split the user's model learned: said in the report data
    assert "validation_warning" in metrics["data"]
    assert metrics["data"]["validation_source"] == "carved from train split 'train'"


def test_class_names_reorder_named_classes_but_never_rename_them(digit_folder):
    alphabetical = load_image_dataset(str(digit_folder), "test", validate=False)
    assert alphabetical.features["label"].names == sorted(NAMES)
    ordered = load_image_dataset(str(digit_folder), "test", class_names=NAMES, validate=False)
    assert ordered.features["label"].names == NAMES
    for row_a, row_o in zip(alphabetical.select(range(60)), ordered.select(range(60)), strict=True):
        assert sorted(NAMES)[row_a["label"]] == NAMES[row_o["label"]]
    with pytest.raises(ConfigError, match=r"rename them by position.*label_mapping"):
        load_image_dataset(str(digit_folder), "test", class_names=list("abcdefghij"), validate=False)
    # names that are just the ids "0".."9" may still be named by position (the built-in digits)
    named = load_image_dataset("digits", "test", class_names=NAMES, validate=False)
    assert named.features["label"].names == NAMES


def test_label_mapping_maps_other_names_onto_the_models_labels(tmp_path, digits):
    spanish = ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"]
    small = {"train": digits["train"].select(range(200)), "test": digits["test"].select(range(100))}
    write_image_folder(tmp_path / "es", small, spanish)
    config = DataConfig(dataset=str(tmp_path / "es"), scenario="class", forget_classes=["three"])
    with pytest.raises(ConfigError) as error:
        build_unlearning_data(config, label_names=NAMES)
    message = str(error.value)
    assert "10 classes" in message and str(sorted(spanish)) in message and str(NAMES) in message
    assert "data.label_mapping" in message
    mapped = DataConfig(
        dataset=str(tmp_path / "es"),
        scenario="class",
        forget_classes=["three"],
        label_mapping=dict(zip(spanish, NAMES, strict=True)),
    )
    data = build_unlearning_data(mapped, label_names=NAMES)
    assert data.class_names == NAMES
    expected = [NAMES[label] for label in small["test"]["label"]]
    got = {}
    for row in data.test:
        got[row[SOURCE_INDEX_COLUMN]] = NAMES[row["label"]]
    folder_order = load_image_dataset(str(tmp_path / "es"), "test", validate=False)
    for index, row in enumerate(folder_order):
        assert got[index] == NAMES[spanish.index(folder_order.features["label"].names[row["label"]])]
    assert sorted(got.values()) == sorted(expected)


# --------------------------------------------------------------------------- 2. head size


def test_wrong_size_head_is_an_error_unless_replaced(tmp_path, user_vit, digits):
    nine = [f"class_{i}" for i in range(9)]
    with pytest.raises(ConfigError, match=r"head for 10 labels.*9 classes.*replace_head"):
        build_classifier(ModelConfig(architecture="vit", name_or_path=str(user_vit)), nine)
    replaced = build_classifier(
        ModelConfig(architecture="vit", name_or_path=str(user_vit), replace_head=True), nine
    )
    assert replaced.num_classes == 9 and replaced.model.classifier.out_features == 9

    # through a run: a 9-class folder whose names are not the model's labels
    nine_rows = {
        s: digits[s].filter(lambda label: label < 9, input_columns="label") for s in ("train", "test")
    }
    write_image_folder(tmp_path / "nine", nine_rows, nine)
    from hf_negmerge.pipeline import run_unlearning

    values = class_recipe(tmp_path, user_vit, tmp_path / "nine")
    values["data"]["forget_classes"] = ["class_3"]
    with pytest.raises(ConfigError, match=r"9 classes.*10 labels"):
        run_unlearning(recipe_from_dict(values), progress=False)
    values["model"]["replace_head"] = True
    with pytest.raises(ConfigError, match=r"original\.train: true"):
        run_unlearning(recipe_from_dict(values), progress=False)
    assert not (tmp_path / "out" / "work" / "grid").exists()


def test_checkpoint_without_a_head_needs_replace_head(tmp_path, user_vit):
    from transformers import ViTModel

    ViTModel.from_pretrained(user_vit).save_pretrained(tmp_path / "backbone")
    shutil.copy(user_vit / "preprocessor_config.json", tmp_path / "backbone")
    config = json.loads((tmp_path / "backbone" / "config.json").read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(NAMES)}
    (tmp_path / "backbone" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="no trained classification head"):
        build_classifier(ModelConfig(architecture="vit", name_or_path=str(tmp_path / "backbone")), NAMES)


def test_replace_head_is_refused_for_clip():
    with pytest.raises(ConfigError, match="replace_head applies to ViT"):
        ModelConfig(architecture="clip", replace_head=True)


# --------------------------------------------------------------------------- 3. stale θ₀


@pytest.mark.slow
def test_rerun_after_replacing_the_model_is_refused(tmp_path, user_vit, digits):
    model = tmp_path / "model"
    shutil.copytree(user_vit, model)
    small = {"train": digits["train"].select(range(300)), "test": digits["test"].select(range(150))}
    write_image_folder(tmp_path / "data", small)
    from hf_negmerge.pipeline import run_unlearning

    recipe = recipe_from_dict(class_recipe(tmp_path, model, tmp_path / "data"))
    run_unlearning(recipe, progress=False)
    outputs = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    old_hash = json.loads((tmp_path / "out" / "metrics.json").read_text())["original_model"]["source_sha256"]

    # the user retrains and saves another model into the same folder
    from safetensors.torch import load_file, save_file

    weights = load_file(model / "model.safetensors")
    save_file(
        {k: v + 0.01 for k, v in weights.items()}, model / "model.safetensors", metadata={"format": "pt"}
    )
    with pytest.raises(ConfigError) as error:
        run_unlearning(recipe, progress=False)
    message = str(error.value)
    assert f"θ₀ weights changed: {old_hash[:16]} → " in message
    assert f"model.name_or_path={str(model)!r}" in message and "another output_dir" in message
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == outputs


def test_grid_refuses_runs_of_another_original(tmp_path, digits):
    from hf_negmerge.training.grid import GridSpec
    from hf_negmerge.training.runner import INPUTS_FILE, run_grid

    names = [str(i) for i in range(10)]
    forget = digits["train"].filter(lambda label: label == 3, input_columns="label").select(range(40))
    base = tmp_path / "base"
    build_classifier(ModelConfig(architecture="vit"), names).save_pretrained(base)
    grid = GridSpec.from_dict(TINY_GRID)
    run_grid(base, forget, grid, tmp_path / "grid", progress=False)
    record = json.loads((tmp_path / "grid" / INPUTS_FILE).read_text())
    assert record["forget_train"]["rows"] == 40
    run_grid(base, forget, grid, tmp_path / "grid", progress=False)  # same inputs: resumes

    build_classifier(ModelConfig(architecture="vit", init_seed=1), names).save_pretrained(base)
    with pytest.raises(ConfigError, match=rf"θ₀ weights changed: {record['original']['sha256'][:16]} → "):
        run_grid(base, forget, grid, tmp_path / "grid", progress=False)
    build_classifier(ModelConfig(architecture="vit"), names).save_pretrained(base)
    with pytest.raises(ConfigError, match=r"forget set changed: .*\(40 rows\) → .*\(39 rows\)"):
        run_grid(base, forget.select(range(39)), grid, tmp_path / "grid", progress=False)


# --------------------------------------------------------------------------- 4. held-out validation


@pytest.fixture(scope="module")
def three_split_folder(tmp_path_factory, digits) -> Path:
    root = tmp_path_factory.mktemp("three") / "data"
    train, held = digits["train"].select(range(900)), digits["train"].select(range(900, 1347))
    write_image_folder(root, {"train": train, "validation": held, "test": digits["test"]})
    return root


def _keys(dataset: datasets.Dataset) -> set[bytes]:
    return {image_key(image) for image in dataset["image"]}


def test_named_validation_split_is_honoured_in_the_class_scenario(three_split_folder):
    config = DataConfig(
        dataset=str(three_split_folder),
        scenario="class",
        forget_classes=["three"],
        validation_split="validation",
    )
    data = build_unlearning_data(config)
    validation = load_image_dataset(str(three_split_folder), "validation", validate=False)
    train = load_image_dataset(str(three_split_folder), "train", validate=False)
    three = validation.features["label"].names.index("three")
    val_three = validation.filter(lambda label: label == three, input_columns="label")
    val_rest = validation.filter(lambda label: label != three, input_columns="label")
    assert _keys(data.forget_val) == _keys(val_three) and _keys(data.retain_val) == _keys(val_rest)
    assert len(data.forget_train) == sum(1 for label in train["label"] if label == three)
    assert not _keys(data.retain_val) & _keys(train)
    assert data.summary()["validation_source"] == "validation split 'validation'"

    random = build_unlearning_data(
        DataConfig(dataset=str(three_split_folder), validation_split="validation", forget_fraction=0.2)
    )
    assert len(random.retain_val) == len(validation) and set(random.forget_val[SOURCE_INDEX_COLUMN]) <= set(
        random.forget_train[SOURCE_INDEX_COLUMN]
    )


def test_validation_from_test_carves_the_test_split(three_split_folder):
    config = DataConfig(
        dataset=str(three_split_folder), scenario="class", forget_classes=["three"], validation_from="test"
    )
    data = build_unlearning_data(config)
    test = load_image_dataset(str(three_split_folder), "test", validate=False)
    val = set(data.forget_val[SOURCE_INDEX_COLUMN]) | set(data.retain_val[SOURCE_INDEX_COLUMN])
    rest = set(data.test[SOURCE_INDEX_COLUMN])
    assert len(val) == int(len(test) * 0.1) and not val & rest and val | rest == set(range(len(test)))
    assert set(data.forget_test[SOURCE_INDEX_COLUMN]) | set(data.retain_test[SOURCE_INDEX_COLUMN]) == rest
    assert len(data.forget_train) + len(data.retain_train) == 900  # all train rows: none held out
    with pytest.raises(ConfigError, match="set only one"):
        DataConfig(validation_split="validation", validation_from="test")


# --------------------------------------------------------------------------- 5. splits


def test_missing_split_names_the_recipe_key(tmp_path, digits, digit_folder):
    config = DataConfig(dataset=str(digit_folder), validation_split="validation")
    with pytest.raises(ConfigError, match=r"\"validation\".*Set the recipe key data.validation_split"):
        build_unlearning_data(config)
    write_image_folder(tmp_path / "only_train", {"train": digits["train"].select(range(200))})
    with pytest.raises(ConfigError, match=r"data.test_split.*data.test_split: null"):
        build_unlearning_data(DataConfig(dataset=str(tmp_path / "only_train")))


def test_test_split_can_be_carved_from_train(tmp_path, digits):
    write_image_folder(tmp_path / "only_train", {"train": digits["train"].select(range(200))})
    config = DataConfig(
        dataset=str(tmp_path / "only_train"),
        scenario="class",
        forget_classes=["three"],
        test_split=None,
        test_fraction=0.25,
    )
    data = build_unlearning_data(config)
    test = set(data.test[SOURCE_INDEX_COLUMN])
    train = set(data.forget_train[SOURCE_INDEX_COLUMN]) | set(data.retain_train[SOURCE_INDEX_COLUMN])
    assert (
        len(test) == 50
        and not test & train
        and test | train | set(data.forget_val[SOURCE_INDEX_COLUMN]) == set(range(200))
    )
    assert (
        data.test_carved
        and build_unlearning_data(config).test[SOURCE_INDEX_COLUMN] == data.test[SOURCE_INDEX_COLUMN]
    )


# --------------------------------------------------------------------------- 6. the documented recipes

DOC = Path(__file__).resolve().parents[1] / "docs" / "your-own-model.md"


def doc_recipe(name: str, folder: Path) -> Path:
    """The YAML block of docs/your-own-model.md that starts with `# recipe: <name>`, written to a file."""
    blocks = DOC.read_text(encoding="utf-8").split("```yaml\n")[1:]
    (block,) = [b.split("```")[0] for b in blocks if b.startswith(f"# recipe: {name}\n")]
    path = folder / f"{name}.yaml"
    path.write_text(block, encoding="utf-8")
    return path


SMALL_RUN = [
    "--no-progress",
    "grid.axes.seed=[0]",
    "grid.base.epochs=1",
    "merge.lambda_grid=[0,0.5]",
    "comparison=[]",
]


@pytest.mark.slow
def test_documented_vit_image_folder_recipe(tmp_path, user_vit, digit_folder):
    from hf_negmerge.cli import main

    recipe = doc_recipe("vit-image-folder", tmp_path)
    out = tmp_path / "unlearned-vit"
    args = [f"data.dataset={digit_folder}", f"model.name_or_path={user_vit}", f"output_dir={out}"]
    assert main(["unlearn", "--config", str(recipe), "--dry-run", *args]) == 0
    assert main(["unlearn", "--config", str(recipe), *SMALL_RUN, *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["validation_source"].startswith("carved from test split 'test'")
    assert "validation_warning" not in metrics["data"] and metrics["data"]["forget_classes"] == ["three"]
    sizes = metrics["data"]["sizes"]
    assert sizes["forget_val"] + sizes["retain_val"] == int(450 * 0.1)
    assert sizes["forget_test"] + sizes["retain_test"] == 450 - int(450 * 0.1)
    assert (
        json.loads((out / "config.json").read_text())["id2label"]
        == json.loads((user_vit / "config.json").read_text())["id2label"]
    )
    assert metrics["original"]["retain_accuracy"] > 80


@pytest.mark.slow
def test_documented_clip_parquet_control_recipe(tmp_path, digits):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hf_negmerge.cli import main
    from hf_negmerge.evaluation import predict_dataset
    from hf_negmerge.models import CLASSIFIER_METADATA_FILE, ImageClassifier

    clip_dir = tmp_path / "my_clip"
    build_classifier(
        ModelConfig(architecture="clip", prompt_templates=["a photo of a {}."]), NAMES
    ).save_pretrained(clip_dir)
    (clip_dir / CLASSIFIER_METADATA_FILE).unlink()  # a plain transformers CLIP folder
    parquet_dir = tmp_path / "my_parquet"
    parquet_dir.mkdir()
    for split, rows in (
        ("train", digits["train"].select(range(300))),
        ("test", digits["test"].select(range(150))),
    ):
        table = pa.table(
            {
                "image": [png for png in (_png(image) for image in rows["image"])],
                "label": [NAMES[label] for label in rows["label"]],
            }
        )
        pq.write_table(table, parquet_dir / f"{split}.parquet")
    control_dir = tmp_path / "my_control"
    control = load_digits_dataset(seed=1)
    datasets.DatasetDict(
        {"train": control["train"], "test": control["test"].select(range(200))}
    ).save_to_disk(str(control_dir))

    recipe = doc_recipe("clip-parquet-control", tmp_path)
    out = tmp_path / "unlearned-clip"
    args = [f"data.dataset={parquet_dir}", f"data.control_dataset={control_dir}"]
    args += [f"model.name_or_path={clip_dir}", f"output_dir={out}"]
    assert main(["unlearn", "--config", str(recipe), *SMALL_RUN, *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    sizes = metrics["data"]["sizes"]
    assert sizes["forget_val"] == 15 and sizes["forget_test"] == 135 and sizes["forget_train"] == 300
    assert sizes["control_val"] == 20 and sizes["control_test"] == 180
    assert (
        metrics["base_model"] == "../my_clip" and metrics["original_model"]["source"] == "model.name_or_path"
    )
    # independent re-scoring of the original on the control set with the control class names
    from hf_negmerge.data import build_unlearning_data
    from hf_negmerge.recipe import load_recipe

    resolved = load_recipe(str(recipe), args)
    data = build_unlearning_data(resolved.data)
    control_head = ImageClassifier.from_pretrained(
        out / "work" / "original", class_names=data.control_class_names
    )
    expected = predict_dataset(control_head, data.control_test).accuracy()
    assert metrics["original"]["control_accuracy"] == pytest.approx(expected)


def _png(image: PIL.Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_dataset_with_some_of_the_models_labels_keeps_the_models_ids(tmp_path, digits):
    keep = {0: "zero", 3: "three", 5: "five"}
    rows = {
        split: digits[split].filter(lambda label: label in keep, input_columns="label").select(range(60))
        for split in ("train", "test")
    }
    write_image_folder(tmp_path / "three", rows)
    config = DataConfig(dataset=str(tmp_path / "three"), scenario="class", forget_classes=["five"])
    data = build_unlearning_data(config, label_names=NAMES)
    assert data.num_classes == 10 and data.class_names == NAMES and data.forget_classes == [5]
    expected = sorted(rows["test"]["label"])  # digit d is the model's label id d
    assert sorted(data.test["label"]) == expected


@pytest.mark.slow
def test_replace_head_trains_a_new_head_here(tmp_path, user_vit, digits):
    from hf_negmerge.pipeline import run_unlearning

    nine = [f"class_{i}" for i in range(9)]
    rows = {
        s: digits[s].filter(lambda label: label < 9, input_columns="label").select(range(270))
        for s in ("train", "test")
    }
    write_image_folder(tmp_path / "nine", rows, nine)
    values = class_recipe(tmp_path, user_vit, tmp_path / "nine")
    values["data"]["forget_classes"] = ["class_3"]
    values["model"]["replace_head"] = True
    values["original"] = {"train": True, "epochs": 1, "cache_dir": str(tmp_path / "cache")}
    run_unlearning(recipe_from_dict(values), progress=False)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["id2label"] == {str(i): name for i, name in enumerate(nine)}
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    (cached,) = (tmp_path / "cache").iterdir()
    assert (
        metrics["base_model"] == f"../cache/{cached.name}"
        and metrics["original_model"]["source"] == "original.train"
    )
    assert metrics["original_model"]["trained_from"] == os.path.relpath(user_vit, tmp_path / "out")
    assert "validation_warning" not in metrics["data"]  # θ₀ trained here never saw the validation rows
