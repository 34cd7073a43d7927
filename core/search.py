"""Search and ranking: vector search across spaces, lexical fusion, best-matching windows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from core.audio import SAMPLE_RATE, decode_excerpt
from core.errors import UserError
from core.index import IndexSet
from core.messages import ExactMatch, Hit

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from core.config import SearchConfig
    from core.encoder import Encoder
    from core.fingerprint import Likeness, Match
    from core.library import Library
    from core.store import Store


def vector_candidates(indexes: IndexSet, spaces: Sequence[str], query: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The n best (id, cosine) across these spaces' indexes, best first."""
    hits: list[tuple[int, float]] = []
    for space in spaces:
        index = indexes.get(space)
        if index is not None:
            hits.extend(index.search(query, n))
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits[:n]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = 60) -> list[int]:
    """Fuse ranked id lists: score(id) = sum of 1 / (k + rank); ties keep first-list order."""
    scores: dict[int, float] = {}
    first_seen: dict[int, int] = {}
    for ranking in rankings:
        for rank, sample_id in enumerate(ranking, start=1):
            scores[sample_id] = scores.get(sample_id, 0.0) + 1.0 / (k + rank)
            first_seen.setdefault(sample_id, len(first_seen))
    return sorted(scores, key=lambda i: (-scores[i], first_seen[i]))


def best_window(query: np.ndarray, windows: list[tuple[float, float, np.ndarray]]) -> tuple[float, float]:
    """The (start, end) of the window most similar to the query."""
    if not windows:
        return 0.0, 0.0
    scores = [float(np.dot(vector, query)) for _, _, vector in windows]
    start, end, _ = windows[int(np.argmax(scores))]
    return start, end


EXACT_QUERY_SECONDS = 30.0  # the part of a query (or an addition) that is matched by fingerprints


def pool_size(k: int, page: int) -> int:
    """How many candidates each ranking contributes to one page of results."""
    return max((page + 1) * k + 1, 50)


