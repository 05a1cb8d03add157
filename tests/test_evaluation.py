"""Evaluation stage: predictions, accuracy, MIA-Efficacy, Avg. Gap, reports, plots."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from sklearn.metrics import accuracy_score
from sklearn.svm import SVC
from torch import nn

from hf_negmerge.evaluation import (
    Predictions,
    UnlearningMetrics,
    accuracy,
    avg_gap,
    comparison_json,
    compute_unlearning_metrics,
    markdown_table,
    metric_gaps,
    mia_efficacy,
    predict,
    predict_dataset,
    select_members,
    to_jsonable,
    write_comparison,
)
from hf_negmerge.evaluation.plots import (
    _common_dotted_prefix,
    group_kept_fraction,
    layer_group,
    plot_kept_fraction,
    plot_lambda_curves,
)
from hf_negmerge.lambda_search import LambdaPoint, select_lambda

COLORS = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255)}


class ChannelClassifier(nn.Module):
    """Logits = mean of each RGB channel times a scale: a solid red image is class 0, green 1, blue 2."""

    def __init__(self, scale: float = 4.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def preprocess(self, images: list[PIL.Image.Image]) -> torch.Tensor:
        arrays = [
            np.asarray(image.convert("RGB").resize((4, 4)), dtype=np.float32) / 255.0 for image in images
        ]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.scale * pixel_values.mean(dim=(2, 3))


def color_dataset(colors: list[int], labels: list[int]) -> datasets.Dataset:
    images = [PIL.Image.new("RGB", (6, 6), COLORS[color]) for color in colors]
    return datasets.Dataset.from_dict({"image": images, "label": labels}).cast_column(
        "image", datasets.Image()
    )


def batches_of(classifier: ChannelClassifier, dataset: datasets.Dataset, size: int):
    for start in range(0, len(dataset), size):
        rows = dataset[start : start + size]
        yield {"pixel_values": classifier.preprocess(rows["image"]), "labels": torch.tensor(rows["label"])}


# --- predict / accuracy -------------------------------------------------------------------------------


def test_accuracy_equals_hand_count_on_colored_images():
    colors = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    labels = [0, 1, 2, 1, 1, 0, 0, 2, 2, 0]  # rows 3, 5, 7 are labelled against their colour
    classifier = ChannelClassifier().train()
    dataset = color_dataset(colors, labels)
    result = predict(classifier, batches_of(classifier, dataset, size=3))
    assert result.predicted.tolist() == colors
    assert result.accuracy() == pytest.approx(70.0)
    assert accuracy(result.predicted, labels) == pytest.approx(70.0)
    assert accuracy(result, None) == pytest.approx(70.0)
    assert classifier.training, "predict must restore train mode"
    # Through the project's collator and DataLoader, in dataset order.
    assert predict_dataset(classifier, dataset, batch_size=4).predicted.tolist() == colors


def test_true_class_probability_and_logits_match_softmax():
    torch.manual_seed(0)
    logits = torch.randn(17, 5)
    labels = torch.randint(0, 5, (17,))
    classifier = nn.Identity()
    result = predict(classifier, [(logits[:8], labels[:8]), (logits[8:], labels[8:])], keep_logits=True)
    expected = np.exp(logits.double().numpy())
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(
        result.true_class_probability.numpy(), expected[np.arange(17), labels.numpy()], atol=1e-6
    )
    assert torch.equal(result.logits, logits)
    assert result.predicted.tolist() == logits.argmax(1).tolist()
    assert predict(classifier, [(logits, labels)]).logits is None


def test_predict_dataset_with_a_project_classifier_matches_a_direct_forward():
    from hf_negmerge.data.digits import load_digits_dataset
    from hf_negmerge.models import ModelConfig, build_classifier

    dataset = load_digits_dataset()["test"].select(range(24))
    classifier = build_classifier(
        ModelConfig(architecture="vit"), [str(digit) for digit in range(10)]
    ).train()
    result = predict_dataset(classifier, dataset, batch_size=10, keep_logits=True)
    assert classifier.training
    classifier.eval()
    with torch.no_grad():
        logits = classifier(classifier.preprocess(dataset["image"]))
    assert torch.allclose(result.logits, logits, atol=1e-5)
    assert result.labels.tolist() == dataset["label"]
    assert result.accuracy() == pytest.approx(
        100.0 * accuracy_score(dataset["label"], logits.argmax(1).numpy())
    )


def test_predict_restores_eval_mode_and_reads_output_logits():
    class WithOutput(nn.Module):
        def forward(self, pixel_values):
            return type("Output", (), {"logits": pixel_values})()

    model = WithOutput().eval()
    result = predict(model, [{"pixel_values": torch.eye(3), "labels": torch.tensor([0, 1, 1])}])
    assert not model.training
    assert result.accuracy() == pytest.approx(200 / 3)


@pytest.mark.parametrize(
    ("batch", "error", "message"),
    [
        ({"pixel_values": torch.zeros(2, 3)}, KeyError, "labels"),
        ({"pixel_values": torch.zeros(2, 3), "labels": torch.tensor([0, 3])}, ValueError, r"\[3\]"),
        ({"pixel_values": torch.zeros(2, 3), "labels": torch.tensor([0])}, ValueError, "1 labels"),
        (torch.zeros(2, 3), TypeError, "Batch 0"),
    ],
)
def test_predict_rejects_bad_batches(batch, error, message):
    with pytest.raises(error, match=message):
        predict(nn.Identity(), [batch])


def test_predict_refuses_a_device_other_than_the_weights():
    model = nn.Linear(3, 2)
    batch = [(torch.zeros(1, 3), torch.tensor([0]))]
    with pytest.raises(ValueError, match=r"weights are on cpu but device='meta'"):
        predict(model, batch, device="meta")
    assert len(predict(model, batch, device="cpu")) == 1
    assert len(predict(nn.Identity(), [(torch.zeros(1, 3), torch.tensor([0]))], device="cpu")) == 1


def test_predict_on_no_batches_and_empty_accuracy_fail_clearly():
    with pytest.raises(ValueError, match="no batches"):
        predict(nn.Identity(), [])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


def test_accuracy_agrees_with_sklearn_on_arrays_lists_and_tensors():
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 4, 200)
    references = rng.integers(0, 4, 200)
    expected = 100.0 * accuracy_score(references, predictions)
    assert accuracy(predictions, references) == pytest.approx(expected)
    assert accuracy(predictions.tolist(), references.tolist()) == pytest.approx(expected)
    assert accuracy(torch.as_tensor(predictions), torch.as_tensor(references)) == pytest.approx(expected)


# --- MIA-Efficacy ----------------------------------------------------------------------------------------


def reference_mia(retain, test, forget, member_indices):
    """SalUn's recipe written out with sklearn directly."""
    features = np.concatenate([retain[member_indices], test]).reshape(-1, 1)
    targets = np.concatenate([np.ones(len(member_indices)), np.zeros(len(test))])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(features, targets)
    return 100.0 * float(np.mean(attack.predict(forget.reshape(-1, 1)) == 0))


