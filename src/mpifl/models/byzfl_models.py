"""ByzFL's MNIST and CIFAR-10 models (``byzfl.fed_framework.models``) under its names, parameter for parameter.

The layers, their order and so the flat parameter vector θ are ByzFL 0.0.11's (widths fixed: ``model.hidden`` is
ignored). Two deliberate differences:

* Outputs. mpifl trains every model with cross-entropy on its output. ``fc_mnist`` and ``cnn_mnist`` end in
  ``log_softmax`` in ByzFL (trained there with NLLLoss): cross-entropy of log-probabilities is the same loss, so
  ``fc_mnist`` here returns the logits, which lets it use mpifl's hand-written gradient pass for Linear/ReLU stacks
  (:class:`mpifl.models.gradients.DenseStack`), equal to autograd's to float rounding; ``cnn_mnist`` keeps
  ``log_softmax``. ``logreg_mnist`` returns ``sigmoid`` of the logits as ByzFL's does (cross-entropy over those is
  ByzFL's loss with ``loss_name: CrossEntropyLoss``).
* BatchNorm (``resnet18``). mpifl computes every client's gradient functionally, one vmapped forward over the clients
  of a call, from θ alone: no per-client running statistics can be kept, and θ is all that travels. BatchNorm is
  therefore built with ``track_running_stats=False``: it normalises by the statistics of the batch it sees, which
  is what ByzFL's clients do when they compute gradients (their models are in train mode), one client's mini-batch
  at a time. Evaluation also normalises by the evaluation chunk's own statistics, where ByzFL's server evaluates in
  eval mode with running statistics that it never updates (they stay at mean 0, variance 1). A client with fewer
  points than the call's batch length is padded with zero-weight points, which do enter its batch statistics; with
  equal mini-batches (``train.batch_size``) there is no padding.

Reference
    ByzFL 0.0.11, https://github.com/LPD-EPFL/byzfl (``fed_framework/models.py``); ResNet: K. He, X. Zhang, S. Ren,
    J. Sun, "Deep residual learning for image recognition", CVPR 2016, arXiv:1512.03385 (the CIFAR variant: 3×3 stem,
    no max-pool, as in ByzFL and kuangliu/pytorch-cifar).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import register


def _expect(name: str, input_shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(input_shape) != expected:
        raise ConfigError(f"model.name={name} is ByzFL's network for {'x'.join(map(str, expected))} inputs; the dataset "
                          f"has {'x'.join(map(str, input_shape))}.")


class CnnMnist(nn.Module):
    """ByzFL's ``cnn_mnist``: conv(1→20, 5) → pool → conv(20→50, 5) → pool → fc(800→500) → fc(500→classes)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self._c1 = nn.Conv2d(1, 20, 5, 1)
        self._c2 = nn.Conv2d(20, 50, 5, 1)
        self._f1 = nn.Linear(800, 500)
        self._f2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self._c1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self._c2(x)), 2, 2)
        x = F.relu(self._f1(x.flatten(1)))
        return F.log_softmax(self._f2(x), dim=1)


class CnnCifar(nn.Module):
    """ByzFL's ``cnn_cifar``: three conv(5, padding 2) + ReLU + max-pool blocks (20, 100, 200 channels), then
    fc(3200→512) → fc(512→256) → fc(256→classes)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 20, 5, padding=2)
        self.conv2 = nn.Conv2d(20, 100, 5, padding=2)
        self.conv3 = nn.Conv2d(100, 200, 5, padding=2)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(200 * 4 * 4, 512)
        self.fc2 = nn.Linear(512, 256)
        self.fc3 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3):
            x = self.pool(F.relu(conv(x)))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


def _norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm on the batch's own statistics (see the module docstring)."""
    return nn.BatchNorm2d(channels, track_running_stats=False)


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block, ByzFL's ``BasicBlock``."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), _norm(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ByzFL's ``ResNet18`` for 32×32 images: a 3×3 stem and four stages of two basic blocks (64, 128, 256, 512
    channels), 4×4 average pooling, one linear layer. Parameter names and order are ByzFL's (its ``ResNet`` sits in
    an attribute ``model``, so are these)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.model.bn1 = _norm(64)
        in_planes = 64
        for i, (planes, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
            setattr(self.model, f"layer{i}", nn.Sequential(BasicBlock(in_planes, planes, stride),
                                                          BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.model.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = F.relu(m.bn1(m.conv1(x)))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return m.linear(F.avg_pool2d(x, 4).flatten(1))


@register("model", "fc_mnist")
def fc_mnist(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> nn.Module:
    """ByzFL's ``fc_mnist``: fc(784→100) → ReLU → fc(100→classes) (logits; ByzFL's log_softmax is in the loss)."""
    _expect("fc_mnist", input_shape, (1, 28, 28))
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 100), nn.ReLU(), nn.Linear(100, num_classes))


@register("model", "logreg_mnist")
def logreg_mnist(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> nn.Module:
    """ByzFL's ``logreg_mnist``: sigmoid(fc(784→classes))."""
    _expect("logreg_mnist", input_shape, (1, 28, 28))
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes), nn.Sigmoid())


@register("model", "cnn_mnist")
def cnn_mnist(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> nn.Module:
    _expect("cnn_mnist", input_shape, (1, 28, 28))
    return CnnMnist(num_classes)


@register("model", "cnn_cifar")
def cnn_cifar(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> nn.Module:
    _expect("cnn_cifar", input_shape, (3, 32, 32))
    return CnnCifar(num_classes)


@register("model", "resnet18")
def resnet18(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> nn.Module:
    _expect("resnet18", input_shape, (3, 32, 32))
    return ResNet18(num_classes)
