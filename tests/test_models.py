"""Models stage: CLIP zero-shot head, ViT classifier, trainable parts, save/load, LoRA, Hub errors.

Every expectation is computed another way: the head and logits by calling the towers directly,
the fine-tuned part by diffing checkpoint files written before and after a real optimiser step,
LoRA's dense ΔW as scaling · B @ A from the adapter matrices.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, ViTForImageClassification

from hf_negmerge.errors import CheckpointError, ConfigError, HubUnavailableError
from hf_negmerge.models import (
    CLASSIFIER_METADATA_FILE,
    CLASSIFIER_REGISTRY,
    CLIPZeroShotClassifier,
    ImageClassifier,
    ModelConfig,
    ViTClassifier,
    apply_lora,
    build_classifier,
    merge_lora,
    prompt_templates_for,
)
from hf_negmerge.models.templates import PROMPT_TEMPLATE_SETS
from hf_negmerge.task_vector import TaskVector

CLASSES = ["zero", "one", "two", "three"]
TEMPLATES = ["a photo of a {}.", "a drawing of the digit {}.", "{}"]


@functools.cache
def _built(architecture: str, options: tuple[tuple[str, object], ...]) -> ImageClassifier:
    if architecture == "clip":
        return build_classifier(
            ModelConfig(architecture="clip", prompt_templates=TEMPLATES, **dict(options)), CLASSES
        )
    tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    return build_classifier(ModelConfig(architecture="vit", tiny=tiny, **dict(options)), CLASSES)


def tiny_clip(**options) -> CLIPZeroShotClassifier:
    """A fresh copy of a tiny CLIP classifier (built once per option set to keep the file fast)."""
    return copy.deepcopy(_built("clip", tuple(sorted(options.items()))))


def tiny_vit(**options) -> ViTClassifier:
    return copy.deepcopy(_built("vit", tuple(sorted(options.items()))))


def batch(seed: int = 0, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(size, 3, 16, 16, generator=generator)
    labels = torch.arange(size) % len(CLASSES)
    return pixels, labels


def training_step(classifier: ImageClassifier, lr: float = 1e-2) -> None:
    """One AdamW step on cross-entropy: every parameter with a gradient moves by about lr."""
    pixels, labels = batch()
    classifier.train()
    trainable = [parameter for parameter in classifier.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    F.cross_entropy(classifier(pixels), labels).backward()
    optimizer.step()
    classifier.eval()


def checkpoint_tensors(model, folder: Path) -> dict[str, torch.Tensor]:
    """The tensors as written to disk by save_pretrained (checkpoint key space)."""
    model.save_pretrained(folder)
    return load_file(str(folder / "model.safetensors"))


def changed_keys(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    assert before.keys() == after.keys()
    return {key for key in before if not torch.equal(before[key], after[key])}


def matching_keys(keys, patterns: list[str]) -> set[str]:
    return {key for key in keys if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)}


# ----- CLIP zero-shot head ---------------------------------------------------------------------


def independent_head(clip: CLIPModel, tokenizer, class_names, templates) -> torch.Tensor:
    """Embed each prompt alone, pool at its EOS token by hand, project, normalise, average, normalise."""
    rows = []
    with torch.no_grad():
        for name in class_names:
            embeddings = []
            for template in templates:
                ids = torch.tensor([tokenizer(template.replace("{}", name))["input_ids"]])
                assert ids[0, -1].item() == tokenizer.eos_token_id
                hidden = clip.text_model(input_ids=ids).last_hidden_state[0, -1]
                embedding = clip.text_projection(hidden)
                embeddings.append(embedding / embedding.norm())
            mean = torch.stack(embeddings).mean(dim=0)
            rows.append(mean / mean.norm())
    return torch.stack(rows)


def test_clip_head_equals_independent_recomputation():
    classifier = tiny_clip()
    expected = independent_head(classifier.model, classifier.tokenizer, CLASSES, TEMPLATES)
    assert classifier.zero_shot_head.shape == (len(CLASSES), classifier.model.config.projection_dim)
    torch.testing.assert_close(classifier.zero_shot_head, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(classifier.zero_shot_head.norm(dim=-1), torch.ones(len(CLASSES)))
    # Different classes get different rows (the head actually depends on the class names).
    assert torch.cdist(expected, expected).triu(diagonal=1).max() > 0


def test_clip_logits_follow_the_zero_shot_formula():
    classifier = tiny_clip()
    pixels, _ = batch()
    clip = classifier.model
    with torch.no_grad():
        pooled = clip.vision_model(pixel_values=pixels).pooler_output
        features = clip.visual_projection(pooled)
        features = features / features.norm(dim=-1, keepdim=True)
        expected = clip.logit_scale.exp() * features @ classifier.zero_shot_head.T
        logits = classifier(pixels)
    assert logits.shape == (len(pixels), len(CLASSES))
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_vision_tower_changes_predictions_but_not_the_head():
    classifier = tiny_clip()
    pixels, _ = batch()
    head = classifier.zero_shot_head.clone()
    logits = classifier(pixels).detach()
    text_state = {k: v.clone() for k, v in classifier.model.text_model.state_dict().items()}
    training_step(classifier, lr=5e-2)
    assert not torch.allclose(classifier(pixels).detach(), logits)
    assert torch.equal(classifier.zero_shot_head, head)
    for key, value in classifier.model.text_model.state_dict().items():
        assert torch.equal(value, text_state[key]), f"text tower tensor {key} changed"
    classifier.rebuild_head()  # same text tower -> same head
    torch.testing.assert_close(classifier.zero_shot_head, head, rtol=0, atol=0)


def test_rebuild_head_follows_a_changed_text_tower():
    classifier = tiny_clip()
    head = classifier.zero_shot_head.clone()
    with torch.no_grad():
        classifier.model.text_projection.weight.mul_(-1.0)
    assert torch.equal(classifier.zero_shot_head, head)  # a buffer: not recomputed by itself
    classifier.rebuild_head()
    torch.testing.assert_close(classifier.zero_shot_head, -head)


def test_set_class_names_builds_the_head_for_the_new_label_set():
    classifier = tiny_clip()
    classifier.set_class_names(["two", "zero"])
    expected = independent_head(classifier.model, classifier.tokenizer, ["two", "zero"], TEMPLATES)
    torch.testing.assert_close(classifier.zero_shot_head, expected, rtol=1e-5, atol=1e-6)
    assert classifier(batch()[0]).shape[-1] == 2
    with pytest.raises(ConfigError, match="cannot switch label sets"):
        tiny_vit().set_class_names(["a", "b"])


# ----- fine-tuned part -------------------------------------------------------------------------


def test_clip_trains_the_authors_set_by_default_and_the_whole_vision_tower_when_asked():
    attention = re.compile(r"\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.")
    classifier = tiny_clip()  # the authors' trained set: vision tower minus attention, plus projection
    assert (classifier.config.freeze_attention, classifier.config.train_projection) == (True, True)
    trainable = {name for name, p in classifier.model.named_parameters() if p.requires_grad}
    everything = {name for name, _ in classifier.model.named_parameters()}
    assert trainable == {
        name
        for name in everything
        if (name.startswith("vision_model.") and not attention.search(name))
        or name.startswith("visual_projection.")
    }
    whole = tiny_clip(freeze_attention=False, train_projection=False)
    trainable = {name for name, p in whole.model.named_parameters() if p.requires_grad}
    assert trainable == {name for name in everything if name.startswith("vision_model.")}
    vit = tiny_vit()
    assert all(p.requires_grad for p in vit.model.parameters())
    assert (vit.config.freeze_attention, vit.config.train_projection) == (False, False)


def test_freeze_attention_freezes_visual_attention_projections(tmp_path):
    classifier = tiny_clip(freeze_attention=True, train_projection=False)
    attention = {
        name: parameter
        for name, parameter in classifier.model.named_parameters()
        if name.startswith("vision_model.") and ".self_attn." in name
    }
    layers = classifier.model.config.vision_config.num_hidden_layers
    assert len(attention) == layers * 4 * 2  # q/k/v/out, weight and bias
    assert not any(parameter.requires_grad for parameter in attention.values())
    before = {name: parameter.detach().clone() for name, parameter in classifier.model.named_parameters()}
    training_step(classifier)
    after = dict(classifier.model.named_parameters())
    for name in attention:
        assert torch.equal(after[name], before[name]), name
    moved = {name for name in before if not torch.equal(after[name], before[name])}
    assert moved and all(name.startswith("vision_model.") and ".self_attn." not in name for name in moved)
    assert any(".mlp." in name for name in moved)


@pytest.mark.parametrize(
    ("architecture", "options"),
    [
        ("clip", {}),
        ("clip", {"freeze_attention": True}),
        ("clip", {"train_projection": True}),
        ("vit", {}),
    ],
)
def test_trainable_patterns_are_exactly_the_tensors_a_step_changes(tmp_path, architecture, options):
    classifier = tiny_clip(**options) if architecture == "clip" else tiny_vit(**options)
    base_model = copy.deepcopy(classifier.model)
    before = checkpoint_tensors(classifier.model, tmp_path / "before")
    training_step(classifier)
    after = checkpoint_tensors(classifier.model, tmp_path / "after")
    changed = changed_keys(before, after)
    patterns = classifier.trainable_parameter_patterns()
    assert changed == matching_keys(before, patterns)
    # Peer oracle: the task vector the training stage builds with these patterns covers exactly them.
    task_vector = TaskVector.from_models(base_model, classifier.model, include=patterns)
    assert set(task_vector.keys()) == changed
    assert all(task_vector.tensors[key].count_nonzero() > 0 for key in changed)
    if architecture == "vit":  # checkpoint names, not transformers 5's runtime names
        assert any(".attention.attention.query." in key for key in changed)
        assert not any("q_proj" in key for key in before)


def test_tiny_models_are_seeded():
    def build(seed: int) -> ImageClassifier:  # built afresh, not from the test cache
        return build_classifier(ModelConfig(architecture="vit", init_seed=seed), CLASSES)

    torch.manual_seed(123)
    first = build(0)
    torch.manual_seed(456)  # the global RNG state must not matter
    again, other = build(0), build(1)
    first_state, other_state = first.model.state_dict(), other.model.state_dict()
    for key, value in again.model.state_dict().items():
        assert torch.equal(value, first_state[key])
    assert any(not torch.equal(value, other_state[key]) for key, value in first_state.items())


# ----- save / load -----------------------------------------------------------------------------


def test_clip_round_trip_and_plain_transformers_loading(tmp_path):
    classifier = tiny_clip(freeze_attention=True)
    training_step(classifier)
    pixels, _ = batch(seed=3)
    classifier.save_pretrained(tmp_path / "clip")
    loaded = ImageClassifier.from_pretrained(tmp_path / "clip")
    assert isinstance(loaded, CLIPZeroShotClassifier)
    assert loaded.class_names == CLASSES
    assert loaded.config.prompt_templates == TEMPLATES and loaded.config.freeze_attention
    assert torch.equal(loaded(pixels), classifier(pixels))
    assert torch.equal(loaded.zero_shot_head, classifier.zero_shot_head)

    plain = CLIPModel.from_pretrained(tmp_path / "clip")
    for key, value in classifier.model.state_dict().items():
        assert torch.equal(plain.state_dict()[key], value), key
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "clip")
    prompts = [t.replace("{}", c) for t in TEMPLATES for c in CLASSES]
    assert tokenizer(prompts)["input_ids"] == classifier.tokenizer(prompts)["input_ids"]
    assert tokenizer.eos_token_id == plain.config.text_config.eos_token_id != 2
    assert tokenizer.bos_token_id == plain.config.text_config.bos_token_id
    assert tokenizer.pad_token_id == plain.config.text_config.pad_token_id
    processor = AutoImageProcessor.from_pretrained(tmp_path / "clip")
    images = digit_images()
    assert torch.equal(
        processor(images=images, return_tensors="pt")["pixel_values"], classifier.preprocess(images)
    )


def test_vit_round_trip_and_plain_transformers_loading(tmp_path):
    classifier = tiny_vit()
    training_step(classifier)
    pixels, _ = batch(seed=3)
    classifier.save_pretrained(tmp_path / "vit")
    loaded = ViTClassifier.from_pretrained(tmp_path / "vit")
    assert loaded.class_names == CLASSES
    assert torch.equal(loaded(pixels), classifier(pixels))
    plain = ViTForImageClassification.from_pretrained(tmp_path / "vit")
    assert plain.config.id2label == dict(enumerate(CLASSES))
    with torch.no_grad():
        assert torch.equal(plain(pixel_values=pixels).logits, classifier(pixels))


def test_save_replaces_folder_atomically_and_loading_checks_architecture(tmp_path):
    folder = tmp_path / "model"
    tiny_clip().save_pretrained(folder)
    vit = tiny_vit()
    vit.save_pretrained(folder)  # overwrite: no CLIP leftovers (tokenizer) remain
    assert not (folder / "tokenizer.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folders left behind
    with pytest.raises(CheckpointError, match="'vit' classifier, not 'clip'"):
        CLIPZeroShotClassifier.from_pretrained(folder)
    (folder / CLASSIFIER_METADATA_FILE).unlink()
    with pytest.raises(CheckpointError, match="build_classifier"):
        ImageClassifier.from_pretrained(folder)


def test_local_folder_as_pretrained_source(tmp_path):
    """name_or_path = a local folder goes through the real-model path (from_pretrained)."""
    clip = tiny_clip()
    clip.save_pretrained(tmp_path / "clip")
    reloaded = build_classifier(
        ModelConfig(name_or_path=str(tmp_path / "clip"), prompt_templates=TEMPLATES), ["three", "one"]
    )
    clip.set_class_names(["three", "one"])
    torch.testing.assert_close(reloaded.zero_shot_head, clip.zero_shot_head, rtol=0, atol=0)
    assert reloaded.config.image_size == 16

    vit = tiny_vit()
    vit.save_pretrained(tmp_path / "vit")
    new_labels = ["cat", "dog", "bird", "fish", "frog", "deer"]
    with pytest.raises(ConfigError, match=r"head for \d+ labels"):  # labels differ: no silent new head
        build_classifier(ModelConfig(architecture="vit", name_or_path=str(tmp_path / "vit")), new_labels)
    grown = build_classifier(
        ModelConfig(architecture="vit", name_or_path=str(tmp_path / "vit"), replace_head=True), new_labels
    )
    assert grown(batch()[0]).shape == (8, len(new_labels))
    assert grown.model.config.id2label == dict(enumerate(new_labels))
    backbone = {k: v for k, v in vit.model.state_dict().items() if not k.startswith("classifier.")}
    for key, value in backbone.items():
        assert torch.equal(grown.model.state_dict()[key], value), key


def digit_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((8, 8)) * 255).astype("uint8"), mode="L") for _ in range(3)]


@pytest.mark.parametrize("architecture", ["clip", "vit"])
def test_preprocess_gives_model_sized_rgb_tensors(architecture):
    classifier = tiny_clip() if architecture == "clip" else tiny_vit()
    pixels = classifier.preprocess(digit_images())
    assert pixels.shape == (3, 3, 16, 16) and pixels.dtype == torch.float32
    # Grey images become three identical channels before per-channel normalisation.
    mean = torch.tensor(classifier.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(classifier.image_processor.image_std).view(1, 3, 1, 1)
    unnormalised = pixels * std + mean
    torch.testing.assert_close(unnormalised[:, 0], unnormalised[:, 1], rtol=0, atol=1e-5)
    assert classifier(pixels).shape == (3, len(CLASSES))


# ----- LoRA ------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["clip", "vit"])
def test_lora_trains_only_adapters_and_merges_to_scaling_b_a(tmp_path, architecture):
    classifier = tiny_clip(freeze_attention=False) if architecture == "clip" else tiny_vit()
    base = checkpoint_tensors(classifier.model, tmp_path / "base")
    rank, alpha = 2, 8.0
    apply_lora(classifier, rank=rank, alpha=alpha)
    trainable = {name for name, p in classifier.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    if architecture == "clip":
        assert all(".vision_model." in name for name in trainable)  # never the text tower
    frozen_before = {
        n: p.detach().clone() for n, p in classifier.model.named_parameters() if not p.requires_grad
    }
    lora_before = {n: p.detach().clone() for n, p in classifier.model.named_parameters() if p.requires_grad}
    training_step(classifier)
    training_step(classifier)  # lora_B starts at zero, so lora_A first moves on the second step
    for name, parameter in classifier.model.named_parameters():
        if name in frozen_before:
            assert torch.equal(parameter, frozen_before[name]), name
        else:
            assert not torch.equal(parameter, lora_before[name]), name

    expected_delta = {}
    for name, module in classifier.model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            expected_delta[name] = (alpha / rank) * (b @ a).detach()
    # Default targets: every Linear of every (vision) block, six per block, and nothing else.
    blocks = (
        classifier.clip_model.config.vision_config if architecture == "clip" else classifier.model.config
    ).num_hidden_layers
    attention_out = "out_proj" if architecture == "clip" else "o_proj"
    assert len(expected_delta) == 6 * blocks
    assert {name.rsplit(".", 1)[-1] for name in expected_delta} == {
        "q_proj",
        "k_proj",
        "v_proj",
        attention_out,
        "fc1",
        "fc2",
    }
    pixels, _ = batch(seed=5)
    lora_logits = classifier(pixels).detach()

    merged = merge_lora(classifier)
    assert classifier.model is merged and not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(classifier(pixels), lora_logits, rtol=1e-4, atol=1e-5)
    merged_tensors = checkpoint_tensors(merged, tmp_path / "merged")
    assert merged_tensors.keys() == base.keys()
    # Map each adapted runtime module to its weight in checkpoint key space via the live tensor.
    runtime = dict(merged.named_parameters())
    changed = changed_keys(base, merged_tensors)
    assert len(changed) == len(expected_delta)
    for module_name, delta in expected_delta.items():
        runtime_name = module_name.removeprefix("base_model.model.") + ".weight"
        checkpoint_name = next(
            k for k in changed if torch.equal(merged_tensors[k], runtime[runtime_name].detach())
        )
        torch.testing.assert_close(
            merged_tensors[checkpoint_name] - base[checkpoint_name], delta, rtol=1e-4, atol=1e-6
        )


def test_lora_rejects_frozen_or_unknown_targets_and_unmerged_saves(tmp_path):
    with pytest.raises(ConfigError, match=r"\['q_proj'\].*choose from \['fc1', 'fc2'"):
        apply_lora(tiny_clip(freeze_attention=True), rank=2, alpha=2.0, target_modules=["q_proj"])
    defaults = tiny_clip(freeze_attention=True)  # the default targets skip the frozen attention
    apply_lora(defaults, rank=2, alpha=2.0)
    adapted = {
        n.split(".lora_")[0].rsplit(".", 1)[-1]
        for n, p in defaults.model.named_parameters()
        if p.requires_grad
    }
    assert adapted == {"fc1", "fc2"}
    classifier = tiny_clip(freeze_attention=True)
    apply_lora(classifier, rank=2, alpha=2.0, target_modules=["fc1"])
    assert all(".mlp.fc1." in n for n, p in classifier.model.named_parameters() if p.requires_grad)
    with pytest.raises(ConfigError, match="merge_lora"):
        classifier.save_pretrained(tmp_path / "x")
    with pytest.raises(ConfigError, match="rank"):
        apply_lora(tiny_vit(), rank=0, alpha=1.0)
    with pytest.raises(ConfigError, match="no LoRA adapters"):
        merge_lora(tiny_vit())


def test_apply_lora_does_not_pass_on_peft_deprecation_noise():
    """peft's read of a renamed transformers property warned once per grid run; users cannot act on it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_lora(tiny_vit(), rank=2, alpha=2.0)


