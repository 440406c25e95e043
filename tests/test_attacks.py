import pytest
import torch

from mpifl import build, registry  # noqa: F401 - build registers the built-in choices
from mpifl.attacks.client import Backdoor, BackdoorParams, ClassFlip, Gaussian, GaussianParams, SignFlip
from mpifl.config import ConfigError, load


def test_class_flip_maps_c_to_C_minus_1_minus_c():
    assert ClassFlip(None).poison_labels(torch.arange(10), 10).tolist() == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]


def test_backdoor_relabels_only_the_source_class():
    y = torch.tensor([4, 1, 4, 9, 3])
    assert Backdoor(BackdoorParams()).poison_labels(y, 10).tolist() == [9, 1, 9, 9, 3]
    assert Backdoor(BackdoorParams()).backdoor_task == (4, 9)


def test_sign_flip_and_gradient_attacks_leave_labels_alone():
    y = torch.tensor([4, 1])
    assert torch.equal(SignFlip(None).poison_labels(y, 10), y)


def test_tampered_messages():
    z = torch.tensor([1.0, -2.0, 0.5])
    assert SignFlip(None).tamper(z, 0, 1, 0).tolist() == [-1.0, 2.0, -0.5]
    assert Backdoor(BackdoorParams(scale=4.0)).tamper(z, 0, 1, 0).tolist() == [4.0, -8.0, 2.0]
    assert torch.equal(ClassFlip(None).tamper(z, 0, 1, 0), z)


def test_gaussian_attack_is_seeded_per_round_and_client():
    z = torch.zeros(1000)
    attack = Gaussian(GaussianParams(sigma=3.0))
    a = attack.tamper(z, 5, 2, 7)
    assert torch.equal(a, attack.tamper(z, 5, 2, 7))
    assert not torch.equal(a, attack.tamper(z, 5, 2, 8)) and not torch.equal(a, attack.tamper(z, 5, 3, 7))
    assert abs(float(a.std()) - 3.0) < 0.3


def test_client_attacks_take_their_params_from_attack_params():
    plan = build.resolve(load(None, ["attack.name=backdoor", "attack.params={source: 1, target: 7, scale: 2}"]))
    assert plan.attack.params == BackdoorParams(source=1, target=7, scale=2.0)
    with pytest.raises(ConfigError, match="unknown key attack.params.sigma. Known keys: source, target, scale."):
        build.resolve(load(None, ["attack.name=backdoor", "attack.params={sigma: 1}"]))
    with pytest.raises(ConfigError, match="attack.params.sigma=-1.0 must be > 0"):
        build.resolve(load(None, ["attack.name=gaussian", "attack.params.sigma=-1"]))
