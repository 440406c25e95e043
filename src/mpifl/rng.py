"""Generators keyed by (seed, purpose, round, client).

Every random draw in a run comes from one of these, so a client's mini-batch, noise or Byzantine coin is the same
whichever rank hosts the client and however many ranks there are: the basis of "a run is a pure function of its
config and seed".
"""

from __future__ import annotations

import enum

import numpy as np
import torch


class Purpose(enum.IntEnum):
    INIT = 1
    PARTITION = 2
    SAMPLE = 3
    BATCH = 4
    BYZANTINE = 5
    NOISE = 6
    ATTACK = 7
    PARTICIPATION = 8
    RULE = 9  # a rule's or pre-aggregator's own draws (bucketing, DnC), keyed by round
    ROOT = 10  # the server's root dataset (FLTrust)
    COLLUSION = 11  # a rank-0 (colluding) attack's draws, keyed by round


def seed_for(seed: int, purpose: Purpose, round_: int = 0, client: int = 0) -> int:
    """A 63-bit seed mixed from the key by NumPy's SeedSequence (independent streams for distinct keys)."""
    state = np.random.SeedSequence([seed, int(purpose), round_, client]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & ((1 << 63) - 1)


def generator(seed: int, purpose: Purpose, round_: int = 0, client: int = 0) -> torch.Generator:
    """A CPU torch generator for the key; draws are made on the CPU and moved, so devices never change results."""
    return torch.Generator().manual_seed(seed_for(seed, purpose, round_, client))


def numpy_rng(seed: int, purpose: Purpose, round_: int = 0, client: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed_for(seed, purpose, round_, client))
