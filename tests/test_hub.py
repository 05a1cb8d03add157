"""Hub integration: model card, sparse negation vector, push and load back.

Uploads and downloads run huggingface_hub's real client code against `hub_stand_in.HubStandIn`,
a local HTTP server on 127.0.0.1 that stores what is committed, so nothing touches the network.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import socket
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, constants, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers import (
    AutoModelForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

from hf_negmerge.cli import main as cli_main
from hf_negmerge.config import NegMergeConfig
from hf_negmerge.errors import CheckpointError, ConfigError, HubUnavailableError
from hf_negmerge.hub import (
    DatasetRef,
    NegationVector,
    UnlearningCardData,
    build_model_card,
    download_file,
    prepare_upload_folder,
    push_config,
    push_unlearned_model,
    resolve_folder,
    write_model_card,
)
from hf_negmerge.hub.negation_vector import ENCODINGS, choose_encoding, pack_bits, unpack_bits
from hf_negmerge.hub.push import BaseModelNotCheckedWarning
from hf_negmerge.key_space import checkpoint_state_dict
from hf_negmerge.merging import merge_task_vectors
from hf_negmerge.output_folder import seal_output_folder
from hf_negmerge.task_vector import TaskVector
from hub_stand_in import HubStandIn  # tests/ is on sys.path under pytest's default import mode

SECRET = "hf_TestSecretToken_4b1d9e7c"
EXPLICIT_SECRET = "hf_ExplicitArgToken_90ac21"
SCALE = 0.85
REPO = "alice/vit-unlearned"

METRICS = {
    "format_version": 1,
    "method": "negmerge",
    "scale": SCALE,
    "base_model": "alice/vit-tiny-digits",
    "forget_dataset": {"dataset": "alice/digits", "split": "test", "subset": "class 3"},
    "retain_dataset": {"dataset": "alice/digits", "split": "test", "subset": "classes 0-2, 4-9"},
    "scenario": "class",
    "original": {
        "forget_accuracy": 97.5,
        "retain_accuracy": 96.25,
        "test_accuracy": 96.4,
        "mia_efficacy": 3.5,
    },
    "unlearned": {
        "forget_accuracy": 12.5,
        "retain_accuracy": 91.25,
        "test_accuracy": 83.75,
        "mia_efficacy": 64.0,
    },
    "lambda_curve": [
        {"scale": 0.0, "forget_accuracy": 97.5, "retain_accuracy": 96.25},
        {"scale": 0.85, "forget_accuracy": 12.5, "retain_accuracy": 91.25},
    ],
    "selection": {
        "scale": 0.85,
        "qualified": True,
        "reason": "lowest forget accuracy with retain ≥ 0.95 × original",
        "threshold": 91.4375,
        "point": {"scale": 0.85, "forget_accuracy": 12.5, "retain_accuracy": 91.25},
        "original": {"scale": 0.0, "forget_accuracy": 97.5, "retain_accuracy": 96.25},
    },
    "grid": [
        {"run": "run-lr1e-3-ep2", "learning_rate": 0.001, "epochs": 2},
        {"run": "run-lr3e-3-ep4", "learning_rate": 0.003, "epochs": 4},
    ],
    "kept_fraction": 0.1089,
    "comparison": [
        {"method": "negmerge", "forget_accuracy": 12.5},
        {"method": "uniform", "forget_accuracy": 20.0},
    ],
}


# -- fixtures ----------------------------------------------------------------------------------------------
def _point_hub_at(monkeypatch: pytest.MonkeyPatch, url: str, cache: Path) -> None:
    """Send every huggingface_hub call to `url`, with an isolated cache and SECRET as HF_TOKEN."""
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache / "no-cached-login"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    server = HubStandIn().start()
    _point_hub_at(monkeypatch, server.url, tmp_path / "hf-cache")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unreachable_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An endpoint on a port nothing listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    _point_hub_at(monkeypatch, url, tmp_path / "hf-cache")
    return url


def _tiny_vit(seed: int) -> ViTForImageClassification:
    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        image_size=16,
        patch_size=4,
        num_channels=3,
        num_labels=4,
    )
    return ViTForImageClassification(config).eval()


def _pool_of_task_vectors(base: dict[str, torch.Tensor], runs: int = 6, seed: int = 1) -> list[TaskVector]:
    """Fine-tune-like task vectors: a shared direction plus per-run noise, so that the unanimous
    sign consensus keeps about 10% of the elements, as measured on CLIP (REFERENCE §1)."""
    generator = torch.Generator().manual_seed(seed)
    direction = {
        key: torch.randn(t.shape, generator=generator) for key, t in base.items() if t.is_floating_point()
    }
    return [
        TaskVector(
            {
                key: 1e-3 * (0.5 * d + torch.randn(d.shape, generator=generator))
                for key, d in direction.items()
            }
        )
        for _ in range(runs)
    ]


def _folder_fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


class Run:
    """An unlearning run's output folder, built as `hf-negmerge unlearn` documents it."""

    def __init__(self, root: Path) -> None:
        base_model = _tiny_vit(seed=0)
        self.base_state = {key: t.clone() for key, t in checkpoint_state_dict(base_model).items()}
        result = merge_task_vectors(_pool_of_task_vectors(self.base_state), NegMergeConfig())
        self.merged = result.task_vector
        self.out = root / "run-output"
        self.out.mkdir()
        unlearned = copy.deepcopy(base_model)
        self.merged.apply_to(unlearned, scale=-SCALE)  # the dense path: θ₀ − λ·τ
        unlearned.save_pretrained(self.out)
        self.unlearned_state = {key: t.clone() for key, t in checkpoint_state_dict(unlearned).items()}
        ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(self.out)
        NegMergeConfig().save_pretrained(self.out)
        self.merged.save(self.out / "merged_task_vector.safetensors")
        (self.out / "metrics.json").write_text(json.dumps(METRICS), encoding="utf-8")
        (self.out / "report.md").write_text("# report\n", encoding="utf-8")
        (self.out / "lambda_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
        (self.out / "kept_fraction.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\1" * 64)
        runs = self.out / "runs" / "run-lr1e-3-ep2"
        runs.mkdir(parents=True)
        (runs / "model.safetensors").write_bytes(b"not uploaded")
        seal_output_folder(self.out)  # what `hf-negmerge unlearn` writes last; push requires it
        self.fingerprint = _folder_fingerprint(self.out)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return Run(tmp_path_factory.mktemp("hub"))


def _card_data(**overrides) -> UnlearningCardData:
    return UnlearningCardData.from_metrics_json(METRICS, **overrides)


# -- model card ------------------------------------------------------------------------------------------------
def test_card_metadata_parses_back_with_huggingface_hub_and_carries_the_numbers(tmp_path: Path) -> None:
    path = write_model_card(_card_data(repo_id=REPO, plots=["lambda_curve.png"]), tmp_path)
    card = ModelCard.load(path)
    assert card.data.base_model == METRICS["base_model"]
    assert card.data.to_dict()["base_model_relation"] == "finetune"
    assert card.data.library_name == "transformers"
    assert {"machine-unlearning", "negmerge", "task-arithmetic"} <= set(card.data.tags)
    assert card.data.datasets == ["alice/digits"]

    parsed = {(r.dataset_args["role"], r.metric_type): r.metric_value for r in card.data.eval_results}
    expected = {
        ("forget", "accuracy"): METRICS["unlearned"]["forget_accuracy"],
        ("retain", "accuracy"): METRICS["unlearned"]["retain_accuracy"],
        ("test", "accuracy"): METRICS["unlearned"]["test_accuracy"],
        ("forget", "mia_efficacy"): METRICS["unlearned"]["mia_efficacy"],
    }
    assert parsed == expected

    # The lower-level parser agrees, and forget/retain (same dataset, same split) stay separate entries.
    metadata = metadata_load(path)
    model_name, results = model_index_to_eval_results(metadata["model-index"])
    assert model_name == "vit-unlearned"
    assert len(metadata["model-index"][0]["results"]) == 3  # forget (acc + MIA), retain, test
    splits = {r.dataset_split for r in results}
    assert len(splits) == 3 and all(r.dataset_type == "alice/digits" for r in results)


def test_card_body_documents_config_grid_curve_sparsity_and_limitations(tmp_path: Path) -> None:
    text = build_model_card(_card_data(plots=["lambda_curve.png"], config=NegMergeConfig())).text
    for run_id in ("run-lr1e-3-ep2", "run-lr3e-3-ep4"):
        assert run_id in text
    assert "![lambda_curve](lambda_curve.png)" in text
    assert "10.89% of the task-vector elements" in text
    assert "consensus_fraction: 1.0" in text  # the NegMergeConfig block
    assert "## Limitations" in text and "No certified removal" in text
    assert "Membership inference only as measured" in text
    assert "λ = 0.85" in text
    # Original vs unlearned numbers appear in the results table with their difference.
    assert "97.50" in text and "12.50" in text and "-85.00" in text


def test_card_tolerates_missing_optional_parts(tmp_path: Path) -> None:
    minimal = {
        "format_version": 1,
        "base_model": "org/base",
        "forget_dataset": "org/data",
        "unlearned": {"forget_accuracy": 30.0},
    }
    card = ModelCard.load(write_model_card(UnlearningCardData.from_metrics_json(minimal), tmp_path))
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("accuracy", 30.0)]
    assert "Membership inference was not measured" in card.text
    assert "Fine-tuning runs" not in card.text and "λ curve" not in card.text


