"""The round loop (Algorithm 1), the same on one process and on P MPI ranks.

Set-up (data, partition, model, client blocks) runs on every rank and any failure is agreed on collectively before
the first round, so a bad config stops every rank with the same message. Then, per round r:

    rank 0 Bcasts theta^{r−1} → each rank computes its clients' messages → Gatherv into Z [n, d] →
    rank 0: guiding gradients, rule, theta^r = theta^{r−1} − mu_r (g + lambda theta^{r−1}), metrics.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import numpy as np
import torch

from . import __version__, health, memory, participation, transport as transport_mod
from . import progress as progress_mod
from .attacks.adversary import Adversary
from .build import Pipeline, resolve as resolve_names
from .byzantine import ByzantineSchedule
from .clients import ClientPool, GradientClients
from .config import ExperimentConfig, to_yaml, validate_against_data
from .errors import ConfigError
from .data import datasets
from .data.partition import batch_sizes
from .data.population import Partitioned, Population, load as load_population
from .evaluation import Evaluation, evaluate
from .filters import FilterSetup
from .filters.diversefl import (DiverseFLFilter, GuidingGradients, Params as DiverseFLParams, SampleSource,
                                guiding_samples)
from .lifecycle import (Clock, OutputError, Preempted, SetupError, StopSignals, agreed, checkpoint_to_resume,
                        save_checkpoint)
from .metrics import RoundRecord, RunWriter
from .models.gradients import batched_grads, stack_padded
from .models import FlatModel, build, initialize
from .placement import Placement, client_blocks, resolve
from .rng import Purpose, generator
from .schedules import learning_rate
from .server import Server


__all__ = ["OutputError", "Preempted", "RunResult", "SetupError", "run"]


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
    adversary: Adversary | None  # rank 0, under a rank-0 (colluding) attack
    test: tuple[torch.Tensor, torch.Tensor] | None  # uint8 images, labels
    scaling: datasets.Scaling
    pool: ClientPool | None  # cross-device rounds: any client's data, for the share of the cohort this rank computes


def _setup(cfg: ExperimentConfig, tp: transport_mod.Transport, out: Path, overwrite: bool) -> _Setup:
    """Everything a rank needs before round 1; ``overwrite`` also allows an existing ``out`` (always on resume)."""
    place = resolve(tp.rank, tp.size, tp.local_rank, cfg.clients, cfg.train.device, cfg.train.deterministic)
    if place.is_server and out.exists() and not overwrite:
        raise ConfigError(f"output {out} already exists; pass --overwrite or choose another --out.")
    plan = resolve_names(cfg)
    pipeline = Pipeline.build(plan, cfg)
    population = load_population(cfg, plan.data)
    sizes = population.sizes()
    validate_against_data(cfg, sizes, population.num_classes)
    for f in pipeline.all_filters:
        f.check_data(sizes)
    pipeline.attack.check_classes(population.num_classes)
    scaling = datasets.Scaling(cfg.data.scale, *population.stats()).to(place.device)

    module = build(cfg.model.name, population.input_shape, population.num_classes, cfg.model.hidden)
    init_seed = cfg.seed if cfg.model.seed is None else cfg.model.seed
    initialize(module, cfg.model.init, generator(init_seed, Purpose.INIT))
    flat = FlatModel(module.to(place.device))
    theta = flat.flatten()

    batches = batch_sizes(sizes, cfg.train.batch_size, cfg.train.batch_fraction)
    pool = ClientPool(population, batches, place.device)
    cross_device = participation.is_cohort(cfg.clients, cfg.train.clients_per_round)
    hosted = [] if cross_device else [pool.get(j) for j in place.clients]
    clients = pipeline.clients(cfg, flat, hosted, population.num_classes, theta, int(batches.max()), scaling,
                               pipeline.attack, pipeline.rule.params)
    schedule = ByzantineSchedule(cfg.byzantine, cfg.clients, cfg.seed, population.classes)

    server, adversary, test = None, None, None
    if place.is_server:
        fixed = frozenset(cfg.byzantine.clients) if cfg.byzantine.model == "fixed" else frozenset()
        shared = FilterSetup(flat, population, scaling, cfg.seed, pipeline.attack, fixed, cross_device)
        for f in pipeline.all_filters:
            f.prepare(shared)
        root = _server_gradient(flat, population, scaling, pipeline.rule.params.root_size, cfg.seed) \
            if pipeline.rule.needs.server_data else None
        server = Server(pipeline, cfg.seed, root)
        if pipeline.attack.on_rank0:
            adversary = Adversary(pipeline, cfg.aggregator.name, cfg.seed, _white_box(cfg, pipeline, shared))
        test_x, test_y = population.test()
        test = (test_x.to(place.device), test_y.to(place.device))
    return _Setup(place, flat, theta, clients, schedule, server, adversary, test, scaling,
                  pool if cross_device else None)


def _white_box(cfg: ExperimentConfig, pipeline: Pipeline,
               shared: FilterSetup) -> GuidingGradients | SampleSource | None:
    """The server's guiding samples, for a rank-0 attack that reads them (``attack.knowledge: white_box``): the
    DiverseFL filter's own, or (a rule without it) samples drawn the same way with DiverseFL's default size."""
    if not (pipeline.attack.needs_guiding and cfg.attack.knowledge == "white_box"):
        return None
    own = [f.knowledge for f in pipeline.all_filters if isinstance(f, DiverseFLFilter)]
    if own:
        return own[0]
    defaults = DiverseFLParams()
    return SampleSource(shared, defaults) if shared.cross_device else guiding_samples(shared, defaults)


def _server_gradient(flat: FlatModel, population: Population, scaling: datasets.Scaling, size: int,
                     seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """θ → the gradient on the server's own root dataset (FLTrust): ``aggregator.params.root_size`` training points
    drawn uniformly by the seed, held by rank 0 only."""
    if not isinstance(population, Partitioned):
        raise ConfigError(f"aggregator.name=fltrust draws its root data from a dataset's training set; "
                          f"data.dataset={type(population).registered_name} is a generated population without one.")
    ds = population.ds
    if not 0 < size <= len(ds.train_y):
        raise ConfigError(f"aggregator.params.root_size={size} must be between 1 and the {len(ds.train_y)} training "
                          "points.")
    pick = torch.randperm(len(ds.train_y), generator=generator(seed, Purpose.ROOT))[:size]
    x, y, w = stack_padded([scaling(ds.train_x[pick].to(scaling.mean.device))], [ds.train_y[pick].to(
        scaling.mean.device)])
    return lambda theta: batched_grads(flat, theta, x, y, w, 1)[0]


def run(cfg: ExperimentConfig, out: Path, tp: transport_mod.Transport | None = None,
        progress: TextIO | None = sys.stderr, overwrite: bool = False, resume: bool = False) -> RunResult | None:
    """Train ``cfg`` and write metrics to ``out`` (rank 0). Returns the result on rank 0, None elsewhere.

    ``resume`` continues from the checkpoint beside ``out``. Raises :class:`Preempted` on every rank when a stop
    signal arrived (after a checkpoint), :class:`SetupError` when set-up failed on any rank.
    """
    tp = tp or transport_mod.create()
    s = agreed(tp, lambda: _setup(cfg, tp, out, overwrite or resume))
    rows = cfg.train.clients_per_round if s.pool is not None else cfg.clients  # a round's matrix: cohort or all
    tp.configure(client_blocks(rows, tp.size), s.flat.dim, s.placement.device, 1 if s.clients.flipped is None else 2)
    ckpt = agreed(tp, lambda: checkpoint_to_resume(cfg, out, s.flat.dim) if resume and s.placement.is_server else None)
    start = tp.share_int(ckpt.round + 1 if ckpt is not None else 1)
    if ckpt is not None:
        s.theta = torch.from_numpy(ckpt.theta).to(s.placement.device)
        if s.server is not None:
            s.server.rule.load_state_dict(ckpt.rule_state)
    state = s.clients.checkpoint_state()
    if start > 1 and state is not None:
        full = torch.from_numpy(ckpt.client_models) if ckpt is not None and ckpt.client_models is not None else None
        s.clients.restore(tp.scatter(full, state))

    def open_writer() -> RunWriter | None:
        if not s.placement.is_server:
            return None
        if start > 1:
            return RunWriter.resume(out, start - 1, tp.size)
        return RunWriter.create(out, cfg.clients, tp.size, s.flat.dim, to_yaml(cfg), __version__,
                                rows if s.pool is not None else None)

    writer = agreed(tp, open_writer)
    try:
        loop = _RoundLoop(cfg, tp, s, writer, progress, out)
        with StopSignals() as stop:
            theta = loop.run(start, stop)
    except (Preempted, health.Halted):
        if writer is not None:
            with contextlib.suppress(OSError):  # after a failed write, closing may fail too: the first error stands
                writer.close()
        raise
    except BaseException as exc:
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()
        tp.fail(exc)
        raise
    if writer is None:
        return None
    writer.write_model(theta.cpu().numpy(), cfg.rounds)
    writer.close()
    return RunResult(out, theta, loop.final, cfg.rounds)


class _RoundLoop:
    """Rounds ``start``..``rounds`` on this rank; rank 0 also screens, aggregates, evaluates and records."""

    def __init__(self, cfg: ExperimentConfig, tp: transport_mod.Transport, s: _Setup, writer: RunWriter | None,
                 progress: TextIO | None, out: Path) -> None:
        self.cfg, self.tp, self.s, self.writer, self.progress, self.out = cfg, tp, s, writer, progress, out
        self.backdoor = s.clients.attack.backdoor_task
        self.final = Evaluation(math.nan, math.nan, math.nan)
        self.stall = health.StallWatch(cfg.aggregator.name, progress)
        self.accuracy = progress_mod.LastAccuracy()

    def run(self, start: int, stop: StopSignals) -> torch.Tensor:
        cfg, tp, s = self.cfg, self.tp, self.s
        theta, every, started = s.theta, cfg.output.checkpoint_every, time.perf_counter()
        for r in range(start, cfg.rounds + 1):
            clock = Clock()
            theta = tp.broadcast(theta)
            clock.lap("broadcast")
            lr = learning_rate(cfg.train.lr, r)
            byzantine = s.schedule.mask(r)
            cohort = participation.cohort(cfg.seed, cfg.clients, cfg.train.clients_per_round, r)
            sampled = None  # a cross-device round's masks are the cohort's (in _serve), not the population's
            if s.pool is not None:  # cross-device: this rank computes its even share of the cohort, whoever it is
                mine = cohort[participation.worker_slots(len(cohort), tp.size, tp.rank)]
                s.clients.host([s.pool.get(int(j)) for j in mine])
                block = s.clients.messages(theta, r, byzantine, lr)
            else:
                sampled = participation.as_mask(cohort, cfg.clients)
                block = s.clients.messages(theta, r, byzantine, lr, sampled)
            compute = clock.lap("client_compute")
            z = tp.gather(block)
            # the honest clients' flipped-label gradients, a second matrix in client order (raw buffers, as z)
            flipped = tp.gather(s.clients.flipped, 1) if s.clients.flipped is not None else None
            stats = tp.gather_stats(memory.round_stats(compute, s.placement.device))
            clock.lap("gather")
            halt: Exception | None = None
            if z is not None and stats is not None:
                clock.times["client_compute"] = float(stats[:, 0].max())
                try:
                    theta, record = self._serve(r, z, theta, byzantine, sampled, lr, clock, stats[:, 1:],
                                                cohort if s.pool is not None else None, flipped)
                except (health.Diverged, OutputError) as exc:
                    halt = exc
                else:
                    self._report_progress(record, (r - start + 1) / (time.perf_counter() - started))
            verdict = tp.highest(health.HALT if halt is not None else health.STOP if stop.requested else health.GO)
            if verdict == health.HALT:
                raise health.Halted(str(halt) if halt is not None else "", tp.rank)
            stopping = verdict == health.STOP
            # every rank stops now, also one whose own copy of the signal is still on its way: mark it here, so
            # that copy is ignored when it lands instead of killing the rank before it exits 75
            if stopping:
                stop.requested = True
            if stopping or (every and (r % every == 0 or r == cfg.rounds)):
                save_checkpoint(cfg, tp, s.clients.checkpoint_state(),
                                s.server.rule.state_dict() if s.server is not None else None, theta, r, self.out)
            if stopping:
                raise Preempted(r, self.out, tp.rank)
        return theta

    def _serve(self, r: int, z: torch.Tensor, theta: torch.Tensor, byzantine: torch.Tensor,
               sampled: torch.Tensor | None, lr: float, clock: Clock, peaks: np.ndarray,
               cohort: torch.Tensor | None = None,
               flipped: torch.Tensor | None = None) -> tuple[torch.Tensor, RoundRecord]:
        """Rank 0's half of round r: screen, compare, aggregate, step (eq. 13), evaluate, record. ``peaks`` is every
        rank's [peak RSS, peak GPU memory] in bytes. In a cross-device round ``z`` holds the ``cohort`` only (its
        rows in id order), and so do the masks and the record; ``flipped`` (rows as ``z``) is for the attack."""
        cfg, server = self.cfg, self.s.server
        assert server is not None and self.writer is not None and self.s.test is not None
        if cohort is not None:
            byzantine, sampled = byzantine[cohort], torch.ones_like(cohort, dtype=torch.bool)
        assert sampled is not None
        if self.s.adversary is not None:
            self.s.adversary.corrupt(z, theta, byzantine, sampled, r, cohort, flipped)
            clock.lap("gather")  # the attack stands in for the Byzantine clients' upload
        partial = cfg.train.clients_per_round is not None and cohort is None
        screened = server.examine(z, theta, sampled if partial else None, r, cohort)
        clock.lap("guiding")
        decision = server.decide(screened, theta, byzantine, r)
        if decision.direction is not None:
            theta = theta - lr * (decision.direction + cfg.train.weight_decay * theta)
            health.check_finite(theta, r, self.out)
        self.stall.observe(r, decision.direction is not None)
        clock.lap("aggregation")
        ev = Evaluation(math.nan, math.nan, math.nan)
        if r % cfg.train.eval_every == 0 or r == cfg.rounds:
            ev = self.final = evaluate(self.s.flat, theta, *self.s.test, self.s.scaling, backdoor=self.backdoor)
        clock.lap("evaluation")
        record = RoundRecord(
            round=r, lr=lr, applied=decision.direction is not None, test_accuracy=ev.accuracy, test_loss=ev.loss,
            backdoor_accuracy=ev.backdoor_accuracy, byzantine=byzantine.numpy(), sampled=sampled.numpy(),
            accepted=decision.accepted.cpu().numpy(), weight=decision.weight.cpu().numpy(),
            **screened.record_arrays(), times=clock.times,
            peak_rss=peaks[:, 0], peak_gpu=peaks[:, 1], ids=cohort.numpy() if cohort is not None else None,
        )
        try:
            self.writer.append(record)
        except OSError as exc:
            raise OutputError(f"cannot write round {r} to {self.out} ({exc}); rounds before it are in the "
                              "file") from None
        return theta, record

    def _report_progress(self, record: RoundRecord, rate: float) -> None:
        self.accuracy.observe(record)
        r = record.round
        if self.progress is None or not (r % self.cfg.output.progress_every == 0 or r == self.cfg.rounds):
            return
        flagged = int((~record.accepted & record.sampled).sum())
        print(f"[mpifl] round {r}/{self.cfg.rounds}  {self.accuracy.describe(r)}  flagged {flagged}/"
              f"{int(record.sampled.sum())}  byzantine {int((record.byzantine & record.sampled).sum())}  "
              f"{rate:.2f} rounds/s",
              file=self.progress, flush=True)
