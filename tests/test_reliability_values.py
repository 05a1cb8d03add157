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
from hf_negmerge.errors import ConfigError
from test_reliability_merge import (  # noqa: F401 (prototype is a fixture)
    Case,
    Env,
    _invoke,
    negmerge_reference,
    prototype,
    snapshot,
    staging_left,
    write_config,
)

# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------

MERGE_HEAD = "base: base\nmodels: [ft0, ft1]\n"
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
