"""The networks (registry kind ``model``) as flat float32 parameter vectors, and their per-client gradients."""

from . import byzfl_models  # noqa: F401 - import registers ByzFL's models
from .networks import FlatModel, build, initialize, mlp, softmax_regression, vgg11_gn

__all__ = ["FlatModel", "build", "initialize", "mlp", "softmax_regression", "vgg11_gn"]
