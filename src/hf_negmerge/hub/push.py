"""Push an unlearning run's output folder, or a `NegMergeConfig`, to the Hugging Face Hub.

The output folder is never modified: what is uploaded is assembled in a staging folder (hard
links to the model files where the filesystem allows, copies otherwise) together with the
generated model card and the sparse negation vector. Subfolders (e.g. the fine-tuned runs) and
the dense `merged_task_vector.safetensors` are not uploaded.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..checkpoints import owned_scratch_folder
from ..config import CONFIG_NAME, NegMergeConfig
from ..errors import CheckpointError, ConfigError, NegMergeWarning, warn
from ..output_folder import MANIFEST_FILE, verify_output_folder
from ..results import METRICS_FILE, RunResults
from ..task_vector import MERGED_VECTOR_NAME, TaskVector
from ._connection import bounded_session, hub_attempts, hub_client, hub_offline, hub_timeout
from ._upload import check_repo_id, check_revision, upload_folder_to_repo
from .card import CARD_NAME, UnlearningCardData, task_for_architectures, write_model_card
from .card_data import first_base_model
from .negation_vector import NegationVector

DENSE_VECTOR_NAME = MERGED_VECTOR_NAME
PUSH_SCRATCH_PREFIX = "hf-negmerge-push-"
MODEL_CONFIG_NAME = "config.json"
_NOT_UPLOADED = {DENSE_VECTOR_NAME, CARD_NAME, MANIFEST_FILE}


def _files_to_upload(output_dir: Path, published: list[str]) -> list[Path]:
    """The run's published files (never a file someone else put in the folder), minus the dense
    vector and the old card."""
    return sorted(
        output_dir / name
        for name in published
        if "/" not in name and not name.startswith(".") and name not in _NOT_UPLOADED
    )


def _plots(files: list[Path]) -> list[str]:
    """PNG names, the λ curve first (the card embeds them in this order)."""
    pngs = [path.name for path in files if path.suffix.lower() == ".png"]
    return sorted(pngs, key=lambda name: ("lambda" not in name.lower(), name))


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _model_config(output_dir: Path) -> dict[str, Any]:
    try:
        values = json.loads((output_dir / MODEL_CONFIG_NAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{output_dir / MODEL_CONFIG_NAME} is not a model config: {error}") from error
    if not isinstance(values, dict):
        raise CheckpointError(f"{output_dir / MODEL_CONFIG_NAME} is not a model config (not a JSON object).")
    return values


class BaseModelNotCheckedWarning(NegMergeWarning):
    """`--base-model` could not be compared with the model (its config is not reachable)."""


#: Config fields that must agree between the pushed model and the `--base-model` it claims to derive from.
LINEAGE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size")


def _base_model_config(base_model: str, online: bool) -> dict[str, Any] | None:
    """The base model's config.json: a local folder's, the Hub cache's, or (`online`) the Hub's."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    local = Path(base_model) / MODEL_CONFIG_NAME
    path: str | Path | None = local if local.is_file() else None
    if path is None:
        cached = try_to_load_from_cache(base_model, MODEL_CONFIG_NAME)
        path = cached if isinstance(cached, str) else None
    if path is None and online and not hub_offline():
        try:
            path = hf_hub_download(base_model, MODEL_CONFIG_NAME)
        except Exception:  # any failure means "not resolvable": the caller warns
            path = None
    if path is None:
        return None
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return values if isinstance(values, dict) else None


