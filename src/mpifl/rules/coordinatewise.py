"""Coordinate-wise order statistics of the usable rows of Z [n, d]: the median and the trimmed mean, fast.

Why not ``torch.sort`` / ``torch.kthvalue`` along dim 0: both copy every column out of its strided place and run a
general sort or quickselect per column; on [20, 10⁶] that is ~0.3-0.5 s on one CPU core, while reading the matrix once
takes ~10 ms. Here the k usable rows are ordered by a sorting network (Batcher's odd-even merge sort, pruned to k
rows and then to the ranks the statistic needs): each compare-exchange is one ``torch.minimum`` and one
``torch.maximum`` of two whole rows, run over a band of columns small enough that the k rows of the band stay in
the core's cache (:data:`CPU_BAND`). Min and max are exact, so the ranks are the very values a sort gives: the
median is bit-identical to :func:`mpifl.rules.columns.coordinate_median`, and the trimmed mean, which averages the
kept ranks with the same ``mean(dim=0)`` over the same [k − 2b, columns] values in the same row order, is
bit-identical to :func:`mpifl.rules.columns.trimmed_mean` too (tests/test_rules_speed_equivalence.py).

A network has ~k log²k / 4 comparators, each a pass over the band, so beyond :data:`NETWORK_MAX_ROWS` rows the
general sort wins again and is used. On a GPU the same network runs over the bands of
:func:`mpifl.rules.columns.by_columns` (one kernel launch per comparator and band instead of per cache-sized chunk).
Rows are never copied out of Z: the network reads the usable rows in place and writes only into a workspace of
k + 2 band-wide rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from .columns import by_columns, coordinate_median, trimmed_mean as sorted_trimmed_mean

NETWORK_MAX_ROWS = 128  # above this many usable rows the comparator count (~k log²k / 4) loses to torch.sort
GRAIN = 32768  # torch's at::internal::GRAIN_SIZE: an op on fewer elements runs on the calling thread, no OpenMP region
CPU_BAND = 30720  # columns per band on the CPU: below GRAIN, and (k + 2) rows × 120 KiB stay in a 2 MiB L2 for k = 14
#                   (in L3 beyond); measured on a 2-core Xeon: 8192 columns 84 ms, 16384 64 ms, 32768 59 ms for k = 20
VECTOR_BLOCK = 64  # columns of one block of torch's vectorised column sum (4 AVX-512 vectors): bands and pieces are
#                     multiples of it, so every column is summed by the same code path as in one whole piece
CHAIN_MAX_ROWS = 16  # torch's CPU column mean adds up to this many rows one after another (17 measured too; more
#                      go through a tree), so adding them in rank order and dividing gives its bits without a stack
GPU_ELEMENTS = 1 << 26  # on a GPU: the bands of mpifl.rules.columns.by_columns (same shapes, so the same mean kernel)


@functools.lru_cache(maxsize=None)
def merge_sort_network(k: int) -> tuple[tuple[int, int], ...]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort of k values: after them, position r holds rank r.

    Built for the next power of two and cut to k: a comparator touching a position ≥ k would only meet the +inf
    padding there and change nothing, so it is dropped."""
    size = 1
    while size < k:
        size *= 2
    out: list[tuple[int, int]] = []

    def merge(lo: int, hi: int, r: int) -> None:
        step = 2 * r
        if step < hi - lo:
            merge(lo, hi, step)
            merge(lo + r, hi, step)
            out.extend((i, i + r) for i in range(lo + r, hi - r, step))
        else:
            out.append((lo, lo + r))

    def sort(lo: int, hi: int) -> None:
        if hi > lo:
            mid = lo + (hi - lo) // 2
            sort(lo, mid)
            sort(mid + 1, hi)
            merge(lo, hi, 1)

    sort(0, size - 1)
    return tuple((i, j) for i, j in out if j < k)


@functools.lru_cache(maxsize=None)
def selection_plan(k: int, ranks: tuple[int, ...]) -> tuple[tuple[tuple[int, int, int, int], ...], tuple[int, ...]]:
    """The network for k rows pruned to the comparators that the given ``ranks`` depend on, as buffer moves.

    Slots 0..k−1 are the input rows (read only, they are views of Z), slots k..2k+1 workspace rows. Each step
    (a, b, lo, hi) writes min(slot a, slot b) to slot lo and the max to slot hi, two free workspace rows, and frees
    a and b if they were workspace rows; the second tuple is the slot holding each requested rank at the end."""
    live, kept = set(ranks), []
    for i, j in reversed(merge_sort_network(k)):
        if i in live or j in live:
            kept.append((i, j))
            live |= {i, j}
    where = list(range(k))  # position → slot
    free = list(range(2 * k + 1, k - 1, -1))
    steps = []
    for i, j in reversed(kept):
        a, b = where[i], where[j]
        lo, hi = free.pop(), free.pop()
        steps.append((a, b, lo, hi))
        where[i], where[j] = lo, hi
        free.extend(s for s in (b, a) if s >= k)
    return tuple(steps), tuple(where[r] for r in ranks)


