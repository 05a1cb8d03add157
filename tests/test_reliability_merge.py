"""Reliability of `hf-negmerge merge`, checkpoint reading/writing and the config objects (issue 9).

Table-driven: every case says how to set it up, what to call (the CLI in-process, the CLI as a
subprocess, or the Python API), the expected exit code (API: 2 = a NegMergeError was raised,
0 = it returned), a fragment of the message, and which files must still exist byte-identical
afterwards (every file present before the call is hashed and compared). Failed cases must also
leave no output folder and no staging folder behind.
"""

from __future__ import annotations

import copy
import errno
import fnmatch
import hashlib
import json
import math
import os
import shutil
import stat
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import hf_negmerge
import hf_negmerge.checkpoints as checkpoints
import hf_negmerge.merging
from conftest import make_tiny_vit
from hf_negmerge import CheckpointReader, NegMergeConfig, TaskVector
from hf_negmerge.checkpoints import OUTPUT_MARKER, atomic_output_dir
from hf_negmerge.cli import main
from hf_negmerge.errors import CheckpointError, ConfigError, MergeError, NegMergeError, OutputError
from hf_negmerge.negation import unlearn, write_unlearned_checkpoint

INPUTS = ("base/*", "ft0/*", "ft1/*")
SRC = str(Path(hf_negmerge.__file__).resolve().parents[1])


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


@dataclass
class Env:
    """What a setup may use: the case folder, monkeypatch, and state handed to the check."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    state: dict[str, Any] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Env], Any]  # CLI: returns argv; API: performs the call
    code: int
    message: str = ""
    setup: Callable[[Env], None] | None = None
    kept: tuple[str, ...] = ("*",)  # pre-existing files (fnmatch) that must stay byte-identical
    kind: str = "cli"  # "cli" (in-process), "subprocess" or "api"
    error: type[BaseException] = NegMergeError  # API: the class the error must have
    check: Callable[[Env], None] | None = None
    restores_out: bool = False  # a failed case that legitimately leaves `out` (put back, not written)


def merge_argv(
    env: Env, *finetuned: str, out: str = "out", base: str = "base", extra: tuple[str, ...] = ()
) -> list[str]:
    runs = finetuned or ("ft0", "ft1")
    return [
        "merge",
        "--base",
        str(env.root / base),
        "--finetuned",
        *(str(env.root / run) for run in runs),
        "--out",
        str(env.root / out),
        "--no-progress",
        *extra,
    ]


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (symlinked folders are not followed)."""
    hashes = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_file():
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                except PermissionError:  # a case made it unreadable on purpose
                    digest = f"unreadable, {path.stat().st_size} bytes, mode {path.stat().st_mode:o}"
                hashes[str(path.relative_to(root))] = digest
    return hashes


