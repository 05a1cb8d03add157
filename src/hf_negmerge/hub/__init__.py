"""Hub stage of hf-negmerge: model cards, the sparse negation vector, and pushing to the Hub.

Names are imported on first use (as in the top-level package), so importing one submodule, e.g.
`hub.download` from `NegMergeConfig.from_pretrained`, does not load the card and push modules,
which import the config back (no import cycle, see docs/architecture.md).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "DatasetRef": "card",
    "NegationVector": "negation_vector",
    "UnlearningCardData": "card",
    "build_model_card": "card",
    "download_file": "download",
    "prepare_upload_folder": "push",
    "push_config": "push",
    "push_unlearned_model": "push",
    "resolve_folder": "download",
    "write_model_card": "card",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_negmerge.hub' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
