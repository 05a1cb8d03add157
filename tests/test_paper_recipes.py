"""The CLIP recipes as the authors ran them: trained set, control head text, backbones, EuroSAT split.

Expectations come from outside the code under test: the authors' trained set as a rule on
checkpoint key names, the ImageNet lists' SHA-256 computed from the authors' source file, the
head recomputed by calling the towers directly, the ViT-B/32 recipes as the reference for the
other backbones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from hf_negmerge.errors import ConfigError
from hf_negmerge.recipe import available_recipes, load_recipe, recipe_from_dict

CLIP_RECIPES = [name for name in available_recipes() if name.startswith("clip-vit-")]
BACKBONES = {
    "clip-vit-b32": "openai/clip-vit-base-patch32",
    "clip-vit-b16": "openai/clip-vit-base-patch16",
    "clip-vit-l14": "openai/clip-vit-large-patch14",
}
FORGET_SETS = ("sun397", "cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd")
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hf_negmerge"

# SHA-256 of json.dumps(list) of the authors' `imagenet_template` (80, with "{}" for the class)
# and `imagenet_classnames` (1000), read with `ast` from mgradyn/negmerge@f42853b
# CLIP_MU/src/datasets/templates.py and imagenet.py (identical to open_clip's lists).
AUTHORS_TEMPLATES_SHA256 = "e30aa9d7fb289e072e361fb1b2d16a295f7cb396978685fa57a0882c96c06b0d"
AUTHORS_CLASS_NAMES_SHA256 = "6ef5246539bb6543da0958381424e7f7b63b6758af04434f6e8f6da88e0cca70"


def authors_trained_set(keys) -> set[str]:
    """The authors' trained tensors (REFERENCE §2.1) in HF checkpoint names: the vision tower except
    its attention q/k/v/out projections, plus visual_projection; nothing of the text side."""
    attention = re.compile(
        r"^vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\."
    )
    return {
        key
        for key in keys
        if (key.startswith("vision_model.") and not attention.match(key))
        or key.startswith("visual_projection.")
    }


def tiny_images(count: int, seed: int = 0):
    import datasets

    rng = np.random.default_rng(seed)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(count)]
    return datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(count)]})


@pytest.mark.parametrize("name", CLIP_RECIPES)
def test_clip_recipe_task_vector_is_nonzero_exactly_on_the_authors_trained_set(name):
    from hf_negmerge.key_space import checkpoint_state_dict
    from hf_negmerge.models import ModelConfig, build_classifier
    from hf_negmerge.task_vector import TaskVector
    from hf_negmerge.training.loop import finetune

    recipe = load_recipe(name)
    model = recipe.model
    assert (model.architecture, model.freeze_attention, model.train_projection) == ("clip", True, True)
    # the recipe's classifier as a tiny CLIP: its switches and templates, weights built offline
    config = ModelConfig(
        architecture="clip",
        freeze_attention=model.freeze_attention,
        train_projection=model.train_projection,
        prompt_templates=model.prompt_templates,
    )
    base = build_classifier(config, ["cat", "dog"])
    tuned = build_classifier(config, ["cat", "dog"])  # same seed: same weights
    # a short fine-tune with the recipe's first run (its augmentation and accumulation), made tiny
    first = recipe.grid.expand()[0].hyperparameters
    hyperparameters = dataclasses.replace(first, epochs=1, warmup_steps=0, batch_size=4, learning_rate=1e-3)
    tuned = finetune(tuned, tiny_images(8), hyperparameters, progress=False)
    # τ as the grid runner builds it
    tau = TaskVector.from_models(base.model, tuned.model, include=base.trainable_parameter_patterns())
    nonzero = {key for key in tau if tau.tensors[key].count_nonzero() > 0}
    keys = checkpoint_state_dict(base.model).keys()
    expected = authors_trained_set(keys)
    assert any(".mlp." in key for key in expected) and "visual_projection.weight" in expected
    assert nonzero == expected
    assert set(tau.keys()) == expected
    assert not any(
        key.startswith(("text_model.", "text_projection.")) or key == "logit_scale" or ".self_attn." in key
        for key in nonzero
    )


def test_imagenet_prompt_data_is_the_authors_lists():
    data = json.loads((PACKAGE / "models" / "imagenet_openai.json").read_text(encoding="utf-8"))
    templates, names = data["templates"], data["class_names"]
    assert hashlib.sha256(json.dumps(templates).encode()).hexdigest() == AUTHORS_TEMPLATES_SHA256
    assert hashlib.sha256(json.dumps(names).encode()).hexdigest() == AUTHORS_CLASS_NAMES_SHA256
    assert len(templates) == 80 and len(set(templates)) == 80
    assert all(template.count("{}") == 1 for template in templates)
    assert (templates[0], templates[-1]) == ("a bad photo of a {}.", "a tattoo of the {}.")
    assert len(names) == 1000 and names[:3] == ["tench", "goldfish", "great white shark"]
    assert names[-1] == "toilet paper"
    # the source repeats two names; they are kept (words of the prompts, not labels)
    assert names[657] == names[744] == "missile" and names[836] == names[837] == "sunglasses"
    assert "mgradyn/negmerge" in data["source"] and "zero_shot_metadata.py" in data["source"]
    assert "models/*.json" in (PACKAGE.parents[1] / "setup.py").read_text(encoding="utf-8")


def independent_head(classifier, names: list[str], templates: list[str]) -> torch.Tensor:
    """Each prompt embedded alone through the text tower, normalised, averaged, normalised."""
    clip, tokenizer = classifier.clip_model, classifier.tokenizer
    rows = []
    with torch.no_grad():
        for name in names:
            embeddings = []
            for template in templates:
                ids = torch.tensor([tokenizer(template.replace("{}", name))["input_ids"]])
                hidden = clip.text_model(input_ids=ids).last_hidden_state[0, -1]  # EOS is the last token
                embeddings.append(F.normalize(clip.text_projection(hidden), dim=-1))
            rows.append(F.normalize(torch.stack(embeddings).mean(dim=0), dim=-1))
    return torch.stack(rows)


def test_control_split_is_scored_with_its_own_templates_and_names():
    from hf_negmerge.data import EncodedSplit
    from hf_negmerge.evaluation.engine import Evaluator
    from hf_negmerge.models import ModelConfig, build_classifier
    from hf_negmerge.models.templates import CLASS_NAME_SETS, PROMPT_TEMPLATE_SETS

    forget_templates, forget_names = PROMPT_TEMPLATE_SETS["cars"], ["sedan", "coupe"]
    control_templates = PROMPT_TEMPLATE_SETS["imagenet"][:6]
    control_names = CLASS_NAME_SETS["imagenet"][:5]
    # a tokenizer whose vocabulary holds the control words too (tiny tokenizers are built from the prompts)
    vocabulary = ModelConfig(architecture="clip", prompt_templates=forget_templates + control_templates)
    classifier = build_classifier(vocabulary, forget_names + control_names)
    classifier.config = dataclasses.replace(classifier.config, prompt_templates=forget_templates)
    classifier.set_class_names(forget_names)
    pixels = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    splits = {
        "forget_test": EncodedSplit("forget_test", pixels, torch.tensor([0, 1] * 3)),
        "control_test": EncodedSplit("control_test", pixels, torch.arange(6) % 5),
    }
    evaluator = Evaluator(classifier, splits, 4, control_names, control_templates)

    expected = independent_head(classifier, control_names, control_templates)
    with_forget_templates = independent_head(classifier, control_names, forget_templates)
    assert not torch.allclose(expected, with_forget_templates, atol=1e-4)  # the templates matter here
    evaluator.predict("control_test")
    torch.testing.assert_close(classifier.zero_shot_head, expected, rtol=1e-5, atol=1e-6)
    evaluator.predict("forget_test")
    torch.testing.assert_close(
        classifier.zero_shot_head,
        independent_head(classifier, forget_names, forget_templates),
        rtol=1e-5,
        atol=1e-6,
    )


def _control_data(control_names: list[str], control_dataset: str = "control") -> dict:
    return {
        "dataset": "digits",
        "scenario": "dataset",
        "control_dataset": control_dataset,
        "control_class_names": control_names,
    }


def test_control_head_presets_resolve_and_bad_values_name_the_key():
    from hf_negmerge.models.templates import CLASS_NAME_SETS, PROMPT_TEMPLATE_SETS

    recipe = load_recipe("clip-vit-b32/cars")
    assert recipe.data.to_dict()["control_prompt_templates"] == "imagenet"  # kept as the preset name
    names, templates = recipe.data.control_head_text()
    assert names == CLASS_NAME_SETS["imagenet"] and templates == PROMPT_TEMPLATE_SETS["imagenet"]

    bad = [
        ({"control_prompt_templates": "imagenett"}, "data.control_prompt_templates"),
        ({"control_prompt_templates": ["a photo"]}, "data.control_prompt_templates"),
        ({"control_prompt_names": "wordnet"}, "data.control_prompt_names"),
        ({"control_prompt_names": ["tench", ""]}, "data.control_prompt_names"),
        ({"control_prompt_names": 5}, "data.control_prompt_names"),
    ]
    for values, key in bad:
        with pytest.raises(ConfigError, match=re.escape(key.split(".")[1])):
            recipe_from_dict({"data": {**_control_data(["a", "b"]), **values}})
    with pytest.raises(ConfigError, match="control_prompt_names is set but there is no control dataset"):
        recipe_from_dict({"data": {"dataset": "digits", "control_prompt_names": ["a"]}})


def test_control_prompt_names_must_name_every_control_class(tmp_path):
    from hf_negmerge.data import build_unlearning_data, load_digits_dataset
    from hf_negmerge.evaluation.engine import control_head_text

    control_dir = tmp_path / "control"
    load_digits_dataset(seed=1).save_to_disk(str(control_dir))
    names = [f"digit {d}" for d in range(10)]
    values = {**_control_data(None, str(control_dir)), "max_samples": 200, "control_prompt_names": names}
    del values["control_class_names"]
    recipe = recipe_from_dict({"data": values})
    data = build_unlearning_data(recipe.data)
    assert control_head_text(recipe, data) == (names, None)  # templates: the forget set's
    short = recipe_from_dict({"data": {**values, "control_prompt_names": names[:9]}})
    with pytest.raises(ConfigError, match=r"data\.control_prompt_names has 9 names .* 10 classes"):
        control_head_text(short, data)
    plain = recipe_from_dict({"data": {k: v for k, v in values.items() if k != "control_prompt_names"}})
    assert control_head_text(plain, data) == (data.control_class_names, None)


@pytest.mark.parametrize("dataset", FORGET_SETS)
def test_other_backbones_mirror_the_vit_b32_recipes(dataset):
    reference = load_recipe(f"clip-vit-b32/{dataset}")
    for folder, hub_id in BACKBONES.items():
        recipe = load_recipe(f"{folder}/{dataset}")
        assert recipe.output_dir == f"negmerge-{folder}-{dataset}"
        assert recipe.model.name_or_path == hub_id
        expected_points = [point.hyperparameters for point in reference.grid.expand()]
        if folder == "clip-vit-l14":  # the authors' ViT-L/14 runs: batch 64, 2 accumulation steps
            expected_points = [
                dataclasses.replace(point, batch_size=64, gradient_accumulation_steps=2)
                for point in expected_points
            ]
        assert [point.hyperparameters for point in recipe.grid.expand()] == expected_points
        mine, theirs = recipe.to_dict(), reference.to_dict()
        for values in (mine, theirs):
            del values["output_dir"], values["model"]["name_or_path"], values["grid"]
            del values["merge"]["ties_total_elements"]  # the backbone's size, checked below
        assert mine == theirs


# open_clip's OpenAI ViTs: width, blocks, patch, MLP width, text width, embedding dim (224 px,
# vocabulary 49,408, context 77).
OPENAI_BACKBONES = {
    "clip-vit-b32": (768, 12, 32, 3072, 512, 512),
    "clip-vit-b16": (768, 12, 16, 3072, 512, 512),
    "clip-vit-l14": (1024, 24, 14, 4096, 768, 768),
}


def authors_flattened_size(width, blocks, patch, mlp, text_width, embed, image=224, vocab=49408, context=77):
    """Entries of the authors' flattened task vector, counted by hand from open_clip's layout: their
    ImageEncoder's state dict is the whole CLIP minus the text `transformer` (CLIP_MU/src/modeling.py
    deletes only that), every float tensor (task_vectors.py skips int64/uint8)."""
    tokens = (image // patch) ** 2 + 1
    stem = width + tokens * width + 3 * patch * patch * width + 2 * width  # class, positions, conv1, ln_pre
    block = 2 * width + 4 * (width * width + width) + 2 * width + (width * mlp + mlp) + (mlp * width + width)
    visual = stem + blocks * block + 2 * width + width * embed  # ln_post, proj
    text_leftovers = vocab * text_width + context * text_width + 2 * text_width + text_width * embed + 1
    return visual + text_leftovers


def test_ties_trims_over_the_authors_flattened_image_encoder():
    """TIES keeps 20% of d where d is the authors' whole flattened encoder, not only our trained set."""
    for name in CLIP_RECIPES:
        recipe = load_recipe(name)
        backbone = name.split("/")[0]
        assert recipe.merge.ties_total_elements == authors_flattened_size(*OPENAI_BACKBONES[backbone]), name
    # The hand count agrees with transformers' CLIPModel for ViT-B/32 (meta device: no memory).
    from transformers import CLIPConfig, CLIPModel

    width, blocks, patch, mlp, text_width, embed = OPENAI_BACKBONES["clip-vit-b32"]
    config = CLIPConfig(
        vision_config={
            "hidden_size": width,
            "num_hidden_layers": blocks,
            "num_attention_heads": 12,
            "intermediate_size": mlp,
            "patch_size": patch,
            "image_size": 224,
        },
        text_config={"hidden_size": text_width, "num_attention_heads": 8, "vocab_size": 49408},
        projection_dim=embed,
    )
    with torch.device("meta"):
        model = CLIPModel(config)
    text_kept = ("text_model.embeddings.", "text_model.final_layer_norm.", "text_projection.", "logit_scale")
    counted = sum(
        tensor.numel()
        for key, tensor in model.state_dict().items()
        if tensor.is_floating_point() and key.startswith(("vision_model.", "visual_projection.", *text_kept))
    )
    assert counted == authors_flattened_size(*OPENAI_BACKBONES["clip-vit-b32"]) == 113_448_705