def test_card_from_a_pipeline_style_metrics_file_without_a_hub_base_model(tmp_path: Path) -> None:
    metrics = {
        "format_version": 1,
        "method": "uniform",
        "scale": 0.4,
        "base_model": None,  # θ₀ built from a config: nothing on the Hub to link
        "architecture": "clip",
        "recipe": {"output_dir": "/home/alice/private/run", "seed": 0, "data": {"dataset": "digits"}},
        "forget_dataset": "digits",
        "control_dataset": None,
        "scenario": "class",
        "forget_classes": [3],
        "data": {"forget_classes": ["three"]},
        "original": {"forget_accuracy": 99.0, "retain_accuracy": 98.0, "test_accuracy": 98.1},
        "unlearned": {
            "forget_accuracy": 5.0,
            "retain_accuracy": 90.0,
            "test_accuracy": 81.0,
            "unlearn_accuracy": 95.0,
        },
        "retrain": {"forget_accuracy": 0.0, "retain_accuracy": 98.5, "test_accuracy": 88.0},
        "selection": {
            "qualified": False,
            "reason": "no λ kept retain ≥ 93.1; took the least retain drop",
            "point": {"scale": 0.4, "forget_accuracy": 6.0, "retain_accuracy": 91.0},
        },
        "kept_fraction": 0.2,
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    data = UnlearningCardData.from_metrics_json(tmp_path / "metrics.json")
    card = ModelCard.load(write_model_card(data, tmp_path))
    meta = card.data.to_dict()
    assert "base_model" not in meta and "base_model_relation" not in meta
    assert "datasets" not in meta  # "digits" is no namespaced Hub dataset id
    by_role = {r.dataset_args["role"]: r for r in card.data.eval_results}
    assert by_role["forget"].dataset_args["subset"] == "class three"
    assert by_role["retain"].dataset_args["subset"] == "the other classes"
    assert by_role["test"].metric_value == 81.0
    text = card.text
    assert "a model built from a config" in text and "averaged element by element" in text
    assert "**fallback rule**" in text and "Consensus sparsity" not in text  # sparsity is a negmerge notion
    assert "retrained without forget set" in text and "88.00" in text
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert "seed: 0" in text and "/home/alice" not in text  # the recipe, without local paths


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_name": " "}, "model_name is required"),
        ({"base_model": "/tmp/local/base"}, "Hub id"),
        ({"unlearned": {"forget_accuracy": "high"}}, "non-numeric"),
        ({"unlearned": {"loss": 1.0}}, "none of the reported metrics"),
        ({"kept_fraction": 1.5}, "kept_fraction"),
    ],
)
def test_card_data_rejects_bad_input_with_a_clear_message(change: dict, message: str) -> None:
    values = {
        "model_name": "m",
        "base_model": "org/base",
        "forget_set": DatasetRef("org/data"),
        "unlearned": {"forget_accuracy": 1.0},
        **change,
    }
    with pytest.raises(ConfigError, match=message):
        UnlearningCardData(**values)


