"""Forgetting scenarios: turn a dataset (and an optional control dataset) into forget / retain / control splits.

Three scenarios, chosen by name from :data:`SCENARIOS`:

- ``"dataset"``: the paper's CLIP setting, forget a whole dataset and watch a control dataset (ImageNet);
- ``"class"``: forget some classes of a dataset, keep the rest;
- ``"random"``: the paper's standard setting, forget a random fraction of the training samples.

Every split is deterministic given ``DataConfig.seed`` (`data.config`). See docs/data.md for the exact rules.

Longer than most modules (~430 lines): one job, building every split of a run. The scenarios share
the deterministic subset and validation-carving helpers and the split loading, and the rules that
keep forget, retain, validation and test rows disjoint are checked more easily in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch

from hf_negmerge.data.config import SCENARIO_NAMES, DataConfig
from hf_negmerge.data.loading import (
    MissingSplitError,
    align_to_labels,
    class_names_of,
    label_ids,
    load_image_dataset,
    source_label,
    validate_image_dataset,
)
from hf_negmerge.errors import ConfigError

SOURCE_INDEX_COLUMN = "source_index"


@dataclass
class UnlearningData:
    """Every split one unlearning run needs; a field is None when the scenario has no such split."""

    scenario: str
    class_names: list[str] | None  # classes of the forget dataset; None when labels are unnamed ids
    num_classes: int
    forget_train: datasets.Dataset  # what the fine-tuning grid trains on
    forget_val: datasets.Dataset  # λ selection
    forget_test: datasets.Dataset  # reported forget accuracy
    retain_train: datasets.Dataset | None = None  # retraining from scratch; MIA members
    retain_val: datasets.Dataset | None = None  # λ-selection constraint (class / random)
    retain_test: datasets.Dataset | None = None  # reported retain accuracy
    test: datasets.Dataset | None = None  # held-out test split (TA)
    control_val: datasets.Dataset | None = None  # λ-selection constraint ('dataset' scenario)
    control_test: datasets.Dataset | None = None  # reported control accuracy
    control_class_names: list[str] | None = None
    forget_classes: list[int] | None = None  # 'class' scenario: the forgotten class ids
    validation_source: str = ""  # where the validation rows came from (reports say which)
    validation_warning: str | None = None  # set by callers that know what θ₀ was trained on
    test_carved: bool = False  # the test split was carved from train_split (test_split=None)

    SPLIT_NAMES = (
        "forget_train",
        "forget_val",
        "forget_test",
        "retain_train",
        "retain_val",
        "retain_test",
        "test",
        "control_val",
        "control_test",
    )

    def splits(self) -> dict[str, datasets.Dataset]:
        """The splits this scenario has, by name."""
        return {name: getattr(self, name) for name in self.SPLIT_NAMES if getattr(self, name) is not None}

    def summary(self) -> dict[str, Any]:
        """Sizes and classes, JSON-friendly, for plans and reports."""
        summary: dict[str, Any] = {
            "scenario": self.scenario,
            "num_classes": self.num_classes,
            "sizes": {name: len(split) for name, split in self.splits().items()},
        }
        if self.forget_classes is not None:
            names = self.class_names
            summary["forget_classes"] = [names[i] if names else i for i in self.forget_classes]
        if self.control_class_names is not None:
            summary["control_num_classes"] = len(self.control_class_names)
        if self.validation_source:
            summary["validation_source"] = self.validation_source
        if self.validation_warning:
            summary["validation_warning"] = self.validation_warning
        return summary


# --------------------------------------------------------------------------- deterministic subsets


def _permutation(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def validation_size(num_rows: int, fraction: float, maximum: int) -> int:
    """The authors' rule: ``min(int(num_rows * fraction), maximum)``."""
    return min(int(num_rows * fraction), maximum)


