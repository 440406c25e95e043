"""What surrounds the rounds: agreeing on set-up across ranks, stop signals, the per-phase clock, and checkpoints.

:mod:`mpifl.train` keeps the round as Algorithm 1 reads; everything here is about a run's life on a machine (a set-up
that fails on one rank, SLURM's SIGTERM before a time limit, a resume after a crash) rather than about the algorithm.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from . import checkpoint
from .config import ExperimentConfig, from_tree, to_tree, to_yaml, tree_from_yaml
from .errors import ConfigError
from .metrics import recorded_rounds
from .transport import Transport

_T = TypeVar("_T")


class SetupError(RuntimeError):
    """Set-up failed on some rank; raised on every rank with that rank's message."""


class OutputError(RuntimeError):
    """The HDF5 file could not be written (a full disk, a vanished folder); earlier rounds stay readable."""


def agreed(tp: Transport, step: Callable[[], _T]) -> _T:
    """Run a set-up step on every rank and agree on its outcome, so no rank starts (or waits) alone."""
    result, error = None, None
    try:
        result = step()
    except Exception as exc:  # noqa: BLE001 - any set-up failure must reach every rank, not kill one
        error = str(exc) if isinstance(exc, (ValueError, RuntimeError)) else f"{type(exc).__name__}: {exc}"
    agreed_error = tp.agree(error)
    if agreed_error is not None:
        raise SetupError(agreed_error)
    return result  # type: ignore[return-value]


class Clock:
    """Accumulates wall time per phase of the current round."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, phase: str) -> float:
        now = time.perf_counter()
        spent = now - self._t
        self.times[phase] = self.times.get(phase, 0.0) + spent
        self._t = now
        return spent


class Preempted(RuntimeError):
    """A stop signal (SIGTERM, SIGUSR1, SIGINT) ended the run cleanly after checkpointing ``round``."""

    def __init__(self, round_: int, out: Path, rank: int) -> None:
        super().__init__(f"stopped by signal after round {round_}; checkpoint {checkpoint.path_for(out)} written. "
                         f"Continue with: mpifl train --resume {out}")
        self.round, self.rank = round_, rank


class StopSignals:
    """Records SIGTERM/SIGUSR1 (what SLURM sends before the time limit) and SIGINT (Ctrl-C) instead of dying at
    once."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            # After a stop the process is on its way to exit 75 with its checkpoint written; a second SIGTERM (srun
            # terminates the rest of a step once its first task exits) must not kill it first, or the job script
            # sees "Terminated", not 75, and does not requeue. Otherwise the previous handlers come back.
            signal.signal(sig, signal.SIG_IGN if self.requested else handler)  # type: ignore[arg-type]


def _comparable(config_yaml: str) -> dict:
    """A config tree without what may change on resume: the round budget and where the data lives. Read through the
    config classes, so a run stored before a key existed (train.momentum) compares with its default."""
    tree = to_tree(from_tree(tree_from_yaml(config_yaml, "the stored config")))
    tree.pop("rounds")
    tree["data"].pop("root")
    return tree


def checkpoint_to_resume(cfg: ExperimentConfig, out: Path, dim: int) -> checkpoint.Checkpoint:
    """The checkpoint beside ``out``, checked against the run (its config, θ, the rounds ``out`` holds) before
    anything is touched."""
    ckpt = checkpoint.load(checkpoint.path_for(out))
    if _comparable(ckpt.config_yaml) != _comparable(to_yaml(cfg)):
        raise checkpoint.CheckpointError(f"{checkpoint.path_for(out)} belongs to another run than {out}.")
    checkpoint.validate(ckpt, checkpoint.path_for(out), dim, out, recorded_rounds(out))
    if ckpt.round >= cfg.rounds:
        raise ConfigError(f"the checkpoint is at round {ckpt.round} and rounds={cfg.rounds}: nothing to resume; "
                          "raise --rounds to train further.")
    return ckpt


def save_checkpoint(cfg: ExperimentConfig, tp: Transport, client_state: torch.Tensor | None,
                    rule_state: dict[str, np.ndarray] | None, theta: torch.Tensor, round_: int, out: Path) -> None:
    """Collective: per-client state (RSA's models) travels to rank 0 like updates do; rank 0 (the one with
    ``rule_state``) writes the file."""
    full = tp.gather(client_state) if client_state is not None else None
    if rule_state is None:
        return
    models = full.cpu().numpy() if full is not None else None
    target = checkpoint.path_for(out)
    try:
        checkpoint.save(target, checkpoint.Checkpoint(round_, theta.cpu().numpy(), models, to_yaml(cfg), rule_state))
    except OSError as exc:
        raise OutputError(f"cannot write checkpoint {target} after round {round_} ({exc}); the run stops, "
                          f"{out} holds rounds 1..{round_}") from None
