"""A mergekit-style YAML merge file for `hf-negmerge merge --config merge.yaml`.

```yaml
base: {model: org/vit-base, revision: 3f2a1c0}   # a local folder or a Hub id (+ revision)
models:
  - model: ./run1                                # relative to this file's folder
  - model: org/run2
    revision: main
method: negmerge
parameters: {consensus_fraction: 1.0}            # the method's own parameters
include: ["vision_model.*"]
exclude: null
accumulation_dtype: float32
scale: 0.8                                       # λ: also write θ₀ − λ·τ
```

Every merge setting is a `NegMergeConfig` field and is validated by it: the general ones sit at
the top level, the fields that belong to one method (`metadata["methods"]`) under `parameters`.
An unknown key, a λ-search key (those belong to `hf-negmerge unlearn`) or a parameter the chosen
method ignores is an error naming the file and the key. Nothing here touches the Hub: references
are resolved by `resolve_model` when the merge runs.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import MERGE_METHOD_NAMES, NegMergeConfig
from .errors import CheckpointError, ConfigError
from .recipe_files import load_yaml, yaml_problem

#: files of a model repo a merge needs: weights (safetensors), configs, processor and tokenizer, card
MODEL_FILE_PATTERNS = ("*.safetensors", "*.json", "*.txt", "*.model", "README.md")
_REFERENCE_KEYS = ("model", "revision")


def merge_fields() -> list[dataclasses.Field]:
    """The NegMergeConfig fields a merge takes (the λ-search fields belong to `unlearn`)."""
    return [item for item in dataclasses.fields(NegMergeConfig) if not item.metadata.get("lambda_search")]


def method_parameters() -> set[str]:
    """Fields that belong to some methods only: they go under `parameters:`."""
    return {item.name for item in merge_fields() if item.metadata.get("methods") is not None}


@dataclass(frozen=True)
class ModelRef:
    """A model given as a local folder or a Hub id, with an optional Hub revision."""

    model: str
    revision: str | None = None
    #: folder that relative local paths are taken from (the merge file's folder, or the CWD)
    root: Path = field(default=Path("."), compare=False)

    @property
    def local_path(self) -> Path:
        """Where the model would be as a local folder (relative paths taken from `root`)."""
        local = Path(self.model).expanduser()
        return local if local.is_absolute() else self.root / local

    def to_yaml(self) -> str | dict[str, str]:
        return {"model": self.model, "revision": self.revision} if self.revision else self.model


@dataclass
class MergeFile:
    """What a merge file says; `values` are NegMergeConfig fields, `sources` where each came from."""

    path: Path | None = None
    base: ModelRef | None = None
    models: list[ModelRef] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> MergeFile:
        """Read and check a merge file (keys only; values are checked by NegMergeConfig).

        Read like a recipe (`recipe_files.load_yaml`): a key given twice is an error, not the last
        value silently winning.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"Merge file {path} cannot be read ({getattr(error, 'strerror', None) or error})."
            ) from error
        try:
            raw = load_yaml(text, "merge file")
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from error
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {yaml_problem(error)}") from error
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{path} must hold a mapping (base:, models:, method:, …), got {type(raw).__name__}."
            )
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: Path | None = None) -> MergeFile:
        where = f"{path}: " if path is not None else "merge file: "
        root = path.parent if path is not None else Path(".")
        general = {item.name for item in merge_fields()} - method_parameters()
        known = {"base", "models", "parameters", *general}
        lambda_search = {item.name for item in dataclasses.fields(NegMergeConfig)} - {
            item.name for item in merge_fields()
        }
        merge = cls(path=path)
        for key in raw:
            if key in lambda_search:
                raise ConfigError(
                    f"{where}'{key}' is a λ-search setting of `hf-negmerge unlearn`; a merge does not "
                    "search λ. Drop it (give a fixed λ with 'scale')."
                )
            if key in method_parameters():
                raise ConfigError(f"{where}'{key}' is a method parameter; put it under 'parameters:'.")
            if key not in known:
                raise ConfigError(f"{where}unknown key '{key}'; known keys are {', '.join(sorted(known))}.")
        if "base" in raw:
            merge.base = _reference(raw["base"], f"{where}base", root)
        if "models" in raw:
            models = raw["models"]
            if not isinstance(models, list) or not models:
                raise ConfigError(f"{where}'models' must be a non-empty list of models.")
            merge.models = [_reference(item, f"{where}models[{i}]", root) for i, item in enumerate(models)]
        for key in sorted(general & set(raw)):
            _check_not_yaml_boolean(f"{where}'{key}'", key, raw[key])
            merge.values[key], merge.sources[key] = raw[key], f"{where}{key}"
        parameters = raw.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ConfigError(f"{where}'parameters' must be a mapping of the method's parameters.")
        for key, value in parameters.items():
            if key not in method_parameters():
                raise ConfigError(
                    f"{where}unknown method parameter 'parameters.{key}'; the methods' parameters are "
                    f"{', '.join(sorted(method_parameters()))}"
                    + (f" ('{key}' goes at the top level)" if key in general else "")
                    + "."
                )
            _check_not_yaml_boolean(f"{where}'parameters.{key}'", key, value)
            merge.values[key], merge.sources[key] = value, f"{where}parameters.{key}"
        return merge

    def effective_yaml(self, config: NegMergeConfig, base: ModelRef, models: list[ModelRef]) -> str:
        """The merge as a merge file (what ran: defaults filled in, CLI overrides applied)."""
        general = [item.name for item in merge_fields() if item.metadata.get("methods") is None]
        values = config.to_dict()
        document: dict[str, Any] = {
            "base": base.to_yaml(),
            "models": [ref.to_yaml() for ref in models],
            "method": config.method,
        }
        parameters = {
            item.name: values[item.name]
            for item in merge_fields()
            if config.method in (item.metadata.get("methods") or ())
        }
        if parameters:
            document["parameters"] = parameters
        for name in general:
            if name != "method" and (values[name] is not None or name in ("include", "exclude")):
                document[name] = values[name]
        return yaml.safe_dump(
            document, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100
        )


