"""diversefl_plus's spectral step: the shared directions of the rows' unverified parts, removed exactly, and the decoy
attack built to get around it."""

import dataclasses
import math
from typing import Callable

import pytest
import torch

from mpifl import build, registry  # noqa: F401 - build registers the built-in choices
from mpifl.attacks import AttackView, RuleFacts
from mpifl.attacks.adaptive import AdaptiveDiverseFL, Params, construct
from mpifl.config import ConfigError
from mpifl.rules.diversefl_plus import shared_part
from mpifl.server import Server

from .conftest import server_with, small_config


def test_shared_part_removes_the_direction_two_rows_share_hand_checked():
    o = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    every = torch.ones(4, dtype=torch.bool)
    # K = O O^T has its largest eigenvalue 8 on rows 0-1 (direction e1): both lose their 2 e1, the mean loses e1
    torch.testing.assert_close(shared_part(o, every, 1), torch.tensor([1.0, 0.0, 0.0]))
    # r >= k removes everything: the mean itself
    torch.testing.assert_close(shared_part(o, every, 9), o.mean(dim=0))
    # rows outside the selection are ignored, whatever they hold: row 1 dropped, e1 (energy 4) still leads, k = 3
    o[1] = 100.0
    torch.testing.assert_close(shared_part(o, torch.tensor([True, False, True, True]), 1),
                               torch.tensor([2.0 / 3, 0.0, 0.0]))


@pytest.mark.parametrize("r", [1, 2, 3])
def test_shared_part_equals_projecting_every_row_on_its_leading_singular_directions(r: int):
    torch.manual_seed(0)
    o = torch.randn(7, 40, dtype=torch.float64)
    o[:3] += 4.0 * torch.randn(40, dtype=torch.float64)  # three rows share a direction
    rows = torch.tensor([True, True, True, False, True, True, True])
    basis = torch.linalg.svd(o[rows], full_matrices=False).Vh[:r]  # [r, d] leading right singular vectors
    expected = (o[rows] @ basis.T @ basis).mean(dim=0)
    torch.testing.assert_close(shared_part(o.float(), rows, r), expected.float(), rtol=1e-5, atol=1e-5)


def plus_server(n: int, g: torch.Tensor, **params) -> Server:  # type: ignore[no-untyped-def]
    cfg = small_config(clients=n, byzantine={"model": "none"},
                       aggregator={"name": "diversefl_plus", "params": params})
    return server_with(cfg, g)


def test_server_hands_the_rule_each_rows_part_orthogonal_to_its_guiding_gradient():
    torch.manual_seed(3)
    n, d = 6, 30
    g = torch.randn(n, d)
    z = g + 0.3 * torch.randn(n, d)
    theta = torch.zeros(d)
    server = plus_server(n, g)
    screened = server.examine(z.clone(), theta)
    rebuilt, parts = screened.clean, screened.unverified
    assert parts is not None
    torch.testing.assert_close((parts * g).sum(dim=1), torch.zeros(n), atol=1e-5, rtol=0)
    along = rebuilt - parts  # what is left is along g~_j, with a positive coefficient (C1)
    torch.testing.assert_close(torch.linalg.matrix_rank(torch.stack([along[0], g[0]])), torch.tensor(1))
    assert ((along * g).sum(dim=1) > 0).all()
    decision = server.decide(screened, theta, torch.zeros(n, dtype=torch.bool), 1)
    torch.testing.assert_close(decision.direction, rebuilt.mean(dim=0) - shared_part(parts, decision.accepted, 1))
    off = plus_server(n, g, spectral=0)
    unshared = off.examine(z.clone(), theta)
    assert unshared.unverified is None
    torch.testing.assert_close(off.decide(unshared, theta, torch.zeros(n, dtype=torch.bool), 1).direction,
                               rebuilt.mean(dim=0))


