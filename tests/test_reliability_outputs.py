"""Reliability of `hf-negmerge unlearn`'s output folder, of `push`, and of the CLI's messages.

Table-driven: each case names its setup, the command, the expected exit code, a fragment of the
message, and which files must still be byte-identical afterwards (hashed before, compared after).
The tiny end-to-end runs share one trained θ₀ (module-scoped cache); everything about files alone
runs against `hf_negmerge.outputs` directly with a fake `build` instead of training.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from hf_negmerge.cli import main as cli_main
from hf_negmerge.errors import CheckpointError, HubUnavailableError
from hf_negmerge.hub import NegationVector, push_unlearned_model
from hf_negmerge.output_folder import (
    MANIFEST_FILE,
    STAGING_PREFIX,
    Manifest,
    OutputFolderError,
    claim_output_folder,
    publish_outputs,
    seal_output_folder,
    verify_output_folder,
)
from hub_stand_in import HubStandIn  # tests/ is on sys.path under pytest's default import mode

TINY = [
    "--no-progress",
    "grid.axes.seed=[0,1]",
    "grid.base.epochs=1",
    "original.epochs=3",
    "comparison=[uniform]",
    "merge.lambda_grid=[0,0.5]",
    "data.max_samples=200",
]
REPO = "alice/unlearned"


def fingerprint(root: Path, skip: Callable[[Path], bool] = lambda path: False) -> dict[str, str]:
    """Every entry under `root`: files by sha256, folders and links marked as such."""
    result: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if skip(relative):
            continue
        if path.is_symlink():
            result[str(relative)] = "link:" + os.readlink(path)
        elif path.is_dir():
            result[str(relative)] = "dir"
        else:
            result[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def published_files(folder: Path) -> dict[str, str]:
    """The top-level files of an output folder (what a run publishes) with their hashes."""
    return {k: v for k, v in fingerprint(folder).items() if "/" not in k and v not in ("dir",)}


def unlearn(out: Path | str, cache: Path, *extra: str) -> list[str]:
    return ["unlearn", "--output-dir", str(out), f"original.cache_dir={cache}", *TINY, *extra]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("originals")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """A finished tiny run's output folder (copy it before changing it)."""
    out = tmp_path_factory.mktemp("published") / "out"
    assert cli_main(unlearn(out, cache)) == 0
    return out


