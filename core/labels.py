"""Zero-shot labels: a built-in vocabulary plus each space's own, with cached embeddings."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

import numpy as np

from core.jobs import Jobs, Priority
from core.messages import Label
from core.store import Store

log = logging.getLogger(__name__)


def builtin_vocabulary(name: str) -> list[str]:
    """The labels of a built-in vocabulary ("audioset"), or none for "none"."""
    if name == "none":
        return []
    text = resources.files("core.vocabulary").joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


class Labeler:
    """Scores a vector against label prompts; label embeddings are cached in memory and in the store."""

    def __init__(
        self,
        store: Store,
        queue: Jobs,
        model_key: str,
        prompt: str,
        logit_scale: float,
        vocabulary: list[str],
    ) -> None:
        self.store = store
        self.queue = queue
        self.model_key = model_key
        self.prompt = prompt
        self.logit_scale = logit_scale
        self.vocabulary = vocabulary
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = asyncio.Lock()

    def _prompt(self, label: str) -> str:
        return self.prompt.format(label=label)

    async def vectors(self, labels: list[str], priority: Priority = Priority.INTERACTIVE) -> np.ndarray:
        """Embeddings of these labels' prompts, computing only the ones never seen with this model."""
        async with self._lock:
            missing = [label for label in dict.fromkeys(labels) if label not in self._vectors]
            if missing:
                prompts = {self._prompt(label): label for label in missing}
                cached = await self.store.cached_texts(self.model_key, list(prompts))
                for prompt, vector in cached.items():
                    self._vectors[prompts[prompt]] = vector
                todo = [p for p in prompts if p not in cached]
                if todo:
                    log.info("embedding %d label prompts", len(todo))
                    computed = await self.queue.embed_texts(todo, priority)
                    fresh = dict(zip(todo, computed, strict=True))
                    await self.store.cache_texts(self.model_key, fresh)
                    for prompt, vector in fresh.items():
                        self._vectors[prompts[prompt]] = vector
        if not labels:
            return np.zeros((0, 0), np.float32)
        return np.stack([self._vectors[label] for label in labels])

    async def warm(self) -> None:
        """Embed the built-in vocabulary in the background at bulk priority."""
        await self.vectors(self.vocabulary, Priority.BULK)

    async def classify(
        self, vector: np.ndarray, extra: list[str], top: int, priority: Priority = Priority.INTERACTIVE
    ) -> list[Label]:
        """The top labels for an audio vector, with softmax probabilities over the whole vocabulary."""
        labels = list(dict.fromkeys(self.vocabulary + extra))
        if not labels or top <= 0:
            return []
        matrix = await self.vectors(labels, priority)
        logits = self.logit_scale * (matrix @ vector.astype(np.float32))
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")[:top]
        return [Label(labels[i], float(probs[i])) for i in order]
