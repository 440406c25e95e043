"""Memory layout and placement are not numerical choices: runs give what v0.1 gave for the same config and seed.

The references were written by v0.1 (commit cd4d51b) with the configs below. Accepted sets, flags, C1 and accuracies
must be equal; float datasets may differ in their last bits: v0.1 computed all of a rank's clients in one vmap call,
now every call holds ``train.client_chunk`` clients (placement independence on GPUs, mpifl.models.gradients) and gradients
come from a hand-written backward pass for linear stacks (mpifl.models.gradients.DenseStack). Norms are compared to
1e-5, except on real MNIST: there a ReLU whose input rounds to the other side of 0 in one of the two summation
orders changes that client's gradient by up to a few 1e-5 (against a float64 reference, autograd's own float32
gradient was off by 4e-5 on such a batch, the hand-written one by 7e-6), so norms there are compared to 1e-4 and θ (entries of ~0.05) to 1e-5.
"""

from pathlib import Path

import h5py
import numpy as np
import pytest

from mpifl import config
from mpifl.train import run

from .conftest import REPO, small_config

DATA = Path(__file__).resolve().parent / "data"
EXACT = ("round", "test_accuracy", "clients/accepted", "clients/flags", "clients/c1")
CLOSE = ("clients/c2", "clients/update_norm", "clients/guiding_norm")


def compare(reference: np.lib.npyio.NpzFile, rule: str, f: h5py.File, theta_step: int = 1, rtol: float = 1e-5,
            atol: float = 1e-7) -> None:
    for name in EXACT:
        np.testing.assert_array_equal(f[name][:], reference[f"{rule}/{name}"], err_msg=f"{rule} {name}")
    for name in CLOSE:
        np.testing.assert_allclose(f[name][:], reference[f"{rule}/{name}"], rtol=rtol, err_msg=f"{rule} {name}")
    key = "model/theta" if theta_step == 1 else f"model/theta_every_{theta_step}th"
    np.testing.assert_allclose(f["model/theta"][::theta_step], reference[f"{rule}/{key}"], rtol=rtol, atol=atol)


@pytest.mark.parametrize("rule", ["diversefl", "median", "trmean", "noisy_median", "rsa"])
def test_small_runs_match_v0_1(tmp_path: Path, rule: str):
    agg = {"name": rule, "record_similarity": rule != "diversefl", **({"params": {"delta": 0.01}} if rule == "rsa" else {})}
    run(small_config(clients=6, rounds=6, aggregator=agg), tmp_path / "run.h5", progress=None)
    with h5py.File(tmp_path / "run.h5") as f:
        compare(np.load(DATA / "golden_v0_1.npz"), rule, f)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["diversefl", "median", "trmean"])
def test_fig3_on_real_mnist_matches_v0_1(tmp_path: Path, real_mnist: Path, rule: str):
    cfg = config.load(REPO / "configs" / "fig3_mnist_mlp.yaml",
                      ["rounds=8", "train.eval_every=4", f"aggregator.name={rule}", f"data.root={real_mnist}"])
    run(cfg, tmp_path / "run.h5", progress=None)
    with h5py.File(tmp_path / "run.h5") as f:
        compare(np.load(DATA / "golden_fig3_v0_1.npz"), rule, f, theta_step=97, rtol=1e-4, atol=1e-5)