@pytest.fixture
def run_copy(published: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(published, out, symlinks=True)
    return out


# -- 1. unlearn refuses folders it must not write into, before any work ---------------------------------------------
def _foreign(root: Path) -> Path:
    out = root / "out"
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    (out / "config.json").write_text('{"mine": true}\n')
    (out / "report.md").mkdir()  # a folder with the name of an output, with contents
    (out / "report.md" / "chapter1.txt").write_text("do not delete\n")
    return out


@dataclass
class RefusalCase:
    name: str
    setup: Callable[[Path, list], list[str]]  # (root, cleanups) -> CLI arguments after the common ones
    fragments: tuple[str, ...]
    code: int = 2


def _held(root: Path, cleanups: list) -> list[str]:
    out = root / "out"
    claim = claim_output_folder(out)  # another run holds the folder
    cleanups.append(claim.release)
    return ["--output-dir", str(out)]


def _corrupt_manifest(root: Path, cleanups: list) -> list[str]:
    out = root / "out"
    out.mkdir()
    (out / MANIFEST_FILE).write_text("{not json")
    return ["--output-dir", str(out)]


def _file(root: Path, cleanups: list) -> list[str]:
    (root / "out").write_text("a file\n")
    return ["--output-dir", str(root / "out")]


REFUSALS = [
    RefusalCase(
        "empty output_dir (recipe key)",
        lambda r, c: ["output_dir=''"],
        ("output_dir must name a folder", "current directory"),
    ),
    RefusalCase(
        "empty --output-dir",
        lambda r, c: ["--output-dir", ""],
        ("output_dir must name a folder", "current directory"),
    ),
    RefusalCase("output_dir is a file", _file, ("is a file", "name a folder")),
    RefusalCase(
        "output_dir below a file (OSError with a path)",
        lambda r, c: (_file(r, c), ["--output-dir", str(r / "out" / "sub")])[1],
        ("Not a directory", "out"),
    ),
    RefusalCase(
        "foreign non-empty folder",
        lambda r, c: ["--output-dir", str(_foreign(r))],
        ("not written by `hf-negmerge unlearn`", "--overwrite", "never replaced"),
    ),
    RefusalCase(
        "foreign folder with --overwrite: clashes named",
        lambda r, c: ["--output-dir", str(_foreign(r)), "--overwrite"],
        ("README.md", "config.json", "report.md", "even with --overwrite"),
    ),
    RefusalCase(
        "foreign work/ folder with --overwrite",
        lambda r, c: (
            (r / "out" / "work").mkdir(parents=True),
            (r / "out" / "work" / "x.txt").write_text("x"),
            ["--output-dir", str(r / "out"), "--overwrite"],
        )[2],
        ("holds work,",),
    ),
    RefusalCase("folder in use by another run", _held, ("is in use by another", f"pid {os.getpid()}")),
    RefusalCase("corrupt manifest", _corrupt_manifest, (MANIFEST_FILE, "cannot be read")),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[case.name for case in REFUSALS])
def test_unlearn_refuses_unusable_output_folders_and_changes_nothing(
    case: RefusalCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.chdir(root)  # an empty output_dir would mean this folder
    (root / "README.md").write_text("the user's own README in the current folder\n")
    cleanups: list = []
    try:
        args = case.setup(root, cleanups)
        before = fingerprint(root)
        cache = tmp_path / "unused-cache"
        code = cli_main(["unlearn", f"original.cache_dir={cache}", *TINY, *args])
        err = capsys.readouterr().err
    finally:
        for cleanup in cleanups:
            cleanup()
    assert code == case.code, err
    assert "hf-negmerge unlearn: error: " in err and "Traceback" not in err
    for fragment in case.fragments:
        assert fragment in err, (fragment, err)
    assert fingerprint(root) == before  # nothing created, changed or deleted
    assert not cache.exists()  # refused before any work


# -- 2. publishing is one step: a kill between moves never leaves a folder that looks complete ------------------------
class SimulatedKill(BaseException):
    """Stands for SIGKILL: not an Exception, so ordinary error handling does not swallow it."""


def _build(
    version: str, names: tuple[str, ...] = ("model.safetensors", "config.json", "metrics.json", "report.md")
):
    def build(staging: Path) -> None:
        for name in names:
            (staging / name).write_text(f"{version} {name}\n")

    return build


def _published_version(out: Path) -> set[str]:
    return {
        (out / name).read_text().split()[0]
        for name in ("model.safetensors", "config.json", "metrics.json", "report.md")
    }


@pytest.mark.parametrize("moves_before_kill", [0, 1, 2, 3])
def test_a_kill_between_moves_leaves_an_incomplete_marker_and_the_next_run_finishes(
    moves_before_kill: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    with claim_output_folder(out):
        publish_outputs(out, _build("v1"))
    assert _published_version(out) == {"v1"}
    verify_output_folder(out)

    real_replace = os.replace
    moved = []

    def replace(source, destination):  # os.replace that "dies" after k moves out of the staging folder
        if Path(source).parent.name.startswith(STAGING_PREFIX) and Path(destination).parent == out:
            if len(moved) == moves_before_kill:
                raise SimulatedKill
            moved.append(source)
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    with claim_output_folder(out), pytest.raises(SimulatedKill):
        publish_outputs(out, _build("v2"))
    monkeypatch.setattr(os, "replace", real_replace)

    assert _published_version(out) == ({"v1", "v2"} if moves_before_kill else {"v1"})  # mixed on disk...
    with pytest.raises(OutputFolderError, match="incomplete"):  # ...but never taken for complete
        verify_output_folder(out)
    with claim_output_folder(out):  # the next run publishes again
        publish_outputs(out, _build("v2"))
    assert _published_version(out) == {"v2"}
    assert set(verify_output_folder(out).files) == {
        "model.safetensors",
        "config.json",
        "metrics.json",
        "report.md",
    }


def test_a_kill_while_building_leaves_the_published_files_and_marker_valid(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with claim_output_folder(out):
        publish_outputs(out, _build("v1"))
    before = fingerprint(out)

    def dies(staging: Path) -> None:
        _build("v2")(staging)
        raise SimulatedKill

    with claim_output_folder(out), pytest.raises(SimulatedKill):
        publish_outputs(out, dies)
    assert fingerprint(out) == before
    verify_output_folder(out)


# -- 4. staging left by SIGKILL is cleaned by the next run, never while a run holds the folder -------------------------
def test_stale_staging_is_cleaned_under_the_lock_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with claim_output_folder(out):
        publish_outputs(out, _build("v1"))
    work = out / "work"
    staging = [work / f"{STAGING_PREFIX}abc123" / ".model", work / "final"]
    (work / "notes.txt").write_text("user file in work/\n")
    with claim_output_folder(out):  # a live run, with its staging folders
        for folder in staging:
            folder.mkdir(parents=True)
            (folder / "model.safetensors").write_bytes(b"\0" * 64)
        with pytest.raises(OutputFolderError, match="in use"):
            claim_output_folder(out)  # a second run neither runs nor cleans
        assert all(folder.is_dir() for folder in staging)
    # the live run was killed (its staging stayed): the next run removes it
    with claim_output_folder(out):
        assert not (work / f"{STAGING_PREFIX}abc123").exists() and not (work / "final").exists()
    assert (work / "notes.txt").read_text() == "user file in work/\n"
    verify_output_folder(out)


# -- 5. disk full while writing the outputs ------------------------------------------------------------------------
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["build", "marker"])
def test_disk_full_names_the_folder_and_loses_nothing_published(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    with claim_output_folder(out):
        publish_outputs(out, _build("v1"))
    before = fingerprint(out, skip=lambda p: p.name == "unlearn.lock")

    def build(staging: Path) -> None:
        (staging / "model.safetensors").write_text("v2 partial\n")
        if where == "build":
            _enospc()

    if where == "marker":
        monkeypatch.setattr(Manifest, "save", _enospc)
    with claim_output_folder(out), pytest.raises(OutputFolderError) as raised:
        publish_outputs(out, build)
    assert "No space left" in str(raised.value) and str(out) in str(raised.value)
    assert fingerprint(out, skip=lambda p: p.name == "unlearn.lock") == before
    monkeypatch.undo()
    verify_output_folder(out)


# -- end to end: reruns, --overwrite, kills and full disks through the CLI ------------------------------------------
@dataclass
class RunCase:
    name: str
    setup: Callable[[Path, pytest.MonkeyPatch], list[str]]  # (output folder copy, monkeypatch) -> extra args
    code: int
    fragments: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()  # paths (relative to the output folder) that must stay byte-identical
    kept_published: bool = False  # every published file stays byte-identical (nothing new published)


def _user_files(out: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    (out / "notes.txt").write_text("mine\n")
    (out / "mine").mkdir()
    (out / "mine" / "report.md").write_text("mine too\n")
    return []


def _edited_readme(out: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    (out / "README.md").write_text("edited by the user\n")
    return []


def _report_became_a_folder(out: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    (out / "report.md").unlink()
    (out / "report.md").mkdir()
    (out / "report.md" / "draft.txt").write_text("mine\n")
    return []


def _full_disk(out: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr("hf_negmerge.outputs.atomic_write_text", _enospc)
    return []


RUNS = [
    RunCase("rerun keeps the user's files", _user_files, 0, kept=("notes.txt", "mine/report.md")),
    RunCase(
        "a file the user edited is not replaced",
        _edited_readme,
        2,
        ("README.md", "changed since"),
        kept=("README.md",),
        kept_published=True,
    ),
    RunCase(
        "a folder named like an output is not deleted",
        _report_became_a_folder,
        2,
        ("report.md",),
        kept=("report.md/draft.txt",),
        kept_published=True,
    ),
    RunCase("disk full", _full_disk, 2, ("No space left", "out"), kept_published=True),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", RUNS, ids=[case.name for case in RUNS])
def test_unlearn_rerun_into_its_own_folder(
    case: RunCase,
    run_copy: Path,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    extra = case.setup(run_copy, monkeypatch)
    kept = {name: hashlib.sha256((run_copy / name).read_bytes()).hexdigest() for name in case.kept}
    published_before = published_files(run_copy)
    code = cli_main(unlearn(run_copy, cache, *extra))
    monkeypatch.undo()
    out, err = capsys.readouterr()
    assert code == case.code, err
    assert "Traceback" not in err
    for fragment in case.fragments:
        assert fragment in err, (fragment, err)
    for name, digest in kept.items():
        assert hashlib.sha256((run_copy / name).read_bytes()).hexdigest() == digest, name
    if case.kept_published:
        assert published_files(run_copy) == published_before
    assert not list((run_copy / "work").glob(f"{STAGING_PREFIX}*"))
    if code == 0:  # the summary ends with the run's status, as metrics.json records it
        status = json.loads((run_copy / "metrics.json").read_text())["status"]
        assert f"Status: {status} — " in out
        manifest = verify_output_folder(run_copy)
        assert "notes.txt" not in manifest.files  # the user's file is not counted as an output
        assert cli_main(["push", str(run_copy), "--repo-id", REPO, "--dry-run"]) == 0
        assert "notes.txt" not in capsys.readouterr().out  # nor uploaded


@pytest.mark.slow
def test_unlearn_with_overwrite_writes_next_to_foreign_files(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "data").mkdir()
    (out / "data" / "a.csv").write_text("1,2\n")
    before = fingerprint(out)
    assert cli_main(unlearn(out, cache, "--overwrite")) == 0
    after = fingerprint(out)
    assert {k: after[k] for k in before} == before
    manifest = verify_output_folder(out)
    assert "model.safetensors" in manifest.files and "notes.txt" not in manifest.files
    capsys.readouterr()
    assert cli_main(["push", str(out), "--repo-id", REPO, "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "model.safetensors" in listing and "notes.txt" not in listing


@pytest.mark.slow
def test_a_run_killed_while_publishing_is_refused_by_push_and_finished_by_the_next_run(
    run_copy: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real_replace = os.replace
    moved = []

    def replace(source, destination):  # publishing moves: staging folder -> output folder
        if Path(source).parent.name.startswith(STAGING_PREFIX) and Path(destination).parent == run_copy:
            if len(moved) == 3:
                raise KeyboardInterrupt  # Ctrl-C (or a kill) after three outputs were moved
            moved.append(source)
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    assert cli_main(unlearn(run_copy, cache, "evaluation.batch_size=100")) == 130
    monkeypatch.undo()
    assert "reused on rerun" in capsys.readouterr().err
    assert cli_main(["push", str(run_copy), "--repo-id", REPO, "--dry-run"]) == 2
    assert "incomplete" in capsys.readouterr().err
    assert cli_main(unlearn(run_copy, cache, "evaluation.batch_size=100")) == 0
    manifest = verify_output_folder(run_copy)
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["recipe"]["evaluation"]["batch_size"] == 100  # the files come from the second run
    assert yaml.safe_load((run_copy / "recipe.yaml").read_text())["evaluation"]["batch_size"] == 100
    assert manifest.complete and len(manifest.files) == len(published_files(run_copy)) - 1  # all but itself
    capsys.readouterr()
    assert cli_main(["push", str(run_copy), "--repo-id", REPO, "--dry-run"]) == 0


# -- push refuses folders that are not one complete publication -------------------------------------------------------
@dataclass
class PushCase:
    name: str
    change: Callable[[Path], None]
    code: int
    fragments: tuple[str, ...]
    args: tuple[str, ...] = ("--dry-run",)
    repo_id: str = REPO


def _no_weights(out: Path) -> None:
    (out / "model.safetensors").unlink()
    seal_output_folder(out)


def _incomplete(out: Path) -> None:
    values = json.loads((out / MANIFEST_FILE).read_text())
    (out / MANIFEST_FILE).write_text(json.dumps({**values, "complete": False, "files": {}}))


LONG_REPO = "alice/" + "m" * 91  # 97 characters
PUSHES = [
    PushCase("complete folder", lambda out: None, 0, ("Would upload",)),
    PushCase("no marker", lambda out: (out / MANIFEST_FILE).unlink(), 2, (f"has no {MANIFEST_FILE}",)),
    PushCase("marker not complete", _incomplete, 2, ("is incomplete", "Run the same")),
    PushCase(
        "a listed file missing", lambda out: (out / "metrics.json").unlink(), 2, ("missing: metrics.json",)
    ),
    PushCase(
        "a listed file changed",
        lambda out: (out / "report.md").write_text("changed\n"),
        2,
        ("changed since they were written", "report.md"),
    ),
    PushCase("no weights at all", _no_weights, 2, ("holds no model weights",)),
    PushCase("repo id over 96 characters", lambda out: None, 2, (LONG_REPO, "at most 96"), repo_id=LONG_REPO),
    PushCase(
        "repo id ending in .git", lambda out: None, 2, ("alice/model.git", ".git"), repo_id="alice/model.git"
    ),
    PushCase("repo id without namespace", lambda out: None, 2, ("'model'", "namespace"), repo_id="model"),
    PushCase(
        "repo id checked before any upload", lambda out: None, 2, ("'model'",), args=(), repo_id="model"
    ),
]


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    server = HubStandIn().start()
    _point_hub_at(monkeypatch, server.url, tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _point_hub_at(monkeypatch: pytest.MonkeyPatch, url: str, cache: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_TOKEN", "hf_TestToken_0000")
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache / "no-cached-login"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.mark.slow
@pytest.mark.parametrize("case", PUSHES, ids=[case.name for case in PUSHES])
def test_push_refuses_what_is_not_one_complete_publication(
    case: PushCase, run_copy: Path, hub: HubStandIn, capsys: pytest.CaptureFixture
) -> None:
    case.change(run_copy)
    before = fingerprint(run_copy)
    code = cli_main(["push", str(run_copy), "--repo-id", case.repo_id, *case.args])
    captured = capsys.readouterr()
    assert code == case.code, captured.err
    output = captured.out if code == 0 else captured.err
    assert "Traceback" not in captured.err
    for fragment in case.fragments:
        assert fragment in output, (fragment, output)
    assert fingerprint(run_copy) == before
    assert hub.requests == []  # refused (or a dry run) before any request


@pytest.mark.slow
def test_push_of_a_real_run_uploads_exactly_the_published_files(run_copy: Path, hub: HubStandIn) -> None:
    (run_copy / "notes.txt").write_text("not an output\n")
    push_unlearned_model(run_copy, REPO)
    uploaded = set(hub.repos[REPO].files("main"))
    listed = set(verify_output_folder(run_copy).files) - {"merged_task_vector.safetensors", "README.md"}
    assert listed <= uploaded and "notes.txt" not in uploaded and MANIFEST_FILE not in uploaded


@pytest.mark.slow
def test_push_stages_outside_the_folder_and_cleans_what_a_killed_push_left(
    run_copy: Path, hub: HubStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload is assembled in the temp folder (nothing appears beside or in the output
    folder); a staging folder whose push was killed (its pid is gone) is removed by the next push,
    one of a live process is left alone."""
    import json
    import subprocess
    import sys
    import tempfile

    from hf_negmerge.hub.push import PUSH_SCRATCH_PREFIX

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    killed, live = scratch / f"{PUSH_SCRATCH_PREFIX}killed", scratch / f"{PUSH_SCRATCH_PREFIX}live"
    for folder, pid in ((killed, int(dead.stdout)), (live, os.getpid())):
        (folder / "work").mkdir(parents=True)
        (folder / "work" / "model.safetensors").write_bytes(b"partial")
        record = {"tool": "hf-negmerge", "pid": pid, "host": socket.gethostname()}
        (folder / ".hf_negmerge_staging.json").write_text(json.dumps(record))
    before = fingerprint(run_copy)
    siblings = sorted(path.name for path in run_copy.parent.iterdir())
    push_unlearned_model(run_copy, REPO)
    assert "model.safetensors" in set(hub.repos[REPO].files("main"))
    assert not killed.exists() and live.is_dir()
    assert sorted(path.name for path in scratch.iterdir()) == [live.name]  # its own staging is gone too
    assert fingerprint(run_copy) == before
    assert sorted(path.name for path in run_copy.parent.iterdir()) == siblings


# -- 6. bounded network waits; per-command Ctrl-C messages -------------------------------------------------------------
class SilentServer:
    """Listens on 127.0.0.1 and never answers: the kernel accepts connections and buffers the
    requests, nobody reads or replies. `request_lines` collects what was sent, afterwards."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.connections: list[socket.socket] = []

    def request_lines(self) -> list[str]:
        self.socket.setblocking(False)
        while True:
            try:
                connection, _ = self.socket.accept()
            except BlockingIOError:
                break
            self.connections.append(connection)
        lines = []
        for connection in self.connections:
            connection.settimeout(10)  # the request is already in the kernel's buffer
            lines.append(connection.recv(4096).split(b"\r\n")[0].decode())
        return lines

    def close(self) -> None:
        self.socket.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentServer]:
    server = SilentServer()
    _point_hub_at(monkeypatch, server.url, tmp_path)
    monkeypatch.setenv("HF_NEGMERGE_HUB_TIMEOUT", "0.3")
    monkeypatch.setenv("HF_NEGMERGE_HUB_ATTEMPTS", "2")
    try:
        yield server
    finally:
        server.close()


def _sealed_folder(root: Path) -> Path:
    """A minimal complete output folder (push's checks and upload, without a training run)."""
    from conftest import make_tiny_vit
    from hf_negmerge.config import NegMergeConfig

    out = root / "out"
    make_tiny_vit().save_pretrained(out)
    NegMergeConfig().save_pretrained(out)
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "base_model": "alice/base",
                "forget_dataset": "alice/data",
                "scale": 0.5,
                "unlearned": {"forget_accuracy": 1.0},
            }
        )
    )
    seal_output_folder(out)
    return out


def test_push_to_an_endpoint_that_never_answers_times_out_with_bounded_retries(
    tmp_path: Path, silent_hub: SilentServer, capsys: pytest.CaptureFixture
) -> None:
    out = _sealed_folder(tmp_path)
    before = fingerprint(out)
    assert cli_main(["push", str(out), "--repo-id", REPO, "--no-vector"]) == 2
    err = capsys.readouterr().err
    assert "did not answer within 0.3 s" in err and "2 attempts" in err and REPO in err
    assert "HF_NEGMERGE_HUB_TIMEOUT" in err and "Traceback" not in err
    creates = [line for line in silent_hub.request_lines() if line.startswith("POST /api/repos/create")]
    assert len(creates) == 2  # one request per attempt, then it stops
    assert fingerprint(out) == before
    with pytest.raises(HubUnavailableError, match="did not answer"):
        push_unlearned_model(out, REPO, include_vector=False)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan"])
def test_a_bad_timeout_setting_is_named(
    value: str,
    tmp_path: Path,
    silent_hub: SilentServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("HF_NEGMERGE_HUB_TIMEOUT", value)
    assert cli_main(["push", str(_sealed_folder(tmp_path)), "--repo-id", REPO, "--no-vector"]) == 2
    assert f"HF_NEGMERGE_HUB_TIMEOUT={value!r}" in capsys.readouterr().err
    assert silent_hub.request_lines() == []


@dataclass
class InterruptCase:
    command: str
    target: str  # what raises KeyboardInterrupt
    says: str
    never_says: tuple[str, ...] = field(default_factory=tuple)


INTERRUPTS = [
    InterruptCase("push", "hf_negmerge.hub._upload.hub_client", "is unchanged", ("reused on rerun",)),
    InterruptCase(
        "unlearn", "hf_negmerge.pipeline.run_unlearning", "finished work is kept and reused on rerun"
    ),
]


@pytest.mark.parametrize("case", INTERRUPTS, ids=[case.command for case in INTERRUPTS])
def test_ctrl_c_prints_the_commands_own_note(
    case: InterruptCase,
    tmp_path: Path,
    hub: HubStandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(case.target, interrupted)
    if case.command == "push":
        argv = ["push", str(_sealed_folder(tmp_path)), "--repo-id", REPO, "--no-vector"]
    else:
        argv = ["unlearn", "--output-dir", str(tmp_path / "out"), *TINY]
    assert cli_main(argv) == 130
    err = capsys.readouterr().err
    assert f"hf-negmerge {case.command}: interrupted" in err and case.says in err
    for text in case.never_says:
        assert text not in err


# -- 8. NegationVector.from_pretrained names the file on any malformed input ------------------------------------------
WEIGHTS, CONFIG = "negation_vector.safetensors", "negation_vector_config.json"


def _rewrite_config(**changes) -> Callable[[Path], Path]:
    def change(folder: Path) -> Path:
        values = json.loads((folder / CONFIG).read_text())
        values.update(changes)
        for key in [key for key, value in changes.items() if value is ...]:
            del values[key]
        (folder / CONFIG).write_text(json.dumps(values))
        return folder / CONFIG

    return change


def _write(name: str, data: bytes | Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    def change(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)
        return path

    return change


MALFORMED = {
    "empty weights": _write(WEIGHTS, b""),
    "weights cut in half": _write(WEIGHTS, lambda raw: raw[: len(raw) // 2]),
    "weights missing their last bytes": _write(WEIGHTS, lambda raw: raw[:-4]),
    "weights header not JSON": _write(WEIGHTS, b"\x05\x00\x00\x00\x00\x00\x00\x00{abc}"),
    "empty config": _write(CONFIG, b""),
    "config is a list": _write(CONFIG, b"[1, 2]"),
    "config not UTF-8": _write(CONFIG, b"\xff\xfe{"),
    "config without scale": _rewrite_config(scale=...),
    "config with a bad NegMergeConfig": _rewrite_config(negmerge_config={"method": 3}),
    "config with a string NegMergeConfig": _rewrite_config(negmerge_config="x"),
    "config metadata is a list": _rewrite_config(metadata=[1]),
}


@pytest.mark.parametrize("change", list(MALFORMED.values()), ids=list(MALFORMED))
def test_negation_vector_from_pretrained_names_the_bad_file(
    change: Callable[[Path], Path], tmp_path: Path
) -> None:
    NegationVector(
        {"w": torch.tensor([0.0, 1.0, 0.0, 2.0] * 10), "b": torch.ones(3)}, scale=1.0
    ).save_pretrained(tmp_path)
    bad = change(tmp_path)
    with pytest.raises(CheckpointError) as raised:
        NegationVector.from_pretrained(tmp_path)
    assert str(bad) in str(raised.value)
