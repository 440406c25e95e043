"""The round loop (Algorithm 1), the same on one process and on P MPI ranks.

Set-up (data, partition, model, client blocks) runs on every rank and any failure is agreed on collectively before
the first round, so a bad config stops every rank with the same message. Then, per round r:

    rank 0 Bcasts theta^{r−1} → each rank computes its clients' messages → Gatherv into Z [n, d] →
    rank 0: guiding gradients, rule, theta^r = theta^{r−1} − mu_r (g + lambda theta^{r−1}), metrics.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from . import __version__, aggregators, transport as transport_mod
from .algorithms import ClientData, GradientClients, make_clients
from .byzantine import ByzantineSchedule
from .config import ConfigError, ExperimentConfig, to_yaml, validate_against_data
from .data import datasets
from .data.partition import fraction_size, partition
from .evaluation import Evaluation, evaluate
from .guiding import GuidingGradients
from .metrics import RoundRecord, RunWriter
from .models import FlatModel, build, initialize
from .placement import Placement, client_blocks, resolve
from .server import Server
from .rng import Purpose, generator
from .schedules import learning_rate


class SetupError(RuntimeError):
    """Set-up failed on some rank; raised on every rank with that rank's message."""


@dataclass(frozen=True)
class RunResult:
    """What rank 0 knows at the end of a run (other ranks get None from :func:`run`)."""

    path: Path
    theta: torch.Tensor
    final: Evaluation
    rounds: int


@dataclass
class _Setup:
    placement: Placement
    flat: FlatModel
    theta: torch.Tensor
    clients: GradientClients
    schedule: ByzantineSchedule
    server: Server | None
    test: tuple[torch.Tensor, torch.Tensor] | None


def _setup(cfg: ExperimentConfig, tp: transport_mod.Transport, out: Path, overwrite: bool) -> _Setup:
    place = resolve(tp.rank, tp.size, tp.local_rank, cfg.clients, cfg.train.device)
    if place.is_server and out.exists() and not overwrite:
        raise ConfigError(f"output {out} already exists; pass --overwrite or choose another --out.")
    ds = datasets.load(cfg.data.dataset, cfg.data.root, cfg.data.download,
                       (cfg.data.synthetic_train, cfg.data.synthetic_test))
    parts = partition(cfg.data.partition, ds.train_y, cfg.clients, cfg.data.alpha, cfg.seed)
    validate_against_data(cfg, [len(p) for p in parts], ds.num_classes)
    mean, std = ds.channel_stats()

    def scaled(x: torch.Tensor) -> torch.Tensor:
        return datasets.to_float(x, cfg.data.scale, mean, std).to(place.device)

    module = build(cfg.model.name, ds.input_shape, ds.num_classes, cfg.model.hidden)
    initialize(module, cfg.model.init, generator(cfg.seed, Purpose.INIT))
    flat = FlatModel(module.to(place.device))
    theta = flat.flatten()

    hosted = []
    for j in place.clients:
        idx = torch.from_numpy(parts[j])
        batch = fraction_size(len(idx), cfg.train.batch_size, cfg.train.batch_fraction)
        hosted.append(ClientData(j, scaled(ds.train_x[idx]), ds.train_y[idx].to(place.device), batch))
    clients = make_clients(cfg.aggregator.name, cfg, flat, hosted, ds.num_classes, theta)
    classes = [set(np.unique(ds.train_y.numpy()[p]).tolist()) for p in parts]
    schedule = ByzantineSchedule(cfg.byzantine, cfg.clients, cfg.seed, classes)

    server, test = None, None
    if place.is_server:
        needs_guiding = cfg.aggregator.name == "diversefl" or cfg.aggregator.record_similarity
        server = Server(cfg, _guiding(cfg, flat, parts, ds, scaled) if needs_guiding else None)
        test = (scaled(ds.test_x), ds.test_y.to(place.device))
    return _Setup(place, flat, theta, clients, schedule, server, test)


def _guiding(cfg: ExperimentConfig, flat: FlatModel, parts: list[np.ndarray], ds: datasets.Dataset,
             scaled) -> GuidingGradients:  # type: ignore[no-untyped-def]
    """The samples M_j^0 each client shares once before training, drawn by the client's own seeded generator."""
    xs, ys = [], []
    for j, p in enumerate(parts):
        s = fraction_size(len(p), cfg.aggregator.sample_size, cfg.aggregator.sample_fraction)
        pick = torch.randperm(len(p), generator=generator(cfg.seed, Purpose.SAMPLE, 0, j))[:s]
        idx = torch.from_numpy(p)[pick]
        xs.append(scaled(ds.train_x[idx]))
        ys.append(ds.train_y[idx].to(xs[-1].device))
    return GuidingGradients(flat, xs, ys, cfg.train.client_chunk)


