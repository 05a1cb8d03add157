"""Training stage: grid spec, the fine-tuning loop and the resumable grid runner (augmentation: test_augment.py)."""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import re

import pytest
import torch

from hf_negmerge.errors import ConfigError
from hf_negmerge.training.grid import (
    GridPoint,
    GridSpec,
    TrainingHyperparameters,
    as_grid_points,
    available_grid_presets,
    grid_preset,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models train fastest single-threaded; extra threads only fight other processes for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Grid spec


def test_clip_randaugment_preset_is_the_papers_30_point_pool():
    points = grid_preset("clip_randaugment").expand()
    assert len(points) == 30
    pairs = {(p.hyperparameters.randaugment_magnitude, p.hyperparameters.randaugment_num_ops) for p in points}
    assert pairs == set(itertools.product(range(1, 11), range(1, 4)))
    for point in points:
        h = point.hyperparameters
        assert (h.learning_rate, h.weight_decay, h.warmup_steps, h.scheduler) == (1e-5, 0.1, 500, "cosine")
        assert (h.grad_clip, h.batch_size, h.label_smoothing, h.lora_rank) == (1.0, 128, 0.0, None)
    assert len({p.id for p in points}) == 30


def test_standard_preset_is_the_papers_27_point_pool():
    points = grid_preset("standard", learning_rate=3e-4).expand()
    triples = {
        (p.hyperparameters.epochs, p.hyperparameters.weight_decay, p.hyperparameters.label_smoothing)
        for p in points
    }
    assert triples == set(itertools.product([40, 50, 60], [1e-4, 5e-5, 1e-5], [0.0, 0.05, 0.1]))
    assert all(p.hyperparameters.learning_rate == 3e-4 for p in points)
    assert set(available_grid_presets()) >= {"clip_randaugment", "standard"}


def test_point_id_is_readable_prefix_plus_hash_of_canonical_json():
    point = GridSpec(
        base=TrainingHyperparameters(), axes={"randaugment_magnitude": [3], "randaugment_num_ops": [2]}
    ).expand()[0]
    expected_json = json.dumps(point.hyperparameters.to_dict(), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(expected_json.encode()).hexdigest()[:6]
    assert point.id == f"ra-m3-n2-{digest}"
    assert re.fullmatch(r"[A-Za-z0-9.+-]+", point.id)


def test_point_id_is_stable_and_sensitive_to_every_hyperparameter():
    base = TrainingHyperparameters()
    reference = GridPoint(base).id
    assert GridPoint(TrainingHyperparameters()).id == reference
    # ints and floats that are equal give the same id (values are normalised before hashing)
    assert GridPoint(base.replace(weight_decay=0.1, epochs=1.0)).id == reference
    changes = {
        "learning_rate": 2e-5,
        "epochs": 2,
        "weight_decay": 0.0,
        "label_smoothing": 0.1,
        "warmup_steps": 10,
        "scheduler": "linear",
        "batch_size": 64,
        "grad_clip": None,
        "gradient_accumulation_steps": 2,
        "seed": 1,
        "mixed_precision": "bf16",
    }
    ids = {GridPoint(base.replace(**{name: value})).id for name, value in changes.items()}
    ids.add(GridPoint(base.replace(randaugment_magnitude=2, randaugment_num_ops=1)).id)
    ids.add(GridPoint(base.replace(lora_rank=4)).id)
    assert reference not in ids and len(ids) == len(changes) + 2


def test_explicit_points_and_round_trips():
    spec = GridSpec(
        base={"epochs": 2, "warmup_steps": 0},
        points=[{"learning_rate": 1e-3}, {"learning_rate": 1e-4, "seed": 3}],
    )
    points = spec.expand()
    assert [p.hyperparameters.learning_rate for p in points] == [1e-3, 1e-4]
    assert points[1].hyperparameters.seed == 3 and points[1].hyperparameters.epochs == 2
    assert [p.id for p in GridSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).expand()] == [
        p.id for p in points
    ]
    assert [p.id for p in as_grid_points([p.to_dict() for p in points])] == [p.id for p in points]
    assert len(GridSpec().expand()) == 1
    assert len(GridSpec.from_dict({"preset": "clip_randaugment", "base": {"epochs": 40}})) == 30


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"axes": {"lr": [1e-3]}}, "axis 'lr'"),
        ({"axes": {"epochs": [1, 0]}}, "epochs=0"),
        ({"axes": {"epochs": []}}, "axis 'epochs' has no values"),
        ({"axes": {"epochs": [1, 1]}}, "repeats a value"),
        ({"axes": {"epochs": [1]}, "points": [{}]}, "not both"),
        ({"points": [{"seed": 1}, {"seed": 1}]}, "identical hyperparameters"),
        ({"points": [{"epoch": 3}]}, "points[0]: unknown hyperparameter(s) ['epoch']"),
        ({"axes": {"randaugment_magnitude": [3]}}, "randaugment_num_ops go together"),
        ({"axes": {"randaugment_magnitude": [11], "randaugment_num_ops": [1]}}, "randaugment_magnitude=11"),
        ({"points": [{"lora_alpha": 8.0}]}, "lora_alpha is set but lora_rank is None"),
        ({"points": [{"mixed_precision": "fp8"}]}, "mixed_precision='fp8'"),
        ({"points": [{"label_smoothing": 1.0}]}, "label_smoothing=1.0"),
    ],
)
def test_grid_validation_names_the_problem(kwargs, message):
    with pytest.raises(ConfigError) as error:
        GridSpec(**kwargs)
    assert message in str(error.value)


