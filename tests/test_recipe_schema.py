"""MappingSchema on small dataclasses of its own: strict types, dotted keys, one message per problem."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from hf_negmerge.errors import ConfigError
from hf_negmerge.recipe_schema import MappingSchema


@dataclass
class Inner:
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    name: str | None = None
    ids: list[int | str] | None = None
    words: list[str] | str | None = None
    renames: dict[str, str] | None = None
    anything: Any = None


@dataclass
class Outer:
    label: str = "x"
    inner: Inner = field(default_factory=Inner)
    loose: Inner = field(default_factory=Inner)  # checked as a plain mapping (replace=)
    rows: list[dict[str, int]] = field(default_factory=list)


SCHEMA = MappingSchema(Outer, replace={"loose": dict[str, Any] | None})


def _error(values: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        SCHEMA.check(values)
    return str(raised.value)


# value, fits `int`?, fits `float`?, fits `bool`?, fits `str | None`? (strict: no conversions)
STRICTNESS = [
    (3, True, True, False, False),
    (3.0, False, True, False, False),
    (True, False, False, True, False),
    ("3", False, False, False, True),
    (None, False, False, False, True),
    ([3], False, False, False, False),
]


@pytest.mark.parametrize(("value", "as_int", "as_float", "as_bool", "as_text"), STRICTNESS)
def test_scalars_are_strict(value, as_int, as_float, as_bool, as_text):
    for key, fits in (("count", as_int), ("rate", as_float), ("flag", as_bool), ("name", as_text)):
        values = {"inner": {key: value}}
        if fits:
            SCHEMA.check(values)
        else:
            assert _error(values).startswith(f"Recipe key 'inner.{key}' has the wrong type: got "), value


def test_keys_name_list_items_mapping_keys_and_the_field():
    assert _error({"inner": {"ids": [1, "a", 2.5]}}) == (
        "Recipe key 'inner.ids[2]' has the wrong type: got 2.5 (float), expected a valid integer or a "
        "valid string (inner.ids is list[int | str] | None)."
    )
    assert _error({"inner": {"renames": {"cat": "dog", "cow": 7}}}) == (
        "Recipe key 'inner.renames.cow' has the wrong type: got 7 (int), expected a valid string "
        "(inner.renames is dict[str, str] | None)."
    )
    assert _error({"rows": [{"a": 1}, {"b": "two"}]}).startswith(
        "Recipe key 'rows[1].b' has the wrong type: got 'two' (str), expected a valid integer"
    )
    assert _error({"inner": {"count": "3"}}) == (
        "Recipe key 'inner.count' has the wrong type: got '3' (str), expected int."
    )


def test_a_value_fitting_no_member_of_a_union_is_one_problem():
    # list[str] | str: the list branch got deeper, so its bad item is what is reported, alone
    assert _error({"inner": {"words": ["a", 3]}}) == (
        "Recipe key 'inner.words[1]' has the wrong type: got 3 (int), expected a valid string "
        "(inner.words is list[str] | str | None)."
    )
    assert _error({"inner": {"words": 3}}) == (
        "Recipe key 'inner.words' has the wrong type: got 3 (int), expected list[str] | str | None."
    )


def test_unknown_keys_sections_and_several_problems():
    assert _error({"inner": {"colour": 1}}) == (
        "Unknown recipe key 'inner.colour'; known keys of 'inner': "
        "['anything', 'count', 'flag', 'ids', 'name', 'rate', 'renames', 'words']."
    )
    assert _error({"colour": 1}) == (
        "Unknown recipe key 'colour'; known top-level keys: ['inner', 'label', 'loose', 'rows']."
    )
    assert _error({"inner": 3}) == "Recipe section 'inner' must be a mapping, got 3 (int)."
    assert _error({"loose": [1]}) == "Recipe section 'loose' must be a mapping, got [1] (list)."
    assert _error({"label": None, "inner": {"flag": "yes", "colour": 1}}) == (
        "Recipe key 'label' has the wrong type: got null, expected str "
        "(also wrong: 'inner.flag', 'inner.colour')."
    )


def test_what_passes_is_left_as_it_was():
    values = {
        "inner": {"rate": 1, "ids": [0, "b"], "words": "w", "anything": object, "name": None},
        "loose": {"not": "checked"},  # replaced by a plain mapping: its keys are the builder's business
        "rows": [],
    }
    before = copy.deepcopy(values)
    for accepted in (values, {"inner": None, "loose": None}, {}):
        SCHEMA.check(accepted)
    assert values == before and type(values["inner"]["rate"]) is int
