"""Train the whole pool: one fine-tune per grid point, folded into a merge as each run finishes.

Layout of `output_dir`:

    grid.json                      the grid points of the latest call (ids + hyperparameters)
    accumulator.safetensors        the merge's running state, incl. the ids already folded
    merged_task_vector.safetensors the merge of every run (written at the end)
    merge_stats.json               its statistics (kept fraction per tensor, input norms)
    runs/<id>/params.json          the point's hyperparameters
    runs/<id>/task_vector.safetensors   τ = θ_run − θ₀ (kept when keep_task_vectors)
    runs/<id>/checkpoint/          the fine-tuned classifier (when keep_checkpoints)
    runs/<id>/train_log.jsonl      loss and learning rate per optimizer step (one JSON object a line)
    runs/<id>/run.json             written last: the run finished
    inputs.json                    what the runs were built from: θ₀'s weight hash, the forget
                                   set's fingerprint, each run's hyperparameters (checked on resume)

A run folder is built in a temporary sibling and renamed into place, so a killed run leaves
only a `.<id>.tmp-*` folder, removed on rerun. The accumulator records the ids it has folded
and is saved after every fold, so a rerun skips finished points and never folds one twice.

With K processes (`accelerate launch`), `shard=True` gives each process its share of the
points to train alone; then the main process folds every new task vector in sorted-id order.
`shard=False` trains every point in turn with DDP across all processes (one big run at a time).

Longer than most modules (~460 lines): `GridRunner` is one job, resuming, sharding, training and
folding the pool, and the resume checks (inputs.json, run.json, the accumulator's folded ids) and
the process coordination must be read together to see that no run is trained or folded twice.
"""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..checkpoints import atomic_output_dir, atomic_write_text
from ..config import MergeConfig, NegMergeConfig
from ..errors import CheckpointError, ConfigError, NegMergeError, warn
from ..key_space import KeyNames
from ..merging.accumulate import MergeAccumulator, MergeResult
from ..task_vector import MERGED_VECTOR_NAME, TaskVector
from .grid import GridPoint, GridSpec, WarmupWarning, as_grid_points, warmup_warning
from .loop import finetune

RUNS_DIR = "runs"
GRID_FILE = "grid.json"
ACCUMULATOR_FILE = "accumulator.safetensors"
MERGED_FILE = MERGED_VECTOR_NAME
STATS_FILE = "merge_stats.json"
PARAMS_FILE = "params.json"
TASK_VECTOR_FILE = "task_vector.safetensors"
TRAIN_LOG_FILE = "train_log.jsonl"
CHECKPOINT_DIR = "checkpoint"
RUN_RECORD_FILE = "run.json"
INPUTS_FILE = "inputs.json"


@dataclass
class GridResult:
    """What a grid call produced; identical on every process."""

    merge: MergeResult
    output_dir: Path
    run_ids: list[str]
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    @property
    def task_vector(self) -> TaskVector:
        return self.merge.task_vector

    def run_dir(self, run_id: str) -> Path:
        return self.output_dir / RUNS_DIR / run_id


@dataclass
class _Plan:
    """Decided once by the main process and broadcast, so every process acts on the same view."""

    train: list[str]
    fold_from_disk: list[str]
    reused: list[str]