# ----- configuration and Hub -------------------------------------------------------------------


def test_registry_and_config_validation():
    assert set(CLASSIFIER_REGISTRY) >= {"clip", "vit", "resnet"}
    with pytest.raises(ConfigError, match="not registered"):
        ModelConfig(architecture="convnext")
    with pytest.raises(ConfigError, match="exactly one"):
        ModelConfig(prompt_templates=["a photo"])
    with pytest.raises(ConfigError, match="tiny"):
        ModelConfig(name_or_path="openai/clip-vit-base-patch32", tiny={"hidden_size": 8})
    with pytest.raises(ConfigError, match="Unknown ModelConfig key"):
        ModelConfig.from_dict({"architecture": "vit", "hidden": 3})
    with pytest.raises(ConfigError, match="hidden_sise"):
        build_classifier(ModelConfig(tiny={"hidden_sise": 8}), CLASSES)
    with pytest.raises(ConfigError, match="CLIP only"):
        build_classifier(ModelConfig(architecture="vit", freeze_attention=True), CLASSES)
    with pytest.raises(ConfigError, match="duplicates"):
        build_classifier(ModelConfig(), ["a", "a"])


def test_offline_hub_id_fails_fast_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match=r"openai/clip-vit-base-patch32.*local folder"):
        build_classifier(ModelConfig(name_or_path="openai/clip-vit-base-patch32"), CLASSES)
    # No offline flag, but the endpoint refuses connections: detected by the probe, not by retries.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubUnavailableError, match="google/vit-base-patch16-224"):
        ImageClassifier.from_pretrained("google/vit-base-patch16-224")


