"""Reliability of what the tool reads before it works and what it tells users to run afterwards.

Table-driven like tests/test_reliability_merge.py: every case says how to set it up, what to call
(the CLI in-process, the CLI as a subprocess, or the Python API), the expected exit code (API: 2 = a
NegMergeError was raised, 0 = it returned), a fragment of the message (API: the error, or the log of
a call that returned), a fragment the message must not hold, and which files must still exist
byte-identical afterwards. Covered: recipe errors name their source (the file or the override),
unknown grid augmentations are refused when the recipe is read, parquet image columns that hold no
images are refused naming the file, and a cached θ₀ is reused only while its weights hash as
recorded. The model cards' usage examples are run as written, after the table.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_negmerge import pipeline, unlearner
from hf_negmerge.cli import main
from hf_negmerge.data import load_digits_dataset, load_image_dataset
from hf_negmerge.errors import CheckpointError, ConfigError, NegMergeError
from hf_negmerge.evaluation import predict_dataset
from hf_negmerge.models import ImageClassifier, ModelConfig
from hf_negmerge.models._source import weights_sha256
from hf_negmerge.training.grid import HyperparameterError, TrainingHyperparameters
from hf_negmerge.training.pretrain import PRETRAIN_RECORD_FILE, prepare_original_model
from test_reliability_merge import child_env, snapshot

# ------------------------------------------------------------------------------------------------
# Building blocks


@dataclass
class Env:
    """What a setup may use: the case folder, monkeypatch, and state handed to the check."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Env], Any]  # CLI: returns argv; API: performs the call
    code: int
    message: str = ""
    absent: str | None = None  # a fragment the message must not hold
    setup: Callable[[Env], None] | None = None
    kept: tuple[str, ...] = ("*",)  # pre-existing files (fnmatch) that must stay byte-identical
    kind: str = "cli"  # "cli" (in-process), "subprocess" or "api"
    error: type[BaseException] = NegMergeError  # API: the class the error must have
    check: Callable[[Env], None] | None = None


def unlearn(*overrides: str, dry_run: bool = True, config: str | None = None) -> Callable[[Env], list[str]]:
    """`hf-negmerge unlearn` with these overrides; `{root}` becomes the case folder."""

    def call(env: Env) -> list[str]:
        argv = ["unlearn", "--no-progress", *(["--dry-run"] if dry_run else [])]
        if config is not None:
            argv += ["--config", str(env.root / config)]
        argv += [f"output_dir={env.root / 'out'}", f"original.cache_dir={env.root / 'cache'}"]
        return argv + [override.replace("{root}", str(env.root)) for override in overrides]

    return call


def no_work(env: Env) -> None:
    """Fail loudly if a run gets past validation into loading data or training."""

    def reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run went past validation")

    for module, name in ((unlearner, "build_unlearning_data"), (pipeline, "run_unlearning")):
        env.monkeypatch.setattr(module, name, reached)


def recipe_file(text: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        (env.root / "recipe.yaml").write_text(text, encoding="utf-8")
        no_work(env)

    return setup


# -- parquet datasets ----------------------------------------------------------------------------


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def rows(images: list[Any], **extra: list[Any]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"image": images, "label": [i % 2 for i in range(len(images))], **extra}
    )


GOOD = [png(10), png(200)] * 4


def parquet_folder(name: str, train: list[Any], test: list[Any] = GOOD, **extra: list[Any]) -> None:
    """A folder `name` with train.parquet and test.parquet (written with `datasets`)."""

    def setup(env: Env) -> None:
        (env.root / name).mkdir()
        rows(train, **extra).to_parquet(str(env.root / name / "train.parquet"))
        rows(test, **{k: v[: len(test)] for k, v in extra.items()}).to_parquet(
            str(env.root / name / "test.parquet")
        )

    return setup


def then(*setups: Callable[[Env], None]) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        for step in setups:
            step(env)

    return setup


def saved_with_int_images(env: Env) -> None:
    data = datasets.DatasetDict({"train": rows(list(range(8))), "test": rows(list(range(8)))})
    data.save_to_disk(str(env.root / "saved_int"))


def load(source: str, **options: Any) -> Callable[[Env], Any]:
    return lambda env: load_image_dataset(str(env.root / source), **options)


INT_IMAGES = "image column 'image' holds int64 values, which are not images; expected encoded image bytes"


