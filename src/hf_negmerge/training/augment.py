"""Training-time image transforms: the authors' timm RandAugment pipeline and CIFAR's pad-crop-flip.

The paper's CLIP pool (REFERENCE §2.1) builds each run's transform with timm 0.9.2
`transforms_imagenet_train(size, auto_augment="rand-m{m}-n{n}-mstd0.5")`. `ImageNetTrainTransform`
reproduces that pipeline *in distribution*, written here on PIL (the same image operations timm
calls), one image at a time:

1. RandomResizedCrop: area fraction ~ U(0.08, 1), log aspect ratio ~ U(log 3/4, log 4/3), up to
   10 tries, else a central crop; resized to the model's input size with bilinear or bicubic
   resampling chosen at random;
2. horizontal flip with probability 0.5;
3. RandAugment, timm's "rand" policy (`RandAugment`): n operations drawn with replacement from
   `RAND_AUGMENT_OPS`; each is applied with probability 0.5, at a magnitude ~ N(m, 0.5) clipped to
   [0, 10]; `LEVEL_MAPPINGS` turns that magnitude into the operation's argument;
4. to [0, 1] and normalised with the classifier's processor mean/std (CLIP's for CLIP).
   Colour jitter stays off, as timm turns it off whenever auto-augment is set.

`PadCropFlipTransform` is CIFAR's usual training transform (zero-pad 4, random crop, flip) for the
standard ResNet setting. Randomness comes from each transform's own `random.Random`, seeded from the
run's seed (and a stream number for data-parallel ranks), so a run replays exactly from its seed and
augmentation draws never interleave with dropout's.

Longer than most modules (~430 lines) because it is one job written out: timm's fifteen RandAugment
operations and their level mappings must be read side by side with the policy that draws them to
check the distribution against timm's; splitting them would separate each operation from its range.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from ..errors import ConfigError

if TYPE_CHECKING:  # grid.py checks recipe values against this module's registry
    from .grid import TrainingHyperparameters

LEVEL_DENOM = 10.0  # timm's magnitude scale: m = 10 is an operation's full strength
MAGNITUDE_STD = 0.5  # the "mstd0.5" of the authors' policy string
OP_PROBABILITY = 0.5  # timm's default per-operation probability
DEFAULT_FILL = (128, 128, 128)  # timm's fill colour when no normalisation mean is known
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RANDOM_RESAMPLE = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)

RAND_AUGMENT_OPS: tuple[str, ...] = (
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
)
GEOMETRIC_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"})


def _signed(value: float, rng: random.Random) -> float:
    """Negate with probability 1/2 (timm's random direction for rotate, shear and translate)."""
    return -value if rng.random() > 0.5 else value


def _enhance_factor(level: float, rng: random.Random) -> float:
    # timm's non-"Increasing" enhance mapping: 0.1 (strong reduction) at level 0 up to 1.9 at 10.
    return level / LEVEL_DENOM * 1.8 + 0.1


# Magnitude (after clipping to [0, 10]) -> the operation's argument; None for argument-free ops.
# These are timm 0.9.2's `_RAND_TRANSFORMS` mappings (not the "inc1" increasing variants).
LEVEL_MAPPINGS: dict[str, Callable[[float, random.Random], float | int] | None] = {
    "AutoContrast": None,
    "Equalize": None,
    "Invert": None,
    "Rotate": lambda level, rng: _signed(level / LEVEL_DENOM * 30.0, rng),  # degrees
    # bits kept: 0 (black) below level 2.5 up to 4 at level 10; severity *decreases* with level
    "Posterize": lambda level, rng: int(level / LEVEL_DENOM * 4),
    # threshold: pixels ≥ it are inverted; 0 (invert all) at level 0, 256 (none) at level 10
    "Solarize": lambda level, rng: min(256, int(level / LEVEL_DENOM * 256)),
    "SolarizeAdd": lambda level, rng: min(128, int(level / LEVEL_DENOM * 110)),  # added below 128
    "Color": _enhance_factor,
    "Contrast": _enhance_factor,
    "Brightness": _enhance_factor,
    "Sharpness": _enhance_factor,
    "ShearX": lambda level, rng: _signed(level / LEVEL_DENOM * 0.3, rng),
    "ShearY": lambda level, rng: _signed(level / LEVEL_DENOM * 0.3, rng),
    "TranslateXRel": lambda level, rng: _signed(level / LEVEL_DENOM * 0.45, rng),  # of the width
    "TranslateYRel": lambda level, rng: _signed(level / LEVEL_DENOM * 0.45, rng),  # of the height
}


def _posterize(image: Image.Image, bits: int) -> Image.Image:
    # Own lookup table: Pillow ≥ 10 refuses bits=0, which Pillow 9.4 (the authors') turned black.
    mask = (0xFF << (8 - bits)) & 0xFF
    return image.point([value & mask for value in range(256)] * len(image.getbands()))


def _solarize_add(image: Image.Image, add: int) -> Image.Image:
    table = [min(255, value + add) if value < 128 else value for value in range(256)]
    return image.point(table * len(image.getbands()))


def apply_op(
    image: Image.Image,
    name: str,
    argument: float | int | None,
    fill: tuple[int, ...] = DEFAULT_FILL,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> Image.Image:
    """One RandAugment operation with its argument already mapped (`LEVEL_MAPPINGS`).

    `fill` colours the area a geometric operation uncovers; `resample` is its interpolation.
    """
    affine = {"fillcolor": fill, "resample": resample}
    width, height = image.size
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name == "Equalize":
        return ImageOps.equalize(image)
    if name == "Invert":
        return ImageOps.invert(image)
    if name == "Rotate":
        return image.rotate(argument, **affine)
    if name == "Posterize":
        return _posterize(image, argument)
    if name == "Solarize":
        return ImageOps.solarize(image, argument)
    if name == "SolarizeAdd":
        return _solarize_add(image, argument)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return getattr(ImageEnhance, name)(image).enhance(argument)
    # PIL's AFFINE maps each output pixel (x, y) to the input pixel (a·x + b·y + c, d·x + e·y + f).
    coefficients = {
        "ShearX": (1, argument, 0, 0, 1, 0),
        "ShearY": (1, 0, 0, argument, 1, 0),
        "TranslateXRel": (1, 0, argument * width, 0, 1, 0),
        "TranslateYRel": (1, 0, 0, 0, 1, argument * height),
    }
    if name not in coefficients:
        raise ConfigError(f"Unknown RandAugment operation {name!r}; known: {list(RAND_AUGMENT_OPS)}.")
    return image.transform(image.size, Image.Transform.AFFINE, coefficients[name], **affine)


@dataclass(frozen=True)
class OpCall:
    """One drawn RandAugment layer: which op, whether it fires, and (if so) its magnitude and argument."""

    name: str
    applied: bool
    magnitude: float | None = None
    argument: float | int | None = None
    resample: Image.Resampling | None = None


class RandAugment:
    """timm's RandAugment ("rand-m{m}-n{n}-mstd0.5") on one PIL image.

    `plan(rng)` draws the n layers; `apply(image, plan)` runs them; calling the object does both.
    """

    def __init__(
        self,
        magnitude: float,
        num_ops: int,
        fill: tuple[int, ...] = DEFAULT_FILL,
        magnitude_std: float = MAGNITUDE_STD,
        probability: float = OP_PROBABILITY,
    ) -> None:
        if not 0 <= magnitude <= LEVEL_DENOM:
            raise ConfigError(f"RandAugment magnitude must be in 0..10 (timm's scale), got {magnitude}.")
        if num_ops < 1:
            raise ConfigError(f"RandAugment num_ops must be at least 1, got {num_ops}.")
        self.magnitude, self.num_ops, self.fill = magnitude, num_ops, tuple(fill)
        self.magnitude_std, self.probability = magnitude_std, probability

    def plan(self, rng: random.Random) -> list[OpCall]:
        calls = []
        for _ in range(self.num_ops):
            name = RAND_AUGMENT_OPS[rng.randrange(len(RAND_AUGMENT_OPS))]  # with replacement
            if rng.random() > self.probability:
                calls.append(OpCall(name, applied=False))
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude = rng.gauss(magnitude, self.magnitude_std)
            magnitude = max(0.0, min(magnitude, LEVEL_DENOM))
            mapping = LEVEL_MAPPINGS[name]
            argument = mapping(magnitude, rng) if mapping is not None else None
            resample = rng.choice(RANDOM_RESAMPLE) if name in GEOMETRIC_OPS else None
            calls.append(OpCall(name, True, magnitude, argument, resample))
        return calls

    def apply(self, image: Image.Image, calls: Sequence[OpCall]) -> Image.Image:
        for call in calls:
            if call.applied:
                resample = call.resample if call.resample is not None else Image.Resampling.BICUBIC
                image = apply_op(image, call.name, call.argument, self.fill, resample)
        return image

    def __call__(self, image: Image.Image, rng: random.Random) -> Image.Image:
        return self.apply(image, self.plan(rng))

    def __repr__(self) -> str:
        return f"RandAugment(m={self.magnitude}, n={self.num_ops}, mstd={self.magnitude_std}, p={self.probability})"


def random_resized_crop_box(
    width: int,
    height: int,
    rng: random.Random,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of a RandomResizedCrop on a width×height image."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_width = round(math.sqrt(target_area * aspect))
        crop_height = round(math.sqrt(target_area / aspect))
        if crop_width <= width and crop_height <= height:
            top = rng.randint(0, height - crop_height)
            left = rng.randint(0, width - crop_width)
            return left, top, crop_width, crop_height
    # No try fitted: the largest central crop whose aspect ratio is within `ratio`.
    if width / height < ratio[0]:
        crop_width, crop_height = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        crop_width, crop_height = round(height * ratio[1]), height
    else:
        crop_width, crop_height = width, height
    return (width - crop_width) // 2, (height - crop_height) // 2, crop_width, crop_height


@dataclass(frozen=True)
class ImageSpec:
    """What the model's processor would output: a size×size RGB image, normalised with mean/std."""

    size: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"ImageSpec.size must be a positive integer, got {self.size}.")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("ImageSpec.mean and ImageSpec.std go together: set both or neither.")

    @property
    def fill(self) -> tuple[int, ...]:
        """timm's fill for geometric ops: the normalisation mean in 0..255 (grey 128 without one)."""
        if self.mean is None:
            return DEFAULT_FILL
        return tuple(min(255, round(255 * value)) for value in self.mean)

    def to_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Stack size×size RGB images into a normalised float batch [B, 3, size, size]."""
        batch = torch.from_numpy(np.stack([np.asarray(image, dtype=np.uint8) for image in images]))
        batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
            batch = (batch - mean) / std
        return batch


def _generator(seed: int, stream: int) -> random.Random:
    # A string seed is hashed (SHA-512) by `random`, so nearby seeds give unrelated streams.
    return random.Random(f"hf-negmerge-augment:{seed}:{stream}")


class ImageNetTrainTransform:
    """timm's `transforms_imagenet_train` with RandAugment: PIL images -> normalised batch.

    Used as the collator's `processor_fn` in place of the classifier's own preprocessing (the crop
    replaces its resize and centre crop). `randaugment=None` keeps crop and flip only.
    """

    def __init__(
        self,
        spec: ImageSpec,
        randaugment: RandAugment | None,
        seed: int = 0,
        stream: int = 0,
        flip_probability: float = 0.5,
        random_crop: bool = True,
    ) -> None:
        self.spec, self.randaugment, self.flip_probability = spec, randaugment, flip_probability
        self.random_crop = random_crop
        self.rng = _generator(seed, stream)

    def crop_box(self, image: Image.Image) -> tuple[int, int, int, int]:
        if not self.random_crop:
            return 0, 0, *image.size
        return random_resized_crop_box(*image.size, self.rng)

    def augment(self, image: Image.Image) -> Image.Image:
        """One image through crop, flip and RandAugment (still a PIL image)."""
        left, top, width, height = self.crop_box(image)
        resample = self.rng.choice(RANDOM_RESAMPLE)
        image = image.convert("RGB").crop((left, top, left + width, top + height))
        image = image.resize((self.spec.size, self.spec.size), resample)
        if self.rng.random() < self.flip_probability:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.randaugment is not None:
            image = self.randaugment(image, self.rng)
        return image

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.spec.to_tensor([self.augment(image) for image in images])


class PadCropFlipTransform:
    """CIFAR's training transform: zero-pad by `padding`, random size×size crop, flip with p=0.5.

    Images not already size×size are first resized to it (bilinear), as the processor would.
    """

    def __init__(
        self, spec: ImageSpec, padding: int = 4, seed: int = 0, stream: int = 0, flip_probability: float = 0.5
    ) -> None:
        if padding < 0:
            raise ConfigError(f"PadCropFlipTransform padding must be ≥ 0, got {padding}.")
        self.spec, self.padding, self.flip_probability = spec, padding, flip_probability
        self.rng = _generator(seed, stream)

    def crop_offset(self) -> tuple[int, int]:
        """(left, top) of the crop inside the padded image, each uniform over 0..2·padding."""
        return self.rng.randint(0, 2 * self.padding), self.rng.randint(0, 2 * self.padding)

    def augment(self, image: Image.Image) -> Image.Image:
        size = self.spec.size
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        padded = Image.new("RGB", (size + 2 * self.padding, size + 2 * self.padding), (0, 0, 0))
        padded.paste(image, (self.padding, self.padding))
        left, top = self.crop_offset()
        image = padded.crop((left, top, left + size, top + size))
        if self.rng.random() < self.flip_probability:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.spec.to_tensor([self.augment(image) for image in images])


TrainTransform = Callable[[Sequence[Image.Image]], torch.Tensor]
AugmentationBuilder = Callable[["TrainingHyperparameters", ImageSpec, int], TrainTransform | None]
AUGMENTATIONS: dict[str, AugmentationBuilder] = {}
DEFAULT_AUGMENTATION = "timm_randaugment"


def register_augmentation(name: str) -> Callable[[AugmentationBuilder], AugmentationBuilder]:
    """Add a builder `(hyperparameters, spec, stream) -> transform or None` (None: plain preprocessing)."""

    def decorator(builder: AugmentationBuilder) -> AugmentationBuilder:
        if name in AUGMENTATIONS:
            raise ConfigError(f"Augmentation {name!r} is already registered.")
        AUGMENTATIONS[name] = builder
        return builder

    return decorator


@register_augmentation("timm_randaugment")
def _timm_randaugment(
    hyperparameters: TrainingHyperparameters, spec: ImageSpec, stream: int
) -> TrainTransform | None:
    """The authors' CLIP transform; runs without RandAugment settings keep the plain processor."""
    if not hyperparameters.uses_augmentation:
        return None
    randaugment = RandAugment(
        hyperparameters.randaugment_magnitude, hyperparameters.randaugment_num_ops, fill=spec.fill
    )
    return ImageNetTrainTransform(spec, randaugment, seed=hyperparameters.seed, stream=stream)


@register_augmentation("randaugment")
def _randaugment_whole_image(
    hyperparameters: TrainingHyperparameters, spec: ImageSpec, stream: int
) -> TrainTransform | None:
    """timm's RandAugment alone, on the whole image resized to the model's size (no crop, no flip).

    For tiny low-resolution images (the built-in 8×8 digits), where a crop down to 8% of the area
    leaves a pixel or two of the digit and the runs learn nothing about the forget set.
    """
    if not hyperparameters.uses_augmentation:
        return None
    randaugment = RandAugment(
        hyperparameters.randaugment_magnitude, hyperparameters.randaugment_num_ops, fill=spec.fill
    )
    return ImageNetTrainTransform(
        spec, randaugment, seed=hyperparameters.seed, stream=stream, flip_probability=0.0, random_crop=False
    )


@register_augmentation("cifar_pad_crop_flip")
def _cifar_pad_crop_flip(
    hyperparameters: TrainingHyperparameters, spec: ImageSpec, stream: int
) -> TrainTransform | None:
    """The standard ResNet-18 / CIFAR-10 setting: pad 4, crop, flip on every run."""
    return PadCropFlipTransform(spec, seed=hyperparameters.seed, stream=stream)


def build_augmentation(
    hyperparameters: TrainingHyperparameters,
    spec: ImageSpec,
    name: str = DEFAULT_AUGMENTATION,
    stream: int = 0,
) -> TrainTransform | None:
    """The run's training transform (PIL images -> batch), or None for the plain processor.

    `stream` separates the random draws of data-parallel ranks that share one seed.
    """
    if name not in AUGMENTATIONS:
        raise ConfigError(f"Unknown augmentation {name!r}; registered: {sorted(AUGMENTATIONS)}.")
    return AUGMENTATIONS[name](hyperparameters, spec, stream)
