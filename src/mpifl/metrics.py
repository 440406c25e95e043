"""The per-run HDF5 file, written by rank 0 only.

One row per round is appended to resizable datasets and flushed, in SWMR mode, so a run stopped at any point leaves a
readable file and `h5py` readers can follow a running job. Layout (schema version 1):

    attrs: schema_version, mpifl_version, config (YAML), clients, ranks, created
    round, lr, applied, n_accepted, test_accuracy, test_loss, backdoor_accuracy     [R]      (nan: not evaluated)
    clients/byzantine, clients/accepted, clients/invalid                            [R, n]   bool
    clients/flags (uint8 bit mask of reasons, mpifl.screening)                      [R, n]
    clients/c1 (int8), clients/c2, clients/update_norm, clients/guiding_norm        [R, n]   (nan/0: not computed)
    time/<phase>                                                                    [R]      seconds
    model/theta [d] float32, model/round [1]: the final model and its round (0 until the run has finished)
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

SCHEMA_VERSION = 1
PHASES = ("broadcast", "client_compute", "gather", "guiding", "aggregation", "evaluation")
_SCALARS = {"round": np.int32, "lr": np.float64, "applied": np.bool_, "n_accepted": np.int32,
            "test_accuracy": np.float64, "test_loss": np.float64, "backdoor_accuracy": np.float64}
_PER_CLIENT = {"byzantine": np.bool_, "accepted": np.bool_, "invalid": np.bool_, "flags": np.uint8, "c1": np.int8,
               "c2": np.float32,
               "update_norm": np.float32, "guiding_norm": np.float32}


@dataclass
class RoundRecord:
    round: int
    lr: float
    applied: bool
    test_accuracy: float
    test_loss: float
    backdoor_accuracy: float
    byzantine: np.ndarray
    accepted: np.ndarray
    invalid: np.ndarray
    flags: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    update_norm: np.ndarray
    guiding_norm: np.ndarray
    times: dict[str, float] = field(default_factory=dict)


class RunWriter:
    def __init__(self, path: Path, n_clients: int, ranks: int, dim: int, config_yaml: str, version: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.n, self.rows = path, n_clients, 0
        self.file = h5py.File(path, "w", libver="latest")
        f = self.file
        f.attrs.update(schema_version=SCHEMA_VERSION, mpifl_version=version, config=config_yaml, clients=n_clients,
                       ranks=ranks, created=_dt.datetime.now(_dt.timezone.utc).isoformat())
        for name, dtype in _SCALARS.items():
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1024,))
        for name, dtype in _PER_CLIENT.items():
            f.create_dataset(f"clients/{name}", shape=(0, n_clients), maxshape=(None, n_clients), dtype=dtype,
                             chunks=(max(1, 4096 // n_clients), n_clients))
        for phase in PHASES:
            f.create_dataset(f"time/{phase}", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        f.create_dataset("model/theta", shape=(dim,), dtype=np.float32)
        f.create_dataset("model/round", data=np.zeros(1, dtype=np.int64))
        f.swmr_mode = True

    def append(self, rec: RoundRecord) -> None:
        f, i = self.file, self.rows
        scalars = {"round": rec.round, "lr": rec.lr, "applied": rec.applied, "n_accepted": int(rec.accepted.sum()),
                   "test_accuracy": rec.test_accuracy, "test_loss": rec.test_loss,
                   "backdoor_accuracy": rec.backdoor_accuracy}
        for name, value in scalars.items():
            f[name].resize((i + 1,))
            f[name][i] = value
        for name in _PER_CLIENT:
            ds = f[f"clients/{name}"]
            ds.resize((i + 1, self.n))
            ds[i] = getattr(rec, name)
        for phase in PHASES:
            f[f"time/{phase}"].resize((i + 1,))
            f[f"time/{phase}"][i] = rec.times.get(phase, 0.0)
        self.rows = i + 1
        f.flush()

    def write_model(self, theta: np.ndarray, round_: int) -> None:
        """The final flat parameters, so analyses (and the MPI equality tests) need no checkpoint."""
        self.file["model/theta"][:] = theta
        self.file["model/round"][0] = round_
        self.file.flush()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()