def test_missing_local_folder_is_a_checkpoint_error(tmp_path):
    missing = os.path.join(tmp_path, "nope")
    with pytest.raises(CheckpointError, match="does not exist"):
        build_classifier(ModelConfig(name_or_path=missing), CLASSES)


def test_dataset_prompt_sets_are_valid_and_looked_up_by_name():
    for name, templates in PROMPT_TEMPLATE_SETS.items():
        assert ModelConfig(prompt_templates=templates).prompt_templates == templates
        assert len(set(templates)) == len(templates), f"{name} repeats a template"
    assert prompt_templates_for("EuroSAT") == prompt_templates_for("eurosat")
    assert prompt_templates_for("stanford_cars") == PROMPT_TEMPLATE_SETS["cars"]
    assert "a centered satellite photo of the {}." in prompt_templates_for("eurosat")
    assert len(prompt_templates_for("resisc45")) == 18 and len(prompt_templates_for("dtd")) == 8
    assert len(prompt_templates_for("ImageNet")) == 80  # the control set's own (OpenAI's) ensemble
    with pytest.raises(ConfigError, match="cifar10"):
        prompt_templates_for("cifar10")


def test_offline_hub_id_loads_from_the_local_hub_cache(monkeypatch, tmp_path):
    """Offline but pre-downloaded: the id resolves to the cached snapshot without any network."""
    clip = tiny_clip()
    repo = tmp_path / "models--someorg--tiny-clip"
    clip.save_pretrained(repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    loaded = ImageClassifier.from_pretrained("someorg/tiny-clip")
    pixels, _ = batch()
    assert torch.equal(loaded(pixels), clip(pixels))
    with pytest.raises(HubUnavailableError, match="someorg/not-cached"):
        build_classifier(ModelConfig(name_or_path="someorg/not-cached"), CLASSES)


def test_eos_pooling_matches_legacy_argmax_pooling_and_mismatch_is_refused(tmp_path):
    """Tiny tokenizers put EOS at the largest id, so transformers' legacy argmax pooling
    (text config eos_token_id == 2, as in OpenAI's CLIP configs) pools the same token."""
    classifier = tiny_clip()
    head = classifier.zero_shot_head.clone()
    classifier.model.text_model.eos_token_id = 2
    classifier.rebuild_head()
    torch.testing.assert_close(classifier.zero_shot_head, head, rtol=0, atol=0)

    folder = tmp_path / "clip"
    tiny_clip().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["eos_token_id"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="eos_token_id=5"):
        ImageClassifier.from_pretrained(folder)


def test_weights_load_as_float32_unless_asked_otherwise(tmp_path):
    half = build_classifier(ModelConfig(architecture="vit", dtype="float16"), CLASSES)
    assert half.model.dtype == torch.float16
    half.save_pretrained(tmp_path / "half")
    assert load_file(str(tmp_path / "half" / "model.safetensors"))["classifier.weight"].dtype == torch.float16
    loaded = ImageClassifier.from_pretrained(tmp_path / "half")
    assert loaded.model.dtype == torch.float32
    assert ImageClassifier.from_pretrained(tmp_path / "half", dtype="auto").model.dtype == torch.float16
    with pytest.raises(ConfigError, match="dtype"):
        ModelConfig(dtype="fp8")
