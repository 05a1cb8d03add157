"""The architecture registry: `ModelConfig` validates names here; `base` defines the classes.

A leaf (no torch, no model code), so `models.config` can check `architecture` without importing
`models.base`, which imports the config (no import cycle, see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import ImageClassifier

CLASSIFIER_REGISTRY: dict[str, type[ImageClassifier]] = {}

ClassifierT = TypeVar("ClassifierT", bound="type[ImageClassifier]")


def register_classifier(name: str) -> Callable[[ClassifierT], ClassifierT]:
    """Class decorator: make an ImageClassifier subclass buildable as `ModelConfig(architecture=name)`."""

    def register(cls: ClassifierT) -> ClassifierT:
        if name in CLASSIFIER_REGISTRY:
            raise ConfigError(
                f"Architecture {name!r} is already registered by {CLASSIFIER_REGISTRY[name].__name__}."
            )
        cls.architecture = name
        CLASSIFIER_REGISTRY[name] = cls
        return cls

    return register
