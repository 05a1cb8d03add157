"""One inference pass over a split, kept in the compact form every metric here needs.

Accuracy needs the arg-max class, MIA-Efficacy needs the probability of the true class; both come
from the same logits, so a split is run through the model once and full logits are only kept on
request (ImageNet's 50k × 1000 logits would be 200 MB).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

Batch = Mapping[str, Any] | Sequence[Any]


@dataclass
class Predictions:
    """What one pass over a split leaves behind (all on CPU).

    labels: int64 [N] true classes. predicted: int64 [N] arg-max classes.
    true_class_probability: float32 [N], softmax(logits)[label] (the MIA feature).
    logits: float32 [N, C] when `predict(..., keep_logits=True)`, else None.
    """

    labels: torch.Tensor
    predicted: torch.Tensor
    true_class_probability: torch.Tensor
    logits: torch.Tensor | None = None

    def __post_init__(self) -> None:
        sizes = {
            "labels": self.labels.shape,
            "predicted": self.predicted.shape,
            "true_class_probability": self.true_class_probability.shape,
        }
        if len({shape for shape in sizes.values()}) != 1 or self.labels.dim() != 1:
            raise ValueError(f"Predictions fields must be 1-D tensors of one length, got shapes {sizes}.")
        if self.logits is not None and self.logits.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"Predictions.logits has {self.logits.shape[0]} rows but there are {self.labels.shape[0]} labels."
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def from_logits(
        cls, logits: torch.Tensor, labels: torch.Tensor, keep_logits: bool = False
    ) -> Predictions:
        """Reduce logits [N, C] and labels [N] to the per-sample quantities the metrics use."""
        if logits.dim() != 2:
            raise ValueError(f"logits must have shape [batch, num_classes], got {tuple(logits.shape)}.")
        labels = torch.as_tensor(labels).reshape(-1).long().to(logits.device)
        if labels.shape[0] != logits.shape[0]:
            raise ValueError(f"{logits.shape[0]} rows of logits but {labels.shape[0]} labels.")
        num_classes = logits.shape[1]
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            bad = labels[(labels < 0) | (labels >= num_classes)].unique().tolist()
            raise ValueError(
                f"labels {bad} are outside the model's {num_classes} classes [0, {num_classes - 1}]."
            )
        logits = logits.detach().float()
        probabilities = torch.softmax(logits, dim=-1)
        return cls(
            labels=labels.cpu(),
            predicted=logits.argmax(dim=-1).cpu(),
            true_class_probability=probabilities.gather(1, labels[:, None]).squeeze(1).cpu(),
            logits=logits.cpu() if keep_logits else None,
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Predictions]) -> Predictions:
        if not parts:
            raise ValueError("No predictions to concatenate: the split produced no batches.")
        keep_logits = all(part.logits is not None for part in parts)
        return cls(
            labels=torch.cat([part.labels for part in parts]),
            predicted=torch.cat([part.predicted for part in parts]),
            true_class_probability=torch.cat([part.true_class_probability for part in parts]),
            logits=torch.cat([part.logits for part in parts]) if keep_logits else None,
        )

    @property
    def correct(self) -> torch.Tensor:
        return self.predicted == self.labels

    def accuracy(self) -> float:
        """Top-1 accuracy in percent (0–100)."""
        if len(self) == 0:
            raise ValueError("Accuracy of an empty split is undefined.")
        return 100.0 * self.correct.double().mean().item()


def accuracy(predicted: Any, labels: Any) -> float:
    """Top-1 accuracy in percent (0–100) of predicted classes [N] against true labels [N].

    Accepts `Predictions`, tensors, arrays or lists; percent because the paper and the retrain-gap
    arithmetic (`avg_gap`) are in percent.
    """
    if isinstance(predicted, Predictions):
        return predicted.accuracy()
    predicted = torch.as_tensor(predicted).reshape(-1)
    labels = torch.as_tensor(labels).reshape(-1)
    if predicted.shape != labels.shape:
        raise ValueError(f"{predicted.numel()} predictions but {labels.numel()} labels.")
    if predicted.numel() == 0:
        raise ValueError("Accuracy of an empty split is undefined.")
    return 100.0 * (predicted == labels).double().mean().item()


def _unpack_batch(batch: Batch, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        missing = [key for key in ("pixel_values", "labels") if key not in batch]
        if missing:
            raise KeyError(f"Batch {index} lacks key(s) {missing}; it has {sorted(batch)}.")
        return batch["pixel_values"], batch["labels"]
    if isinstance(batch, Sequence) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        f"Batch {index} is a {type(batch).__name__}; expected a mapping with 'pixel_values' and 'labels' "
        "or a (pixel_values, labels) pair."
    )


def _model_device_and_dtype(model: nn.Module) -> tuple[torch.device | None, torch.dtype]:
    """Where the weights live (None for a model without tensors) and the dtype inputs should take."""
    tensors = [*model.parameters(), *model.buffers()]
    floating = [tensor for tensor in tensors if tensor.is_floating_point()]
    return (tensors[0].device if tensors else None), (floating[0].dtype if floating else torch.float32)


def _same_device(wanted: torch.device, actual: torch.device) -> bool:
    """ "cuda" matches "cuda:0": an unindexed device means any device of that type."""
    return wanted.type == actual.type and (wanted.index is None or wanted.index == actual.index)


@torch.no_grad()
def predict(
    classifier: nn.Module,
    batches: Iterable[Batch],
    device: str | torch.device | None = None,
    progress: bool = False,
    keep_logits: bool = False,
    description: str = "predict",
) -> Predictions:
    """Run `classifier` over `batches` once, in eval mode, and return its `Predictions`.

    classifier: `forward(pixel_values) -> logits [B, C]` (or an output with `.logits`).
    batches: mappings with "pixel_values" [B, ...] and "labels" [B], or (pixel_values, labels) pairs.
    device: where inputs go; default and only choice for a model with weights is where its weights are
    (a different device raises rather than silently copying the model).
    The classifier's train/eval mode is restored afterwards.
    """
    model_device, model_dtype = _model_device_and_dtype(classifier)
    if model_device is None:
        device = torch.device(device if device is not None else "cpu")
    elif device is not None and not _same_device(torch.device(device), model_device):
        raise ValueError(
            f"The classifier's weights are on {model_device} but device={device!r} was asked; move the "
            f"classifier first (classifier.to({str(device)!r})) so its weights are not copied behind your back."
        )
    else:
        device = model_device
    was_training = classifier.training
    classifier.eval()
    parts: list[Predictions] = []
    try:
        for index, batch in enumerate(tqdm(batches, desc=description, disable=not progress, leave=False)):
            pixel_values, labels = _unpack_batch(batch, index)
            pixel_values = torch.as_tensor(pixel_values)
            if pixel_values.is_floating_point():
                pixel_values = pixel_values.to(device=device, dtype=model_dtype)
            else:
                pixel_values = pixel_values.to(device)
            output = classifier(pixel_values)
            logits = getattr(output, "logits", output)
            if not isinstance(logits, torch.Tensor):
                raise TypeError(
                    f"The classifier returned {type(output).__name__}, not logits or an output with .logits."
                )
            parts.append(Predictions.from_logits(logits, torch.as_tensor(labels), keep_logits=keep_logits))
    finally:
        classifier.train(was_training)
    return Predictions.concatenate(parts)


def predict_dataset(
    classifier: nn.Module,
    dataset: Any,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = False,
    keep_logits: bool = False,
    description: str = "predict",
) -> Predictions:
    """`predict` over a `datasets.Dataset` with "image" and "label" columns, in dataset order,
    preprocessed by `classifier.preprocess` (no augmentation)."""
    from ..data.collate import ImageClassificationCollator, make_dataloader

    preprocess = getattr(classifier, "preprocess", None)
    if not callable(preprocess):
        raise TypeError(f"{type(classifier).__name__} has no preprocess(list[PIL.Image]) method.")
    loader = make_dataloader(
        dataset, ImageClassificationCollator(preprocess), batch_size=batch_size, shuffle=False
    )
    return predict(
        classifier, loader, device=device, progress=progress, keep_logits=keep_logits, description=description
    )