# -- the cached θ₀ -----------------------------------------------------------------------------

ORIGINAL = ModelConfig(
    architecture="vit", tiny={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
)


def original_rows() -> datasets.Dataset:
    return load_digits_dataset()["train"].select(range(96))


def prepare(env: Env) -> Path:
    """θ₀ from the case's cache, exactly as the prototype was made."""
    env.state["folder"] = prepare_original_model(
        ORIGINAL, original_rows(), env.root / "cache", epochs=1, batch_size=32, progress=False
    )
    return env.state["folder"]


def entry(env: Env) -> Path:
    (folder,) = (env.root / "cache").glob("vit-*")
    return folder


def no_training(env: Env) -> None:
    from hf_negmerge.training import pretrain

    env.monkeypatch.setattr(pretrain, "train_loop", lambda *a, **k: pytest.fail("θ₀ was trained again"))


def edit_weights(env: Env) -> None:
    path = entry(env) / "model.safetensors"
    weights = load_file(path)
    key = sorted(weights)[0]
    weights[key] = weights[key] + 1.0
    save_file(weights, path, metadata={"format": "pt"})


def truncate_weights(env: Env) -> None:
    path = entry(env) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])


def delete_weights(env: Env) -> None:
    (entry(env) / "model.safetensors").unlink()


def edit_record(change: Callable[[dict[str, Any]], Any]) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        path = entry(env) / PRETRAIN_RECORD_FILE
        record = json.loads(path.read_text(encoding="utf-8"))
        change(record)
        path.write_text(json.dumps(record), encoding="utf-8")

    return setup


def garbage_record(env: Env) -> None:
    (entry(env) / PRETRAIN_RECORD_FILE).write_text("{not json", encoding="utf-8")


def users_folder_under_the_key(env: Env) -> None:
    """A folder of the user's at the entry's name, without the tool's record."""
    folder = entry(env)
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's own work")


def check_rebuilt(env: Env) -> None:
    """Retrained in place: the record holds the weights' hash, and they are the prototype's bytes."""
    folder = env.state["folder"]
    record = json.loads((folder / PRETRAIN_RECORD_FILE).read_text(encoding="utf-8"))
    assert record["weights_sha256"] == weights_sha256(folder) == env.state["prototype_sha256"]


def check_reused(env: Env) -> None:
    assert env.state["folder"] == entry(env)
    assert weights_sha256(entry(env)) == env.state["prototype_sha256"]


RECORDS_OTHER = "does not hold the settings its folder name stands for, so hf-negmerge did not write it"
# every pre-existing file except the θ₀ entry that a case retrains in place
OUTSIDE_THE_ENTRY = ("notes.txt", "cache/user-notes.txt")


# ------------------------------------------------------------------------------------------------
# The table

