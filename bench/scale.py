"""Index scale: shira's FaissIndex on clustered synthetic embeddings, one size per fresh process.

python -m bench.scale N  prints one JSON line: build time, query p50/p95, recall@10 against exact search,
and the index's resident memory against the raw float32 vectors.
"""

from __future__ import annotations

import gc
import json
import sys
import time

import numpy as np

DIM = 512
QUERIES = 300
K = 10
CHUNK = 65_536  # rows generated at a time: large blocks are mmap'd, so freeing them returns the memory


LATENT = 32  # embeddings of real sounds vary along far fewer directions than they have dimensions


def clustered(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, queries): n database vectors and QUERIES fresh queries from the same distribution.

    A mixture of n/1000 overlapping Gaussian clusters in a 32-d latent space, mapped into 512-d by one fixed random
    linear map with a shared offset (so all vectors lean one way, as real CLAP embeddings do), plus a little
    isotropic noise, then normalised. Neighbourhoods run across cluster borders, so an IVF index has to probe
    several lists to find them: harder than tidy blobs, far easier than i.i.d. random vectors.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(8, n // 1000), LATENT)).astype(np.float32)
    mapping = rng.standard_normal((LATENT, DIM)).astype(np.float32) / np.sqrt(LATENT)
    offset = rng.standard_normal(DIM).astype(np.float32) * 0.6

    def draw(count: int) -> np.ndarray:
        latent = centres[rng.integers(0, len(centres), count)] + 0.8 * rng.standard_normal((count, LATENT))
        out = latent.astype(np.float32) @ mapping + offset
        out += rng.standard_normal((count, DIM)).astype(np.float32) * (0.3 / np.sqrt(DIM) * np.sqrt(LATENT))
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    vectors = np.empty((n, DIM), np.float32)
    for lo in range(0, n, CHUNK):
        vectors[lo : lo + CHUNK] = draw(min(CHUNK, n - lo))
    return vectors, draw(QUERIES)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by inner product, computed in blocks."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), k), np.int64)
    for lo in range(0, len(vectors), CHUNK):
        scores = queries @ vectors[lo : lo + CHUNK].T
        if scores.shape[1] > k:
            top = np.argpartition(-scores, k, axis=1)[:, :k]
        else:
            top = np.tile(np.arange(scores.shape[1]), (len(queries), 1))
        cand_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        cand_ids = np.concatenate([best_ids, top + lo], axis=1)
        order = np.argsort(-cand_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(cand_scores, order, 1)
        best_ids = np.take_along_axis(cand_ids, order, 1)
    return best_ids


def measure(n: int) -> dict[str, float | int | str]:
    """Build shira's index for n vectors and measure it."""
    from bench.machine import rss_bytes
    from core.config import IndexConfig
    from core.index import FaissIndex

    base_rss = rss_bytes()
    vectors, queries = clustered(n)
    truth = exact_top(vectors, queries, K)
    ids = np.arange(n, dtype=np.int64)
    start = time.perf_counter()
    index = FaissIndex.build(ids, vectors, DIM, IndexConfig())
    build_seconds = time.perf_counter() - start
    raw = vectors.nbytes
    del vectors
    gc.collect()
    index_rss = rss_bytes() - base_rss - queries.nbytes - truth.nbytes
    for q in queries[:20]:  # warm
        index.search(q, K)
    times, recalls = [], []
    for q, want in zip(queries, truth, strict=True):
        t = time.perf_counter()
        found = index.search(q, K)
        times.append(time.perf_counter() - t)
        recalls.append(len({i for i, _ in found} & set(want.tolist())) / K)
    return {
        "n": n,
        "kind": index.kind,
        "build_s": build_seconds,
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p95_ms": float(np.percentile(times, 95) * 1000),
        "recall10": float(np.mean(recalls)),
        "raw_bytes": raw,
        "index_rss_bytes": index_rss,
        "rss_ratio": index_rss / raw,
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]))))
