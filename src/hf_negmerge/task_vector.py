"""Task vectors τ = θ_finetuned − θ_base, keyed by checkpoint tensor names.

Only floating-point tensors carry a task vector; integer and bool buffers (position ids,
`num_batches_tracked`) are not weights that fine-tuning moves, so they always pass through
from the base model untouched.

Longer than most modules (~550 lines) because `TaskVector` is one type: its constructors (models,
state dicts, folders, LoRA adapters), its arithmetic and its file and Hub I/O all depend on the same
key-space and dtype rules, which live here once.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import CheckpointReader, save_safetensors
from .errors import CheckpointError
from .folder_kinds import check_distinct_weights, check_weight_content, check_weight_dtypes
from .hub_artifact import HubArtifact
from .json_files import parse_json
from .key_space import KeyNames, checkpoint_state_dict, unwrap_model
from .lambda_search import check_scale

_METADATA_KEY = "hf_negmerge"
#: file name of a merged task vector in every output folder (merge CLI, grid runner, unlearn run)
MERGED_VECTOR_NAME = "merged_task_vector.safetensors"
#: file name `save_pretrained` writes (and what each fine-tuning run's folder holds)
TASK_VECTOR_NAME = "task_vector.safetensors"


def select_keys(
    keys: Iterable[str],
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    names: KeyNames | None = None,
) -> list[str]:
    """Keys matching any `include` pattern (all when None) and no `exclude` pattern (fnmatch).

    `keys` are checkpoint names. With `names` (the model's `KeyNames`) a pattern may be written
    in checkpoint or runtime naming, and each must match at least one of the model's tensors;
    without, each must match one of `keys`. An unmatched pattern raises `ConfigError` naming it
    and showing real names: a typo must not silently merge a different set of tensors.
    """
    keys = list(keys)
    names = names or KeyNames.identity(keys, "the given tensors")
    names.check_patterns(include, exclude)
    return names.select(keys, include, exclude)


def check_finite(tensor: torch.Tensor, key: str, source: object) -> None:
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise CheckpointError(f"{source}: tensor '{key}' contains NaN or Inf values.")


def check_compatible(
    base_shape: tuple[int, ...], other_shape: tuple[int, ...], key: str, base: object, other: object
) -> None:
    if tuple(base_shape) != tuple(other_shape):
        raise CheckpointError(
            f"Tensor '{key}' has shape {tuple(other_shape)} in {other} but {tuple(base_shape)} in {base}; "
            "the checkpoints do not share an architecture."
        )


def difference(
    base: torch.Tensor, finetuned: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """finetuned − base computed in `dtype` (bf16 inputs lose nothing when upcast first)."""
    return finetuned.to(dtype) - base.to(dtype)


class TaskVector(HubArtifact):
    """A mapping from checkpoint tensor name to the change fine-tuning made there.

    Arithmetic (`+`, `-`, scalar `*`, unary `-`) works key by key. `apply_to(target, scale)`
    ADDS `scale · τ`; `negate_into(target, scale=λ)` SUBTRACTS `λ · τ` (λ ≥ 0, checked): that is
    NegMerge's unlearning step θ₀ − λ·τ, named so that its sign cannot be misread.

    `save_pretrained(folder)` / `from_pretrained(folder_or_hub_id, revision=...)` /
    `push_to_hub(repo_id)` come from huggingface_hub's `ModelHubMixin` (see `hub_artifact`); the
    folder holds `task_vector.safetensors` (metadata in its header) and a `README.md`.
    `save(path)` / `load(path)` read and write that single file, as every run folder and output
    folder of this tool stores it.

    Keys are always checkpoint names, whatever the vector was built from: models are
    translated, and state dicts in runtime names are translated through a reference model
    (see `from_state_dicts`), so every vector merges with every other of the same model.
    """

    def __init__(
        self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None
    ) -> None:
        for key, tensor in tensors.items():
            if not tensor.is_floating_point():
                raise CheckpointError(
                    f"Task vector entry '{key}' has dtype {tensor.dtype}; only float tensors can be."
                )
            check_finite(tensor, key, "task vector")
        self.tensors: dict[str, torch.Tensor] = dict(tensors)
        self.metadata: dict[str, Any] = dict(metadata or {})

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_state_dicts(
        cls,
        base: Mapping[str, torch.Tensor] | nn.Module,
        finetuned: Mapping[str, torch.Tensor] | nn.Module,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        dtype: torch.dtype = torch.float32,
        base_name: object = "base state dict",
        finetuned_name: object = "fine-tuned state dict",
        model: nn.Module | None = None,
    ) -> TaskVector:
        """τ for every float tensor selected by the patterns, keyed by checkpoint names.

        `base` and `finetuned` are each a state dict or a live model (read under its checkpoint
        names). The reference model is `model`, or else whichever of the two is a model. With
        a reference, each state dict's naming is detected from its keys: all checkpoint names
        (what `save_pretrained` writes) or all runtime names (what `model.state_dict()` and
        `named_parameters()` show; translated), partial dicts included; patterns then match
        either naming. Without one, keys are taken as checkpoint names as they are.
        """
        reference = model
        if reference is None:
            reference = next((side for side in (base, finetuned) if isinstance(side, nn.Module)), None)
        names = KeyNames.of(reference) if reference is not None else None
        base_dict = _checkpoint_dict(base, names, base_name)
        tuned_dict = _checkpoint_dict(finetuned, names, finetuned_name)
        return cls._difference(
            base_dict,
            tuned_dict,
            names or KeyNames.identity(base_dict.keys(), str(base_name)),
            include,
            exclude,
            dtype,
            base_name,
            finetuned_name,
        )

    @classmethod
    def _difference(
        cls,
        base: Mapping[str, torch.Tensor],
        finetuned: Mapping[str, torch.Tensor],
        names: KeyNames,
        include: Iterable[str] | None,
        exclude: Iterable[str] | None,
        dtype: torch.dtype,
        base_name: object,
        finetuned_name: object,
    ) -> TaskVector:
        """τ of two checkpoint-named mappings; `names` resolves the patterns."""
        tensors = {}
        for key in select_keys(base.keys(), include, exclude, names):
            base_tensor = base[key]
            if not base_tensor.is_floating_point():
                continue
            if key not in finetuned:
                raise CheckpointError(
                    f"Tensor '{key}' of the base {base_name} is missing from {finetuned_name}."
                )
            tuned = finetuned[key]
            check_compatible(base_tensor.shape, tuned.shape, key, base_name, finetuned_name)
            check_finite(base_tensor, key, base_name)
            check_finite(tuned, key, finetuned_name)
            tensors[key] = difference(base_tensor, tuned, dtype)
        extra = sorted(set(names.select(finetuned.keys(), include, exclude)) - set(base.keys()))
        if extra:
            raise CheckpointError(
                f"{finetuned_name} has tensor(s) the base {base_name} lacks: {', '.join(extra[:5])}"
                + (" …" if len(extra) > 5 else "")
            )
        if not tensors:
            raise CheckpointError(
                f"No floating-point tensors of {base_name} match include={include} exclude={exclude}."
            )
        return cls(tensors)

    @classmethod
    def from_models(
        cls,
        base: nn.Module,
        finetuned: nn.Module,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TaskVector:
        """τ between two live models (or `ImageClassifier`s), keyed by checkpoint names."""
        return cls.from_state_dicts(
            base,
            finetuned,
            include,
            exclude,
            dtype,
            base_name=f"base model ({type(base).__name__})",
            finetuned_name=f"fine-tuned model ({type(finetuned).__name__})",
        )

    @classmethod
    def from_checkpoints(
        cls,
        base: str | Path,
        finetuned: str | Path,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TaskVector:
        """τ between two checkpoint folders (single or sharded safetensors, any float dtype).

        Both must hold model weights (no adapter, task vector or merge output, see
        `folder_kinds`), with float tensors where the base has float ones, and not the same bytes.

        Patterns may use runtime names when the base folder's `config.json` names a
        transformers architecture (built on the meta device to learn them).
        """
        base_reader, tuned_reader = CheckpointReader(base), CheckpointReader(finetuned)
        check_weight_content([*base_reader.files, *tuned_reader.files])  # a file given as a checkpoint
        check_distinct_weights(
            [(f"base {base}", base_reader), (f"fine-tuned checkpoint {finetuned}", tuned_reader)]
        )
        check_weight_dtypes(base_reader, [tuned_reader])
        return cls._difference(
            base_reader,
            tuned_reader,
            KeyNames.of_folder(base, base_reader.keys()),
            include,
            exclude,
            dtype,
            base_name=base_reader.path,
            finetuned_name=tuned_reader.path,
        )

    @classmethod
    def from_lora(
        cls,
        base: nn.Module,
        adapter: nn.Module | str | Path,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TaskVector:
        """Dense ΔW of a LoRA adapter: the merged model minus the base.

        Merging A and B per run before any sign consensus is what makes the vector correct:
        combining A and B factors separately across runs is not the sum of their ΔW.
        `adapter` is a `PeftModel` wrapping a copy of `base`, or an adapter folder.
        """
        from peft import PeftModel

        if isinstance(adapter, PeftModel):
            merged = copy.deepcopy(adapter).merge_and_unload()
        elif isinstance(adapter, str | Path):
            if not Path(adapter).is_dir():
                raise CheckpointError(f"LoRA adapter folder {adapter} does not exist.")
            merged = PeftModel.from_pretrained(copy.deepcopy(base), str(adapter)).merge_and_unload()
        else:
            raise CheckpointError(
                f"adapter must be a PeftModel or an adapter folder, got {type(adapter).__name__}."
            )
        return cls.from_models(base, merged, include, exclude, dtype)

    # -- arithmetic ---------------------------------------------------------------------------------
    def _check_same_keys(self, other: TaskVector) -> None:
        if self.tensors.keys() != other.tensors.keys():
            missing = sorted(self.tensors.keys() ^ other.tensors.keys())
            raise CheckpointError(f"Task vectors cover different tensors, e.g. {', '.join(missing[:5])}.")
        for key, tensor in self.tensors.items():
            check_compatible(
                tensor.shape, other.tensors[key].shape, key, "left task vector", "right task vector"
            )

    def __add__(self, other: TaskVector) -> TaskVector:
        return self._combine(other, 1.0, "the sum of the task vectors")

    def __sub__(self, other: TaskVector) -> TaskVector:
        return self._combine(other, -1.0, "the difference of the task vectors")

    def _combine(self, other: TaskVector, sign: float, what: str) -> TaskVector:
        """self + sign·other key by key, computed in at least float32 and checked to fit the dtype."""
        self._check_same_keys(other)
        combined = {}
        for key, tensor in self.tensors.items():
            dtype = torch.promote_types(tensor.dtype, other.tensors[key].dtype)
            wide = torch.promote_types(dtype, torch.float32)
            exact = tensor.to(wide) + sign * other.tensors[key].to(wide)
            combined[key] = _fitted(exact, dtype, key, what)
        return TaskVector(combined)

    def __neg__(self) -> TaskVector:
        return TaskVector({k: -t for k, t in self.tensors.items()}, self.metadata)

    def __mul__(self, scale: float) -> TaskVector:
        if not isinstance(scale, int | float) or not math.isfinite(scale):
            return NotImplemented
        scaled = {}
        for key, tensor in self.tensors.items():
            exact = tensor.to(torch.promote_types(tensor.dtype, torch.float32)) * scale
            scaled[key] = _fitted(exact, tensor.dtype, key, f"scaling the task vector by {scale:g}")
        return TaskVector(scaled, self.metadata)

    __rmul__ = __mul__

    # -- inspection -----------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __contains__(self, key: object) -> bool:
        return key in self.tensors

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def numel(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def count_nonzero(self) -> int:
        return sum(int(torch.count_nonzero(t)) for t in self.tensors.values())

    def norm(self) -> float:
        """Global L2 norm over every entry (computed in float64)."""
        return math.sqrt(sum(float(t.double().pow(2).sum()) for t in self.tensors.values()))

    def __repr__(self) -> str:
        return f"TaskVector({len(self)} tensors, {self.numel():,} entries, {self.count_nonzero():,} non-zero)"

    # -- application ----------------------------------------------------------------------------------
    def apply_to(
        self,
        target: nn.Module | Mapping[str, torch.Tensor],
        scale: float = 1.0,
        model: nn.Module | None = None,
    ) -> nn.Module | dict[str, torch.Tensor]:
        """θ + scale·τ: ADDS the vector (`scale=1` applies the fine-tuning it came from).

        To unlearn, subtract it with `negate_into(target, scale=λ)` (or `hf_negmerge.unlearn`),
        which refuses a negative λ; `apply_to(target, scale=-λ)` is the same operation with the
        sign left to the caller. A model is updated in place and returned; a state dict is copied.

        A model (or `ImageClassifier`) is matched through its own names. A state dict is
        returned in the naming it was given: checkpoint names are used as they are; runtime
        names (a live model's `state_dict()`) need `model=`, the model they come from (or any
        of its architecture), to be translated. Each sum is computed in float32 (or wider) and
        cast back to the target's dtype. A sum that is not finite there (an overflow, or NaN/Inf in
        either input) or a vector entry for a non-float tensor is a `CheckpointError` naming the
        key, raised before anything is changed.
        """
        if isinstance(target, nn.Module):
            module = unwrap_model(target)
            names = KeyNames.of(module).runtime
            runtime = module.state_dict()
            missing = [key for key in self.tensors if key not in names]
            if missing:
                raise CheckpointError(
                    f"{type(module).__name__} has no tensor(s) {', '.join(missing[:5])} for this task vector."
                )
            where = type(module).__name__
            with torch.no_grad():
                for key, delta in self.tensors.items():  # every sum checked before any is written
                    check_compatible(runtime[names[key]].shape, delta.shape, key, where, "task vector")
                    _checked_sum(runtime[names[key]], delta, scale, key, where)
                for key, delta in self.tensors.items():
                    runtime[names[key]].copy_(add_scaled(runtime[names[key]], delta, scale))
            return target
        result = dict(target)
        if model is None or all(key in result for key in self.tensors):
            location = {key: key for key in self.tensors}
        else:
            key_names = KeyNames.of(model)
            runtime_named = key_names.naming_of(result.keys(), "the state dict") == "runtime"
            location = {
                key: key_names.runtime.get(key, key) if runtime_named else key for key in self.tensors
            }
        for key, delta in self.tensors.items():
            name = location[key]
            if name not in result:
                hint = (
                    ""
                    if model is not None
                    else " Task vectors are keyed by checkpoint names (as save_pretrained writes them); "
                    "for a live model's state_dict() in runtime names pass model= (the model it "
                    "comes from) or apply the vector to the model itself."
                )
                raise CheckpointError(f"State dict has no tensor '{name}' for this task vector.{hint}")
            check_compatible(result[name].shape, delta.shape, key, "state dict", "task vector")
            result[name] = _checked_sum(result[name], delta, scale, key, "state dict")
        return result

    def negate_into(
        self,
        target: nn.Module | Mapping[str, torch.Tensor],
        scale: float,
        model: nn.Module | None = None,
    ) -> nn.Module | dict[str, torch.Tensor]:
        """θ − λ·τ with λ = `scale` ≥ 0: SUBTRACTS the vector (NegMerge's unlearning step).

        A negative or non-finite λ raises `ConfigError` (it would add the forget task back).
        Otherwise exactly `apply_to(target, scale=-λ, model=model)`.
        """
        return self.apply_to(target, scale=-check_scale(scale), model=model)

    # -- persistence ----------------------------------------------------------------------------------
    ARTIFACT_FILES = (TASK_VECTOR_NAME, MERGED_VECTOR_NAME)

    def _save_pretrained(self, save_directory: Path) -> None:
        self.save(save_directory / TASK_VECTOR_NAME)

    @classmethod
    def _load_folder(cls, folder: Path, source: str) -> TaskVector:
        for name in cls.ARTIFACT_FILES:  # a saved vector, or the merged vector of an output folder
            if (folder / name).is_file():
                return cls.load(folder / name)
        raise CheckpointError(
            f"{source} holds no task vector: expected {' or '.join(cls.ARTIFACT_FILES)} in {folder}."
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
    ) -> TaskVector:
        """Load from a folder written by `save_pretrained` (or a merge/unlearn output folder, or one
        `.safetensors` file) or from a Hub repo id at `revision`."""
        path = Path(pretrained_model_name_or_path)
        if path.is_file():
            return cls.load(path)
        return super().from_pretrained(pretrained_model_name_or_path, revision=revision, token=token)

    def _card_values(self) -> dict[str, str]:
        return {
            "artifact": "Task vector",
            "description": f"A task vector τ = θ_finetuned − θ_base over {len(self)} tensors "
            f"({self.numel():,} entries, {self.count_nonzero():,} non-zero), keyed by checkpoint tensor "
            "names. `apply_to` adds it to a model; `negate_into` subtracts λ·τ (unlearning).",
            "usage": "from hf_negmerge import TaskVector\n\n"
            'vector = TaskVector.from_pretrained("<this-repo>")\n'
            "vector.negate_into(model, scale=0.5)  # θ − 0.5·τ, in place",
        }

    def save(self, path: str | Path) -> Path:
        """Write one safetensors file (atomically); metadata is kept as JSON in its header.

        What `load` would refuse (a non-finite tensor, metadata that is not JSON or nests too
        deep) is refused here, before anything is written.
        """
        path = Path(path)
        save_safetensors(self.tensors, path, metadata={_METADATA_KEY: self._checked_metadata(path)})
        return path

    def _check_savable(self, save_directory: Path) -> None:
        self._checked_metadata(save_directory / TASK_VECTOR_NAME)

    def _checked_metadata(self, path: Path) -> str:
        """The metadata as JSON, once every tensor is finite and the JSON is what `load` accepts."""
        refused = f"Cannot save the task vector to {path} (nothing was written)"
        for key, tensor in self.tensors.items():
            check_finite(tensor, key, refused)
        try:
            metadata = json.dumps(self.metadata, sort_keys=True)
        except (TypeError, ValueError, RecursionError) as error:
            raise CheckpointError(f"{refused}: its metadata cannot be written as JSON ({error}).") from None
        parse_json(metadata, f"{refused}: its metadata", CheckpointError)
        return metadata

    @classmethod
    def load(cls, path: str | Path) -> TaskVector:
        """Read a vector written by `save` (every tensor checked finite, metadata checked)."""
        reader = CheckpointReader(path)
        tensors = {}
        for key in reader:
            tensor = reader[key]
            check_finite(tensor, key, reader.path)
            tensors[key] = tensor
        raw = reader.metadata.get(_METADATA_KEY)
        if not raw:
            return cls(tensors)
        metadata = parse_json(
            raw, f"{reader.path}: the '{_METADATA_KEY}' metadata of this task vector", CheckpointError
        )
        if not isinstance(metadata, dict):
            raise CheckpointError(
                f"{reader.path}: the '{_METADATA_KEY}' metadata of this task vector must be a JSON object, "
                f"got {type(metadata).__name__}."
            )
        return cls(tensors, metadata)


def add_scaled(base: torch.Tensor, delta: torch.Tensor, scale: float) -> torch.Tensor:
    """base + scale·delta computed in at least float32, returned in base's dtype (unchecked)."""
    wide = torch.promote_types(base.dtype, torch.float32)
    return (base.to(wide) + scale * delta.to(wide)).to(base.dtype)


def check_float_target(tensor: torch.Tensor, key: str, where: object) -> None:
    """A task vector changes float tensors only: an entry for an integer or bool tensor is an error.

    Task vectors are built from float tensors alone, so such an entry means the vector belongs to
    another model; rounding the sum into the integer tensor would corrupt it silently.
    """
    if not tensor.is_floating_point():
        raise CheckpointError(
            f"Tensor '{key}' of the {where} has dtype {tensor.dtype}, but the task vector has an entry "
            "for it; a task vector changes float tensors only."
        )


def _checked_sum(
    base: torch.Tensor, delta: torch.Tensor, scale: float, key: str, where: object
) -> torch.Tensor:
    """`add_scaled`, refusing a non-float `base` and a result that is not finite in base's dtype."""
    check_float_target(base, key, where)
    result = add_scaled(base, delta, scale)
    if not torch.isfinite(result).all():
        formula = f"θ − {-scale:g}·τ" if scale < 0 else f"θ + {scale:g}·τ"
        raise CheckpointError(
            f"{formula} is not finite in tensor '{key}' of the {where}: the result overflows "
            f"{base.dtype} or an input holds NaN or Inf; nothing was changed. Use a smaller scale."
        )
    return result


def _fitted(exact: torch.Tensor, dtype: torch.dtype, key: str, what: str) -> torch.Tensor:
    """`exact` (computed wide) cast to `dtype`; a CheckpointError naming the key if it does not fit."""
    result = exact.to(dtype)
    if not torch.isfinite(result).all():
        raise CheckpointError(
            f"{what} is not finite in tensor '{key}': the result overflows {dtype}"
            + (" (float32 vectors would hold it)." if dtype == torch.float16 else ".")
        )
    return result


def _checkpoint_dict(
    source: Mapping[str, torch.Tensor] | nn.Module, names: KeyNames | None, what: object
) -> Mapping[str, torch.Tensor]:
    """A model's or state dict's tensors under checkpoint names (see `from_state_dicts`)."""
    if isinstance(source, nn.Module):
        return checkpoint_state_dict(source)
    return names.as_checkpoint(source, what) if names is not None else source
