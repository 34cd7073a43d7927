"""Process memory set-up: large freed buffers go back to the system instead of staying in glibc's heaps."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameter, from glibc's malloc.h
MMAP_THRESHOLD = 1024 * 1024


def return_large_buffers(threshold: int = MMAP_THRESHOLD) -> bool:
    """Have glibc map every allocation of threshold bytes or more on its own, and unmap it when freed.

    By default glibc raises this threshold after the first large free (up to 32 MB), after which downloaded files,
    decoded chunks and audio windows come from per-thread heaps that keep their freed memory resident: under a
    burst of long uploads that left 150-200 MB more resident than was in use (bench/memory.py). Returns False
    where there is no glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    return ok
