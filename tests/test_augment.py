"""Training transforms: the authors' timm 0.9.2 RandAugment pipeline, measured in distribution.

Expectations are written from timm's documented policy ("rand-m{m}-n{n}-mstd0.5", REFERENCE §2.1)
and checked on synthetic images against references computed another way (numpy, geometry), over
many seeded draws with 5-sigma bounds. A last test compares with timm itself where it imports.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from hf_negmerge.errors import ConfigError
from hf_negmerge.training.augment import (
    LEVEL_MAPPINGS,
    RAND_AUGMENT_OPS,
    ImageNetTrainTransform,
    ImageSpec,
    PadCropFlipTransform,
    RandAugment,
    apply_op,
    build_augmentation,
    random_resized_crop_box,
)
from hf_negmerge.training.grid import TrainingHyperparameters

TIMM_RAND_OPS = [
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NEAREST = Image.Resampling.NEAREST
BLACK = (0, 0, 0)


def _within(measured: float, expected: float, p: float, draws: int) -> bool:
    """|measured − expected| within 5 binomial standard deviations (false alarm ≈ 6e-7)."""
    return abs(measured - expected) <= 5 * math.sqrt(p * (1 - p) / draws)


class _NoNegate(random.Random):
    """random() = 0: timm's `_randomly_negate` keeps the positive direction."""

    def random(self) -> float:
        return 0.0


def _argument(name: str, level: float):
    mapping = LEVEL_MAPPINGS[name]
    return None if mapping is None else mapping(level, _NoNegate())


def _grey(values: np.ndarray) -> Image.Image:
    """An RGB image whose three channels all hold `values` (uint8, H×W)."""
    return Image.fromarray(np.repeat(values.astype(np.uint8)[:, :, None], 3, axis=2))


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int64)


def _centroid(image: Image.Image) -> tuple[float, float]:
    """(x, y) of the bright pixels' centre, in continuous coordinates (pixel centres at +0.5)."""
    weights = _pixels(image)[:, :, 0].astype(float)
    weights[weights < 200] = 0  # the dot only, not a grey fill
    ys, xs = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]]
    total = weights.sum()
    return float((weights * (xs + 0.5)).sum() / total), float((weights * (ys + 0.5)).sum() / total)


def _dot(x: int, y: int, size: int = 64) -> Image.Image:
    """Black size×size image with a white 3×3 block centred on pixel (x, y)."""
    values = np.zeros((size, size), dtype=np.uint8)
    values[y - 1 : y + 2, x - 1 : x + 2] = 255
    return _grey(values)


# ---------------------------------------------------------------------------------------------
# The policy: op list, sampling, magnitudes


def test_op_list_is_timms_rand_policy():
    assert list(RAND_AUGMENT_OPS) == TIMM_RAND_OPS
    assert set(LEVEL_MAPPINGS) == set(TIMM_RAND_OPS)


def test_ops_are_drawn_uniformly_with_replacement_and_each_applied_with_probability_half():
    draws = 20000
    augment = RandAugment(magnitude=5, num_ops=2)
    rng = random.Random(0)
    plans = [augment.plan(rng) for _ in range(draws)]
    assert all(len(plan) == 2 for plan in plans)
    calls = [call for plan in plans for call in plan]
    counts = Counter(call.name for call in calls)
    assert set(counts) == set(TIMM_RAND_OPS)
    for name, count in counts.items():
        assert _within(count / len(calls), 1 / 15, 1 / 15, len(calls)), (name, count)
    # with replacement: the same op twice in one image as often as 1/15 (never, without replacement)
    repeats = sum(plan[0].name == plan[1].name for plan in plans)
    assert _within(repeats / draws, 1 / 15, 1 / 15, draws), repeats
    applied = [call.applied for call in calls]
    assert _within(sum(applied) / len(applied), 0.5, 0.5, len(applied))
    # each layer decides on its own: both layers fire in a quarter of the images
    both = sum(plan[0].applied and plan[1].applied for plan in plans)
    assert _within(both / draws, 0.25, 0.25, draws)
    for name in TIMM_RAND_OPS:
        fired = [call.applied for call in calls if call.name == name]
        assert _within(sum(fired) / len(fired), 0.5, 0.5, len(fired)), name
    assert all(call.magnitude is None and call.argument is None for call in calls if not call.applied)


