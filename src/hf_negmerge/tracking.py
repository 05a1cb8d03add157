"""Send a run's logs to accelerate's experiment trackers (`evaluation.log_with`).

The JSONL logs in the output folder are the record; trackers (TensorBoard, W&B, ...) get the
same numbers once the run is measured: each grid run's loss and learning rate per step, and
each method's validation accuracies per λ. accelerate silently drops a tracker whose package is
missing, so the names are checked before any work and a missing one is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError


def check_trackers(names: Sequence[str]) -> None:
    """ConfigError naming evaluation.log_with when a tracker is unknown or not installed."""
    if not names:
        return
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    unknown = [name for name in names if name not in LOGGER_TYPE_TO_CLASS]
    if unknown:
        raise ConfigError(
            f"evaluation.log_with: unknown tracker(s) {unknown}; accelerate knows {sorted(LOGGER_TYPE_TO_CLASS)}."
        )
    available = {str(tracker) for tracker in get_available_trackers()}
    missing = [name for name in names if name not in available]
    if missing:
        raise ConfigError(
            f"evaluation.log_with: tracker(s) {missing} not installed (pip install {' '.join(missing)}), "
            f"or remove them; installed: {sorted(available) or 'none'}. The JSONL logs are written either way."
        )


def send_to_trackers(
    names: Sequence[str],
    logging_dir: Path,
    run_logs: Mapping[str, Sequence[Mapping[str, Any]]],
    lambda_rows: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any],
) -> None:
    """Log every run's steps (`train/<run>/loss`, `.../learning_rate`) and every λ point
    (`lambda/<method>/forget_accuracy`, `.../retain_accuracy`, step = index along the grid)."""
    if not names:
        return
    from accelerate import Accelerator

    check_trackers(names)
    accelerator = Accelerator(log_with=list(names), project_dir=str(logging_dir))
    accelerator.init_trackers("hf-negmerge", config=dict(config))
    for run_id, rows in run_logs.items():
        for row in rows:
            values = {f"train/{run_id}/{key}": row[key] for key in ("loss", "learning_rate")}
            accelerator.log(values, step=int(row["step"]))
    index: dict[str, int] = {}
    for row in lambda_rows:
        method = row["method"]
        step = index[method] = index.get(method, -1) + 1
        accelerator.log(
            {
                f"lambda/{method}/forget_accuracy": row["forget_accuracy"],
                f"lambda/{method}/retain_accuracy": row["retain_accuracy"],
                f"lambda/{method}/scale": row["scale"],
            },
            step=step,
        )
    accelerator.end_training()
