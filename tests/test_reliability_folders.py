"""What a folder holds (model weights, a task vector, a merge output, an adapter), told by content.

Table-driven like tests/test_reliability_merge.py: each case sets up folders next to a base and
two fine-tuned runs, calls the CLI in-process, as a subprocess, or the Python API, and states the
exit code (API: 2 = a NegMergeError was raised), a fragment of the message, and the files that
must stay byte-identical (by default every file present before the call). The valid counterparts
succeed and are checked against the merge computed here from the tensors as loaded.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_tiny_vit
from hf_negmerge import CheckpointReader, TaskVector, merge_task_vectors
from hf_negmerge.cli import main
from hf_negmerge.errors import CheckpointError
from hf_negmerge.key_space import checkpoint_state_dict
from hf_negmerge.merging import merge_checkpoints
from test_reliability_merge import (
    Case,
    Env,
    invoke_checked,
    merge_argv,
    negmerge_reference,
    perturbed,
    staging_left,
)

WEIGHTS = "model.safetensors"
KEY = "vit.encoder.layer.0.attention.attention.query.weight"


@pytest.fixture(scope="module")
def folders_prototype(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folders")
    base = make_tiny_vit()
    base.save_pretrained(root / "base")
    for seed in range(2):
        perturbed(base, seed).save_pretrained(root / f"ft{seed}")
    return root


# -- helpers --------------------------------------------------------------------------------------


def weights(env: Env, folder: str) -> dict[str, torch.Tensor]:
    return load_file(env.root / folder / WEIGHTS)


def rewrite(folder: str, change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Env], None]:
    """Change a folder's model.safetensors in place (before the snapshot)."""

    def setup(env: Env) -> None:
        tensors = weights(env, folder)
        change(tensors)
        save_file(tensors, env.root / folder / WEIGHTS, metadata={"format": "pt"})

    return setup


def as_dtype(key: str, dtype: torch.dtype) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[key] = (tensors[key] * 100).to(dtype)

    return change


def add_tensor(key: str, value: torch.Tensor) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[key] = value.clone()

    return change


def in_turn(*steps: Callable[[Env], None]) -> Callable[[Env], None]:
    """Several setups (or checks) as one."""

    def run(env: Env) -> None:
        for step in steps:
            step(env)

    return run


def grid_runs(env: Env) -> None:
    """Run folders as `hf-negmerge unlearn` leaves them: params, record, and task_vector.safetensors."""
    for seed in range(2):
        run = env.root / f"tv{seed}"
        run.mkdir()
        TaskVector.from_checkpoints(env.root / "base", env.root / f"ft{seed}").save(
            run / "task_vector.safetensors"
        )
        (run / "params.json").write_text(json.dumps({"id": f"tv{seed}", "learning_rate": 1e-5}))
        (run / "run.json").write_text(json.dumps({"id": f"tv{seed}"}))


def renamed_task_vector(env: Env) -> None:
    grid_runs(env)
    os.replace(env.root / "tv1" / "task_vector.safetensors", env.root / "tv1" / WEIGHTS)


