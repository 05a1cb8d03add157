"""Output folders hold only what the tool wrote: `--overwrite` keeps the user's files, links stay
links, paths that cannot resolve create nothing, published files carry no absolute local path.

Table-driven like tests/test_reliability_merge.py (its `Case`, `Env` and `invoke_checked`):
every case says how to set it up, what to call (the CLI in-process, as a subprocess, or the API),
the exit code, a fragment of the message, and which files present before the call must be
byte-identical afterwards. Merge cases run on two tiny ViT checkpoints; unlearn and push cases on
one tiny finished unlearning run (module-scoped, like tests/test_reliability_outputs.py).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

import hf_negmerge.checkpoints as checkpoints
import hf_negmerge.pipeline
import hf_negmerge.trials
from hf_negmerge.checkpoints import OUTPUT_MARKER
from hf_negmerge.cli import main
from hf_negmerge.errors import ConfigError, OutputError
from hf_negmerge.hub import push_unlearned_model
from hf_negmerge.pipeline import run_unlearning
from hf_negmerge.published_paths import portable_path, portable_paths
from hf_negmerge.recipe import load_recipe
from test_reliability_merge import (  # tests/ is on sys.path under pytest's default import mode
    INPUTS,
    Case,
    Env,
    dead_pid,
    earlier_merge,
    failing_writes,
    invoke_checked,
    merge_argv,
    no_merge_work,
    prototype,  # noqa: F401  (the module-scoped fixture of the tiny checkpoints)
    staging_left,
)
from test_reliability_outputs import TINY, cache, published  # noqa: F401 (module-scoped fixtures)

USER_FILES = {"out/NOTES.txt": "my notes\n", "out/eval/results.csv": "split,acc\ntest,0.9\n"}
OUT_OF_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no file name, as the OS often says


def unlearn_argv(env: Env, out: str = "out", *extra: str) -> list[str]:
    return [
        "unlearn",
        "--output-dir",
        str(env.root / out),
        f"original.cache_dir={env.state['cache']}",
        *TINY,
        *extra,
    ]


# -- setups --------------------------------------------------------------------------------------


def write_files(files: dict[str, str]) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        for name, text in files.items():
            (env.root / name).parent.mkdir(parents=True, exist_ok=True)
            (env.root / name).write_text(text)

    return setup


def steps(*setups: Callable[[Env], None]) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        for step in setups:
            step(env)

    return setup


def earlier_merge_with_model(env: Env) -> None:
    assert main(merge_argv(env, extra=("--scale", "0.5"))) == 0


def edit(name: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        with (env.root / name).open("a") as handle:
            handle.write("\nedited by the user\n")

    return setup


def edit_same_size(name: str) -> Callable[[Env], None]:
    """Change one byte: same size, so only the sha256 can tell."""

    def setup(env: Env) -> None:
        data = bytearray((env.root / name).read_bytes())
        data[-2] = ord("0") if data[-2] != ord("0") else ord("1")
        (env.root / name).write_bytes(bytes(data))

    return setup


def link(name: str, target: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        (env.root / name).symlink_to(target, target_is_directory=True)  # relative, as users make them

    return setup


def killed_after_swap(env: Env) -> None:
    """A run killed after its new output landed, before it moved the user's files over: they are
    still in the retired old output (`.out.old-*`), which carries a dead process's owner record."""
    earlier_merge(env)
    retired = env.root / ".out.old-abc123"
    retired.mkdir()
    shutil.copytree(env.root / "out", retired / "out")
    (retired / "out" / "NOTES.txt").write_text("my notes\n")
    record = {"tool": "hf-negmerge", "pid": dead_pid(), "host": socket.gethostname()}
    (retired / ".hf_negmerge_staging.json").write_text(json.dumps(record))


def published_copy(env: Env) -> None:
    shutil.copytree(env.state["published"], env.root / "out", symlinks=True)


