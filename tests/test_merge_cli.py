"""`hf-negmerge merge` end to end on tiny real models saved to disk, and its failure modes."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import CLIPModel, ViTForImageClassification

from conftest import make_tiny_clip, make_tiny_vit
from hf_negmerge import CheckpointReader, TaskVector
from hf_negmerge.cli import main
from hf_negmerge.key_space import checkpoint_state_dict


def finetune_like(model, seed: int, prefix: str = "", scale: float = 0.02):
    """A copy whose parameters under `prefix` moved by a shared direction plus per-run noise."""
    tuned = copy.deepcopy(model)
    shared = torch.Generator().manual_seed(1234)
    own = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in tuned.named_parameters():
            if name.startswith(prefix):
                direction = torch.randn(parameter.shape, generator=shared)
                parameter.add_(scale * (direction + 0.8 * torch.randn(parameter.shape, generator=own)))
    return tuned


def expected_negmerge(base_sd, tuned_sds):
    """θ-space reference computed directly from the definition (float64)."""
    out = {}
    for key, base in base_sd.items():
        if not base.is_floating_point():
            continue
        deltas = torch.stack([sd[key].double() - base.double() for sd in tuned_sds])
        signs = deltas.sign()
        unanimous = signs.sum(0).abs() == len(tuned_sds)
        out[key] = torch.where(unanimous, deltas.mean(0), torch.zeros((), dtype=torch.float64))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cli_merges_sharded_clip_checkpoints_and_writes_loadable_unlearned_model(tmp_path, dtype):
    base = make_tiny_clip(seed=0).to(dtype)
    base.save_pretrained(tmp_path / "base", max_shard_size="40KB")
    assert (tmp_path / "base" / "model.safetensors.index.json").exists()
    folders = []
    for seed in range(3):
        tuned = finetune_like(base.float(), seed, prefix="vision_model.").to(dtype)
        tuned.save_pretrained(tmp_path / f"ft{seed}", max_shard_size="40KB")
        folders.append(str(tmp_path / f"ft{seed}"))
    scale = 0.6
    code = main(
        [
            "merge",
            "--base",
            str(tmp_path / "base"),
            "--finetuned",
            *folders,
            "--out",
            str(tmp_path / "out"),
            "--scale",
            str(scale),
            "--include",
            "vision_model.*",
            "--no-progress",
        ]
    )
    assert code == 0
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {
        "merged_task_vector.safetensors",
        "negmerge_config.json",
        "merge_stats.json",
        "unlearned_model",
    }
    base_sd = dict(CheckpointReader(tmp_path / "base"))
    tuned_sds = [dict(CheckpointReader(folder)) for folder in folders]
    vision = {k: v for k, v in base_sd.items() if k.startswith("vision_model.")}
    reference = expected_negmerge(vision, tuned_sds)
    merged = TaskVector.load(out / "merged_task_vector.safetensors")
    assert set(merged.keys()) == set(reference)
    for key, value in reference.items():
        torch.testing.assert_close(merged[key].double(), value, rtol=1e-6, atol=1e-7)
        assert torch.equal(merged[key] != 0, value != 0)
    stats = json.loads((out / "merge_stats.json").read_text())
    kept = sum(int((v != 0).sum()) for v in reference.values())
    assert stats["kept"] == kept and 0 < stats["kept_fraction"] < 1

    reloaded = CLIPModel.from_pretrained(out / "unlearned_model", dtype=dtype)
    got = checkpoint_state_dict(reloaded)
    for key, base_value in base_sd.items():
        if key in reference:
            expected = (base_value.double() - scale * reference[key]).to(dtype)
            assert torch.equal(got[key], expected) or torch.allclose(
                got[key].double(), expected.double(), atol=1e-6 if dtype == torch.float32 else 1e-2
            ), key
        else:  # text tower and every non-float tensor untouched
            assert torch.equal(got[key], base_value), key


def test_cli_vit_unlearned_model_equals_theta0_minus_lambda_tau(tmp_path):
    base = make_tiny_vit()
    base.save_pretrained(tmp_path / "base")
    folders = []
    for seed in range(4):
        finetune_like(base, seed).save_pretrained(tmp_path / f"ft{seed}")
        folders.append(str(tmp_path / f"ft{seed}"))
    assert (
        main(
            [
                "merge",
                "--base",
                str(tmp_path / "base"),
                "--finetuned",
                *folders,
                "--method",
                "uniform",
                "--out",
                str(tmp_path / "out"),
                "--scale",
                "1.0",
                "--no-progress",
            ]
        )
        == 0
    )
    tau = TaskVector.load(tmp_path / "out" / "merged_task_vector.safetensors")
    model = ViTForImageClassification.from_pretrained(tmp_path / "out" / "unlearned_model")
    expected = tau.apply_to(checkpoint_state_dict(base), scale=-1.0)
    got = checkpoint_state_dict(model)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value)
    uniform = torch.stack(
        [CheckpointReader(f)["classifier.weight"] - base.classifier.weight.detach() for f in folders]
    ).mean(0)
    torch.testing.assert_close(tau["classifier.weight"], uniform)


@pytest.fixture
def two_vit_runs(tmp_path):
    base = make_tiny_vit()
    base.save_pretrained(tmp_path / "base")
    for seed in range(2):
        finetune_like(base, seed).save_pretrained(tmp_path / f"ft{seed}")
    return tmp_path


def _merge(root, *folders, extra=()):
    return main(
        [
            "merge",
            "--base",
            str(root / "base"),
            "--finetuned",
            *map(str, folders),
            "--out",
            str(root / "out"),
            "--no-progress",
            *extra,
        ]
    )


def _no_output_left(root):
    return not (root / "out").exists() and not list(root.glob(".out.tmp-*"))


def test_mismatched_architecture_names_file_and_key(two_vit_runs, capsys):
    root = two_vit_runs
    make_tiny_vit(num_labels=3).save_pretrained(root / "other")
    assert _merge(root, root / "ft0", root / "other") == 2
    err = capsys.readouterr().err
    assert "classifier." in err and "other" in err and "shape" in err
    assert _no_output_left(root)


def test_missing_key_is_named(two_vit_runs, capsys):
    root = two_vit_runs
    reader = dict(CheckpointReader(root / "ft1"))
    reader.pop("classifier.bias")
    from safetensors.torch import save_file

    (root / "cut").mkdir()
    save_file(reader, root / "cut" / "model.safetensors")
    assert _merge(root, root / "ft0", root / "cut") == 2
    assert "'classifier.bias'" in capsys.readouterr().err
    assert _no_output_left(root)


def test_missing_and_corrupt_files(two_vit_runs, capsys):
    root = two_vit_runs
    assert _merge(root, root / "ft0", root / "nowhere") == 2
    assert "nowhere" in capsys.readouterr().err
    (root / "broken").mkdir()
    data = (root / "ft1" / "model.safetensors").read_bytes()
    (root / "broken" / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert _merge(root, root / "ft0", root / "broken") == 2
    err = capsys.readouterr().err
    assert "broken" in err and ("truncated" in err or "corrupt" in err)
    (root / "garbage").mkdir()
    (root / "garbage" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    assert _merge(root, root / "ft0", root / "garbage") == 2
    assert "corrupt safetensors header" in capsys.readouterr().err
    assert _no_output_left(root)


def test_nan_in_a_checkpoint_is_named_and_nothing_is_written(two_vit_runs, capsys):
    root = two_vit_runs
    state = dict(CheckpointReader(root / "ft1"))
    key = sorted(state)[-1]  # the last tensor: the merge is mostly done when it fails
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("inf")
    from safetensors.torch import save_file

    (root / "nan").mkdir()
    save_file(state, root / "nan" / "model.safetensors")
    assert _merge(root, root / "ft0", root / "nan") == 2
    err = capsys.readouterr().err
    assert f"'{key}'" in err and "NaN or Inf" in err and "nan" in err
    assert _no_output_left(root)


def test_fewer_models_than_the_method_needs(two_vit_runs, capsys):
    root = two_vit_runs
    assert _merge(root, root / "ft0", root / "ft1", extra=("--method", "task_arithmetic")) == 2
    assert "at most 1" in capsys.readouterr().err


def test_existing_output_is_kept_without_overwrite(two_vit_runs, capsys):
    root = two_vit_runs
    (root / "out").mkdir()
    (root / "out" / "keep.txt").write_text("mine")
    assert _merge(root, root / "ft0", root / "ft1") == 2
    assert (root / "out" / "keep.txt").read_text() == "mine"
    # --overwrite replaces only an earlier merge output, never a folder the tool did not write
    assert _merge(root, root / "ft0", root / "ft1", extra=("--overwrite",)) == 2
    assert "not written by hf-negmerge" in capsys.readouterr().err
    assert (root / "out" / "keep.txt").read_text() == "mine"
    (root / "out" / "keep.txt").unlink()
    assert _merge(root, root / "ft0", root / "ft1") == 2  # empty now, but exists: still needs --overwrite
    assert _merge(root, root / "ft0", root / "ft1", extra=("--overwrite",)) == 0
    first = (root / "out" / "merged_task_vector.safetensors").read_bytes()
    assert _merge(root, root / "ft1", root / "ft0", extra=("--overwrite",)) == 0
    assert (root / "out" / "merged_task_vector.safetensors").read_bytes() != first  # metadata names the order


def test_interrupt_mid_merge_leaves_no_output(two_vit_runs, monkeypatch):
    root = two_vit_runs
    import importlib

    unlearn_module = importlib.import_module("hf_negmerge.negation")

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(unlearn_module, "write_unlearned_checkpoint", explode)
    assert _merge(root, root / "ft0", root / "ft1", extra=("--scale", "0.5")) == 130
    assert _no_output_left(root)
