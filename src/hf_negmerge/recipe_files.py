"""The packaged recipe files (where they live, their names) and the strict YAML reader of recipe and merge files.

Kept apart from `recipe.py` (which validates recipes against the data, model and training
configs, and so imports torch) so the command line can list recipes in `--help` cheaply, and so a
merge file is read by the same YAML rules as a recipe without importing the recipe machinery.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

BUILTIN_RECIPES_DIR = Path(__file__).parent / "recipes"
DEFAULT_RECIPE = "default"
#: deepest nesting of lists and mappings a YAML file may have (no recipe or merge file needs 10)
MAX_YAML_DEPTH = 64


def available_recipes() -> list[str]:
    """Names of the packaged recipes (accelerate launch configs live beside them and are skipped)."""
    return sorted(
        str(path.relative_to(BUILTIN_RECIPES_DIR).with_suffix(""))
        for path in BUILTIN_RECIPES_DIR.rglob("*.yaml")
        if path.parent.name != "accelerate"
    )


class StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses what plain YAML reading gets silently wrong or crashes on.

    Repeated keys (plain YAML keeps the last), non-string keys, nesting deeper than
    `MAX_YAML_DEPTH` (PyYAML recurses per level and would end in a RecursionError) and integers
    longer than Python converts (a ValueError) are each a `ConfigError` naming the line.
    """

    #: what the file is, for messages ("recipe keys must be strings")
    noun = "YAML"

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._top_key: str | None = None  # the top-level key being composed, for messages

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth == 2 and isinstance(index, yaml.ScalarNode):
                self._top_key = index.value
            if self._depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                under = f" (under '{self._top_key}')" if self._top_key is not None else ""
                raise ConfigError(
                    f"line {line}{under}: lists and mappings are nested more than {MAX_YAML_DEPTH} "
                    "levels deep."
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)  # resolve `<<:` merge keys first, as SafeLoader does
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise ConfigError(f"line {line}: {self.noun} keys must be strings, got {key!r}.")
            if key in seen:
                raise ConfigError(
                    f"line {line}: duplicate key {key!r} (first given on line {seen[key]}); "
                    "YAML would silently keep only the last value, so give each key once."
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError as error:
            raise ConfigError(
                f"line {node.start_mark.line + 1}: the integer {str(node.value)[:12]}… has "
                f"{len(str(node.value))} digits, more than Python reads ({sys.get_int_max_str_digits()})."
            ) from error


StrictYamlLoader.add_constructor("tag:yaml.org,2002:int", StrictYamlLoader.construct_yaml_int)
# YAML 1.1 (PyYAML) reads `1e-5` as a string; recipes are full of such learning rates, so read
# exponent floats without a dot as numbers, as YAML 1.2 does.
StrictYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str, noun: str) -> Any:
    """`text` read by `StrictYamlLoader`; `noun` says what the file is in messages ("recipe")."""
    loader = StrictYamlLoader(text)
    loader.noun = noun
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message on one line: where, then what."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
