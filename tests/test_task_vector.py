"""TaskVector construction, key spaces, arithmetic, application and persistence."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_clip, make_tiny_vit
from hf_negmerge import TaskVector
from hf_negmerge.errors import CheckpointError
from hf_negmerge.key_space import checkpoint_state_dict


def perturbed(model, seed, scale=0.01, include=lambda name: True):
    tuned = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in tuned.named_parameters():
            if include(name):
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return tuned


def test_from_models_uses_checkpoint_key_space(tmp_path, tiny_vit):
    tuned = perturbed(tiny_vit, seed=1)
    vector = TaskVector.from_models(tiny_vit, tuned)
    tiny_vit.save_pretrained(tmp_path / "base")
    tuned.save_pretrained(tmp_path / "tuned")
    on_disk = load_file(tmp_path / "base" / "model.safetensors")
    assert set(vector.keys()) == set(on_disk)  # names as written by save_pretrained
    assert any(".attention.attention.query." in key for key in vector)
    from_disk = TaskVector.from_checkpoints(tmp_path / "base", tmp_path / "tuned")
    for key in vector:
        assert torch.equal(vector[key], from_disk[key])


def test_apply_to_live_model_matches_state_dict_path(tiny_vit):
    tuned = perturbed(tiny_vit, seed=2)
    vector = TaskVector.from_models(tiny_vit, tuned)
    expected = vector.apply_to(checkpoint_state_dict(tiny_vit), scale=-0.7)
    model = copy.deepcopy(tiny_vit)
    vector.apply_to(model, scale=-0.7)
    got = checkpoint_state_dict(model)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)
    # applying +1 to the base reproduces the fine-tuned weights
    restored = vector.apply_to(copy.deepcopy(tiny_vit), scale=1.0)
    for key, value in checkpoint_state_dict(tuned).items():
        torch.testing.assert_close(checkpoint_state_dict(restored)[key], value)


def test_frozen_parameters_give_exact_zeros(tiny_clip):
    tuned = perturbed(tiny_clip, seed=3, include=lambda name: name.startswith("vision_model."))
    vector = TaskVector.from_models(tiny_clip, tuned)
    for key, delta in vector.tensors.items():
        if key.startswith("vision_model."):
            assert delta.abs().sum() > 0, key
        else:
            assert torch.count_nonzero(delta) == 0, key
    only_vision = TaskVector.from_models(tiny_clip, tuned, include=["vision_model.*"])
    assert all(key.startswith("vision_model.") for key in only_vision)


def test_int_and_bool_tensors_are_not_entries_and_pass_through():
    base = {"w": torch.ones(3), "ids": torch.arange(3), "flag": torch.tensor([True, False])}
    tuned = {"w": torch.full((3,), 2.0), "ids": torch.arange(3) + 5, "flag": torch.tensor([False, False])}
    vector = TaskVector.from_state_dicts(base, tuned)
    assert vector.keys() == ["w"]
    applied = vector.apply_to(base, scale=-1.0)
    assert torch.equal(applied["ids"], base["ids"]) and torch.equal(applied["flag"], base["flag"])
    assert torch.equal(applied["w"], torch.zeros(3))


def test_arithmetic():
    a = TaskVector({"x": torch.tensor([1.0, -2.0])})
    b = TaskVector({"x": torch.tensor([0.5, 4.0])})
    assert (a + b)["x"].tolist() == [1.5, 2.0]
    assert (a - b)["x"].tolist() == [0.5, -6.0]
    assert (2 * a)["x"].tolist() == [2.0, -4.0]
    assert (a * 0.5)["x"].tolist() == [0.5, -1.0]
    assert (-a)["x"].tolist() == [-1.0, 2.0]
    assert a.norm() == pytest.approx(5**0.5)
    with pytest.raises(CheckpointError, match="different tensors"):
        a + TaskVector({"y": torch.zeros(2)})


def test_bf16_checkpoints_are_differenced_in_float32(tmp_path, tiny_vit):
    tuned = perturbed(tiny_vit, seed=4)
    tiny_vit.to(torch.bfloat16).save_pretrained(tmp_path / "base")
    tuned.to(torch.bfloat16).save_pretrained(tmp_path / "tuned")
    vector = TaskVector.from_checkpoints(tmp_path / "base", tmp_path / "tuned")
    base = load_file(tmp_path / "base" / "model.safetensors")
    tuned_disk = load_file(tmp_path / "tuned" / "model.safetensors")
    for key in vector:
        assert vector[key].dtype == torch.float32
        assert torch.equal(vector[key], tuned_disk[key].float() - base[key].float())


def test_save_load_round_trip(tmp_path):
    vector = TaskVector(
        {"a": torch.randn(3, 2), "b": torch.randn(4)}, metadata={"method": "negmerge", "n": 3}
    )
    path = vector.save(tmp_path / "tv.safetensors")
    loaded = TaskVector.load(path)
    assert loaded.metadata == {"method": "negmerge", "n": 3}
    assert all(torch.equal(loaded[k], vector[k]) for k in vector)


def test_mismatches_are_named(tmp_path, tiny_vit):
    other = make_tiny_vit(num_labels=3)
    with pytest.raises(CheckpointError, match=r"classifier\.(weight|bias).*shape"):
        TaskVector.from_models(tiny_vit, other)
    with pytest.raises(CheckpointError, match="missing"):
        TaskVector.from_state_dicts({"a": torch.zeros(2)}, {"b": torch.zeros(2)})
    bad = {"a": torch.tensor([0.0, float("nan")])}
    with pytest.raises(CheckpointError, match="'a' contains NaN"):
        TaskVector.from_state_dicts({"a": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match=r"has no tensor"):
        TaskVector.from_models(tiny_vit, perturbed(tiny_vit, 1)).apply_to(make_tiny_clip())


def test_from_lora_is_dense_delta_w():
    from peft import LoraConfig, get_peft_model

    base = make_tiny_vit(seed=5)
    peft_model = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():  # LoRA B starts at zero; give it values so ΔW is non-trivial
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    vector = TaskVector.from_lora(base, peft_model)
    layer = peft_model.base_model.model.vit.layers[0].attention.q_proj
    expected = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight) * layer.scaling["default"]
    key = "vit.encoder.layer.0.attention.attention.query.weight"
    torch.testing.assert_close(vector[key], expected, rtol=1e-5, atol=1e-6)
    untouched = "vit.encoder.layer.0.attention.attention.key.weight"
    assert torch.count_nonzero(vector[untouched]) == 0
    # the same from an adapter folder
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        peft_model.save_pretrained(folder)
        from_folder = TaskVector.from_lora(base, folder)
    torch.testing.assert_close(from_folder[key], vector[key])


def test_saved_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    path = TaskVector({"a": torch.zeros(2)}).save(tmp_path / "tv.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
