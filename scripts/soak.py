"""Soak shira: SIGKILL/restart cycles and 1000-request load bursts, side by side, for N minutes.

    python scripts/soak.py --minutes 10 [--lanes 4] [--real-lanes 1] [--seed 1] [--model DIR] [--workdir DIR]

Kill lanes (tests/crash_harness.py) alternate bulk `shira index` runs and bursts of `/add` through `shira console`,
each SIGKILLed at a random moment and verified after every restart; a lane that finishes its sounds starts over on
a fresh library. Most lanes fork their runs from a server that has imported torch once (tests/forkserver.py);
--real-lanes of them start every run as a plain `python -m bot` process. Meanwhile one process keeps an engine
busy with bursts of 1000 concurrent requests (tests/test_load.py). At the end it prints: kills survived,
additions verified, requests served, throughput and peak RSS; it exits 1 if anything was lost or inconsistent.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.crash_harness import Lane, Starter, Subprocesses, make_sounds, write_config  # noqa: E402
from tests.forkserver import ForkServer  # noqa: E402

SOUNDS_PER_LIBRARY = 24
KILLS_PER_LIBRARY = 6


@dataclass
class Tally:
    """What the kill lanes did, summed under a lock."""

    kills: int = 0
    mid_kills: int = 0
    real_kills: int = 0  # kills of plain `python -m bot` processes
    restarts_verified: int = 0
    acknowledged_checks: int = 0  # acknowledged additions re-checked after kills (counted once per check)
    libraries_completed: int = 0
    additions_verified: int = 0  # sounds found exactly once in completed libraries
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def drive_lane(
    index: int, starter: Starter, root: Path, config: Path, seed: int, deadline: float, tally: Tally
) -> None:
    """Run libraries through kill cycles until the deadline."""
    rng = random.Random(seed)
    generation = 0
    while time.monotonic() < deadline:
        generation += 1
        kind = "console" if (index + generation) % 2 else "index"
        lane_root = root / f"lane{index}" / f"gen{generation}-{kind}"
        sounds = make_sounds(lane_root / "sounds", SOUNDS_PER_LIBRARY, rng.randrange(1 << 30))
        lane = Lane(starter, kind, lane_root, sounds, config, seed=rng.randrange(1 << 30))
        acknowledged = 0
        while lane.kills < KILLS_PER_LIBRARY and lane.cycles < 3 * KILLS_PER_LIBRARY and time.monotonic() < deadline:
            lane.run(kill=True)
            lane.verify()
            acknowledged += len(lane.acked)
        names = lane.finish()
        with tally.lock:
            tally.kills += lane.kills
            tally.mid_kills += lane.mid_kills
            tally.real_kills += lane.kills if isinstance(starter, Subprocesses) else 0
            tally.restarts_verified += lane.verified
            tally.acknowledged_checks += acknowledged
            if not lane.problems:
                tally.libraries_completed += 1
                tally.additions_verified += len(names)
            tally.problems += [f"{lane_root.relative_to(root)}: {p}" for p in lane.problems]


def load_loop(config_path: str, data_dir: str, seconds: float, seed: int) -> int:
    """Run in its own process: bursts of 1000 concurrent requests on one engine until time is up; print JSON."""
    from core.config import load_config, with_overrides
    from core.engine import Engine
    from core.messages import ReplyKind
    from tests.support.sounds import encode, tone
    from tests.test_load import PER_MINUTE, QUEUE, burst, check_burst, run_burst

    config = with_overrides(load_config(Path(config_path)), Path(data_dir))
    config = dataclasses.replace(
        config,
        queue=dataclasses.replace(config.queue, max_pending=QUEUE),
        limits=dataclasses.replace(config.limits, requests_per_minute=PER_MINUTE, library_requests_per_minute=0),
    )
    rng = random.Random(seed)
    summary: dict[str, object] = {"bursts": 0, "requests": 0, "served": 0, "busy": 0, "rate_limited": 0, "errors": []}

    async def run() -> None:
        sounds = [encode(tone(0.4, 200 + 50 * i), Path(data_dir) / f"t{i}.ogg").read_bytes() for i in range(8)]
        async with Engine.open(config, warm_labels=False) as engine:
            ids = [(await engine.ingest.add("load", s, f"seed{i}.ogg")).sample_id for i, s in enumerate(sounds[:4])]
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                requests = burst(f"b{summary['bursts']}", ids, sounds, rng)
                replies, _ = await run_burst(engine, requests)
                summary["bursts"] = int(summary["bursts"]) + 1  # type: ignore[call-overload]
                summary["requests"] = int(summary["requests"]) + len(requests)  # type: ignore[call-overload]
                try:
                    check_burst(requests, replies)
                except AssertionError as exc:
                    summary["errors"].append(str(exc)[:500])  # type: ignore[union-attr]
                for reply in replies:
                    if reply.kind != ReplyKind.BUSY:
                        summary["served"] = int(summary["served"]) + 1  # type: ignore[call-overload]
                    elif "too quickly" in reply.text:
                        summary["rate_limited"] = int(summary["rate_limited"]) + 1  # type: ignore[call-overload]
                    else:
                        summary["busy"] = int(summary["busy"]) + 1  # type: ignore[call-overload]
                if engine.encoder.depth != 0:
                    summary["errors"].append("the queue did not drain after a burst")  # type: ignore[union-attr]
            summary["seconds"] = time.monotonic() - started
        summary["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    asyncio.run(run())
    print(json.dumps(summary))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--lanes", type=int, default=4, help="kill lanes side by side")
    parser.add_argument("--real-lanes", type=int, default=1, help="lanes that start plain `python -m bot` processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", type=Path, help="CLAP checkpoint dir (default: build the tiny test model)")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary dir)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="shira-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        from tests.support.tiny_clap import build_tiny_clap

        model = build_tiny_clap(work / "tiny-clap")
    config = write_config(work / "shira.toml", model)
    print(f"soak: {args.minutes:g} min, {args.lanes} kill lanes ({args.real_lanes} real), seed {args.seed}, in {work}")

    server = ForkServer()
    real = Subprocesses()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    tally = Tally()
    (work / "load").mkdir(exist_ok=True)
    load_out, load_err = work / "load.json", work / "load.err"
    load_pid = server.spawn(
        load_out,
        load_err,
        call="scripts.soak:load_loop",
        args=[str(config), str(work / "load"), args.minutes * 60, args.seed],
    )
    starters: list[Starter] = [real if i < args.real_lanes else server for i in range(args.lanes)]
    threads = [
        threading.Thread(
            target=drive_lane,
            args=(i, starter, work / "lanes", config, args.seed * 1000 + i, deadline, tally),
            name=f"lane{i}",
        )
        for i, starter in enumerate(starters)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load_code = server.wait(load_pid, args.minutes * 60 + 600)
    server.close()
    elapsed = time.monotonic() - started

    load: dict[str, object] = {}
    if load_code == 0:
        load = json.loads(load_out.read_text(encoding="utf-8"))
    else:
        tally.problems.append(f"the load process exited {load_code}: {load_err.read_text(errors='replace')[-2000:]}")
    tally.problems += [f"load: {e}" for e in load.get("errors", [])]  # type: ignore[union-attr]
    served, requests = int(load.get("served", 0)), int(load.get("requests", 0))  # type: ignore[call-overload]
    seconds = float(load.get("seconds", 0.0)) or 1.0  # type: ignore[arg-type]
    peak = max(server.peak_rss_kb, real.peak_rss_kb, int(load.get("peak_rss_kb", 0)))  # type: ignore[call-overload]
    print(f"ran {elapsed / 60:.1f} min")
    print(
        f"kills survived:     {tally.kills} ({tally.mid_kills} mid-addition, {tally.real_kills} of plain processes),"
        f" each restart verified ({tally.restarts_verified} restarts)"
    )
    print(
        f"additions verified: {tally.additions_verified} in {tally.libraries_completed} completed libraries;"
        f" {tally.acknowledged_checks} acknowledged additions re-checked after kills"
    )
    print(
        f"requests served:    {served} of {requests} in {load.get('bursts', 0)} bursts of 1000"
        f" ({load.get('busy', 0)} busy, {load.get('rate_limited', 0)} rate-limited), {served / seconds:.0f} served/s"
    )
    print(f"peak RSS:           {peak / 1024:.0f} MB")
    if tally.problems:
        print(f"PROBLEMS ({len(tally.problems)}):")
        for problem in tally.problems[:50]:
            print(f"  {problem}")
        return 1
    print("no problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
