"""Run every benchmark in one go and write bench/RESULTS.md and bench/results.png.

make bench                       # everything (754-file corpus, index up to 1M vectors)
make bench ARGS=--quick          # 60 files, index up to 100k: a few minutes
make bench ARGS="--model DIR"    # measure a real checkpoint (a hub id or a local directory)
make bench ARGS=--emulate-avx2   # as on a CPU without AVX-512 or AMX: oneDNN, ATen and fbgemm capped at AVX2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import corpus, flops, machine, report
from bench.model import resolve
from bench.sections import keep_sections
from core.config import ModelConfig
from core.speedups import use_openmp_wait

log = logging.getLogger("bench")

HERE = Path(__file__).parent
OUT = HERE / "out"


# What an AVX2-only CPU allows, for --emulate-avx2: oneDNN's kernels, ATen's vectorised kernels and fbgemm's (int8).
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}


def run_scale(n: int) -> dict[str, object]:
    """One index size in a fresh process, so its memory reading is its own."""
    log.info("index scale: %d vectors", n)
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", str(n)], capture_output=True, text=True, check=True, cwd=HERE.parent
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_startup(model: str, data_dir: Path) -> dict[str, object]:
    """Cold start in a fresh process: wall time from spawn to READY, plus the child's own figures."""
    log.info("cold start")
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.startup", model, str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
    )
    assert child.stdout is not None
    ready = None
    lines = []
    for line in child.stdout:
        if line.strip() == "READY" and ready is None:
            ready = time.perf_counter() - start
        lines.append(line)
    if child.wait() != 0:
        raise RuntimeError("bench.startup failed")
    figures = json.loads(lines[-1])
    figures["spawn_to_ready_s"] = ready
    return figures


def model_dim(model: str) -> int:
    """The checkpoint's embedding size, from its config alone."""
    from transformers import ClapConfig

    return int(ClapConfig.from_pretrained(model).projection_dim)


async def interactive_and_bulk(args: argparse.Namespace, model: str, files: list[Path], work: Path) -> dict:
    from bench.indexing import bulk_indexing
    from bench.interactive import interactive

    bulk = await bulk_indexing(model, files, work, rounds=3 if args.quick else 6)
    n_text, n_voice = (40, 8) if args.quick else (200, 30)
    inter = await interactive(model, model_dim(model), files, work, n_text, n_voice)
    return {"bulk": bulk, "interactive": inter}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="60 files and index sizes up to 100k")
    parser.add_argument("--model", help="hub id or directory of a CLAP checkpoint (default: random full-size model)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="where to write the results table")
    parser.add_argument("--keep", action="store_true", help="keep the scratch data directory")
    parser.add_argument(
        "--emulate-avx2", action="store_true", help="cap oneDNN, ATen and fbgemm at AVX2, as on a CPU without AVX-512"
    )
    args = parser.parse_args()
    if args.emulate_avx2 and any(os.environ.get(k) != v for k, v in AVX2_ONLY.items()):
        os.environ.update(AVX2_ONLY)  # read once when torch loads: start again with them set
        os.execv(sys.executable, [sys.executable, "-m", "bench.run", *sys.argv[1:]])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("core").setLevel(logging.WARNING)
    use_openmp_wait(ModelConfig().openmp_wait)  # as shira does, before anything here imports torch
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    started = time.time()
    others = machine.OtherLoad()
    load_before = machine.load_average()
    facts = machine.describe()
    model, model_label = resolve(args.model)
    files = corpus.corpus(args.quick)
    log.info("corpus: %d files; model: %s", len(files), model_label)
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shira-bench-", dir=OUT))
    try:
        from bench.variants import clips_from, measure

        # On a thread that ends with it: a thread that ran torch keeps an OpenMP team that would slow the engine's
        # (libgomp cuts every spin-wait short while it manages more threads than cores).
        with ThreadPoolExecutor(1) as pool:
            variants = pool.submit(measure, model, files, 4 if args.quick else 8, 10 if args.quick else 30).result()
            bound = pool.submit(flops.measure, model, clips_from(files, 1)[0]).result()
        results = asyncio.run(interactive_and_bulk(args, model, files, work))
        startup = run_startup(model, work / "library")
        sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
        scale = [run_scale(n) for n in sizes]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_after = machine.load_average()
    other_cores = others.cores()
    command = "make bench" + (" ARGS='" + " ".join(sys.argv[1:]) + "'" if sys.argv[1:] else "")
    run = report.Run(
        command=command,
        started=started,
        seconds=time.time() - started,
        quick=args.quick,
        model_label=model_label,
        machine=facts,
        load_before=load_before,
        load_after=load_after,
        other_cores=other_cores,
        files=len(files),
        variants=variants,
        bound=bound,
        bulk=results["bulk"],
        interactive=results["interactive"],
        startup=startup,
        scale=scale,
    )
    png = args.out.with_name("results.png")
    report.plot(run, png)
    old = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(keep_sections(old, report.markdown(run, png.name)))  # bench.memory, bench.fingerprint...
    (OUT / "results.json").write_text(json.dumps(report.as_json(run), indent=2, default=str))
    print(args.out.read_text())
    log.info("wrote %s and %s", args.out, png)


if __name__ == "__main__":
    main()
