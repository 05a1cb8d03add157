"""What a recipe would do and cost, from the recipe alone: `hf-negmerge unlearn --dry-run`.

`describe_plan` names the stages a run would go through; `plan_budget` counts their cost (optimizer
steps, evaluations, downloads, disk, time) without training or downloading anything. Its time
estimate uses the throughputs measured in docs/benchmarks.md ("Throughput for --dry-run").
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import build_unlearning_data
from .errors import ConfigError, warn
from .evaluation.engine import evaluation_count, keeps_run_vectors
from .originals import original_training_split
from .output_folder import WORK_DIR
from .recipe import UnlearnRecipe
from .results import METRICS_FILE
from .source_checks import check_sources

logger = logging.getLogger(__name__)


def describe_plan(recipe: UnlearnRecipe, budget: bool = False) -> str:
    """What a run would do, from the recipe alone: nothing is downloaded or trained.

    Local paths and split names are checked first (ConfigError naming the recipe key), so a
    typo fails here rather than after θ₀ or the grid has trained. With `budget` (`--dry-run`)
    the plan adds its cost (`plan_budget`): steps, evaluations, downloads, disk and time.
    """
    from .tracking import check_trackers
    from .training.grid import rows_for_warmup, warmup_key

    notes = check_sources(recipe)
    check_trackers(recipe.evaluation.log_with)
    points = recipe.grid.expand()
    model = recipe.model.name_or_path or f"tiny {recipe.model.architecture} built from config"
    lines = [
        f"data: {recipe.data.dataset!r} (scenario {recipe.data.scenario!r}"
        + (f", forget classes {recipe.data.forget_classes}" if recipe.data.forget_classes else "")
        + (f", control {recipe.data.control_dataset!r}" if recipe.data.control_dataset else "")
        + ")",
        f"model: {model} ({recipe.model.architecture})"
        + (
            " — θ₀ trained here first on the train split minus validation rows (cached)"
            if recipe.original.train
            else ""
        ),
    ]
    lines += _clip_plan(recipe)
    lines += [f"grid: {len(points)} fine-tuning run(s) on the forget set"]
    lines += [f"  - {point.id}: {json.dumps(point.overrides, sort_keys=True)}" for point in points]
    warming = [point for point in points if point.hyperparameters.warmup_steps > 0]
    if warming:
        longest = max(warming, key=lambda point: rows_for_warmup(point.hyperparameters)).hyperparameters
        lines.append(
            f"  warm-up of {longest.warmup_steps} optimizer steps ends before a run does only with more than "
            f"{rows_for_warmup(longest) - 1} forget-train rows (batch {longest.batch_size}, {longest.epochs} "
            f"epochs); with fewer, lower {warmup_key(warming)} or raise the epochs (the run warns once)"
        )
    lines += [
        f"merge: {recipe.merge.method} (consensus_fraction={recipe.merge.consensus_fraction}); "
        f"λ grid {recipe.merge.lambda_grid[0]:g}..{recipe.merge.lambda_grid[-1]:g} ({len(recipe.merge.lambda_grid)} points), "
        f"retain ratio {recipe.merge.retain_ratio}",
        f"comparison: {', '.join(recipe.comparison) or 'none'}",
        f"evaluation: MIA {'on' if recipe.mia_enabled else 'off'}, retrain reference "
        f"{'on' if recipe.evaluation.retrain else 'off'}",
        f"outputs: {recipe.output_dir} (model, {METRICS_FILE}, report.md, plots, README.md); runs in "
        f"{Path(recipe.output_dir) / WORK_DIR / 'grid'}",
    ]
    lines += [f"note: {note}" for note in notes]
    lora_warning = lora_rate_warning(recipe)
    lines += [f"Warning: {lora_warning}"] if lora_warning else []
    if budget:
        lines += plan_budget(recipe).lines()
    return "\n".join(lines)


def lora_rate_warning(recipe: UnlearnRecipe) -> str | None:
    """The warning for LoRA runs whose learning rates will likely forget nothing, or None.

    The rule was measured on the tiny ViT built from config, so it applies to models built from
    config only; a pretrained model's LoRA rates are the user's to judge.
    """
    from .training.grid import lora_learning_rate_warning

    if recipe.model.name_or_path is not None:
        return None
    return lora_learning_rate_warning(recipe.grid.expand())


def warn_before_training(recipe: UnlearnRecipe) -> None:
    """The plan's warnings as real warnings, for callers of the Python API who see no plan."""
    from .training.grid import LoraLearningRateWarning

    if message := lora_rate_warning(recipe):
        warn(message, LoraLearningRateWarning)


def _clip_plan(recipe: UnlearnRecipe) -> list[str]:
    """The plan's lines on a CLIP's trained part and the text of its control head."""
    model, data = recipe.model, recipe.data
    if model.architecture != "clip":
        return []
    trained = "vision tower" + (
        " except its attention q/k/v/out projections" if model.freeze_attention else ""
    )
    trained += " + visual_projection" if model.train_projection else ""
    lines = [f"  trained: {trained}; text tower and zero-shot head frozen"]
    if data.control_dataset is not None:
        names, templates = data.control_head_text()

        def described(value: Any, count: int | None, fallback: str) -> str:
            if value is None:
                return fallback
            return f"{value!r} ({count})" if isinstance(value, str) else f"{count} given"

        lines.append(
            "  control head: templates "
            + described(data.control_prompt_templates, templates and len(templates), "the forget set's")
            + ", class names "
            + described(data.control_prompt_names, names and len(names), "the control dataset's")
        )
    return lines


