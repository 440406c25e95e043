"""Peak memory of this rank, recorded every round so a user sees what a run needs before scaling it up."""

from __future__ import annotations

import resource
import sys

import numpy as np
import torch

STATS = ("peak_rss", "peak_gpu")  # bytes; what every rank reports with its compute time each round


def peak_rss_bytes() -> int:
    """The process's peak resident set (``ru_maxrss``: kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_gpu_bytes(device: torch.device) -> int:
    """Peak memory torch's allocator has handed out on ``device`` (0 off the GPU)."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0


def round_stats(compute_seconds: float, device: torch.device) -> np.ndarray:
    """[compute seconds, peak RSS, peak GPU memory] of this rank, as gathered to rank 0 each round."""
    return np.array([compute_seconds, peak_rss_bytes(), peak_gpu_bytes(device)], dtype=np.float64)
