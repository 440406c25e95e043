"""Checkpoints beside the HDF5 file (``RUN.h5.ckpt``), written atomically by rank 0.

A run's randomness is keyed by (seed, purpose, round, client) (mpifl.rng) and the Markov Byzantine state is replayed
from round 1, so the state needed to continue bit-identically is small: the round, theta, the per-client state (RSA's
model copies, or the clients' momentum under ``train.momentum``) and the server rule's state (centered clipping's
centre). The file is a NumPy ``.npz`` read with ``allow_pickle=False``: a checkpoint can hold numbers, never code.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, foreign or from another run."""


@dataclass(frozen=True)
class Checkpoint:
    round: int
    theta: np.ndarray  # [d] float32
    client_models: np.ndarray | None  # [n, d] float32 per-client state (RSA's models, clients' momentum) or None
    config_yaml: str
    rule_state: dict[str, np.ndarray] = field(default_factory=dict)  # the server rule's state (centered clipping)


def path_for(run: Path) -> Path:
    return run.with_name(run.name + ".ckpt")


def save(path: Path, ckpt: Checkpoint) -> None:
    """Write to a temp file, fsync, rename over the old checkpoint, fsync the folder: a crash leaves the old or the
    new checkpoint, never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    arrays = {"format": np.array(FORMAT), "round": np.array(ckpt.round, dtype=np.int64),
              "theta": np.ascontiguousarray(ckpt.theta, dtype=np.float32),
              "config": np.frombuffer(ckpt.config_yaml.encode(), dtype=np.uint8)}
    if ckpt.client_models is not None:
        arrays["client_models"] = np.ascontiguousarray(ckpt.client_models, dtype=np.float32)
    arrays.update({f"rule/{key}": np.ascontiguousarray(value) for key, value in ckpt.rule_state.items()})
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the previous checkpoint stays the valid one
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def validate(ckpt: Checkpoint, path: Path, dim: int, run: Path, recorded: int) -> None:
    """Refuse a checkpoint that cannot continue ``run`` (which holds ``recorded`` rounds) before anything is written:
    a resume keeps the run file's first ``ckpt.round`` rounds and drops the rest, so a round outside 1..recorded
    would cut or recreate the file, and a θ of another type, size or with NaN/inf would train a different model."""
    if not 1 <= ckpt.round <= recorded:
        raise CheckpointError(f"{path} is at round {ckpt.round}, but {run} holds rounds 1..{recorded}: the two files "
                              "do not belong together; neither was changed.")
    arrays = {"theta": (ckpt.theta, (dim,))}
    if ckpt.client_models is not None:
        arrays["client_models"] = (ckpt.client_models, (ckpt.client_models.shape[0], dim))
    for name, (values, shape) in arrays.items():
        if values.dtype != np.float32 or values.shape != shape:
            raise CheckpointError(f"{path} holds {name} of {values.dtype} {list(values.shape)}; the model needs "
                                  f"float32 {list(shape)}.")
        if not np.isfinite(values).all():
            raise CheckpointError(f"{path} holds non-finite values (NaN/inf) in {name}: the run cannot continue "
                                  "from it.")


def load(path: Path) -> Checkpoint:
    if not path.exists():
        raise CheckpointError(f"no checkpoint {path}: the run cannot be resumed (was output.checkpoint_every 0, or did "
                              "it stop before its first checkpoint?).")
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != FORMAT:
                raise CheckpointError(f"{path} has checkpoint format {int(data['format'])}; this mpifl reads {FORMAT}.")
            models = data["client_models"] if "client_models" in data.files else None
            state = {name.removeprefix("rule/"): data[name] for name in data.files if name.startswith("rule/")}
            return Checkpoint(int(data["round"]), data["theta"], models, bytes(data["config"]).decode(), state)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable mpifl checkpoint ({type(exc).__name__}: {exc}).") from None