def write_split_folder(root: Path, classes: list[str], counts: dict[str, int]) -> None:
    for split, count in counts.items():
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                value = 20 * c + i
                PIL.Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(
                    root / split / name / f"{i}.png"
                )


def test_eurosat_recipe_override_uses_the_authors_validation_split(tmp_path):
    """The override in the EuroSAT recipe's comment: train on all of train, validate on val/."""
    from hf_negmerge.data import build_unlearning_data

    text = (PACKAGE / "recipes" / "clip-vit-b32" / "eurosat.yaml").read_text(encoding="utf-8")
    comment = [line[4:] for line in text.splitlines() if line.startswith("#   ")]
    overrides = shlex.split(" ".join(comment).replace("\\", " "))
    assert [item.split("=")[0] for item in overrides] == [
        "data.dataset",
        "data.validation_split",
        "data.label_mapping",
    ]
    folder_classes = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial"]
    folder_classes += ["Pasture", "PermanentCrop", "Residential", "River", "SeaLake"]
    splits = tmp_path / "EuroSAT_splits"
    write_split_folder(splits, folder_classes, {"train": 3, "val": 2, "test": 2})
    control = tmp_path / "control"
    write_split_folder(control, ["a", "b"], {"train": 20, "test": 2})
    overrides = [item.replace("/path/to/EuroSAT_splits", str(splits)) for item in overrides]
    recipe = load_recipe(
        "clip-vit-b32/eurosat",
        [*overrides, f"data.control_dataset={control}", "data.control_test_split=test"],
    )
    data = build_unlearning_data(recipe.data)
    assert (len(data.forget_train), len(data.forget_val), len(data.forget_test)) == (30, 20, 20)
    # the OpenAI class names of the authors' EuroSAT code, in folder order
    assert data.class_names == [
        "annual crop land",
        "forest",
        "brushland or shrubland",
        "highway or road",
        "industrial buildings or commercial buildings",
        "pasture land",
        "permanent crop land",
        "residential buildings or homes or apartments",
        "river",
        "lake or sea",
    ]
    assert "validation split 'validation'" in data.validation_source