def test_colluding_push_is_removed_and_honest_rows_keep_their_verified_parts():
    """Six honest rows (own gradient plus independent noise) and three colluding rows that spend their cone on one
    shared direction v: with spectral = 1 the step keeps almost nothing along v; without it, v's share is the
    attackers' 3 rows out of 9."""
    torch.manual_seed(4)
    n, d = 9, 400
    g = torch.randn(n, d)
    z = g + 0.2 * torch.randn(n, d)
    v = torch.randn(d)
    for j in (6, 7, 8):
        u = g[j] / g[j].norm()
        w = v - (v @ u) * u
        z[j] = g[j] + 0.5 * g[j].norm() * w / w.norm()  # inside the cone (kappa = 1)
    theta = torch.zeros(d)
    unit_v = v / v.norm()
    along_v = {}
    for spectral in (0, 1):
        server = plus_server(n, g, spectral=spectral)
        screened = server.examine(z.clone(), theta)
        along_v[spectral] = float(server.decide(screened, theta, torch.zeros(n, dtype=torch.bool), 1).direction
                                  @ unit_v)
    typical = float(g.norm(dim=1).mean())
    assert along_v[0] > 0.1 * typical  # 3/9 of half a guiding gradient's length, less what g~_j already has along v
    assert abs(along_v[1]) < 0.2 * along_v[0]


def test_spectral_must_not_be_negative():
    with pytest.raises(ConfigError, match="aggregator.params.spectral=-1 must be >= 0"):
        small_config(aggregator={"name": "diversefl_plus", "params": {"spectral": -1}})


def test_steps_that_need_per_client_rows_refuse_pre_aggregators():
    with pytest.raises(ConfigError, match=r"aggregator.pre=\['nnm'\]: the pre-aggregated rows mix clients"):
        small_config(aggregator={"name": "diversefl_plus", "pre": ["nnm"]})
    with pytest.raises(ConfigError, match="set spectral: 0 and pooled: false"):
        small_config(aggregator={"name": "diversefl_plus", "pre": ["bucketing"], "params": {"spectral": 0,
                                                                                          "pooled": True}})
    cfg = small_config(aggregator={"name": "diversefl_plus", "pre": ["nnm"], "params": {"spectral": 0}})
    assert cfg.aggregator.pre == ["nnm"]


def view(guiding: torch.Tensor, honest: torch.Tensor, seed: int) -> AttackView:
    facts = RuleFacts("diversefl_plus", len(honest) + len(guiding), len(guiding), None, None)
    return AttackView(honest, guiding.clone(), guiding, torch.zeros(guiding.shape[1]), 1,
                      torch.Generator().manual_seed(seed), facts)


def test_group_decoys_keep_cosine_and_length_and_cost_exactly_their_share_of_the_push():
    """The first construction (decoy_mode: groups), kept to reproduce its results."""
    torch.manual_seed(5)
    guiding, honest = torch.randn(4, 60), torch.randn(8, 60) + 0.5
    mean = honest.mean(dim=0)
    scale = 2.0
    rows = AdaptiveDiverseFL(Params(decoys=2, decoy_scale=scale, decoy_mode="groups")).forge(view(guiding, honest, 0))
    plain = construct(guiding, mean, 0.05, 1.0)
    cos = (rows * guiding).sum(dim=1) / (rows.norm(dim=1) * guiding.norm(dim=1))
    torch.testing.assert_close(cos, torch.full((4,), 0.05))
    torch.testing.assert_close(rows.norm(dim=1), guiding.norm(dim=1))
    # the push against the mean: the orthogonal part's share 1 / sqrt(1 + D²) of the plain construction's
    along_u = 0.05 * guiding.norm(dim=1) * (guiding @ mean) / guiding.norm(dim=1)
    torch.testing.assert_close(rows @ mean - along_u, (plain @ mean - along_u) / math.sqrt(1 + scale ** 2))
    # rows i and i + 2 share their group's decoy; the two groups' decoys differ; the draw follows the generator
    def decoy(r: torch.Tensor) -> torch.Tensor:
        return r - plain * (r @ plain.T).diagonal()[:, None] / (plain.norm(dim=1) ** 2)[:, None]
    dec = decoy(rows)
    cosine = (dec @ dec.T) / (dec.norm(dim=1)[:, None] * dec.norm(dim=1)[None, :])
    assert float(cosine[0, 2]) > 0.9 and float(cosine[1, 3]) > 0.9 and abs(float(cosine[0, 1])) < 0.5
    groups = Params(decoys=2, decoy_scale=scale, decoy_mode="groups")
    again = AdaptiveDiverseFL(groups).forge(view(guiding, honest, 0))
    other = AdaptiveDiverseFL(groups).forge(view(guiding, honest, 1))
    assert torch.equal(rows, again) and not torch.equal(rows, other)


