"""Figures for the report: the λ trade-off per method and the sign-consensus survival per layer.

Figures are drawn on the Agg canvas directly (no pyplot state, no display needed) and written
through a temporary file, so a crash never leaves a half-written PNG.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..checkpoints import atomic_write_bytes
from ..lambda_search import LambdaPoint, LambdaSelection

_LAYER_INDEX = re.compile(r"^(.*?\.\d+)(?:\.|$)")


def save_figure(figure: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Render `figure` to PNG bytes in memory, then write them atomically."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_lambda_curves(
    curves: Mapping[str, LambdaSelection | Sequence[LambdaPoint]],
    path: str | Path,
    title: str = "Forget vs retain accuracy along λ (validation)",
) -> Path:
    """One line per method through its (retain, forget) validation accuracies, ordered by λ.

    A `LambdaSelection` marks its chosen λ (star) and its retain threshold (a labelled dashed
    line: points left of it are refused). Chosen points are named in the legend ("λ=3") rather
    than annotated, so labels never overlap; the legend sits outside the axes. The retain axis
    starts a little below the lowest threshold: the region where a λ can be chosen. The right
    panel shows both accuracies against λ.
    """
    if not curves:
        raise ValueError("No λ curves to plot.")
    figure = Figure(figsize=(12, 4.6), layout="constrained")
    tradeoff, along = figure.subplots(1, 2)
    thresholds: list[float] = []
    retain_values: list[float] = []
    for index, (method, curve) in enumerate(curves.items()):
        selection = curve if isinstance(curve, LambdaSelection) else None
        points = sorted(selection.curve if selection else curve, key=lambda point: point.scale)
        if not points:
            raise ValueError(f"The λ curve of {method!r} is empty.")
        color = f"C{index % 10}"
        scales = [point.scale for point in points]
        forget = [point.forget_accuracy for point in points]
        retain = [point.retain_accuracy for point in points]
        retain_values += retain
        label = method if selection is None else f"{method} (λ={selection.scale:g})"
        tradeoff.plot(retain, forget, marker="o", markersize=3, color=color, label=label)
        along.plot(scales, forget, color=color)
        along.plot(scales, retain, color=color, linestyle="--")
        if selection is not None:
            chosen = selection.point
            tradeoff.scatter(
                [chosen.retain_accuracy],
                [chosen.forget_accuracy],
                marker="*",
                s=200,
                color=color,
                edgecolors="black",
                zorder=5,
            )
            along.scatter(
                [chosen.scale],
                [chosen.forget_accuracy],
                marker="*",
                s=120,
                color=color,
                edgecolors="black",
                zorder=5,
            )
            thresholds.append(selection.threshold)
    for threshold in sorted(set(round(value, 6) for value in thresholds)):
        tradeoff.axvline(threshold, color="0.3", linestyle="--", linewidth=1)
        tradeoff.annotate(
            f"retain threshold {threshold:.2f}",
            (threshold, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-3, -3),
            textcoords="offset points",
            rotation=90,
            ha="right",
            va="top",
            fontsize=8,
            color="0.3",
        )
    if thresholds:  # the region that matters: from just below the threshold to the best retain
        low = min(thresholds) - 0.25 * (max(retain_values) - min(thresholds) + 1.0)
        high = max(retain_values)
        tradeoff.set_xlim(max(min(retain_values), low) - 0.5, high + 0.5)
    tradeoff.set_ylim(-2, 102)
    tradeoff.set_xlabel("retain / control accuracy, % (validation)")
    tradeoff.set_ylabel("forget accuracy, % (validation)")
    tradeoff.set_title(title, fontsize=10)
    tradeoff.grid(alpha=0.3)
    handles, labels = tradeoff.get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [
        Line2D([], [], marker="*", color="0.3", markeredgecolor="black", markersize=11, linestyle=""),
        Line2D([], [], color="0.3", linestyle="--"),
    ]
    labels += ["chosen λ", "retain threshold (left: refused)"]
    figure.legend(
        handles, labels, loc="outside right upper", fontsize=8, title="method (chosen λ)", title_fontsize=8
    )
    along.set_xlabel("λ")
    along.set_ylabel("accuracy, % (validation)")
    along.set_ylim(-2, 102)
    along.set_title("Accuracy against λ (solid: forget, dashed: retain)", fontsize=10)
    along.grid(alpha=0.3)
    return save_figure(figure, path)


def plot_loss_curves(logs: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path) -> Path:
    """Training loss per optimizer step, one line per run (log scale when the loss spans decades),
    with the learning-rate schedule below; `logs` maps a run id to its train_log rows."""
    runs = {run: rows for run, rows in logs.items() if rows}
    if not runs:
        raise ValueError("No training logs to plot.")
    figure = Figure(figsize=(10, 5.5), layout="constrained")
    loss_axes, rate_axes = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    losses = []
    for index, (run, rows) in enumerate(runs.items()):
        steps = [row["step"] for row in rows]
        loss = [row["loss"] for row in rows]
        losses += [value for value in loss if value > 0]
        loss_axes.plot(steps, loss, color=f"C{index % 10}", linewidth=1.2, label=run)
        rate_axes.plot(steps, [row["learning_rate"] for row in rows], color=f"C{index % 10}", linewidth=1)
    if losses and max(losses) / min(losses) > 100:
        loss_axes.set_yscale("log")
    loss_axes.set_ylabel("training loss")
    loss_axes.set_title(f"Fine-tuning on the forget set: {len(runs)} runs", fontsize=10)
    loss_axes.grid(alpha=0.3)
    rate_axes.set_ylabel("learning rate")
    rate_axes.set_xlabel("optimizer step")
    rate_axes.grid(alpha=0.3)
    rate_axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    figure.legend(loc="outside right upper", fontsize=7, title="run", title_fontsize=8)
    return save_figure(figure, path)


def layer_group(tensor_name: str) -> str:
    """The layer a tensor belongs to: the name up to its first numeric part
    ("vision_model.encoder.layers.3.mlp.fc1.weight" -> "vision_model.encoder.layers.3"), else its
    module without the parameter ("vision_model.embeddings.patch_embedding.weight" ->
    "vision_model.embeddings.patch_embedding")."""
    match = _LAYER_INDEX.match(tensor_name)
    if match:
        return match.group(1)
    return tensor_name.rsplit(".", 1)[0] if "." in tensor_name else tensor_name


def group_kept_fraction(
    kept_fraction: Mapping[str, float], numel: Mapping[str, int] | None = None
) -> dict[str, float]:
    """Kept fraction per `layer_group`, in first-seen order.

    With `numel` (elements per tensor) a group's fraction is kept elements / elements; without it,
    the plain mean of its tensors' fractions.
    """
    kept: dict[str, float] = {}
    total: dict[str, float] = {}
    for name, fraction in kept_fraction.items():
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"kept fraction of {name!r} is {fraction}; it must be in [0, 1].")
        if numel is not None and name not in numel:
            raise KeyError(f"numel has no entry for tensor {name!r}.")
        weight = float(numel[name]) if numel is not None else 1.0
        group = layer_group(name)
        kept[group] = kept.get(group, 0.0) + fraction * weight
        total[group] = total.get(group, 0.0) + weight
    return {group: kept[group] / total[group] if total[group] else 0.0 for group in kept}


def _common_dotted_prefix(names: Sequence[str]) -> str:
    """The dotted module path every name starts with ("vision_model."), kept only if no name is left empty."""
    parts = [name.split(".") for name in names]
    shared = 0
    while all(len(split) > shared + 1 for split in parts) and len({split[shared] for split in parts}) == 1:
        shared += 1
    return "".join(f"{part}." for part in parts[0][:shared]) if shared else ""


def plot_kept_fraction(
    kept_fraction: Mapping[str, float],
    path: str | Path,
    numel: Mapping[str, int] | None = None,
    title: str = "Elements kept by sign consensus, per layer",
) -> Path:
    """Bar chart of the fraction of task-vector elements kept in each layer (see `group_kept_fraction`)."""
    if not kept_fraction:
        raise ValueError("No kept fractions to plot.")
    grouped = group_kept_fraction(kept_fraction, numel)
    names = list(grouped)
    prefix = _common_dotted_prefix(names)
    if prefix:
        title = f"{title}\n(under {prefix.rstrip('.')})"
    figure = Figure(figsize=(max(6.0, 0.35 * len(names) + 2), 4.5), layout="constrained")
    axes = figure.subplots()
    values = [grouped[name] for name in names]
    bars = axes.bar(range(len(names)), values, color="C0")
    if len(names) <= 24:  # a value per bar while they stay legible
        axes.bar_label(bars, labels=[f"{value:.0%}" for value in values], fontsize=7, padding=2)
    weights = numel or dict.fromkeys(kept_fraction, 1)
    overall = sum(kept_fraction[name] * weights[name] for name in kept_fraction) / max(
        1, sum(weights[name] for name in kept_fraction)
    )
    axes.axhline(overall, color="C3", linestyle="--", linewidth=1)
    axes.annotate(  # labelled on the line, outside the bars (no legend box over the data)
        f"overall {overall:.1%}",
        (1.0, overall),
        xycoords=("axes fraction", "data"),
        xytext=(4, 0),
        textcoords="offset points",
        va="center",
        fontsize=8,
        color="C3",
    )
    axes.set_xticks(range(len(names)))
    long_names = max(len(name) - len(prefix) for name in names) > 12
    axes.set_xticklabels(
        [name[len(prefix) :] for name in names],
        rotation=60 if long_names else 0,
        ha="right" if long_names else "center",
        fontsize=7,
    )
    axes.set_ylabel("fraction of τ's elements kept")
    axes.set_ylim(0, 1.1)  # a fraction: the whole range, so layers compare across plots
    axes.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    axes.grid(axis="y", alpha=0.3)
    axes.set_title(title)
    return save_figure(figure, path)
