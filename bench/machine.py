"""What machine the numbers come from, and process memory readings."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return model, flags


def ram_gib() -> float:
    """Total memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15 minute load averages."""
    return os.getloadavg()


def busy_cpu_seconds() -> float:
    """CPU-seconds every process on the machine has used since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU-seconds this process and its waited-for children have used."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """How many cores other processes kept busy while the benchmark ran: machine busy time minus our own."""

    def __init__(self) -> None:
        self.start_wall = time.monotonic()
        self.start_busy = busy_cpu_seconds()
        self.start_own = own_cpu_seconds()

    def cores(self) -> float:
        """Average cores used by everything else since this object was made."""
        wall = time.monotonic() - self.start_wall
        others = (busy_cpu_seconds() - self.start_busy) - (own_cpu_seconds() - self.start_own)
        return max(0.0, others / wall) if wall > 0 else 0.0


def rss_bytes() -> int:
    """This process's resident set size now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    """This process's peak resident set size."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _simd(faiss: object) -> str:
    try:
        return str(faiss.SIMDConfig.get_level_name())  # type: ignore[attr-defined]
    except AttributeError:
        return "unknown"


def describe() -> dict[str, str]:
    """Machine and library facts for the results table."""
    import numpy
    import torch
    import transformers

    from core.index import import_faiss
    from core.speedups import cpu_has_amx, vector_isa

    faiss = import_faiss()

    model, flags = _cpuinfo()
    return {
        "CPU": model,
        "cores (os.cpu_count)": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "RAM": f"{ram_gib():.1f} GiB",
        "CPU flags": ", ".join(f for f in INTERESTING_FLAGS if f in flags) or "none of " + ", ".join(INTERESTING_FLAGS),
        "AMX bf16 detected": "yes"
        if cpu_has_amx()
        else "no" + (" (the CPU has it; capped off)" if "amx_bf16" in flags else ""),
        "vector ISA torch may use": vector_isa(),
        "ISA caps (ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY / FBGEMM_ENABLE_INSTRUCTIONS)": " / ".join(
            os.environ.get(k, "unset")
            for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "FBGEMM_ENABLE_INSTRUCTIONS")
        ),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "faiss": f"{faiss.__version__} (SIMD level {_simd(faiss)})",
        "OPENBLAS_CORETYPE (faiss's OpenBLAS)": os.environ.get("OPENBLAS_CORETYPE", "unset"),
        "numpy": numpy.__version__,
        "kernel": platform.release(),
    }