# Optimizer steps per second on one CPU thread, measured with the default recipe's tiny models
# (docs/benchmarks.md, "Throughput for --dry-run"); None: not measured.
STEPS_PER_SECOND: dict[str, float | None] = {"vit": 23.0, "clip": None}  # grid runs (batch 32)
ORIGINAL_STEPS_PER_SECOND: dict[str, float | None] = {"vit": 30.0, "clip": None}  # θ₀, pre-encoded
SECONDS_PER_EVALUATION: dict[str, float | None] = {"vit": 0.2, "clip": None}  # one λ point or test
BYTES_PER_PARAMETER = 4  # run task vectors are stored in float32


@dataclass
class PlanBudget:
    """The cost of a recipe, as far as it is known without training (None: unknown)."""

    runs: list[tuple[str, int, int | None]]  # (run id, epochs, optimizer steps)
    forget_rows: int | None
    original_steps: int | None
    evaluations: int
    test_evaluations: int
    trained_parameters: int | None
    keep_run_vectors: bool
    downloads: list[str]
    tiny: str | None  # the architecture whose measured throughput applies (tiny models on CPU)
    parameters_are_total: bool = False  # from Hub metadata: every parameter, an upper bound

    @property
    def total_steps(self) -> int | None:
        steps = [run_steps for _, _, run_steps in self.runs]
        return None if None in steps else sum(steps)  # type: ignore[arg-type]

    @property
    def vector_bytes(self) -> int | None:
        if self.trained_parameters is None:
            return None
        return BYTES_PER_PARAMETER * self.trained_parameters * len(self.runs)

    def original_seconds(self) -> float | None:
        """The θ₀ training part of `seconds()` (0 when θ₀ is given)."""
        rate = ORIGINAL_STEPS_PER_SECOND.get(self.tiny or "")
        return None if rate is None else (self.original_steps or 0) / rate

    def seconds(self) -> float | None:
        """Rough time on one CPU thread for tiny models; None where no throughput was measured."""
        rates = [table.get(self.tiny or "") for table in (STEPS_PER_SECOND, ORIGINAL_STEPS_PER_SECOND)]
        per_evaluation = SECONDS_PER_EVALUATION.get(self.tiny or "")
        if self.total_steps is None or None in rates or per_evaluation is None:
            return None
        evaluations = self.evaluations + self.test_evaluations
        return (
            self.total_steps / rates[0]  # type: ignore[operator]
            + (self.original_steps or 0) / rates[1]  # type: ignore[operator]
            + evaluations * per_evaluation
        )

    def lines(self) -> list[str]:
        rows = f"{self.forget_rows} forget-train rows" if self.forget_rows is not None else "rows unknown"
        lines = [f"budget ({rows}):"]
        if self.original_steps is not None:
            lines.append(f"  θ₀: {self.original_steps} optimizer steps (skipped when cached)")
        groups: dict[tuple[int, int | None], list[str]] = {}
        for run_id, epochs, steps in self.runs:
            groups.setdefault((epochs, steps), []).append(run_id)
        for (epochs, steps), run_ids in groups.items():
            who = run_ids[0] if len(run_ids) == 1 else f"{len(run_ids)} runs ({run_ids[0]} … {run_ids[-1]})"
            each = "" if len(run_ids) == 1 else " each"
            lines.append(
                f"  {who}: {epochs} epochs, {steps if steps is not None else '?'} optimizer steps{each}"
            )
        total = self.total_steps
        lines.append(
            f"  total: {total} optimizer steps over {len(self.runs)} runs"
            if total is not None
            else f"  total: unknown optimizer steps over {len(self.runs)} runs (Hub data: row count unknown "
            "without downloading)"
        )
        lines.append(
            f"  evaluations: {self.evaluations} λ points on validation + {self.test_evaluations} test "
            "evaluations (methods + single runs × λ points)"
        )
        lines += [f"  download: {item}" for item in self.downloads]
        size = self.vector_bytes
        kept = (
            "kept" if self.keep_run_vectors else "deleted after each fold (no comparison method reads them)"
        )
        lines.append(
            f"  disk: run task vectors {'≤' if self.parameters_are_total else '≈'} {_size(size)} "
            f"({len(self.runs)} × {self.trained_parameters:,} "
            f"{'parameters of the whole model' if self.parameters_are_total else 'parameters'} × "
            f"{BYTES_PER_PARAMETER} bytes), {kept}"
            if size is not None
            else f"  disk: run task vectors ≈ {BYTES_PER_PARAMETER} bytes × trained parameters × "
            f"{len(self.runs)} runs (parameter count unknown offline), {kept}"
        )
        if self.keep_run_vectors:
            lines.append("    (comparison: [] does not keep them; the merge itself needs only a running sum)")
        seconds, original = self.seconds(), self.original_seconds()
        lines.append(
            f"  time: ≈ {seconds / 60:.1f} min on 1 CPU thread (docs/benchmarks.md throughput table)"
            + (
                f", of which θ₀ ≈ {original / 60:.1f} min: none when it is cached or shipped with the package"
                if original
                else ""
            )
            if seconds is not None
            else "  time: no measured throughput for this model and device (docs/benchmarks.md); "
            "time one run with grid.axes limited to one point"
        )
        return lines