def carve_validation(
    dataset: datasets.Dataset, fraction: float, maximum: int, seed: int, where: str = "dataset"
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split ``dataset`` into (rest, validation) with :func:`validation_size` validation rows.

    Membership equals the authors' ``torch.utils.data.random_split(ds, [rest, val],
    generator=torch.Generator().manual_seed(seed))``; rows keep their original order inside each part.
    """
    total = len(dataset)
    size = validation_size(total, fraction, maximum)
    if size < 1 or size >= total:
        raise ConfigError(
            f"{where} has {total} rows: too few to carve a validation split of {fraction:.0%} "
            f"(at most {maximum}) that leaves rows on both sides"
        )
    order = _permutation(total, seed)
    return dataset.select(sorted(order[: total - size])), dataset.select(sorted(order[total - size :]))


def random_subset_indices(num_rows: int, size: int, seed: int) -> list[int]:
    """``size`` distinct row indices drawn uniformly with ``seed``, in ascending order."""
    return sorted(_permutation(num_rows, seed)[:size])


def _cap(dataset: datasets.Dataset, max_samples: int | None, seed: int) -> datasets.Dataset:
    # A random subset, not the first rows: many datasets are sorted by class.
    if max_samples is None or len(dataset) <= max_samples:
        return dataset
    return dataset.select(random_subset_indices(len(dataset), max_samples, seed))


def _rows_where(dataset: datasets.Dataset, mask: np.ndarray) -> datasets.Dataset:
    return dataset.select(np.flatnonzero(mask).tolist())


# --------------------------------------------------------------------------- loading the pieces


@dataclass
class _Source:
    """One dataset's settings, so the forget and control datasets load through the same code."""

    source: Any
    image_column: str
    label_column: str
    class_names: list[str] | None
    role: str
    label_mapping: dict[str, str] | None = None
    label_names: list[str] | None = None  # the classifier's labels: classes are mapped onto them by name


def _load_split(config: DataConfig, source: _Source, split: str, key: str) -> datasets.Dataset:
    """One split, with labels mapped by name onto ``source.label_names``; ``key`` names the setting."""
    try:
        dataset = load_image_dataset(
            source.source,
            split=split,
            image_column=source.image_column,
            label_column=source.label_column,
            class_names=source.class_names,
            validate=False,  # validated below, after capping, so tiny runs stay cheap
            label_mapping=source.label_mapping,
        )
    except MissingSplitError as error:
        hint = {
            "data.test_split": " (or data.test_split: null to carve a test split from data.train_split)",
            "data.validation_split": " (or data.validation_split: null to carve validation)",
            "data.control_validation_split": " (or data.control_validation_split: null to carve it)",
        }.get(key, "")
        raise ConfigError(
            f"{str(error).rstrip('.')}. Set the recipe key {key} to one of the splits{hint}."
        ) from error
    where = f"{source.role} dataset {source_label(source.source)!r} split {split!r}"
    if source.label_names is not None:
        dataset = align_to_labels(dataset, source.label_names, where)
    if SOURCE_INDEX_COLUMN not in dataset.column_names:
        dataset = dataset.add_column(SOURCE_INDEX_COLUMN, np.arange(len(dataset), dtype=np.int64))
    dataset = _cap(dataset, config.max_samples, config.seed)
    validate_image_dataset(dataset, where, config.image_check_limit)
    return dataset


def _class_names_agree(parts: dict[str, datasets.Dataset], role: str) -> list[str] | None:
    per_split = {split: class_names_of(part) for split, part in parts.items()}
    if len({tuple(names) if names is not None else None for names in per_split.values()}) > 1:
        raise ConfigError(f"the {role} dataset's splits disagree on the class names: {per_split}")
    return next(iter(per_split.values()))


def _num_classes(class_names: list[str] | None, *parts: datasets.Dataset) -> int:
    if class_names is not None:
        return len(class_names)
    return int(max(int(label_ids(part).max()) for part in parts)) + 1


def resolve_forget_classes(
    requested: Sequence[int | str], class_names: list[str] | None, num_classes: int
) -> list[int]:
    """Class ids (sorted, unique) for ids or names; ConfigError names anything unknown."""
    resolved: set[int] = set()
    for item in requested:
        if isinstance(item, str) and class_names is not None and item in class_names:
            resolved.add(class_names.index(item))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < num_classes:
                raise ConfigError(f"forget class id {item} is outside 0..{num_classes - 1}")
            resolved.add(int(item))
        else:
            known = class_names if class_names is not None else f"ids 0..{num_classes - 1} (no class names)"
            raise ConfigError(f"forget class {item!r} is not a known class; known classes: {known}")
    return sorted(resolved)


