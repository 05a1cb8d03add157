"""`hf-negmerge merge --config merge.yaml`: local folders and Hub ids, overrides, errors, the cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from transformers import ViTForImageClassification

from conftest import make_tiny_vit
from hf_negmerge import CheckpointReader, TaskVector
from hf_negmerge.checkpoints import OUTPUT_MARKER
from hf_negmerge.cli import main
from hf_negmerge.key_space import checkpoint_state_dict
from hub_stand_in import HubStandIn
from test_hub import _point_hub_at
from test_merge_cli import finetune_like
from test_reliability_merge import snapshot


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """tmp/models/{base,ft0,ft1,ft2}: a tiny ViT and three perturbed copies."""
    base = make_tiny_vit()
    base.save_pretrained(tmp_path / "models" / "base")
    for seed in range(3):
        finetune_like(base, seed).save_pretrained(tmp_path / "models" / f"ft{seed}")
    return tmp_path


def write_yaml(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def merge(*argv: str) -> int:
    return main(["merge", *argv, "--no-progress"])


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return dict(CheckpointReader(path))


def test_yaml_with_local_paths_equals_the_flags_and_writes_cards(runs: Path) -> None:
    models = runs / "models"
    config = write_yaml(
        models / "merge.yaml",
        {
            "base": "./base",  # relative to the merge file's folder, not the working directory
            "models": ["ft0", {"model": "./ft1"}, {"model": str(models / "ft2")}],
            "method": "ties",
            "parameters": {"density": 0.5},
            "include": ["vit.encoder.*"],
            "scale": 0.7,
        },
    )
    assert merge("--config", str(config), "--out", str(runs / "yaml")) == 0
    flags = [
        "--base",
        str(models / "base"),
        "--finetuned",
        *(str(models / f"ft{i}") for i in range(3)),
        "--method",
        "ties",
        "--density",
        "0.5",
        "--include",
        "vit.encoder.*",
        "--scale",
        "0.7",
    ]
    assert merge(*flags, "--out", str(runs / "flags")) == 0
    for name in ("merged_task_vector.safetensors", "unlearned_model"):
        one, two = tensors(runs / "yaml" / name), tensors(runs / "flags" / name)
        assert one.keys() == two.keys()
        assert all(torch.equal(one[key], two[key]) for key in one), name
    saved = json.loads((runs / "yaml" / "negmerge_config.json").read_text())
    assert saved["method"] == "ties" and saved["density"] == 0.5 and saved["scale"] == 0.7
    # θ₀ − λ·τ, computed here from the saved τ and the base folder
    tau = TaskVector.load(runs / "yaml" / "merged_task_vector.safetensors")
    assert all(key.startswith("vit.encoder.") for key in tau)
    unlearned = checkpoint_state_dict(
        ViTForImageClassification.from_pretrained(runs / "yaml" / "unlearned_model")
    )
    for key, value in tensors(models / "base").items():
        expected = value - 0.7 * tau[key] if key in tau else value
        torch.testing.assert_close(unlearned[key], expected, rtol=0, atol=1e-6)

    card = ModelCard.load(runs / "yaml" / "README.md")
    assert card.data.base_model is None  # local inputs: no Hub link to make
    assert {"merge", "negmerge", "machine-unlearning"} <= set(card.data.tags)
    embedded = yaml.safe_load(card.text.split("```yaml\n")[1].split("```")[0])
    assert embedded == yaml.safe_load((runs / "yaml" / "merge_config.yaml").read_text())
    assert embedded["parameters"]["density"] == 0.5 and embedded["models"][0] == "ft0"
    model_card = ModelCard.load(runs / "yaml" / "unlearned_model" / "README.md")
    assert model_card.data.library_name == "transformers"
    assert model_card.data.pipeline_tag == "image-classification"
    assert "λ = 0.7" in model_card.text
    marker = json.loads((runs / "yaml" / OUTPUT_MARKER).read_text())
    assert {"README.md", "merge_config.yaml", "unlearned_model/README.md"} <= set(marker["files"])

    # the written merge file runs again (from the models' folder, as its relative paths say)
    (models / "again.yaml").write_text((runs / "yaml" / "merge_config.yaml").read_text())
    assert merge("--config", str(models / "again.yaml"), "--out", str(runs / "again")) == 0
    assert (runs / "again" / "merged_task_vector.safetensors").read_bytes() == (
        runs / "yaml" / "merged_task_vector.safetensors"
    ).read_bytes()


def test_flags_override_the_yaml(runs: Path) -> None:
    models = runs / "models"
    config = write_yaml(
        models / "merge.yaml",
        {"base": "base", "models": ["ft0", "ft1"], "method": "ties", "parameters": {"density": 0.5}},
    )
    assert (
        merge(
            "--config",
            str(config),
            "--density",
            "0.25",
            "--finetuned",
            str(models / "ft2"),
            str(models / "ft1"),
            "--out",
            str(runs / "out"),
        )
        == 0
    )
    saved = json.loads((runs / "out" / "negmerge_config.json").read_text())
    assert saved["density"] == 0.25 and saved["method"] == "ties"
    assert yaml.safe_load((runs / "out" / "merge_config.yaml").read_text())["models"] == [
        str(models / "ft2"),
        str(models / "ft1"),
    ]


@pytest.mark.parametrize(
    ("document", "argv", "fragments"),
    [
        ({"methd": "ties"}, (), ["unknown key 'methd'", "models"]),
        ({"parameters": {"densty": 0.5}}, (), ["parameters.densty", "density"]),
        ({"density": 0.5}, (), ["'density' is a method parameter", "parameters:"]),
        ({"retain_ratio": 0.9}, (), ["'retain_ratio'", "hf-negmerge unlearn"]),
        ({"parameters": {"density": 0.5}}, (), ["parameters.density", "ties", "negmerge"]),
        (
            {"method": "ties", "parameters": {"density": 0.5}},
            ("--method", "negmerge"),
            ["parameters.density", "--method"],
        ),
        ({"parameters": {"consensus_fraction": 0.2}}, (), ["merge.yaml", "consensus_fraction=0.2"]),
        (
            {"method": "ties", "parameters": {"consensus_fraction": 1.0}},
            (),
            ["parameters.consensus_fraction", "merge.yaml: method is ties"],
        ),
        (
            {"models": [{"model": "ft0", "parameters": {"weight": 1}}]},
            (),
            ["models[0].parameters", "not supported"],
        ),
        (
            {"base": {"model": "base", "revision": "main"}},
            (),
            ["'base' is a local folder", "revision 'main'", "Hub ids only"],
        ),
        (
            {"models": ["ft0", "missing-run"]},
            (),
            ["'missing-run'", "No local folder", "missing-run exists either"],
        ),
    ],
)
def test_bad_merge_files_exit_2_naming_the_key(runs, capsys, document, argv, fragments) -> None:
    models = runs / "models"
    config = write_yaml(models / "merge.yaml", {"base": "base", "models": ["ft0", "ft1"], **document})
    before = snapshot(runs)
    assert merge("--config", str(config), *argv, "--out", str(runs / "out")) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-negmerge merge: error:") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert snapshot(runs) == before and not (runs / "out").exists()


def test_a_bad_flag_value_is_not_blamed_on_the_file(runs, capsys) -> None:
    config = write_yaml(runs / "models" / "merge.yaml", {"base": "base", "models": ["ft0"], "method": "ties"})
    assert merge("--config", str(config), "--density", "5", "--out", str(runs / "out")) == 2
    err = capsys.readouterr().err
    assert "NegMergeConfig.density=5.0" in err and "merge.yaml" not in err


def test_no_base_anywhere_is_named(runs, capsys) -> None:
    config = write_yaml(runs / "models" / "merge.yaml", {"models": ["ft0"]})
    assert merge("--config", str(config), "--out", str(runs / "out")) == 2
    assert "--base" in capsys.readouterr().err


def test_hub_ids_offline_fail_fast_naming_the_id(runs, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    config = write_yaml(
        runs / "models" / "merge.yaml",
        {"base": {"model": "nobody-org/vit-base", "revision": "abc123"}, "models": ["ft0", "ft1"]},
    )
    before = snapshot(runs)
    assert merge("--config", str(config), "--out", str(runs / "out")) == 2
    err = capsys.readouterr().err
    assert "'nobody-org/vit-base'" in err and "HF_HUB_OFFLINE" in err and "Traceback" not in err
    assert snapshot(runs) == before and not (runs / "out").exists()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    server = HubStandIn().start()
    _point_hub_at(monkeypatch, server.url, tmp_path / "hf-cache")
    try:
        yield server
    finally:
        server.stop()


def test_hub_ids_with_revisions_are_downloaded_and_named_on_the_card(runs, hub, monkeypatch) -> None:
    models = runs / "models"
    api = HfApi(endpoint=hub.url)
    for name in ("base", "ft0"):
        api.create_repo(f"alice/{name}")
        api.upload_folder(repo_id=f"alice/{name}", folder_path=models / name)
    api.create_branch("alice/ft0", branch="v1")
    config = write_yaml(
        models / "merge.yaml",
        {
            "base": {"model": "alice/base"},
            "models": [{"model": "alice/ft0", "revision": "v1"}, "ft1"],
            "scale": 0.5,
        },
    )
    assert merge("--config", str(config), "--out", str(runs / "hub")) == 0
    assert (
        merge(
            "--base",
            str(models / "base"),
            "--finetuned",
            str(models / "ft0"),
            str(models / "ft1"),
            "--scale",
            "0.5",
            "--out",
            str(runs / "local"),
        )
        == 0
    )
    one, two = tensors(runs / "hub" / "unlearned_model"), tensors(runs / "local" / "unlearned_model")
    assert all(torch.equal(one[key], two[key]) for key in two)
    card = ModelCard.load(runs / "hub" / "unlearned_model" / "README.md")
    assert card.data.base_model == ["alice/base", "alice/ft0"]
    assert card.data.base_model_relation == "merge"
    vector = TaskVector.load(runs / "hub" / "merged_task_vector.safetensors")
    assert vector.metadata["base_model"] == "alice/base"
    assert vector.metadata["finetuned_models"] == ["alice/ft0@v1", "ft1"]
    # offline, the snapshots in the cache serve the same merge
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.stop()
    assert merge("--config", str(config), "--out", str(runs / "cached")) == 0
    assert (runs / "cached" / "merged_task_vector.safetensors").read_bytes() == (
        runs / "hub" / "merged_task_vector.safetensors"
    ).read_bytes()
    # the output may not go into the cache that holds the downloaded inputs
    from huggingface_hub import constants

    inside = Path(constants.HF_HUB_CACHE) / "out"
    assert merge("--config", str(config), "--out", str(inside)) == 2
    assert not inside.exists()