def _agreed_setup(cfg: ExperimentConfig, tp: transport_mod.Transport, out: Path, overwrite: bool) -> _Setup:
    setup, error = None, None
    try:
        setup = _setup(cfg, tp, out, overwrite)
    except Exception as exc:  # noqa: BLE001 - any set-up failure must reach every rank, not kill one
        error = str(exc) if isinstance(exc, (ValueError, RuntimeError)) else f"{type(exc).__name__}: {exc}"
    agreed = tp.agree(error)
    if agreed is not None:
        raise SetupError(agreed)
    assert setup is not None
    return setup


class _Clock:
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


def run(cfg: ExperimentConfig, out: Path, tp: transport_mod.Transport | None = None,
        progress: TextIO | None = sys.stderr, overwrite: bool = False) -> RunResult | None:
    """Train ``cfg`` and write metrics to ``out`` (rank 0). Returns the result on rank 0, None elsewhere."""
    tp = tp or transport_mod.create()
    s = _agreed_setup(cfg, tp, out, overwrite)
    tp.configure(client_blocks(cfg.clients, tp.size), s.flat.dim, s.placement.device)
    writer = RunWriter(out, cfg.clients, tp.size, s.flat.dim, to_yaml(cfg), __version__) if s.placement.is_server else None
    try:
        theta, final = _loop(cfg, tp, s, writer, progress)
    except BaseException:
        if writer is not None:
            writer.close()
        if tp.size > 1:
            print(f"[mpifl] rank {tp.rank} failed in the round loop; aborting every rank:", file=sys.stderr)
            traceback.print_exc()
            sys.stderr.flush()
            tp.abort(1)
        raise
    if writer is None:
        return None
    writer.write_model(theta.cpu().numpy(), cfg.rounds)
    writer.close()
    return RunResult(out, theta, final, cfg.rounds)


def _loop(cfg: ExperimentConfig, tp: transport_mod.Transport, s: _Setup, writer: RunWriter | None,
          progress: TextIO | None) -> tuple[torch.Tensor, Evaluation]:
    theta, n = s.theta, cfg.clients
    backdoor = (cfg.attack.source, cfg.attack.target) if cfg.attack.name == "backdoor" else None
    final = Evaluation(math.nan, math.nan, math.nan)
    started = time.perf_counter()
    for r in range(1, cfg.rounds + 1):
        clock = _Clock()
        theta = tp.broadcast(theta)
        clock.lap("broadcast")
        lr = learning_rate(cfg.train.lr, r)
        byzantine = s.schedule.mask(r)
        block = s.clients.messages(theta, r, byzantine, lr)
        compute = clock.lap("client_compute")
        z = tp.gather(block)
        seconds = tp.gather_seconds(compute)
        clock.lap("gather")
        if writer is None:
            continue
        assert z is not None and seconds is not None and s.server is not None
        clock.times["client_compute"] = float(seconds.max())

        screened = s.server.examine(z, theta)
        clock.lap("guiding")

        decision = s.server.decide(screened, theta, byzantine)
        if decision.direction is not None:
            theta = theta - lr * (decision.direction + cfg.train.weight_decay * theta)
        clock.lap("aggregation")

        ev = Evaluation(math.nan, math.nan, math.nan)
        if r % cfg.train.eval_every == 0 or r == cfg.rounds:
            assert s.test is not None
            ev = final = evaluate(s.flat, theta, *s.test, backdoor=backdoor)
        clock.lap("evaluation")

        writer.append(RoundRecord(
            round=r, lr=lr, applied=decision.direction is not None, test_accuracy=ev.accuracy, test_loss=ev.loss,
            backdoor_accuracy=ev.backdoor_accuracy, byzantine=byzantine.numpy(),
            accepted=decision.accepted.cpu().numpy(), invalid=(~screened.valid).numpy(), flags=screened.flags.numpy(),
            c1=screened.c1.numpy(), c2=screened.c2.numpy(),
            update_norm=torch.linalg.vector_norm(z, dim=1).cpu().numpy(), guiding_norm=screened.guiding_norm.numpy(),
            times=clock.times,
        ))
        if progress is not None and (r % cfg.output.progress_every == 0 or r == cfg.rounds):
            rate = r / (time.perf_counter() - started)
            flagged = int((~decision.accepted).sum())
            print(f"[mpifl] round {r}/{cfg.rounds}  acc {final.accuracy:.4f}  flagged {flagged}/{n}  "
                  f"byzantine {int(byzantine.sum())}  {rate:.2f} rounds/s", file=progress, flush=True)
    return theta, final
