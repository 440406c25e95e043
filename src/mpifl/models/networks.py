"""The paper's models and the flat-parameter view that travels over MPI.

Models are plain ``nn.Module`` skeletons; their parameters live in one flat float32 vector theta (what Bcast sends and
what aggregators see). :class:`FlatModel` maps theta to the module's named parameters for ``torch.func``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import choose, register

_VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
GROUP_CHANNELS = 16  # GroupNorm groups hold 16 channels each (Sec. IV-B)


def softmax_regression(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 200) -> nn.Module:
    """Two fully connected hidden layers with ReLU (the paper's MNIST network)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def vgg11_gn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """VGG11 (8 conv + 3 FC) with every BatchNorm replaced by GroupNorm of 16 channels per group.

    BatchNorm's running statistics break under non-IID clients (Sec. IV-B); GroupNorm is per sample, so it also
    behaves under ``vmap`` over clients.
    """
    channels, height, width = input_shape
    if height % 32 or width % 32:
        raise ConfigError(f"model.name=vgg11_gn needs images whose sides are multiples of 32, got {height}x{width}.")
    layers: list[nn.Module] = []
    for v in _VGG11:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.GroupNorm(int(v) // GROUP_CHANNELS, int(v)),
                       nn.ReLU()]
            channels = int(v)
    flat = channels * (height // 32) * (width // 32)
    head = [nn.Flatten(), nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers, *head)


def build(name: str, input_shape: tuple[int, ...], num_classes: int, hidden: int = 200) -> nn.Module:
    """The model registered as ``name`` (``model.name``); an unknown name is an error, never a fallback.
    ``hidden`` is the width the MLP takes; registered builders take it by keyword and may ignore it."""
    return choose("model.name", "model", name)(input_shape, num_classes, hidden=hidden)


register("model", "softmax")(lambda input_shape, num_classes, hidden: softmax_regression(input_shape, num_classes))
register("model", "mlp")(lambda input_shape, num_classes, hidden: mlp(input_shape, num_classes, hidden))
register("model", "vgg11_gn")(lambda input_shape, num_classes, hidden: vgg11_gn(input_shape, num_classes))


def initialize(model: nn.Module, kind: str, generator: torch.Generator) -> None:
    """``model.init``: Glorot-uniform weights and zero biases for linear and conv layers (the paper's), all zeros
    (Fig. 2), or ``torch``: PyTorch's own default (each layer's ``reset_parameters``: weights and biases uniform in
    ±1/√fan_in, norm layers 1 and 0), which ByzFL's models keep. ``torch`` draws from ``generator`` layer by layer in
    module order, which is the order PyTorch draws them while building the model: a generator seeded s gives what
    ``torch.manual_seed(s)`` then building ByzFL's model gives."""
    with torch.no_grad():
        for module in model.modules():
            if kind == "torch":
                _torch_default(module, generator)
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                if kind == "zeros":
                    module.weight.zero_()
                else:
                    nn.init.xavier_uniform_(module.weight, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()


def _torch_default(module: nn.Module, generator: torch.Generator) -> None:
    """``module.reset_parameters()`` of a linear or conv layer, drawn from ``generator`` (PyTorch's own draws from
    its global generator); other layers with parameters reset themselves without drawing (norm layers: 1 and 0)."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
        if module.bias is not None:
            fan_in = nn.init._calculate_fan_in_and_fan_out(module.weight)[0]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        module.reset_parameters()


class FlatModel:
    """A module plus the layout of its parameters inside one flat vector."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        named = list(module.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.dim = sum(self.numels)

    def flatten(self) -> torch.Tensor:
        """The module's current parameters as one float32 vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).to(torch.float32)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of theta shaped like the module's parameters (works inside ``vmap``)."""
        pieces = torch.split(theta, self.numels)
        return {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes)}

    def forward(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.module, self.unflatten(theta), (x,))