@pytest.mark.parametrize("magnitude", [0, 1, 5, 10])
def test_magnitude_is_normal_around_m_with_std_half_clipped_to_0_10(magnitude):
    rng = random.Random(magnitude)
    augment = RandAugment(magnitude=magnitude, num_ops=3)
    values = np.array([call.magnitude for _ in range(8000) for call in augment.plan(rng) if call.applied])
    assert values.min() >= 0.0 and values.max() <= 10.0
    # Moments of max(0, min(10, X)), X ~ N(m, 0.5), by numerical integration (independent of the code).
    grid = np.linspace(magnitude - 6, magnitude + 6, 200001)
    density = np.exp(-0.5 * ((grid - magnitude) / 0.5) ** 2) / (0.5 * math.sqrt(2 * math.pi))
    clipped = np.clip(grid, 0.0, 10.0)
    step = grid[1] - grid[0]
    mean = float((clipped * density).sum() * step)
    std = math.sqrt(float(((clipped - mean) ** 2 * density).sum() * step))
    tolerance = 5 * std / math.sqrt(len(values))
    assert abs(values.mean() - mean) <= tolerance, (values.mean(), mean)
    assert abs(values.std() - std) <= 0.05 * std + 1e-9, (values.std(), std)
    # the clipped tails pile up exactly on 0 and 10: P(X < 0) + P(X > 10)
    at_edge = float(np.mean((values == 0.0) | (values == 10.0)))
    normal_cdf = lambda x: 0.5 * (1 + math.erf((x - magnitude) / (0.5 * math.sqrt(2))))  # noqa: E731
    expected_edge = normal_cdf(0.0) + 1 - normal_cdf(10.0)
    assert _within(at_edge, expected_edge, max(expected_edge, 1e-6), len(values)), (at_edge, expected_edge)


def test_signed_ops_take_each_direction_half_the_time():
    rng = random.Random(1)
    augment = RandAugment(magnitude=10, num_ops=1, magnitude_std=0.0)
    arguments: dict[str, list[float]] = {name: [] for name in ("Rotate", "ShearX", "TranslateYRel")}
    for _ in range(30000):
        call = augment.plan(rng)[0]
        if call.applied and call.name in arguments:
            arguments[call.name].append(call.argument)
    full = {"Rotate": 30.0, "ShearX": 0.3, "TranslateYRel": 0.45}
    for name, values in arguments.items():
        assert set(np.round(np.abs(values), 9)) == {full[name]}, name
        positive = float(np.mean(np.array(values) > 0))
        assert _within(positive, 0.5, 0.5, len(values)), (name, positive)


def test_geometric_ops_pick_bilinear_or_bicubic_at_random():
    rng = random.Random(2)
    augment = RandAugment(magnitude=5, num_ops=1)
    calls = [call for _ in range(20000) for call in augment.plan(rng) if call.applied]
    geometric = [call.resample for call in calls if call.name in ("Rotate", "ShearX", "TranslateXRel")]
    share = geometric.count(Image.Resampling.BICUBIC) / len(geometric)
    assert set(geometric) == {Image.Resampling.BILINEAR, Image.Resampling.BICUBIC}
    assert _within(share, 0.5, 0.5, len(geometric))
    assert all(call.resample is None for call in calls if call.name in ("Equalize", "Solarize"))


# ---------------------------------------------------------------------------------------------
# Level mappings, checked on synthetic images against references computed another way

GRADIENT = np.tile(np.arange(256, dtype=np.uint8), (4, 1))  # every 8-bit value once per row


@pytest.mark.parametrize(("level", "threshold"), [(0.0, 0), (2.0, 51), (5.0, 128), (7.3, 186), (10.0, 256)])
def test_solarize_inverts_pixels_at_or_above_256_times_level_over_10(level, threshold):
    assert _argument("Solarize", level) == threshold
    result = _pixels(apply_op(_grey(GRADIENT), "Solarize", _argument("Solarize", level)))[:, :, 0]
    values = GRADIENT.astype(np.int64)
    np.testing.assert_array_equal(result, np.where(values >= threshold, 255 - values, values))


@pytest.mark.parametrize(("level", "bits"), [(0.0, 0), (2.49, 0), (2.5, 1), (5.0, 2), (7.6, 3), (10.0, 4)])
def test_posterize_keeps_int_level_times_0_4_high_bits_zero_bits_is_black(level, bits):
    assert _argument("Posterize", level) == bits
    result = _pixels(apply_op(_grey(GRADIENT), "Posterize", bits))[:, :, 0]
    kept = (GRADIENT.astype(np.int64) >> (8 - bits)) << (8 - bits) if bits else np.zeros_like(GRADIENT)
    np.testing.assert_array_equal(result, kept)