def test_mia_efficacy_high_when_forget_looks_unseen_low_when_it_looks_trained():
    rng = np.random.default_rng(0)
    retain = 1.0 - rng.beta(1, 60, 400)  # members: confidence ≈ 0.98–1.0
    test = rng.beta(2, 2, 150)  # non-members: spread over (0, 1)
    unseen_forget = rng.beta(2, 2, 120)
    trained_forget = 1.0 - rng.beta(1, 60, 120)
    assert mia_efficacy(retain, test, unseen_forget) > 80.0
    assert mia_efficacy(retain, test, trained_forget) < 10.0


@pytest.mark.parametrize("seed", [None, 0, 7])
def test_mia_efficacy_equals_independent_sklearn_reimplementation(seed):
    rng = np.random.default_rng(3)
    retain, test, forget = rng.beta(6, 1, 90), rng.beta(2, 1.5, 40), rng.beta(3, 1.5, 50)
    if seed is None:
        members = np.arange(40)  # SalUn's Subset(retain, range(len(test)))
    else:
        members = np.sort(np.random.default_rng(seed).choice(90, size=40, replace=False))
    assert mia_efficacy(retain, test, forget, seed=seed) == pytest.approx(
        reference_mia(retain, test, forget, members)
    )
    assert mia_efficacy(retain, test, forget, seed=seed) == mia_efficacy(retain, test, forget, seed=seed)