def staging_left(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A 'fine-tuned' copy: shared direction plus own noise, so some signs agree and some do not."""
    tuned = copy.deepcopy(model)
    shared, own = torch.Generator().manual_seed(99), torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in tuned.parameters():
            direction = torch.randn(parameter.shape, generator=shared)
            parameter.add_(0.02 * (direction + torch.randn(parameter.shape, generator=own)))
    return tuned


@pytest.fixture(scope="module")
def prototype(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("proto")
    base = make_tiny_vit()
    base.save_pretrained(root / "base")
    for seed in range(2):
        perturbed(base, seed).save_pretrained(root / f"ft{seed}")
    return root


def negmerge_reference(base: dict, tuned: list[dict], key: str) -> torch.Tensor:
    """Unanimous-sign mean from the definition, in float64 from the tensors as loaded."""
    deltas = torch.stack([state[key].double() - base[key].double() for state in tuned])
    unanimous = deltas.sign().sum(0).abs() == len(tuned)
    return torch.where(unanimous, deltas.mean(0), torch.zeros((), dtype=torch.float64))


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


# -- setups --------------------------------------------------------------------------------------


def user_folder(name: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        (env.root / name).mkdir()
        (env.root / name / "notes.txt").write_text("the user's own work")

    return setup


def symlink(name: str, target: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        (env.root / name).symlink_to(env.root / target, target_is_directory=True)

    return setup


def earlier_merge(env: Env) -> None:
    assert main(merge_argv(env)) == 0


def inputs_inside_models(env: Env) -> None:
    (env.root / "models").mkdir()
    for name in ("base", "ft0", "ft1"):
        shutil.move(env.root / name, env.root / "models" / name)


def raw_safetensors(header: object, data: bytes = b"\0" * 16) -> bytes:
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


def broken_ft1(content: Callable[[bytes], bytes]) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        path = env.root / "ft1" / "model.safetensors"
        path.write_bytes(content(path.read_bytes()))

    return setup


def f32(offsets: object, shape: tuple[int, ...] = (2,)) -> dict:
    return {"dtype": "F32", "shape": list(shape), "data_offsets": offsets}


MALFORMED_HEADERS: dict[str, Callable[[bytes], bytes]] = {
    "missing-offsets": lambda _: raw_safetensors({"w": {"dtype": "F32", "shape": [2]}}),
    "string-offsets": lambda _: raw_safetensors({"w": f32(["0", "8"])}),
    "float-offsets": lambda _: raw_safetensors({"w": f32([0.0, 8.0])}),
    "three-offsets": lambda _: raw_safetensors({"w": f32([0, 8, 16])}),
    "list-header": lambda _: raw_safetensors([{"w": f32([0, 8])}]),
    "negative-offsets": lambda _: raw_safetensors({"w": f32([-8, 0])}),
    "overlapping-offsets": lambda _: raw_safetensors({"w": f32([0, 8]), "v": f32([4, 12])}),
    "truncated-file": lambda data: data[: len(data) // 2],
    "empty-file": lambda _: b"",
}


def tied_bin_checkpoints(env: Env) -> None:
    """`.bin` checkpoints whose embed.weight and lm_head.weight share one storage (tied)."""
    generator = torch.Generator().manual_seed(5)
    embed, other = torch.randn(6, 4, generator=generator), torch.randn(3, generator=generator)
    shared = torch.randn(6, 4, generator=generator)
    for name, shift in (("tbase", None), ("tft0", 0), ("tft1", 1)):
        tied = embed.clone()
        if shift is not None:
            tied += 0.1 * (shared + torch.randn(6, 4, generator=generator))
        state = {
            "embed.weight": tied,
            "lm_head.weight": tied,  # the same tensor: one storage in the pickle
            "other": other + (0 if shift is None else 0.1 * (shift + 1)),
            "steps": torch.tensor([3]),
        }
        (env.root / name).mkdir()
        torch.save(state, env.root / name / "pytorch_model.bin")
        (env.root / name / "config.json").write_text("{}\n")


def loaded_bins(env: Env) -> tuple[dict, list[dict]]:
    load = lambda name: torch.load(env.root / name / "pytorch_model.bin", weights_only=True)  # noqa: E731
    return load("tbase"), [load("tft0"), load("tft1")]


def check_tied_merge(scale: float | None, excluded: tuple[str, ...] = ()) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        base, tuned = loaded_bins(env)
        merged = TaskVector.load(env.root / "out" / "merged_task_vector.safetensors")
        float_keys = [k for k in ("embed.weight", "lm_head.weight", "other") if k not in excluded]
        assert sorted(merged.keys()) == sorted(float_keys)
        for key in float_keys:
            torch.testing.assert_close(merged[key].double(), negmerge_reference(base, tuned, key))
        if scale is None:
            return
        written = load_file(env.root / "out" / "unlearned_model" / "model.safetensors")
        for key, value in base.items():
            expected = (
                value.double() - scale * negmerge_reference(base, tuned, key) if key in float_keys else value
            )
            torch.testing.assert_close(written[key].to(expected.dtype), expected)

    return check


def failing_writes(fail_at: int) -> Callable[[Env], None]:
    """The `fail_at`-th file write runs out of disk space (ENOSPC)."""

    def setup(env: Env) -> None:
        real = checkpoints.atomic_write_bytes
        calls = env.state.setdefault("writes", [])

        def write(path: str | Path, data: bytes) -> None:
            calls.append(Path(path).name)
            if len(calls) == fail_at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            real(path, data)

        env.monkeypatch.setattr(checkpoints, "atomic_write_bytes", write)

    return setup


def check_writes_reached(count: int) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        assert len(env.state["writes"]) == count  # the failure happened where intended

    return check


def no_merge_work(env: Env) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the merge started although the output cannot be written")

    env.monkeypatch.setattr(hf_negmerge.merging, "merge_checkpoints", refuse)


def read_only_parent(env: Env) -> None:
    folder = env.root / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    env.cleanups.append(lambda: folder.chmod(0o755))
    if os.geteuid() == 0:  # root may write anyway; make os.access report what an ordinary user sees
        real = os.access
        env.monkeypatch.setattr(
            os, "access", lambda path, mode, **kw: False if Path(path) == folder else real(path, mode, **kw)
        )
    no_merge_work(env)


def mkdtemp_denied(env: Env) -> None:
    (env.root / "sealed").mkdir()
    real = checkpoints.tempfile.mkdtemp

    def mkdtemp(*args: Any, **kwargs: Any) -> str:
        if Path(kwargs.get("dir", "")) == env.root / "sealed":
            raise PermissionError(errno.EACCES, "Permission denied", str(env.root / "sealed"))
        return real(*args, **kwargs)

    env.monkeypatch.setattr(checkpoints.tempfile, "mkdtemp", mkdtemp)
    no_merge_work(env)


def unreadable_ft1(env: Env) -> None:
    path = env.root / "ft1" / "model.safetensors"
    path.chmod(0)
    env.cleanups.append(lambda: path.chmod(0o644))
    if os.geteuid() == 0:  # root reads anyway: make opening it fail as it does for a user
        real = checkpoints.safe_open

        def safe_open(name: str, *args: Any, **kwargs: Any) -> Any:
            if Path(name) == path:
                raise PermissionError(errno.EACCES, "Permission denied", name)
            return real(name, *args, **kwargs)

        env.monkeypatch.setattr(checkpoints, "safe_open", safe_open)
    reads = env.state.setdefault("reads", [])
    real_read = checkpoints._SafetensorsFile.read
    env.monkeypatch.setattr(
        checkpoints._SafetensorsFile, "read", lambda self, key: reads.append(key) or real_read(self, key)
    )


def check_nothing_read(env: Env) -> None:
    assert env.state["reads"] == []  # failed while opening the inputs, before reading any weight


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from hf_negmerge.checkpoints import atomic_output_dir
with atomic_output_dir(Path(sys.argv[1])) as staging:
    (staging / "half-written.bin").write_bytes(b"partial")
    os.kill(os.getpid(), signal.SIGKILL)
"""

LIVE_RUN = """
import sys
from pathlib import Path
from hf_negmerge.checkpoints import atomic_output_dir
with atomic_output_dir(Path(sys.argv[1])) as staging:
    print(staging, flush=True)
    sys.stdin.read()
    raise SystemExit(0)
"""


def killed_run(env: Env) -> None:
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(env.root / "out")], env=child_env())
    assert done.returncode == -9
    env.state["stale"] = staging_left(env.root)
    assert len(env.state["stale"]) == 1


