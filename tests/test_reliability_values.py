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

from hf_negmerge import TaskVector
from hf_negmerge.errors import CheckpointError, ConfigError
from test_reliability_merge import (  # noqa: F401 (prototype is a fixture)
    Case,
    Env,
    _invoke,
    negmerge_reference,
    prototype,
    snapshot,
    staging_left,
)

# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------

MERGE_HEAD = "base: base\nmodels: [ft0, ft1]\n"


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
