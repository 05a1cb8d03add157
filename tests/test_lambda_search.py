"""The λ selection rule: hand-built curves, tie rules, order invariance, fallbacks, λ = 0 flag, search."""

from __future__ import annotations

import json
import random
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_negmerge.errors import ConfigError, MergeError
from hf_negmerge.lambda_search import (
    LambdaPoint,
    default_lambda_grid,
    search_lambda,
    select_lambda,
)

# Original retain accuracy 80 -> threshold 76 at the default ratio 0.95.
CURVE = [
    LambdaPoint(0.0, 90.0, 80.0),
    LambdaPoint(0.25, 50.0, 78.0),
    LambdaPoint(0.5, 30.0, 76.5),
    LambdaPoint(0.75, 10.0, 75.9),
    LambdaPoint(1.0, 5.0, 60.0),
]


def test_default_grid_is_the_authors_21_points():
    grid = default_lambda_grid()
    assert grid == [index / 20 for index in range(21)]
    assert grid[3] == 0.15 and grid[-1] == 1.0  # no 0.15000000000000002
    assert default_lambda_grid(stop=0.5, step=0.1) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    with pytest.raises(ConfigError, match="step"):
        default_lambda_grid(step=0)


def test_picks_lowest_forget_accuracy_among_qualifying():
    selection = select_lambda(CURVE, original_retain_accuracy=80.0)
    assert selection.scale == 0.5 and selection.point == CURVE[2]
    assert selection.qualified
    assert selection.threshold == pytest.approx(76.0)
    assert "3 of 5" in selection.reason
    assert selection.original == LambdaPoint(0.0, 90.0, 80.0)  # forget accuracy read from the λ = 0 point
    # A looser ratio admits λ = 0.75 and then λ = 1.0.
    assert select_lambda(CURVE, 80.0, retain_ratio=0.9).scale == 0.75
    assert select_lambda(CURVE, 80.0, retain_ratio=0.75).scale == 1.0


def test_forget_accuracy_ties_go_to_the_smaller_lambda():
    curve = [LambdaPoint(0.0, 90.0, 80.0), LambdaPoint(0.6, 20.0, 79.0), LambdaPoint(0.4, 20.0, 77.0)]
    assert select_lambda(curve, 80.0).scale == 0.4


def test_retain_exactly_on_the_threshold_qualifies_despite_float_rounding():
    original = 70.1
    threshold = 0.95 * original
    on_threshold = 66.595  # the decimal value of 0.95 × 70.1; the float product differs in the last bit
    assert threshold != on_threshold
    curve = [LambdaPoint(0.0, 90.0, original), LambdaPoint(0.5, 30.0, on_threshold)]
    assert select_lambda(curve, original).scale == 0.5


@st.composite
def curves(draw):
    scales = draw(st.lists(st.integers(0, 40), min_size=1, max_size=12, unique=True))
    accuracy = st.integers(0, 20).map(lambda value: value * 5.0)  # coarse values so ties happen
    return [LambdaPoint(scale / 20, draw(accuracy), draw(accuracy)) for scale in scales]


def brute_force_choice(curve, original, ratio):
    """The rule written as a scan in increasing λ, keeping a strictly better forget accuracy."""
    best = None
    for point in sorted(curve, key=lambda p: p.scale):
        if point.retain_accuracy >= ratio * original and (
            best is None or point.forget_accuracy < best.forget_accuracy
        ):
            best = point
    return best