def full_disk_in(target: str) -> Callable[[Env], None]:
    """`target` (a module attribute) fails with ENOSPC and no file name."""

    def setup(env: Env) -> None:
        def fail(*args: object, **kwargs: object) -> None:
            raise OUT_OF_SPACE

        env.monkeypatch.setattr(target, fail)

    return setup


def no_trial_runs(env: Env) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a trial started although the folder cannot take every output")

    env.monkeypatch.setattr(hf_negmerge.pipeline, "run_unlearning", refuse)


# -- checks --------------------------------------------------------------------------------------


def check_user_files_kept(folder: str = "out", files: dict[str, str] = USER_FILES) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        for name, text in files.items():
            name = name.replace("out/", f"{folder}/", 1)
            assert (env.root / name).read_text() == text, name
        marker = json.loads((env.root / folder / OUTPUT_MARKER).read_text())
        assert not {name.split("/", 1)[1] for name in files} & set(marker["files"])  # never counted as ours
        assert set(marker["written"]) == set(marker["files"])  # each file of ours has its sha256
        assert "merged_task_vector.safetensors" in marker["files"]
        assert not staging_left(env.root)

    return check


def check_rewritten(env: Env) -> None:
    """--overwrite of an unmodified earlier output replaced it: no unlearned model this time."""
    assert (env.root / "out" / "merged_task_vector.safetensors").is_file()
    assert not (env.root / "out" / "unlearned_model").exists()
    assert not staging_left(env.root)


def check_still_link(name: str, target: str) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        assert (env.root / name).is_symlink() and os.readlink(env.root / name) == target
        assert (env.root / target / "merged_task_vector.safetensors").is_file()
        assert not staging_left(env.root)

    return check


def check_link_kept(env: Env) -> None:
    assert (env.root / "link").is_symlink()


def check_out_at(name: str) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        assert (env.root / name / "merged_task_vector.safetensors").is_file()

    return check


def check_nothing_created(*names: str) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        for name in names:
            assert not os.path.lexists(env.root / name), name
        assert not staging_left(env.root)

    return check


def check_no_absolute_paths(env: Env) -> None:
    """No file a trial publishes (nor the trials summary) names the temp folder or the home."""
    forbidden = [str(env.state["basetemp"]), str(Path.home())]
    written = [
        path
        for path in (env.root / "trials").rglob("*")
        if path.is_file() and "work" not in path.relative_to(env.root / "trials").parts
    ]
    assert {path.name for path in written} >= {"metrics.json", "recipe.yaml", "README.md", "report.md"}
    assert {path.name for path in written} >= {"trials-summary.md", "trials-summary.json"}
    for path in written:
        data = path.read_bytes()  # the text files, and the safetensors headers too
        for text in forbidden:
            assert text.encode() not in data, (path, text)
    metrics = json.loads((env.root / "trials" / "seed-0" / "metrics.json").read_text())
    assert metrics["recipe"]["output_dir"] == "."
    assert metrics["recipe"]["original"]["cache_dir"] == os.path.relpath(
        env.state["cache"], env.root / "trials" / "seed-0"
    )


def check_unlearn_link(env: Env) -> None:
    assert (env.root / "link").is_symlink() and os.readlink(env.root / "link") == "out"
    assert (
        json.loads((env.root / "out" / "metrics.json").read_text())["recipe"]["evaluation"]["batch_size"]
        == 100
    )


# -- the table -----------------------------------------------------------------------------------

OVERWRITE = ("--overwrite",)