def check_base_model(
    base_model: str, model_config: dict[str, Any], output_dir: Path, online: bool = True
) -> None:
    """Refuse a `base_model` whose config contradicts the model's; warn when it cannot be checked.

    `online=False` (a dry run) looks only at a local folder and the Hub cache."""
    base = _base_model_config(base_model, online)
    if base is None:
        warn(
            f"base_model {base_model!r} was not checked against {output_dir / MODEL_CONFIG_NAME}: its config "
            "could not be resolved (offline, or not on the Hub). Make sure it is the model θ₀ came from.",
            BaseModelNotCheckedWarning,
        )
        return
    mine = {**model_config, **model_config.get("vision_config", {})}
    theirs = {**base, **base.get("vision_config", {})}
    differ = [
        f"{key}: {theirs[key]!r} vs {mine[key]!r}"
        for key in LINEAGE_FIELDS
        if key in mine and key in theirs and mine[key] != theirs[key]
    ]
    if differ:
        raise ConfigError(
            f"base_model {base_model!r} cannot be the original of {output_dir}: their configs differ "
            f"({'; '.join(differ)}; base vs this model). Pass the Hub id of the model θ₀ came from."
        )


def _inherited_license(base_model: str | None, online: bool) -> str | None:
    """The base model's license from its card: a local folder's, the Hub cache's, or (`online`) the Hub's."""
    from huggingface_hub import ModelCard, try_to_load_from_cache

    if base_model is None:
        return None
    local = Path(base_model) / CARD_NAME
    cached = None if local.is_file() else try_to_load_from_cache(base_model, CARD_NAME)
    source: str | Path | None = local if local.is_file() else cached if isinstance(cached, str) else None
    if source is None and online and not hub_offline():
        # one metadata request (the card's data rides along), not a card download: huggingface_hub
        # retries downloads with back-off (≈ 23 s) when the Hub cannot be reached
        try:
            data = hub_client().model_info(base_model, timeout=hub_timeout()).card_data
        except Exception:  # unreachable, missing or private: the license stays unset
            return None
        return getattr(data, "license", None) if data is not None else None
    if source is None:
        return None
    try:
        return ModelCard.load(source).data.license
    except Exception:  # a missing or unreadable card leaves the license unset
        return None


def prepare_upload_folder(
    output_dir: str | Path,
    staging: str | Path,
    repo_id: str | None = None,
    include_vector: bool = True,
    card_data: UnlearningCardData | None = None,
    base_model: str | None = None,
    license: str | None = None,
) -> list[str]:
    """Assemble in `staging` exactly what `push_unlearned_model` uploads; returns the file names.

    Useful on its own to inspect a push before making it (`hf-negmerge push --dry-run`): it never
    contacts the Hub, so the base model's config and license are looked up only locally and in
    the Hub cache (the push itself also asks the Hub).
    """
    if repo_id is not None:
        check_repo_id(repo_id)
    _assemble(
        Path(output_dir), Path(staging), repo_id, include_vector, card_data, base_model, license, online=False
    )
    return sorted(path.name for path in Path(staging).iterdir())


def _assemble(
    output_dir: Path,
    staging: Path,
    repo_id: str | None,
    include_vector: bool,
    card_data: UnlearningCardData | None,
    base_model: str | None = None,
    license: str | None = None,
    online: bool = True,
) -> UnlearningCardData:
    if not output_dir.is_dir():
        raise CheckpointError(f"Output folder {output_dir} does not exist.")
    if not (output_dir / MODEL_CONFIG_NAME).is_file():
        raise CheckpointError(
            f"{output_dir} has no {MODEL_CONFIG_NAME}: it does not hold a model saved with save_pretrained."
        )
    # Only a complete publication is pushed: every file listed, unchanged, with weights.
    files = _files_to_upload(output_dir, sorted(verify_output_folder(output_dir).files))
    config = NegMergeConfig.from_pretrained(output_dir) if (output_dir / CONFIG_NAME).is_file() else None
    model_config = _model_config(output_dir)
    if card_data is None:
        if not (output_dir / METRICS_FILE).is_file():
            raise CheckpointError(
                f"{output_dir} has no {METRICS_FILE}; the model card is built from it. Pass card_data=... "
                "to push a folder that was not written by `hf-negmerge unlearn`."
            )
        results = RunResults.load(output_dir / METRICS_FILE)
        overrides: dict[str, Any] = {"plots": _plots(files), "negation_vector": include_vector}
        if repo_id is not None:
            overrides["repo_id"] = repo_id
        if config is not None:
            overrides["config"] = config
        if base_model is not None:
            overrides["base_model"] = base_model
        if license is not None:
            overrides["license"] = license
        task = task_for_architectures([str(name) for name in model_config.get("architectures") or []])
        if task is not None:
            overrides["task_type"] = task
        card_data = UnlearningCardData.from_results(results, **overrides)
        if card_data.license is None:
            card_data.license = _inherited_license(first_base_model(card_data.base_model), online)
    if base_model is not None:
        check_base_model(base_model, model_config, output_dir, online)
    for path in files:
        _link_or_copy(path, staging / path.name)
    if include_vector:
        dense = output_dir / DENSE_VECTOR_NAME
        if not dense.is_file():
            raise CheckpointError(
                f"{output_dir} has no {DENSE_VECTOR_NAME} to publish as a negation vector; "
                "push with include_vector=False (--no-vector) to upload the model alone."
            )
        if card_data.scale is None:
            raise CheckpointError(f"The chosen λ is unknown (no 'scale' in {output_dir / METRICS_FILE}).")
        base = first_base_model(card_data.base_model)
        vector = NegationVector.from_task_vector(
            TaskVector.load(dense), card_data.scale, base_model=base, config=config
        )
        vector.save_pretrained(staging)
    write_model_card(card_data, staging)
    return card_data