def _text_fields() -> dict[str, str]:
    """The merge fields that take text, each with what it expects (its choices, when it has them)."""
    hints = typing.get_type_hints(NegMergeConfig)
    expected = {}
    for item in merge_fields():
        if str in _members(hints[item.name]):
            choices = MERGE_METHOD_NAMES if item.name == "method" else item.metadata.get("choices")
            expected[item.name] = f"one of {', '.join(choices)}" if choices else "a list of strings"
    return expected


def _members(hint: Any) -> set[Any]:
    """Every type a hint names, inside unions and containers (`list[str] | None`: list, str, None)."""
    arguments = typing.get_args(hint)
    return {typing.get_origin(hint) or hint}.union(*(_members(argument) for argument in arguments))


def _check_not_yaml_boolean(where: str, key: str, value: Any) -> None:
    """A boolean where a field takes text is an unquoted yes/no/on/off that YAML 1.1 read as one."""
    expected = _text_fields().get(key)
    if expected is not None and (
        isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value))
    ):
        raise _yaml_boolean(where, value, expected)


def _yaml_boolean(where: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(
        f"{where} must be {expected}, got {value!r}: YAML reads an unquoted yes, no, on, off, true "
        "or false as a boolean. Quote the value if it is meant as text."
    )


def _reference(value: Any, where: str, root: Path) -> ModelRef:
    """`value` as a ModelRef: a string, or a mapping {model, revision}."""
    if isinstance(value, bool):
        raise _yaml_boolean(where, value, "a folder or Hub id")
    if isinstance(value, str) and value:
        return ModelRef(value, root=root)
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a folder or Hub id, or a mapping {{model: ..., revision: ...}}.")
    unknown = sorted(set(value) - set(_REFERENCE_KEYS))
    if "parameters" in unknown:
        raise ConfigError(
            f"{where}.parameters: per-model parameters (weights, densities) are not supported; every "
            "run counts the same in a NegMerge merge. Put method parameters under the top-level 'parameters:'."
        )
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; a model entry takes 'model' and 'revision'.")
    model, revision = value.get("model"), value.get("revision")
    if isinstance(model, bool):
        raise _yaml_boolean(f"{where}.model", model, "a folder or Hub id")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{where}.model must be a folder or a Hub id, got {model!r}.")
    if isinstance(revision, bool):
        raise _yaml_boolean(f"{where}.revision", revision, "a branch, tag or commit id")
    if isinstance(revision, int | float):  # the id as written is lost: 0123 → 83, 1_0 → 10, 12e4 → 120000.0
        raise ConfigError(
            f"{where}.revision must be a branch, tag or commit id as text, got the number {revision!r}: "
            "YAML reads an unquoted id made of digits (0123, 1_000, 12e4) as a number, which changes it. "
            "Quote it."
        )
    if revision is not None and (not isinstance(revision, str) or not revision):
        raise ConfigError(f"{where}.revision must be a branch, tag or commit id, got {revision!r}.")
    return ModelRef(model, revision, root=root)


@dataclass(frozen=True)
class ResolvedModel:
    """A ModelRef made local: `folder` to read, `hub_id` when it came from the Hub (and its commit)."""

    ref: ModelRef
    folder: Path
    hub_id: str | None = None
    commit: str | None = None

    @property
    def label(self) -> str:
        """How the card and metadata name it: the Hub id (at its revision), or the path as given."""
        if self.hub_id is None:
            return self.ref.model
        return f"{self.hub_id}@{self.ref.revision}" if self.ref.revision else self.hub_id


def resolve_model(ref: ModelRef, what: str, token: str | bool | None = None) -> ResolvedModel:
    """A local folder as is, else a Hub id downloaded (weights, configs, processor files).

    Local folders win (relative paths are taken from `ref.root`); a revision on a local folder is
    an error, since a folder has no revisions. Offline (`HF_HUB_OFFLINE`), a Hub id is served from
    the local cache when it is there; otherwise `HubUnavailableError` names the id at once.
    """
    from .hub._connection import looks_like_repo_id

    local = ref.local_path
    if local.is_dir():
        if ref.revision is not None:
            raise ConfigError(
                f"The {what} '{ref.model}' is a local folder ({local}), but revision '{ref.revision}' was "
                "given; revisions apply to Hub ids only. Drop the revision or name a Hub id."
            )
        return ResolvedModel(ref, local)
    if os.path.islink(local) and not local.exists():
        raise CheckpointError(
            f"The {what} '{ref.model}' is a broken or looping symlink ({local} points to "
            f"{os.readlink(local)!r}, which does not resolve to a folder); fix the link or give the folder itself."
        )
    if local.exists() or not looks_like_repo_id(ref.model):
        raise CheckpointError(
            f"The {what} '{ref.model}' is neither a local folder (no folder {local}) nor a Hub id of the form 'org/name'."
        )
    from .hub.download import download_snapshot

    folder = download_snapshot(
        ref.model,
        revision=ref.revision,
        token=token,
        allow_patterns=MODEL_FILE_PATTERNS,
        action=f"download the {what}",
        local_note=f"No local folder {local} exists either.",
    )
    return ResolvedModel(ref, Path(folder), hub_id=ref.model, commit=Path(folder).name)
