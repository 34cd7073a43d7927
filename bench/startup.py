"""Cold start: a fresh process opens the engine (store, saved index, full-size model, worker) on a library.

python -m bench.startup MODEL DATA_DIR prints "READY" as soon as Engine.open has yielded, then one JSON line with
the in-process timings and the steady resident memory after the label vocabulary is embedded and a few queries ran.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import asyncio  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


async def main(model: str, data_dir: Path) -> None:
    from core.config import ModelConfig
    from core.speedups import use_openmp_wait

    use_openmp_wait(ModelConfig().openmp_wait)  # as Embedder.load would, before torch is imported here
    import torch  # noqa: F401  (timed here only to report it; Engine.open would import them anyway)
    from transformers import ClapModel, ClapProcessor  # noqa: F401

    from bench.indexing import bench_config
    from bench.interactive import LIBRARY
    from bench.machine import rss_bytes
    from core.engine import Engine

    imported = time.perf_counter() - STARTED
    async with Engine.open(bench_config(data_dir, model)) as engine:
        ready = time.perf_counter() - STARTED
        print("READY", flush=True)
        await engine.searcher.search_text((LIBRARY,), "first query after start", 5)
        first_query = time.perf_counter() - STARTED
        assert engine.encoder.labeler is not None
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
                "steady_rss_bytes": steady,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
