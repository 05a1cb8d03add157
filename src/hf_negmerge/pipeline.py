"""The whole unlearning run: data → θ₀ → grid → merges → λ search → test evaluation → outputs.

A thin adapter: the stages are `unlearner.NegMergeUnlearner`'s, which a recipe configures here.
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

from .recipe import UnlearnRecipe
from .results import UnlearningOutcome


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
    """`run_unlearning` once torch's thread count is the policy's: the recipe's unlearner, run."""
    from .unlearner import NegMergeUnlearner

    result = NegMergeUnlearner.from_recipe(recipe, progress=progress, overwrite=overwrite).run()
    return None if result is None else result.outcome


__all__ = ["run_unlearning"]
