"""The standard setting: the ResNet classifier (CIFAR stem), its θ₀ recipe, and the recipe end to end."""

from __future__ import annotations

import json
import shutil

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from transformers import ResNetConfig, ResNetForImageClassification

from hf_negmerge.errors import ConfigError
from hf_negmerge.models import ImageClassifier, ModelConfig, build_classifier
from hf_negmerge.models.resnet import RESNET18_CIFAR, STEM_ATTRIBUTE
from hf_negmerge.task_vector import TaskVector

NAMES = [f"class{i}" for i in range(10)]
TINY = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"}


def _tiny(stem: str = "cifar", seed: int = 0):
    return build_classifier(
        ModelConfig(architecture="resnet", tiny={**TINY, "stem": stem}, init_seed=seed), NAMES
    )


def test_resnetconfig_has_only_the_imagenet_stem_and_ours_is_salun_s_cifar_stem():
    """transformers builds 7×7/2 + max-pool whatever the config says; `stem: cifar` swaps in 3×3/1, no pool."""
    plain = ResNetForImageClassification(ResNetConfig(**TINY, num_labels=10))
    conv = plain.resnet.embedder.embedder.convolution
    assert (conv.kernel_size, conv.stride) == ((7, 7), (2, 2))
    assert isinstance(plain.resnet.embedder.pooler, nn.MaxPool2d)

    model = _tiny().model
    conv = model.resnet.embedder.embedder.convolution
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == ((3, 3), (1, 1), (1, 1), None)
    assert isinstance(model.resnet.embedder.pooler, nn.Identity)
    # the first stage sees the full 32×32 resolution (ImageNet stem: 8×8)
    stem_out = model.resnet.embedder(torch.zeros(1, 3, 32, 32))
    assert stem_out.shape[-2:] == (32, 32)
    assert plain.resnet.embedder(torch.zeros(1, 3, 32, 32)).shape[-2:] == (8, 8)


def test_resnet18_from_config_has_the_cifar_resnet18_parameter_count():
    # torchvision's resnet18(num_classes=10) with a 3×3 stem: 11,173,962 parameters
    classifier = build_classifier(ModelConfig(architecture="resnet", tiny=RESNET18_CIFAR), NAMES)
    assert sum(p.numel() for p in classifier.model.parameters()) == 11_173_962
    assert classifier.config.image_size == 32


def test_unknown_tiny_option_and_stem_are_refused():
    with pytest.raises(ConfigError, match="Unknown tiny ResNet option"):
        build_classifier(ModelConfig(architecture="resnet", tiny={"widths": [8]}), NAMES)
    with pytest.raises(ConfigError, match=r"model\.tiny\.stem='tiny'"):
        build_classifier(ModelConfig(architecture="resnet", tiny={"stem": "tiny"}), NAMES)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_save_and_reload_keep_stem_weights_and_logits(tmp_path, stem):
    classifier = _tiny(stem)
    classifier.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config.get(STEM_ATTRIBUTE, "imagenet") == stem
    loaded = ImageClassifier.from_pretrained(tmp_path / "saved")
    assert type(loaded).__name__ == "ResNetClassifier"
    pixels = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(loaded(pixels), classifier(pixels), rtol=0, atol=0)
    for key, value in classifier.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_pretrained_head_rules_match_vit(tmp_path, stem):
    """Labels by name: other classes are refused unless the head is replaced; the backbone is kept."""
    classifier = _tiny(stem)
    folder = tmp_path / "plain"
    classifier.model.save_pretrained(folder)  # a plain transformers folder, no hf-negmerge metadata
    classifier.image_processor.save_pretrained(folder)
    same = build_classifier(ModelConfig(architecture="resnet", name_or_path=str(folder)), NAMES)
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(same(pixels), classifier(pixels), rtol=0, atol=0)

    other = ["cat", "dog", "ship"]
    with pytest.raises(ConfigError, match="classification head for 10 labels"):
        build_classifier(ModelConfig(architecture="resnet", name_or_path=str(folder)), other)
    replaced = build_classifier(
        ModelConfig(architecture="resnet", name_or_path=str(folder), replace_head=True), other
    )
    assert replaced(pixels).shape == (2, 3)
    for key, value in classifier.model.state_dict().items():
        if not key.startswith("classifier."):
            assert torch.equal(replaced.model.state_dict()[key], value), key


def test_missing_head_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "headless"
    _tiny().model.save_pretrained(folder)
    _tiny().image_processor.save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    save_file(
        {k: v for k, v in state.items() if not k.startswith("classifier.")}, folder / "model.safetensors"
    )
    with pytest.raises(ConfigError, match="holds no trained classification head"):
        build_classifier(ModelConfig(architecture="resnet", name_or_path=str(folder)), NAMES)