@pytest.mark.parametrize(("level", "add"), [(0.0, 0), (3.0, 33), (10.0, 110)])
def test_solarize_add_adds_level_times_11_below_128(level, add):
    assert _argument("SolarizeAdd", level) == add
    result = _pixels(apply_op(_grey(GRADIENT), "SolarizeAdd", add))[:, :, 0]
    values = GRADIENT.astype(np.int64)
    np.testing.assert_array_equal(result, np.where(values < 128, np.minimum(255, values + add), values))


@pytest.mark.parametrize("name", ["Color", "Contrast", "Brightness", "Sharpness"])
def test_enhance_factor_runs_from_0_1_through_1_at_level_5_to_1_9(name):
    assert _argument(name, 0.0) == pytest.approx(0.1)
    assert _argument(name, 10.0) == pytest.approx(1.9)
    assert _argument(name, 5.0) == pytest.approx(1.0)  # the identity: no random sign in "rand"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    np.testing.assert_array_equal(_pixels(apply_op(image, name, _argument(name, 5.0))), _pixels(image))


def test_brightness_and_contrast_scale_pixels_as_computed_by_hand():
    values = np.full((8, 8), 40, dtype=np.int64)
    values[:, 4:] = 200  # grey level mean 120
    image = _grey(values)
    dimmed = _pixels(apply_op(image, "Brightness", _argument("Brightness", 0.0)))[:, :, 0]
    assert np.abs(dimmed - values * 0.1).max() <= 1
    stretched = _pixels(apply_op(image, "Contrast", _argument("Contrast", 10.0)))[:, :, 0]
    assert np.abs(stretched - np.clip(120 + 1.9 * (values - 120), 0, 255)).max() <= 1


def test_invert_and_autocontrast_match_numpy():
    np.testing.assert_array_equal(
        _pixels(apply_op(_grey(GRADIENT), "Invert", None))[:, :, 0], 255 - GRADIENT.astype(np.int64)
    )
    narrow = np.tile(np.arange(50, 151, dtype=np.int64), (2, 1))
    stretched = _pixels(apply_op(_grey(narrow), "AutoContrast", None))[:, :, 0]
    assert np.abs(stretched - (narrow - 50) * 255 / 100).max() <= 1


def test_rotate_turns_counter_clockwise_by_3_degrees_per_level():
    assert _argument("Rotate", 10.0) == pytest.approx(30.0)
    assert _argument("Rotate", 4.0) == pytest.approx(12.0)
    for level in (4.0, 10.0):
        angle = math.radians(3.0 * level)
        x, y = _centroid(apply_op(_dot(48, 32), "Rotate", _argument("Rotate", level), BLACK, NEAREST))
        dx, dy = 48.5 - 32, 32.5 - 32  # the dot's offset from the rotation centre (32, 32)
        expected = (
            32 + dx * math.cos(angle) + dy * math.sin(angle),
            32 - dx * math.sin(angle) + dy * math.cos(angle),
        )
        assert abs(x - expected[0]) <= 1 and abs(y - expected[1]) <= 1, ((x, y), expected)


def test_shear_and_translate_move_a_dot_where_the_affine_map_says():
    # PIL's affine samples input (x + b·y + c, d·x + y + f) for output (x, y): a dot at (x0, y0)
    # lands at x0 − b·y0 − c (and y0 − d·x0 − f).
    dot = _dot(40, 48)
    x, y = _centroid(apply_op(dot, "ShearX", _argument("ShearX", 10.0), BLACK, NEAREST))
    assert abs(x - (40.5 - 0.3 * 48.5)) <= 1 and abs(y - 48.5) <= 1
    x, y = _centroid(apply_op(dot, "ShearY", _argument("ShearY", 5.0), BLACK, NEAREST))
    assert abs(x - 40.5) <= 1 and abs(y - (48.5 - 0.15 * 40.5)) <= 1
    x, y = _centroid(apply_op(dot, "TranslateXRel", _argument("TranslateXRel", 10.0), BLACK, NEAREST))
    assert abs(x - (40.5 - 0.45 * 64)) <= 1 and abs(y - 48.5) <= 1
    x, y = _centroid(apply_op(dot, "TranslateYRel", _argument("TranslateYRel", 5.0), BLACK, NEAREST))
    assert abs(x - 40.5) <= 1 and abs(y - (48.5 - 0.225 * 64)) <= 1