@pytest.mark.slow
def test_run_scores_the_control_set_with_the_recipe_control_head(tmp_path):
    """data.control_prompt_* reach the evaluation: θ₀'s control accuracy equals a direct check."""
    from hf_negmerge.data import build_unlearning_data, load_digits_dataset
    from hf_negmerge.evaluation import predict_dataset
    from hf_negmerge.models import ImageClassifier
    from hf_negmerge.pipeline import run_unlearning

    control_dir = tmp_path / "control"
    load_digits_dataset(seed=1).save_to_disk(str(control_dir))
    # words the tiny tokenizer knows (it is built from the forget prompts): the digits, reversed by id
    names = [str(digit) for digit in reversed(range(10))]
    templates = ["a {} digit."]
    recipe = recipe_from_dict(
        {
            "output_dir": str(tmp_path / "out"),
            "data": {
                "dataset": "digits",
                "scenario": "dataset",
                "control_dataset": str(control_dir),
                "control_prompt_names": names,
                "control_prompt_templates": templates,
                "max_samples": 300,
            },
            "model": {"architecture": "clip", "prompt_templates": ["a photo of a {}.", "a {} digit."]},
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
    (original_dir,) = list((tmp_path / "cache").iterdir())
    classifier = ImageClassifier.from_pretrained(original_dir)
    data = build_unlearning_data(recipe.data)
    classifier.zero_shot_head = independent_head(classifier, names, templates)
    expected = predict_dataset(classifier, data.control_test).accuracy()
    classifier.zero_shot_head = independent_head(
        classifier, data.control_class_names, recipe.model.prompt_templates
    )
    without = predict_dataset(classifier, data.control_test).accuracy()
    assert expected != pytest.approx(without)  # the control head's text changes the number
    assert outcome.original["control_accuracy"] == pytest.approx(expected)
