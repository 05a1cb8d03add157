"""θ₀ folders shipped inside the package, so the built-in default run need not train θ₀ first.

`scripts/build_default_original.py` trains the default recipe's θ₀ with this package's own
`prepare_original_model` (one torch thread) and writes it here as `packaged_originals/<arch>-<key>/`: the
classifier folder, its `pretrain.json`, and `packaged.json` recording the cache key, the settings
the key hashes (recipe fields, data fingerprint, torch thread count), the weights' sha256 and the
torch version that built it. `prepare_original_model` uses such a folder, read-only, only when
its key *and* settings equal the run's exactly and the weights still hash as recorded; any
other data split, seed, thread count or θ₀ setting trains as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from ..checkpoints import atomic_output_dir, atomic_write_text
from .grid import canonical_json

logger = logging.getLogger(__name__)

PACKAGED_ENTRY_FILE = "packaged.json"
_RECORD_ONLY = ("seconds", "train_accuracy", "eval_accuracy", "weights_sha256")  # outside the key


def packaged_originals_dir() -> Path:
    """Where the package's θ₀ folders live (`hf_negmerge/packaged_originals`)."""
    return Path(str(resources.files("hf_negmerge"))) / "packaged_originals"


def settings_key(settings: dict[str, Any]) -> str:
    """The 12-hex-digit cache key of a θ₀'s settings (its folder is `<arch>-<key>`)."""
    return hashlib.sha256(canonical_json(settings).encode("utf-8")).hexdigest()[:12]


def find_packaged_original(folder_name: str, key: str, settings: dict[str, Any]) -> Path | None:
    """The packaged θ₀ folder for exactly these settings, or None (then θ₀ is trained)."""
    from ..models._source import weights_sha256

    folder = packaged_originals_dir() / folder_name
    entry_path = folder / PACKAGED_ENTRY_FILE
    if not entry_path.is_file():
        return None
    entry = json.loads(entry_path.read_text(encoding="utf-8"))
    if entry.get("key") != key or canonical_json(entry.get("settings")) != canonical_json(settings):
        return None
    found = weights_sha256(folder)
    if found != entry.get("sha256"):
        logger.warning(
            "Packaged θ₀ %s does not match its %s (weights sha256 %s, recorded %s); training θ₀ instead.",
            folder,
            PACKAGED_ENTRY_FILE,
            found[:16],
            str(entry.get("sha256"))[:16],
        )
        return None
    return folder


def packaged_original_record(base_dir: str | Path) -> dict[str, Any]:
    """For metrics.json: `{"source": ..., "packaged": {...}}` when θ₀ is a packaged folder, else {}."""
    entry_path = Path(base_dir) / PACKAGED_ENTRY_FILE
    if not entry_path.is_file():
        return {}
    entry = json.loads(entry_path.read_text(encoding="utf-8"))
    return {
        "source": "original.train (packaged θ₀)",
        "packaged": {name: entry[name] for name in ("key", "sha256", "torch", "built_by")},
    }


def write_packaged_original(
    trained: str | Path, built_by: str, destination: str | Path | None = None
) -> Path:
    """Copy a folder written by `prepare_original_model` into the package with its `packaged.json`."""
    import torch

    from ..models._source import weights_sha256

    source = Path(trained)
    record = json.loads((source / "pretrain.json").read_text(encoding="utf-8"))
    settings = {name: value for name, value in record.items() if name not in _RECORD_ONLY}
    key = settings_key(settings)
    if not source.name.endswith(f"-{key}"):
        raise ValueError(f"{source} is not named after its settings' key {key}; was pretrain.json edited?")
    target = Path(destination or packaged_originals_dir()) / source.name
    with atomic_output_dir(target, overwrite=True) as staging:
        for path in sorted(source.iterdir()):
            if path.is_file():
                shutil.copyfile(path, staging / path.name)
        entry = {
            "key": key,
            "settings": settings,
            "torch_threads": settings["torch_threads"],
            "sha256": weights_sha256(staging),
            "model_safetensors_sha256": hashlib.sha256(
                (staging / "model.safetensors").read_bytes()
            ).hexdigest(),
            "torch": torch.__version__,
            "built_by": built_by,
        }
        atomic_write_text(staging / PACKAGED_ENTRY_FILE, json.dumps(entry, indent=2) + "\n")
    return target