def test_unknown_preset_and_duplicate_ids_are_rejected():
    with pytest.raises(ConfigError, match="Unknown grid preset 'cifar'"):
        grid_preset("cifar")
    point = GridPoint(TrainingHyperparameters())
    with pytest.raises(ConfigError, match="more than once"):
        as_grid_points([point, point])


# ---------------------------------------------------------------------------------------------
# End-to-end on the built-in digits with tiny models (untrained θ₀: these tests check mechanics)

FAST = {"epochs": 1, "warmup_steps": 0, "batch_size": 32, "learning_rate": 1e-3, "weight_decay": 0.0}
_ATTENTION = re.compile(r"self_attn\.(q_proj|k_proj|v_proj|out_proj)\.")


@pytest.fixture(scope="module")
def digits_data():
    from hf_negmerge.data import DataConfig, build_unlearning_data

    return build_unlearning_data(DataConfig(dataset="digits", scenario="class", forget_classes=[3]))


@pytest.fixture(scope="module")
def base_dirs(digits_data, tmp_path_factory):
    from hf_negmerge.models import ModelConfig, build_classifier

    root = tmp_path_factory.mktemp("originals")
    configs = {
        "clip": ModelConfig(architecture="clip", freeze_attention=True, train_projection=False),
        "vit": ModelConfig(architecture="vit"),
    }
    for name, config in configs.items():
        build_classifier(config, digits_data.class_names).save_pretrained(root / name)
    return {name: root / name for name in configs}


def _load(directory):
    from hf_negmerge.models import ImageClassifier

    return ImageClassifier.from_pretrained(directory)


def _negmerge_by_hand(vectors):
    """Independent oracle: keep an element iff every run moved it with the same non-zero sign."""
    merged = {}
    for key in vectors[0]:
        stacked = torch.stack([v[key] for v in vectors])
        signs = torch.sign(stacked)
        unanimous = (signs == signs[0]).all(dim=0) & (signs[0] != 0)
        merged[key] = torch.where(unanimous, stacked.mean(dim=0), torch.zeros_like(stacked[0]))
    return merged


