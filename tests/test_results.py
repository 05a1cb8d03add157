"""The results contract (metrics.json), honest statuses, outcome warnings and the card built from results."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from hf_negmerge.errors import ConfigError
from hf_negmerge.hub import UnlearningCardData, prepare_upload_folder, write_model_card
from hf_negmerge.hub.push import BaseModelNotCheckedWarning, check_base_model
from hf_negmerge.lambda_search import LambdaPoint, select_lambda
from hf_negmerge.merging import MergeResult
from hf_negmerge.merging.stats import MergeStats, TensorStats
from hf_negmerge.output_folder import seal_output_folder
from hf_negmerge.outputs import inherited_license
from hf_negmerge.results import (
    FORMAT_VERSION,
    METRICS_FILE,
    NOT_UNLEARNED,
    RETAIN_NOT_MET,
    UNLEARNED,
    Criterion,
    MethodOutcome,
    OutcomeWarning,
    ResultsFormatError,
    RunResults,
    UnlearningOutcome,
    assess,
    best_single_run,
    forget_criterion,
)
from hf_negmerge.task_vector import TaskVector

ORIGINAL = {"forget_accuracy": 97.5, "retain_accuracy": 96.0, "test_accuracy": 96.2}


def _selection(points: list[tuple[float, float, float]], retain_ratio: float = 0.95):
    """A real λ selection over (λ, val forget, val retain) points; the first is the original (λ = 0),
    which is left out of the grid searched (as with a grid that does not start at 0)."""
    original, *curve = [LambdaPoint(*point) for point in points]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning is select_lambda's own, tested elsewhere
        return select_lambda(curve, original, retain_ratio=retain_ratio)


def _method(label: str, points, test: dict[str, float], run_id: str | None = None) -> MethodOutcome:
    return MethodOutcome("negmerge", label, _selection(points), dict(test), run_id=run_id)


def _outcome(main: MethodOutcome, result_norm: float = 1.0, input_norms=(1.0, 1.2)) -> UnlearningOutcome:
    stats = MergeStats(
        "negmerge", len(input_norms), {"w": TensorStats(10, 3, result_norm)}, list(input_norms)
    )
    return UnlearningOutcome(
        output_dir=Path("out"),
        original=dict(ORIGINAL),
        main=main,
        comparison=[],
        per_run=[],
        retrain=None,
        merge=MergeResult(TaskVector({"w": torch.zeros(10)}), stats),
        data_summary={"scenario": "class", "num_classes": 10, "forget_classes": ["three"]},
        run_ids=["a", "b"],
    )


# λ = 1.0 is chosen (1.5 breaks the retain constraint), so the choice is not at the grid's edge
GOOD = [(0.0, 97.0, 96.0), (0.5, 40.0, 95.0), (1.0, 10.0, 92.0), (1.5, 2.0, 80.0)]


# -- status ------------------------------------------------------------------------------------------------
def test_status_is_unlearned_only_when_the_forget_accuracy_closed_half_the_gap_and_retain_held() -> None:
    criterion = forget_criterion("class", ORIGINAL, None, 10)
    assert criterion == Criterion(97.5, 0.0, "class forgetting (0)") and criterion.target == 48.75
    status, detail = assess({"forget_accuracy": 48.75}, True, criterion)
    assert status == UNLEARNED and "48.75%" in detail and "97.50%" in detail
    status, detail = assess({"forget_accuracy": 60.0}, True, criterion)  # the λ-at-the-edge case
    assert status == NOT_UNLEARNED and "60.00%" in detail and "≤ 48.75%" in detail
    # the LoRA case: "qualified", but the forget accuracy did not move
    status, detail = assess({"forget_accuracy": 95.6}, True, criterion)
    assert status == NOT_UNLEARNED
    status, detail = assess({"forget_accuracy": 5.0}, False, criterion)  # forgot, but retain fell too far
    assert status == RETAIN_NOT_MET and "5.00%" in detail


def test_the_reference_is_retrain_when_measured_else_the_scenarios_ideal() -> None:
    assert (
        forget_criterion("random", {"forget_accuracy": 100.0}, {"forget_accuracy": 94.0}, 10).target == 97.0
    )
    random = forget_criterion("random", {"forget_accuracy": 100.0, "test_accuracy": 96.0}, None, 10)
    assert (random.reference, random.reference_source) == (96.0, "original test accuracy")
    dataset = forget_criterion("dataset", {"forget_accuracy": 60.0}, None, 4)
    assert (dataset.reference, dataset.target) == (25.0, 42.5)
    assert forget_criterion("class", {"retain_accuracy": 90.0}, None, 10) is None
    # nothing to forget: the original is already at the reference
    status, detail = assess({"forget_accuracy": 0.0}, True, Criterion(0.0, 0.0, "retrain"))
    assert status == NOT_UNLEARNED and "nothing to forget" in detail


def test_outcome_statuses_for_every_method_and_the_status_line() -> None:
    main = _method("negmerge", GOOD, {"forget_accuracy": 12.0, "retain_accuracy": 93.0})
    failed = _method("uniform", [(0.0, 97.0, 96.0), (0.5, 5.0, 50.0)], {"forget_accuracy": 4.0})
    weak = _method(
        "ties", [(0.0, 97.0, 96.0), (0.5, 90.0, 95.5), (1.0, 92.0, 95.0)], {"forget_accuracy": 90.0}
    )
    outcome = _outcome(main)
    outcome.comparison = [failed, weak]
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutcomeWarning)  # neither at the edge nor tiny: no warning
        outcome.assess("class")
    assert [o.status for o in (main, failed, weak)] == [UNLEARNED, RETAIN_NOT_MET, NOT_UNLEARNED]
    assert outcome.status_line().startswith("Status: unlearned — test forget accuracy 12.00%")
    assert [row.get("status") for row in outcome.rows()] == [None, UNLEARNED, RETAIN_NOT_MET, NOT_UNLEARNED]
    assert outcome.warnings == []


# -- warnings ----------------------------------------------------------------------------------------------
def test_a_lambda_at_the_grids_edge_warns_and_is_recorded() -> None:
    edge = [(0.0, 97.0, 96.0), (0.5, 80.0, 95.8), (1.0, 60.0, 95.5)]  # still falling at the largest λ
    outcome = _outcome(_method("negmerge", edge, {"forget_accuracy": 60.0}))
    with pytest.warns(OutcomeWarning, match=r"λ=1 is the largest of the grid"):
        outcome.assess("class")
    assert len(outcome.warnings) == 1 and "merge.lambda_grid" in outcome.warnings[0]
    assert outcome.main.status == NOT_UNLEARNED


def test_a_tiny_merged_vector_warns_with_its_share_of_the_runs_norm() -> None:
    # like the LoRA case: runs that disagree leave a merged vector far smaller than each run
    outcome = _outcome(_method("negmerge", GOOD, {"forget_accuracy": 95.6}), 0.03, (0.81, 0.81))
    with pytest.warns(OutcomeWarning, match=r"3\.7% of the runs' mean norm 0\.81"):
        outcome.assess("class")
    assert outcome.main.status == NOT_UNLEARNED
    at_ratio = _outcome(_method("negmerge", GOOD, {"forget_accuracy": 1.0}), 0.05, (1.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutcomeWarning)
        at_ratio.assess("class")  # exactly 5%: not tiny


def test_no_forgetting_without_another_explanation_warns_what_to_try() -> None:
    # the LoRA case at a normal vector size: qualified λs, forget accuracy unmoved
    outcome = _outcome(_method("negmerge", GOOD, {"forget_accuracy": 95.6}))
    with pytest.warns(OutcomeWarning, match=r"moved the weights too little.*digits/lora"):
        outcome.assess("class")
    assert outcome.main.status == NOT_UNLEARNED and len(outcome.warnings) == 1


def test_an_original_that_did_not_fit_its_training_rows_warns_instead_of_blaming_the_runs() -> None:
    # seen once in 38 tiny-CLIP θ₀ trainings: 61% of its own training rows, 20% forget accuracy
    outcome = _outcome(_method("negmerge", GOOD, {"forget_accuracy": 15.6}))
    outcome.original = {"forget_accuracy": 20.0, "retain_accuracy": 54.6, "test_accuracy": 51.1}
    outcome.original_model = {"base_model": "cache/clip-e88e", "train_accuracy": 0.6113}
    with pytest.warns(OutcomeWarning, match=r"cache/clip-e88e.*61\.1% of its own training rows"):
        outcome.assess("class")
    assert outcome.main.status == NOT_UNLEARNED
    assert len(outcome.warnings) == 1 and "moved the weights too little" not in outcome.warnings[0]
    for fitted in ({"train_accuracy": 0.9}, {"train_accuracy": 1.0}, {"source": "original.path"}):
        healthy = _outcome(_method("negmerge", GOOD, {"forget_accuracy": 1.0}))
        healthy.original_model = dict(fitted)
        with warnings.catch_warnings():
            warnings.simplefilter("error", OutcomeWarning)
            healthy.assess("class")  # at the threshold, or nothing trained here: no warning


# -- best single run ---------------------------------------------------------------------------------------
def test_best_single_run_is_chosen_among_runs_whose_lambda_qualified() -> None:
    unqualified = _method("a", [(0.0, 97.0, 96.0), (1.0, 1.0, 50.0)], {"forget_accuracy": 1.0}, "a")
    qualified_30 = _method("b", [(0.0, 97.0, 96.0), (1.0, 30.0, 95.0)], {"forget_accuracy": 2.0}, "b")
    qualified_20 = _method("c", [(0.0, 97.0, 96.0), (1.0, 20.0, 95.0)], {"forget_accuracy": 50.0}, "c")
    assert not unqualified.selection.qualified and qualified_20.selection.qualified
    # lowest *validation* forget accuracy among the qualified: c, though b's test number is lower
    assert best_single_run([unqualified, qualified_30, qualified_20]).run_id == "c"
    other = _method("d", [(0.0, 97.0, 96.0), (1.0, 40.0, 10.0)], {"forget_accuracy": 0.0}, "d")
    assert best_single_run([other, unqualified]).run_id == "a"  # none qualified: the lowest overall


# -- metrics.json --------------------------------------------------------------------------------------------
def _results() -> RunResults:
    main = _method("negmerge", GOOD, {"forget_accuracy": 12.0, "retain_accuracy": 93.0})
    outcome = _outcome(main)
    outcome.comparison = [_method("uniform", GOOD[:3], {"forget_accuracy": 20.0})]
    outcome.assess("class")
    return RunResults(
        forget_dataset="alice/digits",
        unlearned=main.test,
        method="negmerge",
        scale=main.selection.scale,
        status=main.status,
        status_detail=outcome.status_detail,
        criterion=outcome.criterion,
        base_model="alice/vit-base",
        license="apache-2.0",
        hub_datasets=["alice/digits"],
        architecture="vit",
        scenario="class",
        forget_classes=[3],
        data=outcome.data_summary,
        original=dict(ORIGINAL),
        selection=main.selection,
        kept_fraction=0.3,
        comparison=outcome.rows(),
        comparison_curves={"uniform": list(outcome.comparison[0].selection.curve)},
        grid=[{"run_id": "a", "learning_rate": 0.001}],
    )


def test_results_round_trip_through_metrics_json(tmp_path: Path) -> None:
    results = _results()
    path = results.save(tmp_path)
    assert path.name == METRICS_FILE
    values = json.loads(path.read_text())
    assert values["format_version"] == FORMAT_VERSION and values["status"] == UNLEARNED
    assert values["lambda_curve"][1] == {"scale": 1.0, "forget_accuracy": 10.0, "retain_accuracy": 92.0}
    assert values["criterion"]["target"] == 48.75
    assert [row.get("status") for row in values["comparison"]] == [None, UNLEARNED, UNLEARNED]
    assert RunResults.load(tmp_path) == results
    assert RunResults.from_dict(results.to_dict()).to_dict() == values


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": None}, r"no 'format_version'.*hf-negmerge unlearn"),
        ({"format_version": 2}, "version 2"),
        ({"unlearned": None}, "'unlearned'"),
        ({"forget_acc": 1.0}, r"unknown key\(s\) \['forget_acc'\]"),
        ({"status": "forgotten"}, "status 'forgotten'"),
        ({"selection": {"qualified": True}}, "not a valid results file"),
        ({"selection": None}, "'lambda_curve' but no 'selection'"),
    ],
)
def test_results_that_are_not_the_current_format_are_refused_by_name(tmp_path: Path, change, message) -> None:
    values = {**_results().to_dict(), **change}
    values = {key: value for key, value in values.items() if value is not None}
    (tmp_path / METRICS_FILE).write_text(json.dumps(values))
    with pytest.raises(ResultsFormatError, match=message) as raised:
        RunResults.load(tmp_path / METRICS_FILE)
    assert str(tmp_path / METRICS_FILE) in str(raised.value)


# -- the card from results -----------------------------------------------------------------------------------
def test_card_fields_parse_back_from_the_written_readme(tmp_path: Path) -> None:
    results = _results()
    results.original = {**ORIGINAL, "test_accuracy": 2.2222222222222223 + 90}
    results.unlearned = {**results.unlearned, "test_accuracy": 80.12345678}
    results.warnings = ["negmerge: the chosen λ=1 is the largest of the grid"]
    card = ModelCard.load(
        write_model_card(UnlearningCardData.from_results(results, repo_id="alice/x"), tmp_path)
    )
    meta = card.data.to_dict()
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["alice/digits"]
    assert meta["base_model"] == "alice/vit-base" and meta["base_model_relation"] == "finetune"
    text = card.text
    assert "92.22" in text and "80.12" in text and "2.2222" not in str(card) and "80.123" not in str(card)
    assert "### λ curve (validation data)" in text and "### Comparison with other methods (test data)" in text
    assert "Test-split numbers at the chosen λ" in text
    assert "**Status: unlearned** — test forget accuracy 12.00%" in text
    assert "> **Warning:** negmerge: the chosen λ=1 is the largest of the grid" in text
    assert 'pipeline("image-classification", model="alice/x")' in text
    assert 'AutoImageProcessor.from_pretrained("alice/x")' in text
    assert {r.dataset_args["role"]: r.dataset_split for r in card.data.eval_results} == {
        "forget": "forget set",
        "retain": "retain set",
        "test": "test",
    }  # distinct identities, so the Hub does not merge forget and retain
    assert {r.metric_value for r in card.data.eval_results} == {12.0, 93.0, 80.12}


def test_clip_card_uses_the_zero_shot_pipeline_and_relation_is_checked(tmp_path: Path) -> None:
    results = _results()
    results.architecture = "clip"
    data = UnlearningCardData.from_results(results, repo_id="alice/clip", base_model_relation="merge")
    card = ModelCard.load(write_model_card(data, tmp_path))
    assert card.data.to_dict()["base_model_relation"] == "merge"
    assert 'repo = "alice/clip"' in card.text and "AutoProcessor.from_pretrained(repo)" in card.text
    assert "candidate_labels" not in card.text  # the pipeline's one prompt per label is not this head
    with pytest.raises(ConfigError, match="base_model_relation='derived'"):
        UnlearningCardData.from_results(results, base_model_relation="derived")


def test_license_is_inherited_from_a_local_base_models_card(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: mit\n---\n# base\n")
    assert inherited_license(base) == "mit"
    assert inherited_license(tmp_path / "no-card") is None and inherited_license(None) is None


def _folder_with_config(root: Path, **config) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps(config))
    return root


def test_base_model_is_checked_against_the_models_config(tmp_path: Path) -> None:
    model = {"model_type": "vit", "hidden_size": 32, "architectures": ["ViTForImageClassification"]}
    same = _folder_with_config(tmp_path / "same", model_type="vit", hidden_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_base_model(str(same), model, tmp_path)
    other = _folder_with_config(tmp_path / "other", model_type="clip", hidden_size=64)
    with pytest.raises(ConfigError, match=r"model_type: 'clip' vs 'vit'; hidden_size: 64 vs 32"):
        check_base_model(str(other), model, tmp_path)
    with pytest.warns(BaseModelNotCheckedWarning, match="was not checked"):
        check_base_model("nobody/unknown-model", model, tmp_path, online=False)


def test_push_refuses_a_base_model_whose_config_contradicts_the_model(tmp_path: Path, monkeypatch) -> None:
    from conftest import make_tiny_vit

    out = tmp_path / "out"
    make_tiny_vit().save_pretrained(out)
    _results().save(out)
    seal_output_folder(out)
    cached = _folder_with_config(tmp_path / "cached", model_type="vit", hidden_size=999)
    monkeypatch.setattr(
        "huggingface_hub.try_to_load_from_cache",
        lambda repo_id, filename, **_: str(cached / filename) if repo_id == "bob/wide-vit" else None,
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(ConfigError, match="hidden_size: 999 vs 32"):
        prepare_upload_folder(out, staging, base_model="bob/wide-vit", include_vector=False)


def test_license_from_the_hub_is_one_metadata_request_that_fails_quietly(monkeypatch) -> None:
    """Online, the license comes from `model_info`'s card data (one request with our timeout, no
    download back-off); an unreachable Hub leaves it unset at once; offline nothing is asked."""
    from types import SimpleNamespace

    from hf_negmerge.hub import push

    calls = []

    class Api:
        def __init__(self, answer):
            self.answer = answer

        def model_info(self, repo_id, timeout=None):
            calls.append((repo_id, timeout))
            if isinstance(self.answer, Exception):
                raise self.answer
            return SimpleNamespace(card_data=self.answer)

    monkeypatch.setenv("HF_NEGMERGE_HUB_TIMEOUT", "7")
    monkeypatch.setattr(push, "hub_offline", lambda: False)
    monkeypatch.setattr(push, "hub_client", lambda: Api(SimpleNamespace(license="apache-2.0")))
    assert push._inherited_license("alice/base", online=True) == "apache-2.0"
    assert calls == [("alice/base", 7.0)]
    monkeypatch.setattr(push, "hub_client", lambda: Api(ConnectionError("no route")))
    assert push._inherited_license("alice/base", online=True) is None
    monkeypatch.setattr(push, "hub_client", lambda: Api(None))  # a repo without a card
    assert push._inherited_license("alice/base", online=True) is None
    monkeypatch.setattr(push, "hub_offline", lambda: True)
    assert push._inherited_license("alice/base", online=True) is None
    assert len(calls) == 3
