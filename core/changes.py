"""The change log: each committed addition or removal, by space revision, for catching an index up incrementally."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

KEEP = 100_000  # log entries kept per space; an index further behind than this is rebuilt instead
TRIM_EVERY = 1_000  # revisions between two trims of a space's log
ADD, REMOVE, RESET = "add", "remove", "reset"  # reset: many samples changed at once (a space renamed or merged)


@dataclass(frozen=True)
class ChangeSet:
    """What a space's changes since a revision did: ids to drop, then (ids, vectors) to add; read in one snapshot."""

    since: int
    revision: int
    removed: np.ndarray  # int64 ids
    added: np.ndarray  # int64 ids
    vectors: np.ndarray  # one row per added id
    count: int  # samples in the space at revision, to check the result against


def net_effect(
    entries: Iterable[tuple[int, int, str]], since: int, revision: int
) -> tuple[list[int], list[int]] | None:
    """(removed, added) ids from log entries (revision, sample_id, op) after since; None when the log can't tell.

    The log can't tell when an entry is missing (trimmed, or written before the log existed) or a reset is among them.
    """
    rows = list(entries)
    if len(rows) != revision - since or any(op == RESET for _, _, op in rows):
        return None
    removed = {sample_id for _, sample_id, op in rows if op == REMOVE}
    added = [sample_id for _, sample_id, op in rows if op == ADD and sample_id not in removed]
    return sorted(removed), added