CASES: list[Case] = [
    # --- recipe errors name their source ------------------------------------------------------
    Case(
        "override-null-blamed-on-the-override",
        unlearn("model.tiny=null"),
        2,
        "Override 'model.tiny=null' from the command line: Recipe key 'model.tiny' has the wrong type",
        absent="default.yaml",
    ),
    Case(
        "override-among-valid-ones",
        unlearn("seed=1", "model.tiny=null", "data.seed=2"),
        2,
        "Override 'model.tiny=null' from the command line",
        absent="default.yaml",
    ),
    Case(
        "override-null-real-run",
        unlearn("model.tiny=null", dry_run=False),
        2,
        "Override 'model.tiny=null' from the command line",
        absent="default.yaml",
        setup=no_work,
    ),
    Case(
        "override-null-subprocess",
        unlearn("model.tiny=null"),
        2,
        "Override 'model.tiny=null' from the command line",
        absent="default.yaml",
        kind="subprocess",
    ),
    Case(
        "override-clashing-with-the-file",
        unlearn("original.path={root}/elsewhere", config="recipe.yaml"),
        2,
        "Override 'original.path={root}/elsewhere' from the command line: Recipe section 'original'",
        absent="recipe.yaml",
        setup=recipe_file("original:\n  train: true\n"),
    ),
    Case(
        "file-error-named-by-the-file",
        unlearn("data.seed=3", config="recipe.yaml"),
        2,
        "{root}/recipe.yaml: seed must be a non-negative integer, got -1",
        absent="Override",
        setup=recipe_file("seed: -1\n"),
    ),
    Case(
        "file-error-with-an-unrelated-bad-override-first",
        unlearn("seed=-2", config="recipe.yaml"),
        2,
        "Override 'seed=-2' from the command line: seed must be a non-negative integer, got -2",
        setup=recipe_file("seed: -1\n"),
    ),
    Case(
        "file-error-fixed-by-an-override",
        unlearn("seed=3", config="recipe.yaml"),
        0,
        "outputs:",
        setup=recipe_file("seed: -1\n"),
    ),
    Case(
        "override-without-equals",
        unlearn("model.tiny"),
        2,
        "Override 'model.tiny' must look like key.subkey=value",
        absent="default.yaml",
    ),
    Case("valid-overrides", unlearn("seed=1", "data.seed=2"), 0, "outputs:"),
    # --- grid augmentations are checked against the registry when the recipe is read ------------
    Case(
        "augmentation-unknown-base",
        unlearn("grid.base.augmentation=autoaugment"),
        2,
        "Recipe key 'grid.base.augmentation': TrainingHyperparameters.augmentation='autoaugment' is not a "
        "registered transform; known: cifar_pad_crop_flip, randaugment, timm_randaugment",
    ),
    Case(
        "augmentation-unknown-real-run",
        unlearn("grid.base.augmentation=autoaugment", dry_run=False),
        2,
        "Recipe key 'grid.base.augmentation'",
        setup=no_work,
    ),
    Case(
        "augmentation-unknown-axis",
        unlearn("grid.axes.augmentation=[randaugment, flips]"),
        2,
        "Recipe key 'grid.axes.augmentation'",
    ),
    Case(
        "augmentation-unknown-point",
        unlearn("grid.axes=null", "grid.points=[{seed: 0}, {augmentation: flips}]"),
        2,
        "Recipe key 'grid.points[1].augmentation'",
    ),
    Case(
        "augmentation-unknown-in-the-file",
        unlearn(config="recipe.yaml"),
        2,
        "{root}/recipe.yaml: Recipe key 'grid.base.augmentation': TrainingHyperparameters.augmentation='flips'",
        setup=recipe_file("grid:\n  base:\n    augmentation: flips\n"),
    ),
    Case(
        "augmentation-not-a-string",
        unlearn("grid.base.augmentation=[randaugment]"),
        2,
        "grid.base.augmentation",
    ),
    Case(
        "augmentation-known",
        unlearn("grid.base.augmentation=cifar_pad_crop_flip"),
        0,
        "grid: 6 fine-tuning run(s)",
    ),
    Case(
        "augmentation-api",
        lambda env: TrainingHyperparameters(augmentation="flips"),
        2,
        "augmentation='flips' is not a registered transform",
        kind="api",
        error=HyperparameterError,
    ),
    # --- parquet image columns ---------------------------------------------------------------------
    Case(
        "parquet-int-images-dry-run",
        unlearn("data.dataset={root}/pq_int"),
        2,
        "data.dataset: parquet file '{root}/pq_int/train.parquet': " + INT_IMAGES,
        absent="test.parquet",
        setup=parquet_folder("pq_int", list(range(8))),
    ),
    Case(
        "parquet-int-images-real-run",
        unlearn("data.dataset={root}/pq_int", dry_run=False),
        2,
        "parquet file '{root}/pq_int/train.parquet': " + INT_IMAGES,
        setup=then(parquet_folder("pq_int", list(range(8))), no_work),
    ),
    Case(
        "parquet-int-images-subprocess",
        unlearn("data.dataset={root}/pq_int"),
        2,
        "parquet file '{root}/pq_int/train.parquet': " + INT_IMAGES,
        setup=parquet_folder("pq_int", list(range(8))),
        kind="subprocess",
    ),
    Case(
        "parquet-float-images",
        unlearn("data.dataset={root}/pq_float"),
        2,
        "image column 'image' holds double values",
        setup=parquet_folder("pq_float", [0.5] * 8),
    ),
    Case(
        "parquet-list-images",
        unlearn("data.dataset={root}/pq_list"),
        2,
        "image column 'image' holds list<element: int64> values",
        setup=parquet_folder("pq_list", [[1, 2]] * 8),
    ),
    Case(
        "parquet-mapping-source",
        unlearn("data.dataset={train: {root}/pq_int/train.parquet, test: {root}/pq_int/test.parquet}"),
        2,
        "parquet file '{root}/pq_int/train.parquet': " + INT_IMAGES,
        setup=parquet_folder("pq_int", list(range(8))),
    ),
    Case(
        "parquet-renamed-image-column",
        unlearn("data.dataset={root}/pq_cols", "data.image_column=pixels"),
        2,
        "image column 'pixels' holds int64 values",
        setup=parquet_folder("pq_cols", GOOD, pixels=list(range(8))),
    ),
    Case(
        "parquet-control-dataset",
        unlearn("data.control_dataset={root}/pq_int"),
        2,
        "data.control_dataset: parquet file '{root}/pq_int/train.parquet'",
        setup=parquet_folder("pq_int", list(range(8))),
    ),
    Case(
        "parquet-int-images-api",
        load("pq_int"),
        2,
        "parquet file '{root}/pq_int/train.parquet': " + INT_IMAGES,
        setup=parquet_folder("pq_int", list(range(8))),
        kind="api",
        error=ConfigError,
    ),
    Case(
        "saved-int-images-api",
        load("saved_int"),
        2,
        "column 'image' holds Value('int64'), which is not an image (expected image bytes, file paths",
        setup=saved_with_int_images,
        kind="api",
        error=ConfigError,
    ),
    Case(
        "parquet-image-bytes",
        unlearn("data.dataset={root}/pq_good"),
        0,
        "outputs:",
        setup=parquet_folder("pq_good", GOOD),
    ),
    Case(
        "parquet-image-bytes-other-column",
        unlearn("data.dataset={root}/pq_cols", "data.image_column=pixels"),
        0,
        "outputs:",
        setup=parquet_folder("pq_cols", list(range(8)), pixels=GOOD),
    ),
    Case(
        "parquet-image-bytes-api",
        load("pq_good", split="train"),
        0,
        setup=parquet_folder("pq_good", GOOD),
        kind="api",
    ),
    # --- the cached θ₀ -------------------------------------------------------------------------
    Case("cache-intact-reused", prepare, 0, setup=no_training, kind="api", check=check_reused),
    Case(
        "cache-weights-edited",
        prepare,
        0,
        "weight file(s) model.safetensors hash",
        setup=edit_weights,
        kept=OUTSIDE_THE_ENTRY,
        kind="api",
        check=check_rebuilt,
    ),
    Case(
        "cache-weights-truncated",
        prepare,
        0,
        "(changed or truncated on disk); training θ₀ again in its place",
        setup=truncate_weights,
        kept=OUTSIDE_THE_ENTRY,
        kind="api",
        check=check_rebuilt,
    ),
    Case(
        "cache-weights-deleted",
        prepare,
        0,
        "weight file(s) (none) hash None",
        setup=delete_weights,
        kept=OUTSIDE_THE_ENTRY,
        kind="api",
        check=check_rebuilt,
    ),
    Case(
        "cache-record-without-hash",
        prepare,
        0,
        "no weights sha256 recorded in pretrain.json",
        setup=edit_record(lambda record: record.pop("weights_sha256")),
        kept=OUTSIDE_THE_ENTRY,
        kind="api",
        check=check_rebuilt,
    ),
    Case(
        "cache-record-garbage",
        prepare,
        2,
        "pretrain.json cannot be read",
        setup=then(garbage_record, no_training),
        kind="api",
        error=CheckpointError,
    ),
    Case(
        "cache-record-other-settings",
        prepare,
        2,
        RECORDS_OTHER,
        setup=then(edit_record(lambda record: record.update(epochs=7)), no_training),
        kind="api",
        error=CheckpointError,
    ),
    Case(
        "cache-record-empty",
        prepare,
        2,
        RECORDS_OTHER,
        setup=then(edit_record(lambda record: record.clear()), no_training),
        kind="api",
        error=CheckpointError,
    ),
    Case(
        "cache-users-folder-at-the-key",
        prepare,
        2,
        "was not written by hf-negmerge (it has no hf_negmerge_classifier.json); refusing to replace it",
        setup=then(users_folder_under_the_key, no_training),  # refused before θ₀ is trained
        kind="api",
    ),
]


