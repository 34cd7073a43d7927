"""Named moments in a request's life at which a crash test can make the process SIGKILL itself.

A test sets SHIRA_CRASH_AT=name (or name:n, the n-th time the moment comes) on a `shira run` it starts; without
the variable, which is always the case outside tests, reached() does nothing. The moments:
journaled (an inbox commit), embedded (an addition's audio went through the model, nothing stored yet),
committed (an addition's row is committed, not yet answered), replied (an answer was delivered, not yet marked done).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "SHIRA_CRASH_AT"

_seen: Counter[str] = Counter()


def reached(point: str) -> None:
    """SIGKILL this process, with no clean-up at all, if SHIRA_CRASH_AT names this moment."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != point:
        return
    _seen[point] += 1
    if _seen[point] >= int(nth or 1):
        os.write(2, f"shira: crash point {point} reached, killing the process\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
