"""The per-run HDF5 file, written by rank 0 only.

One row per round is appended to resizable datasets and flushed, in SWMR mode, so a run stopped at any point leaves a
readable file and `h5py` readers can follow a running job. Layout (schema version 2):

    attrs: schema_version, mpifl_version, config (YAML), clients, ranks, created
    round, lr, applied, n_accepted, test_accuracy, test_loss, backdoor_accuracy     [R]      (nan: not evaluated)
    clients/byzantine, clients/sampled, clients/accepted, clients/invalid           [R, n]   bool
    clients/weight (the client's share of the step; NaN: undefined for the rule)    [R, n]   float32
    clients/flags (uint8 bit mask of reasons, mpifl.screening)                      [R, n]
    clients/c1 (int8), clients/c2, clients/update_norm, clients/guiding_norm        [R, n]   (nan/0: not computed)
    time/<phase>                                                                    [R]      seconds
    ranks/peak_rss, ranks/peak_gpu (bytes; each rank's peak so far; 0: rank absent)  [R, P]   float64
    model/theta [d] float32, model/round [1]: the final model and its round (0 until the run has finished)
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .errors import ConfigError

SCHEMA_VERSION = 2
PHASES = ("broadcast", "client_compute", "gather", "guiding", "aggregation", "evaluation")
_SCALARS = {"round": np.int32, "lr": np.float64, "applied": np.bool_, "n_accepted": np.int32,
            "test_accuracy": np.float64, "test_loss": np.float64, "backdoor_accuracy": np.float64}
_PER_RANK = ("peak_rss", "peak_gpu")
_PER_CLIENT = {"byzantine": np.bool_, "sampled": np.bool_, "accepted": np.bool_, "weight": np.float32,
               "invalid": np.bool_, "flags": np.uint8, "c1": np.int8,
               "c2": np.float32,
               "update_norm": np.float32, "guiding_norm": np.float32}


class WriteError(OSError):
    """Writing the run file failed. h5py reports a failed write or flush (a full disk) as OSError or as RuntimeError;
    the writer turns both into this one type, so callers catch a single OSError and never let a traceback through."""


def _reraise_as_write_error(exc: BaseException, message: str) -> None:
    """Raise :class:`WriteError` with ``message`` for h5py's failure ``exc``; anything else passes through."""
    if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, WriteError):
        raise WriteError(message) from None


@dataclass
class RoundRecord:
    round: int
    lr: float
    applied: bool
    test_accuracy: float
    test_loss: float
    backdoor_accuracy: float
    byzantine: np.ndarray
    sampled: np.ndarray
    accepted: np.ndarray
    weight: np.ndarray
    invalid: np.ndarray
    flags: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    update_norm: np.ndarray
    guiding_norm: np.ndarray
    times: dict[str, float] = field(default_factory=dict)
    peak_rss: np.ndarray = field(default_factory=lambda: np.zeros(1))  # [P] bytes
    peak_gpu: np.ndarray = field(default_factory=lambda: np.zeros(1))  # [P] bytes
    ids: np.ndarray | None = None  # [m] the cohort's client ids (cross-device runs; per-client arrays follow them)


def open_for_reading(path: Path) -> h5py.File:
    """Plain read first; SWMR read only for a file marked open-for-writing (a running or killed job).

    SWMR readers retry failed metadata reads, expecting a writer to finish them, so a truncated file opened that way
    stalls instead of failing: never use SWMR for a file that a plain open accepts. Raises OSError.
    """
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if "already open for write" not in str(exc):
            raise
    return h5py.File(path, "r", swmr=True)


def schema_problem(f: h5py.File) -> str | None:
    """Why ``f`` is not a run file this version reads (foreign, or another schema version); None when it is."""
    if "schema_version" not in f.attrs or "config" not in f.attrs:
        return "not an mpifl run (no schema_version/config attributes)"
    version = int(f.attrs["schema_version"])
    if version != SCHEMA_VERSION:
        return (f"written with schema version {version}; this mpifl reads version {SCHEMA_VERSION}. Use the mpifl "
                f"version that wrote it ({f.attrs.get('mpifl_version')})")
    return None


def read_config_yaml(path: Path) -> str:
    """The config a run file was written with; ConfigError when the file is missing, foreign or damaged."""
    try:
        with open_for_reading(path) as f:
            problem = schema_problem(f)
            if problem is not None:
                raise ConfigError(f"{path} is not an mpifl run file this version can resume: {problem}.")
            return str(f.attrs["config"])
    except OSError as exc:
        raise ConfigError(f"cannot read run file {path} ({exc}).") from None