CASES: list[Case] = [
    # 1. merge --overwrite replaces only what the tool wrote, unchanged
    Case(
        "merge-overwrite-keeps-user-files",
        lambda e: merge_argv(e, extra=OVERWRITE),
        0,
        setup=steps(earlier_merge_with_model, write_files(USER_FILES)),
        kept=(*INPUTS, *USER_FILES),
        check=check_user_files_kept(),
    ),
    Case(
        "merge-overwrite-keeps-user-file-in-tool-folder",
        lambda e: merge_argv(e, extra=("--overwrite", "--scale", "0.7")),
        0,
        setup=steps(earlier_merge_with_model, write_files({"out/unlearned_model/mine.txt": "mine\n"})),
        kept=(*INPUTS, "out/unlearned_model/mine.txt"),
        check=check_user_files_kept(files={"out/unlearned_model/mine.txt": "mine\n"}),
    ),
    Case(
        "merge-overwrite-of-unmodified-output",
        lambda e: merge_argv(e, extra=OVERWRITE),
        0,
        setup=earlier_merge_with_model,
        kept=INPUTS,
        check=check_rewritten,
    ),
    Case(
        "merge-overwrite-refuses-edited-card",
        lambda e: merge_argv(e, extra=OVERWRITE),
        2,
        "README.md, which hf-negmerge wrote but which changed since",
        setup=steps(earlier_merge, edit("out/README.md"), no_merge_work),
    ),
    Case(
        "merge-overwrite-refuses-edited-nested-file",
        lambda e: merge_argv(e, extra=OVERWRITE),
        2,
        "unlearned_model/config.json, which hf-negmerge wrote but which changed since",
        setup=steps(earlier_merge_with_model, edit("out/unlearned_model/config.json"), no_merge_work),
    ),
    Case(
        "merge-overwrite-refuses-same-size-edit",
        lambda e: merge_argv(e, extra=OVERWRITE),
        2,
        "merge_config.yaml, which hf-negmerge wrote but which changed since",
        setup=steps(earlier_merge, edit_same_size("out/merge_config.yaml"), no_merge_work),
    ),
    Case(
        "merge-overwrite-api-refuses-edited-file",
        lambda e: checkpoints.check_output_dir(e.root / "out", True, OUTPUT_MARKER),
        2,
        "merge_stats.json, which hf-negmerge wrote but which changed since",
        setup=steps(earlier_merge, edit("out/merge_stats.json")),
        kind="api",
        error=OutputError,
    ),
    Case(
        "merge-overwrite-refuses-user-folder-with-an-output-name",
        lambda e: merge_argv(e, extra=("--overwrite", "--scale", "0.5")),
        2,
        "holds unlearned_model, which hf-negmerge did not write",
        setup=steps(earlier_merge, write_files({"out/unlearned_model/draft.txt": "mine\n"})),
    ),
    Case(
        "merge-overwrite-refuses-unreadable-marker",
        lambda e: merge_argv(e, extra=OVERWRITE),
        2,
        f"{OUTPUT_MARKER} cannot be read",
        setup=steps(earlier_merge, write_files({f"out/{OUTPUT_MARKER}": "{not json"}), no_merge_work),
    ),
    Case(
        "merge-full-disk-keeps-user-files-and-old-output",
        lambda e: merge_argv(e, extra=OVERWRITE),
        2,
        "No space left",
        setup=steps(earlier_merge, write_files(USER_FILES), failing_writes(1)),
    ),
    Case(
        "merge-killed-after-swap-hands-user-files-over",
        lambda e: merge_argv(e, extra=OVERWRITE),
        0,
        setup=killed_after_swap,
        kept=INPUTS,
        check=check_user_files_kept(files={"out/NOTES.txt": "my notes\n"}),
    ),
    Case(
        "merge-overwrite-keeps-user-files-subprocess",
        lambda e: merge_argv(e, extra=OVERWRITE),
        0,
        setup=steps(earlier_merge, write_files(USER_FILES)),
        kept=(*INPUTS, *USER_FILES),
        kind="subprocess",
        check=check_user_files_kept(),
    ),
    # 2. a symlinked output stays a symlink
    Case(
        "merge-overwrite-through-link",
        lambda e: merge_argv(e, out="link", extra=OVERWRITE),
        0,
        setup=steps(earlier_merge, write_files(USER_FILES), link("link", "out")),
        kept=(*INPUTS, *USER_FILES),
        check=steps(check_still_link("link", "out"), check_user_files_kept()),
    ),
    Case(
        "merge-link-to-user-folder-refused",
        lambda e: merge_argv(e, out="link", extra=OVERWRITE),
        2,
        "was not written by hf-negmerge",
        setup=steps(write_files({"mine/notes.txt": "mine\n"}), link("link", "mine"), no_merge_work),
        check=check_link_kept,
    ),
    Case(
        "merge-dangling-link-refused",
        lambda e: merge_argv(e, out="link", extra=OVERWRITE),
        2,
        "is a symlink to",
        setup=steps(link("link", "nowhere"), no_merge_work),
        check=steps(check_nothing_created("nowhere"), check_link_kept),
    ),
    # 5. a path the OS cannot resolve creates nothing
    Case(
        "merge-dotdot-through-missing-folder",
        lambda e: merge_argv(e, out="x/../y"),
        2,
        "x does not exist or is not a folder, so the '..' after it cannot be followed",
        setup=no_merge_work,
        check=check_nothing_created("x", "y"),
    ),
    Case(
        "merge-dotdot-through-existing-folder",
        lambda e: merge_argv(e, out="ft0/../y"),
        0,
        kept=INPUTS,
        check=check_out_at("y"),
    ),
    Case(
        "unlearn-dotdot-through-missing-folder",
        lambda e: unlearn_argv(e, "x/../y"),
        2,
        "x does not exist or is not a folder, so the '..' after it cannot be followed",
        check=check_nothing_created("x", "y"),
    ),
    # 2. unlearn into a link to its earlier output
    Case(
        "unlearn-rerun-through-link",
        lambda e: unlearn_argv(e, "link", "evaluation.batch_size=100"),
        0,
        setup=steps(published_copy, write_files({"out/NOTES.txt": "my notes\n"}), link("link", "out")),
        kept=("out/NOTES.txt",),
        check=check_unlearn_link,
    ),
    # 3. a full disk in unlearn names the folder
    Case(
        "unlearn-full-disk-at-claim",
        lambda e: unlearn_argv(e),
        2,
        "for the output folder {root}/out (No space left on device)",
        setup=full_disk_in("hf_negmerge.checkpoints.atomic_write_bytes"),
    ),
    Case(
        "unlearn-full-disk-while-preparing-data",
        lambda e: unlearn_argv(e),
        2,
        "No space left on the device while writing for the output folder {root}/out",
        setup=full_disk_in("hf_negmerge.unlearner.build_unlearning_data"),
    ),
    Case(
        "unlearn-full-disk-api",
        lambda e: run_unlearning(
            load_recipe(None, [*unlearn_argv(e)[3:4], *TINY[1:], f"output_dir={e.root / 'out'}"])
        ),
        2,
        "{root}/out",
        setup=full_disk_in("hf_negmerge.unlearner.build_unlearning_data"),
        kind="api",
    ),
    Case(
        "unlearn-seeds-full-disk-at-summary",
        lambda e: unlearn_argv(e, "trials", "--seeds", "0"),
        2,
        "No space left on the device while writing for the output folder {root}/trials",
        setup=full_disk_in("hf_negmerge.trials.atomic_write_text"),
    ),
    # 4. --seeds: every file the trials write is checked before the first trial
    Case(
        "unlearn-seeds-refuses-user-summary-before-any-trial",
        lambda e: unlearn_argv(e, "trials", "--seeds", "0", "1"),
        2,
        "trials-summary.md or",
        setup=steps(write_files({"trials/trials-summary.md": "my own summary\n"}), no_trial_runs),
        check=check_nothing_created("trials/seed-0", "trials/seed-1"),
    ),
    Case(
        "unlearn-seeds-refuses-foreign-trial-folder-before-any-trial",
        lambda e: unlearn_argv(e, "trials", "--seeds", "0", "1"),
        2,
        "trials/seed-1 is not empty and was not written by `hf-negmerge unlearn`",
        setup=steps(write_files({"trials/seed-1/notes.txt": "mine\n"}), no_trial_runs),
        check=check_nothing_created("trials/seed-0"),
    ),
    # 6. published files carry no absolute local path
    Case(
        "unlearn-seeds-publishes-no-absolute-path",
        lambda e: unlearn_argv(e, "trials", "--seeds", "0"),
        0,
        kept=(),
        check=check_no_absolute_paths,
    ),
    # 7. push: a branch name the Hub would refuse, before any work (dry run too)
    *(
        Case(
            f"push-revision-{name}",
            lambda e, revision=revision: [
                "push",
                str(e.root / "missing"),
                "--repo-id",
                "alice/x",
                "--dry-run",
                "--revision",
                revision,
            ],
            2,
            f"revision {revision!r} is not a valid branch name",
        )
        for name, revision in [
            ("dotdot-space", "../../x y"),
            ("dotdot", "a..b"),
            ("space", "my branch"),
            ("leading-dot", ".hidden"),
            ("dot-lock", "topic.lock"),
            ("empty-part", "a//b"),
            ("reflog", "main@{1}"),
            ("colon", "a:b"),
            ("empty", ""),
        ]
    ),
    Case(
        "push-revision-api",
        lambda e: push_unlearned_model(e.root / "missing", "alice/x", revision="../../x y"),
        2,
        "revision '../../x y' is not a valid branch name",
        kind="api",
        error=ConfigError,
    ),
    Case(
        "push-valid-revision-dry-run",
        lambda e: [
            "push",
            str(e.root / "out"),
            "--repo-id",
            "alice/x",
            "--dry-run",
            "--revision",
            "refs/pr/1",
        ],
        0,
        setup=published_copy,
    ),
    # 6. the rule itself (no absolute path leaves the machine)
    Case(
        "portable-path-rules",
        lambda e: portable_rules(e),
        0,
        kind="api",
    ),
]