def test_geometric_ops_fill_uncovered_pixels_with_the_normalisation_mean():
    spec = ImageSpec(64, CLIP_MEAN, CLIP_STD)
    assert spec.fill == (123, 117, 104)  # round(255 · CLIP mean), timm's img_mean
    assert ImageSpec(64).fill == (128, 128, 128)
    shifted = _pixels(apply_op(_dot(40, 48), "TranslateXRel", 0.45, fill=spec.fill, resample=NEAREST))
    assert (shifted[:, -20:] == np.array(spec.fill)).all()


def test_plan_and_apply_are_what_a_call_does():
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    augment = RandAugment(magnitude=7, num_ops=3, fill=(1, 2, 3))
    for seed in range(20):
        planned = augment.apply(image, augment.plan(random.Random(seed)))
        np.testing.assert_array_equal(_pixels(augment(image, random.Random(seed))), _pixels(planned))


def test_randaugment_rejects_magnitudes_off_timms_scale():
    with pytest.raises(ConfigError, match=r"magnitude must be in 0\.\.10"):
        RandAugment(magnitude=11, num_ops=1)
    with pytest.raises(ConfigError, match="num_ops must be at least 1"):
        RandAugment(magnitude=3, num_ops=0)
    with pytest.raises(ConfigError, match=r"randaugment_magnitude=11 must be ≥ 0 and ≤ 10"):
        TrainingHyperparameters(randaugment_magnitude=11, randaugment_num_ops=1)


# ---------------------------------------------------------------------------------------------
# RandomResizedCrop and flip


def test_crop_area_fraction_and_log_ratio_are_uniform_where_every_try_fits():
    rng = random.Random(4)
    side = 1000
    boxes = [random_resized_crop_box(side, side, rng) for _ in range(30000)]
    fraction = np.array([w * h for _, _, w, h in boxes]) / side**2
    log_ratio = np.log(np.array([w / h for _, _, w, h in boxes]))
    assert fraction.min() >= 0.08 - 0.002 and fraction.max() <= 1.0
    assert log_ratio.min() >= math.log(3 / 4) - 0.01 and log_ratio.max() <= math.log(4 / 3) + 0.01
    assert all(0 <= left <= side - w and 0 <= top <= side - h for left, top, w, h in boxes)
    # Below area 0.56 every (scale, ratio) draw fits (√(0.56·4/3) < 1), so accepted draws are
    # uniform there: scale uniform on [0.08, 0.56] and log ratio uniform, whatever the retries.
    inside = fraction < 0.56
    for values, low, high in (
        (fraction[inside], 0.08, 0.56),
        (log_ratio[inside], math.log(3 / 4), math.log(4 / 3)),
    ):
        counts = np.histogram(values, bins=8, range=(low, high))[0]
        for count in counts:
            assert _within(count / len(values), 1 / 8, 1 / 8, len(values)), counts
    # and the share below 0.56 is its prior mass, (0.56−0.08)/0.92, raised by retries of misfits
    assert inside.mean() > (0.56 - 0.08) / 0.92 - 5 * math.sqrt(0.25 / len(boxes))


def test_crop_position_is_uniform_over_the_free_range():
    rng = random.Random(5)
    lefts = []
    for _ in range(20000):
        left, _, w, _ = random_resized_crop_box(400, 400, rng)
        if w <= 200:
            lefts.append(left / (400 - w))  # relative position in [0, 1]
    counts = np.histogram(lefts, bins=5, range=(0, 1))[0]
    for count in counts:
        assert _within(count / len(lefts), 0.2, 0.2, len(lefts)), counts


