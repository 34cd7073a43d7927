"""Kill-and-restart lanes shared by tests/test_crash_safety.py and scripts/soak.py.

A lane is one data directory fed by one kind of run: a bulk `shira index`, or bursts of `/add` lines through
`shira console`. Each cycle starts a run, SIGKILLs it at a moment drawn from a seeded RNG, restarts shira to verify
the library, and carries on with what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tests.forkserver import ROOT
from tests.library_checks import engine_problems, searchable_problems, store_problems

SPACE = "lane"
ADDED = re.compile(r"^Added #(\d+) (\S+) \(")
ALREADY = re.compile(r"^Already in the library as #(\d+) \((.+)\)\.$")
ENGINE_LOG_ADDED = re.compile(r"core\.ingest: added #\d+")


class Starter(Protocol):
    """Starts, kills and waits for shira processes: the ForkServer, or Subprocesses."""

    peak_rss_kb: int

    def spawn(
        self,
        stdout: Path,
        stderr: Path,
        argv: list[str] | None = None,
        stdin: Path | None = None,
        call: str | None = None,
        args: list[Any] | None = None,
    ) -> int: ...
    def running(self, pid: int) -> bool: ...
    def wait(self, pid: int, timeout: float) -> int: ...
    def kill(self, pid: int) -> int: ...


class Subprocesses:
    """The ForkServer's interface over plain `python -m bot` processes: slower to start, nothing shared."""

    def __init__(self) -> None:
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.peak_rss_kb = 0
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

    def spawn(
        self,
        stdout: Path,
        stderr: Path,
        argv: list[str] | None = None,
        stdin: Path | None = None,
        call: str | None = None,
        args: list[Any] | None = None,
    ) -> int:
        """Start a process; returns its pid."""
        if call is not None:
            module, _, name = call.partition(":")
            code = f"import json, sys, {module} as m; sys.exit(m.{name}(*json.loads(sys.argv[1])))"
            command = [sys.executable, "-c", code, json.dumps(args or [])]
        else:
            command = [sys.executable, "-m", "bot", *(argv or [])]
        with open(stdin or os.devnull, "rb") as fin, open(stdout, "wb") as fout, open(stderr, "wb") as ferr:
            proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdin=fin, stdout=fout, stderr=ferr)
        self.procs[proc.pid] = proc
        return proc.pid

    def running(self, pid: int) -> bool:
        """True while the process runs."""
        return self.procs[pid].poll() is None

    def wait(self, pid: int, timeout: float) -> int:
        """Its exit code (negative: killed by that signal)."""
        proc = self.procs.pop(pid)
        code = proc.wait(timeout)
        self.peak_rss_kb = max(self.peak_rss_kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        return code

    def kill(self, pid: int) -> int:
        """SIGKILL it and return its exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return self.wait(pid, 30)

    def close(self) -> None:
        """Nothing to stop."""


def make_sounds(directory: Path, count: int, seed: int, seconds: float = 0.3) -> list[Path]:
    """Distinct short 16-bit WAV tones named s0000.wav, s0001.wav, ..."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    paths = []
    for i in range(count):
        freq = 150 + 40 * i + rng.uniform(0, 20)
        pcm = (0.4 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
        path = directory / f"s{i:04d}.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16000)
            out.writeframes(pcm.tobytes())
        paths.append(path)
    return paths


def write_config(path: Path, model_dir: Path) -> Path:
    """A TOML config for kill runs: the tiny model on one thread, no label vocabulary, no rate limit."""
    path.write_text(
        f"""
[model]
id = {json.dumps(str(model_dir))}
precision = "fp32"
batch_size = 4
threads = 1

[search]
vocabulary = "none"

[limits]
requests_per_minute = 0
""",
        encoding="utf-8",
    )
    return path


def token(name: str) -> str:
    """The searchable word of a sound's file name: s0007.wav -> s0007."""
    return name.split(".")[0]


def verify(config_path: str, data_dir: str, space: str, final: bool) -> int:
    """Run in a fresh process after a kill: restart shira on the data dir and print what is wrong as JSON."""
    from core.config import load_config, with_overrides
    from core.engine import Engine

    config = with_overrides(load_config(Path(config_path)), Path(data_dir))

    async def check() -> dict[str, object]:
        async with Engine.open(config, warm_labels=False) as engine:
            problems = await engine_problems(engine)
            ids, _ = await engine.store.vectors(space)
            rows = await engine.store.get_samples([int(i) for i in ids])
            names = {row.name: row.id for row in rows.values()}
            problems += await searchable_problems(engine, space, {row.id: token(row.name) for row in rows.values()})
            problems += store_problems(Path(data_dir), allow_orphan_files=not final)
            if not await engine.store.integrity_ok():
                problems.append("integrity_check failed")
        return {"problems": problems, "names": names}

    print(json.dumps(asyncio.run(check())))
    return 0


@dataclass
class Lane:
    """One data dir, one kind of run, one seeded RNG."""

    server: Starter
    kind: str  # "index" or "console"
    root: Path
    sounds: list[Path]
    config: Path
    seed: int
    kills: int = 0
    mid_kills: int = 0  # kills that landed after the run had stored at least one sound
    cycles: int = 0
    acked: dict[str, int] = field(default_factory=dict)  # file name -> sample id the run printed
    problems: list[str] = field(default_factory=list)
    verified: int = 0
    stored: int = 0  # sounds in the library at the last check

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.data = self.root / "data"
        self.root.mkdir(parents=True, exist_ok=True)

    def _argv(self) -> tuple[list[str], Path | None]:
        base = ["--config", str(self.config), "--data-dir", str(self.data)]
        if self.kind == "index":
            return base + ["-v", "index", "--json", "--space", SPACE, str(self.sounds[0].parent)], None
        todo = [p for p in self.sounds if p.name not in self.acked]
        lines = "".join(f"/add {shlex.quote(str(p))} added by lane {self.seed}\n" for p in todo)
        stdin = self.root / f"stdin-{self.cycles}.txt"
        stdin.write_text(lines, encoding="utf-8")
        return base + ["console", "--space", SPACE], stdin

    def _progressed(self, out: Path, err: Path) -> bool:
        if self.kind == "console":
            text = out.read_text(encoding="utf-8", errors="replace") if out.exists() else ""
            return "Added #" in text or "Already in the library" in text
        text = err.read_text(encoding="utf-8", errors="replace") if err.exists() else ""
        return ENGINE_LOG_ADDED.search(text) is not None

    def run(self, kill: bool) -> int:
        """One run of shira; with kill=True it is SIGKILLed at a random moment. Returns its exit code."""
        self.cycles += 1
        argv, stdin = self._argv()
        out, err = self.root / f"out-{self.cycles}.txt", self.root / f"err-{self.cycles}.txt"
        pid = self.server.spawn(out, err, argv=argv, stdin=stdin)
        if not kill:
            code = self.server.wait(pid, 300)
        else:
            if self.rng.random() < 0.2:
                time.sleep(self.rng.uniform(0.0, 1.5))  # anywhere, start-up and migrations included
            else:
                deadline = time.monotonic() + 60
                while not self._progressed(out, err) and self.server.running(pid) and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(self.rng.uniform(0.0, 0.6))  # somewhere in the middle of the additions
            code = self.server.kill(pid)
            if code == -9:
                self.kills += 1
                self.mid_kills += self._progressed(out, err)
        self._collect_acks(out)
        if code not in (0, -9):
            self.problems.append(f"run {self.cycles} exited with {code}: {err.read_text(errors='replace')[-2000:]}")
        return code

    def _collect_acks(self, out: Path) -> None:
        if self.kind != "console" or not out.exists():
            return
        for line in out.read_text(encoding="utf-8", errors="replace").splitlines():
            match = ADDED.match(line) or ALREADY.match(line)
            if match is None:
                continue
            sample_id, name = int(match.group(1)), match.group(2)
            if self.acked.setdefault(name, sample_id) != sample_id:
                self.problems.append(f"{name} was acknowledged as #{self.acked[name]} and later as #{sample_id}")

    def verify(self, final: bool = False) -> dict[str, int]:
        """Restart shira on the data dir in a fresh process and check it; returns name -> sample id."""
        out, err = self.root / f"verify-{self.cycles}.json", self.root / f"verify-{self.cycles}.err"
        pid = self.server.spawn(
            out, err, call="tests.crash_harness:verify", args=[str(self.config), str(self.data), SPACE, final]
        )
        code = self.server.wait(pid, 300)
        if code != 0:
            detail = err.read_text(errors="replace")[-2000:]
            self.problems.append(f"verify after run {self.cycles} exited {code}: {detail}")
            return {}
        report = json.loads(out.read_text(encoding="utf-8"))
        names: dict[str, int] = report["names"]
        self.problems += [f"after run {self.cycles}: {p}" for p in report["problems"]]
        for name, sample_id in self.acked.items():
            if names.get(name) != sample_id:
                self.problems.append(f"after run {self.cycles}: acknowledged {name} #{sample_id} is not stored as such")
        self.verified += 1
        self.stored = len(names)
        return names

    def kill_cycles(self, kills: int, max_cycles: int) -> None:
        """Kill and verify until this lane has `kills` kills (or ran out of cycles)."""
        while self.kills < kills and self.cycles < max_cycles:
            self.run(kill=True)
            self.verify()

    def finish(self) -> dict[str, int]:
        """Re-run without a kill: the rest must complete, and the library hold each sound exactly once."""
        code = self.run(kill=False)
        if code != 0:
            return {}
        out = self.root / f"out-{self.cycles}.txt"
        if self.kind == "index":
            report = json.loads(out.read_text(encoding="utf-8").strip().splitlines()[-1])
            if report["failed"] or report["added"] + report["duplicates"] != len(self.sounds):
                self.problems.append(f"the re-run did not complete the rest: {report}")
        elif set(self.acked) != {p.name for p in self.sounds}:
            self.problems.append(f"never acknowledged: {sorted({p.name for p in self.sounds} - set(self.acked))}")
        names = self.verify(final=True)
        if sorted(names) != sorted(p.name for p in self.sounds):
            self.problems.append(f"library holds {len(names)} sounds {sorted(names)[:5]}..., not {len(self.sounds)}")
        return names
