"""LoRA fine-tuning of a classifier's fine-tuned part, and folding it back into dense weights.

NegMerge needs a dense task vector per run (ΔW = merged − base, REFERENCE §4): merging A and B
factors separately across runs is wrong for negation and mixed ranks, so every LoRA run is
merged into its own dense copy before task vectors are taken.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from transformers import PreTrainedModel

from ..errors import ConfigError
from .base import ImageClassifier


def apply_lora(
    classifier: ImageClassifier,
    rank: int,
    alpha: float,
    target_modules: Sequence[str] | str | None = None,
    dropout: float = 0.0,
) -> None:
    """Wrap `classifier.model` with peft LoRA adapters so that only the adapters train.

    `target_modules`: short Linear names (default: every Linear of the blocks, `default_lora_targets`) limited
    to the fine-tuned part (CLIP: vision tower only), or a raw peft regex string.
    The adapter scale is alpha / rank.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ConfigError(f"LoRA rank must be a positive integer, got {rank!r}.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ConfigError(f"LoRA alpha must be a positive number, got {alpha!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"LoRA dropout must be in [0, 1), got {dropout!r}.")
    if isinstance(classifier.model, PeftModel):
        raise ConfigError(
            "The classifier already carries LoRA adapters; merge_lora it before adding new ones."
        )
    lora_config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=classifier.lora_target_modules(target_modules),
        bias="none",
    )
    with warnings.catch_warnings():
        # peft reads `model.is_gradient_checkpointing`, which transformers 5 renamed and warns about
        # once per wrapped model: nothing a user can act on, and it buried the grid's progress lines.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        classifier.model = get_peft_model(classifier.model, lora_config)
    classifier.mark_trainable()


def merge_lora(classifier: ImageClassifier) -> PreTrainedModel:
    """Fold the adapters into dense weights (W + alpha/rank · B @ A) and drop them.

    `classifier.model` becomes the plain merged transformers model (returned too), trainable
    as the config says again, and ready for `save_pretrained` and task vectors.
    """
    from peft import PeftModel

    if not isinstance(classifier.model, PeftModel):
        raise ConfigError("The classifier has no LoRA adapters to merge; call apply_lora first.")
    merged = classifier.model.merge_and_unload()
    classifier.model = merged
    classifier.mark_trainable()
    return merged