def test_batchnorm_running_stats_are_task_vector_entries_and_counters_pass_through():
    base = _tiny()
    tuned = _tiny()
    tuned.model.train()
    with torch.no_grad():
        tuned(torch.randn(8, 3, 32, 32) * 3 + 1)  # a forward pass in train mode moves running stats
    patterns = base.trainable_parameter_patterns()
    tau = TaskVector.from_models(base.model, tuned.model, include=patterns)
    state = base.model.state_dict()
    floats = {key for key, value in state.items() if value.is_floating_point()}
    assert set(tau.tensors) == floats  # the whole float state dict, running stats included
    assert any(key.endswith("running_var") for key in tau.tensors)
    assert not any(key.endswith("num_batches_tracked") for key in tau.tensors)
    key = "resnet.embedder.embedder.normalization.running_mean"
    expected = tuned.model.state_dict()[key] - state[key]
    torch.testing.assert_close(tau.tensors[key], expected)
    assert expected.abs().sum() > 0
    # applying τ copies the integer counters from the base, untouched
    applied = tau.apply_to(state, scale=-0.5)
    counter = "resnet.embedder.embedder.normalization.num_batches_tracked"
    assert torch.equal(applied[counter], state[counter])


def test_resnet_theta0_recipe_is_salun_s_and_its_schedule_divides_at_91_and_136():
    from hf_negmerge.training.pretrain import PRETRAIN_RECIPES, _optimizer_and_schedule

    recipe = PRETRAIN_RECIPES["resnet"]
    assert (recipe.epochs, recipe.learning_rate, recipe.weight_decay) == (182, 0.1, 5e-4)
    assert recipe.optimizer == "sgd" and recipe.pad_crop_flip
    parameter = nn.Parameter(torch.zeros(1))
    optimizer, scheduler = _optimizer_and_schedule(recipe, [parameter], 0.1, 5e-4, 182, steps_per_epoch=2)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 5e-4
    rates = []
    for _ in range(182 * 2):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    epoch_rate = rates[::2]  # the rate each epoch starts with
    assert epoch_rate[90] == pytest.approx(0.1) and epoch_rate[91] == pytest.approx(0.01)
    assert epoch_rate[135] == pytest.approx(0.01) and epoch_rate[136] == pytest.approx(0.001)


def test_tensor_pad_crop_flip_is_a_shifted_window_of_the_padded_image():
    from hf_negmerge.training.pretrain import pad_crop_flip

    pixels = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    fill = torch.tensor([-1.0, -2.0, -3.0])
    padded = torch.nn.functional.pad(pixels, (2, 2, 2, 2))
    for channel in range(3):
        padded[:, channel][padded[:, channel] == 0] = fill[channel]
    generator = torch.Generator().manual_seed(0)
    seen, flipped = set(), 0
    for _ in range(400):
        out = pad_crop_flip(pixels, fill, generator, padding=2)
        assert out.shape == pixels.shape
        for image, source in zip(out, padded, strict=True):
            windows = [
                (left, top, flip)
                for top in range(5)
                for left in range(5)
                for flip in (False, True)
                if torch.equal(
                    image,
                    source[:, top : top + 6, left : left + 6].flip(-1)
                    if flip
                    else source[:, top : top + 6, left : left + 6],
                )
            ]
            assert len(windows) == 1
            seen.add(windows[0][:2])
            flipped += windows[0][2]
    assert seen == {(left, top) for left in range(5) for top in range(5)}  # every offset 0..2·padding
    assert 0.4 < flipped / 800 < 0.6


def test_cifar_augmentation_runs_without_randaugment_in_the_training_loop():
    """`augmentation: cifar_pad_crop_flip` needs no RandAugment fields and changes what is trained on."""
    from hf_negmerge.training import TrainingHyperparameters, finetune

    rows = _cifar_like_rows(40, seed=3)
    dataset = datasets.Dataset.from_dict(
        {"image": [image for image, _ in rows], "label": [label for _, label in rows]}
    )
    base = TrainingHyperparameters(learning_rate=0.01, epochs=1, batch_size=20, warmup_steps=0)
    plain = finetune(_tiny(), dataset, base, progress=False)
    augmented_hp = base.replace(augmentation="cifar_pad_crop_flip")
    assert not augmented_hp.uses_augmentation  # no RandAugment configured
    augmented = finetune(_tiny(), dataset, augmented_hp, progress=False)
    again = finetune(_tiny(), dataset, augmented_hp, progress=False)
    key = "resnet.embedder.embedder.convolution.weight"
    assert not torch.equal(plain.model.state_dict()[key], augmented.model.state_dict()[key])
    assert torch.equal(again.model.state_dict()[key], augmented.model.state_dict()[key])  # seeded