def test_clip_finetune_moves_only_the_unfrozen_vision_tensors(digits_data, base_dirs):
    from hf_negmerge.task_vector import TaskVector
    from hf_negmerge.training.loop import finetune

    base = _load(base_dirs["clip"])
    tuned = finetune(
        _load(base_dirs["clip"]), digits_data.forget_train, TrainingHyperparameters(**FAST), progress=False
    )
    vector = TaskVector.from_models(base.model, tuned.model)  # every float tensor, frozen ones included
    moved = {key for key in vector if vector[key].count_nonzero() > 0}
    expected = {key for key in vector if key.startswith("vision_model.") and not _ATTENTION.search(key)}
    assert moved == expected
    assert any(_ATTENTION.search(key) for key in vector)  # attention was present, and exactly zero
    # the task-vector patterns of the classifier select exactly the tensors that can move
    selected = TaskVector.from_models(base.model, tuned.model, include=base.trainable_parameter_patterns())
    assert set(selected.keys()) == expected


@pytest.mark.parametrize(
    ("architecture", "lora"), [("clip", False), ("clip", True), ("vit", False), ("vit", True)]
)
def test_grid_full_and_lora_merges_like_the_oracle(digits_data, base_dirs, tmp_path, architecture, lora):
    from hf_negmerge.task_vector import TaskVector
    from hf_negmerge.training.runner import run_grid

    # CLIP's attention is frozen here, so its LoRA adapts the MLP; ViT keeps the default q/v targets.
    targets = {"clip": ["fc1"], "vit": None}[architecture]
    extra = {"lora_rank": 2, "learning_rate": 1e-2, "lora_target_modules": targets} if lora else {}
    spec = GridSpec(base={**FAST, **extra}, axes={"seed": [0, 1]})
    result = run_grid(
        base_dirs[architecture],
        digits_data,
        spec,
        tmp_path / "grid",
        progress=False,
        keep_checkpoints=not lora,
    )
    ids = [p.id for p in spec.expand()]
    assert result.trained == sorted(ids) and result.reused == []
    vectors = []
    for run_id in ids:
        run_dir = tmp_path / "grid" / "runs" / run_id
        record = json.loads((run_dir / "run.json").read_text())
        assert record["id"] == run_id and record["num_examples"] == len(digits_data.forget_train)
        assert json.loads((run_dir / "params.json").read_text())["hyperparameters"]["seed"] in (0, 1)
        vector = TaskVector.load(run_dir / "task_vector.safetensors")
        vectors.append(vector)
        if not lora:  # the saved fine-tuned checkpoint gives the same vector from disk
            from_disk = TaskVector.from_checkpoints(base_dirs[architecture], run_dir / "checkpoint")
            for key in vector:
                torch.testing.assert_close(from_disk[key], vector[key], rtol=0, atol=1e-6)
        moved = {key for key in vector if vector[key].count_nonzero() > 0}
        if lora:  # dense ΔW of the merged adapters: only the blocks' Linear weights move
            assert moved and all(
                re.search(r"(encoder\.layers?\.\d+\.).*(fc\d|_proj|query|key|value|dense)\.weight$", key)
                for key in moved
            ), moved
        else:
            assert len(moved) >= len(vector.keys()) - 2  # everything trainable moves (bar rarely-hit rows)
    assert vectors[0].keys() == vectors[1].keys()
    assert not all(torch.equal(vectors[0][k], vectors[1][k]) for k in vectors[0])  # seeds differ
    expected = _negmerge_by_hand(vectors)
    for key, tensor in expected.items():
        torch.testing.assert_close(result.task_vector[key], tensor, rtol=1e-6, atol=1e-8)
    saved = TaskVector.load(tmp_path / "grid" / "merged_task_vector.safetensors")
    assert all(torch.equal(saved[k], result.task_vector[k]) for k in saved)


