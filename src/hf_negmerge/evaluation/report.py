"""Method-comparison tables (markdown for people, JSON for scripts).

The run report (`report.md`) is `hf_negmerge.outputs.render_report`, and `metrics.json` is read
and written only by `hf_negmerge.results`.

Rows are plain dicts, one per method, with any subset of the known columns; a missing value
prints as "—" and a column nobody filled is left out, so partial runs still give a clean table.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoints import atomic_write_text

MISSING = "—"


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


#: The terminal summary: test numbers only (λ was chosen on validation; report.md has both).
SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("method", "method"),
    Column("scale", "λ", 2),
    Column("forget_accuracy", "forget ↓", 2),
    Column("unlearn_accuracy", "UA ↑", 2),
    Column("retain_accuracy", "retain ↑", 2),
    Column("test_accuracy", "test ↑", 2),
    Column("control_accuracy", "control ↑", 2),
    Column("mia_efficacy", "MIA", 2),
    Column("avg_gap", "gap ↓", 2),
    Column("status", "status"),
)
SUMMARY_WIDTH = 100
SUMMARY_LEGEND = "% on test rows; λ chosen on validation rows (report.md); UA = 100 − forget; ↓↑ better"
_SHORT_STATUS = {"retain constraint not met": "retain not met"}
_BEST_RUN = re.compile(r"^(?P<method>.+) \(best: (?P<run>.+)\)$")


def summary_table(rows: Sequence[Mapping[str, Any]], width: int = SUMMARY_WIDTH) -> str:
    """The final terminal summary: an aligned plain table of at most `width` columns, then a legend.

    Two decimals throughout; a method's "(best: run-id)" moves to a note under the table; if the
    table is still too wide, UA (100 − forget) is left out, then the method names are cut.
    """
    rows = [dict(row) for row in rows]
    if not rows:
        raise ValueError("No rows to tabulate.")
    notes = []
    for row in rows:
        match = _BEST_RUN.match(str(row.get("method", "")))
        if match:
            row["method"] = f"{match['method']}*"
            notes.append(f"* best single run: {match['run']}")
        if row.get("status") in _SHORT_STATUS:
            row["status"] = _SHORT_STATUS[row["status"]]
    filled = {key for row in rows for key, value in row.items() if not _is_missing(value)}
    columns = [column for column in SUMMARY_COLUMNS if column.key in filled]
    lines = _plain_table(rows, columns)
    if max(map(len, lines)) > width and any(column.key == "unlearn_accuracy" for column in columns):
        columns = [column for column in columns if column.key != "unlearn_accuracy"]
        lines = _plain_table(rows, columns)
    if max(map(len, lines)) > width:  # cut the method names, the only free text left
        excess = max(map(len, lines)) - width
        longest = max(len(str(row.get("method", ""))) for row in rows)
        keep = max(8, longest - excess)
        for row in rows:
            name = str(row.get("method", ""))
            row["method"] = name if len(name) <= keep else name[: keep - 1] + "…"
        lines = _plain_table(rows, columns)
    legend = (
        SUMMARY_LEGEND
        if any(c.key == "unlearn_accuracy" for c in columns)
        else (SUMMARY_LEGEND.replace("; UA = 100 − forget", ""))
    )
    return "\n".join([*lines, *notes, legend])


def _plain_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> list[str]:
    """Header, a rule, and one line per row; numbers right-aligned, two spaces between columns."""
    cells = [[format_value(row.get(column.key), column.decimals) for column in columns] for row in rows]
    numeric = [any(isinstance(row.get(column.key), numbers.Real) for row in rows) for column in columns]
    widths = [max(len(column.header), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]

    def render(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(w) if is_numeric else value.ljust(w)
            for value, w, is_numeric in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return [render([c.header for c in columns]), "  ".join("─" * w for w in widths), *map(render, cells)]


def comparison_json(rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows as a JSON list (full precision; missing values stay missing, NaN becomes null)."""
    return json.dumps(to_jsonable([dict(row) for row in rows]), indent=2, ensure_ascii=False) + "\n"


def write_comparison(
    rows: Sequence[Mapping[str, Any]], markdown_path: str | Path, json_path: str | Path
) -> None:
    """Write the comparison table as markdown and as JSON, each file atomically."""
    atomic_write_text(markdown_path, markdown_table(rows) + "\n")
    atomic_write_text(json_path, comparison_json(rows))
