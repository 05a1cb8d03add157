"""Key and type checking of a recipe mapping with pydantic, errors named by dotted key.

pydantic checks every key and value type against the config dataclasses' own annotations,
strictly (no "1" for 1, no 1 for true, a float field takes an int). Strict pydantic refuses a
dict where a dataclass is declared, so the schema is a `TypedDict` mirror of the dataclasses,
every key optional (a recipe sets only what it changes). The check only reads: the dataclasses
then build the sections from the unchanged values, so their `__post_init__` keeps every range
and cross-field rule and no value is converted (an int learning rate stays an int).

Generic over the root dataclass, so this module needs nothing from `recipe`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import cached_property
from typing import Any, get_type_hints

from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs it (not typing's) before Python 3.12

from .errors import ConfigError

_STRICT = ConfigDict(strict=True, extra="forbid")

Step = tuple[int | str, ...]  # keys and list indices from the root to a value


class MappingSchema:
    """The shape of a mapping that builds `root`: its sections, their keys and value types.

    `replace` gives the annotation to check instead of a field's own, by dotted key (e.g. a
    section whose file format differs from its dataclass's fields).
    """

    def __init__(self, root: type, replace: Mapping[str, Any] | None = None) -> None:
        self.root = root
        self.replace = dict(replace or {})
        self.sections: dict[Step, dict[str, Any]] = {}  # section path -> {key: annotation}

    @cached_property
    def _adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self._mirror(self.root, ()))

    def _mirror(self, cls: type, path: Step) -> Any:
        hints = get_type_hints(cls)
        declared = {
            item.name: self.replace.get(_key((*path, item.name)), hints[item.name])
            for item in dataclasses.fields(cls)
        }
        self.sections[path] = declared
        fields = {
            # a section left empty in YAML (`data:`) is None
            name: self._mirror(hint, (*path, name)) | None if dataclasses.is_dataclass(hint) else hint
            for name, hint in declared.items()
        }
        shape = TypedDict(cls.__name__, fields, total=False)
        shape.__pydantic_config__ = _STRICT  # pydantic's documented hook for a TypedDict's config
        return shape

    def check(self, values: Mapping[str, Any]) -> None:
        """Raise ConfigError naming the dotted key of each unknown key or wrong type."""
        try:
            self._adapter.validate_python(values)
        except ValidationError as error:
            raise ConfigError(self._describe(error, values)) from None

    def _describe(self, error: ValidationError, values: Mapping[str, Any]) -> str:
        """The first problem in full, then the dotted keys of the others.

        A value that fits no member of a union gets one error per member; they are one problem,
        told by the member that got deepest (`[1]` of `list[str] | str`: the list's bad item).
        """
        problems: dict[str, list[tuple[Step, dict[str, Any]]]] = {}
        for entry in error.errors(include_url=False):
            steps, union = _steps(entry["loc"], values)
            problems.setdefault(_key(steps[:union]), []).append((steps, entry))
        messages = []
        for found in problems.values():
            deepest = max(len(steps) for steps, _ in found)
            steps = next(steps for steps, _ in found if len(steps) == deepest)
            entries = [entry for kept, entry in found if len(kept) == deepest]
            messages.append((_key(steps), self._message(steps, entries, values)))
        (_, message), *others = messages
        if others:
            message = (
                f"{message.removesuffix('.')} (also wrong: {', '.join(repr(key) for key, _ in others)})."
            )
        return message

    def _message(self, steps: Step, entries: list[dict[str, Any]], values: Mapping[str, Any]) -> str:
        key, value, kind = _key(steps), _value(steps, values), entries[0]["type"]
        field = self._field(steps)
        declared = self.sections[field[:-1]][field[-1]] if field else None
        if kind == "extra_forbidden":
            where = _key(steps[:-1])
            scope = f"keys of '{where}'" if where else "top-level keys"
            return f"Unknown recipe key '{key}'; known {scope}: {sorted(self.sections[steps[:-1]])}."
        if (
            kind == "dict_type"
            and steps == field
            and (dataclasses.is_dataclass(declared) or key in self.replace)
        ):
            return f"Recipe section '{key}' must be a mapping, got {_shown(value)}."
        if steps == field:  # the field itself: its annotation says what is expected
            expected = _type_name(declared)
        else:  # inside a list or mapping: what pydantic wanted there, and the field's annotation
            wanted = dict.fromkeys(entry["msg"].removeprefix("Input should be ") for entry in entries)
            expected = " or ".join(wanted)
            if field:
                expected += f" ({_key(field)} is {_type_name(declared)})"
        return f"Recipe key '{key}' has the wrong type: got {_shown(value)}, expected {expected}."

    def _field(self, steps: Step) -> Step:
        """The steps up to the dataclass field that holds this position (empty: none does)."""
        for end in range(len(steps), 0, -1):
            if steps[end - 1] in self.sections.get(steps[: end - 1], {}):
                return steps[:end]
        return ()


def _steps(loc: tuple[int | str, ...], values: Any) -> tuple[Step, int]:
    """pydantic's error location as keys and indices of the values, and how many precede a union tag.

    The location is followed through the values themselves: a step that is not a key or index of
    the value reached so far is a union member's tag (`int`, `list[str]`), not part of the key.
    """
    steps: list[int | str] = []
    node, union = values, None
    for part in loc:
        if (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            steps.append(part)
            node = node[part]
        elif union is None:
            union = len(steps)
    return tuple(steps), len(steps) if union is None else union


def _key(steps: Step) -> str:
    """`("grid", "points", 1, "epochs")` -> `grid.points[1].epochs`."""
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in steps).lstrip(".")


def _value(steps: Step, values: Any) -> Any:
    for step in steps:
        values = values[step]
    return values


def _shown(value: Any) -> str:
    return "null" if value is None else f"{value!r} ({type(value).__name__})"


def _type_name(annotation: Any) -> str:
    """`int`, `list[str] | None`: an annotation as it is written."""
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
