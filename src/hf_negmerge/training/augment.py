"""Batched, seeded image augmentation for the fine-tuning loop (kornia, pure torch, GPU-capable).

The paper's CLIP pool differs only by RandAugment strength (magnitude m ∈ 1..10, number of
operations n ∈ 1..3). The authors used torchvision's RandAugment, whose magnitude indexes 31
bins over each operation's range, so m/30 of the range. kornia's `RandAugment(n, m)` uses the
same m/30 scale, so the paper's m is passed through unchanged. kornia's *default* policy maps
m onto ranges where the colour operations are strongest at small m (brightness factor 0.16 at
m=1) and solarize weakens as m grows; `RANDAUGMENT_POLICY` below re-targets the ranges so that
every operation's strength grows with m, as in torchvision:

- rotate ±30°·m/30, shear ±16.7°·m/30, translate ±0.45·size·m/30 (torchvision's 150/331);
- brightness / contrast / sharpness / colour factor 1 + 0.9·m/30 (kornia has no random sign for
  these, so they only brighten/strengthen, where torchvision picks the sign at random);
- posterize 8 − 4·m/30 bits; auto-contrast and equalize (no magnitude);
- solarize is left out: kornia's threshold is m/30, which solarizes *more* at small m.

Randomness comes from torch's global generator, which `finetune` seeds per run, so a run is
reproducible from its `seed`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .grid import TrainingHyperparameters

RANDAUGMENT_POLICY: list[list[tuple[str, float, float]]] = [
    [("auto_contrast", 0.0, 1.0)],
    [("equalize", 0.0, 1.0)],
    [("rotate", -30.0, 30.0)],
    [("shear_x", -0.0928, 0.0928)],  # kornia multiplies by 180: 0.0928·180 ≈ atan(0.3) in degrees
    [("shear_y", -0.0928, 0.0928)],
    [("translate_x", -0.45, 0.45)],
    [("translate_y", -0.45, 0.45)],
    [("brightness", 1.0, 1.9)],
    [("contrast", 1.0, 1.9)],
    [("sharpness", 1.0, 1.9)],
    [("color", 1.0, 1.9)],
    [("posterize", 4.0, 8.0)],
]


class RandAugment(nn.Module):
    """RandAugment on a batch of images in [0, 1], shape (B, C, H, W); a new draw per image.

    kornia picks the n operations once per call; calling it on one image at a time would be slow,
    so each batch is split into chunks of `ops_groups` images that draw their own operations.
    """

    def __init__(self, magnitude: int, num_ops: int, ops_groups: int = 8) -> None:
        super().__init__()
        from kornia.augmentation.auto import RandAugment as KorniaRandAugment

        if not 1 <= magnitude <= 29:
            raise ConfigError(f"RandAugment magnitude must be in 1..29 (0..30 scale), got {magnitude}.")
        if not 1 <= num_ops <= len(RANDAUGMENT_POLICY):
            raise ConfigError(
                f"RandAugment num_ops must be in 1..{len(RANDAUGMENT_POLICY)} (the number of operations), got {num_ops}."
            )
        self.magnitude, self.num_ops, self.ops_groups = magnitude, num_ops, ops_groups
        self.augment = KorniaRandAugment(n=num_ops, m=magnitude, policy=RANDAUGMENT_POLICY)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"RandAugment expects (B, C, H, W) images, got shape {tuple(images.shape)}.")
        chunks = images.chunk(max(1, min(self.ops_groups, images.shape[0])))
        return torch.cat([self.augment(chunk).clamp_(0.0, 1.0) for chunk in chunks])

    def extra_repr(self) -> str:
        return f"magnitude={self.magnitude}, num_ops={self.num_ops}"


class OnNormalizedPixels(nn.Module):
    """Run an augmentation meant for [0, 1] images on processor-normalised pixel values.

    Model processors hand out (x − mean) / std; geometric and colour operations need the raw
    range, so the batch is mapped back, augmented, clamped and normalised again.
    """

    def __init__(self, augment: nn.Module, image_mean: Sequence[float], image_std: Sequence[float]) -> None:
        super().__init__()
        self.augment = augment
        self.register_buffer("mean", torch.tensor(list(image_mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(image_std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(pixel_values), self.std.to(pixel_values)
        images = (pixel_values * std + mean).clamp(0.0, 1.0)
        return (self.augment(images) - mean) / std


AugmentationBuilder = Callable[[TrainingHyperparameters], nn.Module | None]
AUGMENTATIONS: dict[str, AugmentationBuilder] = {}


def register_augmentation(name: str) -> Callable[[AugmentationBuilder], AugmentationBuilder]:
    """Add a builder `hyperparameters -> module or None` (None when the run does not use it)."""

    def decorator(builder: AugmentationBuilder) -> AugmentationBuilder:
        if name in AUGMENTATIONS:
            raise ConfigError(f"Augmentation {name!r} is already registered.")
        AUGMENTATIONS[name] = builder
        return builder

    return decorator


@register_augmentation("randaugment")
def _randaugment(hyperparameters: TrainingHyperparameters) -> nn.Module | None:
    if not hyperparameters.uses_augmentation:
        return None
    return RandAugment(hyperparameters.randaugment_magnitude, hyperparameters.randaugment_num_ops)


def build_augmentation(
    hyperparameters: TrainingHyperparameters,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
) -> nn.Module | None:
    """The run's augmentations chained in registry order, or None when it uses none.

    With `image_mean`/`image_std` the result works on normalised pixel values.
    """
    modules = [
        module for builder in AUGMENTATIONS.values() if (module := builder(hyperparameters)) is not None
    ]
    if not modules:
        return None
    augment = modules[0] if len(modules) == 1 else nn.Sequential(*modules)
    if image_mean is not None and image_std is not None:
        return OnNormalizedPixels(augment, image_mean, image_std)
    return augment