def test_crop_falls_back_to_a_central_crop_at_the_ratio_limit():
    # 1000×10: no crop of 8–100% area with aspect ratio ≤ 4/3 fits, so every try fails
    assert random_resized_crop_box(1000, 10, random.Random(0)) == ((1000 - 13) // 2, 0, 13, 10)
    assert random_resized_crop_box(10, 1000, random.Random(0)) == (0, (1000 - 13) // 2, 10, 13)


def _horizontal_ramp(width: int = 256, height: int = 32) -> Image.Image:
    return _grey(np.tile(np.arange(width, dtype=np.uint8), (height, 1)))


def _flipped(batch: torch.Tensor) -> np.ndarray:
    """Per image: whether the ramp now runs right-to-left (left quarter brighter than right)."""
    quarter = batch.shape[-1] // 4
    return (batch[..., :quarter].mean(dim=(1, 2, 3)) > batch[..., -quarter:].mean(dim=(1, 2, 3))).numpy()


def test_imagenet_transform_flips_half_the_images_and_outputs_the_model_size():
    transform = ImageNetTrainTransform(ImageSpec(16), randaugment=None, seed=0)
    batches = [transform([_horizontal_ramp()] * 250) for _ in range(8)]
    assert all(batch.shape == (250, 3, 16, 16) for batch in batches)
    flipped = np.concatenate([_flipped(batch) for batch in batches])
    assert _within(flipped.mean(), 0.5, 0.5, len(flipped))


def test_imagenet_transform_normalises_with_the_processor_mean_and_std():
    transform = ImageNetTrainTransform(ImageSpec(8, CLIP_MEAN, CLIP_STD), randaugment=None, seed=0)
    batch = transform([Image.new("RGB", (30, 20), (200, 100, 50))])
    expected = (torch.tensor([200, 100, 50]) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(batch[0], expected.view(3, 1, 1).expand(3, 8, 8))


def test_imagenet_transform_crops_boxes_of_the_expected_area_and_ratio():
    # Each pixel's red value is its x and green its y, so an output's value range is its crop box.
    ys, xs = np.mgrid[0:256, 0:256]
    coordinates = Image.fromarray(np.stack([xs, ys, np.zeros_like(xs)], axis=2).astype(np.uint8))
    transform = ImageNetTrainTransform(ImageSpec(32), randaugment=None, seed=2)
    batch = torch.cat([transform([coordinates] * 250) for _ in range(8)]) * 255
    # output pixel centres span (1 − 1/32) of the crop; interpolating a linear ramp keeps it linear
    width = (batch[:, 0].amax(dim=(1, 2)) - batch[:, 0].amin(dim=(1, 2))).numpy() * 32 / 31 + 1
    height = (batch[:, 1].amax(dim=(1, 2)) - batch[:, 1].amin(dim=(1, 2))).numpy() * 32 / 31 + 1
    fraction, log_ratio = width * height / 256**2, np.log(width / height)
    assert fraction.min() >= 0.07 and fraction.max() <= 1.03
    assert log_ratio.min() >= math.log(3 / 4) - 0.05 and log_ratio.max() <= math.log(4 / 3) + 0.05
    inside = fraction[fraction < 0.5]  # every try fits here: uniform on [0.08, 0.5], mean 0.29
    assert abs(inside.mean() - 0.29) <= 5 * (0.42 / math.sqrt(12)) / math.sqrt(len(inside)) + 0.01


# ---------------------------------------------------------------------------------------------
# Seeding and building from hyperparameters


def test_transforms_replay_from_their_seed_and_differ_across_seeds_and_streams():
    images = [
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 30, 3), dtype=np.uint8))
        for i in range(6)
    ]
    spec = ImageSpec(16, CLIP_MEAN, CLIP_STD)

    def run(seed: int, stream: int = 0) -> torch.Tensor:
        transform = ImageNetTrainTransform(spec, RandAugment(9, 2, fill=spec.fill), seed=seed, stream=stream)
        return torch.cat([transform(images), transform(images)])

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1)) and not torch.equal(run(0), run(0, stream=1))


def test_build_augmentation_follows_the_run_hyperparameters():
    spec = ImageSpec(32, CLIP_MEAN, CLIP_STD)
    assert build_augmentation(TrainingHyperparameters(), spec) is None  # no RandAugment: plain processor
    hyperparameters = TrainingHyperparameters(randaugment_magnitude=4, randaugment_num_ops=3, seed=7)
    built = build_augmentation(hyperparameters, spec)
    assert isinstance(built, ImageNetTrainTransform)
    ra = built.randaugment
    assert (ra.magnitude, ra.num_ops, ra.magnitude_std, ra.probability, ra.fill) == (
        4,
        3,
        0.5,
        0.5,
        spec.fill,
    )
    again = build_augmentation(hyperparameters, spec)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8))
    assert torch.equal(built([image] * 4), again([image] * 4))  # seeded by the run's seed
    cifar = build_augmentation(TrainingHyperparameters(), spec, name="cifar_pad_crop_flip")
    assert isinstance(cifar, PadCropFlipTransform)
    with pytest.raises(ConfigError, match="Unknown augmentation 'autoaugment'"):
        build_augmentation(hyperparameters, spec, name="autoaugment")


