"""`DataConfig`: where the forget data comes from and how it is split (validated on creation).

Kept apart from the scenarios that read it (`data.scenarios`) so that a recipe is validated without
building any split. `SCENARIO_NAMES` lists the scenario names a config accepts; each
`data.scenarios.register_scenario` adds its name.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hf_negmerge.data.loading import DEFAULT_IMAGE_CHECK_LIMIT, is_in_memory, source_label
from hf_negmerge.errors import ConfigError

#: Scenario names `DataConfig.scenario` accepts, filled by `data.scenarios.register_scenario`.
SCENARIO_NAMES: list[str] = []


@dataclass
class DataConfig:
    """Where the data comes from and how it is split into what to forget and what to keep."""

    dataset: Any = field(
        default="digits",
        metadata={
            "help": "Forget dataset: 'digits', a Hub id, an image folder, parquet file(s), a save_to_disk folder "
            "or (from Python) a datasets.DatasetDict."
        },
    )
    scenario: str = field(
        default="random",
        metadata={"help": "What to forget: 'dataset', 'class' or 'random' (see docs/data.md)."},
    )
    train_split: str = field(default="train", metadata={"help": "Split the model was trained on."})
    test_split: str | None = field(
        default="test",
        metadata={
            "help": "Held-out split for reported accuracies; None carves one (test_fraction) from train_split."
        },
    )
    test_fraction: float = field(
        default=0.2,
        metadata={"help": "test_split=None: fraction of train_split carved out as the test split."},
    )
    validation_split: str | None = field(
        default=None,
        metadata={
            "help": "A held-out validation split (every scenario); None carves one (see validation_from)."
        },
    )
    validation_from: str = field(
        default="train",
        metadata={
            "help": "Where validation is carved when validation_split is None: 'train' (authors) or 'test' "
            "(rows the original model never saw; test numbers are then reported on the rest)."
        },
    )
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class ids or names."})
    class_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "Names of plain integer label ids (by position), or the order of classes the dataset "
            "already names (same names); never renames named classes. None: from the data."
        },
    )
    label_mapping: dict[str, str] | None = field(
        default=None,
        metadata={
            "help": "Rename classes by name {dataset_name: model_label}, e.g. onto a pretrained model's labels."
        },
    )
    forget_classes: list[int | str] | None = field(
        default=None, metadata={"help": "'class' scenario: class ids or names to forget."}
    )
    forget_fraction: float = field(
        default=0.1, metadata={"help": "'random' scenario: fraction of train_split to forget (paper: 0.1)."}
    )
    control_dataset: Any = field(
        default=None,
        metadata={
            "help": "Control dataset (paper: ImageNet); required by the 'dataset' scenario, optional otherwise."
        },
    )
    control_train_split: str = field(
        default="train", metadata={"help": "Control split to carve validation from."}
    )
    control_test_split: str = field(default="test", metadata={"help": "Control split for reported accuracy."})
    control_validation_split: str | None = field(
        default=None,
        metadata={"help": "A ready control validation split; None carves one (see control_validation_from)."},
    )
    control_validation_from: str = field(
        default="train",
        metadata={
            "help": "Where control validation is carved: 'train' (control_train_split) or 'test' "
            "(control_test_split; control accuracy is then reported on the rest)."
        },
    )
    control_image_column: str = field(
        default="image", metadata={"help": "Image column of the control dataset."}
    )
    control_label_column: str = field(
        default="label", metadata={"help": "Label column of the control dataset."}
    )
    control_class_names: list[str] | None = field(
        default=None, metadata={"help": "Class names of the control dataset (None: from its ClassLabel)."}
    )
    control_prompt_templates: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "CLIP: templates of the control set's zero-shot head: a list with '{}' or a preset name "
            "('imagenet': OpenAI's 80, as the authors); None: the forget set's model.prompt_templates."
        },
    )
    control_prompt_names: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "CLIP: the words for each control label id in the control head's prompts, by id: a list "
            "or a preset ('imagenet': OpenAI's 1000 curated names, as the authors); None: the class names."
        },
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of a pool carved out as validation (authors: 0.1)."}
    )
    validation_max: int = field(
        default=5000, metadata={"help": "Cap on a carved validation split (authors: 5000)."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seeds every random choice (forget subset, carves, caps)."}
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Keep at most this many rows of each loaded split (tiny runs)."}
    )
    image_check_limit: int | None = field(
        default=DEFAULT_IMAGE_CHECK_LIMIT,
        metadata={"help": "Decode this many images per split up front (None: all, 0: none)."},
    )

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIO_NAMES:
            raise ConfigError(f"DataConfig.scenario={self.scenario!r} is not one of {sorted(SCENARIO_NAMES)}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"DataConfig.validation_fraction={self.validation_fraction} must be in (0, 1)")
        for key in ("validation_from", "control_validation_from"):
            if getattr(self, key) not in ("train", "test"):
                raise ConfigError(f"DataConfig.{key}={getattr(self, key)!r} must be 'train' or 'test'")
        for key, split in (
            ("validation", self.validation_split),
            ("control_validation", self.control_validation_split),
        ):
            if split is not None and getattr(self, f"{key}_from") == "test":
                raise ConfigError(
                    f"DataConfig.{key}_split={split!r} and {key}_from='test' both say where validation "
                    "comes from; set only one"
                )
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"DataConfig.test_fraction={self.test_fraction} must be in (0, 1)")
        if self.label_mapping is not None:
            if not isinstance(self.label_mapping, dict):
                raise ConfigError(
                    f"DataConfig.label_mapping must map dataset class names to model labels, got {self.label_mapping!r}"
                )
            self.label_mapping = {str(key): str(value) for key, value in self.label_mapping.items()}
        if self.validation_max < 1:
            raise ConfigError(f"DataConfig.validation_max={self.validation_max} must be at least 1")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"DataConfig.max_samples={self.max_samples} must be at least 1 (or None)")
        if self.image_check_limit is not None and self.image_check_limit < 0:
            raise ConfigError(f"DataConfig.image_check_limit={self.image_check_limit} must be >= 0 (or None)")
        if isinstance(self.forget_classes, (int, str)):
            self.forget_classes = [self.forget_classes]
        if self.forget_classes is not None:
            self.forget_classes = list(self.forget_classes)
        if (self.scenario == "class") != (self.forget_classes is not None):
            raise ConfigError(
                "DataConfig.forget_classes must be given for scenario 'class' and only for it "
                f"(scenario={self.scenario!r}, forget_classes={self.forget_classes!r})"
            )
        if self.scenario == "class" and not self.forget_classes:
            raise ConfigError("DataConfig.forget_classes is empty; name at least one class to forget")
        if self.scenario == "random" and not 0.0 < self.forget_fraction < 1.0:
            raise ConfigError(f"DataConfig.forget_fraction={self.forget_fraction} must be in (0, 1)")
        if self.scenario == "dataset" and self.control_dataset is None:
            raise ConfigError(
                "scenario 'dataset' needs DataConfig.control_dataset: λ is chosen under a control-accuracy "
                "constraint (the paper uses ImageNet)"
            )
        for name in ("class_names", "control_class_names"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, [str(item) for item in value])
        self._check_control_head()

    def _check_control_head(self) -> None:
        """The control head's templates and names name a preset or list (resolved when scored)."""
        from hf_negmerge.models.templates import resolve_class_name_set, resolve_prompt_templates

        for key, resolve in (
            ("control_prompt_templates", resolve_prompt_templates),
            ("control_prompt_names", resolve_class_name_set),
        ):
            value = getattr(self, key)
            if value is None:
                continue
            if self.control_dataset is None:
                raise ConfigError(
                    f"DataConfig.{key} is set but there is no control dataset (data.control_dataset); "
                    "it words the control set's zero-shot head"
                )
            resolve(value, f"DataConfig.{key}")
            if not isinstance(value, str):
                setattr(self, key, list(value))

    def control_head_text(self) -> tuple[list[str] | None, list[str] | None]:
        """(names, templates) of the control head from the presets or lists; None where not set."""
        from hf_negmerge.models.templates import resolve_class_name_set, resolve_prompt_templates

        return (
            resolve_class_name_set(self.control_prompt_names, "data.control_prompt_names"),
            resolve_prompt_templates(self.control_prompt_templates, "data.control_prompt_templates"),
        )

    def published_source(self, key: str) -> Any:
        """`dataset` or `control_dataset` as published files name it: the value as given, or for
        a dataset object handed over from Python, what it holds (`source_label`)."""
        value = getattr(self, key)
        return source_label(value) if is_in_memory(value) else value

    def to_dict(self) -> dict[str, Any]:
        """Plain values (a recipe.yaml); dataset objects are named, not copied (`published_source`)."""
        sources = ("dataset", "control_dataset")
        values = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        return {
            key: self.published_source(key) if key in sources else copy.deepcopy(value)
            for key, value in values.items()
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown DataConfig key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**values)