def test_mia_efficacy_from_model_predictions_matches_softmax_reimplementation():
    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    splits = {
        name: (torch.randn(n, 6) * 2, torch.randint(0, 4, (n,)))
        for name, n in [("r", 80), ("t", 30), ("f", 25)]
    }
    results = {name: predict(model, [batch], keep_logits=True) for name, batch in splits.items()}
    probabilities = {}
    for name, (inputs, labels) in splits.items():
        logits = model(inputs).detach().double().numpy()
        softmax = np.exp(logits - logits.max(1, keepdims=True))
        softmax /= softmax.sum(1, keepdims=True)
        probabilities[name] = softmax[np.arange(len(labels)), labels.numpy()]
    expected = reference_mia(probabilities["r"], probabilities["t"], probabilities["f"], np.arange(30))
    assert mia_efficacy(results["r"], results["t"], results["f"], seed=None) == pytest.approx(expected)


def salun_svc_mia_efficacy(
    retain_logits, retain_labels, test_logits, test_labels, forget_logits, forget_labels
):
    """SalUn's main_random.py + SVC_MIA(...)["confidence"], written out with torch and sklearn:
    confidence = softmax(logits).gather(label); shadow_train = Subset(retain, range(len(test)));
    SVC(C=3, gamma="auto") on [shadow_train; test] with labels [1…; 0…]; 1 − mean(predict(forget))."""
    confidence = {
        name: torch.gather(torch.softmax(logits, dim=-1), 1, labels[:, None])
        for name, logits, labels in [
            ("retain", retain_logits, retain_labels),
            ("test", test_logits, test_labels),
            ("forget", forget_logits, forget_labels),
        ]
    }
    shadow_train = confidence["retain"][: len(test_labels)]
    shadow_test = confidence["test"]
    features = (
        torch.cat([shadow_train, shadow_test]).numpy().reshape(len(shadow_train) + len(shadow_test), -1)
    )
    targets = np.concatenate([np.ones(len(shadow_train)), np.zeros(len(shadow_test))])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(features, targets)
    return 100.0 * (1 - attack.predict(confidence["forget"].numpy().reshape(len(forget_labels), -1)).mean())


def test_mia_efficacy_by_default_is_salun_procedure_with_the_first_retain_rows():
    generator = torch.Generator().manual_seed(4)
    labels = {
        name: torch.randint(0, 5, (n,), generator=generator) for name, n in [("r", 120), ("t", 40), ("f", 50)]
    }
    logits = {name: torch.randn(len(labels[name]), 5, generator=generator) for name in labels}
    # the first 40 retain rows look like test data, the rest like memorised training data: which
    # rows are the members changes the attack, so the test tells SalUn's choice from a random one
    logits["r"][40:] += 6.0 * torch.nn.functional.one_hot(labels["r"][40:], 5)
    logits["f"][:25] += 6.0 * torch.nn.functional.one_hot(labels["f"][:25], 5)
    splits = {name: Predictions.from_logits(logits[name], labels[name]) for name in labels}
    expected = salun_svc_mia_efficacy(
        logits["r"], labels["r"], logits["t"], labels["t"], logits["f"], labels["f"]
    )
    assert mia_efficacy(splits["r"], splits["t"], splits["f"]) == pytest.approx(expected, abs=1e-9)
    metrics = compute_unlearning_metrics(splits["f"], splits["r"], splits["t"])
    assert metrics.mia_efficacy == pytest.approx(expected, abs=1e-9)
    assert mia_efficacy(splits["r"], splits["t"], splits["f"], seed=0) != pytest.approx(expected)


