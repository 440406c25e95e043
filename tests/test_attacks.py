import torch

from mpifl.attacks import forge, poison_labels
from mpifl.config import AttackConfig


def test_class_flip_maps_c_to_C_minus_1_minus_c():
    y = torch.arange(10)
    assert poison_labels(y, AttackConfig(name="class_flip"), 10).tolist() == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]


def test_backdoor_relabels_only_the_source_class():
    y = torch.tensor([4, 1, 4, 9, 3])
    assert poison_labels(y, AttackConfig(name="backdoor"), 10).tolist() == [9, 1, 9, 9, 3]


def test_sign_flip_and_gradient_attacks_leave_labels_alone():
    y = torch.tensor([4, 1])
    assert torch.equal(poison_labels(y, AttackConfig(name="sign_flip"), 10), y)


def test_forged_messages():
    z = torch.tensor([1.0, -2.0, 0.5])
    assert forge(z, AttackConfig(name="sign_flip"), 0, 1, 0).tolist() == [-1.0, 2.0, -0.5]
    assert forge(z, AttackConfig(name="backdoor", scale=4.0), 0, 1, 0).tolist() == [4.0, -8.0, 2.0]
    assert torch.equal(forge(z, AttackConfig(name="class_flip"), 0, 1, 0), z)


def test_gaussian_attack_is_seeded_per_round_and_client():
    z = torch.zeros(1000)
    cfg = AttackConfig(name="gaussian", sigma=3.0)
    a = forge(z, cfg, 5, 2, 7)
    assert torch.equal(a, forge(z, cfg, 5, 2, 7))
    assert not torch.equal(a, forge(z, cfg, 5, 2, 8)) and not torch.equal(a, forge(z, cfg, 5, 3, 7))
    assert abs(float(a.std()) - 3.0) < 0.3