def check_stale_removed(env: Env) -> None:
    assert not any(path.exists() for path in env.state["stale"])
    assert not staging_left(env.root)


def live_run(env: Env) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", LIVE_RUN, str(env.root / "out")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    env.state["live"] = Path(process.stdout.readline().strip())  # blocks until its staging exists
    assert env.state["live"].is_dir()

    def finish() -> None:
        process.stdin.close()
        process.wait()

    env.cleanups.append(finish)


def check_live_kept(env: Env) -> None:
    assert env.state["live"].is_dir()  # a concurrent run's staging folder is never removed
    assert (env.root / "out" / "merged_task_vector.safetensors").is_file()


def killed_between_renames(env: Env) -> None:
    """A run that retired the old output and was killed before moving the new one in."""
    earlier_merge(env)
    retired = env.root / ".out.old-abc123"
    retired.mkdir()
    shutil.move(env.root / "out", retired / "out")
    record = {"tool": "hf-negmerge", "pid": dead_pid(), "host": __import__("socket").gethostname()}
    (retired / ".hf_negmerge_staging.json").write_text(json.dumps(record))
    env.state["old"] = snapshot(retired / "out")


def check_old_output_restored(env: Env) -> None:
    assert snapshot(env.root / "out") == env.state["old"]
    assert not staging_left(env.root)


