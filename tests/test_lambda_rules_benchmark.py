"""benchmarks/lambda_rules.py: its rules choose as specified on a hand-made curve (the script's own run
checks, trial by trial, that its `paper` rule reproduces the pipeline's λ)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "lambda_rules.py"


@pytest.fixture(scope="module")
def rules():
    spec = importlib.util.spec_from_file_location("lambda_rules", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(scale, forget_val, retain_val, forget_test, retain_test):
    return dict(
        scale=scale,
        forget_val=forget_val,
        retain_val=retain_val,
        forget_test=forget_test,
        retain_test=retain_test,
    )


# Validation: λ 1..3 keep retain ≥ 0.95 × 90 = 85.5; forget is lowest (0) at λ 3, within 5 points at λ 2.
# Test: λ 3 overshoots the retain limit (80 < 0.95 × 90), λ 2 meets the target.
CURVE = [
    _row(0.0, 95.0, 90.0, 96.0, 90.0),
    _row(1.0, 40.0, 89.0, 45.0, 89.0),
    _row(2.0, 4.0, 87.0, 6.0, 86.0),
    _row(3.0, 0.0, 85.6, 0.0, 80.0),
    _row(4.0, 0.0, 70.0, 0.0, 70.0),
]


def test_each_rule_picks_the_lambda_its_definition_gives(rules):
    chosen = {name: rule(CURVE)["scale"] for name, rule in rules.RULES.items()}
    assert chosen == {
        "paper (retain ≥ 0.95 × original)": 3.0,  # the lowest forget among qualifying λ
        "margin: retain ≥ 0.96 × original": 2.0,  # 86.4 rules out λ 3
        "margin: retain ≥ 0.97 × original": 1.0,  # 87.3 rules out λ 2 too
        "smallest λ within 5 points of the lowest forget": 2.0,
    }
    original = CURVE[0]
    assert [rules.meets(row, original, 15.0, 0.95) for row in CURVE] == [False, False, True, False, False]


def test_the_paper_rule_is_the_librarys_select_lambda_whatever_the_curves_order(rules):
    paper = rules.RULES["paper (retain ≥ 0.95 × original)"]
    assert paper(list(reversed(CURVE)))["scale"] == paper(CURVE)["scale"] == 3.0


def test_a_path_without_trials_is_refused_by_name(rules, tmp_path):
    with pytest.raises(SystemExit, match=re.escape(f"{tmp_path}: neither a trial folder")):
        rules.trial_folders([tmp_path])
    with pytest.raises(SystemExit, match="missing: no such folder"):
        rules.trial_folders([tmp_path / "missing"])