def test_zero_sum_decoys_keep_cosine_length_and_the_rows_sum_and_cancel_exactly():
    torch.manual_seed(6)
    guiding, honest = torch.randn(5, 80), torch.randn(10, 80) + 0.5
    mean = honest.mean(dim=0)
    rows = AdaptiveDiverseFL(Params(decoys=2)).forge(view(guiding, honest, 0))
    plain = construct(guiding, mean, 0.05, 1.0)
    cos = (rows * guiding).sum(dim=1) / (rows.norm(dim=1) * guiding.norm(dim=1))
    torch.testing.assert_close(cos, torch.full((5,), 0.05))
    torch.testing.assert_close(rows.norm(dim=1), guiding.norm(dim=1))
    u = guiding / guiding.norm(dim=1, keepdim=True)
    v = plain - (plain * u).sum(dim=1, keepdim=True) * u
    v = v / v.norm(dim=1, keepdim=True)
    decoys = rows - (rows * u).sum(dim=1, keepdim=True) * u - (rows * v).sum(dim=1, keepdim=True) * v  # beyond the push
    torch.testing.assert_close(decoys.sum(dim=0), torch.zeros(80), atol=1e-5, rtol=0)  # they cancel in the sum
    assert torch.linalg.matrix_rank(decoys) == 2  # two shared directions
    # the largest decoy is D / sqrt(1 + D²) of the shortest row's unverified part (D = 2)
    across = guiding.norm(dim=1) * math.sqrt(1 - 0.05 ** 2)
    torch.testing.assert_close(decoys.norm(dim=1).max(), across.min() * 2 / math.sqrt(5))
    # fewer than two rows cannot cancel: the plain construction
    one = AdaptiveDiverseFL(Params(decoys=2)).forge(view(guiding[:1], honest, 0))
    torch.testing.assert_close(one, plain[:1])


def test_full_gradient_target_and_the_cone_edge():
    """target=full_gradient pushes against the mean of the honest rows and the attackers' own gradients; edge puts
    the row at diversefl_plus's cone edge (cos = 1 / sqrt(1 + kappa²)) and clip length."""
    torch.manual_seed(7)
    guiding, honest, own = torch.randn(3, 50), torch.randn(6, 50) + 0.5, torch.randn(3, 50) - 2.0
    facts = RuleFacts("diversefl_plus", 9, 3, registry.get("rule", "diversefl_plus").Params(kappa=0.5, clip=1.5), None)
    rows = AdaptiveDiverseFL(Params(target="full_gradient", edge=True)).forge(
        AttackView(honest, own, guiding, torch.zeros(50), 1, torch.Generator(), facts))
    full = torch.cat([honest, own]).mean(dim=0)
    torch.testing.assert_close(rows, construct(guiding, full, 1 / math.sqrt(1.25) * (1 + 1e-6), 1.5))
    with pytest.raises(ConfigError, match="target=either .* needs search: true"):
        small_config(attack={"name": "diversefl_adaptive", "params": {"target": "either"}})
    with pytest.raises(ConfigError, match="attack.params.target='mean' is not one of"):
        small_config(attack={"name": "diversefl_adaptive", "params": {"target": "mean"}})