def portable_rules(env: Env) -> None:
    """Each rule of `published_paths`, against paths written out by hand."""
    env.monkeypatch.setattr(Path, "home", classmethod(lambda cls: Path("/home/alice")))
    out = "/data/runs/out"
    assert portable_path("/data/runs/out", out) == "."
    assert portable_path("/data/runs/out/work/original/vit-1", out) == "work/original/vit-1"
    assert portable_path("/data/runs/cache/vit-1", out) == "../cache/vit-1"
    assert portable_path("/home/alice/.cache/hf_negmerge/vit-1", out) == "~/.cache/hf_negmerge/vit-1"
    assert portable_path("/home/alice/.cache/x", "/home/alice/p/out") == "../../.cache/x"
    assert portable_path("models/base", out) == "models/base"  # as the user gave it
    assert portable_path("google/vit-base", out) == "google/vit-base"  # a Hub id
    assert portable_paths(
        {"overrides": ['output_dir="/data/runs/out"', "original.cache_dir=/data/c", "seed=3"], "n": 1},
        out,
    ) == {"overrides": ['output_dir="."', "original.cache_dir=../../c", "seed=3"], "n": 1}


NEEDS_RUN = {"unlearn-rerun-through-link", "push-valid-revision-dry-run"}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_output_paths(
    case: Case,
    prototype: Path,  # noqa: F811
    cache: Path,  # noqa: F811
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    root = tmp_path / "case"
    shutil.copytree(prototype, root)
    env = Env(root, monkeypatch, {"cache": cache, "basetemp": tmp_path_factory.getbasetemp()})
    if case.id in NEEDS_RUN:
        env.state["published"] = request.getfixturevalue("published")
    try:
        if case.setup is not None:
            case.setup(env)
        # a failed case must leave every file as it was
        invoke_checked(case, env, capsys, case.message.replace("{root}", str(root)), keep_all=case.code != 0)
        if case.check is not None:
            case.check(env)
    finally:
        for cleanup in reversed(env.cleanups):
            cleanup()