def test_resume_trains_only_the_missing_points_and_matches_an_uninterrupted_run(
    digits_data, base_dirs, tmp_path, monkeypatch
):
    from hf_negmerge.training import runner

    spec = GridSpec(
        base=FAST,
        points=[  # augmented runs too: RandAugment draws must replay exactly from the seed
            {"seed": 0},
            {"seed": 1, "label_smoothing": 0.1, "randaugment_magnitude": 3, "randaugment_num_ops": 1},
            {"seed": 2, "randaugment_magnitude": 9, "randaugment_num_ops": 2},
            {"seed": 3, "label_smoothing": 0.05},
        ],
    )
    ids = [p.id for p in spec.expand()]
    reference = runner.run_grid(
        base_dirs["vit"], digits_data, spec, tmp_path / "uninterrupted", progress=False
    )
    assert gc.get_freeze_count() == 0

    calls = []
    real_finetune = runner.finetune

    def counting_finetune(*args, **kwargs):
        calls.append(kwargs["description"])
        if stop_after is not None and len(calls) > stop_after:
            raise KeyboardInterrupt("simulated kill")
        return real_finetune(*args, **kwargs)

    monkeypatch.setattr(runner, "finetune", counting_finetune)
    output = tmp_path / "resumed"
    stop_after = 2
    with pytest.raises(KeyboardInterrupt):
        runner.run_grid(base_dirs["vit"], digits_data, spec, output, progress=False)
    assert calls == ids[:3]
    assert gc.get_freeze_count() == 0  # the grid froze the heap for its runs; a kill unfreezes it too
    assert sorted(p.name for p in (output / "runs").iterdir()) == sorted(
        ids[:2]
    )  # the killed run left nothing
    stale = output / "runs" / f".{ids[3]}.tmp-hardkill"  # what a SIGKILL mid-write would leave
    stale.mkdir()
    (stale / "params.json").write_text("{}")

    calls.clear()
    stop_after = None
    resumed = runner.run_grid(base_dirs["vit"], digits_data, spec, output, progress=False)
    assert calls == ids[2:] and resumed.trained == sorted(ids[2:]) and resumed.reused == ids[:2]
    assert not stale.exists()
    for key in reference.task_vector:
        assert torch.equal(resumed.task_vector[key], reference.task_vector[key]), key

    # Killed after a run folder was finished but before the fold was saved: fold from disk, train nothing.
    calls.clear()
    (output / "accumulator.safetensors").unlink()
    recovered = runner.run_grid(base_dirs["vit"], digits_data, spec, output, progress=False)
    assert calls == [] and recovered.reused == ids
    for key in reference.task_vector:
        torch.testing.assert_close(
            recovered.task_vector[key], reference.task_vector[key], rtol=1e-6, atol=1e-8
        )

    # A finished grid is not folded twice.
    again = runner.run_grid(base_dirs["vit"], digits_data, spec, output, progress=False)
    assert calls == [] and again.merge.stats.num_models == 4