def _cifar_like_rows(count: int, seed: int) -> list[tuple[Image.Image, int]]:
    """32×32 RGB images: a class colour (one of 10 corners and edges of the RGB cube) plus noise."""
    palette = [(r, g, b) for r in (40, 215) for g in (40, 215) for b in (40, 215)] + [
        (128, 128, 40),
        (40, 128, 128),
    ]
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        label = index % 10
        noise = rng.integers(-110, 111, size=(32, 32, 3))
        array = np.clip(np.array(palette[label]) + noise, 0, 255).astype(np.uint8)
        rows.append((Image.fromarray(array, "RGB"), label))
    return rows


def _save_tiny_cifar(path) -> None:
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    splits = {}
    for split, count, seed in (("train", 300, 0), ("test", 100, 1)):
        rows = _cifar_like_rows(count, seed)
        splits[split] = datasets.Dataset.from_dict(
            {"img": [image for image, _ in rows], "label": [label for _, label in rows]}, features=features
        )
    datasets.DatasetDict(splits).save_to_disk(str(path))


@pytest.mark.slow
def test_standard_recipe_runs_end_to_end_with_retrain_mia_and_avg_gap_and_resumes(tmp_path, monkeypatch):
    from hf_negmerge.cli import main
    from hf_negmerge.training import runner

    data = tmp_path / "cifar"
    _save_tiny_cifar(data)
    out = tmp_path / "out"
    args = [
        "unlearn",
        "--config",
        "resnet18-cifar10/random-forgetting",
        "--output-dir",
        str(out),
        "--no-progress",
        f"data.dataset={data}",
        "model.tiny.embedding_size=8",
        "model.tiny.hidden_sizes=[8,16]",
        "model.tiny.depths=[1,1]",
        "original.epochs=5",
        "original.learning_rate=0.05",
        "original.batch_size=64",
        f"original.cache_dir={tmp_path / 'cache'}",
        "evaluation.retrain_epochs=5",
        "grid.base.batch_size=16",
        "grid.base.learning_rate=0.01",
        "grid.axes.epochs=[1]",
        "grid.axes.weight_decay=[0.0001]",
        "grid.axes.label_smoothing=[0,0.1]",
        "merge.lambda_grid=[0,0.5,1]",
        "comparison=[uniform]",
    ]
    assert main(args) == 0
    for name in ("config.json", "model.safetensors", "metrics.json", "report.md", "README.md"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    gap_keys = {"forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy"}
    assert gap_keys <= metrics["unlearned"].keys()
    rows = {row["method"]: row for row in metrics["comparison"]}
    assert "retrain" in rows and gap_keys <= rows["retrain"].keys()
    negmerge = rows["negmerge"]
    by_hand = sum(abs(negmerge[key] - rows["retrain"][key]) for key in gap_keys) / 4
    assert negmerge["avg_gap"] == pytest.approx(by_hand)
    assert "Avg. Gap" in (out / "report.md").read_text()
    # θ₀ and Retrain are CIFAR-stem ResNets trained with the SGD recipe (cached separately)
    originals = sorted((tmp_path / "cache").iterdir())
    assert len(originals) == 2
    for folder in originals:
        record = json.loads((folder / "pretrain.json").read_text())
        assert record["optimizer"] == "sgd" and record["pad_crop_flip"] is True
        assert record["weight_decay"] == 5e-4
        assert json.loads((folder / "config.json").read_text())[STEM_ATTRIBUTE] == "cifar"
    points = json.loads((out / "work" / "grid" / "grid.json").read_text())
    assert len(points) == 2
    assert all(point["hyperparameters"]["augmentation"] == "cifar_pad_crop_flip" for point in points)
    assert all(point["hyperparameters"]["randaugment_magnitude"] is None for point in points)

    # resume: drop one finished run; only that one trains again, with the same result
    runs = sorted((out / "work" / "grid" / "runs").iterdir())
    assert len(runs) == 2
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


def test_pipeline_maps_data_onto_a_pretrained_resnet_s_labels(tmp_path):
    """A pretrained ResNet brings its head's labels, like ViT; a replaced head or a tiny model does not."""
    from hf_negmerge.originals import model_label_names
    from hf_negmerge.recipe import recipe_from_dict

    folder = tmp_path / "plain"
    classifier = _tiny()
    classifier.model.save_pretrained(folder)
    classifier.image_processor.save_pretrained(folder)
    model = {"architecture": "resnet", "name_or_path": str(folder)}
    assert model_label_names(recipe_from_dict({"model": model})) == NAMES
    replaced = recipe_from_dict({"model": {**model, "replace_head": True}, "original": {"train": True}})
    assert model_label_names(replaced) is None
    assert model_label_names(recipe_from_dict({"model": {"architecture": "resnet"}})) is None
