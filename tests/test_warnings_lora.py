"""The CLI shows hf-negmerge's own warnings as `Warning: <message>`, once each; LoRA at full
fine-tuning learning rates is warned about in the plan, before anything trains."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import hf_negmerge
from hf_negmerge.console import warnings_as_messages
from hf_negmerge.errors import NegMergeWarning, warn
from hf_negmerge.lambda_search import LambdaPoint, LambdaSelectionWarning, search_lambda
from hf_negmerge.plan import describe_plan, lora_rate_warning
from hf_negmerge.recipe import load_recipe
from hf_negmerge.training.grid import (
    LORA_LEARNING_RATES,
    GridSpec,
    LoraLearningRateWarning,
    lora_learning_rate_warning,
)

SOURCE = Path(hf_negmerge.__file__).parent
# A run of a few seconds whose grid runs (4 optimizer steps) are shorter than their 5 warm-up steps.
SMALL_RUN = [
    "grid.axes.seed=[0,1]",
    "grid.axes.learning_rate=[0.001]",
    "grid.base.epochs=1",
    "comparison=[uniform]",
    "original.epochs=1",
    "model.tiny={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1}",
    "merge.lambda_grid=[0,1]",
]
WARMUP = "Warning: warm-up is at least as long as the run"
# What Python's own display of a warning looks like: `path.py:123: SomeWarning: text`.
PYTHON_DISPLAY = re.compile(r"\.py:\d+: \w*Warning|UserWarning|WarmupWarning:")
LORA_ON = "grid.base.lora_rank=8"


def _small_run(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return ["unlearn", "--output-dir", str(tmp_path / name), "--no-progress", *SMALL_RUN, *extra]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One θ₀ cache for the module's runs (the first trains it, the others reuse it)."""
    return f"original.cache_dir={tmp_path_factory.mktemp('cache')}"


def _warnings_package_classes() -> list[type]:
    import hf_negmerge.evaluation.mia as mia
    import hf_negmerge.hub.push as push
    import hf_negmerge.results as results
    import hf_negmerge.training.grid as grid

    return [
        grid.WarmupWarning,
        grid.LoraLearningRateWarning,
        results.OutcomeWarning,
        push.BaseModelNotCheckedWarning,
        mia.MembershipAttackWarning,
        LambdaSelectionWarning,
    ]


# -- warnings as messages ---------------------------------------------------------------------


def test_every_warning_class_of_the_tool_shares_the_base_class():
    for category in _warnings_package_classes():
        assert issubclass(category, NegMergeWarning) and issubclass(category, UserWarning), category


def test_source_raises_warnings_only_through_errors_warn():
    """A bare `warnings.warn` would carry no NegMergeWarning category (or a wrong stacklevel)."""
    bare = []
    for path in SOURCE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == SOURCE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "warnings.warn":
                bare.append(f"{path.relative_to(SOURCE)}:{node.lineno}")
    assert bare == []


def test_messages_once_each_and_third_party_warnings_untouched(capsys):
    with pytest.warns(UserWarning) as passed_on, warnings_as_messages():
        warn("first thing", NegMergeWarning)
        warn("first thing", LambdaSelectionWarning)  # same text, another class and line
        warn("second thing", LoraLearningRateWarning)
        for _ in range(2):
            warn("first thing", NegMergeWarning)
        warnings.warn("from a library", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.count("Warning: first thing\n") == 1
    assert err.count("Warning: second thing\n") == 1
    # the library's warning goes on to the display in place (here pytest's recorder), ours do not
    assert [(record.category, str(record.message)) for record in passed_on] == [
        (UserWarning, "from a library")
    ]
    assert not re.search(r"\.py:\d+: \w*Warning: (first|second) thing", err)


def test_messages_hidden_by_filters_inside(capsys):
    """`--quiet` and a command printing a message itself hide it with an inner filter."""
    with warnings_as_messages():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LoraLearningRateWarning)
            warn("shown in the plan", LoraLearningRateWarning)
        warn("shown here", LoraLearningRateWarning)
    assert capsys.readouterr().err == "Warning: shown here\n"


def test_api_warnings_point_at_the_callers_line():
    """search_lambda → select_lambda → errors.warn: the warning names this file, not the library's."""
    with pytest.warns(LambdaSelectionWarning, match="nothing is forgotten") as caught:
        search_lambda(
            lambda scale: LambdaPoint(scale, 90.0 + scale, 90.0 - 50 * scale), [0.0, 1.0], progress=False
        )
    assert {Path(record.filename) for record in caught} == {Path(__file__)}


@pytest.mark.slow
def test_cli_prints_warmup_warning_once_without_source_lines(tmp_path, capsys, cache):
    from hf_negmerge.cli import main

    assert main([*_small_run(tmp_path, "run"), cache]) == 0
    shown = capsys.readouterr()
    both = shown.out + shown.err
    assert both.count(WARMUP) == 1, both
    assert not PYTHON_DISPLAY.search(both), both
    lines = [line for line in both.splitlines() if line.startswith("Warning: ")]
    assert len(lines) == len(set(lines)) >= 2  # the warm-up and the summary's warnings, each once
    summary_at = shown.out.index("Status: ")
    assert all(shown.out.index(line) > summary_at for line in lines if line in shown.out)


@pytest.mark.slow
def test_cli_quiet_keeps_only_the_summarys_warnings(tmp_path, capsys, cache):
    from hf_negmerge.cli import main

    assert main([*_small_run(tmp_path, "quiet"), cache, "--quiet"]) == 0
    shown = capsys.readouterr()
    assert WARMUP not in shown.out + shown.err
    assert "Status: " in shown.out and "Warning: θ₀" in shown.out  # undertrained θ₀: said after the summary
    assert not PYTHON_DISPLAY.search(shown.out + shown.err)