def push_unlearned_model(
    output_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | bool | None = None,
    include_vector: bool = True,
    card_data: UnlearningCardData | None = None,
    base_model: str | None = None,
    license: str | None = None,
) -> str:
    """Upload an unlearning run's model folder with its card, config and sparse vector.

    Only a complete output folder is pushed (its `hf_negmerge_outputs.json` marks every file and
    its sha256; see `hf_negmerge.output_folder.verify_output_folder`), and only the files listed there.

    `output_dir` holds the unlearned model (HF layout + processor/tokenizer), `negmerge_config.json`,
    `metrics.json`, plots and `merged_task_vector.safetensors`. The repo is created when missing
    (`private` applies only then); `revision` names a branch, created from main when missing.
    `token` defaults to huggingface_hub's usual sources (`HF_TOKEN`, cached login) and is never
    written anywhere. `base_model` (a Hub id) overrides the one in metrics.json and is checked
    against the model's config when its own config can be resolved (a warning says when it could
    not); `license` overrides the one recorded at run time or read from the base model's card;
    `card_data` replaces the card built from metrics.json. Returns the commit URL. Raises `HubUnavailableError` when the Hub cannot
    be reached; the output folder is left exactly as it was.
    """
    check_repo_id(repo_id)
    check_revision(revision)
    timeout = hub_timeout()  # a bad HF_NEGMERGE_HUB_* setting is named before any work or request
    hub_attempts()
    output_dir = Path(output_dir)
    # assembled in the system temp folder, never beside the user's folder; a killed push's
    # leftovers are removed by the next push
    with owned_scratch_folder(PUSH_SCRATCH_PREFIX) as staging:
        with bounded_session(timeout):  # the base model's card and config lookups wait no longer
            card_data = _assemble(
                output_dir, staging, repo_id, include_vector, card_data, base_model, license
            )
        scale = card_data.scale
        message = commit_message or (
            f"Upload NegMerge-unlearned model (λ={scale})"
            if scale is not None
            else "Upload NegMerge-unlearned model"
        )
        return upload_folder_to_repo(
            staging,
            repo_id,
            private=private,
            revision=revision,
            token=token,
            commit_message=message,
            local_note=f"Nothing was uploaded; {output_dir} is unchanged.",
        )


def push_config(
    config: NegMergeConfig,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | bool | None = None,
) -> str:
    """Upload `negmerge_config.json` alone (like peft's config push); returns the commit URL.

    `NegMergeConfig.from_pretrained(repo_id)` loads it back.
    """
    if not isinstance(config, NegMergeConfig):
        raise ConfigError(f"push_config needs a NegMergeConfig, got {type(config).__name__}.")
    return config.push_to_hub(
        repo_id, private=private, revision=revision, commit_message=commit_message, token=token
    )
