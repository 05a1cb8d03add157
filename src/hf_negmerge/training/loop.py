"""The package's one training loop (`train_loop`), and one fine-tuning run on the forget set with it.

`train_loop` also trains θ₀ (`pretrain.py`: pre-encoded `TensorBatches`, the recipe's objective,
optimizer and schedule, no accelerator); `finetune` below builds its inputs for a grid run.

AdamW, linear warm-up then cosine (or linear) decay, gradient clipping, gradient accumulation,
accelerate's mixed precision, label-smoothed cross-entropy and optional RandAugment (the authors'
timm pipeline, `augment.py`), all from one `TrainingHyperparameters`. The run is reproducible
from its `seed`: the global torch generator (dropout), the shuffling generator and the
augmentation's own generator are all seeded from it.

Two ways to use several processes:
- `data_parallel=True` (default): `accelerator.prepare` wraps the model in DDP and shards the
  batches, so one big run trains on all processes (every rank ends with the same weights);
- `data_parallel=False`: each process trains its own model on the whole forget set (the grid
  runner shards grid *points* this way); no gradient is exchanged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError, warn
from .augment import ImageSpec, build_augmentation
from .grid import TrainingHyperparameters, WarmupWarning

StepCallback = Callable[[int, float], None]
#: (pixel_values, labels) -> scalar loss; fine-tuning's is cross-entropy on the logits, θ₀'s is its recipe's
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Batches(Protocol):
    """What `train_loop` iterates once per epoch: sized, re-iterable, {"pixel_values", "labels"} dicts."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]: ...


