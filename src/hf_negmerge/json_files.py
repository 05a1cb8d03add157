"""JSON that users or other tools wrote, read so that every failure names the file and the field.

A key given twice is refused (`json.loads` silently keeps the last value). `json.loads` also
fails in ways that are not `JSONDecodeError`s: nesting deeper than Python's recursion limit raises
`RecursionError`, an integer longer than Python converts (4300 digits by default) raises a bare
`ValueError`, and a value nested a few hundred levels deep loads but breaks the code that walks it
later. Here each is the caller's `NegMergeError` naming the source and the field. Configs and
metadata are small, so the extra walk costs nothing.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError, NegMergeError

#: deepest nesting of lists and objects a config or metadata value may have (none needs 10)
MAX_JSON_DEPTH = 64
#: strings and the characters that open, close or key a container (a scan that never recurses)
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]')


class _LongInteger(str):
    """The digits of an integer longer than Python converts, kept to be named with its field."""


def read_json_file(path: Path, error: type[NegMergeError] = ConfigError) -> Any:
    """The JSON value in `path`; unreadable, non-UTF-8 or bad JSON raises `error` naming the file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as problem:
        raise error(f"{path} is not valid JSON: {problem}") from problem
    except OSError as problem:
        raise error(f"{path} cannot be read ({problem.strerror or problem}).") from problem
    return parse_json(text, str(path), error)


def parse_json(text: str, source: str, error: type[NegMergeError] = ConfigError) -> Any:
    """`text` as JSON; `source` says what it is in messages ("x.safetensors: the metadata")."""

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise error(
                    f"{source}: key '{key}' is given twice; JSON readers silently keep only the last "
                    "value, so give each key once."
                )
            seen.add(key)
        return dict(pairs)

    try:
        value = json.loads(text, parse_int=_integer, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as problem:
        raise error(f"{source} is not valid JSON: {problem}") from problem
    except RecursionError:
        raise error(_too_deep(source, _field_nested_past(text, MAX_JSON_DEPTH))) from None
    _check_values(value, source, error)
    return value


def _integer(digits: str) -> int | _LongInteger:
    limit = sys.get_int_max_str_digits()
    return _LongInteger(digits) if limit and len(digits.lstrip("-")) > limit else int(digits)


def _check_values(value: Any, source: str, error: type[NegMergeError]) -> None:
    """Refuse over-long integers and over-deep nesting, naming the top-level field (no recursion)."""
    stack: list[tuple[Any, int, str | None]] = [(value, 0, None)]
    while stack:
        item, depth, field = stack.pop()
        if isinstance(item, _LongInteger):
            raise error(
                f"{source}: {_subject(field)} holds an integer of {len(item.lstrip('-'))} digits, more "
                f"than Python reads ({sys.get_int_max_str_digits()})."
            )
        if isinstance(item, dict | list):
            if depth == MAX_JSON_DEPTH:
                raise error(_too_deep(source, field))
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                top = str(key) if depth == 0 and isinstance(item, dict) else field
                stack.append((child, depth + 1, top))


def _field_nested_past(text: str, limit: int) -> str | None:
    """The top-level key under which `text` nests past `limit` levels (None: not in an object)."""
    depth, last_string, field = 0, None, None
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return field
        elif token in ("]", "}"):
            depth -= 1
        elif token == ":":
            if depth == 1 and last_string is not None:
                field = json.loads(last_string)
        else:
            last_string = token
    return field


def _too_deep(source: str, field: str | None) -> str:
    return (
        f"{source}: {_subject(field)} is nested more than {MAX_JSON_DEPTH} levels deep "
        "(lists or objects inside each other)."
    )


def _subject(field: str | None) -> str:
    return f"field '{field}'" if field is not None else "the value"
