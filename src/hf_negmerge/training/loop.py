"""One fine-tuning run on the forget set, accelerate-native.

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
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError
from .augment import ImageSpec, build_augmentation
from .grid import TrainingHyperparameters, WarmupWarning

StepCallback = Callable[[int, float], None]


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
        warnings.warn(
            f"{description}: warmup_steps={hyperparameters.warmup_steps} ≥ the run's {total_steps} optimizer "
            "steps, so the learning rate never reaches its peak.",
            WarmupWarning,
            stacklevel=2,
        )
    scheduler = _build_scheduler(hyperparameters, optimizer.optimizer, total_steps)
    loss_function = nn.CrossEntropyLoss(label_smoothing=hyperparameters.label_smoothing)

    model.train()
    step = 0
    bar = tqdm(
        total=total_steps,
        desc=description,
        unit="step",
        disable=not (progress and accelerator.is_local_main_process),
        leave=False,  # the grid's bar keeps the finished run's loss
        dynamic_ncols=True,
    )
    for epoch in range(hyperparameters.epochs):
        for index, batch in enumerate(loader):
            group_start = index - index % accumulation
            group_size = min(accumulation, batches_per_epoch - group_start)
            is_step = index + 1 == group_start + group_size
            pixel_values = batch["pixel_values"].to(accelerator.device)
            labels = batch["labels"].to(accelerator.device)
            sync = contextlib.nullcontext() if is_step or not distributed else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    logits = model(pixel_values)
                loss = loss_function(logits.float(), labels)
                accelerator.backward(loss / group_size)
            if not is_step:
                continue
            if hyperparameters.grad_clip is not None:
                accelerator.clip_grad_norm_(parameters, hyperparameters.grad_clip)
            learning_rate = float(scheduler.get_last_lr()[0])  # the rate this step uses
            optimizer.step()
            if not optimizer.step_was_skipped:  # fp16 overflow: keep the schedule in step with real updates
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            loss_value = float(loss.detach())
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            if step_callback is not None:
                step_callback(step, loss_value)
            if step_records is not None:
                step_records.append(
                    {"step": step, "epoch": epoch + 1, "loss": loss_value, "learning_rate": learning_rate}
                )
    bar.close()

    classifier = accelerator.unwrap_model(model)
    classifier.eval()
    # A caller's accelerator keeps references to what `prepare` saw (until its `free_memory()`);
    # one made here is dropped with everything it references when this function returns.
    return classifier


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
