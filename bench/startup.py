"""Cold start: a fresh process opens the engine (store, saved index, full-size model, worker) on a library.

python -m bench.startup MODEL DATA_DIR prints "READY" as soon as Engine.open has yielded, then one JSON line with
the in-process timings (first text answer, first audio window: with the text tower cached, text comes before torch
is loaded) and the steady resident memory after the label vocabulary is embedded and a few queries ran.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import asyncio  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


async def main(model: str, data_dir: Path) -> None:
    import numpy as np

    from bench.indexing import bench_config
    from bench.interactive import LIBRARY
    from bench.machine import rss_bytes
    from core.engine import Engine
    from core.jobs import Priority
    from core.text_first import TextFirst

    imported = time.perf_counter() - STARTED  # what serving imports before the model (torch may come later)
    async with Engine.open(bench_config(data_dir, model)) as engine:
        ready = time.perf_counter() - STARTED
        print("READY", flush=True)
        await engine.searcher.search_text((LIBRARY,), "first query after start", 5)
        first_query = time.perf_counter() - STARTED
        queue = engine.encoder.queue
        assert queue is not None and engine.encoder.labeler is not None
        clip = (0.1 * np.sin(np.arange(5 * 48000) * 2 * np.pi * 440 / 48000)).astype(np.float32)
        await queue.embed_clips([clip], Priority.INTERACTIVE)
        first_audio = time.perf_counter() - STARTED
        text_first = isinstance(getattr(queue, "model", None), TextFirst)
        await engine.encoder.labeler.warm()
        for text in ("deep kick", "bright crash", "closed hat", "wet snare", "metal bell"):
            await engine.searcher.search_text((LIBRARY,), text, 5)
        steady = rss_bytes()
    print(
        json.dumps(
            {
                "imports_s": imported,
                "ready_s": ready,
                "first_query_s": first_query,
                "first_audio_s": first_audio,
                "text_first": text_first,  # text served from the cached ONNX tower while the model loaded
                "steady_rss_bytes": steady,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
