"""Method-comparison tables (markdown for people, JSON for scripts) and the run report.

Rows are plain dicts, one per method, with any subset of the known columns; a missing value
prints as "—" and a column nobody filled is left out, so partial runs still give a clean table.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoints import atomic_write_text

MISSING = "—"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class Column:
    """How one row key is shown: header text and decimals for numbers."""

    key: str
    header: str
    decimals: int = 2


#: Known columns in display order. Accuracies, MIA and gaps are percentages; kept_fraction is 0–1.
COLUMNS: tuple[Column, ...] = (
    Column("method", "method"),
    Column("scale", "λ", 2),
    Column("forget_accuracy", "forget acc ↓", 2),
    Column("unlearn_accuracy", "UA ↑", 2),
    Column("retain_accuracy", "retain acc ↑", 2),
    Column("test_accuracy", "test acc ↑", 2),
    Column("control_accuracy", "control acc ↑", 2),
    Column("mia_efficacy", "MIA-Efficacy", 2),
    Column("avg_gap", "Avg. Gap ↓", 2),
    Column("kept_fraction", "kept fraction", 4),
)
_KNOWN = {column.key: column for column in COLUMNS}
_DEFAULT_DECIMALS = 4


def to_jsonable(value: Any) -> Any:
    """Plain JSON types for dataclasses, paths, numpy/torch scalars; NaN and ±inf become null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(value.tolist())
    raise TypeError(f"Cannot write {type(value).__name__} ({value!r}) to JSON.")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, numbers.Real) and not math.isfinite(float(value)))


def format_value(value: Any, decimals: int = _DEFAULT_DECIMALS) -> str:
    """Fixed decimals for reals, "—" for missing/NaN, str() otherwise."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.{decimals}f}"
    return str(value)


def table_columns(rows: Sequence[Mapping[str, Any]]) -> list[Column]:
    """Known columns that some row fills, in display order, then unknown keys in first-seen order."""
    filled = {key for row in rows for key, value in row.items() if not _is_missing(value)}
    columns = [column for column in COLUMNS if column.key in filled]
    extra: list[str] = []
    for row in rows:
        extra.extend(key for key in row if key in filled and key not in _KNOWN and key not in extra)
    return columns + [Column(key, key, _DEFAULT_DECIMALS) for key in extra]


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column] | None = None) -> str:
    """An aligned GitHub markdown table; numeric columns are right-aligned."""
    rows = [dict(row) for row in rows]
    if not rows:
        raise ValueError("No rows to tabulate.")
    columns = list(columns) if columns is not None else table_columns(rows)
    cells = [[format_value(row.get(column.key), column.decimals) for column in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(column.key), numbers.Real) or _is_missing(row.get(column.key)) for row in rows)
        and any(isinstance(row.get(column.key), numbers.Real) for row in rows)
        for column in columns
    ]
    widths = [
        max(len(column.header), 3, *(len(line[index]) for line in cells))
        for index, column in enumerate(columns)
    ]

    def render(values: Sequence[str]) -> str:
        padded = [
            value.rjust(width) if is_numeric else value.ljust(width)
            for value, width, is_numeric in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (width - 1) + ":" if is_numeric else "-" * width
        for width, is_numeric in zip(widths, numeric, strict=True)
    ]
    return "\n".join(
        [render([column.header for column in columns]), render(rule), *(render(line) for line in cells)]
    )


def comparison_json(rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows as a JSON list (full precision; missing values stay missing, NaN becomes null)."""
    return json.dumps(to_jsonable([dict(row) for row in rows]), indent=2, ensure_ascii=False) + "\n"


def write_comparison(
    rows: Sequence[Mapping[str, Any]], markdown_path: str | Path, json_path: str | Path
) -> None:
    """Write the comparison table as markdown and as JSON, each file atomically."""
    atomic_write_text(markdown_path, markdown_table(rows) + "\n")
    atomic_write_text(json_path, comparison_json(rows))


def _is_table(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple)) and bool(value) and all(isinstance(item, Mapping) for item in value)
    )


def _inline(value: Any) -> str:
    """A scalar, or a list of scalars joined by commas (λ grids, file lists)."""
    if isinstance(value, (list, tuple)):
        return (
            ", ".join(f"{item:g}" if isinstance(item, float) else format_value(item) for item in value)
            or MISSING
        )
    return format_value(value)


def _render_mapping(values: Mapping[str, Any], heading: str, level: int) -> list[str]:
    """Inline entries as one key/value table under `heading`, then nested entries as subsections."""
    inline = {
        key: item for key, item in values.items() if not isinstance(item, Mapping) and not _is_table(item)
    }
    lines = [f"{'#' * min(level, 6)} {heading}", ""]
    if inline:
        lines += [markdown_table([{"key": key, "value": _inline(item)} for key, item in inline.items()]), ""]
    for key, item in values.items():
        if key in inline:
            continue
        if isinstance(item, Mapping):
            lines += _render_mapping(item, str(key), level + 1)
        else:
            lines += [f"{'#' * min(level + 1, 6)} {key}", "", markdown_table(item), ""]
    return lines


def render_report(summary: Mapping[str, Any], title: str = "hf-negmerge report") -> str:
    """Markdown for a run summary: "methods" (list of rows) first as the comparison table, then
    the other entries: scalars and lists of scalars in a key/value table, dicts as subsections,
    lists of dicts as tables. A "title" entry replaces `title`."""
    summary = to_jsonable(summary)
    lines = [f"# {summary.get('title', title)}", ""]
    if summary.get("methods"):
        lines += ["## Method comparison", "", markdown_table(summary["methods"]), ""]
    rest = {key: value for key, value in summary.items() if key not in ("title", "methods")}
    if rest:
        lines += _render_mapping(rest, "Details", 2)
    return "\n".join(lines).rstrip() + "\n"


def write_report(directory: str | Path, summary: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write `metrics.json` (the summary, JSON) and `report.md` (rendered) into `directory`, atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metrics_path, report_path = directory / METRICS_FILE, directory / REPORT_FILE
    atomic_write_text(metrics_path, json.dumps(to_jsonable(summary), indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(report_path, render_report(summary))
    return metrics_path, report_path
