"""A burst of fifty 10-minute uploads keeps resident memory within the budget plus the model; the rest are busy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20
# Beyond its leases, the process keeps what glibc holds of freed buffers in its arenas, which varies from run to
# run: identical runs of this burst peaked 1020-1210 MiB over a 548 MiB baseline, before and after the model's
# batch shrank from 185 to 24 MiB (features one clip at a time). A third of the budget is allowed for it.
ALLOCATOR_SLACK = 1 / 3


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_burst_of_long_uploads_stays_within_the_budget() -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--uploads", "50", "--seconds", "600"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=580,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    budget = result["budget_bytes"]
    assert budget == 512 * MB  # the default, sized for a 2 GB host
    replies = result["replies"]
    assert result["errors"] == [] and set(replies) <= {"added", "busy"}, result
    assert replies.get("added", 0) >= 2, "too few were admitted to say anything about memory"
    assert replies.get("busy", 0) >= 25, "the burst never filled the budget"
    assert result["busy_texts"] == ["I'm busy with other sounds right now; please try again in a moment."]
    assert result["leased_peak_bytes"] <= budget
    held = result["peak_rss_bytes"] - result["baseline_rss_bytes"] - result["model_batch_bytes"]
    bound = budget * (1 + ALLOCATOR_SLACK)
    assert held <= bound, f"the burst held {held / MB:.0f} MiB resident, over the {bound / MB:.0f} MiB allowed"