def check_mode(env: Env) -> None:
    mask = os.umask(0)
    os.umask(mask)
    for folder in (env.root / "out", env.root / "out" / "unlearned_model"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask, folder
    assert not list((env.root / "out").rglob(".hf_negmerge_staging.json"))  # owner records stay in staging
    manifest = json.loads((env.root / "out" / OUTPUT_MARKER).read_text())
    assert "merged_task_vector.safetensors" in manifest["files"]
    assert "unlearned_model/model.safetensors" in manifest["files"]


def empty_out(argv: list[str]) -> list[str]:
    argv[argv.index("--out") + 1] = ""
    return argv


def check_out(name: str) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        assert (env.root / name / "merged_task_vector.safetensors").is_file()

    return check


# -- API calls -----------------------------------------------------------------------------------


def task_vector(env: Env) -> TaskVector:
    return TaskVector.from_checkpoints(env.root / "base", env.root / "ft0")


def config_case(name: str, value: object) -> Case:
    return Case(
        f"config-{name}={value!r}",
        lambda env: NegMergeConfig(**{name: value}),
        2,
        f"NegMergeConfig.{name}",
        kind="api",
        error=ConfigError,
    )


def write_config(text: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        (env.root / "cfg").mkdir()
        (env.root / "cfg" / "negmerge_config.json").write_text(text)

    return setup


def vector_with_metadata(raw: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        save_file({"w": torch.ones(2)}, env.root / "tv.safetensors", metadata={"hf_negmerge": raw})

    return setup


def accumulator_state(raw: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        save_file(
            {"w::total": torch.ones(2)},
            env.root / "state.safetensors",
            metadata={"hf_negmerge_accumulator": raw},
        )

    return setup


def reader_keeps_values(folder: str, key: str, tied: str | None) -> Callable[[Env], None]:
    def call(env: Env) -> None:
        reader = CheckpointReader(env.root / folder)
        original = reader[key].clone()
        reader[key].add_(1.0)  # the caller owns what it got: this must change nothing else
        mine = reader[key]
        mine.mul_(-3.0)
        assert torch.equal(reader[key], original)
        if tied is not None:
            assert torch.equal(reader[tied], original)

    return call


def save_tied_state_dict(env: Env) -> None:
    shared = torch.arange(6.0)
    checkpoints.save_state_dict({"a": shared, "b": shared, "view": shared[2:4]}, env.root / "sd")
    written = load_file(env.root / "sd" / "model.safetensors")
    assert torch.equal(written["a"], shared) and torch.equal(written["b"], shared)
    assert torch.equal(written["view"], shared[2:4])


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------

CASES: list[Case] = [
    # 1. data loss: the output never overlaps an input, --overwrite replaces only our own outputs
    Case(
        "out-is-base",
        lambda e: merge_argv(e, out="base", extra=("--overwrite",)),
        2,
        "same folder as the base",
    ),
    Case(
        "out-is-finetuned",
        lambda e: merge_argv(e, out="ft1", extra=("--overwrite",)),
        2,
        "same folder as the fine-tuned run",
    ),
    Case(
        "out-contains-inputs",
        lambda e: merge_argv(
            e, "models/ft0", "models/ft1", base="models/base", out="models", extra=("--overwrite",)
        ),
        2,
        "contains the base",
        setup=inputs_inside_models,
    ),
    Case("out-inside-input", lambda e: merge_argv(e, out="ft0/merged"), 2, "lies inside the fine-tuned run"),
    Case(
        "out-symlink-to-base",
        lambda e: merge_argv(e, out="alias", extra=("--overwrite",)),
        2,
        "same folder as the base",
        setup=symlink("alias", "base"),
    ),
    Case(
        "out-inside-input-via-symlink",
        lambda e: merge_argv(e, out="alias/merged"),
        2,
        "lies inside the base",
        setup=symlink("alias", "base"),
    ),
    Case(
        "out-is-cwd-empty-name",
        lambda e: e.monkeypatch.chdir(e.root) or empty_out(merge_argv(e)),
        2,
        "contains the base",
    ),
    Case(
        "overwrite-foreign-folder",
        lambda e: merge_argv(e, extra=("--overwrite",)),
        2,
        "not written by hf-negmerge",
        setup=user_folder("out"),
    ),
    Case(
        "exists-without-overwrite", lambda e: merge_argv(e), 2, "pass --overwrite", setup=user_folder("out")
    ),
    Case(
        "overwrite-own-output",
        lambda e: merge_argv(e, "ft1", "ft0", extra=("--overwrite",)),
        0,
        kept=INPUTS,
        setup=earlier_merge,
        check=check_out("out"),
    ),
    Case(
        "api-unlearned-into-base",
        lambda e: write_unlearned_checkpoint(
            e.root / "base", task_vector(e), 0.5, e.root / "base", overwrite=True
        ),
        2,
        "same folder as the base",
        kind="api",
        error=OutputError,
    ),
    Case(
        "api-unlearned-over-foreign-folder",
        lambda e: write_unlearned_checkpoint(
            e.root / "base", task_vector(e), 0.5, e.root / "mine", overwrite=True
        ),
        2,
        "not written by hf-negmerge",
        setup=user_folder("mine"),
        kind="api",
        error=OutputError,
    ),
    Case(
        "api-atomic-output-dir-foreign-folder",
        lambda e: atomic_output_dir(
            e.root / "mine", overwrite=True, owned_marker="hf_negmerge_classifier.json"
        ).__enter__(),
        2,
        "not written by hf-negmerge",
        setup=user_folder("mine"),
        kind="api",
        error=OutputError,
    ),
    # 2. tied weights in .bin checkpoints: exact τ, and the unlearned model can be written
    Case(
        "tied-bin-merge",
        lambda e: merge_argv(e, "tft0", "tft1", base="tbase"),
        0,
        setup=tied_bin_checkpoints,
        check=check_tied_merge(None),
    ),
    Case(
        "tied-bin-unlearn",
        lambda e: merge_argv(e, "tft0", "tft1", base="tbase", extra=("--scale", "0.5")),
        0,
        setup=tied_bin_checkpoints,
        check=check_tied_merge(0.5),
    ),
    Case(
        "tied-bin-excluded",
        lambda e: merge_argv(
            e, "tft0", "tft1", base="tbase", extra=("--scale", "0.5", "--exclude", "embed.*", "lm_head.*")
        ),
        0,
        setup=tied_bin_checkpoints,
        check=check_tied_merge(0.5, excluded=("embed.weight", "lm_head.weight")),
    ),
    Case(
        "api-bin-reader-owns-nothing",
        reader_keeps_values("tbase", "embed.weight", "lm_head.weight"),
        0,
        setup=tied_bin_checkpoints,
        kind="api",
    ),
    Case(
        "api-safetensors-reader-owns-nothing",
        reader_keeps_values("base", "classifier.weight", None),
        0,
        kind="api",
    ),
    Case("api-save-state-dict-shared-storage", save_tied_state_dict, 0, kind="api"),
    # 3. malformed safetensors files: a CheckpointError naming the file, exit 2
    *(
        Case(
            f"safetensors-{name}",
            lambda e: merge_argv(e),
            2,
            "ft1/model.safetensors: corrupt safetensors header",
            setup=broken_ft1(content),
        )
        for name, content in MALFORMED_HEADERS.items()
    ),
    Case(
        "safetensors-overlap-names-key",
        lambda e: merge_argv(e),
        2,
        "tensor `v`",
        setup=broken_ft1(MALFORMED_HEADERS["overlapping-offsets"]),
    ),
    # 4. λ: finite results, no negative or non-finite scale
    Case("scale-overflows", lambda e: merge_argv(e, extra=("--scale", "1e308")), 2, "not finite in tensor '"),
    Case("scale-negative", lambda e: merge_argv(e, extra=("--scale", "-1")), 2, "θ_u = θ₀ − λ·τ"),
    Case("scale-nan", lambda e: merge_argv(e, extra=("--scale", "nan")), 2, "must be finite"),
    Case("scale-inf", lambda e: merge_argv(e, extra=("--scale", "inf")), 2, "must be finite"),
    Case(
        "scale-negative-subprocess",
        lambda e: merge_argv(e, extra=("--scale", "-0.5")),
        2,
        "λ < 0 adds it again",
        kind="subprocess",
    ),
    Case(
        "api-write-unlearned-negative",
        lambda e: write_unlearned_checkpoint(e.root / "base", task_vector(e), -1.0, e.root / "u"),
        2,
        "λ < 0",
        kind="api",
        error=ConfigError,
    ),
    Case(
        "api-write-unlearned-overflow",
        lambda e: write_unlearned_checkpoint(e.root / "base", task_vector(e), 1e308, e.root / "u"),
        2,
        "not finite in tensor '",
        kind="api",
        error=CheckpointError,
    ),
    Case(
        "api-unlearn-negative",
        lambda e: unlearn(make_tiny_vit(), task_vector(e), -0.1),
        2,
        "θ_u = θ₀ − λ·τ",
        kind="api",
        error=ConfigError,
    ),
    # 5. the same checkpoint twice, the base as a run, options the method ignores
    Case(
        "same-run-twice",
        lambda e: merge_argv(e, "ft0", "ft0"),
        2,
        "is the same checkpoint as the fine-tuned run",
    ),
    Case(
        "same-run-via-symlink",
        lambda e: merge_argv(e, "ft0", "alias"),
        2,
        "alias is the same checkpoint as the fine-tuned run",
        setup=symlink("alias", "ft0"),
    ),
    Case("base-as-run", lambda e: merge_argv(e, "base", "ft0"), 2, "is the same checkpoint as the base"),
    Case(
        "api-base-as-run",
        lambda e: hf_negmerge.merge_checkpoints(e.root / "base", [e.root / "ft0", e.root / "base"]),
        2,
        "same checkpoint as the base",
        kind="api",
        error=MergeError,
    ),
    Case(
        "consensus-with-ties",
        lambda e: merge_argv(e, extra=("--method", "ties", "--consensus-fraction", "0.8")),
        2,
        "--consensus-fraction only applies to --method negmerge",
    ),
    Case(
        "density-with-negmerge",
        lambda e: merge_argv(e, extra=("--density", "0.5")),
        2,
        "--density only applies to --method ties",
    ),
    Case(
        "majority-with-uniform",
        lambda e: merge_argv(e, extra=("--method", "uniform", "--majority-sign-method", "frequency")),
        2,
        "--majority-sign-method",
    ),
    Case(
        "density-with-ties",
        lambda e: merge_argv(e, extra=("--method", "ties", "--density", "0.5")),
        0,
        kept=INPUTS,
        check=check_out("out"),
    ),
    # 6. messages instead of tracebacks, checked before the work
    Case(
        "name-fits-only-without-long-staging-prefix",
        lambda e: merge_argv(e, out="n" * 250),
        0,
        kept=INPUTS,
        check=check_out("n" * 250),
    ),
    Case("name-over-limit", lambda e: merge_argv(e, out="y" * 300), 2, "file names may have at most"),
    Case(
        "path-over-limit",
        lambda e: merge_argv(e, out="/".join(["d" * 200] * 25)),
        2,
        "the OS allows paths of at most",
    ),
    Case(
        "read-only-parent",
        lambda e: merge_argv(e, out="ro/out"),
        2,
        "is not writable",
        setup=read_only_parent,
    ),
    Case(
        "staging-cannot-be-created",
        lambda e: merge_argv(e, out="sealed/out"),
        2,
        "Cannot create the output folder",
        setup=mkdtemp_denied,
    ),
    Case(
        "unreadable-input",
        lambda e: merge_argv(e),
        2,
        "ft1/model.safetensors: cannot be read",
        setup=unreadable_ft1,
        check=check_nothing_read,
    ),
    Case(
        "disk-full-task-vector",
        lambda e: merge_argv(e, extra=("--scale", "0.5")),
        2,
        "No space left on device",
        setup=failing_writes(1),
        check=check_writes_reached(1),
    ),
    Case(
        "disk-full-unlearned-model",
        lambda e: merge_argv(e, extra=("--scale", "0.5")),
        2,
        "No space left on device",
        setup=failing_writes(4),
        check=check_writes_reached(4),
    ),
    Case(
        "out-is-a-file",
        lambda e: merge_argv(e),
        2,
        "exists and is not a folder",
        setup=lambda e: (e.root / "out").write_text("x"),
    ),
    # 7. ordinary permissions and a manifest
    Case(
        "output-permissions",
        lambda e: merge_argv(e, extra=("--scale", "0.5")),
        0,
        kept=INPUTS,
        check=check_mode,
    ),
    # 8. leftovers of killed runs
    Case(
        "stale-staging-removed",
        lambda e: merge_argv(e),
        0,
        kept=INPUTS,
        setup=killed_run,
        check=check_stale_removed,
    ),
    Case("live-staging-kept", lambda e: merge_argv(e), 0, kept=INPUTS, setup=live_run, check=check_live_kept),
    Case(
        "killed-between-renames-restores-old-output",
        lambda e: merge_argv(e),
        2,
        "pass --overwrite",
        kept=INPUTS,
        setup=killed_between_renames,
        check=check_old_output_restored,
        restores_out=True,
    ),
    # 9. NegMergeConfig, its JSON file and TaskVector metadata
    *(
        config_case(name, value)
        for name, value in [
            ("method", 1),
            ("consensus_fraction", "a"),
            ("density", None),
            ("include", 5),
            ("exclude", [1]),
            ("lambda_grid", "abc"),
            ("lambda_grid", [None]),
            ("lambda_grid", []),
            ("retain_ratio", "x"),
            ("fallback", None),
            ("scale", "1"),
            ("scale", -1.0),
            ("scale", math.inf),
            ("accumulation_dtype", 3),
            ("majority_sign_method", []),
            ("consensus_fraction", True),
        ]
    ),
    Case(
        "config-json-malformed",
        lambda e: NegMergeConfig.from_pretrained(e.root / "cfg"),
        2,
        "cfg/negmerge_config.json is not valid JSON",
        setup=write_config("{bad"),
        kind="api",
        error=ConfigError,
    ),
    Case(
        "config-json-wrong-type",
        lambda e: NegMergeConfig.from_pretrained(e.root / "cfg"),
        2,
        "negmerge_config.json: NegMergeConfig.density",
        setup=write_config('{"density": "x"}'),
        kind="api",
        error=ConfigError,
    ),
    Case(
        "config-json-not-utf8",
        lambda e: NegMergeConfig.from_pretrained(e.root / "cfg"),
        2,
        "negmerge_config.json is not valid JSON",
        setup=lambda e: (
            write_config("")(e) or (e.root / "cfg" / "negmerge_config.json").write_bytes(b"\xff\xfe{")
        ),
        kind="api",
        error=ConfigError,
    ),
    Case(
        "accumulator-state-corrupt",
        lambda e: hf_negmerge.MergeAccumulator.load(e.root / "state.safetensors"),
        2,
        "state.safetensors: corrupt MergeAccumulator state header",
        setup=accumulator_state('{"config": {"density": "x"}}'),
        kind="api",
        error=CheckpointError,
    ),
    Case(
        "vector-metadata-not-json",
        lambda e: TaskVector.load(e.root / "tv.safetensors"),
        2,
        "tv.safetensors: the 'hf_negmerge' metadata",
        setup=vector_with_metadata("{oops"),
        kind="api",
        error=CheckpointError,
    ),
    Case(
        "vector-metadata-not-object",
        lambda e: TaskVector.load(e.root / "tv.safetensors"),
        2,
        "must be a JSON object",
        setup=vector_with_metadata("[1, 2]"),
        kind="api",
        error=CheckpointError,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_reliability(
    case: Case, prototype: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = tmp_path / "case"
    shutil.copytree(prototype, root)
    env = Env(root, monkeypatch)
    try:
        if case.setup is not None:
            case.setup(env)
        before = invoke_checked(case, env, capsys)
        if case.code != 0 and case.kind != "api" and not case.restores_out:
            assert not (root / "out").exists() or "out" in {Path(n).parts[0] for n in before}
            assert not staging_left(root)
        if case.check is not None:
            case.check(env)
    finally:
        for cleanup in reversed(env.cleanups):
            cleanup()


def invoke_checked(
    case: Case, env: Env, capsys, message: str | None = None, keep_all: bool = False
) -> dict[str, str]:
    """Run the case and check what every reliability table checks: the exit code, the message
    fragment (`message`, else the case's), no traceback, and the kept files (every file with
    `keep_all`) byte-identical afterwards. Returns the snapshot taken before the call."""
    before = snapshot(env.root)
    text = invoke_case(case, env, capsys)
    after = snapshot(env.root)
    expected = case.message if message is None else message
    assert expected in text, text
    assert "Traceback" not in text
    kept = before if keep_all else {n for n in before if any(fnmatch.fnmatchcase(n, p) for p in case.kept)}
    changed = sorted(name for name in kept if after.get(name) != before[name])
    assert not changed, f"changed or deleted: {changed}"
    return before


def invoke_case(case: Case, env: Env, capsys) -> str:
    """Run the case; assert its exit code; return its message (stderr or the error text)."""
    if case.kind == "cli":
        capsys.readouterr()
        code = main(case.call(env))
        message = capsys.readouterr().err
    elif case.kind == "subprocess":
        argv = case.call(env)
        done = subprocess.run(
            [sys.executable, "-m", "hf_negmerge.cli", *argv], capture_output=True, text=True, env=child_env()
        )
        code, message = done.returncode, done.stderr
    else:
        try:
            case.call(env)
        except NegMergeError as error:
            assert isinstance(error, case.error), f"{type(error).__name__}: {error}"
            code, message = 2, str(error)
        else:
            code, message = 0, ""
    assert code == case.code, message
    return message
