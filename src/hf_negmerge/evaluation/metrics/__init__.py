"""`evaluate` metric modules shipped inside the package, loaded by path so they work offline.

`evaluate.load("accuracy")` downloads the metric's code from the Hub at run time; these scripts
live next to this file (`<name>/<name>.py`, the layout `evaluate.load(<folder>)` expects) and
never touch the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent

#: Packaged metric name -> one-line description.
PACKAGED_METRICS: dict[str, str] = {
    "accuracy": "Top-1 accuracy in percent (0–100).",
    "mia_efficacy": "SalUn's MIA-Efficacy in percent: forget samples an SVC attack calls non-members.",
}


def metric_path(name: str) -> Path:
    """Folder of the packaged metric `name` (pass it to `evaluate.load`)."""
    if name not in PACKAGED_METRICS:
        raise KeyError(
            f"Unknown packaged metric {name!r}; available: {', '.join(sorted(PACKAGED_METRICS))}. "
            "Hub metrics are not loaded on purpose (they need the network)."
        )
    folder = _HERE / name
    if not (folder / f"{name}.py").is_file():
        raise FileNotFoundError(
            f"The metric script {folder / f'{name}.py'} is missing from the installed package."
        )
    return folder


def load_metric(name: str, **kwargs: Any):
    """`evaluate.load` on the packaged script of `name`; kwargs go to `evaluate.load`."""
    import evaluate  # deferred: importing evaluate pulls in datasets

    return evaluate.load(str(metric_path(name)), **kwargs)


def available_metrics() -> list[str]:
    return sorted(PACKAGED_METRICS)
