"""Checkpoint vs runtime tensor names: one canonical naming for task vectors, patterns in either.

transformers 5 renames ViT's modules on load; every expectation here is taken from the files
`save_pretrained` writes (the checkpoint names) and from `model.state_dict()` (the runtime
names), never from hf-negmerge's own translation.
"""

from __future__ import annotations

import copy
import fnmatch
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_clip, make_tiny_vit
from hf_negmerge import NegMergeConfig, TaskVector
from hf_negmerge.errors import CheckpointError, ConfigError
from hf_negmerge.hub import NegationVector
from hf_negmerge.key_space import KeyNames, checkpoint_state_dict
from hf_negmerge.merging import MergeAccumulator, merge_checkpoints, merge_task_vectors
from hf_negmerge.negation import unlearn

QUERY_DISK = "vit.encoder.layer.0.attention.attention.query.weight"
QUERY_RUNTIME = "vit.layers.0.attention.q_proj.weight"
CLASS_NAMES = [str(digit) for digit in range(10)]


def tuned_copy(model, seed: int, scale: float = 0.01):
    tuned = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return tuned


def negmerge_by_hand(vectors: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Unanimous non-zero sign → mean over runs, else 0 (float64)."""
    merged = {}
    for key in vectors[0]:
        stacked = torch.stack([vector[key].double() for vector in vectors])
        unanimous = stacked.sign().sum(0).abs() == len(vectors)
        merged[key] = torch.where(unanimous, stacked.mean(0), torch.zeros((), dtype=torch.float64))
    return merged


@pytest.fixture
def saved_vit(tmp_path):
    """A tiny ViT, two fine-tuned copies, all saved; returns (base model, tuned models, folders)."""
    base = make_tiny_vit(seed=0)
    tuned = [tuned_copy(base, seed) for seed in (1, 2, 3)]
    folders = []
    for index, model in enumerate([base, *tuned]):
        model.save_pretrained(tmp_path / f"m{index}")
        folders.append(tmp_path / f"m{index}")
    return base, tuned, folders


def test_tiny_vit_is_renamed_on_load(tmp_path):
    """The premise: live state_dict() names differ from the names written to disk."""
    model = make_tiny_vit()
    model.save_pretrained(tmp_path)
    on_disk = set(load_file(tmp_path / "model.safetensors"))
    runtime = set(model.state_dict())
    assert QUERY_DISK in on_disk and QUERY_RUNTIME in runtime
    assert QUERY_DISK not in runtime and QUERY_RUNTIME not in on_disk
    names = KeyNames.of(model)
    assert set(names.runtime) == on_disk and set(names.runtime.values()) == runtime
    assert names.runtime[QUERY_DISK] == QUERY_RUNTIME


def test_live_state_dicts_in_runtime_naming_give_checkpoint_keyed_vectors(saved_vit):
    base, (tuned, *_), folders = saved_vit
    disk_base = load_file(folders[0] / "model.safetensors")
    disk_tuned = load_file(folders[1] / "model.safetensors")
    expected = {key: disk_tuned[key].float() - disk_base[key].float() for key in disk_base}

    runtime_base, runtime_tuned = base.state_dict(), tuned.state_dict()
    assert QUERY_RUNTIME in runtime_base
    with_model = TaskVector.from_state_dicts(runtime_base, runtime_tuned, model=base)
    one_side_model = TaskVector.from_state_dicts(base, runtime_tuned)  # reference detected: `base`
    partial = TaskVector.from_state_dicts(
        dict(base.named_parameters()), dict(tuned.named_parameters()), model=base
    )
    for vector in (with_model, one_side_model, partial):
        assert set(vector.keys()) == set(expected)
        for key, value in expected.items():
            assert torch.equal(vector[key], value), key
    # checkpoint-named state dicts with the same reference: used as they are
    from_disk_dicts = TaskVector.from_state_dicts(disk_base, disk_tuned, model=base)
    assert all(torch.equal(from_disk_dicts[key], expected[key]) for key in expected)


def test_state_dict_naming_errors_are_named(saved_vit):
    base, (tuned, *_), _ = saved_vit
    mixed = dict(tuned.state_dict())
    mixed[QUERY_DISK] = mixed.pop(QUERY_RUNTIME)
    with pytest.raises(CheckpointError, match="mixes checkpoint names and runtime"):
        TaskVector.from_state_dicts(base.state_dict(), mixed, model=base)
    alien = {"not.a.tensor.of.vit": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"'not\.a\.tensor\.of\.vit'.*neither checkpoint nor runtime"):
        TaskVector.from_state_dicts(base.state_dict(), alien, model=base)


def test_runtime_named_vectors_merge_with_folder_vectors_like_an_all_folder_run(saved_vit):
    base, tuned, folders = saved_vit
    from_folders = [TaskVector.from_checkpoints(folders[0], folder) for folder in folders[1:]]
    live = [TaskVector.from_state_dicts(base.state_dict(), model.state_dict(), model=base) for model in tuned]
    mixed = [live[0], from_folders[1], live[2]]
    merged = merge_task_vectors(mixed, NegMergeConfig()).task_vector
    reference = merge_checkpoints(folders[0], folders[1:], NegMergeConfig(), progress=False).task_vector

    disk = [load_file(folder / "model.safetensors") for folder in folders]
    by_hand = negmerge_by_hand([{k: t[k].float() - disk[0][k].float() for k in disk[0]} for t in disk[1:]])
    assert set(merged.keys()) == set(reference.keys()) == set(by_hand)
    for key, value in by_hand.items():
        assert torch.equal(merged[key], reference[key]), key
        torch.testing.assert_close(merged[key].double(), value, rtol=1e-6, atol=1e-8)
        assert torch.equal(merged[key] != 0, value != 0)
    assert QUERY_DISK in merged

    # without a reference the keys stay runtime names, and the mismatch is named
    verbatim = TaskVector.from_state_dicts(base.state_dict(), tuned[0].state_dict())
    with pytest.raises(CheckpointError, match=r"covers different tensors.*model="):
        merge_task_vectors([from_folders[0], verbatim], NegMergeConfig())


def test_apply_to_models_and_state_dicts_in_either_naming(saved_vit):
    base, _, folders = saved_vit
    vector = TaskVector.from_checkpoints(folders[0], folders[1])
    disk_base = load_file(folders[0] / "model.safetensors")
    expected = {
        key: value - 0.5 * vector[key] if key in vector else value for key, value in disk_base.items()
    }

    on_checkpoint = vector.apply_to(disk_base, scale=-0.5)
    assert set(on_checkpoint) == set(disk_base)
    runtime = vector.apply_to(base.state_dict(), scale=-0.5, model=base)
    assert set(runtime) == set(base.state_dict())  # returned in the naming it was given
    model = vector.apply_to(copy.deepcopy(base), scale=-0.5)
    names = KeyNames.of(base).runtime
    for key, value in expected.items():
        torch.testing.assert_close(on_checkpoint[key], value, rtol=0, atol=1e-7)
        torch.testing.assert_close(runtime[names[key]], value, rtol=0, atol=1e-7)
        torch.testing.assert_close(model.state_dict()[names[key]], value, rtol=0, atol=1e-7)
    with pytest.raises(CheckpointError, match=r"no tensor 'vit\.encoder.*pass model="):
        vector.apply_to(base.state_dict(), scale=-0.5)
    unlearned = unlearn(base.state_dict(), vector, 0.5, model=base)
    negation = NegationVector.from_task_vector(vector, 0.5).apply_to(base.state_dict(), model=base)
    for name, value in runtime.items():
        assert torch.equal(unlearned[name], value) and torch.equal(negation[name], value), name


def test_image_classifier_is_read_through_its_transformers_model():
    from hf_negmerge.models import ModelConfig, build_classifier

    classifier = build_classifier(ModelConfig(architecture="vit"), CLASS_NAMES)
    tuned = copy.deepcopy(classifier)
    tuned.model = tuned_copy(classifier.model, seed=4)
    vector = TaskVector.from_models(classifier, tuned)
    assert set(vector.keys()) == set(TaskVector.from_models(classifier.model, tuned.model).keys())
    assert not any(key.startswith("model.") for key in vector)
    vector.apply_to(classifier, scale=1.0)
    for name, value in tuned.model.state_dict().items():
        torch.testing.assert_close(classifier.model.state_dict()[name], value)


# ---------------------------------------------------------------------------------------------
# include/exclude patterns


def _query_keys(keys):
    return {key for key in keys if ".attention.attention.query." in key}


def test_runtime_patterns_select_like_checkpoint_patterns_everywhere(saved_vit):
    base, tuned, folders = saved_vit
    runtime_pattern, disk_pattern = ["*.q_proj.*"], ["*.attention.attention.query.*"]
    assert not any(
        fnmatch.fnmatchcase(key, runtime_pattern[0]) for key in load_file(folders[0] / "model.safetensors")
    )

    def built(**patterns):
        return {
            "models": TaskVector.from_models(base, tuned[0], **patterns),
            "state dicts": TaskVector.from_state_dicts(
                base.state_dict(), tuned[0].state_dict(), model=base, **patterns
            ),
            "folders": TaskVector.from_checkpoints(folders[0], folders[1], **patterns),
            "merge_checkpoints": merge_checkpoints(
                folders[0], folders[1:], NegMergeConfig(**patterns), progress=False
            ).task_vector,
            "accumulator": merge_task_vectors(
                [TaskVector.from_checkpoints(folders[0], f) for f in folders[1:]],
                NegMergeConfig(**patterns),
                KeyNames.of(base),
            ).task_vector,
        }

    everything = TaskVector.from_checkpoints(folders[0], folders[1])
    for where, vector in built(include=runtime_pattern).items():
        assert set(vector.keys()) == _query_keys(everything.keys()) and len(vector) == 4, where
    for where, vector in built(exclude=runtime_pattern).items():
        reference = built(exclude=disk_pattern)[where]
        assert (
            set(vector.keys())
            == set(reference.keys())
            == set(everything.keys()) - _query_keys(everything.keys())
        ), where


@pytest.mark.parametrize("option", ["include", "exclude"])
def test_unmatched_pattern_is_an_error_showing_real_names(saved_vit, option):
    base, tuned, folders = saved_vit
    typo = {option: ["vit.embedings.*"]}
    close = r"matches no tensor of .*closest names: .*'vit\.embeddings\."
    message = rf"{option} pattern 'vit\.embedings\.\*' {close}"
    with pytest.raises(ConfigError, match=message):
        TaskVector.from_models(base, tuned[0], **typo)
    with pytest.raises(ConfigError, match=message):
        TaskVector.from_state_dicts(base.state_dict(), tuned[0].state_dict(), model=base, **typo)
    with pytest.raises(ConfigError, match=message):
        TaskVector.from_checkpoints(folders[0], folders[1], **typo)
    with pytest.raises(ConfigError, match=message):
        merge_checkpoints(folders[0], folders[1:], NegMergeConfig(**typo), progress=False)
    vectors = [TaskVector.from_checkpoints(folders[0], f) for f in folders[1:]]
    with pytest.raises(ConfigError, match=message):
        merge_task_vectors(vectors, NegMergeConfig(**typo), KeyNames.of(base))
    with pytest.raises(ConfigError, match=rf"{option} pattern .* task vector #1"):
        MergeAccumulator(NegMergeConfig(**typo)).add(vectors[0])
    # nothing close: the first real names are shown instead
    with pytest.raises(
        ConfigError, match=r"'zzz' matches no tensor .*first names: .*'vit\.embeddings\.cls_token'"
    ):
        TaskVector.from_models(base, tuned[0], **{option: ["zzz"]})


def test_merge_cli_takes_runtime_patterns_and_exits_2_on_an_unmatched_one(saved_vit, tmp_path, capsys):
    from hf_negmerge.cli import main

    _, _, folders = saved_vit
    common = ["merge", "--base", str(folders[0]), "--finetuned", *map(str, folders[1:]), "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "ok"), "--include", "*.q_proj.*"]) == 0
    merged = TaskVector.load(tmp_path / "ok" / "merged_task_vector.safetensors")
    assert set(merged.keys()) == _query_keys(load_file(folders[0] / "model.safetensors"))
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "typo"), "--exclude", "vit.embedings.*"]) == 2
    err = capsys.readouterr().err
    assert "error: exclude pattern 'vit.embedings.*' matches no tensor" in err and "'vit.embeddings." in err
    assert "Traceback" not in err and not (tmp_path / "typo").exists()


def test_patterns_are_checked_against_every_tensor_not_only_the_vectors():
    """An exclude naming only frozen or integer tensors is not 'unmatched': it matched, it just had no effect."""
    base = {"w": torch.ones(3), "step": torch.tensor(4)}
    tuned = {"w": torch.full((3,), 2.0), "step": torch.tensor(9)}
    vector = TaskVector.from_state_dicts(base, tuned, exclude=["step"])
    assert vector.keys() == ["w"]

    clip = make_tiny_clip()
    vision_only = {
        key: torch.ones_like(t)
        for key, t in checkpoint_state_dict(clip).items()
        if key.startswith("vision_model.")
    }
    config = NegMergeConfig(exclude=["text_model.*"])
    merged = merge_task_vectors([TaskVector(vision_only)] * 2, config, KeyNames.of(clip)).task_vector
    assert set(merged.keys()) == set(vision_only)
    with pytest.raises(ConfigError, match="'text_model\\.\\*' matches no tensor of task vector #1"):
        merge_task_vectors([TaskVector(vision_only)] * 2, config)  # no model: the vector is all there is


# ---------------------------------------------------------------------------------------------
# The grid runner and the pipeline resolve patterns with the base model's names


@pytest.fixture(scope="module")
def vit_grid(tmp_path_factory):
    """A 3-run grid on the digits forget set with fine-tuning replaced by seeded perturbations."""
    from hf_negmerge.data import DataConfig, build_unlearning_data
    from hf_negmerge.models import ModelConfig, build_classifier

    root = tmp_path_factory.mktemp("grid")
    data = build_unlearning_data(DataConfig(dataset="digits", scenario="class", forget_classes=[3]))
    build_classifier(ModelConfig(architecture="vit"), data.class_names).save_pretrained(root / "base")
    return data, root


def _fake_finetune(classifier, dataset, hyperparameters, **_):
    classifier.model = tuned_copy(classifier.model, seed=hyperparameters.seed + 10)
    return classifier


def test_grid_runner_takes_runtime_patterns_and_rejects_unmatched_ones_before_training(vit_grid, monkeypatch):
    from hf_negmerge.evaluation.engine import load_run_vectors
    from hf_negmerge.models import ImageClassifier
    from hf_negmerge.training import runner
    from hf_negmerge.training.grid import GridSpec

    data, root = vit_grid
    spec = GridSpec(base={"epochs": 1}, axes={"seed": [0, 1, 2]})
    calls = []
    monkeypatch.setattr(runner, "finetune", lambda *a, **k: calls.append(1))
    with pytest.raises(ConfigError, match=r"exclude pattern 'vit\.embedings\.\*' matches no tensor"):
        runner.run_grid(
            root / "base",
            data,
            spec,
            root / "typo",
            NegMergeConfig(exclude=["vit.embedings.*"]),
            progress=False,
        )
    assert calls == []

    monkeypatch.setattr(runner, "finetune", _fake_finetune)
    config = NegMergeConfig(exclude=["*.q_proj.*"])
    result = runner.run_grid(root / "base", data, spec, root / "grid", config, progress=False)
    run_vectors = [
        load_file(root / "grid" / "runs" / run_id / "task_vector.safetensors") for run_id in result.run_ids
    ]
    kept = [
        {k: v for k, v in vector.items() if ".attention.attention.query." not in k} for vector in run_vectors
    ]
    live = ImageClassifier.from_pretrained(root / "base").model
    queries = [name for name in live.state_dict() if fnmatch.fnmatchcase(name, "*.q_proj.*")]
    assert queries and len(kept[0]) == len(run_vectors[0]) - len(queries)
    by_hand = negmerge_by_hand(kept)
    assert set(result.task_vector.keys()) == set(by_hand)
    for key, value in by_hand.items():
        torch.testing.assert_close(result.task_vector[key].double(), value, rtol=1e-6, atol=1e-8)

    names = KeyNames.of(live)
    loaded = list(load_run_vectors(root / "grid", result.run_ids, config, names)())
    assert [set(vector.keys()) for vector in loaded] == [set(k) for k in kept]
    with pytest.raises(ConfigError, match=r"include pattern 'classifer\.\*'.*'classifier\."):
        next(
            load_run_vectors(root / "grid", result.run_ids, NegMergeConfig(include=["classifer.*"]), names)()
        )


# ---------------------------------------------------------------------------------------------
# The default recipe's exclude works for ViT and CLIP alike


def _default_exclude() -> list[str]:
    from hf_negmerge.recipe import load_recipe

    return load_recipe(None).merge.exclude


@pytest.mark.parametrize(
    ("architecture", "embeddings"),
    [
        (
            "vit",
            [
                "vit.embeddings.cls_token",
                "vit.embeddings.patch_embeddings.projection.bias",
                "vit.embeddings.patch_embeddings.projection.weight",
                "vit.embeddings.position_embeddings",
            ],
        ),
        (
            "clip",
            [
                "vision_model.embeddings.class_embedding",
                "vision_model.embeddings.patch_embedding.weight",
                "vision_model.embeddings.position_embedding.weight",
            ],
        ),
    ],
)
def test_default_exclude_leaves_out_the_embeddings_of_vit_and_clip(architecture, embeddings):
    from hf_negmerge.models import ModelConfig, build_classifier
    from hf_negmerge.outputs import _merged_tensors_line, finetuned_tensor_names

    classifier = build_classifier(ModelConfig(architecture=architecture), CLASS_NAMES)
    names = KeyNames.of(classifier.model)
    finetuned = finetuned_tensor_names(classifier)
    exclude = _default_exclude()
    selected = TaskVector.from_models(
        classifier, tuned_copy(classifier.model, seed=1), include=classifier.trainable_parameter_patterns()
    )
    accumulated = merge_task_vectors([selected] * 2, NegMergeConfig(exclude=exclude), names).task_vector
    left_out = sorted(set(finetuned) - set(accumulated.keys()))
    assert left_out == sorted(embeddings)
    if architecture == "vit":  # exactly what the old default left out: same numbers as before
        old = merge_task_vectors([selected] * 2, NegMergeConfig(exclude=["vit.embeddings.*"]), names)
        assert set(old.task_vector.keys()) == set(accumulated.keys())
    else:  # the old default named nothing of CLIP; now that is an error, not a silent no-op
        with pytest.raises(ConfigError, match=r"'vit\.embeddings\.\*' matches no tensor of CLIPModel"):
            merge_task_vectors([selected] * 2, NegMergeConfig(exclude=["vit.embeddings.*"]), names)

    line = _merged_tensors_line(NegMergeConfig(exclude=exclude), accumulated.keys(), finetuned)
    assert f"cover {len(finetuned) - len(embeddings)} of the {len(finetuned)} fine-tuned tensors" in line
    assert f"left out {len(embeddings)} (" in line and f"`{embeddings[0]}`" in line
    assert json.dumps(exclude).replace('"', "'") in line