def test_clip_output_gets_a_zero_shot_card(run: Run, tmp_path: Path) -> None:
    folder = tmp_path / "clip-run"
    shutil.copytree(run.out, folder)
    model_config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**model_config, "architectures": ["CLIPModel"]}))
    seal_output_folder(folder)
    staging = tmp_path / "staging"
    staging.mkdir()
    prepare_upload_folder(folder, staging, repo_id=REPO)
    card = ModelCard.load(staging / "README.md")
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert {r.task_type for r in card.data.eval_results} == {"zero-shot-image-classification"}
    assert f'repo = "{REPO}"' in card.text and "AutoModel.from_pretrained(repo)" in card.text


# -- sparse negation vector --------------------------------------------------------------------------------------
def test_sparse_vector_is_under_35_percent_of_dense_and_applies_exactly(run: Run, tmp_path: Path) -> None:
    zeros = 1 - run.merged.count_nonzero() / run.merged.numel()
    assert 0.85 < zeros < 0.95  # a realistic NegMerge vector

    dense_path = run.merged.save(tmp_path / "dense.safetensors")
    vector = NegationVector.from_task_vector(run.merged, SCALE, base_model=METRICS["base_model"])
    vector.save_pretrained(tmp_path / "sparse")
    sparse_bytes = (tmp_path / "sparse" / "negation_vector.safetensors").stat().st_size
    ratio = sparse_bytes / dense_path.stat().st_size
    print(f"sparse/dense file size: {ratio:.4f} at {zeros:.2%} zeros")
    assert ratio < 0.35

    loaded = NegationVector.from_pretrained(tmp_path / "sparse")
    assert loaded.scale == SCALE and loaded.base_model == METRICS["base_model"]
    sparse_result = loaded.apply_to(run.base_state)
    dense_result = run.merged.apply_to(run.base_state, scale=-SCALE)
    assert sparse_result.keys() == dense_result.keys()
    for key in dense_result:
        assert torch.equal(sparse_result[key], dense_result[key]), key
        # and both equal θ₀ − λ·τ computed directly
        expected = (
            run.base_state[key] - SCALE * run.merged.tensors[key] if key in run.merged.tensors else None
        )
        if expected is not None:
            torch.testing.assert_close(sparse_result[key], expected, rtol=0, atol=1e-7)