@pytest.mark.slow
@pytest.mark.parametrize("python_flags", [["-W", "default"], ["-W", "always"]])
def test_cli_messages_hold_under_python_warning_flags(tmp_path, python_flags, cache):
    env = {**os.environ, "PYTHONPATH": str(SOURCE.parent), "PYTHONWARNINGS": "always"}
    command = [sys.executable, *python_flags, "-m", "hf_negmerge.cli", *_small_run(tmp_path, "run"), cache]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    both = done.stdout + done.stderr
    assert both.count(WARMUP) == 1, both
    assert not PYTHON_DISPLAY.search(both), both


# -- LoRA learning rates ----------------------------------------------------------------------


def _points(**grid):
    return GridSpec(**grid).expand()


def test_lora_rule_warns_exactly_when_every_lora_rate_is_below_the_measured_rates():
    smallest = LORA_LEARNING_RATES[0]
    for rates, lora, warned in [
        ([0.0005, 0.001], True, True),  # the default's rates
        ([0.001, 0.0015], True, True),
        ([smallest * 0.99], True, True),
        ([0.0015, smallest], True, False),  # the largest reaches the measured rates
        (list(LORA_LEARNING_RATES), True, False),  # digits/lora
        ([0.001, 0.0025], True, False),  # the documented 8-epoch, half-rate variant
        ([0.0005, 0.001], False, False),  # full fine-tuning
    ]:
        base = {"lora_rank": 8} if lora else {}
        message = lora_learning_rate_warning(_points(base=base, axes={"learning_rate": rates}))
        assert (message is not None) == warned, (rates, lora, message)
        if warned:
            assert "/".join(f"{rate:g}" for rate in sorted(rates)) in message
            assert "grid.axes.learning_rate" in message and "0.002, 0.005" in message


def test_lora_rule_names_the_base_key_and_only_the_lora_runs():
    message = lora_learning_rate_warning(_points(base={"lora_rank": 4, "learning_rate": 1e-3}))
    assert "lora_rank=4" in message and "Raise grid.base.learning_rate to at least 0.002" in message
    mixed = _points(base={"learning_rate": 1e-3}, points=[{"lora_rank": 8}, {"learning_rate": 5e-4}])
    assert "in 1 of 2 grid run(s)" in lora_learning_rate_warning(mixed)


def _recipe(tmp_path: Path, config: str | None, *overrides: str):
    return load_recipe(config, [f"output_dir={tmp_path / 'out'}", *overrides])


def test_plan_warns_for_default_with_lora_not_for_lora_recipes(tmp_path):
    warned = describe_plan(_recipe(tmp_path, None, LORA_ON))
    assert "Warning: LoRA is on (lora_rank=8) in 6 of 6 grid run(s)" in warned
    assert "(0.0005/0.001)" in warned
    assert "Warning: LoRA" not in describe_plan(_recipe(tmp_path, "digits/lora"))
    half_rates = _recipe(
        tmp_path, "digits/lora", "grid.axes.learning_rate=[0.001,0.0025]", "grid.base.epochs=8"
    )
    assert lora_rate_warning(half_rates) is None
    assert lora_rate_warning(_recipe(tmp_path, None)) is None  # full fine-tuning
    # measured on the ViT built from config only: a pretrained model's LoRA rates are not judged
    pretrained = _recipe(
        tmp_path, None, LORA_ON, "model.name_or_path=google/vit-base-patch16-224", "model.tiny={}"
    )
    assert lora_rate_warning(pretrained) is None


class TrainingStarted(Exception):
    pass


@pytest.fixture
def no_training(monkeypatch):
    """Every training loop raises, so a test shows what was said before anything trained."""
    import hf_negmerge.training.loop as loop
    import hf_negmerge.training.pretrain as pretrain
    import hf_negmerge.training.runner as runner

    def refuse(*args, **kwargs):
        raise TrainingStarted

    for module, name in [(loop, "train_loop"), (pretrain, "train_loop"), (runner, "finetune")]:
        monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize("dry_run", [True, False])
def test_cli_warns_about_lora_rates_before_training(tmp_path, capsys, no_training, dry_run):
    from hf_negmerge.cli import main

    args = ["unlearn", LORA_ON, "--output-dir", str(tmp_path / "out"), "--no-progress"]
    args += [f"original.cache_dir={tmp_path / 'cache'}"]
    if dry_run:
        assert main([*args, "--dry-run"]) == 0
    else:
        with pytest.raises(TrainingStarted):
            main(args)
    shown = capsys.readouterr()
    assert (shown.out + shown.err).count("Warning: LoRA is on") == 1
    assert "Raise grid.axes.learning_rate" in shown.out  # in the plan, on stdout


def test_cli_dry_run_of_lora_recipe_does_not_warn(tmp_path, capsys, no_training):
    from hf_negmerge.cli import main

    assert (
        main(["unlearn", "--config", "digits/lora", "--output-dir", str(tmp_path / "out"), "--dry-run"]) == 0
    )
    shown = capsys.readouterr()
    assert "grid: 6 fine-tuning run(s)" in shown.out
    assert "Warning" not in shown.out + shown.err


def test_api_warns_about_lora_rates_before_training(tmp_path, no_training):
    from hf_negmerge.pipeline import run_unlearning

    recipe = _recipe(tmp_path, None, LORA_ON, f"original.cache_dir={tmp_path / 'cache'}")
    with (
        pytest.warns(LoraLearningRateWarning, match=r"Raise grid\.axes\.learning_rate") as caught,
        pytest.raises(TrainingStarted),
    ):
        run_unlearning(recipe, progress=False)
    assert [Path(record.filename) for record in caught if record.category is LoraLearningRateWarning] == [
        Path(__file__)
    ]
