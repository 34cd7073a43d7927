"""FAISS indexes, one per space, derived from the store and saved to disk as caches."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.changes import ChangeSet
from core.config import IndexConfig
from core.speedups import cpu_flags

log = logging.getLogger(__name__)


class VectorIndex(Protocol):
    """Inner-product search over normalised vectors keyed by sample id."""

    kind: str
    dim: int

    def __len__(self) -> int: ...
    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]: ...
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> None: ...
    def save(self, path: Path) -> None: ...


def import_faiss(config: IndexConfig | None = None) -> Any:
    """Import faiss, first pointing its bundled OpenBLAS at AVX-512 kernels where it would fall back to SSE3.

    faiss-cpu wheels ship OpenBLAS 0.3.15, which predates Sapphire Rapids and picks its generic "Prescott" kernels
    there; on CPUs with the AVX-512 subsets its SkylakeX kernels need, those train IVF ~2.6x faster. Only the first
    import counts, an OPENBLAS_CORETYPE already set is kept, and [index] blas_kernels = "default" turns this off.
    """
    if "faiss" not in sys.modules and (config is None or config.blas_kernels == "auto"):
        flags = cpu_flags()
        if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags:
            os.environ.setdefault("OPENBLAS_CORETYPE", "SkylakeX")
    import faiss

    return faiss


def ivf_lists(n: int) -> int:
    """How many IVF lists suit n vectors."""
    return int(min(max(16, 4 * math.sqrt(n)), 16384))


class FaissIndex:
    """Exact (flat) search while small, IVF beyond a configurable size; both support removal."""

    def __init__(self, index: object, kind: str, dim: int) -> None:
        self.index = index
        self.kind = kind
        self.dim = dim

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, config: IndexConfig) -> FaissIndex:
        """Build the right kind of index for this many vectors."""
        faiss = import_faiss(config)
        n = len(ids)
        if n <= config.approximate_above:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            kind = "flat"
        else:
            nlist = ivf_lists(n)
            quantizer = faiss.IndexFlatIP(dim)
            if config.ivf_codec == "sq8":  # 8 bits per dimension: a quarter of the memory to hold and to scan
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT, False
                )
            elif config.ivf_codec == "flat":
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                raise ValueError(f"[index] ivf_codec must be sq8 or flat, not {config.ivf_codec!r}")
            rng = np.random.default_rng(0)
            train = vectors if n <= 64 * nlist else vectors[rng.choice(n, 64 * nlist, replace=False)]
            index.train(np.ascontiguousarray(train, dtype=np.float32))
            index.nprobe = config.nprobe
            kind = "ivf"
        built = cls(index, kind, dim)
        if n:
            built.add(ids, vectors)
        return built

    def __len__(self) -> int:
        return int(self.index.ntotal)  # type: ignore[attr-defined]

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k nearest ids with their inner products, best first."""
        if len(self) == 0 or k <= 0:
            return []
        faiss = import_faiss()
        # faiss splits its work by query: one query runs on one thread whatever the team, and waking the rest of a
        # sleeping team cost 1-2 ms a search (2.4-3.5 ms against 1.5 ms after a text embedding, 10k flat). The
        # setting is this thread's own, so index builds in other threads keep every core.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, ids = self.index.search(np.asarray(query, np.float32).reshape(1, -1), min(k, len(self)))  # type: ignore[attr-defined]
        finally:
            faiss.omp_set_num_threads(threads)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under these ids."""
        self.index.add_with_ids(  # type: ignore[attr-defined]
            np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64)
        )

    def remove(self, ids: np.ndarray) -> None:
        """Remove these ids (absent ids are ignored)."""
        self.index.remove_ids(np.asarray(ids, dtype=np.int64))  # type: ignore[attr-defined]

    def save(self, path: Path) -> None:
        """Write atomically."""
        faiss = import_faiss()

        tmp = path.with_name(path.name + ".part")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, kind: str, dim: int, config: IndexConfig) -> FaissIndex:
        """Read a saved index."""
        faiss = import_faiss(config)

        index = faiss.read_index(str(path))
        if kind == "ivf":
            index.nprobe = config.nprobe
        return cls(index, kind, dim)


@dataclass
class _Entry:
    index: VectorIndex
    revision: int
    trained_size: int
    dirty: bool = False


def _file_stem(space: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", space)[:48]
    return f"{safe}-{hashlib.sha1(space.encode()).hexdigest()[:10]}"


class IndexSet:
    """The per-space indexes, kept in step with the store's revision counters."""

    def __init__(self, directory: Path, config: IndexConfig) -> None:
        self.directory = directory
        self.config = config
        self.dim: int | None = None  # known once vectors or the model are seen
        self.entries: dict[str, _Entry] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def _paths(self, space: str) -> tuple[Path, Path]:
        stem = _file_stem(space)
        return self.directory / f"{stem}.faiss", self.directory / f"{stem}.json"

    def try_load(self, space: str, revision: int, count: int) -> bool:
        """Load a saved index if it matches the store exactly; False if missing or stale."""
        if self.load_saved(space, revision) == revision and len(self.entries[space].index) == count:
            return True
        self.forget(space)
        return False

    def load_saved(self, space: str, newest: int) -> int | None:
        """Load a space's saved index, whatever revision up to newest it reflects; that revision, or None if unusable.

        An older one is kept loaded for the caller to catch up from the store's change log.
        """
        index_path, meta_path = self._paths(space)
        try:
            meta = json.loads(meta_path.read_text())
            revision, count = int(meta["revision"]), int(meta["count"])
            if meta["space"] != space or revision > newest:
                return None
            if revision != newest:
                log.info("index for %s is behind (saved rev %d, store rev %d)", space, revision, newest)
            if self.dim is not None and meta["dim"] != self.dim:
                return None
            index = FaissIndex.load(index_path, meta["kind"], meta["dim"], self.config)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            log.info("no usable saved index for %s (%s)", space, exc)
            return None
        if len(index) != count:
            return None
        self.entries[space] = _Entry(index, revision, meta.get("trained_size", count))
        return revision

    def rebuild(self, space: str, ids: np.ndarray, vectors: np.ndarray, revision: int) -> None:
        """Build a space's index from the store's vectors."""
        dim = vectors.shape[1] if len(ids) else self.dim
        if dim is None:
            raise RuntimeError("the index dimension is unknown before the model is loaded")
        index = FaissIndex.build(ids, vectors, dim, self.config)
        self.entries[space] = _Entry(index, revision, len(ids), dirty=True)
        log.info("built %s index for %s with %d vectors", index.kind, space, len(ids))

    def forget(self, space: str) -> None:
        """Drop a space's in-memory index, so the next use rebuilds it from the store."""
        self.entries.pop(space, None)

    def drop(self, space: str) -> None:
        """Forget a space that no longer exists and delete its saved index."""
        self.forget(space)
        for path in self._paths(space):
            path.unlink(missing_ok=True)

    def get(self, space: str) -> VectorIndex | None:
        """The loaded index of a space, if any."""
        entry = self.entries.get(space)
        return entry.index if entry else None

    def revision(self, space: str) -> int | None:
        """The store revision the in-memory index reflects."""
        entry = self.entries.get(space)
        return entry.revision if entry else None

    def add(self, space: str, sample_id: int, vector: np.ndarray, revision: int) -> bool:
        """Apply one addition the store committed at this revision; False if the index is out of step.

        Out of step means another writer (another shira process on the same data) changed the space since this
        index was built: the caller rebuilds it from the store instead.
        """
        entry = self.entries[space]
        if entry.revision != revision - 1:
            return False
        entry.index.add(np.array([sample_id]), vector.reshape(1, -1))
        entry.revision = revision
        entry.dirty = True
        return True

    def remove(self, space: str, sample_id: int, revision: int) -> bool:
        """Apply one removal the store committed at this revision; False if the index is out of step."""
        entry = self.entries[space]
        if entry.revision != revision - 1:
            return False
        entry.index.remove(np.array([sample_id]))
        entry.revision = revision
        entry.dirty = True
        return True

    def catch_up(self, space: str, changes: ChangeSet) -> bool:
        """Apply what the store's change log says happened since this index's revision; False if out of step.

        Out of step (or grown past its kind, or not matching the store's count after) means the caller rebuilds.
        """
        entry = self.entries.get(space)
        if entry is None or entry.revision != changes.since:
            return False
        if len(changes.removed):
            entry.index.remove(changes.removed)
        if len(changes.added):
            if changes.vectors.shape[1] != entry.index.dim:
                return False
            entry.index.add(changes.added, changes.vectors)
        entry.revision = changes.revision
        entry.dirty = True
        if len(entry.index) != changes.count:
            log.warning(
                "index for %s has %d vectors after catching up, the store %d", space, len(entry.index), changes.count
            )
            return False
        return not self.needs_rebuild(space)

    def needs_rebuild(self, space: str) -> bool:
        """True when a space has outgrown its index kind or its IVF training."""
        entry = self.entries[space]
        n = len(entry.index)
        if entry.index.kind == "flat":
            return n > self.config.approximate_above
        return n > 4 * entry.trained_size or n <= self.config.approximate_above // 2

    def save(self, space: str) -> None:
        """Write one space's index and its metadata."""
        entry = self.entries[space]
        index_path, meta_path = self._paths(space)
        entry.index.save(index_path)
        meta = {
            "space": space,
            "revision": entry.revision,
            "count": len(entry.index),
            "dim": entry.index.dim,
            "kind": entry.index.kind,
            "trained_size": entry.trained_size,
        }
        tmp = meta_path.with_name(meta_path.name + ".part")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, meta_path)
        entry.dirty = False

    def dirty(self) -> list[str]:
        """Spaces whose in-memory index differs from the saved one."""
        return [space for space, entry in self.entries.items() if entry.dirty]