def pushed_round(seed: int) -> tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Issue #26's synthetic round, drawn after ``torch.manual_seed(seed)``: n = 20 clients, the last b = 5 Byzantine,
    d = 400; guiding gradients g (mean 0.3) and honest rows z = g + noise. (n, b, g, z, byzantine, θ = 0, nobody
    sampled out)."""
    torch.manual_seed(seed)
    n, b, d = 20, 5, 400
    g = torch.randn(n, d) + 0.3
    z = g + 0.3 * torch.randn(n, d)
    return n, b, g, z, torch.arange(n) >= n - b, torch.zeros(d), torch.zeros(n, dtype=torch.bool)


@pytest.mark.parametrize("decoys", [1, 2])
def test_spectral_step_removes_the_group_decoys_push_but_leaves_the_zero_sum_decoys_push(decoys: int):
    """Issue #26 (a), with one decoy direction (opposite signs in pairs) or two (a polygon): 15 honest rows inside the cone and 5 attackers at the cone edge and clip length pushing
    against the full gradient. With the first construction the rows share v + D w_g per group, so the step's leading
    direction holds v and takes the push with it; with zero-sum decoy weights the leading direction is a decoy, which
    the rows' mean does not hold, and the push stays."""
    n, b, g, z, byzantine, theta, nobody = pushed_round(8)
    full = z.mean(dim=0)  # every client's honest row: the step without an attack
    unit = full / full.norm()

    def along_full(rows: torch.Tensor, spectral: int) -> float:
        server = plus_server(n, g, spectral=spectral)
        return float(server.decide(server.examine(rows.clone(), theta), theta, nobody, 1).direction @ unit)

    plus_params = registry.get("rule", "diversefl_plus").Params()
    facts = RuleFacts("diversefl_plus", n, b, plus_params, None)
    effect = {}
    for mode in ("groups", "zero_sum"):
        attack = AdaptiveDiverseFL(Params(target="full_gradient", edge=True, decoys=decoys, decoy_mode=mode))
        rows = z.clone()
        rows[byzantine] = attack.forge(AttackView(z[~byzantine], z[byzantine], g[byzantine], theta, 1,
                                                  torch.Generator().manual_seed(0), facts))
        for spectral in (0, 1):
            effect[mode, spectral] = along_full(rows, spectral) - along_full(z, spectral)
    assert effect["groups", 0] < 0 and effect["zero_sum", 0] < 0  # both push against the full gradient
    # measured (decoys = 1): groups -2.38 without the step, +0.60 with it (it removes the push, and some honest mass
    # along it); zero_sum -3.25 without the step, -3.24 with it
    assert effect["groups", 1] > -0.1 * abs(effect["groups", 0])  # the step removes the groups' push
    assert effect["zero_sum", 1] < 0.9 * effect["zero_sum", 0]  # and leaves the zero-sum decoys' push whole


def test_decoy_params_are_checked():
    with pytest.raises(ConfigError, match="attack.params.decoy_mode='x' is not one of zero_sum, groups"):
        small_config(attack={"name": "diversefl_adaptive", "params": {"decoy_mode": "x"}})
    with pytest.raises(ConfigError, match="attack.params.decoys=-1"):
        small_config(attack={"name": "diversefl_adaptive", "params": {"decoys": -1}})
    assert registry.get("attack", "diversefl_adaptive").Params(decoys=3).decoy_scale == 2.0


