"""Test-set metrics on rank 0: accuracy, loss, and the backdoor task's success rate."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .models import FlatModel


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float
    backdoor_accuracy: float  # share of test images of the source class classified as the target; nan if unused


@torch.no_grad()
def evaluate(flat: FlatModel, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
             inputs: Callable[[torch.Tensor], torch.Tensor], backdoor: tuple[int, int] | None = None,
             chunk: int = 2000) -> Evaluation:
    """Metrics of model theta on (x, y), in chunks so VGG on CIFAR fits in memory; ``inputs`` turns a chunk of stored
    images into model inputs (:class:`mpifl.data.datasets.Scaling`)."""
    correct, loss_sum, predictions = 0, 0.0, []
    for start in range(0, len(y), chunk):
        logits = flat.forward(theta, inputs(x[start: start + chunk]))
        target = y[start: start + chunk]
        pred = logits.argmax(dim=1)
        correct += int((pred == target).sum())
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        predictions.append(pred)
    backdoor_acc = math.nan
    if backdoor is not None:
        source, target_class = backdoor
        pred = torch.cat(predictions)
        chosen = y == source
        if bool(chosen.any()):
            backdoor_acc = float((pred[chosen] == target_class).float().mean())
    return Evaluation(correct / len(y), loss_sum / len(y), backdoor_acc)