def test_pipeline_measures_ra_and_mia_members_on_rows_the_original_trained_on(monkeypatch, tmp_path):
    """θ₀ trains on retain_train minus retain_val; RA and the MIA members must use exactly those rows."""
    from types import SimpleNamespace

    from hf_negmerge import originals
    from hf_negmerge.data import DataConfig, EncodedSplit
    from hf_negmerge.data.scenarios import SCENARIOS, SOURCE_INDEX_COLUMN, UnlearningData
    from hf_negmerge.evaluation import engine

    train = datasets.Dataset.from_dict(
        {"label": [i % 3 for i in range(60)], SOURCE_INDEX_COLUMN: list(range(60))}
    )
    test = datasets.Dataset.from_dict(
        {"label": [i % 3 for i in range(12)], SOURCE_INDEX_COLUMN: list(range(12))}
    )
    config = DataConfig(
        dataset="unused", scenario="random", forget_fraction=0.1, validation_fraction=0.2, seed=0
    )
    data = UnlearningData(
        scenario="random", class_names=None, num_classes=3, **SCENARIOS["random"](config, train, test, None)
    )

    def source_rows(classifier, split, name, batch_size, disk_dir, memory_bytes):
        # the encoded "labels" are the rows' source indices, to check which rows each split holds
        return EncodedSplit(name, torch.zeros(len(split), 0), torch.tensor(split[SOURCE_INDEX_COLUMN]))

    monkeypatch.setattr(engine, "encode_split", source_rows)
    recipe = SimpleNamespace(
        mia_enabled=True, evaluation=SimpleNamespace(batch_size=8), output_dir=tmp_path / "missing"
    )
    encoded = engine.encode_splits(None, data, recipe)
    trained_on = originals.original_training_split(SimpleNamespace(), data)[SOURCE_INDEX_COLUMN]
    held_out = set(data.retain_val[SOURCE_INDEX_COLUMN])
    forgotten = set(data.forget_train[SOURCE_INDEX_COLUMN])
    expected = [
        index for index in range(60) if index not in held_out and index not in forgotten
    ]  # in row order
    assert held_out and encoded["retain_train"].labels.tolist() == expected
    assert encoded["retain_test"].labels.tolist() == expected
    assert set(expected) <= set(trained_on)


def test_mia_errors_and_small_retain_warning():
    with pytest.raises(ValueError, match="forget set is empty"):
        mia_efficacy([0.9, 0.8], [0.2, 0.3], [])
    with pytest.raises(ValueError, match="test set is empty"):
        mia_efficacy([0.9, 0.8], [], [0.5])
    with pytest.raises(ValueError, match=r"retain confidences must be probabilities"):
        mia_efficacy([1.5, 0.8], [0.2], [0.5])
    with pytest.warns(UserWarning, match="smaller than the test set"):
        members = select_members(np.array([0.9, 0.95]), count=5, seed=0)
    assert members.tolist() == [0.9, 0.95]


# --- unlearning metrics and Avg. Gap ---------------------------------------------------------------------

RETRAIN = {"retain_accuracy": 100.00, "forget_accuracy": 94.76, "test_accuracy": 94.26, "mia_efficacy": 12.88}


def test_avg_gap_hand_check_against_the_paper():
    # SalUn's CIFAR-10 row (UA 2.85, MIA 14.39, RA 99.62, TA 93.93); the NegMerge table lists its gap as 1.15.
    salun = {
        "retain_accuracy": 99.62,
        "forget_accuracy": 100 - 2.85,
        "test_accuracy": 93.93,
        "mia_efficacy": 14.39,
    }
    by_hand = (abs(99.62 - 100.00) + abs(2.85 - 5.24) + abs(93.93 - 94.26) + abs(14.39 - 12.88)) / 4  # 1.1525
    assert avg_gap(salun, RETRAIN) == pytest.approx(by_hand)
    assert round(avg_gap(salun, RETRAIN), 2) == 1.15
    gaps = metric_gaps(salun, RETRAIN)
    assert gaps["unlearn_accuracy"] == pytest.approx(2.39)
    assert gaps["mia_efficacy"] == pytest.approx(1.51)
    assert avg_gap(RETRAIN, RETRAIN) == 0.0
    assert avg_gap(UnlearningMetrics(**salun), UnlearningMetrics(**RETRAIN)) == pytest.approx(by_hand)