def test_robust_unverified_clips_to_the_median_and_trims_hand_checked():
    from mpifl.rules.diversefl_plus import robust_unverified
    o = torch.tensor([[4.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0], [9.0, 9.0]])
    rows = torch.tensor([True, True, True, True, True, False])  # row 5 is not used, whatever it holds
    plain = torch.tensor([0.8, 0.0])
    # median norm 1: row 0 becomes (1, 0); the mean of the clipped parts is (0.2, 0)
    torch.testing.assert_close(robust_unverified(o, rows, 0, 1.0, 0.0), torch.tensor([0.2, 0.0]) - plain)
    # and trimmed one value each side: coordinate 0 keeps (0, 0, 1), coordinate 1 keeps (0, 0, 0)
    torch.testing.assert_close(robust_unverified(o, rows, 0, 1.0, 0.2), torch.tensor([1 / 3, 0.0]) - plain)
    # neither: nothing changes; spectral alone: exactly the spectral step
    torch.testing.assert_close(robust_unverified(o, rows, 0, 0.0, 0.0), torch.zeros(2))
    torch.testing.assert_close(robust_unverified(o, rows, 1, 0.0, 0.0), -shared_part(o, rows, 1))


def units_and_orthogonal_units(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, d] random unit rows u, then [n, d] random unit rows v, each orthogonal to its own u (drawn in that order
    from torch's global generator)."""
    u = torch.randn(n, d)
    u = u / u.norm(dim=1, keepdim=True)
    v = torch.randn(n, d)
    v = v - (v * u).sum(dim=1, keepdim=True) * u
    return u, v / v.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("directions, spread", [(1, 1), (2, 2), (4, 4), (9, 4)])
def test_zero_sum_decoys_spread_their_energy_evenly_over_their_directions(directions: int, spread: int):
    """Five rows: one direction pairs them (the shortest row takes none); two a pentagon; four or more the two
    harmonics of five points (at most b - 1 = 4 directions), each row's decoy equally long."""
    from mpifl.attacks.adaptive import zero_sum_decoys
    torch.manual_seed(9)
    b, d = 5, 300
    u, v = units_and_orthogonal_units(b, d)
    across = torch.rand(b, 1) + 1
    o = zero_sum_decoys(u, v, across, directions, 3.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(o.norm(dim=1), across[:, 0])
    decoys = o - (o * v).sum(dim=1, keepdim=True) * v
    torch.testing.assert_close((decoys @ u.T).abs().max(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(decoys.sum(dim=0), torch.zeros(d), atol=1e-5, rtol=0)
    values = torch.linalg.svdvals(decoys)
    assert int((values > 1e-4).sum()) == spread
    torch.testing.assert_close(values[:spread], values[:1].expand(spread))  # equal energy per direction
    if directions > 1:
        torch.testing.assert_close(decoys.norm(dim=1), torch.full((b,), 3 / math.sqrt(10) * float(across.min())))


def test_median_clip_hand_checked():
    from mpifl.rules.diversefl_plus import median_clip
    z = torch.tensor([[3.0, 4.0], [0.0, 1.0], [2.0, 0.0], [0.0, 9.0], [100.0, 0.0]])
    rows = torch.tensor([True, True, True, True, False])
    # norms 5, 1, 2, 9 (row 4 not selected): torch's median of an even count is the lower middle, 2
    torch.testing.assert_close(median_clip(z, rows, 1.0), torch.tensor([0.4, 1.0, 1.0, 2 / 9, 1.0]))
    torch.testing.assert_close(median_clip(z, rows, 2.0), torch.tensor([0.8, 1.0, 1.0, 4 / 9, 1.0]))
    # a floor raises a row's cap above the round's (row 3: 6 instead of 2), never lowers it (row 0: 1 < 2); NaN: none
    floor = torch.tensor([1.0, 0.0, math.nan, 6.0, 0.0])
    torch.testing.assert_close(median_clip(z, rows, 1.0, floor), torch.tensor([0.4, 1.0, 1.0, 2 / 3, 1.0]))


def test_five_directions_remove_the_push_that_four_zero_sum_decoys_hide_from_one_or_three():
    """Five attackers behind four zero-sum decoy directions (D = 3, the most five rows can cancel): removing one
    direction (diversefl_plus) or three leaves the push; five take it. diversefl_plus2 removes two."""
    n, b, g, z, byzantine, theta, nobody = pushed_round(10)
    unit = z.mean(dim=0) / z.mean(dim=0).norm()
    facts = RuleFacts("diversefl_plus", n, b, registry.get("rule", "diversefl_plus").Params(), None)

    def effect(name: str, decoys: int, **params) -> float:  # type: ignore[no-untyped-def]
        rows = z.clone()
        attack = AdaptiveDiverseFL(Params(target="full_gradient", edge=True, decoys=decoys, decoy_scale=3.0))
        rows[byzantine] = attack.forge(AttackView(z[~byzantine], z[byzantine], g[byzantine], theta, 1,
                                                  torch.Generator().manual_seed(0), facts))
        cfg = small_config(clients=n, byzantine={"model": "none"}, aggregator={"name": name, "params": params})
        along = []
        for x in (rows, z):
            server = server_with(cfg, g)
            along.append(float(server.decide(server.examine(x.clone(), theta), theta, nobody, 1).direction @ unit))
        return along[0] - along[1]

    unguarded = effect("diversefl_plus", 4, spectral=0)
    assert unguarded < 0
    # measured: -2.05 with no step, -1.67 removing one direction, -1.63 three, +0.64 five (the push is gone, with
    # some honest mass along the full gradient that lies in the same directions)
    assert effect("diversefl_plus", 4) < 0.6 * unguarded and effect("diversefl_plus", 4, spectral=3) < 0.6 * unguarded
    assert effect("diversefl_plus", 4, spectral=5) > -0.1 * abs(unguarded)
    # one decoy direction: diversefl_plus keeps the push, diversefl_plus2 (two directions) takes it
    assert registry.get("rule", "diversefl_plus2").Params().spectral == 2
    one = effect("diversefl_plus", 1, spectral=0)
    assert effect("diversefl_plus", 1) < 0.6 * one
    assert effect("diversefl_plus2", 1) > -0.1 * abs(one)


def test_median_c2_clip_hand_checked():
    from mpifl.rules.diversefl_plus import median_c2_clip
    z = torch.tensor([[3.0, 4.0], [0.0, 1.0], [2.0, 0.0], [0.0, 9.0]])
    guiding_norm = torch.tensor([1.0, 1.0, 2.0, 3.0])
    rows = torch.tensor([True, True, True, False])
    # ratios 5, 1, 1 (row 3 not selected): median 1, so row 0 is cut to length 1 x ||g~_0|| = 1
    torch.testing.assert_close(median_c2_clip(z, guiding_norm, rows, 1.0), torch.tensor([0.2, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(median_c2_clip(z, guiding_norm, rows, 2.0), torch.tensor([0.4, 1.0, 1.0, 1.0]))


def test_server_hands_the_rule_the_guiding_norms_for_c2_clip():
    from mpifl.rules.diversefl_plus import median_c2_clip
    torch.manual_seed(11)
    n, d = 6, 30
    g = torch.randn(n, d)
    z = g * torch.tensor([1.0, 1.2, 0.9, 1.1, 1.9, 1.5])[:, None] + 0.1 * torch.randn(n, d)
    theta, nobody = torch.zeros(d), torch.zeros(n, dtype=torch.bool)
    server = plus_server(n, g, spectral=0, c2_clip=1.0)
    screened = server.examine(z.clone(), theta)
    direction = server.decide(screened, theta, nobody, 1).direction
    scale = median_c2_clip(screened.clean, g.norm(dim=1), screened.usable, 1.0)
    assert float(scale.min()) < 0.9  # the long rows are cut
    torch.testing.assert_close(direction, (screened.clean * scale[:, None]).mean(dim=0))


def fitted_round() -> tuple[torch.Tensor, Callable[..., torch.Tensor]]:
    """Seven honest rows five times as long as their guiding gradients (||g~_j|| = 1) at cosine 0.9, and an eighth at
    the cone edge a thousand times as long: (the rows, the step diversefl_plus2 without the spectral step takes on
    them, given aggregator params)."""
    torch.manual_seed(12)
    n, d = 8, 60
    g, w = units_and_orthogonal_units(n, d)  # ||g~_j|| = 1; w_j unit, orthogonal to g~_j
    z = 5.0 * (0.9 * g + math.sqrt(1 - 0.81) * w)
    z[7] = 1000.0 * (g[7] + w[7]) / math.sqrt(2)
    theta, nobody = torch.zeros(d), torch.zeros(n, dtype=torch.bool)

    def step(**params: object) -> torch.Tensor:
        cfg = small_config(clients=n, byzantine={"model": "none"},
                           aggregator={"name": "diversefl_plus2", "params": {"spectral": 0, **params}})
        server = server_with(cfg, g)
        return server.decide(server.examine(z.clone(), theta), theta, nobody, 1).direction

    return z, step


def test_row_clip_instead_of_the_guiding_clip_keeps_honest_rows_whose_samples_were_fitted():
    """Seven honest rows five times as long as their guiding gradients (the samples fitted, as under issue #26's push)
    at cosine 0.9, and one row at the cone edge a thousand times as long: diversefl_plus2 cuts every row to
    2 ||g~_j||; with the guiding clip lifted (clip 1000) and row_clip 2, the honest rows stay whole and the edge row
    is cut to twice the median length, 10."""
    z, step = fitted_round()
    honest = torch.arange(len(z)) < 7
    unit = z / z.norm(dim=1, keepdim=True)
    guided, rounded = step(), step(clip=1000.0, row_clip=2.0)
    torch.testing.assert_close(guided, 2.0 * unit.mean(dim=0))
    torch.testing.assert_close(rounded, (z[honest].sum(dim=0) + 10.0 * unit[7]) / len(z))  # median 5 (lower middle): cap 10
    honest_mean = z[honest].mean(dim=0) / z[honest].mean(dim=0).norm()
    # the step along the honest rows' mean: over twice diversefl_plus2's (the edge row's share is alike in both)
    assert float(guided @ honest_mean) == pytest.approx(0.474, abs=1e-3)
    assert float(rounded @ honest_mean) == pytest.approx(1.011, abs=1e-3)


def test_floor_clip_needs_row_clip():
    with pytest.raises(ConfigError, match="floor_clip raises row_clip's cap: it needs row_clip > 0"):
        small_config(aggregator={"name": "diversefl_plus", "params": {"floor_clip": 2.0}})


def test_median_shared_part_hand_checked():
    from mpifl.rules.diversefl_plus import median_shared_part
    # coefficients 1, 2, 3 and a pushed -20 along e1, 0.2, -0.1, 0, 0 along e2 (the two axes are the Gram's own
    # directions); row 4 is not selected
    o = torch.tensor([[1.0, 0.2], [2.0, -0.1], [3.0, 0.0], [-20.0, 0.0], [50.0, 7.0]])
    rows = torch.tensor([True, True, True, True, False])
    # e1 leads: mean -3.5, median 1.5 (the middle pair's mean, whatever the eigenvector's sign): the step loses -5 e1
    torch.testing.assert_close(median_shared_part(o, rows, 1), torch.tensor([-5.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(median_shared_part(-o, rows, 1), torch.tensor([5.0, 0.0]), atol=1e-5, rtol=0)
    # r = 2 also replaces e2's mean 0.025 by its median 0
    torch.testing.assert_close(median_shared_part(o, rows, 2), torch.tensor([-5.0, 0.025]), atol=1e-5, rtol=0)


def test_step_rescale_hand_checked():
    from mpifl.rules.diversefl_plus import step_rescale
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 0.1]])
    rows = torch.tensor([True, True, True, False])
    # used lengths 1, 2, 3: median 2; sent 2, 6, 9 (row 3's 1000 not selected): median 6, so 3x
    assert step_rescale(torch.tensor([2.0, 6.0, 9.0, 1000.0]), z, rows, 10.0) == pytest.approx(3.0)
    assert step_rescale(torch.tensor([2.0, 6.0, 9.0, 1000.0]), z, rows, 2.5) == pytest.approx(2.5)  # at most
    assert step_rescale(torch.tensor([1.0, 1.0, 1.0, 1000.0]), z, rows, 10.0) == 1.0  # never shortened


def test_plus3_params_are_checked():
    with pytest.raises(ConfigError, match="rescale=0.5 must be 0 .off. or >= 1"):
        small_config(aggregator={"name": "diversefl_plus3", "params": {"rescale": 0.5}})
    with pytest.raises(ConfigError, match="spectral_median keeps the median .* it needs spectral > 0"):
        small_config(aggregator={"name": "diversefl_plus3", "params": {"spectral": 0}})
    plus2, plus3 = (dataclasses.asdict(registry.get("rule", name).Params())
                    for name in ("diversefl_plus2", "diversefl_plus3"))
    assert plus3 == {**plus2, "clip": 1000.0, "c2_clip": 1.0, "spectral_median": True, "rescale": 10.0}


def test_median_along_the_pushed_direction_keeps_the_honest_consensus_that_removing_it_loses():
    """Fifteen honest rows share a component 0.5 c beside their guiding gradients (||g~_j|| = 1); five attackers
    push -0.4 c and hide behind one zero-sum decoy direction w (+-0.9), all inside the cone. Removing the two leading
    directions (c, then w: diversefl_plus2) takes the push and the honest consensus with it; keeping the rows' median
    along them (spectral_median) takes the push and keeps the consensus; the plain mean keeps both."""
    torch.manual_seed(13)
    n, d = 20, 400
    g = torch.randn(n, d)
    g = g / g.norm(dim=1, keepdim=True)
    c, w = torch.linalg.qr(torch.randn(d, 2)).Q.T  # orthonormal

    def across(v: torch.Tensor) -> torch.Tensor:  # v's part orthogonal to each g~_j, [n, d]
        return v - (g @ v)[:, None] * g

    z = g + 0.5 * across(c) + 0.01 * torch.randn(n, d)
    decoy = torch.tensor([0.9, -0.9, 0.9, -0.9, 0.0])
    z[15:] = g[15:] - 0.4 * across(c)[15:] + decoy[:, None] * across(w)[15:]
    theta, nobody = torch.zeros(d), torch.zeros(n, dtype=torch.bool)

    def step(**params) -> torch.Tensor:  # type: ignore[no-untyped-def]
        cfg = small_config(clients=n, byzantine={"model": "none"},
                           aggregator={"name": "diversefl_plus2", "params": params})
        server = server_with(cfg, g)
        return server.decide(server.examine(z.clone(), theta), theta, nobody, 1).direction

    mean, removed, median = step(spectral=0), step(), step(spectral_median=True)
    assert float(mean @ c) == pytest.approx((15 * 0.5 - 5 * 0.4) / n, abs=0.03)  # measured 0.268
    assert abs(float(removed @ c)) < 0.03  # measured -0.005: push and consensus gone
    assert float(median @ c) == pytest.approx(0.5, abs=0.03)  # measured 0.489: the honest consensus, no push
    assert abs(float(median @ w)) < 0.03 and abs(float(mean @ w)) < 0.03  # the decoys cancel either way (-0.02)


def test_rescale_gives_the_step_back_the_length_the_guiding_clip_took():
    """The round of the row_clip test above: seven honest rows five times their guiding gradients' length, one edge
    row a thousand times. The 2 ||g~_j|| clip cuts every row to 2; rescale lengthens the step by the median length
    as sent (5, the lower middle of eight) over the median used (2), in the clipped rows' own direction."""
    z, step = fitted_round()
    unit = z / z.norm(dim=1, keepdim=True)
    torch.testing.assert_close(step(), 2.0 * unit.mean(dim=0))
    torch.testing.assert_close(step(rescale=10.0), 2.5 * 2.0 * unit.mean(dim=0))
    torch.testing.assert_close(step(rescale=2.0), 2.0 * 2.0 * unit.mean(dim=0))  # at most twice