def test_vector_applied_to_a_live_model_gives_the_saved_unlearned_weights(run: Run, tmp_path: Path) -> None:
    NegationVector.from_task_vector(run.merged, SCALE).save_pretrained(tmp_path)
    model = _tiny_vit(seed=0)
    NegationVector.from_pretrained(tmp_path).apply_to(model)
    for key, tensor in checkpoint_state_dict(model).items():
        assert torch.equal(tensor, run.unlearned_state[key]), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.1, 0.5, 1.0])
def test_every_encoding_round_trips_bit_exactly_and_the_smallest_is_chosen(
    dtype: torch.dtype, density: float, tmp_path: Path
) -> None:
    generator = torch.Generator().manual_seed(7)
    values = torch.randn(37, 29, generator=generator).to(dtype)
    mask = torch.rand(37, 29, generator=generator) < density
    tensor = torch.where(mask, values, torch.zeros((), dtype=dtype))
    numel, nnz, size = tensor.numel(), int(mask.sum()), tensor.element_size()
    sizes = {"dense": numel * size, "bitmask": math.ceil(numel / 8) + nnz * size, "indices": nnz * (4 + size)}
    name, nbytes = choose_encoding(tensor)
    assert nbytes == min(sizes.values()) and sizes[name] == nbytes
    for encoding in ENCODINGS.values():
        decoded = encoding.decode(encoding.encode(tensor.reshape(-1)), numel, dtype)
        assert decoded.dtype == dtype and torch.equal(decoded.reshape(tensor.shape), tensor)
    NegationVector({"w": tensor}, scale=1.0).save_pretrained(tmp_path)
    assert torch.equal(NegationVector.from_pretrained(tmp_path).tensors["w"], tensor)