@contextlib.contextmanager
def _long_lived_objects_frozen() -> Iterator[None]:
    """Keep the `gc.collect()` in `accelerator.free_memory()` after each run to that run's objects.

    Everything alive before the grid (imported modules, the data, θ₀) is moved out of the
    collector's view for the grid's duration (`gc.freeze`), so each collection scans what the
    run created instead of the whole heap: measured 0.3–0.8 s per run before, more than a tiny
    run's training. Garbage from before the grid is collected first; `gc.unfreeze` ends it.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class GridRunner:
    """Fine-tune the original classifier once per grid point and merge the task vectors.

    `base_classifier_dir`: a folder written by `ImageClassifier.save_pretrained` (the original
    model θ₀); every run starts from a fresh load of it. `data`: an `UnlearningData` (its
    `forget_train` is used) or a dataset with `image` and `label` columns.
    """

    def __init__(
        self,
        base_classifier_dir: str | Path,
        data: Any,
        grid_points: GridSpec | Sequence[GridPoint],
        output_dir: str | Path,
        merge_config: MergeConfig | None = None,
        keep_task_vectors: bool = True,
        keep_checkpoints: bool = False,
        accelerator: Any | None = None,
        shard: bool = True,
        progress: bool = True,
        teardown: bool | None = None,
        base_description: str | None = None,
    ) -> None:
        self.base_classifier_dir = Path(base_classifier_dir)
        self.base_description = base_description or str(self.base_classifier_dir)
        self.points = as_grid_points(grid_points)
        self.output_dir = Path(output_dir)
        self.merge_config = merge_config or NegMergeConfig()
        self.keep_task_vectors = keep_task_vectors
        self.keep_checkpoints = keep_checkpoints
        self.shard = shard
        self.progress = progress
        self.forget_train = getattr(data, "forget_train", data)
        precisions = sorted({p.hyperparameters.mixed_precision for p in self.points})
        if len(precisions) > 1:
            raise ConfigError(
                f"Grid points use different mixed_precision values {precisions}; one accelerate state serves the "
                "whole grid, so choose one."
            )
        if self.forget_train is None or len(self.forget_train) == 0:
            raise ConfigError("The forget set (forget_train) is empty; there is nothing to fine-tune on.")
        if not self.base_classifier_dir.is_dir():
            raise CheckpointError(
                f"Original classifier folder {self.base_classifier_dir} does not exist; "
                "save one with ImageClassifier.save_pretrained or prepare_original_model."
            )
        self._owns_accelerator = accelerator is None
        if accelerator is None:
            from accelerate import Accelerator

            accelerator = Accelerator(mixed_precision=precisions[0])
        self.accelerator = accelerator
        self.teardown = self._owns_accelerator if teardown is None else teardown
        self.by_id = {point.id: point for point in self.points}
        self.key_names: KeyNames | None = None  # the base model's names, known once run() loads it

    # -- public ----------------------------------------------------------------------------

    def run(self) -> GridResult:
        from ..models import ImageClassifier

        base = ImageClassifier.from_pretrained(self.base_classifier_dir)
        self._check_labels(base)
        # merge.include/exclude may use runtime names; a pattern matching nothing fails before training
        self.key_names = KeyNames.of(base.model)
        self.key_names.check_patterns(self.merge_config.include, self.merge_config.exclude)
        for point in self.points:  # a bad LoRA target fails now, not after hours of other runs
            if point.hyperparameters.uses_lora:
                base.lora_target_modules(point.hyperparameters.lora_target_modules)
        accelerator = self.accelerator
        accumulator, plan = None, None
        if accelerator.is_main_process:
            try:
                accumulator, plan = self._plan()
            except NegMergeError as error:  # hand it to every process, or the others wait forever
                plan = error
        plan = _broadcast(accelerator, plan)
        if isinstance(plan, NegMergeError):
            raise plan

        sharded = self.shard and accelerator.num_processes > 1
        training = [self.by_id[run_id] for run_id in plan.train]
        warning = warmup_warning(
            training, len(self.forget_train), 1 if sharded else accelerator.num_processes
        )
        if warning and accelerator.is_main_process:  # once for the grid, not once per run
            warn(warning, WarmupWarning)
        if sharded:
            with accelerator.split_between_processes(plan.train) as mine:
                my_ids = list(mine)
        else:
            my_ids = list(plan.train)
        if accumulator is not None and plan.fold_from_disk and not sharded:
            self._fold(accumulator, plan.fold_from_disk)

        runs_bar = tqdm(
            my_ids,
            desc="grid runs",
            unit="run",
            disable=not (self.progress and accelerator.is_local_main_process),
            dynamic_ncols=True,
        )
        with _long_lived_objects_frozen():
            for run_id in runs_bar:
                final_loss = self._train_one(base, self.by_id[run_id], data_parallel=not sharded)
                if final_loss is not None:
                    runs_bar.set_postfix_str(f"{run_id} final loss {final_loss:.4f}", refresh=False)
                if not sharded:
                    if accelerator.is_main_process:
                        self._fold(accumulator, [run_id])
                    accelerator.wait_for_everyone()

        trained = _gather(accelerator, my_ids) if sharded else list(plan.train)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if sharded:
                self._fold(accumulator, sorted(set(plan.fold_from_disk) | set(trained)))
            merge = accumulator.result()
            merge.task_vector.save(self.output_dir / MERGED_FILE)
            atomic_write_text(
                self.output_dir / STATS_FILE, json.dumps(merge.stats.to_dict(), indent=2) + "\n"
            )
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            merge = MergeAccumulator.load(self.output_dir / ACCUMULATOR_FILE).result()
        result = GridResult(
            merge=merge,
            output_dir=self.output_dir,
            run_ids=[p.id for p in self.points],
            trained=sorted(trained),
            reused=plan.reused,
        )
        if self.teardown:
            accelerator.end_training()
        return result

    # -- planning --------------------------------------------------------------------------

    def _plan(self) -> tuple[MergeAccumulator, _Plan]:
        runs = self.output_dir / RUNS_DIR
        runs.mkdir(parents=True, exist_ok=True)
        for stale in runs.glob(".*.tmp-*"):  # a run killed mid-way
            shutil.rmtree(stale, ignore_errors=True)
        for stale in runs.glob(".*.old-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self._check_inputs(runs)
        accumulator = self._load_accumulator()
        folded = set(accumulator.run_ids)
        unknown = sorted(folded - set(self.by_id))
        if unknown:
            raise ConfigError(
                f"{self.output_dir / ACCUMULATOR_FILE} already holds run(s) {unknown} that are not in this grid; "
                "their contributions cannot be removed. Use a new output_dir for a different grid."
            )
        atomic_write_text(
            self.output_dir / GRID_FILE, json.dumps([p.to_dict() for p in self.points], indent=2) + "\n"
        )
        train, fold_from_disk, reused = [], [], []
        for point in self.points:
            run_dir = runs / point.id
            finished = (run_dir / RUN_RECORD_FILE).is_file()
            if point.id in folded and finished:
                reused.append(point.id)
            elif finished and (run_dir / TASK_VECTOR_FILE).is_file():
                fold_from_disk.append(point.id)  # finished, then killed before the fold was saved
                reused.append(point.id)
            else:
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                train.append(point.id)
        # A run folded but whose folder is gone would be folded twice if retrained.
        lost = [run_id for run_id in train if run_id in folded]
        if lost:
            raise CheckpointError(
                f"Run(s) {lost} were folded into {self.output_dir / ACCUMULATOR_FILE} but their folders under "
                f"{runs} are missing; restore them or start a new output_dir."
            )
        return accumulator, _Plan(train=train, fold_from_disk=fold_from_disk, reused=reused)

    def _inputs(self) -> dict[str, Any]:
        from ..models._source import weights_sha256

        return {
            "original": {"sha256": weights_sha256(self.base_classifier_dir), "source": self.base_description},
            "forget_train": {
                "fingerprint": getattr(self.forget_train, "_fingerprint", None),
                "rows": len(self.forget_train),
            },
            "runs": {point.id: point.to_dict() for point in self.points},
        }

    def _check_inputs(self, runs: Path) -> None:
        """Refuse to resume runs built from another θ₀, forget set or hyperparameters; record them.

        Without this a rerun into the same folder after replacing the model would merge the old
        runs' task vectors onto the new θ₀ and report it as such.
        """
        path = self.output_dir / INPUTS_FILE
        current = json.loads(json.dumps(self._inputs()))  # the form it is compared in after a reload
        if path.is_file():
            recorded = json.loads(path.read_text(encoding="utf-8"))
            changes = []
            old, new = recorded["original"], current["original"]
            if old["sha256"] != new["sha256"]:
                changes.append(
                    f"θ₀ weights changed: {old['sha256'][:16]} → {new['sha256'][:16]} "
                    f"(was {old['source']}; now {new['source']})"
                )
            old, new = recorded["forget_train"], current["forget_train"]
            if old != new:
                changes.append(
                    f"forget set changed: fingerprint {old['fingerprint']} ({old['rows']} rows) → "
                    f"{new['fingerprint']} ({new['rows']} rows)"
                )
            for run_id, settings in current["runs"].items():
                before = recorded["runs"].get(run_id)
                if before is not None and before != settings:
                    changes.append(f"grid run {run_id!r} settings changed: {before} → {settings}")
            if changes:
                raise ConfigError(
                    f"{self.output_dir} holds runs trained from other inputs: "
                    + "; ".join(changes)
                    + ". Choose another output_dir (the runs here belong to the earlier inputs)."
                )
            current["runs"] = {**recorded["runs"], **current["runs"]}
        elif any(runs.glob(f"*/{RUN_RECORD_FILE}")):
            raise ConfigError(
                f"{runs} holds finished runs but no {INPUTS_FILE}, so what they were trained from cannot "
                "be checked. Choose another output_dir."
            )
        atomic_write_text(path, json.dumps(current, indent=2, ensure_ascii=False) + "\n")

    def _load_accumulator(self) -> MergeAccumulator:
        """The saved merge state, if its merge fields match; λ-search fields may differ freely.

        The runs and τ depend only on the `MergeConfig` part, so a change of retain_ratio, λ grid,
        fallback or scale reuses everything here (the state is re-saved with the new config, so
        the merged vector's metadata states the config it is used with).
        """
        path = self.output_dir / ACCUMULATOR_FILE
        if not path.is_file():
            return MergeAccumulator(self.merge_config, self.key_names)
        accumulator = MergeAccumulator.load(path, self.key_names)
        changes = accumulator.config.merge_differences(self.merge_config)
        if changes:
            raise ConfigError(
                f"{path} was written with a different merge config ("
                + "; ".join(f"merge.{change}" for change in changes)
                + "). The runs folded there cannot be re-merged another way: restore "
                + ("that value" if len(changes) == 1 else "those values")
                + " or choose a new output_dir."
            )
        if accumulator.config.to_dict() != self.merge_config.to_dict():
            accumulator.config = self.merge_config
            accumulator.save(path)
        return accumulator

    def _check_labels(self, base: Any) -> None:
        from ..data.loading import check_labels_in_range

        check_labels_in_range(
            self.forget_train, base.num_classes, f"forget set vs {self.base_classifier_dir}"
        )

    # -- one run ---------------------------------------------------------------------------

    def _train_one(self, base: Any, point: GridPoint, data_parallel: bool) -> float | None:
        """Train one point and write its folder; returns the last step's loss (None on other ranks)."""
        from ..models import ImageClassifier, merge_lora

        started = time.time()
        hyperparameters = point.hyperparameters
        classifier = ImageClassifier.from_pretrained(self.base_classifier_dir)
        log: list[dict[str, float]] = []
        with warnings.catch_warnings():  # run() already warned once for the whole grid
            warnings.simplefilter("ignore", WarmupWarning)
            classifier = finetune(
                classifier,
                self.forget_train,
                hyperparameters,
                accelerator=self.accelerator,
                progress=self.progress,
                data_parallel=data_parallel,
                description=point.id,
                step_records=log,
            )
        self.accelerator.free_memory()  # the accelerator outlives the run: drop its references to it
        if data_parallel and not self.accelerator.is_main_process:
            return None  # DDP: every rank holds the same weights; the main process writes the run
        classifier = classifier.cpu()
        finetuned_model = merge_lora(classifier) if hyperparameters.uses_lora else classifier.model
        task_vector = TaskVector.from_models(
            base.model, finetuned_model, include=base.trainable_parameter_patterns()
        )
        self._write_run(point, classifier, task_vector, time.time() - started, log)
        return log[-1]["loss"] if log else None

    def _write_run(
        self,
        point: GridPoint,
        classifier: Any,
        task_vector: TaskVector,
        seconds: float,
        log: Sequence[dict[str, float]] = (),
    ) -> None:
        run_dir = self.output_dir / RUNS_DIR / point.id
        with atomic_output_dir(run_dir) as staging:
            atomic_write_text(staging / PARAMS_FILE, json.dumps(point.to_dict(), indent=2) + "\n")
            atomic_write_text(staging / TRAIN_LOG_FILE, "".join(json.dumps(row) + "\n" for row in log))
            task_vector.save(staging / TASK_VECTOR_FILE)
            if self.keep_checkpoints:
                classifier.save_pretrained(staging / CHECKPOINT_DIR)
            record = {
                "id": point.id,
                "seconds": round(seconds, 3),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "num_examples": len(self.forget_train),
                "process_index": self.accelerator.process_index,
                "task_vector": {
                    "tensors": len(task_vector),
                    "numel": task_vector.numel(),
                    "nonzero": task_vector.count_nonzero(),
                    "norm": task_vector.norm(),
                },
            }
            atomic_write_text(staging / RUN_RECORD_FILE, json.dumps(record, indent=2) + "\n")

    def _fold(self, accumulator: MergeAccumulator, run_ids: Sequence[str]) -> None:
        """Fold finished runs from their folders; state saved after each, files dropped if not kept."""
        for run_id in run_ids:
            path = self.output_dir / RUNS_DIR / run_id / TASK_VECTOR_FILE
            accumulator.add(TaskVector.load(path), run_id=run_id)
            accumulator.save(self.output_dir / ACCUMULATOR_FILE)
            if not self.keep_task_vectors:
                path.unlink()


def run_grid(
    base_classifier_dir: str | Path,
    data: Any,
    grid_points: GridSpec | Sequence[GridPoint],
    output_dir: str | Path,
    merge_config: MergeConfig | None = None,
    **options: Any,
) -> GridResult:
    """Run (or resume) a grid and return the merge of every run.

    `options` are `GridRunner`'s other keyword arguments (keep_task_vectors, keep_checkpoints,
    accelerator, shard, progress, teardown).
    """
    return GridRunner(base_classifier_dir, data, grid_points, output_dir, merge_config, **options).run()


def _broadcast(accelerator: Any, value: Any) -> Any:
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def _gather(accelerator: Any, values: list[str]) -> list[str]:
    from accelerate.utils import gather_object

    return list(gather_object(values))