class Searcher:
    """Reads a library: vector and hybrid search, with hits carrying their best window and platform handle."""

    def __init__(self, store: Store, library: Library, encoder: Encoder, config: SearchConfig) -> None:
        self.store = store
        self.library = library
        self.encoder = encoder
        self.config = config
        # One match at a time: its working memory grows with the hash collisions a long query finds, and
        # matches running side by side in threads would multiply it past what the byte budget admits.
        self._matching = asyncio.Lock()

    async def search_vector(
        self,
        spaces: tuple[str, ...],
        vector: np.ndarray,
        text: str,
        k: int,
        page: int,
        platform: str,
        lexical: list[int] | None = None,
        exclude: int | None = None,
    ) -> tuple[list[Hit], bool]:
        """One page of results for a query vector, fused with lexical matches when text is given.

        lexical: the store's lexical ranking for text, if the caller already fetched it (see search_text).
        exclude: a sample left out of the results ("more like this" one).
        """
        for space in spaces:
            await self.library.ensure_index(space)
        pool = pool_size(k, page) + (exclude is not None)
        candidates = vector_candidates(self.library.indexes, spaces, vector, pool)
        order = [i for i, _ in candidates]
        if text and self.config.hybrid:
            if lexical is None:
                lexical = await self.store.lexical(list(spaces), text, pool)
            order = reciprocal_rank_fusion([order, lexical], self.config.rrf_k)
        order = [i for i in order if i != exclude]
        chosen = order[page * k : (page + 1) * k]
        scores = dict(candidates)
        missing = [i for i in chosen if i not in scores]
        for sample_id, stored in (await self.store.sample_vectors(missing)).items():
            scores[sample_id] = float(np.dot(stored, vector))
        hits = await self.hits([(i, scores[i]) for i in chosen if i in scores], vector, platform)
        return hits, len(order) > (page + 1) * k

    async def search_text(
        self, spaces: tuple[str, ...], text: str, k: int, page: int = 0, platform: str = ""
    ) -> tuple[list[Hit], bool]:
        """One page of text-to-audio results; the lexical lookup runs while the model embeds the text."""
        with self.encoder.interactive():
            vector, lexical = await self.embed_and_match(spaces, text, k, page)
            return await self.search_vector(spaces, vector, text, k, page, platform, lexical)

    async def embed_and_match(
        self, spaces: tuple[str, ...], text: str, k: int, page: int
    ) -> tuple[np.ndarray, list[int] | None]:
        """The text's vector and, in hybrid mode, its lexical ranking, fetched concurrently."""
        if not self.config.hybrid:
            return await self.encoder.embed_text(text), None
        vector, lexical = await asyncio.gather(
            self.encoder.embed_text(text), self.store.lexical(list(spaces), text, pool_size(k, page))
        )
        return vector, lexical

    async def exact(
        self, spaces: tuple[str, ...], samples: np.ndarray, rate: int = SAMPLE_RATE, check_audio: bool = True
    ) -> ExactMatch | None:
        """The library sample this recording is, by landmark fingerprints (and, where they leave it open and
        check_audio is set, the sample's own audio), or None ("no exact match")."""
        from core.fingerprint import decide, query_fingerprint, to_verify

        for space in spaces:
            await self.library.ensure_prints(space)
        samples = samples[: int(EXACT_QUERY_SECONDS * rate)]
        async with self._matching:
            query = await asyncio.to_thread(query_fingerprint, samples, rate)
            matches = await asyncio.to_thread(self.library.prints.match, spaces, query)
        found = decide(matches, await self._likeness(to_verify(matches), samples, rate) if check_audio else None)
        if found is None:
            return None
        row = await self.store.get_sample(found.sample_id)
        if row is None or row.space not in spaces:
            return None
        return ExactMatch(found.sample_id, row.name, found.offset, found.confidence)

    async def _likeness(self, candidates: list[Match], samples: np.ndarray, rate: int) -> dict[int, Likeness]:
        """How alike each candidate's original file is to the query at its offset."""
        found = await asyncio.gather(*(self._likeness_of(m, samples, rate) for m in candidates))
        return {m.sample_id: r for m, r in zip(candidates, found, strict=True) if r is not None}

    async def _likeness_of(self, match: Match, samples: np.ndarray, rate: int) -> Likeness | None:
        """likeness() with the matched sample's original, or None when it can't be read."""
        from core.fingerprint import RATE, VERIFY_SECONDS, likeness

        row = await self.store.get_sample(match.sample_id)
        if row is None:
            return None
        start = max(0.0, match.offset - VERIFY_SECONDS)
        seconds = match.offset - start + len(samples) / rate + VERIFY_SECONDS
        path = self.library.files.path(row.sha256, row.ext)
        try:
            heard = await asyncio.to_thread(decode_excerpt, path, start, seconds, self.library.preview_limits, RATE)
        except UserError as exc:  # a missing or unreadable original: the landmarks alone decide
            log.warning("could not read #%d (%s) to verify a match: %s", row.id, row.name, exc)
            return None
        return await asyncio.to_thread(likeness, samples, rate, heard.samples, match.offset - start)

    async def near_duplicates(self, space: str, vector: np.ndarray, platform: str) -> list[Hit]:
        """Stored sounds whose vectors are nearly the same as this one."""
        await self.library.ensure_index(space)
        found = [
            (i, s)
            for i, s in vector_candidates(self.library.indexes, [space], vector, 3)
            if s >= self.config.near_duplicate
        ]
        return await self.hits(found, vector, platform)

    async def hits(self, found: list[tuple[int, float]], query: np.ndarray, platform: str) -> list[Hit]:
        """Hits for (id, score) pairs, skipping samples removed since the index was searched."""
        ids = [i for i, _ in found]
        rows = await self.store.get_samples(ids)
        windows = await self.store.segments(ids)
        file_ids = await self.store.file_ids(ids, platform)
        hits = []
        for sample_id, score in found:
            row = rows.get(sample_id)
            if row is None:
                continue
            start, end = best_window(query, windows.get(sample_id, []))
            hits.append(
                Hit(
                    sample_id=sample_id,
                    name=row.name,
                    score=score,
                    start=start,
                    end=end,
                    duration=row.duration,
                    space=row.space,
                    tags=row.tags,
                    description=row.description,
                    uploader=row.uploader,
                    platform_file_id=file_ids.get(sample_id),
                )
            )
        return hits