def test_float32_encoding_switches_with_density() -> None:
    generator = torch.Generator().manual_seed(3)
    values = torch.randn(4096, generator=generator)
    chosen = {
        density: choose_encoding(values * (torch.rand(4096, generator=generator) < density))[0]
        for density in (0.01, 0.1, 0.99)
    }
    assert chosen == {0.01: "indices", 0.1: "bitmask", 0.99: "dense"}


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 203])
def test_pack_bits_puts_element_i_in_bit_i_mod_8_of_byte_i_div_8(numel: int) -> None:
    mask = torch.rand(numel, generator=torch.Generator().manual_seed(numel)) < 0.4
    expected = [
        sum(int(mask[8 * byte + bit]) << bit for bit in range(8) if 8 * byte + bit < numel)
        for byte in range(math.ceil(numel / 8))
    ]
    assert pack_bits(mask).tolist() == expected
    assert torch.equal(unpack_bits(pack_bits(mask), numel), mask)


def test_corrupt_or_future_vector_files_are_rejected_by_name(run: Run, tmp_path: Path) -> None:
    vector = NegationVector.from_task_vector(run.merged, SCALE)
    vector.save_pretrained(tmp_path)
    config_path = tmp_path / "negation_vector_config.json"
    values = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**values, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version=99"):
        NegationVector.from_pretrained(tmp_path)
    config_path.write_text(json.dumps(values))

    from safetensors.torch import load_file, save_file

    weights = tmp_path / "negation_vector.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata()
    parts = load_file(weights)
    victim = next(key for key in parts if key.endswith("::values") and parts[key].numel() > 1)
    parts[victim] = parts[victim][:-1]
    save_file(parts, weights, metadata=metadata)
    with pytest.raises(CheckpointError, match=victim.split("::")[0]):
        NegationVector.from_pretrained(tmp_path)


def test_negation_vector_rejects_non_finite_scale_and_int_tensors() -> None:
    with pytest.raises(CheckpointError, match="finite"):
        NegationVector({"w": torch.ones(2)}, scale=float("nan"))
    with pytest.raises(CheckpointError, match="'ids'"):
        NegationVector({"ids": torch.arange(3)}, scale=1.0)


# -- push and load back through the stand-in ----------------------------------------------------------------------
def test_push_unlearned_model_uploads_the_folder_card_and_sparse_vector(run: Run, hub: HubStandIn) -> None:
    url = push_unlearned_model(run.out, REPO)
    repo = hub.repos[REPO]
    files = repo.files("main")
    assert url.endswith(repo.branches["main"])
    assert set(files) == {
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "negmerge_config.json",
        "metrics.json",
        "report.md",
        "lambda_curve.png",
        "kept_fraction.png",
        "negation_vector.safetensors",
        "negation_vector_config.json",
    }
    assert files["model.safetensors"] == (run.out / "model.safetensors").read_bytes()
    assert not repo.private and repo.commit_messages == [f"Upload NegMerge-unlearned model (λ={SCALE})"]
    card = files["README.md"].decode()
    assert "negation_vector.safetensors" in card and f'from_pretrained("{REPO}")' in card
    assert card.index("lambda_curve.png") < card.index("kept_fraction.png")  # λ curve first
    vector_config = json.loads(files["negation_vector_config.json"])
    assert vector_config["scale"] == SCALE and vector_config["base_model"] == METRICS["base_model"]
    assert vector_config["negmerge_config"] == NegMergeConfig().to_dict()

    # The token authenticated every write, and was stored nowhere.
    writes = [r for r in hub.requests if r.method == "POST"]
    assert writes and all(r.headers.get("authorization") == f"Bearer {SECRET}" for r in writes)
    assert SECRET.encode() not in hub.all_stored_bytes()
    assert _folder_fingerprint(run.out) == run.fingerprint  # the local folder is untouched