# ---------------------------------------------------------------------------------------------
# CIFAR's pad-4 random crop and flip (the standard ResNet setting)


def test_pad_crop_flip_offsets_are_uniform_over_0_to_8_and_the_border_is_zero():
    transform = PadCropFlipTransform(ImageSpec(32), padding=4, seed=0)
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    batch = torch.cat([transform([white] * 300) for _ in range(10)])
    assert batch.shape == (3000, 3, 32, 32)
    assert set(torch.unique(batch).tolist()) <= {0.0, 1.0}
    black_columns = (batch[:, 0] == 0).all(dim=1)  # [N, 32]: column entirely padding
    black_rows = (batch[:, 0] == 0).all(dim=2)
    # the crop's top offset t in 0..8 leaves 4 − t black rows on top (t < 4) or t − 4 at the bottom
    tops = [4 - int(rows[:4].sum()) if rows[0] else 4 + int(rows[-4:].sum()) for rows in black_rows]
    counts = Counter(tops)
    assert set(counts) == set(range(9))
    for offset, count in counts.items():
        assert _within(count / len(tops), 1 / 9, 1 / 9, len(tops)), (offset, counts)
    left_or_right = [int(columns[:4].sum() + columns[-4:].sum()) for columns in black_columns]
    assert Counter(left_or_right)[0] / len(left_or_right) == pytest.approx(
        1 / 9, abs=5 * math.sqrt(8 / 81 / 3000)
    )


def test_pad_crop_flip_flips_half_the_images_and_resizes_other_sizes_first():
    transform = PadCropFlipTransform(ImageSpec(32), padding=4, seed=1)
    batch = torch.cat([transform([_horizontal_ramp(128, 128)] * 250) for _ in range(8)])
    assert batch.shape == (2000, 3, 32, 32)
    # the ramp is ≥ 6 columns wide inside the 32-pixel crop, so left vs right quarter decides the flip
    flipped = _flipped(batch)
    assert _within(flipped.mean(), 0.5, 0.5, len(flipped))
    with pytest.raises(ConfigError, match="padding must be ≥ 0"):
        PadCropFlipTransform(ImageSpec(32), padding=-1)


# ---------------------------------------------------------------------------------------------
# timm itself, where it imports (not beside the CPU torch build used here)


def test_matches_timm_0_9_where_importable():
    auto_augment = pytest.importorskip("timm.data.auto_augment")
    transforms = pytest.importorskip("timm.data.transforms")
    import timm

    if not timm.__version__.startswith("0.9."):
        pytest.skip(f"written against timm 0.9.x, found {timm.__version__}")
    assert list(auto_augment._RAND_TRANSFORMS) == TIMM_RAND_OPS
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    fill = (123, 117, 104)
    for name in TIMM_RAND_OPS:
        for level in (0.0, 1.7, 5.0, 8.3, 10.0):
            # same seed, same single random() for the sign: the arguments agree exactly
            random.seed(11)
            theirs = auto_augment.LEVEL_TO_ARG[name]
            expected = theirs(level, {"translate_const": 100}) if theirs is not None else ()
            ours = LEVEL_MAPPINGS[name]
            argument = ours(level, random.Random(11)) if ours is not None else None
            assert expected == ((argument,) if argument is not None else ()), (name, level)
            op = auto_augment.AugmentOp(
                name,
                prob=1.0,
                magnitude=level,
                hparams={"img_mean": fill, "interpolation": Image.Resampling.BILINEAR},
            )
            if name == "Posterize" and argument == 0:  # Pillow ≥ 10 refuses 0 bits; 9.4 gave black
                assert not _pixels(apply_op(image, name, argument)).any()
                continue
            random.seed(11)
            np.testing.assert_array_equal(
                _pixels(op(image)),
                _pixels(apply_op(image, name, argument, fill, Image.Resampling.BILINEAR)),
                err_msg=f"{name} at level {level}",
            )
    for seed in range(200):
        random.seed(seed)
        top, left, height, width = transforms.RandomResizedCropAndInterpolation.get_params(
            image, (0.08, 1.0), (3 / 4, 4 / 3)
        )
        assert random_resized_crop_box(*image.size, random.Random(seed)) == (left, top, width, height)
