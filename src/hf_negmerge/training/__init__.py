"""Training stage: the hyperparameter grid, augmentation, the fine-tuning loop and the grid runner."""

from .augment import (
    AUGMENTATIONS,
    RAND_AUGMENT_OPS,
    ImageNetTrainTransform,
    ImageSpec,
    PadCropFlipTransform,
    RandAugment,
    build_augmentation,
    register_augmentation,
)
from .grid import (
    CLIP_EPOCHS_BY_DATASET,
    GRID_PRESETS,
    GridPoint,
    GridSpec,
    TrainingHyperparameters,
    as_grid_points,
    available_grid_presets,
    grid_preset,
    register_grid_preset,
)
from .loop import finetune
from .pretrain import PRETRAIN_RECIPES, prepare_original_model
from .runner import GridResult, GridRunner, run_grid

__all__ = [
    "AUGMENTATIONS",
    "CLIP_EPOCHS_BY_DATASET",
    "GRID_PRESETS",
    "PRETRAIN_RECIPES",
    "RAND_AUGMENT_OPS",
    "GridPoint",
    "GridResult",
    "GridRunner",
    "GridSpec",
    "ImageNetTrainTransform",
    "ImageSpec",
    "PadCropFlipTransform",
    "RandAugment",
    "TrainingHyperparameters",
    "as_grid_points",
    "available_grid_presets",
    "build_augmentation",
    "finetune",
    "grid_preset",
    "prepare_original_model",
    "register_augmentation",
    "register_grid_preset",
    "run_grid",
]