def test_pushed_repo_loads_back_with_from_pretrained(run: Run, hub: HubStandIn) -> None:
    push_unlearned_model(run.out, REPO)
    vector = NegationVector.from_pretrained(REPO)
    assert vector.scale == SCALE
    for key, tensor in run.merged.tensors.items():
        assert torch.equal(vector.tensors[key], tensor), key
    assert NegMergeConfig.from_pretrained(REPO) == NegMergeConfig()

    model = AutoModelForImageClassification.from_pretrained(REPO)
    for key, tensor in checkpoint_state_dict(model).items():
        assert torch.equal(tensor, run.unlearned_state[key]), key
    folder = resolve_folder(REPO)
    assert ModelCard.load(folder / "README.md").data.base_model == METRICS["base_model"]


def test_push_config_and_vector_to_a_branch_with_an_explicit_token(run: Run, hub: HubStandIn) -> None:
    config = NegMergeConfig(consensus_fraction=0.8, lambda_grid=[0.0, 0.5, 1.0])
    push_config(config, "alice/configs", private=True, token=EXPLICIT_SECRET)
    assert hub.repos["alice/configs"].private
    assert NegMergeConfig.from_pretrained("alice/configs") == config

    vector = NegationVector.from_task_vector(run.merged, 0.4, base_model="alice/vit-tiny-digits")
    vector.push_to_hub("alice/configs", revision="experiment", token=EXPLICIT_SECRET)
    assert "negation_vector.safetensors" in hub.repos["alice/configs"].files("experiment")
    assert "negation_vector.safetensors" not in hub.repos["alice/configs"].files("main")
    assert NegationVector.from_pretrained("alice/configs", revision="experiment").scale == 0.4

    posts = [r for r in hub.requests if r.method == "POST"]
    assert all(r.headers.get("authorization") == f"Bearer {EXPLICIT_SECRET}" for r in posts)
    assert EXPLICIT_SECRET.encode() not in hub.all_stored_bytes()


def test_cli_push_to_a_branch_without_the_vector(
    run: Run, hub: HubStandIn, capsys: pytest.CaptureFixture
) -> None:
    argv = ["push", str(run.out), "--repo-id", REPO, "--revision", "v1", "--no-vector", "--private"]
    assert cli_main([*argv, "--commit-message", "first release"]) == 0
    repo = hub.repos[REPO]
    assert repo.private and repo.commit_messages == ["first release"]
    files = repo.files("v1")
    assert "model.safetensors" in files and "negation_vector.safetensors" not in files
    assert "negation_vector.safetensors" not in files["README.md"].decode()
    assert repo.files("main").keys() == {".gitattributes"}
    assert REPO in capsys.readouterr().out