@settings(max_examples=150, deadline=None)
@given(curve=curves(), original=st.integers(1, 20).map(lambda v: v * 5.0), seed=st.integers(0, 1000))
def test_matches_brute_force_and_ignores_curve_order(curve, original, seed):
    ratio = 0.95
    expected = brute_force_choice(curve, original, ratio)
    shuffled = curve[:]
    random.Random(seed).shuffle(shuffled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = select_lambda(curve, original, ratio)
        second = select_lambda(shuffled, original, ratio)
    assert first == second
    if expected is not None:
        assert first.qualified and first.point == expected
    else:
        assert not first.qualified
        best_retain = max(point.retain_accuracy for point in curve)
        assert first.point.retain_accuracy == best_retain
        assert first.point.forget_accuracy == min(
            p.forget_accuracy for p in curve if p.retain_accuracy == best_retain
        )


def test_no_qualifier_falls_back_to_least_retain_drop_with_a_warning():
    curve = [
        LambdaPoint(0.5, 30.0, 70.0),
        LambdaPoint(0.25, 40.0, 74.0),
        LambdaPoint(0.75, 35.0, 74.0),  # same retain as λ = 0.25, lower forget: wins the tie
        LambdaPoint(1.0, 5.0, 50.0),
    ]
    with pytest.warns(UserWarning, match=r"No λ .* ≥ 76\.0000"):
        selection = select_lambda(curve, 80.0)
    assert not selection.qualified
    assert selection.scale == 0.75
    assert "least_retain_drop" in selection.reason and "74.0000" in selection.reason


def test_no_qualifier_with_error_fallback_raises_naming_threshold_and_best():
    curve = [LambdaPoint(0.5, 30.0, 70.0), LambdaPoint(0.25, 40.0, 74.0)]
    with pytest.raises(MergeError, match=r"76\.0000.*74\.0000 at λ=0\.25"):
        select_lambda(curve, 80.0, fallback="error")


def test_lambda_zero_is_flagged():
    curve = [LambdaPoint(0.0, 90.0, 80.0), LambdaPoint(0.5, 20.0, 60.0), LambdaPoint(1.0, 5.0, 40.0)]
    with pytest.warns(UserWarning, match="nothing is forgotten"):
        selection = select_lambda(curve, 80.0)
    assert selection.scale == 0.0 and selection.qualified
    assert "nothing is forgotten" in selection.reason
    assert "nothing is forgotten" not in select_lambda(CURVE, 80.0).reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"curve": [], "original_retain_accuracy": 80.0}, "empty"),
        ({"curve": CURVE, "original_retain_accuracy": 80.0, "retain_ratio": 0.0}, "retain_ratio"),
        ({"curve": CURVE, "original_retain_accuracy": 80.0, "retain_ratio": 1.2}, "retain_ratio"),
        ({"curve": CURVE, "original_retain_accuracy": 80.0, "fallback": "nearest"}, "nearest"),
        ({"curve": [*CURVE, LambdaPoint(0.5, 1.0, 80.0)], "original_retain_accuracy": 80.0}, r"\[0\.5\]"),
        ({"curve": CURVE, "original_retain_accuracy": float("nan")}, "original_retain_accuracy"),
        ({"curve": [(0.5, 30.0, 76.5)], "original_retain_accuracy": 80.0}, "LambdaPoint"),
    ],
)
def test_bad_input_is_rejected_clearly(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        select_lambda(**kwargs)


def test_lambda_point_validates_numbers():
    with pytest.raises(ConfigError, match="retain_accuracy"):
        LambdaPoint(0.5, 30.0, "76")
    with pytest.raises(ConfigError, match="finite"):
        LambdaPoint(0.5, 30.0, float("inf"))


def test_selection_serialises_to_json():
    selection = select_lambda(CURVE[1:], 80.0)  # no λ = 0 point: the original's forget accuracy is unknown
    data = json.loads(json.dumps(selection.to_dict(), allow_nan=False))
    assert data["scale"] == 0.5 and data["original"] == {
        "scale": 0.0,
        "forget_accuracy": None,
        "retain_accuracy": 80.0,
    }
    assert [point["scale"] for point in data["curve"]] == [0.25, 0.5, 0.75, 1.0]


def test_search_evaluates_each_lambda_once_and_reuses_lambda_zero():
    table = {point.scale: point for point in CURVE}
    calls: list[float] = []

    def evaluate_at(scale):
        calls.append(scale)
        return table[scale]

    selection = search_lambda(evaluate_at, grid=[1.0, 0.25, 0.0, 0.5, 0.25, 0.75], progress=False)
    assert calls == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert selection.original == CURVE[0] and selection.scale == 0.5
    assert selection == select_lambda(CURVE, CURVE[0])

    calls.clear()
    selection = search_lambda(evaluate_at, grid=[0.5, 1.0], progress=False)
    assert calls == [0.5, 1.0, 0.0]  # the original is evaluated for the threshold but is not a candidate
    assert [point.scale for point in selection.curve] == [0.5, 1.0]
    assert selection.scale == 0.5


def test_search_defaults_to_the_21_point_grid_and_checks_evaluator():
    calls: list[float] = []

    def linear(scale):
        calls.append(scale)
        return LambdaPoint(scale, 60.0 - 50.0 * scale, 80.0 - 10.0 * scale)

    selection = search_lambda(linear, progress=False)
    assert len(calls) == 21
    assert selection.scale == 0.4  # retain 76.0 == 0.95 × 80 is the last qualifying λ
    with pytest.raises(TypeError, match="LambdaPoint"):
        search_lambda(lambda scale: (scale, 1.0, 2.0), grid=[0.0], progress=False)
    with pytest.raises(ValueError, match=r"λ=0\.3"):
        search_lambda(lambda scale: LambdaPoint(0.3, 1.0, 2.0), grid=[0.5], progress=False)
    with pytest.raises(ConfigError, match="empty"):
        search_lambda(linear, grid=[], progress=False)
