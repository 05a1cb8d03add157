"""Data stage: built-in digits, loading from every source, validation errors, scenarios, batching."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from hf_negmerge.data import (
    SOURCE_INDEX_COLUMN,
    DataConfig,
    ImageClassificationCollator,
    build_unlearning_data,
    carve_validation,
    detect_source_kind,
    load_digits_dataset,
    load_image_dataset,
    make_dataloader,
    require_class_names,
    resolve_forget_classes,
    validate_image_dataset,
)
from hf_negmerge.errors import ConfigError, HubUnavailableError

SKLEARN_DIGITS = load_digits()


def column(dataset: datasets.Dataset, name: str) -> list:
    """One column as a list (through Arrow: iterating a column row by row is slow on selections)."""
    return dataset.select_columns([name]).with_format("arrow")[:][name].to_pylist()


def ids(dataset: datasets.Dataset, name: str = SOURCE_INDEX_COLUMN) -> set[int]:
    return set(column(dataset, name))


def labels(dataset: datasets.Dataset) -> np.ndarray:
    return np.asarray(column(dataset, "label"))


def to_tensor(images: list[PIL.Image.Image]) -> torch.Tensor:
    """A stand-in preprocessor: HWC uint8 -> CHW float in [0, 1]."""
    return torch.stack(
        [torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1) for im in images]
    )


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_image_folder(
    root: Path, classes: dict[str, int], splits=("train", "test")
) -> dict[tuple, np.ndarray]:
    """class/image PNGs whose pixel value encodes (split, class, index), so decoding can be checked."""
    written = {}
    for s, split in enumerate(splits):
        for c, (name, count) in enumerate(classes.items()):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = np.full((5, 6), 40 * c + 7 * i + s, dtype=np.uint8)
                PIL.Image.fromarray(pixels).save(root / split / name / f"{i}.png")
                written[(split, name, i)] = pixels
    return written


# --------------------------------------------------------------------------- digits


def test_digits_rows_classes_and_pixels_match_sklearn():
    data = load_digits_dataset()
    assert sum(len(part) for part in data.values()) == len(SKLEARN_DIGITS.target) == 1797
    assert data["train"].features["label"].names == [str(d) for d in range(10)]
    for part in data.values():
        for row in part:
            image = row["image"]
            assert image.size == (8, 8) and image.mode == "L"
            source = SKLEARN_DIGITS.images[row["sample_id"]]
            # 0..16 intensities scaled to 0..255: within half a pixel step of the original value.
            np.testing.assert_allclose(
                np.asarray(image, dtype=np.float64) * 16 / 255, source, atol=16 / 255 / 2 + 1e-9
            )
            assert row["label"] == SKLEARN_DIGITS.target[row["sample_id"]]


def test_digits_splits_disjoint_cover_stratified_and_seeded():
    data = load_digits_dataset()
    train, test = ids(data["train"], "sample_id"), ids(data["test"], "sample_id")
    assert not train & test and train | test == set(range(1797))
    assert len(test) == 450  # sklearn's rule: ceil(0.25 * 1797)
    # Stratified: every class's test count is its proportional share, up to rounding.
    per_class = np.bincount(SKLEARN_DIGITS.target, minlength=10)
    assert np.all(np.abs(np.bincount(labels(data["test"]), minlength=10) - per_class * 450 / 1797) <= 1)
    assert ids(load_digits_dataset(seed=0)["test"], "sample_id") == test
    assert ids(load_digits_dataset(seed=1)["test"], "sample_id") != test


# --------------------------------------------------------------------------- validation carve


@pytest.mark.parametrize("num_rows, expected", [(1347, 134), (60_001, 5000), (10, 1)])
def test_carve_validation_size_and_membership_match_authors_random_split(num_rows, expected):
    dataset = datasets.Dataset.from_dict({"x": list(range(num_rows))})
    rest, val = carve_validation(dataset, fraction=0.1, maximum=5000, seed=0)
    assert len(val) == expected == min(int(num_rows * 0.1), 5000)
    assert ids(rest, "x").isdisjoint(ids(val, "x")) and len(rest) + len(val) == num_rows
    # The authors split with torch.utils.data.random_split and Generator().manual_seed(seed).
    ref_rest, ref_val = torch.utils.data.random_split(
        range(num_rows), [num_rows - expected, expected], generator=torch.Generator().manual_seed(0)
    )
    assert ids(val, "x") == set(ref_val.indices) and ids(rest, "x") == set(ref_rest.indices)


@settings(max_examples=25, deadline=None)
@given(
    num_rows=st.integers(min_value=20, max_value=3000),
    fraction=st.floats(min_value=0.05, max_value=0.5),
    maximum=st.integers(min_value=1, max_value=400),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_carve_validation_property(num_rows, fraction, maximum, seed):
    dataset = datasets.Dataset.from_dict({"x": list(range(num_rows))})
    rest, val = carve_validation(dataset, fraction, maximum, seed)
    expected = min(int(num_rows * fraction), maximum)
    assert len(val) == expected and ids(rest, "x") | ids(val, "x") == set(range(num_rows))
    assert not ids(rest, "x") & ids(val, "x")
    assert column(val, "x") == sorted(column(val, "x"))  # original order kept inside each part
    assert ids(carve_validation(dataset, fraction, maximum, seed)[1], "x") == ids(val, "x")


def test_carve_validation_refuses_too_small_pool():
    with pytest.raises(ConfigError, match="tiny pool has 5 rows"):
        carve_validation(datasets.Dataset.from_dict({"x": [1, 2, 3, 4, 5]}), 0.1, 5000, 0, "tiny pool")


# --------------------------------------------------------------------------- scenarios


def test_class_scenario_separates_forgotten_classes():
    data = build_unlearning_data(DataConfig(scenario="class", forget_classes=[3, "7"]))
    digits = load_digits_dataset()
    train_labels, test_labels = labels(digits["train"]), labels(digits["test"])
    assert data.forget_classes == [3, 7] and data.summary()["forget_classes"] == ["3", "7"]
    for name in ("forget_train", "forget_val", "forget_test"):
        assert set(labels(getattr(data, name))) <= {3, 7}
    for name in ("retain_train", "retain_val", "retain_test"):
        assert not set(labels(getattr(data, name))) & {3, 7}
    forget_rows = set(np.flatnonzero(np.isin(train_labels, [3, 7])))
    assert ids(data.forget_train) | ids(data.forget_val) == forget_rows
    assert not ids(data.forget_train) & ids(data.forget_val)
    assert len(data.forget_val) == int(len(forget_rows) * 0.1)
    assert ids(data.retain_train) == set(range(len(train_labels))) - forget_rows
    assert ids(data.retain_val) <= ids(data.retain_train)
    assert len(data.retain_val) == int(len(data.retain_train) * 0.1)
    assert ids(data.forget_test) == set(np.flatnonzero(np.isin(test_labels, [3, 7])))
    assert ids(data.forget_test) | ids(data.retain_test) == ids(data.test) == set(range(len(test_labels)))


def test_random_scenario_fraction_cover_and_determinism():
    data = build_unlearning_data(DataConfig(scenario="random", forget_fraction=0.2, seed=5))
    n_train = len(load_digits_dataset()["train"])
    forget, retain = ids(data.forget_train), ids(data.retain_train)
    assert len(forget) == int(0.2 * n_train)
    assert not forget & retain and forget | retain == set(range(n_train))
    assert ids(data.forget_test) == forget  # forget accuracy is measured on the forgotten samples
    assert ids(data.forget_val) <= forget and len(data.forget_val) == int(len(forget) * 0.1)
    assert ids(data.retain_val) <= retain and ids(data.retain_test) == retain
    assert len(data.test) == len(load_digits_dataset()["test"])
    again = build_unlearning_data(DataConfig(scenario="random", forget_fraction=0.2, seed=5))
    assert ids(again.forget_train) == forget and ids(again.forget_val) == ids(data.forget_val)
    other = build_unlearning_data(DataConfig(scenario="random", forget_fraction=0.2, seed=6))
    assert ids(other.forget_train) != forget


def test_dataset_scenario_carves_forget_and_control_validation(tmp_path):
    load_digits_dataset().save_to_disk(str(tmp_path / "control"))
    config = DataConfig(scenario="dataset", control_dataset=str(tmp_path / "control"), max_samples=300)
    data = build_unlearning_data(config)
    assert len(data.forget_train) + len(data.forget_val) == 300 and len(data.forget_val) == 30
    assert not ids(data.forget_train) & ids(data.forget_val)
    assert len(data.forget_test) == 300 and len(data.control_val) == 30 and len(data.control_test) == 300
    assert data.retain_train is None and data.test is None
    assert data.control_class_names == [str(d) for d in range(10)]
    assert set(data.summary()["sizes"]) == {
        "forget_train",
        "forget_val",
        "forget_test",
        "control_val",
        "control_test",
    }


def test_dataset_scenario_uses_given_validation_split(tmp_path):
    digits = load_digits_dataset()
    datasets.DatasetDict(
        {"train": digits["train"], "val": digits["test"], "test": digits["test"]}
    ).save_to_disk(str(tmp_path / "d"))
    config = DataConfig(
        scenario="dataset", dataset=str(tmp_path / "d"), validation_split="val", control_dataset="digits"
    )
    data = build_unlearning_data(config)
    assert len(data.forget_train) == len(digits["train"]) and len(data.forget_val) == len(digits["test"])


def test_max_samples_caps_every_split_with_a_seeded_subset():
    data = build_unlearning_data(DataConfig(scenario="random", max_samples=200))
    assert len(data.forget_train) + len(data.retain_train) == 200 and len(data.test) == 200
    assert len(set(labels(data.retain_train))) == 10  # a random subset, not the first (sorted) rows


def test_data_config_rejects_bad_settings():
    with pytest.raises(ConfigError, match="'forget_everything'"):
        DataConfig(scenario="forget_everything")
    with pytest.raises(ConfigError, match="forget_classes"):
        DataConfig(scenario="class")
    with pytest.raises(ConfigError, match="control_dataset"):
        DataConfig(scenario="dataset")
    with pytest.raises(ConfigError, match="forget_fraction"):
        DataConfig(scenario="random", forget_fraction=1.5)
    with pytest.raises(ConfigError, match=r"\['forget_clases'\]"):
        DataConfig.from_dict({"scenario": "class", "forget_clases": [1]})
    assert DataConfig.from_dict(DataConfig(scenario="class", forget_classes=2).to_dict()).forget_classes == [
        2
    ]


def test_unknown_forget_class_is_named():
    with pytest.raises(ConfigError, match=r"'eleven'.*known classes"):
        resolve_forget_classes(["eleven"], [str(d) for d in range(10)], 10)
    with pytest.raises(ConfigError, match="forget class id 12"):
        build_unlearning_data(DataConfig(scenario="class", forget_classes=[12]))


def test_empty_forget_set_is_named(tmp_path):
    digits = load_digits_dataset()
    test_without_nines = digits["test"].filter(lambda row: row["label"] != 9)
    datasets.DatasetDict({"train": digits["train"], "test": test_without_nines}).save_to_disk(
        str(tmp_path / "d")
    )
    with pytest.raises(ConfigError, match=r"'forget_test'.*empty"):
        build_unlearning_data(DataConfig(scenario="class", dataset=str(tmp_path / "d"), forget_classes=[9]))
    datasets.DatasetDict({"train": test_without_nines, "test": digits["test"]}).save_to_disk(
        str(tmp_path / "e")
    )
    with pytest.raises(ConfigError, match=r"forget class\(es\) \['9'\] have no rows in the train split"):
        build_unlearning_data(
            DataConfig(scenario="class", dataset=str(tmp_path / "e"), forget_classes=[9, 2])
        )
    with pytest.raises(ConfigError, match="empty forget or retain set"):
        build_unlearning_data(DataConfig(scenario="random", forget_fraction=0.0001))


# --------------------------------------------------------------------------- loading from each source


def test_image_folder_reads_classes_splits_and_pixels(tmp_path):
    written = write_image_folder(tmp_path / "imgs", {"cat": 3, "dog": 2})
    assert detect_source_kind(str(tmp_path / "imgs")) == "imagefolder"
    data = load_image_dataset(str(tmp_path / "imgs"), cache_dir=str(tmp_path / "cache"))
    assert set(data) == {"train", "test"} and data["train"].features["label"].names == ["cat", "dog"]
    seen = sorted(np.asarray(row["image"]).tobytes() for row in data["test"])
    expected = sorted(pixels.tobytes() for (split, _, _), pixels in written.items() if split == "test")
    assert seen == expected
    assert sorted(labels(data["train"])) == [0, 0, 0, 1, 1]


def test_parquet_with_column_mapping_and_explicit_class_names(tmp_path):
    digits = load_digits_dataset()["test"].select(range(40))
    renamed = digits.rename_columns({"image": "img", "label": "target"}).cast_column(
        "target", datasets.Value("int64")
    )
    renamed.to_parquet(str(tmp_path / "digits.parquet"))
    names = [f"digit {d}" for d in range(10)]
    data = load_image_dataset(
        str(tmp_path / "digits.parquet"),
        "train",
        image_column="img",
        label_column="target",
        class_names=names,
    )
    assert {"image", "label"} <= set(data.column_names) and "img" not in data.column_names
    assert data.features["label"].names == names
    assert list(data["label"]) == list(digits["label"])
    assert np.array_equal(np.asarray(data[5]["image"]), np.asarray(digits[5]["image"]))


def test_plain_parquet_with_png_bytes_and_string_labels(tmp_path):
    arrays = [np.full((3, 3), v, dtype=np.uint8) for v in (10, 20, 30, 40)]
    table = pa.table({"png": [png_bytes(a) for a in arrays], "kind": ["zebra", "ant", "zebra", "ant"]})
    pq.write_table(table, tmp_path / "train.parquet")
    pq.write_table(table, tmp_path / "test.parquet")
    data = load_image_dataset(
        {"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "test.parquet")},
        image_column="png",
        label_column="kind",
    )
    assert data["train"].features["label"].names == ["ant", "zebra"]  # sorted distinct names
    assert list(data["test"]["label"]) == [1, 0, 1, 0]
    assert [int(np.asarray(row["image"])[0, 0]) for row in data["train"]] == [10, 20, 30, 40]


def test_save_to_disk_dict_and_single_dataset(tmp_path):
    digits = load_digits_dataset()
    digits.rename_column("image", "pixels").save_to_disk(str(tmp_path / "dict"))
    digits["test"].save_to_disk(str(tmp_path / "single"))
    assert (
        detect_source_kind(str(tmp_path / "dict"))
        == detect_source_kind(str(tmp_path / "single"))
        == "saved_to_disk"
    )
    test = load_image_dataset(str(tmp_path / "dict"), split="test", image_column="pixels")
    assert ids(test, "sample_id") == ids(digits["test"], "sample_id")
    single = load_image_dataset(str(tmp_path / "single"))
    assert isinstance(single, datasets.Dataset) and len(single) == len(digits["test"])
    with pytest.raises(ConfigError, match=r"no split 'validation'.*'test', 'train'"):
        load_image_dataset(str(tmp_path / "dict"), split="validation", image_column="pixels")
    with pytest.raises(ConfigError, match="without splits"):
        load_image_dataset(str(tmp_path / "single"), split="train")


# --------------------------------------------------------------------------- bad input


def test_unknown_column_lists_available_columns():
    with pytest.raises(
        ConfigError, match=r"no column 'img' \(image_column\); available columns: \['image', 'label'"
    ):
        load_image_dataset("digits", "train", image_column="img")
    with pytest.raises(ConfigError, match=r"no column 'target' \(label_column\)"):
        load_image_dataset("digits", "train", label_column="target")


def test_labels_out_of_range_for_class_names_name_the_row(tmp_path):
    datasets.Dataset.from_dict(
        {"image": [png_bytes(np.zeros((2, 2), np.uint8))] * 3, "label": [0, 1, 2]},
        features=datasets.Features(image=datasets.Image(), label=datasets.Value("int64")),
    ).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ConfigError, match="label 2 in row 2 is outside the 2 classes"):
        load_image_dataset(str(tmp_path / "d"), class_names=["a", "b"])
    with pytest.raises(ConfigError, match="3 class_names were given but the label feature has 10"):
        load_image_dataset("digits", "train", class_names=["a", "b", "c"])


def test_empty_dataset_is_rejected(tmp_path):
    empty = load_digits_dataset()["test"].select([])
    with pytest.raises(ConfigError, match=r"digits test is empty \(0 rows\)"):
        validate_image_dataset(empty, where="digits test")
    empty.save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="is empty"):
        load_image_dataset(str(tmp_path / "empty"))
    table = pa.table({"image": pa.array([], pa.binary()), "label": pa.array([], pa.int64())})
    pq.write_table(table, tmp_path / "empty.parquet")
    with pytest.raises(ConfigError, match=r"parquet file '.*empty.parquet' cannot be read"):
        load_image_dataset(str(tmp_path / "empty.parquet"), cache_dir=str(tmp_path / "cache"))


def test_undecodable_image_names_its_row(tmp_path):
    write_image_folder(tmp_path / "imgs", {"a": 2, "b": 2}, splits=("train",))
    (tmp_path / "imgs" / "train" / "b" / "1.png").write_bytes(b"this is not a png")
    data = load_image_dataset(str(tmp_path / "imgs"), validate=False, cache_dir=str(tmp_path / "cache"))
    bad_row = next(
        i
        for i, v in enumerate(data["train"].cast_column("image", datasets.Image(decode=False))["image"])
        if v["path"].endswith("b/1.png")
    )
    with pytest.raises(ConfigError, match=rf"row {bad_row} \(.*1.png\) cannot be decoded"):
        load_image_dataset(str(tmp_path / "imgs"), cache_dir=str(tmp_path / "cache"))


def test_missing_class_names_when_required(tmp_path):
    datasets.Dataset.from_dict(
        {"image": [png_bytes(np.zeros((2, 2), np.uint8))] * 2, "label": [0, 1]},
        features=datasets.Features(image=datasets.Image(), label=datasets.Value("int64")),
    ).save_to_disk(str(tmp_path / "d"))
    unnamed = load_image_dataset(str(tmp_path / "d"))
    with pytest.raises(ConfigError, match="CLIP zero-shot head needs class names"):
        require_class_names(unnamed, purpose="CLIP zero-shot head")
    assert require_class_names(load_image_dataset("digits", "test")) == [str(d) for d in range(10)]
    with pytest.raises(ConfigError, match=r"repeated: \['a'\]"):
        require_class_names(["a", "b", "a"])


def test_unnamed_integer_labels_flow_through_a_scenario(tmp_path):
    def split(count):
        return datasets.Dataset.from_dict(
            {
                "image": [png_bytes(np.full((2, 2), i, np.uint8)) for i in range(count)],
                "y": [i % 4 for i in range(count)],
            },
            features=datasets.Features(image=datasets.Image(), y=datasets.Value("int64")),
        )

    datasets.DatasetDict({"train": split(80), "test": split(20)}).save_to_disk(str(tmp_path / "d"))
    config = DataConfig(scenario="class", dataset=str(tmp_path / "d"), label_column="y", forget_classes=[1])
    data = build_unlearning_data(config)
    assert data.class_names is None and data.num_classes == 4  # inferred from the largest id
    assert data.summary()["forget_classes"] == [1] and set(labels(data.forget_test)) == {1}
    assert len(data.forget_train) + len(data.forget_val) == 20 and len(data.retain_test) == 15


def test_missing_local_path_is_named():
    with pytest.raises(ConfigError, match=r"'./no/such/folder' is not a built-in dataset"):
        load_image_dataset("./no/such/folder")
    with pytest.raises(ConfigError, match=r"'train\.parquet' is not a built-in dataset"):
        load_image_dataset("train.parquet")


# --------------------------------------------------------------------------- Hub access


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every outgoing connection, so 'fails fast' means 'never tried the network'."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_hub_id_while_offline_fails_fast_without_network(monkeypatch, no_network):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailableError, match=r"'someone/cars'.*pass the local folder"):
        load_image_dataset("someone/cars", split="train")
    assert no_network == []


def test_offline_flag_set_after_import_does_not_reach_datasets(monkeypatch, no_network):
    import huggingface_hub.constants

    # The libraries read HF_HUB_OFFLINE at import; here it is only set in the environment afterwards.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset must not run"))
    with pytest.raises(HubUnavailableError, match="'someone/cars'"):
        load_image_dataset("someone/cars")
    assert no_network == []


def test_unreachable_hub_fails_after_one_probe(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    with socket.socket() as probe:  # a local port nobody listens on: connection refused at once
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("no retry loop expected"))
    with pytest.raises(HubUnavailableError, match=rf"'someone/cars'.*127.0.0.1:{closed_port} is unreachable"):
        load_image_dataset("someone/cars")


# --------------------------------------------------------------------------- batching


def test_collator_builds_rgb_pixel_values_labels_and_applies_transform():
    rows = [load_digits_dataset()["test"][i] for i in range(4)]
    batch = ImageClassificationCollator(to_tensor)(rows)
    assert batch["pixel_values"].shape == (4, 3, 8, 8) and batch["pixel_values"].dtype == torch.float32
    expected = torch.tensor(np.stack([np.asarray(r["image"]) for r in rows]), dtype=torch.float32) / 255
    for channel in range(3):  # grayscale digits are converted to RGB: three identical channels
        assert torch.equal(batch["pixel_values"][:, channel], expected)
    assert batch["labels"].tolist() == [r["label"] for r in rows] and batch["labels"].dtype == torch.long
    flipped = ImageClassificationCollator(to_tensor, transform=lambda x: x.flip(-1))(rows)
    assert torch.equal(flipped["pixel_values"], batch["pixel_values"].flip(-1))
    with pytest.raises(ConfigError, match=r"shape \[B=4, C, H, W\], got \(4, 8, 8\)"):
        ImageClassificationCollator(lambda images: to_tensor(images)[:, 0])(rows)


def test_dataloader_shuffles_deterministically_per_seed():
    dataset = load_digits_dataset()["test"].select(range(64))
    collator = ImageClassificationCollator(to_tensor)

    def order(seed, shuffle=True):
        loader = make_dataloader(dataset, collator, batch_size=16, shuffle=shuffle, seed=seed)
        return torch.cat([batch["labels"] for batch in loader]).tolist(), len(loader)

    first, batches = order(3)
    assert batches == 4 and sorted(first) == sorted(dataset["label"])
    assert order(3)[0] == first and order(4)[0] != first
    assert order(3, shuffle=False)[0] == list(dataset["label"])


def test_encode_split_keeps_row_order_across_batches_and_converts_grayscale():
    """Row i is a flat image of value 10·i (odd rows grayscale): the encoded pixels say which row they are."""
    from types import SimpleNamespace

    from hf_negmerge.data import encode_split

    images = [
        PIL.Image.new("L", (4, 3), 10 * i) if i % 2 else PIL.Image.new("RGB", (4, 3), (10 * i,) * 3)
        for i in range(7)
    ]
    rows = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(7)]})
    rows = rows.cast_column("image", datasets.Image())

    def preprocess(batch: list[PIL.Image.Image]) -> torch.Tensor:
        assert all(image.mode == "RGB" for image in batch)  # grayscale rows arrive converted
        return torch.stack(
            [torch.as_tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) for image in batch]
        )

    encoded = encode_split(SimpleNamespace(preprocess=preprocess), rows, "toy", batch_size=3)
    expected = torch.arange(7, dtype=torch.float32).mul(10).view(7, 1, 1, 1).expand(7, 3, 3, 4)
    assert torch.equal(encoded.pixel_values, expected)
    assert encoded.labels.tolist() == [i % 3 for i in range(7)] and encoded.labels.dtype == torch.long
    assert [len(batch["labels"]) for batch in encoded.batches(4)] == [4, 3]
    with pytest.raises(ConfigError, match="empty split 'none'"):
        encode_split(SimpleNamespace(preprocess=preprocess), rows.select([]), "none")
