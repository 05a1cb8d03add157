"""Two real CPU processes (torchrun, gloo) split a grid and merge exactly what one process merges.

Run as a script, this file is the worker that `torchrun` starts on every rank.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

FAST = {"epochs": 1, "warmup_steps": 0, "batch_size": 32, "learning_rate": 1e-3, "weight_decay": 0.0}
GRID = {"seed": [0, 1, 2, 3]}


def _data():
    from hf_negmerge.data import DataConfig, build_unlearning_data

    return build_unlearning_data(DataConfig(dataset="digits", scenario="class", forget_classes=[3]))


def _spec():
    from hf_negmerge.training.grid import GridSpec

    return GridSpec(base=FAST, axes=GRID)


def worker(base_dir: Path, output: Path) -> None:
    """One rank: a sharded 4-point grid, then a 1-point grid trained with DDP across both ranks."""
    from accelerate import Accelerator

    from hf_negmerge.config import NegMergeConfig
    from hf_negmerge.errors import ConfigError
    from hf_negmerge.training.grid import GridSpec
    from hf_negmerge.training.runner import run_grid

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    data = _data()
    sharded = run_grid(base_dir, data, _spec(), output / "sharded", accelerator=accelerator, progress=False)
    try:  # a refused resume must fail on every rank, not leave the others waiting at a barrier
        run_grid(
            base_dir,
            data,
            _spec(),
            output / "sharded",
            NegMergeConfig(method="uniform"),
            accelerator=accelerator,
        )
        refused = ""
    except ConfigError as error:
        refused = str(error)
    single = GridSpec(base={**FAST, "seed": 7}).expand()
    ddp = run_grid(
        base_dir, data, single, output / "ddp", accelerator=accelerator, shard=False, progress=False
    )
    # DDP directly through the loop: gradients are all-reduced, so every rank ends identical.
    from hf_negmerge.models import ImageClassifier
    from hf_negmerge.training.loop import finetune

    tuned = finetune(
        ImageClassifier.from_pretrained(base_dir), data.forget_train, single[0].hyperparameters, accelerator
    )
    report = {
        "world": accelerator.num_processes,
        "refused": refused,
        "ddp_weights": [float(p.detach().double().sum()) for p in tuned.model.parameters()],
        "trained": sharded.trained,
        "sharded_norm": sharded.task_vector.norm(),
        "ddp_norm": ddp.task_vector.norm(),
    }
    (output / f"rank{accelerator.process_index}.json").write_text(json.dumps(report))
    accelerator.free_memory()
    accelerator.end_training()  # destroy the gloo process group before interpreter exit


@pytest.mark.slow
def test_two_processes_split_the_grid_and_match_one_process(tmp_path):
    from hf_negmerge.models import ModelConfig, build_classifier
    from hf_negmerge.task_vector import TaskVector
    from hf_negmerge.training.runner import run_grid

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    data = _data()
    base_dir = tmp_path / "original"
    build_classifier(ModelConfig(architecture="vit"), data.class_names).save_pretrained(base_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [torchrun, "--standalone", "--nproc_per_node", "2", __file__, str(base_dir), str(tmp_path)]
    launched = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same float reduction order as the workers
    try:
        reference = run_grid(base_dir, data, _spec(), tmp_path / "one_process", progress=False)  # meanwhile
    finally:
        torch.set_num_threads(threads)
    output, _ = launched.communicate(timeout=300)
    assert launched.returncode == 0, output[-4000:]

    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2]
    ids = sorted(p.id for p in _spec().expand())
    assert reports[0]["trained"] == reports[1]["trained"] == ids
    assert all("different merge config" in r["refused"] for r in reports)
    assert reports[0]["sharded_norm"] == reports[1]["sharded_norm"]  # every rank returns the same merge
    assert reports[0]["ddp_norm"] == reports[1]["ddp_norm"] > 0
    assert reports[0]["ddp_weights"] == reports[1]["ddp_weights"]
    initial = [
        float(p.detach().double().sum())
        for p in build_classifier(ModelConfig(architecture="vit"), data.class_names).model.parameters()
    ]
    assert reports[0]["ddp_weights"] != initial
    trained_by = {
        json.loads((tmp_path / "sharded" / "runs" / run_id / "run.json").read_text())["process_index"]
        for run_id in ids
    }
    assert trained_by == {0, 1}  # the work was really split

    merged = TaskVector.load(tmp_path / "sharded" / "merged_task_vector.safetensors")
    assert merged.keys() == reference.task_vector.keys()
    for key in merged:  # folding order differs (sorted ids vs grid order): equal up to float rounding
        torch.testing.assert_close(merged[key], reference.task_vector[key], rtol=1e-5, atol=1e-6)
    assert (tmp_path / "ddp" / "runs").is_dir() and len(list((tmp_path / "ddp" / "runs").iterdir())) == 1


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