def finetune(
    classifier: nn.Module,
    dataset: Any,
    hyperparameters: TrainingHyperparameters,
    accelerator: Any | None = None,
    progress: bool = True,
    data_parallel: bool = True,
    description: str = "fine-tune",
    step_callback: StepCallback | None = None,
    step_records: list[dict[str, float]] | None = None,
) -> nn.Module:
    """Fine-tune `classifier` on `dataset` (columns `image`, `label`) in place and return it.

    Full fine-tuning trains the parameters `classifier.mark_trainable()` selects; with
    `hyperparameters.lora_rank` set, LoRA adapters are added first (merge them with
    `models.merge_lora` to get dense weights for a task vector). `step_callback(step, loss)` is
    called after every optimizer step; `step_records`, when given, receives one
    {"step", "epoch", "loss", "learning_rate"} dict per optimizer step (the log). Returns the trained classifier, unwrapped, in eval mode.

    A given `accelerator` must use `hyperparameters.mixed_precision`; it keeps references to the
    optimizer (and the DDP model) until its `free_memory()`. `data_parallel=False` trains this
    process's own copy even when several processes run (grid sharding).
    """
    from accelerate.utils import set_seed

    from ..data.collate import ImageClassificationCollator, make_dataloader

    if len(dataset) == 0:
        raise ConfigError("The fine-tuning dataset (forget set) is empty; there is nothing to fine-tune on.")
    accelerator = _resolve_accelerator(accelerator, hyperparameters)
    set_seed(hyperparameters.seed)

    if hyperparameters.uses_lora:
        from ..models import apply_lora

        apply_lora(
            classifier,
            rank=hyperparameters.lora_rank,
            alpha=hyperparameters.lora_alpha
            if hyperparameters.lora_alpha is not None
            else 2 * hyperparameters.lora_rank,
            target_modules=hyperparameters.lora_target_modules,
            dropout=hyperparameters.lora_dropout,
        )
    else:
        classifier.mark_trainable()
    parameters = [parameter for parameter in classifier.parameters() if parameter.requires_grad]
    if not parameters:
        raise ConfigError(
            f"{type(classifier).__name__} has no trainable parameter after setup; nothing to fine-tune."
        )

    distributed = data_parallel and accelerator.num_processes > 1
    # Augmented runs replace the processor's resize/crop with the random crop (PIL, per image).
    augmentation = build_augmentation(
        hyperparameters,
        image_spec(classifier),
        name=hyperparameters.augmentation,
        stream=accelerator.process_index if distributed else 0,
    )
    collator = ImageClassificationCollator(augmentation or classifier.preprocess)
    loader = make_dataloader(
        dataset, collator, batch_size=hyperparameters.batch_size, shuffle=True, seed=hyperparameters.seed
    )
    optimizer = torch.optim.AdamW(
        parameters, lr=hyperparameters.learning_rate, weight_decay=hyperparameters.weight_decay
    )
    if distributed:
        model, optimizer, loader = accelerator.prepare(classifier, optimizer, loader)
    else:
        model = classifier.to(accelerator.device)
        optimizer = accelerator.prepare_optimizer(optimizer)

    accumulation = hyperparameters.gradient_accumulation_steps
    batches_per_epoch = len(loader)
    total_steps = math.ceil(batches_per_epoch / accumulation) * hyperparameters.epochs
    if hyperparameters.warmup_steps >= total_steps:
        warn(
            f"{description}: warmup_steps={hyperparameters.warmup_steps} ≥ the run's {total_steps} optimizer "
            "steps, so the learning rate never reaches its peak.",
            WarmupWarning,
        )
    scheduler = _build_scheduler(hyperparameters, optimizer.optimizer, total_steps)
    loss_function = nn.CrossEntropyLoss(label_smoothing=hyperparameters.label_smoothing)

    def objective(pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with accelerator.autocast():
            logits = model(pixel_values)
        return loss_function(logits.float(), labels)

    train_loop(
        model,
        parameters,
        loader,
        objective,
        optimizer,
        scheduler,
        epochs=hyperparameters.epochs,
        grad_clip=hyperparameters.grad_clip,
        accumulation=accumulation,
        accelerator=accelerator,
        distributed=distributed,
        progress=progress and accelerator.is_local_main_process,
        description=description,
        step_callback=step_callback,
        step_records=step_records,
    )
    classifier = accelerator.unwrap_model(model)
    classifier.eval()
    # A caller's accelerator keeps references to what `prepare` saw (until its `free_memory()`);
    # one made here is dropped with everything it references when this function returns.
    return classifier


def train_loop(
    model: nn.Module,
    parameters: Sequence[nn.Parameter],
    batches: Batches,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epochs: int,
    grad_clip: float | None = None,
    accumulation: int = 1,
    accelerator: Any | None = None,
    distributed: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
    description: str = "train",
    leave: bool = False,
    step_callback: StepCallback | None = None,
    step_records: list[dict[str, float]] | None = None,
) -> None:
    """The one training loop: fine-tuning runs (`finetune`) and θ₀ pretraining (`pretrain`) both use it.

    Each epoch iterates `batches` ({"pixel_values", "labels"} dicts: a DataLoader, or
    `TensorBatches` over pre-encoded images); `objective(pixel_values, labels)` returns the loss.
    Every `accumulation` batches (fewer at an epoch's end) make one optimizer step: gradients
    clipped to `grad_clip`, `optimizer.step()`, `scheduler.step()`. With an `accelerator` the
    backward pass, clipping, device and (for `distributed` DDP) gradient sync go through it;
    without one, plain torch calls on `device`. Losses stay on the device until the end (one sync,
    not one per step) unless `step_callback(step, loss)` needs each as it comes; `step_records`
    then receives one {"step", "epoch", "loss", "learning_rate"} dict per step.
    """
    batches_per_epoch = len(batches)
    total_steps = math.ceil(batches_per_epoch / accumulation) * epochs
    bar = tqdm(
        total=total_steps,
        desc=description,
        unit="step",
        disable=not progress,
        leave=leave,
        dynamic_ncols=True,
    )
    backward = accelerator.backward if accelerator is not None else torch.Tensor.backward
    step_optimizer = _step_function(optimizer, accelerator)
    clip = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_
    device = accelerator.device if accelerator is not None else device
    losses: list[torch.Tensor] = []
    schedule: list[tuple[int, float]] = []  # (epoch, learning rate) of each optimizer step
    model.train()
    for epoch in range(1, epochs + 1):
        for index, batch in enumerate(batches):
            group_start = index - index % accumulation
            group_size = min(accumulation, batches_per_epoch - group_start)
            is_step = index + 1 == group_start + group_size
            sync = (
                accelerator.no_sync(model)
                if distributed and not is_step and accelerator is not None
                else contextlib.nullcontext()
            )
            with sync:
                loss = objective(batch["pixel_values"].to(device), batch["labels"].to(device))
                backward(loss / group_size if group_size > 1 else loss)
            if not is_step:
                continue
            if grad_clip is not None:
                clip(parameters, grad_clip)
            schedule.append((epoch, float(scheduler.get_last_lr()[0])))  # the rate this step uses
            step_optimizer()
            skipped = getattr(optimizer, "step_was_skipped", False)  # fp16 overflow (accelerate's scaler)
            if not skipped:  # the schedule follows the real updates
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss = loss.detach()
            losses.append(loss)
            bar.update(1)
            if step_callback is not None:
                step_callback(len(losses), float(loss))
        if progress and losses:
            bar.set_postfix_str(f"loss {float(losses[-1]):.4f}")
    bar.close()
    if step_records is not None and losses:
        values = torch.stack(losses).tolist()
        step_records.extend(
            {"step": step, "epoch": step_epoch, "loss": value, "learning_rate": rate}
            for step, ((step_epoch, rate), value) in enumerate(zip(schedule, values, strict=True), start=1)
        )


class TensorBatches:
    """Shuffled mini-batches of pre-encoded images, re-shuffled (and re-augmented) every epoch.

    Each pass draws `torch.randperm` from `generator`, then `transform(pixel_values, generator)`
    (e.g. `pad_crop_flip`) per batch from the same generator, so the run is a function of its seed.
    """

    def __init__(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.pixel_values, self.labels = pixel_values, labels
        self.batch_size, self.generator, self.transform = batch_size, generator, transform

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.randperm(len(self.labels), generator=self.generator)
        for start in range(0, len(self.labels), self.batch_size):
            batch = order[start : start + self.batch_size]
            pixel_values = self.pixel_values[batch]
            if self.transform is not None:
                pixel_values = self.transform(pixel_values, self.generator)
            yield {"pixel_values": pixel_values, "labels": self.labels[batch]}


def _step_function(optimizer: torch.optim.Optimizer, accelerator: Any | None) -> Callable[[], Any]:
    """The optimizer step the loop calls: the wrapped optimizer's own when accelerate adds nothing.

    accelerate's `AcceleratedOptimizer.step` matters with a gradient scaler (fp16) or on XLA;
    otherwise it calls the wrapped optimizer's step after looking for the `lomo` package on disk
    twice per call (uncached importlib `find_spec`, ~1 ms each: ~5% of a tiny model's step).
    """
    from accelerate.utils import DistributedType

    inner = getattr(optimizer, "optimizer", None)
    plain_types = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
    if accelerator is None or inner is None or accelerator.scaler is not None:
        return optimizer.step
    return inner.step if accelerator.distributed_type in plain_types else optimizer.step


def image_spec(classifier: nn.Module) -> ImageSpec:
    """Size and normalisation of the classifier's processor, so augmented batches match its inputs."""
    from ..models.base import processor_image_size

    processor = getattr(classifier, "image_processor", None)
    if processor is None:
        raise ConfigError(
            f"{type(classifier).__name__} has no image_processor; augmentation needs its size and mean/std."
        )
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if not getattr(processor, "do_normalize", True) or mean is None or std is None:
        return ImageSpec(processor_image_size(processor))
    return ImageSpec(processor_image_size(processor), tuple(mean), tuple(std))


def _resolve_accelerator(
    accelerator: Any | None, hyperparameters: TrainingHyperparameters
) -> tuple[Any, bool]:
    if accelerator is not None:
        if str(accelerator.mixed_precision) != hyperparameters.mixed_precision:
            raise ConfigError(
                f"TrainingHyperparameters.mixed_precision={hyperparameters.mixed_precision!r} but the given "
                f"Accelerator runs with mixed_precision={accelerator.mixed_precision!r}; make them agree."
            )
        return accelerator
    from accelerate import Accelerator

    try:
        return Accelerator(mixed_precision=hyperparameters.mixed_precision)
    except ValueError as error:  # accelerate refuses to change precision of an initialised state
        raise ConfigError(
            f"Cannot create an Accelerator with mixed_precision={hyperparameters.mixed_precision!r}: {error}"
        ) from error


def _build_scheduler(
    hyperparameters: TrainingHyperparameters, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    from transformers import get_scheduler

    return get_scheduler(
        hyperparameters.scheduler,
        optimizer=optimizer,
        num_warmup_steps=hyperparameters.warmup_steps,
        num_training_steps=total_steps,
    )