def recorded_rounds(path: Path) -> int:
    """How many complete rounds the run file holds; ConfigError naming the file when it cannot be read."""
    from .config import ConfigError

    try:
        with open_for_reading(path) as f:
            return complete_rows(f)
    except (OSError, RuntimeError, KeyError) as exc:
        raise ConfigError(f"cannot read run file {path} ({exc}).") from None


def finished_round(f: h5py.File) -> int:
    """The round of the final model: the run is finished at that round (0 while it has not finished). What a finished
    run is, for `mpifl report` and `mpifl sweep` alike."""
    return int(f["model/round"][0])


def _per_round_names(cohort: bool) -> list[str]:
    return [*_SCALARS, *(f"clients/{n}" for n in _PER_CLIENT), *(["clients/id"] if cohort else []),
            *(f"time/{p}" for p in PHASES), *(f"ranks/{n}" for n in _PER_RANK)]


def is_cohort_file(f: h5py.File) -> bool:
    """Whether a run file records a cross-device run: per-client columns are the round's cohort, named by
    ``clients/id``, instead of the clients 0..n−1."""
    return "clients/id" in f


def complete_rows(f: h5py.File) -> int:
    """Rounds that every per-round dataset holds (a file being written may be a row ahead in some)."""
    return min(f[n].shape[0] for n in _per_round_names(is_cohort_file(f)))


#: Every dataset carries a Fletcher-32 checksum per chunk: a damaged file (a bad disk, a torn copy) fails to read with
#: a checksum error instead of handing wrong numbers to a report or a resume.
_CHECKSUM = {"fletcher32": True}


