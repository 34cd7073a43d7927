"""Additions: dedupe by hash before any model work, decode, embed, tag, then hand the sample to the library."""

from __future__ import annotations

import asyncio
import logging

from core import crashpoints
from core.audio import sha256
from core.budget import Lease
from core.config import Config
from core.encoder import Encoder
from core.errors import QuotaExceeded
from core.files import display_name, safe_ext
from core.fingerprint import RATE as PRINT_RATE
from core.fingerprint import fingerprint, to_blob
from core.jobs import Priority
from core.library import Library
from core.messages import Added
from core.search import Searcher
from core.store import NewSample, Store

log = logging.getLogger(__name__)

PRINT_WORKING_BYTES = 48 * 1024 * 1024  # what fingerprinting one block of a sound takes (measured: 10 min of noise)


def print_bytes(seconds: float) -> int:
    """What fingerprinting a sound this long holds: the sound at 8 kHz and one block's working."""
    return 4 * PRINT_RATE * int(seconds + 1) + PRINT_WORKING_BYTES


class Ingest:
    """Prepares an addition without holding any lock; only the final commit goes through the library."""

    def __init__(self, config: Config, store: Store, library: Library, encoder: Encoder, searcher: Searcher) -> None:
        self.config = config
        self.store = store
        self.library = library
        self.encoder = encoder
        self.searcher = searcher

    async def check_quota(self, space: str) -> None:
        """Refuse an addition to a full library (before anything is downloaded)."""
        quota = self.config.limits.space_quota
        if quota and await self.store.count(space) >= quota:
            raise QuotaExceeded(f"This library is full ({quota} sounds). Remove some before adding more.")

    async def add(
        self,
        space: str,
        data: bytes,
        filename: str,
        uploader: str = "",
        description: str = "",
        source: str = "",
        priority: Priority = Priority.ADD,
        platform: str = "",
        platform_file_id: str | None = None,
        lease: Lease | None = None,
    ) -> Added:
        """Add one file to a space: dedupe by hash, decode, embed, tag, store, index.

        A lease on the memory budget shrinks to the file alone once the sound is embedded.
        """
        name = display_name(filename)
        digest = sha256(data)
        if (existing := await self._existing(space, digest, name)) is not None:
            return existing
        await self.check_quota(space)
        embedded = await self.encoder.embed_addition(data, priority, wait=priority == Priority.BULK)
        if lease is not None:  # now the file, the sound at 8 kHz and one block of the fingerprint's working
            lease.resize(len(data) + print_bytes(embedded.duration))
        # Fingerprints work at 8 kHz: decoded at that rate, a long addition takes a sixth of the memory it would.
        heard = await self.encoder.decode(data, self.encoder.add_limits, PRINT_RATE)
        fp = await asyncio.to_thread(fingerprint, heard.samples, heard.rate)
        crashpoints.reached("embedded")
        near = await self.searcher.near_duplicates(space, embedded.vector, platform)
        # A bulk import doesn't decode stored originals to check open matches: kits hold many takes of one drum,
        # and the decodes made `make bench`'s import of hydrogen-drumkits take 150 s instead of 121 (2026-12-04).
        same_as = await self.searcher.exact((space,), heard.samples, heard.rate, check_audio=priority != Priority.BULK)
        del heard
        if lease is not None:
            lease.resize(len(data))
        search = self.config.search
        labels = await self.encoder.labels(
            embedded.vector, await self.store.space_labels(space), search.autotags, priority
        )
        tags = tuple((lb.label, lb.score, True) for lb in labels if lb.score >= search.autotag_min_score)
        sample = NewSample(
            space=space,
            sha256=digest,
            ext=safe_ext(filename),
            name=name,
            uploader=uploader,
            description=description.strip()[:1000],
            duration=embedded.duration,
            source=source,
            vector=embedded.vector,
            segments=tuple((s, e, v) for (s, e), v in zip(embedded.spans, embedded.windows, strict=True)),
            tags=tags,
            platform=platform,
            platform_file_id=platform_file_id,
            fingerprint=to_blob(fp),
        )
        # Shielded: a deadline passing now doesn't cut the commit short (the sample is then simply in the library).
        change = await asyncio.shield(self.library.add(sample, data, fp))
        crashpoints.reached("committed")
        if change.duplicate:  # a concurrent addition of the same file won
            return Added(change.sample_id, name, embedded.duration, duplicate=True)
        log.info("added #%d %r to %s (%.1f s)", change.sample_id, name, space, embedded.duration)
        tag_names = tuple(t for t, _, _ in tags)
        return Added(change.sample_id, name, embedded.duration, tag_names, near_duplicates=tuple(near), same_as=same_as)

    async def _existing(self, space: str, digest: str, name: str) -> Added | None:
        sample_id = await self.store.find_by_sha(space, digest)
        if sample_id is None:
            return None
        row = await self.store.get_sample(sample_id)
        return Added(sample_id, row.name if row else name, row.duration if row else 0.0, duplicate=True)
