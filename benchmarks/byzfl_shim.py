"""Stand-ins for ByzFL components this branch of mpifl has not registered yet (the byzfl-components branch adds them):
ByzFL's fc_mnist, its gamma_similarity_niid partition and its SignFlipping attack. Loaded with --plugin by
benchmarks/byzfl_side_by_side.py; each is registered only where the name is still free, so on a branch that has
the real ones this file changes nothing."""

import numpy as np
import torch
from torch import nn

from mpifl.attacks.base import ColludingAttack
from mpifl.registry import NoParams, names, register
from mpifl.rng import Purpose, numpy_rng

if "fc_mnist" not in names("model"):
    # ByzFL: Linear(784, 100), ReLU, Linear(100, 10), log_softmax (the cross-entropy of the logits is the same loss)
    register("model", "fc_mnist")(lambda input_shape, num_classes, hidden: nn.Sequential(
        nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, num_classes)))

if "gamma_similarity_niid" not in names("partition"):
    def gamma_similarity_niid(labels: torch.Tensor, n: int, alpha: float, seed: int) -> list[np.ndarray]:
        """ByzFL's: a fraction gamma (= alpha) of the shuffled points split uniformly, the rest sorted by class and
        cut into n consecutive pieces."""
        perm = numpy_rng(seed, Purpose.PARTITION).permutation(len(labels))
        cut = int(len(perm) * alpha)
        iid = np.array_split(perm[:cut], n)
        rest = perm[cut:]
        rest = rest[np.argsort(labels.numpy()[rest], kind="stable")]
        return [np.sort(np.concatenate([a, b])).astype(np.int64) for a, b in zip(iid, np.array_split(rest, n))]

    register("partition", "gamma_similarity_niid")(gamma_similarity_niid)

if "mean_sign_flip" not in names("attack"):
    @register("attack", "mean_sign_flip")
    class MeanSignFlip(ColludingAttack):
        """ByzFL's SignFlipping: every Byzantine client sends −mean(honest)."""

        Params = NoParams

        def forge(self, view):  # type: ignore[no-untyped-def]
            return (-view.honest.mean(dim=0)).expand(view.own.shape[0], -1).clone()