def _size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def plan_budget(recipe: UnlearnRecipe) -> PlanBudget:
    """Count what a recipe costs. Local and built-in data are loaded (cheap) to count rows; Hub
    data and models are looked up only when online (sizes from Hub metadata), never downloaded."""
    from .data.loading import _is_builtin, _is_hub_id, hub_is_offline
    from .training.grid import optimizer_steps

    def on_hub(source: Any) -> bool:
        return _is_hub_id(source) and not _is_builtin(source)

    points = recipe.grid.expand()
    hub_sources = [
        source for source in (recipe.data.dataset, recipe.data.control_dataset) if source is not None
    ]
    local_data = not any(on_hub(source) for source in hub_sources)
    hub_model = recipe.model.name_or_path is not None and on_hub(recipe.model.name_or_path)
    forget_rows = original_steps = parameters = None
    data = None
    if local_data and not hub_model:
        # Row counts only: no image is decoded and no label is mapped onto θ₀'s head (neither changes
        # the counts). Data the real run would refuse leaves the budget unknown here; the run says why.
        try:
            data = build_unlearning_data(dataclasses.replace(recipe.data, image_check_limit=0))
        except ConfigError as error:
            logger.info("Budget without row counts: %s", error)
    if data is not None:
        forget_rows = len(data.forget_train)
        if recipe.original.train and recipe.original.path is None:
            rows = len(original_training_split(recipe, data))
            original_steps = recipe.original.epochs * -(-rows // recipe.original.batch_size)
        if recipe.model.name_or_path is None and data.class_names is not None:
            parameters = _trained_parameters(recipe, data.class_names)
    runs = [
        (
            point.id,
            point.hyperparameters.epochs,
            optimizer_steps(point.hyperparameters, forget_rows) if forget_rows is not None else None,
        )
        for point in points
    ]
    evaluations, tests = evaluation_count(recipe, len(points))
    downloads: list[str] = []
    offline = hub_is_offline()
    if hub_model:
        size, count = (None, None) if offline else _hub_size(recipe.model.name_or_path, "model")
        downloads.append(_describe_download("model", recipe.model.name_or_path, size, offline))
        parameters = parameters if count is None else count
    for source in hub_sources:
        if on_hub(source):
            size, _ = (None, None) if offline else _hub_size(source, "dataset")
            downloads.append(_describe_download("dataset", source, size, offline))
    tiny = recipe.model.architecture if recipe.model.name_or_path is None else None
    return PlanBudget(
        runs,
        forget_rows,
        original_steps,
        evaluations,
        tests,
        parameters,
        keeps_run_vectors(recipe),
        downloads,
        tiny,
        parameters_are_total=hub_model and parameters is not None,
    )


def _trained_parameters(recipe: UnlearnRecipe, class_names: list[str]) -> int:
    """Elements of the tensors a run's task vector holds: what `mark_trainable` leaves trainable."""
    from .models import build_classifier

    classifier = build_classifier(recipe.model, class_names)
    classifier.mark_trainable()
    return sum(parameter.numel() for parameter in classifier.model.parameters() if parameter.requires_grad)


def _hub_size(repo_id: str, repo_type: str) -> tuple[Any, int | None]:
    """(download size in bytes or an access note, parameter count) from Hub metadata; nothing fetched."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    api = HfApi()
    try:
        info = (api.model_info if repo_type == "model" else api.dataset_info)(repo_id, files_metadata=True)
    except GatedRepoError:
        return "gated: your token cannot read it (accept its terms on the Hub, then `hf auth login`)", None
    except (HfHubHTTPError, OSError) as error:
        return f"metadata unavailable ({type(error).__name__})", None
    except Exception as error:  # the HTTP client's own errors (e.g. ConnectError) are not OSError
        return f"metadata unavailable: the Hub did not answer ({type(error).__name__}: {error})", None
    size = sum(sibling.size or 0 for sibling in info.siblings or [])
    count = getattr(getattr(info, "safetensors", None), "total", None)
    if getattr(info, "gated", False):
        return f"{_size(size)}, gated: your token can read it", count
    return size, count


def _describe_download(kind: str, repo_id: str, size: Any, offline: bool) -> str:
    if offline:
        return f"{kind} {repo_id!r}: size unknown offline (HF_HUB_OFFLINE), gated access not checked"
    if isinstance(size, int):
        return f"{kind} {repo_id!r}: {_size(size)} (all files; already cached files are not fetched again)"
    return f"{kind} {repo_id!r}: {size}"
