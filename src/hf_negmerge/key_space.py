"""Translate between a live model's `state_dict()` names and the names it writes to disk.

transformers 5 renames some modules when it loads a checkpoint (ViT's
`encoder.layer.0.attention.attention.query` becomes `layers.0.attention.q_proj`) and writes the
original names back on save. hf-negmerge keys every task vector by the on-disk names (the
"checkpoint key space"), so vectors built from folders and from live models agree, and a
saved vector applies to any model that loads the same checkpoint.

`KeyNames` holds both names of every tensor of one model. It translates state dicts into the
checkpoint space (detecting which naming they use) and lets include/exclude patterns written
in either naming select the same tensors (`select_keys`), refusing a pattern that matches no
tensor at all, so a typo cannot silently change what is merged.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .errors import CheckpointError, ConfigError

Naming = Literal["checkpoint", "runtime"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The transformers model inside an hf-negmerge `ImageClassifier` (its tensors are the vector's)."""
    from .models.base import ImageClassifier

    return model.model if isinstance(model, ImageClassifier) else model


def _checkpoint_names(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` renamed as `save_pretrained` would write it (same tensor objects)."""
    try:
        from transformers import PreTrainedModel
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # older transformers: no renaming at load time
        return state_dict
    if not isinstance(model, PreTrainedModel):
        return state_dict
    return dict(revert_weight_conversion(model, dict(state_dict)))


def checkpoint_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under the names `save_pretrained` would write (shares storage)."""
    model = unwrap_model(model)
    return _checkpoint_names(model, model.state_dict())


@dataclass(frozen=True)
class KeyNames:
    """Both names of every tensor of one model: checkpoint name → runtime (`state_dict()`) name.

    Built from a live model (`of`), from a checkpoint folder (`of_folder`: the model is
    instantiated on the meta device, so no weights are read), or as the identity over a key set
    when no model is known (`identity`: patterns then match checkpoint names only).
    """

    runtime: dict[str, str]
    owner: str
    to_checkpoint: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "to_checkpoint", {r: c for c, r in self.runtime.items()})

    @classmethod
    def of(cls, model: nn.Module) -> KeyNames:
        """Names of a live model (an `ImageClassifier` stands for the transformers model inside).

        Only renames are supported: a conversion that fuses or splits tensors has no one-to-one
        name map, and such a model must be handled through its checkpoint folder instead.
        """
        model = unwrap_model(model)
        runtime = model.state_dict()
        by_object = {id(tensor): name for name, tensor in runtime.items()}
        mapping: dict[str, str] = {}
        for name, tensor in _checkpoint_names(model, runtime).items():
            runtime_name = by_object.get(id(tensor))
            if runtime_name is None:
                raise CheckpointError(
                    f"Checkpoint tensor '{name}' of {type(model).__name__} has no single runtime tensor "
                    "(the architecture fuses or splits weights on load); use its saved checkpoint "
                    "folder instead of a live model or state dict."
                )
            mapping[name] = runtime_name
        return cls(mapping, type(model).__name__)

    @classmethod
    def identity(cls, keys: Iterable[str], owner: str) -> KeyNames:
        return cls({key: key for key in keys}, owner)

    @classmethod
    def of_folder(cls, folder: str | Path, keys: Iterable[str]) -> KeyNames:
        """Names of the model a checkpoint folder's `config.json` describes, over its `keys`.

        Falls back to the identity when the folder names no transformers architecture that can
        be built here; keys the model does not know keep their own name.
        """
        keys = list(keys)
        model = _meta_model(Path(folder))
        if model is None:
            return cls.identity(keys, str(folder))
        try:
            known = cls.of(model).runtime
        except CheckpointError:
            return cls.identity(keys, str(folder))
        return cls({key: known.get(key, key) for key in keys}, str(folder))

    # -- translation -------------------------------------------------------------------------------
    def checkpoint_keys(self) -> list[str]:
        return list(self.runtime)

    def naming_of(self, keys: Iterable[str], what: object) -> Naming:
        """Which naming a set of keys uses: every key a checkpoint name, or every key a runtime name.

        A key set valid in both (the model renames nothing among them) counts as checkpoint.
        """
        keys = list(keys)
        if all(key in self.runtime for key in keys):
            return "checkpoint"
        if all(key in self.to_checkpoint for key in keys):
            return "runtime"
        unknown = [key for key in keys if key not in self.runtime and key not in self.to_checkpoint]
        if unknown:
            raise CheckpointError(
                f"{what} has key(s) {_quoted(unknown[:5])} that are neither checkpoint nor runtime "
                f"names of {self.owner} (e.g. {_quoted(self.checkpoint_keys()[:3])}); is it the right model?"
            )
        raise CheckpointError(
            f"{what} mixes checkpoint names and runtime (state_dict) names of {self.owner}; "
            "give it in one naming."
        )

    def as_checkpoint(
        self, state_dict: Mapping[str, torch.Tensor], what: object
    ) -> Mapping[str, torch.Tensor]:
        """`state_dict` keyed by checkpoint names, whichever naming it came in."""
        if self.naming_of(state_dict.keys(), what) == "checkpoint":
            return state_dict
        return {self.to_checkpoint[key]: tensor for key, tensor in state_dict.items()}

    # -- patterns ------------------------------------------------------------------------------------
    def aliases(self, key: str) -> tuple[str, ...]:
        runtime = self.runtime.get(key, key)
        return (key,) if runtime == key else (key, runtime)

    def matches(self, key: str, pattern: str) -> bool:
        """Whether `pattern` (fnmatch) matches the checkpoint name `key` or its runtime name."""
        return any(fnmatch.fnmatchcase(name, pattern) for name in self.aliases(key))

    def check_patterns(self, include: Iterable[str] | None, exclude: Iterable[str] | None) -> None:
        """Every pattern must match at least one tensor of the model, in either naming.

        All of the model's tensors count (integer buffers and frozen weights too), so an
        exclude that names only tensors a task vector never holds is not an error.
        """
        for option, patterns in (("include", include), ("exclude", exclude)):
            for pattern in patterns or []:
                if not any(self.matches(key, pattern) for key in self.runtime):
                    raise ConfigError(self._unmatched_message(option, pattern))

    def _unmatched_message(self, option: str, pattern: str) -> str:
        names = list(dict.fromkeys(name for key in self.runtime for name in self.aliases(key)))
        close = difflib.get_close_matches(pattern.replace("*", ""), names, n=5, cutoff=0.4)
        shown = close or self.checkpoint_keys()[:10]
        renamed = any(key != runtime for key, runtime in self.runtime.items())
        return (
            f"{option} pattern {pattern!r} matches no tensor of {self.owner} ({len(self.runtime)} tensors"
            + (", by checkpoint or runtime name" if renamed else "")
            + f"); {'closest names' if close else 'its first names'}: {_quoted(shown)}."
        )

    def select(
        self, keys: Iterable[str], include: Iterable[str] | None, exclude: Iterable[str] | None
    ) -> list[str]:
        """Checkpoint `keys` matching any include (all when None) and no exclude, in either naming."""
        include = list(include) if include is not None else None
        exclude = list(exclude or [])
        return [
            key
            for key in keys
            if (include is None or any(self.matches(key, p) for p in include))
            and not any(self.matches(key, p) for p in exclude)
        ]


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _meta_model(folder: Path) -> nn.Module | None:
    """The folder's transformers model built on the meta device (no memory, no weights read)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        return None
    try:
        architectures = json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or []
        import transformers

        model_class = getattr(transformers, architectures[0], None) if architectures else None
        if model_class is None:
            return None
        config = transformers.AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            return model_class(config)
    except Exception:  # any failure only means: no runtime names are known for this folder
        return None
