"""`NegMergeUnlearner`: the Python API's snippet on live models and in-memory datasets.

Forgetting is measured here with plain transformers forward passes, the unlearned weights are
checked against θ₀ − λ·τ computed from the published vector, and stage-by-stage calls, `run()`
and the CLI are compared with each other.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

import hf_negmerge
from hf_negmerge import GridSpec, NegMergeConfig, NegMergeUnlearner
from hf_negmerge.data import DataConfig, build_unlearning_data, load_digits_dataset
from hf_negmerge.errors import ConfigError
from hf_negmerge.results import OutcomeWarning, RunResults
from hf_negmerge.task_vector import TaskVector

PACKAGED = next((Path(hf_negmerge.__file__).parent / "packaged_originals").glob("vit-*"))
FORGET = "3"
GRID = {
    "base": {"learning_rate": 1e-3, "epochs": 4, "batch_size": 32, "warmup_steps": 0},
    "axes": {"seed": [0]},
}
LAMBDAS = [0.0, 1.0]


def _grid() -> GridSpec:
    return GridSpec.from_dict(copy.deepcopy(GRID))


def _config() -> NegMergeConfig:
    return NegMergeConfig(lambda_grid=LAMBDAS, exclude=["*.embeddings.*"])


def _vit():
    from transformers import AutoImageProcessor, ViTForImageClassification

    return ViTForImageClassification.from_pretrained(PACKAGED), AutoImageProcessor.from_pretrained(PACKAGED)


def _unlearner(model, processor, output_dir: Path, **kwargs) -> NegMergeUnlearner:
    """The snippet of docs/python-api.md, with a tiny grid."""
    return NegMergeUnlearner(
        model=model,
        processor=processor,
        dataset=load_digits_dataset(),
        forget_classes=[FORGET],
        grid=_grid(),
        config=_config(),
        comparison=[],
        output_dir=output_dir,
        progress=False,
        **kwargs,
    )


def _run(unlearner: NegMergeUnlearner):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutcomeWarning)
        return unlearner.run()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pixels(processor, images) -> torch.Tensor:
    return processor(images=[image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]


def _accuracies(model, processor, split: datasets.Dataset) -> tuple[float, float]:
    """(accuracy on the forgotten class, on the other classes) by plain forward passes."""
    with torch.no_grad():
        predicted = model.eval()(pixel_values=_pixels(processor, split["image"])).logits.argmax(-1).numpy()
    labels = np.asarray(split["label"])
    forget = labels == split.features["label"].names.index(FORGET)
    return float((predicted[forget] == labels[forget]).mean()), float(
        (predicted[~forget] == labels[~forget]).mean()
    )


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    """One run of the snippet on the packaged tiny ViT (θ₀ trained on sklearn digits)."""
    model, processor = _vit()
    out = tmp_path_factory.mktemp("vit") / "out"
    before = copy.deepcopy(model.state_dict())
    result = _run(_unlearner(model, processor, out))
    assert all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )  # the given model is untouched
    return model, processor, out, result


def test_snippet_forgets_the_class_and_keeps_the_rest(vit_run):
    from transformers import ViTForImageClassification

    original, processor, out, result = vit_run
    assert type(result.model) is ViTForImageClassification
    test = load_digits_dataset()["test"]
    forget_before, retain_before = _accuracies(original, processor, test)
    forget_after, retain_after = _accuracies(result.model, processor, test)
    assert forget_before > 0.9
    assert forget_after < forget_before - 0.4  # measured: 0.98 → 0.39 (digits test split)
    assert retain_after > retain_before - 0.06
    assert result.metrics.selection.scale == result.outcome.main.selection.scale == 1.0
    # .metrics is metrics.json as written, not a copy of it
    assert result.metrics.to_dict() == RunResults.load(out).to_dict()
    assert result.metrics.unlearned["forget_accuracy"] < result.metrics.original["forget_accuracy"]


def test_result_model_is_theta0_minus_lambda_tau_and_reloads_with_plain_transformers(vit_run, tmp_path):
    from transformers import ViTForImageClassification

    original, processor, out, result = vit_run
    expected = copy.deepcopy(original)
    tau = TaskVector.load(out / "merged_task_vector.safetensors")
    tau.negate_into(expected, scale=result.metrics.selection.scale)
    got = result.model.state_dict()
    assert tau.keys() and all(torch.allclose(got[k], v, atol=1e-6) for k, v in expected.state_dict().items())

    result.model.save_pretrained(tmp_path / "model")
    reloaded = ViTForImageClassification.from_pretrained(tmp_path / "model").eval()
    pixels = _pixels(processor, load_digits_dataset()["test"]["image"][:16])
    with torch.no_grad():
        assert torch.equal(
            reloaded(pixel_values=pixels).logits, result.model.eval()(pixel_values=pixels).logits
        )
    # the CLI's model file and the live model agree too
    from_folder = ViTForImageClassification.from_pretrained(out).eval()
    assert all(torch.equal(from_folder.state_dict()[k], v) for k, v in result.model.state_dict().items())


def test_save_pretrained_writes_the_output_folder_files(vit_run, tmp_path):
    _, _, out, result = vit_run
    copied = result.save_pretrained(tmp_path / "copy")
    published = json.loads((out / "hf_negmerge_outputs.json").read_text())["files"]
    assert {"model.safetensors", "metrics.json", "merged_task_vector.safetensors", "README.md"} <= set(
        published
    )
    assert all(_sha256(copied / name) == digest for name, digest in published.items())
    from hf_negmerge.output_folder import verify_output_folder

    assert verify_output_folder(copied).files == published


def test_a_second_unlearner_on_the_same_folder_trains_nothing(vit_run, monkeypatch):
    import hf_negmerge.training.runner as runner

    original, processor, out, result = vit_run

    def no_training(*args, **kwargs):
        raise AssertionError("a finished grid run was trained again")

    monkeypatch.setattr(runner, "finetune", no_training)
    again = _run(_unlearner(original, processor, out))
    assert again.metrics.unlearned == result.metrics.unlearned
    assert torch.equal(
        again.model.state_dict()["classifier.weight"], result.model.state_dict()["classifier.weight"]
    )


def test_a_changed_live_model_is_refused_on_the_same_folder(vit_run):
    original, processor, out, _ = vit_run
    changed = copy.deepcopy(original)
    with torch.no_grad():
        changed.classifier.bias.add_(1.0)
    with pytest.raises(ConfigError, match="another original model"):
        _run(_unlearner(changed, processor, out))


def test_stage_by_stage_gives_the_same_result_as_run(vit_run, tmp_path):
    model, processor, out, result = vit_run
    unlearner = _unlearner(model, processor, tmp_path / "staged")
    data = unlearner.prepare_data()
    assert data.summary()["forget_classes"] == [FORGET]
    assert not (tmp_path / "staged" / "work" / "grid").exists()  # each stage runs only what it needs
    grid = unlearner.train_grid()
    assert grid.trained == grid.run_ids and len(grid.run_ids) == 1
    merged = unlearner.merge()
    assert merged is grid.merge
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutcomeWarning)
        selection = unlearner.choose_lambda()
        outcome = unlearner.evaluate()
    assert selection.scale == outcome.main.selection.scale == result.metrics.selection.scale
    assert not (tmp_path / "staged" / "metrics.json").exists()  # only run() publishes
    staged = _run(unlearner)
    assert staged.outcome is outcome
    assert staged.metrics.unlearned == result.metrics.unlearned
    assert _sha256(tmp_path / "staged" / "model.safetensors") == _sha256(out / "model.safetensors")


def test_the_snippet_with_a_tiny_clip(tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    from hf_negmerge.data import DIGITS_CLASS_NAMES
    from hf_negmerge.models import ModelConfig, build_classifier

    built = build_classifier(ModelConfig(architecture="clip"), DIGITS_CLASS_NAMES)
    processor = CLIPProcessor(image_processor=built.image_processor, tokenizer=built.tokenizer)
    result = _run(_unlearner(built.model, processor, tmp_path / "out"))
    assert type(result.model) is CLIPModel
    tau = TaskVector.load(tmp_path / "out" / "merged_task_vector.safetensors")
    expected = copy.deepcopy(built.model)
    tau.negate_into(expected, scale=result.metrics.selection.scale)
    got = result.model.state_dict()
    assert all(torch.allclose(got[k], v, atol=1e-6) for k, v in expected.state_dict().items())
    result.model.save_pretrained(tmp_path / "model")
    reloaded = CLIPModel.from_pretrained(tmp_path / "model").eval()
    images = [image.convert("RGB") for image in load_digits_dataset()["test"]["image"][:4]]
    inputs = processor(text=["a photo of a 3."], images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(
            reloaded(**inputs).logits_per_image, result.model.eval()(**inputs).logits_per_image
        )


def test_a_cli_output_folder_is_resumed_by_the_unlearner_without_training(tmp_path, monkeypatch):
    import yaml

    import hf_negmerge.training.runner as runner
    from hf_negmerge.cli import main

    data = {"dataset": "digits", "scenario": "class", "forget_classes": [FORGET], "max_samples": 400}
    recipe = {
        "output_dir": str(tmp_path / "out"),
        "data": data,
        "model": {"architecture": "vit", "name_or_path": str(PACKAGED)},
        "grid": GRID,
        "merge": {"lambda_grid": LAMBDAS, "exclude": ["*.embeddings.*"]},
        "comparison": [],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["unlearn", "--no-progress", "--config", str(tmp_path / "recipe.yaml")]) == 0
    runs = tmp_path / "out" / "work" / "grid"
    before = {path: _sha256(path) for path in runs.rglob("*") if path.is_file()}
    cli_metrics = RunResults.load(tmp_path / "out")

    def no_training(*args, **kwargs):
        raise AssertionError("a grid run of the CLI's folder was trained again")

    monkeypatch.setattr(runner, "finetune", no_training)
    unlearner = NegMergeUnlearner(
        model=str(PACKAGED),
        data=DataConfig(**data),
        grid=_grid(),
        config=_config(),
        comparison=[],
        output_dir=tmp_path / "out",
        progress=False,
    )
    assert unlearner.train_grid().trained == []
    result = _run(unlearner)
    assert result.metrics.unlearned == cli_metrics.unlearned
    assert result.metrics.selection.scale == cli_metrics.selection.scale
    grid_files = {path for path in runs.rglob("*") if path.is_file()}
    assert {path: _sha256(path) for path in before} == before and grid_files >= set(before)


def test_push_to_hub_uploads_the_output_folder(vit_run, tmp_path, monkeypatch):
    from hub_stand_in import HubStandIn  # tests/ is on sys.path under pytest's default import mode
    from test_hub import _point_hub_at

    _, _, out, result = vit_run
    server = HubStandIn().start()
    try:
        _point_hub_at(monkeypatch, server.url, tmp_path / "hf-cache")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the stand-in cannot resolve the base model's config
            url = result.push_to_hub("me/unlearned-digits", base_model="google/vit-base-patch16-224")
        files = server.repos["me/unlearned-digits"].files("main")
    finally:
        server.stop()
    assert url
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert json.loads(files["metrics.json"])["unlearned"] == result.metrics.unlearned


# -- in-memory datasets and bad input ------------------------------------------------------------------


def test_an_in_memory_datasetdict_splits_like_the_named_dataset():
    """A DatasetDict given as DataConfig.dataset (the oracle: the same rows by name, 'digits')."""
    options = {"scenario": "class", "forget_classes": [FORGET], "max_samples": 300}
    in_memory = build_unlearning_data(DataConfig(dataset=load_digits_dataset(), **options))
    named = build_unlearning_data(DataConfig(dataset="digits", **options))
    assert in_memory.summary() == named.summary()
    for name, split in named.splits().items():
        assert in_memory.splits()[name]["label"] == split["label"]
    assert DataConfig(dataset=load_digits_dataset(), **options).to_dict()["dataset"] == (
        "in-memory DatasetDict (splits train, test)"
    )


def test_a_missing_split_of_an_in_memory_dataset_names_the_setting():
    only_train = datasets.DatasetDict({"train": load_digits_dataset()["train"]})
    with pytest.raises(
        ConfigError, match=r"in-memory DatasetDict \(splits train\) has no split 'test'.*data.test_split"
    ):
        build_unlearning_data(DataConfig(dataset=only_train, scenario="class", forget_classes=[FORGET]))


def test_a_dataset_without_the_label_column_is_refused_naming_split_and_column(tiny_vit):
    from transformers import ViTImageProcessor

    digits = load_digits_dataset().rename_column("label", "digit")
    with pytest.raises(ConfigError, match=r"split 'train'.*no column 'label' \(label_column\).*'digit'"):
        NegMergeUnlearner(tiny_vit, ViTImageProcessor(), dataset=digits, forget_classes=[FORGET])


def test_a_forget_class_not_in_the_labels_is_refused(tiny_vit):
    from transformers import ViTImageProcessor

    with pytest.raises(ConfigError, match=r"forget_classes \['eleven'\] are not classes.*'9'"):
        NegMergeUnlearner(
            tiny_vit, ViTImageProcessor(), dataset=load_digits_dataset(), forget_classes=["eleven"]
        )


def test_forget_classes_and_forget_fraction_together_are_refused(tiny_vit):
    from transformers import ViTImageProcessor

    with pytest.raises(ConfigError, match="forget_classes and forget_fraction"):
        NegMergeUnlearner(
            tiny_vit,
            ViTImageProcessor(),
            dataset=load_digits_dataset(),
            forget_classes=[FORGET],
            forget_fraction=0.1,
        )


def test_a_live_model_without_a_processor_or_of_an_unknown_kind_is_refused(tiny_vit):
    from transformers import BertConfig, BertModel, ViTImageProcessor

    with pytest.raises(ConfigError, match="processor= is needed"):
        NegMergeUnlearner(tiny_vit, dataset=load_digits_dataset(), forget_fraction=0.1)
    bert = BertModel(
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    )
    with pytest.raises(ConfigError, match=r"model_type 'bert'.*supported model types"):
        NegMergeUnlearner(bert, ViTImageProcessor(), dataset=load_digits_dataset(), forget_fraction=0.1)


def test_a_peft_model_is_unlearned_with_its_adapters_merged_into_theta0(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import ViTForImageClassification

    model, processor = _vit()
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    merged = copy.deepcopy(peft_model).merge_and_unload()  # the oracle: peft's own merge
    result = _run(_unlearner(peft_model, processor, tmp_path / "out"))
    assert type(result.model) is ViTForImageClassification
    given = ViTForImageClassification.from_pretrained(tmp_path / "out" / "work" / "given_model")
    assert all(torch.equal(given.state_dict()[k], v) for k, v in merged.state_dict().items())
    tau = TaskVector.load(tmp_path / "out" / "merged_task_vector.safetensors")
    tau.negate_into(merged, scale=result.metrics.selection.scale)
    got = result.model.state_dict()
    assert all(torch.allclose(got[k], v, atol=1e-6) for k, v in merged.state_dict().items())


_TWO_PROCESS_SCRIPT = """
import sys, warnings
from transformers import AutoImageProcessor, ViTForImageClassification
from hf_negmerge import GridSpec, NegMergeConfig, NegMergeUnlearner, load_digits_dataset
from accelerate import PartialState