Combine = Callable[[list[torch.Tensor], torch.Tensor], None]


def _run_bands(z: torch.Tensor, index: list[int], plan: tuple, combine: Combine, out: torch.Tensor, start: int,
               stop: int, width: int) -> None:
    """Columns start..stop of ``out``, one band of ``width`` columns at a time, with a workspace of its own."""
    steps, result_slots = plan
    workspace = torch.empty((len(index) + 2, min(width, stop - start)), dtype=z.dtype, device=z.device)
    for lo in range(start, stop, width):
        hi = min(lo + width, stop)
        slots = [z[i, lo:hi] for i in index] + list(workspace[:, :hi - lo])
        for a, b, small, large in steps:
            torch.minimum(slots[a], slots[b], out=slots[small])
            torch.maximum(slots[a], slots[b], out=slots[large])
        combine([slots[s] for s in result_slots], out[lo:hi])


@functools.lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="mpifl-coordinatewise")


def _ranked(z: torch.Tensor, index: list[int], ranks: tuple[int, ...], combine: Combine) -> torch.Tensor:
    """For each band of columns, the given ranks of the rows ``index`` of z (as rows [len(ranks), band]) handed to
    ``combine(ranked_rows, out_band)``, which writes the band's result into ``out_band`` [band].

    On the CPU every op stays below torch's grain, so it runs on the calling thread; the cores share the columns as
    contiguous blocks of whole bands, one Python thread each (torch releases the GIL inside an op)."""
    d = z.shape[1]
    plan = selection_plan(len(index), ranks)
    out = torch.empty(d, dtype=z.dtype, device=z.device)
    if z.device.type != "cpu":
        _run_bands(z, index, plan, combine, out, 0, d, max(1, GPU_ELEMENTS // len(index)))
        return out
    bands = -(-d // CPU_BAND)
    threads = min(torch.get_num_threads(), bands)
    if threads <= 1:
        _run_bands(z, index, plan, combine, out, 0, d, CPU_BAND)
        return out
    edges = [CPU_BAND * (bands * t // threads) for t in range(threads)] + [d]
    jobs = [_pool(threads).submit(_run_bands, z, index, plan, combine, out, lo, hi, CPU_BAND)
            for lo, hi in zip(edges, edges[1:])]
    for job in jobs:
        job.result()
    return out


def median(z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per column, the median of the rows of z where ``valid`` (at least one); for an even count the mean of the two
    middle values, computed as ``(lower + upper) / 2`` exactly like :func:`mpifl.rules.columns.coordinate_median`."""
    index = torch.nonzero(valid).squeeze(1).tolist()
    k = len(index)
    if k > NETWORK_MAX_ROWS:
        return by_columns(z, valid, lambda rows, cols: coordinate_median(rows))

    def middle(ranked: list[torch.Tensor], out: torch.Tensor) -> None:
        torch.add(ranked[0], ranked[1], out=out).div_(2)

    return _ranked(z, index, ((k + 1) // 2 - 1, k // 2), middle)


def trimmed_mean(z: torch.Tensor, valid: torch.Tensor, beta: float) -> torch.Tensor:
    """Per column, the mean of the rows of z where ``valid`` (at least one) after dropping b = floor(beta k) values
    from each end, as :func:`mpifl.rules.columns.trimmed_mean`: the kept ranks, in rank order, go through the same
    ``mean(dim=0)``, so the sums run in the same order."""
    index = torch.nonzero(valid).squeeze(1).tolist()
    k = len(index)
    b = int(beta * k)
    if b == 0 or k > NETWORK_MAX_ROWS:
        return by_columns(z, valid, lambda rows, cols: sorted_trimmed_mean(rows, beta))
    kept = tuple(range(b, k - b))
    # On the CPU in pieces below torch's grain: a parallel reduction over [16, 30720] costs ~6 ms to start on a busy
    # 2-core machine, 50× the sum itself. Each column is summed as in one piece (rows in rank order) as long as a piece
    # is whole blocks of the vectorised column loop: its scalar tail, the last d mod 16 columns of a matrix, rounds
    # differently, so only the last piece of the last band may have one, where the one-piece sum has it too.
    piece = max(VECTOR_BLOCK, (GRAIN - 1) // len(kept) // VECTOR_BLOCK * VECTOR_BLOCK)
    if z.device.type != "cpu":
        piece = z.shape[1]

    chained = z.device.type == "cpu" and len(kept) <= CHAIN_MAX_ROWS

    def mean(ranked: list[torch.Tensor], out: torch.Tensor) -> None:
        if chained and out.shape[0] % VECTOR_BLOCK == 0:  # whole vector blocks: no scalar tail in this band
            out.copy_(ranked[0])
            for row in ranked[1:]:
                out.add_(row)
            out.div_(len(ranked))
            return
        for lo in range(0, out.shape[0], piece):
            torch.mean(torch.stack([row[lo:lo + piece] for row in ranked]), dim=0, out=out[lo:lo + piece])

    return _ranked(z, index, kept, mean)
