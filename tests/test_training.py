"""Training stage: grid spec, augmentation, the fine-tuning loop and the resumable grid runner."""

from __future__ import annotations

import hashlib
import itertools
import json
import re

import pytest
import torch

from hf_negmerge.errors import ConfigError
from hf_negmerge.training.augment import (
    RANDAUGMENT_POLICY,
    OnNormalizedPixels,
    RandAugment,
    build_augmentation,
)
from hf_negmerge.training.grid import (
    GridPoint,
    GridSpec,
    TrainingHyperparameters,
    as_grid_points,
    available_grid_presets,
    grid_preset,
)

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
        ({"axes": {"randaugment_magnitude": [30], "randaugment_num_ops": [1]}}, "randaugment_magnitude=30"),
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
# Augmentation


def _mean_change(augment, images: torch.Tensor, seed: int = 0) -> float:
    torch.manual_seed(seed)
    return float((augment(images) - images).abs().mean())


@pytest.mark.parametrize(
    "operation",
    [entry[0][0] for entry in RANDAUGMENT_POLICY if entry[0][0] not in ("auto_contrast", "equalize")],
)
def test_every_randaugment_operation_gets_stronger_with_magnitude(operation):
    from kornia.augmentation.auto import RandAugment as KorniaRandAugment

    policy = [entry for entry in RANDAUGMENT_POLICY if entry[0][0] == operation]
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, 16, 16, generator=generator) * 0.6 + 0.2
    changes = [_mean_change(KorniaRandAugment(n=1, m=m, policy=policy), images) for m in (2, 10, 25)]
    assert changes[0] < changes[1] < changes[2], changes


def test_randaugment_is_seeded_batched_and_keeps_range():
    images = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    augment = RandAugment(magnitude=9, num_ops=2)
    torch.manual_seed(5)
    first = augment(images)
    torch.manual_seed(5)
    again = augment(images)
    torch.manual_seed(6)
    other = augment(images)
    assert first.shape == images.shape and torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= 0 and first.max() <= 1
    with pytest.raises(ConfigError, match=r"num_ops must be in 1\.\.12"):
        RandAugment(magnitude=3, num_ops=13)


def test_augmentation_on_normalized_pixels_maps_back_and_forth():
    mean, std = [0.48, 0.46, 0.41], [0.27, 0.26, 0.28]
    raw = torch.rand(4, 3, 8, 8)
    normalized = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    inverted = OnNormalizedPixels(_Invert(), mean, std)(normalized)
    expected = (1 - raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(inverted, expected)
    assert build_augmentation(TrainingHyperparameters()) is None
    built = build_augmentation(
        TrainingHyperparameters(randaugment_magnitude=4, randaugment_num_ops=1), mean, std
    )
    assert isinstance(built, OnNormalizedPixels) and built.augment.magnitude == 4


class _Invert(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return 1 - images
