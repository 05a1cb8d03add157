"""The whole unlearning run: data → θ₀ → grid → merges → λ search → test evaluation → outputs.

Every stage that costs time is resumable: θ₀ is cached by its settings, finished grid runs are
skipped, and the final artifacts are written only once everything has been measured.

Output folder (`recipe.output_dir`), pushable as is (`work/` is ignored by `hf-negmerge push`):

    config.json, model.safetensors, preprocessor_config.json, (tokenizer files), hf_negmerge_classifier.json
                                 the unlearned classifier, loadable with from_pretrained
    negmerge_config.json         how it was merged
    merged_task_vector.safetensors   τ of the chosen method (θ_u = θ₀ − λ·τ)
    metrics.json, report.md      measured results (validation curve, test numbers, comparison)
    comparison.md, comparison.json
    lambda_curves.png, kept_fraction.png, loss_curves.png
    training_log.jsonl           loss and learning rate per optimizer step of every grid run
    lambda_curves.jsonl          validation accuracies per (method, λ)
    recipe.yaml                  the resolved recipe
    README.md                    model card
    hf_negmerge_outputs.json     every file above with its sha256, written last: the completeness
                                 marker `push` checks, and the record of what a rerun may replace
    work/grid/                   the fine-tuning runs (resumable), work/original/ when θ₀ was built here
    work/unlearn.lock            held by the running `unlearn` (its pid inside)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .data import build_unlearning_data
from .originals import (
    describe_original,
    model_label_names,
    note_validation_source,
    prepare_original,
    prepare_retrained,
)
from .output_folder import WORK_DIR
from .published_paths import portable_paths
from .recipe import UnlearnRecipe
from .results import UnlearningOutcome
from .source_checks import check_sources


def run_unlearning(
    recipe: UnlearnRecipe, progress: bool = True, overwrite: bool = False
) -> UnlearningOutcome | None:
    """Run (or resume) the whole recipe and write its output folder.

    The folder is checked and locked before any work: a folder the tool did not write is used
    only with `overwrite=True` (`--overwrite`), and even then none of its files is replaced.
    Under `accelerate launch` the grid points are shared among the processes; the main process
    then evaluates and writes the outputs, and the others return None. torch runs with the CLI's
    thread policy (`OMP_NUM_THREADS`, else one thread; see `threads.py`) for the call, so the
    same recipe trains the same weights from Python and from `hf-negmerge unlearn`.
    """
    from .threads import policy_threads

    with policy_threads():
        return _run_with_policy_threads(recipe, progress, overwrite)


def _run_with_policy_threads(
    recipe: UnlearnRecipe, progress: bool, overwrite: bool
) -> UnlearningOutcome | None:
    """`run_unlearning` once torch's thread count is the policy's: checks, claim, run."""
    from accelerate import PartialState

    from .output_folder import check_output_dir, claim_output_folder, naming_full_disk
    from .plan import warn_before_training
    from .tracking import check_trackers

    output_dir = check_output_dir(recipe.output_dir)
    check_sources(recipe)  # the same path and split checks as --dry-run, before any work
    check_trackers(recipe.evaluation.log_with)  # a missing tracker package fails now, not at the end
    warn_before_training(recipe)  # what the plan warns about, for API callers
    if not progress:
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    started = time.perf_counter()
    # cpu=True when there is no GPU: otherwise torchrun / accelerate launch CPU processes each
    # see a single-process world and all of them would run the whole grid.
    state = PartialState(cpu=not torch.cuda.is_available())
    with naming_full_disk(output_dir):
        with state.main_process_first():  # the main process claims (checks, locks) the folder first
            claim = claim_output_folder(output_dir, overwrite) if state.is_main_process else None
        try:
            return _run_claimed(recipe, progress, state, output_dir, started)
        finally:
            if claim is not None:
                claim.release()


def _run_claimed(
    recipe: UnlearnRecipe, progress: bool, state: Any, output_dir: Path, started: float
) -> UnlearningOutcome | None:
    """The run itself, once the main process holds the output folder's lock: one call per stage."""
    from .evaluation.engine import evaluate_methods, keeps_run_vectors, score_retrain
    from .models import ImageClassifier
    from .training.runner import run_grid

    seconds: dict[str, float] = {}
    work = output_dir / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    data = build_unlearning_data(recipe.data, model_label_names(recipe))
    note_validation_source(recipe, data)
    with state.main_process_first():  # θ₀ is trained once; the other processes then load it
        base_dir = prepare_original(recipe, data, work, progress and state.is_main_process)
    # what θ₀ was, as published: local paths relative to the output folder
    original_model = portable_paths(describe_original(recipe, base_dir), output_dir)
    seconds["original"] = time.perf_counter() - started

    tick = time.perf_counter()
    grid = run_grid(
        base_dir,
        data,
        recipe.grid,
        work / "grid",
        merge_config=recipe.merge,
        keep_task_vectors=keeps_run_vectors(recipe),
        keep_checkpoints=recipe.keep_checkpoints,
        progress=progress,
        base_description=f"{original_model['source']}={original_model['base_model']}",
    )
    seconds["grid"] = time.perf_counter() - tick
    if not state.is_main_process:  # grid points were sharded; evaluation and outputs are the main process's
        return None

    tick = time.perf_counter()
    classifier = ImageClassifier.from_pretrained(base_dir)
    evaluation = evaluate_methods(recipe, data, classifier, grid, progress)
    seconds["evaluation"] = time.perf_counter() - tick

    retrain = None
    retrained_dir = prepare_retrained(recipe, data, progress) if recipe.evaluation.retrain else None
    if retrained_dir is not None:
        retrain = score_retrain(evaluation, ImageClassifier.from_pretrained(retrained_dir), recipe)

    outcome = UnlearningOutcome(
        output_dir,
        evaluation.original,
        evaluation.main,
        evaluation.comparison,
        evaluation.per_run,
        retrain,
        grid.merge,
        portable_paths(data.summary(), output_dir),
        grid.run_ids,
        seconds,
        original_model,
    )
    outcome.assess(recipe.data.scenario)  # statuses; warnings: weak θ₀, λ at the grid edge, tiny vector
    evaluation.evaluator.set_weights(grid.task_vector, evaluation.main.selection.scale)
    seconds["total"] = time.perf_counter() - started
    write_outputs(recipe, outcome, evaluation.evaluator.classifier, base_dir)
    if recipe.evaluation.log_with:
        _send_to_trackers(recipe, outcome, work)
    return outcome


def write_outputs(recipe: UnlearnRecipe, outcome: UnlearningOutcome, unlearned: Any, base_dir: Path) -> None:
    """Build every artifact in a staging folder (outputs), then publish them in one step (output_folder)."""
    from .output_folder import publish_outputs
    from .outputs import build_output_files

    publish_outputs(
        outcome.output_dir,
        lambda staging: build_output_files(recipe, outcome, unlearned, base_dir, staging),
    )


def _send_to_trackers(recipe: UnlearnRecipe, outcome: UnlearningOutcome, work: Path) -> None:
    """The runs' losses and the λ curves to the recipe's trackers (evaluation.log_with)."""
    from .outputs import lambda_log_rows, run_logs
    from .tracking import send_to_trackers

    send_to_trackers(
        recipe.evaluation.log_with,
        work / "trackers",
        run_logs(outcome),
        lambda_log_rows(outcome),
        {"method": recipe.merge.method, "runs": len(outcome.run_ids), "scale": outcome.main.selection.scale},
    )


__all__ = ["run_unlearning", "write_outputs"]
