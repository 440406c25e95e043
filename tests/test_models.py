import math

import pytest
import torch
from torch import nn

from mpifl.config import ConfigError
from mpifl.models import FlatModel, build, initialize


def test_mlp_has_two_hidden_layers_of_200():
    flat = FlatModel(build("mlp", (1, 28, 28), 10))
    assert flat.dim == 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10


def test_softmax_regression_size():
    assert FlatModel(build("softmax", (1, 28, 28), 10)).dim == 7850


def test_vgg11_gn_has_8_convs_3_linears_and_16_channel_groups():
    model = build("vgg11_gn", (3, 32, 32), 100)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert len(convs) == 8 and len([m for m in model.modules() if isinstance(m, nn.Linear)]) == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(n.num_channels == 16 * n.num_groups for n in norms) and len(norms) == 8
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_vgg_rejects_mnist_sized_images():
    with pytest.raises(ConfigError, match="multiples of 32"):
        build("vgg11_gn", (1, 28, 28), 10)


def test_glorot_uniform_bounds_and_zero_biases():
    model = build("mlp", (1, 28, 28), 10)
    initialize(model, "glorot", torch.Generator().manual_seed(0))
    weight = model[1].weight.detach()
    bound = math.sqrt(6 / (784 + 200))
    assert float(weight.abs().max()) <= bound
    assert float(weight.abs().max()) > 0.95 * bound
    assert abs(float(weight.std()) - bound / math.sqrt(3)) < 1e-3
    assert all(float(m.bias.detach().abs().max()) == 0 for m in model.modules() if isinstance(m, nn.Linear))


def test_zero_init_and_seeded_glorot():
    model = build("softmax", (1, 28, 28), 10)
    initialize(model, "zeros", torch.Generator().manual_seed(0))
    assert float(FlatModel(model).flatten().abs().sum()) == 0
    a, b = build("mlp", (1, 8, 8), 10), build("mlp", (1, 8, 8), 10)
    initialize(a, "glorot", torch.Generator().manual_seed(4))
    initialize(b, "glorot", torch.Generator().manual_seed(4))
    assert torch.equal(FlatModel(a).flatten(), FlatModel(b).flatten())


def test_flat_round_trip_and_functional_forward():
    model = build("mlp", (1, 8, 8), 10, hidden=5)
    flat = FlatModel(model)
    theta = flat.flatten()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(flat.forward(theta, x), model(x))
    assert torch.equal(torch.cat([p.reshape(-1) for p in flat.unflatten(theta).values()]), theta)
