"""The fp32 FLOP bound of one audio window on this machine: the tower's counted FLOPs over a measured fp32 GEMM rate."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from bench.variants import VARIANTS
from core.config import ModelConfig

log = logging.getLogger(__name__)

GEMM_SIZE = 2048  # square fp32 matrices: large enough to run at the BLAS's peak, small enough to take ~0.1 s
GEMM_REPEATS = 5


@dataclass(frozen=True)
class FlopBound:
    """What one 10 s window costs in arithmetic, and the fastest this machine does fp32 arithmetic."""

    gflop_per_window: float  # counted by torch's FlopCounterMode on the fp32 reference path, one window alone
    gemm_gflops: float  # the best of GEMM_REPEATS fp32 matrix products of GEMM_SIZE, on torch's threads
    threads: int

    @property
    def bound_ms(self) -> float:
        """The fastest a window could run in fp32 if every FLOP ran at the GEMM rate."""
        return self.gflop_per_window / self.gemm_gflops * 1000


def window_gflop(model: str, clip: np.ndarray) -> float:
    """GFLOP of one window through the audio tower, on transformers' own fp32 code path (features not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from core.embedder import Embedder

    reference = next(iter(VARIANTS.values()))  # the optimisation table's first row
    embedder = Embedder.load(ModelConfig(id=model, **reference))  # type: ignore[arg-type]
    with FlopCounterMode(display=False) as counter:
        embedder.embed_windows([clip])
    return counter.get_total_flops() / 1e9


def gemm_gflops(size: int = GEMM_SIZE, repeats: int = GEMM_REPEATS) -> float:
    """The machine's fp32 matrix-product rate: the best of repeats, after one warm-up."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def measure(model: str, clip: np.ndarray) -> FlopBound:
    """Count one window's FLOPs and measure the fp32 GEMM rate."""
    import torch

    gflop = window_gflop(model, clip)
    rate = gemm_gflops()
    log.info("audio window: %.1f GFLOP; fp32 GEMM %.0f GFLOP/s -> bound %.0f ms", gflop, rate, gflop / rate * 1000)
    return FlopBound(gflop, rate, torch.get_num_threads())