def _control_splits(config: DataConfig) -> tuple[datasets.Dataset, datasets.Dataset, list[str] | None]:
    control = _Source(
        config.control_dataset,
        config.control_image_column,
        config.control_label_column,
        config.control_class_names,
        "control",
    )
    test = _load_split(config, control, config.control_test_split, "data.control_test_split")
    if config.control_validation_split is not None:
        val = _load_split(config, control, config.control_validation_split, "data.control_validation_split")
    elif config.control_validation_from == "test":
        test, val = carve_validation(
            test, config.validation_fraction, config.validation_max, config.seed, "control test split"
        )
    else:
        train = _load_split(config, control, config.control_train_split, "data.control_train_split")
        _, val = carve_validation(
            train, config.validation_fraction, config.validation_max, config.seed, "control train split"
        )
    return val, test, _class_names_agree({"val": val, "test": test}, "control")


# --------------------------------------------------------------------------- scenarios

ScenarioBuilder = Callable[
    [DataConfig, datasets.Dataset, datasets.Dataset, datasets.Dataset | None], dict[str, Any]
]
SCENARIOS: dict[str, ScenarioBuilder] = {}


def register_scenario(name: str) -> Callable[[ScenarioBuilder], ScenarioBuilder]:
    """Add a scenario: a function (config, train, test, validation) -> UnlearningData fields.

    ``validation`` is a held-out validation split (named, or carved from test) or None, in which
    case the scenario carves its validation rows from ``train``.
    """

    def register(builder: ScenarioBuilder) -> ScenarioBuilder:
        SCENARIOS[name] = builder
        if name not in SCENARIO_NAMES:
            SCENARIO_NAMES.append(name)
        return builder

    return register


@register_scenario("dataset")
def _dataset_scenario(
    config: DataConfig, train: datasets.Dataset, test: datasets.Dataset, validation: datasets.Dataset | None
) -> dict[str, Any]:
    """Forget the whole dataset; validation is carved from train (10%, ≤5000) unless one is given."""
    if validation is not None:
        forget_train, forget_val = train, validation
    else:
        forget_train, forget_val = carve_validation(
            train, config.validation_fraction, config.validation_max, config.seed, "forget train split"
        )
    return {"forget_train": forget_train, "forget_val": forget_val, "forget_test": test}


@register_scenario("class")
def _class_scenario(
    config: DataConfig, train: datasets.Dataset, test: datasets.Dataset, validation: datasets.Dataset | None
) -> dict[str, Any]:
    """Forget some classes: forget_* hold their rows, retain_* the other classes' rows."""
    class_names = class_names_of(train)
    forget = resolve_forget_classes(
        config.forget_classes, class_names, _num_classes(class_names, train, test)
    )
    train_labels = label_ids(train)
    in_train = np.isin(train_labels, forget)
    in_test = np.isin(label_ids(test), forget)
    absent = sorted(set(forget) - set(train_labels[in_train].tolist()))
    if absent:
        names = [class_names[i] for i in absent] if class_names else absent
        raise ConfigError(f"forget class(es) {names} have no rows in the train split")
    if in_train.all():
        raise ConfigError("every train row belongs to a forget class: nothing is left to retain")
    forget_pool, retain_pool = _rows_where(train, in_train), _rows_where(train, ~in_train)
    if validation is not None:
        in_val = np.isin(label_ids(validation), forget)
        forget_train = forget_pool
        forget_val, retain_val = _rows_where(validation, in_val), _rows_where(validation, ~in_val)
    else:
        forget_train, forget_val = carve_validation(
            forget_pool,
            config.validation_fraction,
            config.validation_max,
            config.seed,
            "forget-class train rows",
        )
        _, retain_val = carve_validation(
            retain_pool,
            config.validation_fraction,
            config.validation_max,
            config.seed,
            "retain-class train rows",
        )
    return {
        "forget_train": forget_train,
        "forget_val": forget_val,
        "forget_test": _rows_where(test, in_test),
        "retain_train": retain_pool,
        "retain_val": retain_val,
        "retain_test": _rows_where(test, ~in_test),
        "test": test,
        "forget_classes": forget,
    }