@pytest.fixture(scope="module")
def prototype(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A case folder with the user's notes and a θ₀ cache holding one entry (trained once)."""
    root = tmp_path_factory.mktemp("proto")
    (root / "notes.txt").write_text("the user's own work")
    folder = prepare_original_model(
        ORIGINAL, original_rows(), root / "cache", epochs=1, batch_size=32, progress=False
    )
    (root / "cache" / "user-notes.txt").write_text("kept beside the cache entries")
    return root, weights_sha256(folder)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_reliability(
    case: Case,
    prototype: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "case"
    shutil.copytree(prototype[0], root)
    env = Env(root, monkeypatch, {"prototype_sha256": prototype[1]})
    monkeypatch.chdir(root)
    if case.setup is not None:
        case.setup(env)
    before = snapshot(root)
    message = _invoke(case, env, capsys, caplog)
    after = snapshot(root)
    assert case.message.replace("{root}", str(root)) in message, message
    assert case.absent is None or case.absent not in message, message
    assert "Traceback" not in message
    kept = {name for name in before if any(fnmatch.fnmatchcase(name, pattern) for pattern in case.kept)}
    changed = sorted(name for name in kept if after.get(name) != before[name])
    assert not changed, f"changed or deleted: {changed}"
    assert not (root / "out").exists()  # dry runs and refusals write no output
    if case.check is not None:
        case.check(env)


def _invoke(case: Case, env: Env, capsys, caplog) -> str:
    """Run the case; assert its exit code; return its message (stderr, the error, or the log)."""
    if case.kind == "cli":
        capsys.readouterr()
        code = main(case.call(env))
        captured = capsys.readouterr()
        message = captured.err if code else captured.out + captured.err
    elif case.kind == "subprocess":
        done = subprocess.run(
            [sys.executable, "-m", "hf_negmerge.cli", *case.call(env)],
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=env.root,
        )
        code, message = done.returncode, done.stderr
    else:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hf_negmerge"):
            try:
                case.call(env)
            except NegMergeError as error:
                assert isinstance(error, case.error), f"{type(error).__name__}: {error}"
                code, message = 2, str(error)
            else:
                code, message = 0, caplog.text
    assert code == case.code, message
    return message


def test_subprocess_cases_import_this_worktree() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import hf_negmerge; print(hf_negmerge.__file__)"],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    assert Path(done.stdout.strip()).resolve() == Path(sys.modules["hf_negmerge"].__file__).resolve()


# ------------------------------------------------------------------------------------------------
# Concurrent θ₀ training on a cold cache

CONCURRENT = """
import sys
from hf_negmerge.data import load_digits_dataset
from hf_negmerge.models import ModelConfig
from hf_negmerge.training.pretrain import prepare_original_model
config = ModelConfig(architecture="vit", tiny={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1})
rows = load_digits_dataset()["train"].select(range(96))
print(prepare_original_model(config, rows, sys.argv[1], epochs=1, batch_size=32, progress=False))
"""


def test_two_processes_on_a_cold_cache_end_with_one_consistent_entry(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**child_env(), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", CONCURRENT, str(cache)]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in outputs]
    folders = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(folders) == 1 and [p.name for p in cache.iterdir()] == [Path(folders.pop()).name]
    (folder,) = cache.iterdir()
    record = json.loads((folder / PRETRAIN_RECORD_FILE).read_text(encoding="utf-8"))
    assert record["weights_sha256"] == weights_sha256(folder)  # whichever process wrote last, they agree


# ------------------------------------------------------------------------------------------------
# The model cards' usage examples, run as written (local folders instead of Hub ids, offline)

TINY_RUN = [
    "model.tiny={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1}",
    "grid.axes.seed=[0]",
    "grid.axes.learning_rate=[0.001]",
    "grid.base.epochs=1",
    "comparison=[]",
    "merge.lambda_grid=[0, 0.5]",
]


def run_tiny(root: Path, *extra: str) -> Path:
    out = root / "out"
    assert (
        main(
            [
                "unlearn",
                "--no-progress",
                "--output-dir",
                str(out),
                f"original.cache_dir={root / 'cache'}",
                *TINY_RUN,
                *extra,
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # learning rate 0.001 trains the tiny CLIP's θ₀ to well above chance in a few epochs
    return run_tiny(
        tmp_path_factory.mktemp("clip"),
        "model.architecture=clip",
        "original.epochs=5",
        "original.learning_rate=0.001",
    )


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_tiny(tmp_path_factory.mktemp("vit"), "original.epochs=3")


def usage_code(folder: Path) -> str:
    """The card's "How to use" example, pointed at the local folder."""
    card = (folder / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## How to use\n\n```python\n(.*?)\n```", card, re.S).group(1)
    assert "<this-repo>" in code
    return code.replace("<this-repo>", str(folder))


def run_example(code: str, image: PIL.Image.Image, folder: Path) -> str:
    """What the example prints for `image` saved as image.png, run in-process."""
    image.save(folder / "image.png")
    printed = io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), {"__name__": "__card__"})
    finally:
        os.chdir(cwd)
    return printed.getvalue().strip().splitlines()[-1]


def test_clip_card_example_classifies_a_retained_class_as_the_tools_evaluation_does(
    clip_run: Path, tmp_path: Path
) -> None:
    code = usage_code(clip_run)
    assert "candidate_labels" not in code  # full sentences under "This is a photo of {}." scored 0 of 20
    classifier = ImageClassifier.from_pretrained(clip_run)
    test = load_digits_dataset()["test"]
    retained = [name for name in classifier.class_names if name != "0"]  # the run forgot class 0
    by_class = {
        name: test.filter(lambda row, n=int(name): row["label"] == n).select(range(20)) for name in retained
    }
    scored = {name: predict_dataset(classifier, rows, batch_size=20) for name, rows in by_class.items()}
    best = max(retained, key=lambda name: scored[name].accuracy())  # a class this model knows
    images = by_class[best]
    assert scored[best].accuracy() >= 50.0, {name: s.accuracy() for name, s in scored.items()}
    printed = [run_example(code, row["image"], tmp_path) for row in images]
    tool = [classifier.class_names[int(index)] for index in scored[best].predicted]
    assert printed == tool  # image by image, the evaluation's own predictions
    correct = sum(label == best for label in printed)
    assert correct == round(scored[best].accuracy() * len(images) / 100)


def test_vit_card_says_rgb_and_its_example_runs_on_a_grayscale_image(vit_run: Path, tmp_path: Path) -> None:
    from transformers import AutoImageProcessor

    card = (vit_run / "README.md").read_text(encoding="utf-8")
    assert "Images must be RGB" in card and '.convert("RGB")' in usage_code(vit_run)
    gray = load_digits_dataset()["test"][5]["image"]
    assert gray.mode == "L"
    with pytest.raises(ValueError):  # what the card warns about: the processor alone refuses it
        AutoImageProcessor.from_pretrained(vit_run)(images=gray, return_tensors="pt")
    gray.save(tmp_path / "image.png")
    done = subprocess.run(
        [sys.executable, "-c", usage_code(vit_run)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    classifier = ImageClassifier.from_pretrained(vit_run)
    with torch.no_grad():
        expected = classifier.class_names[int(classifier(classifier.preprocess([gray])).argmax())]
    pipeline_line, step_by_step = done.stdout.strip().splitlines()[-2:]
    assert step_by_step == expected
    assert f"'label': '{expected}'" in pipeline_line.split("}")[0]  # the pipeline's top label agrees


def test_a_truncated_cached_original_is_rebuilt_and_the_run_repeats_exactly(
    vit_run: Path, tmp_path: Path, caplog
) -> None:
    root = vit_run.parent
    (entry_folder,) = (root / "cache").glob("vit-*")
    first = json.loads((vit_run / "metrics.json").read_text(encoding="utf-8"))
    weights = entry_folder / "model.safetensors"
    recorded = weights.read_bytes()
    weights.write_bytes(recorded[: len(recorded) // 2])
    again = tmp_path / "again"
    assert (
        main(
            [
                "unlearn",
                "--no-progress",
                "--output-dir",
                str(again),
                f"original.cache_dir={root / 'cache'}",
                *TINY_RUN,
                "original.epochs=3",
            ]
        )
        == 0
    )
    assert f"Cached θ₀ {entry_folder}: weight file(s) model.safetensors hash" in caplog.text
    assert weights.read_bytes() == recorded  # retrained from the same settings: the same bytes
    second = json.loads((again / "metrics.json").read_text(encoding="utf-8"))
    assert second["unlearned"] == first["unlearned"] and second["original"] == first["original"]
