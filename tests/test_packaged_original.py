"""The θ₀ shipped in the package: intact, found for the default recipe, and for nothing else.

Retraining it here to compare bytes takes about a minute at one thread, so instead: its files
hash as its `packaged.json` records, its folder name is the key of the settings it records, the
default recipe's own θ₀ lookup (the pipeline's) lands on it without training, and a run whose key
differs (another seed) trains rather than use it.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from hf_negmerge.models._source import weights_sha256
from hf_negmerge.training import pretrain
from hf_negmerge.training.packaged import PACKAGED_ENTRY_FILE, packaged_originals_dir, settings_key


class _TrainingStarted(Exception):
    pass


@pytest.fixture
def one_thread():
    """The packaged θ₀ is keyed by one torch thread, the default run's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _entries():
    return sorted(path.parent for path in packaged_originals_dir().glob(f"*/{PACKAGED_ENTRY_FILE}"))


def _default_recipe(tmp_path, *overrides):
    from hf_negmerge.recipe import load_recipe

    return load_recipe(
        None, [f"output_dir={tmp_path / 'out'}", f"original.cache_dir={tmp_path / 'cache'}", *overrides]
    )


def _prepare(recipe, tmp_path):
    from hf_negmerge.data import build_unlearning_data
    from hf_negmerge.originals import model_label_names, prepare_original

    data = build_unlearning_data(recipe.data, model_label_names(recipe))
    return prepare_original(recipe, data, tmp_path / "work", progress=False)


def test_packaged_entries_match_their_records():
    entries = _entries()
    assert entries, "the package ships the default recipe's θ₀"
    for folder in entries:
        entry = json.loads((folder / PACKAGED_ENTRY_FILE).read_text(encoding="utf-8"))
        record = json.loads((folder / "pretrain.json").read_text(encoding="utf-8"))
        assert folder.name == f"{entry['settings']['model_config']['architecture']}-{entry['key']}"
        assert settings_key(entry["settings"]) == entry["key"]
        assert {name: record[name] for name in entry["settings"]} == entry["settings"]
        assert entry["torch_threads"] == entry["settings"]["torch_threads"] == 1
        assert weights_sha256(folder) == entry["sha256"]
        model_bytes = (folder / "model.safetensors").read_bytes()
        assert hashlib.sha256(model_bytes).hexdigest() == entry["model_safetensors_sha256"]
        assert len(model_bytes) < 4 * 2**20  # package data stays small


def test_default_recipe_uses_the_packaged_original_without_training(tmp_path, monkeypatch, one_thread):
    def refuse(*args, **kwargs):
        raise _TrainingStarted

    monkeypatch.setattr(pretrain, "train_loop", refuse)
    folder = _prepare(_default_recipe(tmp_path), tmp_path)
    assert folder.parent == packaged_originals_dir()
    assert not (tmp_path / "cache").exists()  # read in place: nothing copied, nothing written

    from hf_negmerge.originals import describe_original

    record = describe_original(_default_recipe(tmp_path), folder)
    assert record["packaged"]["key"] == folder.name.split("-")[-1]
    assert record["sha256"] == record["packaged"]["sha256"] == weights_sha256(folder)
    assert "packaged" in record["source"]
    trained = json.loads((folder / "pretrain.json").read_text(encoding="utf-8"))["train_accuracy"]
    assert record["train_accuracy"] == trained > 0.9  # recorded, so a failed θ₀ training can be flagged


@pytest.mark.parametrize("override", ["seed=1", "original.epochs=39"])
def test_another_key_trains_instead(tmp_path, monkeypatch, one_thread, override):
    def refuse(*args, **kwargs):
        raise _TrainingStarted

    monkeypatch.setattr(pretrain, "train_loop", refuse)
    with pytest.raises(_TrainingStarted):
        _prepare(_default_recipe(tmp_path, override), tmp_path)


def test_another_thread_count_trains_instead(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise _TrainingStarted

    monkeypatch.setattr(pretrain, "train_loop", refuse)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(_TrainingStarted):
            _prepare(_default_recipe(tmp_path), tmp_path)
    finally:
        torch.set_num_threads(before)