def test_avg_gap_rejects_missing_keys_and_fractions():
    with pytest.raises(KeyError, match="mia_efficacy"):
        avg_gap({k: v for k, v in RETRAIN.items() if k != "mia_efficacy"}, RETRAIN)
    with pytest.raises(ValueError, match="test_accuracy"):
        avg_gap({**RETRAIN, "test_accuracy": 942.6}, RETRAIN)


def test_compute_unlearning_metrics_combines_the_splits():
    def split(predicted, labels, confidence):
        return Predictions(
            labels=torch.tensor(labels),
            predicted=torch.tensor(predicted),
            true_class_probability=torch.tensor(confidence, dtype=torch.float32),
        )

    forget = split([0, 1, 1, 1], [0, 0, 0, 0], [0.3, 0.2, 0.1, 0.4])
    retain = split([1, 1, 1, 2, 2], [1, 1, 1, 2, 0], [0.99, 0.98, 0.97, 0.96, 0.05])
    test = split([0, 2, 2], [0, 2, 1], [0.6, 0.5, 0.2])
    metrics = compute_unlearning_metrics(forget, retain, test, control=test, mia_seed=None)
    assert (metrics.forget_accuracy, metrics.retain_accuracy) == (25.0, 80.0)
    assert metrics.test_accuracy == pytest.approx(200 / 3) == metrics.control_accuracy
    assert metrics.unlearn_accuracy == 75.0
    assert metrics.mia_efficacy == pytest.approx(
        reference_mia(
            np.array([0.99, 0.98, 0.97, 0.96, 0.05]),
            np.array([0.6, 0.5, 0.2]),
            np.array([0.3, 0.2, 0.1, 0.4]),
            np.arange(3),
        )
    )
    assert metrics.to_dict()["unlearn_accuracy"] == 75.0


# --- report ----------------------------------------------------------------------------------------------

ROWS = [
    {
        "method": "negmerge",
        "scale": 0.9,
        "forget_accuracy": 27.4,
        "retain_accuracy": 60.38,
        "kept_fraction": 0.0966,
    },
    {
        "method": "uniform",
        "scale": 0.55,
        "forget_accuracy": 22.5,
        "retain_accuracy": 60.554,
        "test_accuracy": None,
    },
    {"method": "original", "forget_accuracy": 59.64, "retain_accuracy": 63.34, "seeds": 3},
]


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, rule, body = cells[0], cells[1], cells[2:]
    assert all(re.fullmatch(r"-+:?", cell) for cell in rule)
    return [dict(zip(header, row, strict=True)) for row in body]


def test_markdown_table_is_aligned_with_fixed_decimals_and_dashes():
    text = markdown_table(ROWS)
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1, "columns must be padded to one width"
    parsed = parse_markdown_table(text)
    assert list(parsed[0]) == ["method", "λ", "forget acc ↓", "retain acc ↑", "kept fraction", "seeds"]
    assert parsed[0]["λ"] == "0.90" and parsed[0]["kept fraction"] == "0.0966"
    assert parsed[1]["retain acc ↑"] == f"{60.554:.2f}" and parsed[1]["kept fraction"] == "—"
    assert parsed[2]["λ"] == "—" and parsed[2]["seeds"] == "3"
    assert "test acc" not in text, "a column no row fills is dropped"
    for row, original in zip(parsed, ROWS, strict=True):
        assert float(row["forget acc ↓"]) == pytest.approx(original["forget_accuracy"], abs=0.005)