def test_cli_dry_run_lists_the_upload_without_contacting_the_hub(
    run: Run, hub: HubStandIn, capsys: pytest.CaptureFixture
) -> None:
    assert cli_main(["push", str(run.out), "--repo-id", REPO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "negation_vector.safetensors" in out and "README.md" in out
    assert "merged_task_vector.safetensors" not in out and "runs" not in out
    assert hub.requests == []


def test_push_needs_metrics_and_a_hub_base_model(run: Run, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json"):
        prepare_upload_folder(tmp_path, tmp_path / "staging")
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(ConfigError, match="Hub id"):
        prepare_upload_folder(run.out, staging, base_model="./local/base")
    with pytest.warns(BaseModelNotCheckedWarning, match="'bob/other-base' was not checked"):
        names = prepare_upload_folder(run.out, staging, base_model="bob/other-base")  # offline, not cached
    assert "bob/other-base" in (staging / "README.md").read_text()
    assert "merged_task_vector.safetensors" not in names


def test_download_file_fetches_one_file_or_names_the_missing_one(hub: HubStandIn) -> None:
    push_config(NegMergeConfig(retain_ratio=0.9), "alice/configs")
    path = download_file("alice/configs", "negmerge_config.json")
    assert json.loads(path.read_text())["retain_ratio"] == 0.9
    with pytest.raises(CheckpointError, match=r"'alice/configs' has no file missing\.json"):
        download_file("alice/configs", "missing.json")


def test_a_rejected_token_is_reported_without_being_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HubStandIn(required_token=SECRET) as strict_hub:
        _point_hub_at(monkeypatch, strict_hub.url, tmp_path / "hf-cache")
        with pytest.raises(HubUnavailableError, match="401") as raised:
            push_config(NegMergeConfig(), REPO, token=EXPLICIT_SECRET)
        assert REPO in str(raised.value) and EXPLICIT_SECRET not in str(raised.value)
        assert REPO not in strict_hub.repos
        push_config(NegMergeConfig(), REPO)  # HF_TOKEN (the usual mechanism) is accepted
        assert REPO in strict_hub.repos
        assert SECRET.encode() not in strict_hub.all_stored_bytes()


# -- offline ------------------------------------------------------------------------------------------------------
def test_unreachable_hub_raises_a_clear_error_and_keeps_local_files(run: Run, unreachable_hub: str) -> None:
    with pytest.raises(HubUnavailableError) as raised:
        push_unlearned_model(run.out, REPO, token=EXPLICIT_SECRET)
    message = str(raised.value)
    assert REPO in message and unreachable_hub in message and "unreachable" in message
    assert f"{run.out} is unchanged" in message
    assert SECRET not in message and EXPLICIT_SECRET not in message
    assert _folder_fingerprint(run.out) == run.fingerprint
    assert not any(
        p.name.startswith(".run-output.push-") for p in run.out.parent.iterdir()
    )  # staging cleaned

    with pytest.raises(HubUnavailableError, match=REPO):
        NegationVector.from_pretrained(REPO)


def test_offline_mode_fails_fast_and_the_cli_says_why(
    run: Run, unreachable_hub: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        push_config(NegMergeConfig(), REPO)
    assert cli_main(["push", str(run.out), "--repo-id", REPO]) == 2
    err = capsys.readouterr().err
    assert REPO in err and "HF_HUB_OFFLINE" in err and SECRET not in err
    assert _folder_fingerprint(run.out) == run.fingerprint


def test_resolve_folder_rejects_names_that_are_neither_folder_nor_repo(tmp_path: Path) -> None:
    assert resolve_folder(tmp_path) == tmp_path
    with pytest.raises(CheckpointError, match="neither a local folder"):
        resolve_folder("./no/such/folder")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="neither a local folder"):
        resolve_folder(tmp_path / "file.txt")


def test_merge_config_push_to_hub_through_the_mixin(hub: HubStandIn) -> None:
    """`push_to_hub` is huggingface_hub's ModelHubMixin's: save_pretrained into a temp folder, upload."""
    from hf_negmerge.config import MergeConfig

    config = MergeConfig(method="ties", density=0.5, exclude=["*.bias"])
    config.push_to_hub("alice/merge-config")
    assert MergeConfig.from_pretrained("alice/merge-config") == config
    uploaded = set(hub.repos["alice/merge-config"].files()) - {".gitattributes"}  # made with the repo
    assert uploaded == {"negmerge_config.json"}  # no model card, no config.json