def test_bad_input_is_rejected_before_any_training(digits_data, base_dirs, tmp_path, monkeypatch):
    import dataclasses

    from hf_negmerge.config import NegMergeConfig
    from hf_negmerge.data import DataConfig, build_unlearning_data
    from hf_negmerge.errors import CheckpointError
    from hf_negmerge.models import ModelConfig, build_classifier
    from hf_negmerge.training import runner
    from hf_negmerge.training.pretrain import prepare_original_model

    calls = []
    monkeypatch.setattr(runner, "finetune", lambda *a, **k: calls.append(1))
    spec = GridSpec(base=FAST, axes={"seed": [0, 1]})
    empty = dataclasses.replace(digits_data, forget_train=digits_data.forget_train.select([]))
    with pytest.raises(ConfigError, match=r"forget set .* is empty"):
        runner.run_grid(base_dirs["vit"], empty, spec, tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="forget_classes is empty"):
        build_unlearning_data(DataConfig(dataset="digits", scenario="class", forget_classes=[]))
    with pytest.raises(ConfigError, match="class_names must be a non-empty list"):
        build_classifier(ModelConfig(architecture="clip"), [])
    unnamed = digits_data.forget_train.cast_column("label", __import__("datasets").Value("int64"))
    with pytest.raises(ConfigError, match="needs class names"):
        prepare_original_model(
            ModelConfig(architecture="clip"), unnamed, tmp_path / "orig", epochs=1, progress=False
        )
    shifted = dataclasses.replace(
        digits_data, forget_train=unnamed.map(lambda row: {"label": row["label"] + 10})
    )
    with pytest.raises(ConfigError, match="outside the 10 classes"):
        runner.run_grid(base_dirs["vit"], shifted, spec, tmp_path / "b", progress=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        runner.run_grid(tmp_path / "missing", digits_data, spec, tmp_path / "c", progress=False)
    assert calls == []

    # Resuming with another merge config or another grid would mix incompatible runs.
    monkeypatch.undo()
    one_point = GridSpec(base=FAST, points=[{"seed": 0}])
    runner.run_grid(base_dirs["vit"], digits_data, one_point, tmp_path / "d", progress=False)
    with pytest.raises(ConfigError, match="different merge config"):
        runner.run_grid(
            base_dirs["vit"],
            digits_data,
            one_point,
            tmp_path / "d",
            NegMergeConfig(method="uniform"),
            progress=False,
        )
    with pytest.raises(ConfigError, match="not in this grid"):
        runner.run_grid(
            base_dirs["vit"],
            digits_data,
            GridSpec(base=FAST, points=[{"seed": 5}]),
            tmp_path / "d",
            progress=False,
        )


def test_gradient_accumulation_matches_one_large_batch(digits_data, base_dirs):
    from hf_negmerge.training.loop import finetune

    subset = digits_data.forget_train.select(range(96))  # whole batches, so both see the same groups
    one = finetune(_load(base_dirs["vit"]), subset, TrainingHyperparameters(**FAST), progress=False)
    hyperparameters = TrainingHyperparameters(**{**FAST, "batch_size": 16, "gradient_accumulation_steps": 2})
    steps = []
    accumulated = finetune(
        _load(base_dirs["vit"]),
        subset,
        hyperparameters,
        progress=False,
        step_callback=lambda *a: steps.append(a),
    )
    assert [step for step, _ in steps] == [1, 2, 3]  # 6 batches of 16, 2 per optimizer step
    assert all(0 < loss < 10 for _, loss in steps)
    base = _load(base_dirs["vit"])
    for (name, a), (_, b), (_, b0) in zip(
        one.model.named_parameters(),
        accumulated.model.named_parameters(),
        base.model.named_parameters(),
        strict=True,
    ):
        assert not torch.equal(a, b0), name
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_prepare_original_model_trains_whole_clip_and_caches(digits_data, tmp_path, monkeypatch):
    from hf_negmerge.models import ModelConfig, build_classifier
    from hf_negmerge.training import pretrain

    config = ModelConfig(architecture="clip")
    train = digits_data.retain_train.select(range(200))
    folder = pretrain.prepare_original_model(config, train, tmp_path, epochs=1, batch_size=50, progress=False)
    trained, initial = _load(folder), build_classifier(config, digits_data.class_names)
    record = json.loads((folder / "pretrain.json").read_text())
    assert record["epochs"] == 1 and 0.0 <= record["train_accuracy"] <= 1.0
    for tower in ("text_model.", "vision_model."):  # both towers trained, not only the image encoder
        key = next(k for k, _ in trained.model.named_parameters() if k.startswith(tower))
        assert not torch.equal(
            dict(trained.model.named_parameters())[key], dict(initial.model.named_parameters())[key]
        )
    torch.testing.assert_close(trained.zero_shot_head, trained.compute_head())  # head follows the text tower

    monkeypatch.setattr(pretrain, "encode_split", lambda *a: pytest.fail("cached model was retrained"))
    assert (
        pretrain.prepare_original_model(config, train, tmp_path, epochs=1, batch_size=50, progress=False)
        == folder
    )
    monkeypatch.undo()
    other = pretrain.prepare_original_model(config, train, tmp_path, epochs=1, batch_size=40, progress=False)
    assert other != folder and other.name.startswith("clip-")