def earlier_output(*extra: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        assert main(merge_argv(env, out="out0", extra=extra)) == 0

    return setup


def grid_output(env: Env) -> None:
    """A grid's output folder: accumulator state and merged vector side by side."""
    from hf_negmerge.merging import MergeAccumulator

    accumulator = MergeAccumulator()
    for seed in range(2):
        accumulator.add(TaskVector.from_checkpoints(env.root / "base", env.root / f"ft{seed}"))
    (env.root / "grid").mkdir()
    accumulator.save(env.root / "grid" / "accumulator.safetensors")
    accumulator.result().task_vector.save(env.root / "grid" / "merged_task_vector.safetensors")


def copy_run(source: str, name: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        shutil.copytree(env.root / source, env.root / name)

    return setup


def linked_run(source: str, name: str, link: Callable[[Path, Path], None]) -> Callable[[Env], None]:
    """A run folder whose weight file is `source`'s, through `link(target, new)`."""

    def setup(env: Env) -> None:
        (env.root / name).mkdir()
        shutil.copy(env.root / source / "config.json", env.root / name / "config.json")
        link(env.root / source / WEIGHTS, env.root / name / WEIGHTS)

    return setup


def hard_link(target: Path, new: Path) -> None:
    os.link(target, new)


def soft_link(target: Path, new: Path) -> None:
    new.symlink_to(target)


def shard_index(folder: str, weight_map: object, shards_from: str | None = None) -> Callable[[Env], None]:
    """`folder` made sharded: its weights moved into shard files named by `weight_map` (a dict of
    key -> shard name, or any JSON value written as it is)."""

    def setup(env: Env) -> None:
        path = env.root / folder
        index = {"metadata": {}, "weight_map": weight_map}
        if isinstance(weight_map, dict) and shards_from is None:
            tensors = weights(env, folder)
            keys = sorted(tensors)
            halves = {
                "model-00001-of-00002.safetensors": keys[::2],
                "model-00002-of-00002.safetensors": keys[1::2],
            }
            for name, part in halves.items():
                save_file({key: tensors[key] for key in part}, path / name, metadata={"format": "pt"})
            index["weight_map"] = {key: name for name, part in halves.items() for key in part}
            (path / WEIGHTS).unlink()
        elif isinstance(weight_map, dict):
            index["weight_map"] = dict.fromkeys(weights(env, folder), shards_from)
            (path / WEIGHTS).unlink()
        (path / "model.safetensors.index.json").write_text(json.dumps(index))

    return setup


def shards_beside_single(env: Env) -> None:
    """ft1 holds model.safetensors (its own weights) and, beside it, ft0's weights as shards."""
    tensors = weights(env, "ft0")
    keys = sorted(tensors)
    path = env.root / "ft1"
    save_file(
        {key: tensors[key] for key in keys},
        path / "model-00001-of-00001.safetensors",
        metadata={"format": "pt"},
    )
    index = {"metadata": {}, "weight_map": dict.fromkeys(keys, "model-00001-of-00001.safetensors")}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def loose_files(env: Env) -> None:
    path = env.root / "ft1"
    tensors = weights(env, "ft1")
    keys = sorted(tensors)
    save_file({key: tensors[key] for key in keys[::2]}, path / "part-a.safetensors")
    save_file({key: tensors[key] for key in keys[1::2]}, path / "part-b.safetensors")
    (path / WEIGHTS).unlink()


class RunsCode:
    """A pickled object whose loading would run a shell command (what weights_only=True blocks)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def pickle_only(env: Env) -> None:
    path = env.root / "ft1"
    state = {key: value for key, value in weights(env, "ft1").items()}
    torch.save({**state, "hook": RunsCode(env.root / "code-ran")}, path / "pytorch_model.bin")
    (path / WEIGHTS).unlink()


def check_no_code_ran(env: Env) -> None:
    assert not (env.root / "code-ran").exists()


def symlink_loop(env: Env) -> None:
    (env.root / "loop").symlink_to("loop")


def adapter_folder(env: Env) -> None:
    path = env.root / "lora"
    path.mkdir()
    config = {"peft_type": "LORA", "r": 4, "base_model_name_or_path": str(env.root / "base")}
    (path / "adapter_config.json").write_text(json.dumps(config))
    save_file({"base_model.model.q.lora_A.weight": torch.zeros(4, 32)}, path / "adapter_model.safetensors")


def base_config(text: str | None) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        path = env.root / "base" / "config.json"
        if text is None:
            path.unlink()
        else:
            path.write_text(text)

    return setup


def state_of(folder: Path) -> dict[str, torch.Tensor]:
    """A folder's tensors as transformers picks them: model.safetensors, else the shards it indexes."""
    if (folder / WEIGHTS).is_file():
        return load_file(folder / WEIGHTS)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return {key: load_file(folder / name)[key] for key, name in index["weight_map"].items()}


def check_merge(
    runs: tuple[str, ...] = ("ft0", "ft1"), out: str = "out", base: str = "base"
) -> Callable[[Env], None]:
    """The merged vector equals the unanimous-sign mean computed here from the loaded tensors."""

    def check(env: Env) -> None:
        merged = TaskVector.load(env.root / out / "merged_task_vector.safetensors")
        base_state = state_of(env.root / base)
        tuned = [state_of(env.root / run) for run in runs]
        float_keys = sorted(key for key, value in base_state.items() if value.is_floating_point())
        assert sorted(merged.keys()) == float_keys
        for key in float_keys:
            torch.testing.assert_close(merged[key].double(), negmerge_reference(base_state, tuned, key))

    return check


def check_unlearned_keeps(key: str, value: torch.Tensor) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        written = load_file(env.root / "out" / "unlearned_model" / WEIGHTS)
        assert written[key].dtype == value.dtype
        assert torch.equal(written[key], value)

    return check


def remerge_task_vectors(env: Env) -> None:
    """The documented way to merge a grid's runs again; stored for the check."""
    runs = [env.root / f"tv{seed}" / "task_vector.safetensors" for seed in range(2)]
    env.state["merged"] = merge_task_vectors(TaskVector.load(path) for path in runs).task_vector


def check_remerge(env: Env) -> None:
    base_state = state_of(env.root / "base")
    tuned = [state_of(env.root / f"ft{seed}") for seed in range(2)]
    merged = env.state["merged"]
    assert sorted(merged.keys()) == sorted(
        key for key, value in base_state.items() if value.is_floating_point()
    )
    for key in merged:
        torch.testing.assert_close(merged[key].double(), negmerge_reference(base_state, tuned, key))


POSITION_IDS = torch.arange(8, dtype=torch.int64)
NESTED = "[" * 100_000 + "]" * 100_000
SCALE = ("--scale", "0.5")

CASES: list[Case] = [
    # 1. task-vector folders (how `unlearn` leaves its grid runs) are not fine-tuned models
    Case(
        "task-vector-runs",
        lambda e: merge_argv(e, "tv0", "tv1"),
        2,
        "is a task vector saved by hf-negmerge",
        grid_runs,
    ),
    Case(
        "task-vector-runs-subprocess",
        lambda e: merge_argv(e, "tv0", "tv1"),
        2,
        "merge_task_vectors((TaskVector.load(p) for p in runs), NegMergeConfig.from_pretrained(output_dir))",
        grid_runs,
        kind="subprocess",
    ),
    Case(
        "task-vector-renamed-to-weights",
        lambda e: merge_argv(e, "ft0", "tv1"),
        2,
        "tv1/model.safetensors is a task vector",
        renamed_task_vector,
    ),
    Case(
        "task-vector-runs-api",
        lambda e: merge_checkpoints(e.root / "base", [e.root / "tv0", e.root / "tv1"], progress=False),
        2,
        "is a task vector saved by hf-negmerge",
        grid_runs,
        kind="api",
        error=CheckpointError,
    ),
    Case(
        "task-vector-file-api",
        lambda e: TaskVector.from_checkpoints(e.root / "base", e.root / "tv0" / "task_vector.safetensors"),
        2,
        "task_vector.safetensors is a task vector saved by hf-negmerge",
        grid_runs,
        kind="api",
        error=CheckpointError,
    ),
    Case(
        "task-vectors-merged-again", remerge_task_vectors, 0, setup=grid_runs, kind="api", check=check_remerge
    ),
    # 2. a merge output (or a grid's output) is not a run
    Case(
        "merge-output-as-run",
        lambda e: merge_argv(e, "out0", "ft1"),
        2,
        "merged task vector of an hf-negmerge merge output",
        earlier_output(),
    ),
    Case(
        "grid-output-as-run",
        lambda e: merge_argv(e, "grid", "ft1"),
        2,
        "saved state of a merge accumulator",
        grid_output,
    ),
    Case(
        "unlearned-model-of-an-output-as-run",
        lambda e: merge_argv(e, "out0/unlearned_model", "ft1"),
        0,
        setup=earlier_output(*SCALE),
        check=check_merge(("out0/unlearned_model", "ft1")),
    ),
    # 3. integer (quantized) weights where float weights belong; integer buffers pass through
    *(
        Case(
            f"run-{name}-weight",
            lambda e: merge_argv(e),
            2,
            f"ft1/model.safetensors: tensor '{KEY}' has dtype {name}",
            rewrite("ft1", as_dtype(KEY, dtype)),
        )
        for name, dtype in (
            ("int8", torch.int8),
            ("int16", torch.int16),
            ("int32", torch.int32),
            ("uint8", torch.uint8),
        )
    ),
    Case(
        "base-int8-weight",
        lambda e: merge_argv(e),
        2,
        f"base/model.safetensors: tensor '{KEY}' has dtype int8",
        rewrite("base", as_dtype(KEY, torch.int8)),
    ),
    Case(
        "run-int8-weight-api",
        lambda e: TaskVector.from_checkpoints(e.root / "base", e.root / "ft1"),
        2,
        f"tensor '{KEY}' has dtype int8",
        rewrite("ft1", as_dtype(KEY, torch.int8)),
        kind="api",
        error=CheckpointError,
    ),
    Case(
        "int64-buffer-passes-through",
        lambda e: merge_argv(e, extra=SCALE),
        0,
        setup=in_turn(
            *(
                rewrite(name, add_tensor("vit.embeddings.position_ids", POSITION_IDS))
                for name in ("base", "ft0", "ft1")
            )
        ),
        check=in_turn(check_merge(), check_unlearned_keeps("vit.embeddings.position_ids", POSITION_IDS)),
    ),
    # 4. one checkpoint given twice under two names
    Case(
        "hard-linked-runs",
        lambda e: merge_argv(e, "ft0", "ft2"),
        2,
        "share the weight file",
        linked_run("ft0", "ft2", hard_link),
    ),
    Case(
        "symlinked-weight-file",
        lambda e: merge_argv(e, "ft0", "ft2"),
        2,
        "share the weight file",
        linked_run("ft0", "ft2", soft_link),
    ),
    Case(
        "copied-run",
        lambda e: merge_argv(e, "ft0", "ft1", "ft2"),
        2,
        "holds the same weights, byte for byte, as the fine-tuned run",
        copy_run("ft0", "ft2"),
    ),
    Case(
        "copied-base-as-run",
        lambda e: merge_argv(e, "ft0", "copy"),
        2,
        "as the base",
        copy_run("base", "copy"),
    ),
    Case(
        "index-into-other-run",
        lambda e: merge_argv(e, "ft0", "ft1"),
        2,
        "'../ft0/model.safetensors' points outside the checkpoint folder",
        shard_index("ft1", {}, shards_from="../ft0/model.safetensors"),
    ),
    Case("two-distinct-runs", lambda e: merge_argv(e), 0, check=check_merge()),
    # 5. shard indexes that read outside the folder or are malformed
    Case(
        "index-absolute-path",
        lambda e: merge_argv(e),
        2,
        "model.safetensors.index.json: weight_map['",
        lambda e: shard_index("ft1", {}, shards_from=str(e.root / "ft0" / WEIGHTS))(e),
    ),
    Case(
        "index-weight-map-list",
        lambda e: merge_argv(e),
        2,
        "'weight_map' must be an object mapping tensor names to shard files, got list",
        in_turn(lambda e: (e.root / "ft1" / WEIGHTS).unlink(), shard_index("ft1", ["model.safetensors"])),
    ),
    Case(
        "index-weight-map-empty",
        lambda e: merge_argv(e),
        2,
        "'weight_map' is empty",
        in_turn(
            lambda e: (e.root / "ft1" / WEIGHTS).unlink(),
            lambda e: (e.root / "ft1" / "model.safetensors.index.json").write_text('{"weight_map": {}}'),
        ),
    ),
    Case(
        "index-nested-too-deeply",
        lambda e: merge_argv(e),
        2,
        "model.safetensors.index.json: the shard index: the value is nested more than 64 levels deep",
        in_turn(
            lambda e: (e.root / "ft1" / WEIGHTS).unlink(),
            lambda e: (e.root / "ft1" / "model.safetensors.index.json").write_text(NESTED),
        ),
    ),
    Case("sharded-run", lambda e: merge_argv(e), 0, setup=shard_index("ft1", {}), check=check_merge()),
    # 6. model.safetensors beside a shard index: transformers loads model.safetensors, so does the merge
    Case(
        "single-file-beside-shards",
        lambda e: merge_argv(e),
        0,
        setup=shards_beside_single,
        check=check_merge(),
    ),
    # 7. several loose safetensors files: which ones are the weights is unclear
    Case(
        "two-loose-safetensors",
        lambda e: merge_argv(e),
        2,
        "holds 2 .safetensors files (part-a.safetensors, part-b.safetensors)",
        loose_files,
    ),
    # 8. a pickle that would run code is refused, never run
    Case(
        "pickle-runs-code",
        lambda e: merge_argv(e),
        2,
        "ft1/pytorch_model.bin: refused: this pickle holds more than tensors",
        pickle_only,
        check=check_no_code_ran,
    ),
    Case(
        "pickle-runs-code-subprocess",
        lambda e: merge_argv(e),
        2,
        "Convert it to safetensors",
        pickle_only,
        kind="subprocess",
        check=check_no_code_ran,
    ),
    # 9. a symlink loop is named as such, not looked up on the Hub
    Case(
        "symlink-loop-run",
        lambda e: merge_argv(e, "ft0", "loop"),
        2,
        "is a broken or looping symlink",
        symlink_loop,
    ),
    Case(
        "symlink-loop-api",
        lambda e: merge_checkpoints(e.root / "base", [e.root / "ft0", e.root / "loop"], progress=False),
        2,
        "loop is a broken or looping symlink",
        symlink_loop,
        kind="api",
        error=CheckpointError,
    ),
    # 10. a run tensor the base lacks
    Case(
        "run-has-extra-tensor",
        lambda e: merge_argv(e),
        2,
        "has tensor(s) the base",
        rewrite("ft1", add_tensor("extra.weight", torch.ones(3))),
    ),
    Case(
        "extra-tensor-outside-include",
        lambda e: merge_argv(e, extra=("--include", "vit.*")),
        0,
        setup=rewrite("ft1", add_tensor("extra.weight", torch.ones(3))),
    ),
    # 11. a LoRA adapter is not a full model
    Case(
        "adapter-as-run",
        lambda e: merge_argv(e, "ft0", "lora"),
        2,
        "is a PEFT (LoRA) adapter",
        adapter_folder,
    ),
    Case(
        "adapter-as-run-api",
        lambda e: TaskVector.from_checkpoints(e.root / "base", e.root / "lora"),
        2,
        "merge_and_unload()",
        adapter_folder,
        kind="api",
        error=CheckpointError,
    ),
    # 12-13. the base's config.json must make a loadable model when --scale writes one
    Case(
        "scale-base-config-empty",
        lambda e: merge_argv(e, extra=SCALE),
        2,
        "base/config.json: the model config is not valid JSON",
        base_config(""),
    ),
    Case(
        "scale-base-config-missing",
        lambda e: merge_argv(e, extra=SCALE),
        2,
        "base/config.json is missing",
        base_config(None),
    ),
    Case(
        "scale-base-config-not-object",
        lambda e: merge_argv(e, extra=SCALE),
        2,
        "must be a JSON object, got list",
        base_config("[1, 2]"),
    ),
    Case(
        "scale-base-config-unknown-model",
        lambda e: merge_argv(e, extra=SCALE),
        2,
        "AutoConfig cannot load this config",
        base_config('{"model_type": "no-such-model"}'),
    ),
    Case(
        "base-config-nested-too-deeply",
        lambda e: merge_argv(e),
        2,
        "base/config.json: the model config: the value is nested more than 64 levels deep",
        base_config(NESTED),
    ),
    Case("no-config-without-scale", lambda e: merge_argv(e), 0, setup=base_config(None), check=check_merge()),
    Case(
        "scale-base-config-without-model-type",
        lambda e: merge_argv(e, extra=SCALE),
        0,
        "names no model_type, so transformers' from_pretrained cannot load",
        base_config("{}"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_folder_kinds(
    case: Case, folders_prototype: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = tmp_path / "case"
    shutil.copytree(folders_prototype, root)
    env = Env(root, monkeypatch)
    if case.setup is not None:
        case.setup(env)
    invoke_checked(case, env, capsys)
    if case.code != 0 and case.kind != "api":
        assert not (root / "out").exists()
        assert not staging_left(root)
    if case.check is not None:
        case.check(env)


def test_reader_reads_what_transformers_loads(folders_prototype: Path, tmp_path: Path) -> None:
    """transformers is the oracle: beside model.safetensors, a shard index is not what it loads."""
    from transformers import ViTForImageClassification

    folder = tmp_path / "both"
    shutil.copytree(folders_prototype / "ft1", folder)
    other = load_file(folders_prototype / "ft0" / WEIGHTS)
    save_file(other, folder / "model-00001-of-00001.safetensors", metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": dict.fromkeys(other, "model-00001-of-00001.safetensors")}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = checkpoint_state_dict(ViTForImageClassification.from_pretrained(folder))
    reader = CheckpointReader(folder)
    assert reader.files == [folder / WEIGHTS]
    assert sorted(reader) == sorted(loaded)
    for key in reader:
        assert torch.equal(reader[key], loaded[key]), key
    assert not torch.equal(reader[KEY], other[KEY])


def test_the_output_marker_is_the_one_outputs_are_written_with() -> None:
    from hf_negmerge import checkpoints, folder_kinds

    assert folder_kinds.OUTPUT_MARKER == checkpoints.OUTPUT_MARKER


@pytest.mark.slow
def test_a_grid_merged_again_with_the_outputs_config_is_the_outputs_vector(tmp_path: Path) -> None:
    """docs/merging.md's recipe: the run vectors of an `unlearn` output, merged with its own
    negmerge_config.json, give its merged_task_vector.safetensors and kept fraction exactly."""
    import json

    from hf_negmerge import NegMergeConfig

    out = tmp_path / "out"
    overrides = [
        f"original.cache_dir={tmp_path / 'cache'}",
        "original.epochs=3",
        "grid.axes.seed=[0,1]",
        "grid.base.epochs=1",
        "comparison=[uniform]",  # a comparison method reads the run vectors, so they are kept
        "merge.lambda_grid=[0,0.5]",
    ]
    assert main(["unlearn", "--output-dir", str(out), "--no-progress", *overrides]) == 0
    runs = sorted((out / "work" / "grid" / "runs").glob("*/task_vector.safetensors"))
    assert len(runs) == 4  # 2 seeds × the default recipe's 2 learning rates
    result = merge_task_vectors((TaskVector.load(path) for path in runs), NegMergeConfig.from_pretrained(out))
    expected = TaskVector.load(out / "merged_task_vector.safetensors")
    assert sorted(result.task_vector.keys()) == sorted(expected.keys())
    for key in expected:
        torch.testing.assert_close(result.task_vector[key], expected[key], rtol=0, atol=0)
    metrics = json.loads((out / "metrics.json").read_text())
    assert result.stats.kept_fraction == pytest.approx(metrics["kept_fraction"])
    assert not any("embeddings" in key for key in expected)  # the default recipe's exclude
