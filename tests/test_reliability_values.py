"""Reliability of configuration files and tensor values: merge YAML, `negmerge_config.json`,
task-vector metadata and `TaskVector` numerics.

Table-driven like `test_reliability_merge.py` (whose `Case`/`Env`, snapshot and call kinds are
reused): each case says how to set it up, what to call (the CLI in-process, as a subprocess, or
the Python API), the exit code (API: 2 = a NegMergeError was raised, 0 = it returned), a fragment
of the message, and which files must stay byte-identical. Valid counterparts are checked against
values computed here, independently, in float64.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_negmerge import NegMergeConfig, TaskVector
from hf_negmerge.errors import CheckpointError, ConfigError
from hf_negmerge.recipe_files import load_yaml
from test_reliability_merge import (  # noqa: F401 (prototype is a fixture)
    Case,
    Env,
    _invoke,
    negmerge_reference,
    prototype,
    snapshot,
    staging_left,
    vector_with_metadata,
    write_config,
)

# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------

MERGE_HEAD = "base: base\nmodels: [ft0, ft1]\n"
DEEP = 100_000  # nesting levels: far past Python's recursion limit
LONG = "9" * 5000  # digits: past Python's int conversion limit (4300)
TOO_DEEP = "is nested more than 64 levels deep"
TOO_LONG = "holds an integer of 5000 digits, more than Python reads (4300)"
YAML_BOOLEAN = "YAML reads an unquoted yes, no, on, off, true or false as a boolean"


def merge_yaml(text: str) -> Callable[[Env], None]:
    """A merge file `merge.yaml` beside the tiny runs (paths relative to it)."""

    def setup(env: Env) -> None:
        (env.root / "merge.yaml").write_text(text, encoding="utf-8")

    return setup


def merge_config_argv(env: Env) -> list[str]:
    return [
        "merge",
        "--config",
        str(env.root / "merge.yaml"),
        "--out",
        str(env.root / "out"),
        "--no-progress",
    ]


def yaml_case(id: str, text: str, code: int, message: str = "", kind: str = "cli", check=None) -> Case:
    return Case(id, merge_config_argv, code, message, setup=merge_yaml(text), kind=kind, check=check)


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def check_equal(got: object, expected: object) -> None:
    assert got == expected, got


def config_round_trip(env: Env) -> None:
    """A saved config (with a 4300-digit integer, at Python's limit) reads back equal."""
    config = NegMergeConfig(method="ties", ties_total_elements=int("7" * 4300), lambda_grid=[0.0, 0.5])
    config.save_pretrained(env.root / "saved")
    check_equal(NegMergeConfig.from_pretrained(env.root / "saved"), config)


def metadata_round_trip(env: Env) -> None:
    """Metadata nested to the limit, and long integers, read back equal."""
    metadata = {"deep": nested(63), "seed": 10**40, "runs": [{"name": "ft0", "lr": 1e-5}]}
    TaskVector({"w": torch.ones(2)}, metadata).save(env.root / "tv.safetensors")
    check_equal(TaskVector.load(env.root / "tv.safetensors").metadata, metadata)


def check_negmerge_output(env: Env) -> None:
    """The merged vector is the unanimous-sign mean computed here from the runs' tensors."""
    base = load_file(env.root / "base" / "model.safetensors")
    tuned = [load_file(env.root / name / "model.safetensors") for name in ("ft0", "ft1")]
    merged = TaskVector.load(env.root / "out" / "merged_task_vector.safetensors")
    assert merged.keys()
    for key in merged:
        torch.testing.assert_close(merged[key].double(), negmerge_reference(base, tuned, key))


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------

CASES: list[Case] = [
    # 1. merge YAML: a key given twice is refused with both lines, wherever it is
    yaml_case(
        "yaml-duplicate-top",
        MERGE_HEAD + "method: ties\nmethod: negmerge\n",
        2,
        "merge.yaml: line 4: duplicate key 'method' (first given on line 3)",
    ),
    yaml_case(
        "yaml-duplicate-parameter",
        MERGE_HEAD + "parameters: {consensus_fraction: 1.0, consensus_fraction: 0.6}\n",
        2,
        "line 3: duplicate key 'consensus_fraction'",
    ),
    yaml_case(
        "yaml-duplicate-model-entry",
        "base: base\nmodels:\n  - model: ft0\n    model: ft1\n",
        2,
        "line 4: duplicate key 'model' (first given on line 3)",
    ),
    yaml_case("yaml-duplicate-base", MERGE_HEAD + "base: ft1\n", 2, "duplicate key 'base'"),
    yaml_case("yaml-non-string-key", MERGE_HEAD + "1: one\n", 2, "line 3: merge file keys must be strings"),
    yaml_case("yaml-valid", MERGE_HEAD + "method: negmerge\n", 0, check=check_negmerge_output),
    # 2. a field that takes text gets text: YAML 1.1's yes/no/on/off booleans are named as such
    *(
        yaml_case(f"yaml-boolean-{name}", MERGE_HEAD + text, 2, f"{expected}, got {shown}: {YAML_BOOLEAN}")
        for name, text, expected, shown in [
            (
                "method-yes",
                "method: yes\n",
                "'method' must be one of task_arithmetic, uniform, ties, magmax, negmerge",
                "True",
            ),
            (
                "dtype-off",
                "accumulation_dtype: off\n",
                "'accumulation_dtype' must be one of float32, float64",
                "False",
            ),
            (
                "parameter-no",
                "method: ties\nparameters: {ties_variant: no}\n",
                "'parameters.ties_variant' must be one of original, peft",
                "False",
            ),
            (
                "include-item-on",
                "include: [vit.*, on]\n",
                "'include' must be a list of strings",
                "['vit.*', True]",
            ),
            ("exclude-yes", "exclude: yes\n", "'exclude' must be a list of strings", "True"),
        ]
    ),
    yaml_case(
        "yaml-boolean-base",
        "base: on\nmodels: [ft0, ft1]\n",
        2,
        f"base must be a folder or Hub id, got True: {YAML_BOOLEAN}",
    ),
    yaml_case(
        "yaml-boolean-model",
        "base: base\nmodels: [{model: yes}, ft1]\n",
        2,
        f"models[0].model must be a folder or Hub id, got True: {YAML_BOOLEAN}",
    ),
    yaml_case(
        "yaml-boolean-revision",
        "base: base\nmodels: [{model: org/run, revision: no}, ft1]\n",
        2,
        f"models[0].revision must be a branch, tag or commit id, got False: {YAML_BOOLEAN}",
    ),
    yaml_case(
        "yaml-quoted-yes-is-text",
        MERGE_HEAD + "method: 'yes'\n",
        2,
        "NegMergeConfig.method='yes' is not a known merge method; choose one of task_arithmetic",
    ),
    yaml_case(
        "yaml-method-number",
        MERGE_HEAD + "method: 3\n",
        2,
        "NegMergeConfig.method must be a string, one of task_arithmetic, uniform, ties, magmax, negmerge; got int 3",
    ),
    Case(
        "config-json-method-true",
        lambda env: NegMergeConfig.from_pretrained(env.root / "cfg"),
        2,
        "cfg/negmerge_config.json: NegMergeConfig.accumulation_dtype must be a string, one of float32, float64; got bool True",
        setup=write_config('{"accumulation_dtype": true}'),
        kind="api",
        error=ConfigError,
    ),
    # 3. nesting past any config's need and integers past Python's digit limit: named, no traceback
    yaml_case(
        "yaml-deep-nesting",
        MERGE_HEAD + "include: " + "[" * DEEP + "]" * DEEP + "\n",
        2,
        "merge.yaml: line 3 (under 'include'): lists and mappings are nested more than 64 levels deep",
    ),
    yaml_case(
        "yaml-deep-nesting-subprocess",
        MERGE_HEAD + "parameters:\n  density: " + "[" * DEEP + "]" * DEEP + "\n",
        2,
        "(under 'parameters'): lists and mappings are nested more than 64 levels deep",
        kind="subprocess",
    ),
    yaml_case(
        "yaml-long-integer",
        MERGE_HEAD + "method: ties\nparameters:\n  ties_total_elements: " + LONG + "\n",
        2,
        "merge.yaml: line 5: the integer 999999999999… has 5000 digits, more than Python reads (4300)",
    ),
    Case(
        "yaml-nesting-at-the-limit",
        lambda env: check_equal(load_yaml("[" * 64 + "]" * 64, "merge file"), nested(64)),
        0,
        kind="api",
    ),
    *(
        Case(
            f"config-json-{name}",
            lambda env: NegMergeConfig.from_pretrained(env.root / "cfg"),
            2,
            f"cfg/negmerge_config.json: {message}",
            setup=write_config(text),
            kind="api",
            error=ConfigError,
        )
        for name, text, message in [
            ("deep", '{"include": ' + "[" * DEEP + "]" * DEEP + "}", f"field 'include' {TOO_DEEP}"),
            ("deep-loadable", '{"exclude": ' + "[" * 500 + "]" * 500 + "}", f"field 'exclude' {TOO_DEEP}"),
            ("deep-not-an-object", "[" * DEEP + "]" * DEEP, f"the value {TOO_DEEP}"),
            ("long-integer", '{"density": ' + LONG + "}", f"field 'density' {TOO_LONG}"),
            (
                "long-integer-in-list",
                '{"lambda_grid": [0.5, -' + LONG + "]}",
                f"field 'lambda_grid' {TOO_LONG}",
            ),
        ]
    ),
    Case("config-json-round-trip", config_round_trip, 0, kind="api"),
    *(
        Case(
            f"vector-metadata-{name}",
            lambda env: TaskVector.load(env.root / "tv.safetensors"),
            2,
            f"tv.safetensors: the 'hf_negmerge' metadata of this task vector: {message}",
            setup=vector_with_metadata(raw),
            kind="api",
            error=CheckpointError,
        )
        for name, raw, message in [
            ("deep", '{"runs": ' + "[" * DEEP + "]" * DEEP + "}", f"field 'runs' {TOO_DEEP}"),
            (
                "deep-loadable",
                '{"runs": [' + '{"a": ' * 300 + "1" + "}" * 300 + "]}",
                "field 'runs' is nested",
            ),
            ("long-integer", '{"seed": ' + LONG + "}", f"field 'seed' {TOO_LONG}"),
        ]
    ),
    Case("vector-metadata-round-trip", metadata_round_trip, 0, kind="api"),
    yaml_case(
        "yaml-valid-quoted",
        MERGE_HEAD + "method: \"negmerge\"\naccumulation_dtype: 'float64'\ninclude: ['vit.*']\n",
        0,
        check=check_negmerge_output,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_values(case: Case, prototype: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: F811
    root = tmp_path / "case"
    shutil.copytree(prototype, root)
    env = Env(root, monkeypatch)
    if case.setup is not None:
        case.setup(env)
    before = snapshot(root)
    message = _invoke(case, env, capsys)
    after = snapshot(root)
    assert case.message in message, message
    assert "Traceback" not in message
    kept = {name for name in before if any(fnmatch.fnmatchcase(name, pattern) for pattern in case.kept)}
    changed = sorted(name for name in kept if after.get(name) != before[name])
    assert not changed, f"changed or deleted: {changed}"
    if case.code != 0:
        assert not (root / "out").exists()
        assert not staging_left(root)
    if case.check is not None:
        case.check(env)