def test_comparison_json_round_trip_and_nan(tmp_path):
    rows = [*ROWS, {"method": "broken", "forget_accuracy": math.nan}]
    loaded = json.loads(comparison_json(rows))
    assert loaded[:3] == ROWS
    assert loaded[3] == {"method": "broken", "forget_accuracy": None}
    write_comparison(ROWS, tmp_path / "table.md", tmp_path / "table.json")
    assert json.loads((tmp_path / "table.json").read_text()) == ROWS
    assert parse_markdown_table((tmp_path / "table.md").read_text())[0]["method"] == "negmerge"


def test_to_jsonable_converts_dataclasses_scalars_and_paths():
    selection = select_lambda(
        [LambdaPoint(0.0, 59.64, 63.34), LambdaPoint(0.9, 27.4, 60.38), LambdaPoint(1.0, 20.0, 50.0)], 63.34
    )
    values = to_jsonable(
        {"seed": np.int64(0), "selection": selection, "path": Path("/tmp/out"), "gap": math.inf}
    )
    assert json.loads(json.dumps(values)) == values  # plain JSON types only
    assert values["seed"] == 0 and values["path"] == "/tmp/out" and values["gap"] is None
    assert values["selection"]["scale"] == 0.9
    assert values["selection"]["curve"][1] == {
        "scale": 0.9,
        "forget_accuracy": 27.4,
        "retain_accuracy": 60.38,
    }


# --- plots -----------------------------------------------------------------------------------------------


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 2000
    with PIL.Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 200
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == [], (
        "temporary files left behind"
    )


def test_lambda_curve_plot_is_a_png(tmp_path):
    curve = [LambdaPoint(s / 4, 60 - 40 * s / 4, 63 - 8 * (s / 4) ** 2) for s in range(5)]
    selection = select_lambda(curve, 63.0)
    raw = [LambdaPoint(s / 4, 60 - 30 * s / 4, 63 - 5 * s / 4) for s in range(5)]
    assert_png(plot_lambda_curves({"negmerge": selection, "uniform": raw}, tmp_path / "lambda.png"))
    with pytest.raises(ValueError, match="No λ curves"):
        plot_lambda_curves({}, tmp_path / "empty.png")


def test_layer_grouping_and_kept_fraction_plot(tmp_path):
    assert layer_group("vision_model.encoder.layers.3.mlp.fc1.weight") == "vision_model.encoder.layers.3"
    assert layer_group("vit.encoder.layer.11.attention.output.dense.bias") == "vit.encoder.layer.11"
    assert (
        layer_group("vision_model.embeddings.patch_embedding.weight")
        == "vision_model.embeddings.patch_embedding"
    )
    assert layer_group("logit_scale") == "logit_scale"
    assert (
        _common_dotted_prefix(["vision_model.encoder.layers.0", "vision_model.embeddings"]) == "vision_model."
    )
    assert _common_dotted_prefix(["vit.encoder.layer.0", "vit.encoder.layer.1"]) == "vit.encoder.layer."
    assert _common_dotted_prefix(["encoder.layers.0", "head"]) == ""
    kept = {
        "enc.layers.0.a.weight": 0.2,
        "enc.layers.0.b.weight": 0.4,
        "enc.layers.1.a.weight": 0.1,
        "head.weight": 1.0,
    }
    numel = {
        "enc.layers.0.a.weight": 300,
        "enc.layers.0.b.weight": 100,
        "enc.layers.1.a.weight": 10,
        "head.weight": 5,
    }
    assert group_kept_fraction(kept) == pytest.approx({"enc.layers.0": 0.3, "enc.layers.1": 0.1, "head": 1.0})
    weighted = group_kept_fraction(kept, numel)
    assert weighted["enc.layers.0"] == pytest.approx((0.2 * 300 + 0.4 * 100) / 400)
    assert_png(plot_kept_fraction(kept, tmp_path / "kept.png", numel=numel))
    with pytest.raises(ValueError, match=r"head\.weight"):
        group_kept_fraction({"head.weight": 1.5})