warnings.simplefilter("ignore")
packaged, out, report = sys.argv[1:4]
unlearner = NegMergeUnlearner(
    model=ViTForImageClassification.from_pretrained(packaged),
    processor=AutoImageProcessor.from_pretrained(packaged),
    dataset=load_digits_dataset(),
    forget_classes=["3"],
    grid=GridSpec(base={"learning_rate": 1e-3, "epochs": 4, "batch_size": 32, "warmup_steps": 0},
                  axes={"seed": [0, 1]}),
    config=NegMergeConfig(lambda_grid=[0.0, 1.0], exclude=["*.embeddings.*"]),
    comparison=[],
    output_dir=out,
    progress=False,
)
trained = unlearner.train_grid().trained
result = unlearner.run()
rank = PartialState().process_index
with open(f"{report}.{rank}", "w") as file:
    file.write(f"{len(trained)} {None if result is None else result.metrics.selection.scale}")
"""


@pytest.mark.slow
def test_two_processes_share_the_grid_and_only_the_main_one_gets_a_result(tmp_path):
    """torchrun, 2 CPU processes, a live model, stage by stage: only rank 0 gets the result."""
    import os
    import subprocess
    import sys

    script = tmp_path / "two.py"
    script.write_text(_TWO_PROCESS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(hf_negmerge.__file__).parents[1])}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [*launcher, str(script), str(PACKAGED), str(tmp_path / "out"), str(tmp_path / "report")]
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    main_report = (tmp_path / "report.0").read_text().split()
    other_report = (tmp_path / "report.1").read_text().split()
    assert main_report[0] == other_report[0] == "2"  # both runs trained, the same record on each process
    assert (
        other_report[1] == "None"
        and float(main_report[1]) == RunResults.load(tmp_path / "out").selection.scale
    )
    assert len(list((tmp_path / "out" / "work" / "grid" / "runs").iterdir())) == 2


def test_an_unreadable_dataset_object_is_named_by_its_type():
    from hf_negmerge.recipe import UnlearnRecipe
    from hf_negmerge.source_checks import check_sources

    with pytest.raises(ConfigError, match=r"data.dataset must be .*datasets.DatasetDict, got set"):
        check_sources(UnlearnRecipe(data=DataConfig(dataset={"not", "a dataset"})))


def test_separate_train_and_test_datasets_become_the_two_splits(tiny_vit):
    from transformers import ViTImageProcessor

    digits = load_digits_dataset()
    unlearner = NegMergeUnlearner(
        tiny_vit,
        ViTImageProcessor(),
        train_dataset=digits["train"],
        test_dataset=digits["test"],
        forget_fraction=0.1,
    )
    given = unlearner.recipe.data.dataset
    assert sorted(given) == ["test", "train"] and given["test"]["label"] == digits["test"]["label"]
    assert unlearner.recipe.data.scenario == "random" and unlearner.recipe.data.forget_fraction == 0.1
    with pytest.raises(ConfigError, match="train_dataset and test_dataset together"):
        NegMergeUnlearner(tiny_vit, ViTImageProcessor(), train_dataset=digits["train"], forget_fraction=0.1)