def _create_layout(f: h5py.File, n_clients: int, ranks: int, dim: int, cohort: bool) -> None:
    """The datasets of a run; ``n_clients`` columns per client array (the cohort's size in a cross-device run, which
    adds ``clients/id``)."""
    for name, dtype in _SCALARS.items():
        f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1024,), **_CHECKSUM)
    for name, dtype in {**_PER_CLIENT, **({"id": np.int64} if cohort else {})}.items():
        f.create_dataset(f"clients/{name}", shape=(0, n_clients), maxshape=(None, n_clients), dtype=dtype,
                         chunks=(max(1, 4096 // n_clients), n_clients), **_CHECKSUM)
    for phase in PHASES:
        f.create_dataset(f"time/{phase}", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,),
                         **_CHECKSUM)
    for name in _PER_RANK:
        f.create_dataset(f"ranks/{name}", shape=(0, ranks), maxshape=(None, None), dtype=np.float64,
                         chunks=(max(1, 4096 // ranks), ranks), **_CHECKSUM)
    f.create_dataset("model/theta", shape=(dim,), dtype=np.float32, **_CHECKSUM)
    f.create_dataset("model/round", data=np.zeros(1, dtype=np.int64), **_CHECKSUM)


def _widened(values: np.ndarray, columns: int) -> np.ndarray:
    """[R, P] per-rank values padded with zeros (rank absent) to at least ``columns`` columns."""
    if values.shape[1] >= columns:
        return values
    return np.pad(values, ((0, 0), (0, columns - values.shape[1])))


class _Rows:
    """Appends rows to one resizable dataset through h5py's low-level calls: the same bytes as ``ds.resize(...);
    ds[i] = value``, a quarter of the cost (h5py's property lookups and selection machinery were most of a round's
    HDF5 time). The dataset's type and width are read once."""

    def __init__(self, ds: h5py.Dataset) -> None:
        self.id, self.dtype = ds.id, ds.dtype
        self.columns = ds.shape[1] if ds.ndim == 2 else None

    def append(self, i: int, value: object, columns: int | None = None) -> None:
        """Write row i (growing the dataset to i + 1 rows, and to ``columns`` columns when given)."""
        if columns is not None:
            self.columns = columns
        shape = (i + 1,) if self.columns is None else (i + 1, self.columns)
        row = np.ascontiguousarray(value, dtype=self.dtype).reshape((1,) + shape[1:])
        self.id.set_extent(shape)
        file_space = self.id.get_space()
        file_space.select_hyperslab((i,) + (0,) * (len(shape) - 1), (1,) + shape[1:])
        self.id.write(h5py.h5s.create_simple((1,) + shape[1:]), file_space, row)


def _kept_rows(path: Path, rows: int) -> tuple[dict, dict[str, np.ndarray], int]:
    """The attributes, the first ``rows`` rows of every per-round dataset and the model size of ``path``; a damaged
    file (a checksum that does not match) is a ValueError naming it, before anything is written."""
    try:
        with open_for_reading(path) as old:
            have = complete_rows(old)
            if have < rows:
                raise ValueError(f"{path} holds {have} rounds but its checkpoint is at round {rows}; "
                                 "the two files do not belong together.")
            names = _per_round_names(is_cohort_file(old))
            return dict(old.attrs), {n: old[n][:rows] for n in names}, old["model/theta"].shape[0]
    except (OSError, RuntimeError, KeyError) as exc:
        raise ValueError(f"cannot read run file {path}: damaged ({exc}); it was not changed.") from None


class RunWriter:
    """Appends rounds to a run file; :meth:`create` starts one, :meth:`resume` continues one after a checkpoint."""

    def __init__(self, file: h5py.File, rows: int) -> None:
        self.file, self.rows = file, rows
        self.n = int(file.attrs["clients"])
        self.cohort = is_cohort_file(file)
        self.datasets = {name: _Rows(file[name]) for name in _per_round_names(self.cohort)}
        file.swmr_mode = True

    @classmethod
    def create(cls, path: Path, n_clients: int, ranks: int, dim: int, config_yaml: str, version: str,
               cohort: int | None = None) -> RunWriter:
        """A new run file; ``cohort`` (m) for a cross-device run, whose per-client arrays hold the round's m clients."""
        path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(path, "w", libver="latest")
        f.attrs.update(schema_version=SCHEMA_VERSION, mpifl_version=version, config=config_yaml, clients=n_clients,
                       ranks=ranks, created=_dt.datetime.now(_dt.timezone.utc).isoformat(), cohort=cohort or 0)
        _create_layout(f, cohort or n_clients, ranks, dim, cohort is not None)
        return cls(f, 0)

    @classmethod
    def resume(cls, path: Path, rows: int, ranks: int) -> RunWriter:
        """Keep the first ``rows`` rounds of ``path`` (those a checkpoint covers) and continue appending after them.

        The kept rows are copied into a new file that then replaces the old one, so later rounds of the killed run
        are dropped, never duplicated, and a crash during the copy leaves the old file intact.
        """
        attrs, data, dim = _kept_rows(path, rows)
        tmp = path.with_name(path.name + ".resume")
        with h5py.File(tmp, "w", libver="latest") as f:
            f.attrs.update(attrs)
            f.attrs["ranks"] = ranks
            cohort = int(attrs.get("cohort", 0))
            _create_layout(f, cohort or int(attrs["clients"]), ranks, dim, cohort > 0)
            for name, values in data.items():
                if name.startswith("ranks/"):  # a resumed run may use another number of ranks: keep the wider
                    values = _widened(values, ranks)
                f[name].resize(values.shape)
                f[name][...] = values
        os.replace(tmp, path)
        return cls(h5py.File(path, "a", libver="latest"), rows)

    def append(self, rec: RoundRecord) -> None:
        """Write and flush one round; :class:`WriteError` (the reason only: the caller names round and file)."""
        try:
            self._append(rec)
        except (OSError, RuntimeError) as exc:
            _reraise_as_write_error(exc, str(exc))
            raise

    def _append(self, rec: RoundRecord) -> None:
        f, i, data = self.file, self.rows, self.datasets
        scalars = {"round": rec.round, "lr": rec.lr, "applied": rec.applied, "n_accepted": int(rec.accepted.sum()),
                   "test_accuracy": rec.test_accuracy, "test_loss": rec.test_loss,
                   "backdoor_accuracy": rec.backdoor_accuracy}
        for name, value in scalars.items():
            data[name].append(i, value)
        for name in _PER_CLIENT:
            data[f"clients/{name}"].append(i, getattr(rec, name))
        if self.cohort:
            data["clients/id"].append(i, rec.ids)
        for phase in PHASES:
            data[f"time/{phase}"].append(i, rec.times.get(phase, 0.0))
        for name in _PER_RANK:
            rows, values = data[f"ranks/{name}"], getattr(rec, name)
            width = max(rows.columns or 0, len(values))
            rows.append(i, _widened(values[None], width)[0], width)
        self.rows = i + 1
        f.flush()

    def write_model(self, theta: np.ndarray, round_: int) -> None:
        """The final flat parameters, so analyses (and the MPI equality tests) need no checkpoint."""
        try:
            self.file["model/theta"][:] = theta
            self.file["model/round"][0] = round_
            self.file.flush()
        except (OSError, RuntimeError) as exc:
            _reraise_as_write_error(exc, f"cannot write the final model to {self.file.filename} ({exc}); its rounds "
                                         "are in the file.")
            raise

    def close(self) -> None:
        """Close the file; a failed final flush is a :class:`WriteError` naming it."""
        if not self.file.id.valid:
            return
        name = self.file.filename
        try:
            self.file.close()
        except (OSError, RuntimeError) as exc:
            _reraise_as_write_error(exc, f"cannot close {name} ({exc}); the rounds flushed before are readable.")
            raise