@register_scenario("random")
def _random_scenario(
    config: DataConfig, train: datasets.Dataset, test: datasets.Dataset, validation: datasets.Dataset | None
) -> dict[str, Any]:
    """Forget a random ``forget_fraction`` of train; accuracies on the forgotten samples themselves.

    forget_val is always a slice of the forget set (the samples to forget are training rows); a
    given validation split replaces the retain validation rows.
    """
    total = len(train)
    size = int(total * config.forget_fraction)
    if size < 1 or size >= total:
        raise ConfigError(
            f"forget_fraction={config.forget_fraction} of the {total} train rows leaves an empty forget or "
            "retain set"
        )
    chosen = np.zeros(total, dtype=bool)
    chosen[random_subset_indices(total, size, config.seed)] = True
    forget_set, retain_set = _rows_where(train, chosen), _rows_where(train, ~chosen)
    _, forget_val = carve_validation(
        forget_set, config.validation_fraction, config.validation_max, config.seed, "forget set"
    )
    if validation is not None:
        retain_val = validation
    else:
        _, retain_val = carve_validation(
            retain_set, config.validation_fraction, config.validation_max, config.seed, "retain set"
        )
    return {
        "forget_train": forget_set,
        "forget_val": forget_val,
        "forget_test": forget_set,
        "retain_train": retain_set,
        "retain_val": retain_val,
        "retain_test": retain_set,
        "test": test,
    }


def _forget_source(config: DataConfig, label_names: Sequence[str] | None = None) -> _Source:
    return _Source(
        config.dataset,
        config.image_column,
        config.label_column,
        config.class_names,
        "forget",
        config.label_mapping,
        list(label_names) if label_names is not None else None,
    )


def build_unlearning_data(config: DataConfig, label_names: Sequence[str] | None = None) -> UnlearningData:
    """Load, validate and split the data of one unlearning run (deterministic given ``config.seed``).

    ``label_names``: a classifier's labels in id order (a pretrained model's ``id2label``); the
    forget dataset's classes are then mapped onto them by name, and forget classes resolve against them.
    """
    source = _forget_source(config, label_names)
    train = _load_split(config, source, config.train_split, "data.train_split")
    if config.test_split is None:
        train, test = carve_validation(
            train, config.test_fraction, len(train), config.seed, f"train split {config.train_split!r}"
        )
        test_name = (
            f"a test split carved from {config.train_split!r} (data.test_fraction={config.test_fraction})"
        )
    else:
        test = _load_split(config, source, config.test_split, "data.test_split")
        test_name = f"test split {config.test_split!r}"
    validation = None
    if config.validation_split is not None:
        validation = _load_split(config, source, config.validation_split, "data.validation_split")
        validation_source = f"validation split {config.validation_split!r}"
    elif config.validation_from == "test":
        test, validation = carve_validation(
            test, config.validation_fraction, config.validation_max, config.seed, test_name
        )
        validation_source = f"carved from {test_name}; test numbers are on the rest"
    else:
        validation_source = f"carved from train split {config.train_split!r}"
    if config.scenario == "random" and validation is not None:
        validation_source = f"retain: {validation_source}; forget: carved from the forget set"
    parts = {"train": train, "test": test} | ({"validation": validation} if validation is not None else {})
    class_names = _class_names_agree(parts, "forget")
    fields = SCENARIOS[config.scenario](config, train, test, validation)
    if config.control_dataset is not None:
        fields["control_val"], fields["control_test"], fields["control_class_names"] = _control_splits(config)
    data = UnlearningData(
        scenario=config.scenario,
        class_names=class_names,
        num_classes=len(label_names) if label_names is not None else _num_classes(class_names, train, test),
        validation_source=validation_source,
        test_carved=config.test_split is None,
        **fields,
    )
    for name, split in data.splits().items():
        if len(split) == 0:
            raise ConfigError(f"split {name!r} of scenario {config.scenario!r} is empty")
    return data
