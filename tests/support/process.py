"""`shira run` as a real process for end-to-end tests: start, watch its output, stop it with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 180.0


def write_config(
    path: Path,
    data_dir: Path,
    model_dir: Path,
    platform: str,
    settings: dict[str, object],
    sections: dict[str, dict[str, object]] | None = None,
) -> Path:
    """A TOML config that enables only one chat platform, with these settings; its token comes from the env.

    sections adds other tables, such as {"run": {"drain_seconds": 2}}.
    """
    lines = [f"data_dir = {json.dumps(data_dir.as_posix())}", 'log_level = "INFO"', "", "[model]"]
    lines += [f"id = {json.dumps(model_dir.as_posix())}", 'precision = "fp32"', "", f"[{platform}]", "enabled = true"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]  # JSON scalars are valid TOML
    for name, table in (sections or {}).items():
        lines += ["", f"[{name}]", *(f"{key} = {json.dumps(value)}" for key, value in table.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class RunningShira:
    """A running `shira run` and everything it has printed so far."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    returncode: int | None = None

    @property
    def output(self) -> str:
        """stdout and stderr, interleaved as read."""
        return "".join(self.lines)

    async def reaches(self, milestone: Awaitable[object], what: str, timeout: float = STARTUP_SECONDS) -> None:
        """Wait for milestone, failing with the process output if the process exits first or time runs out."""
        exited = asyncio.ensure_future(self.proc.wait())
        reached = asyncio.ensure_future(milestone)
        done, _ = await asyncio.wait({exited, reached}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if reached not in done:
            reached.cancel()
            raise AssertionError(f"shira run never {what}:\n{self.output}")
        reached.result()


async def _drain(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for line in stream:
        into.append(line.decode(errors="replace"))


@asynccontextmanager
async def shira_run(config: Path, env: dict[str, str]) -> AsyncIterator[RunningShira]:
    """Run `python -m bot run --config CONFIG` (the `shira` script's code) with env added to a clean environment."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SHIRA_")}
    full_env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)} | env
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "--config", str(config),
        cwd=ROOT, env=full_env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    running = RunningShira(proc)
    readers = [asyncio.create_task(_drain(s, running.lines)) for s in (proc.stdout, proc.stderr)]
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        running.returncode = await asyncio.wait_for(proc.wait(), 60)
        await asyncio.gather(*readers)


async def shira_command(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `python -m bot ARGS --config CONFIG` to its end; its exit code, stdout and stderr."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SHIRA_")}
    full_env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)} | (env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, "--config", str(config),
        cwd=ROOT, env=full_env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return int(proc.returncode or 0), out.decode(errors="replace"), err.decode(errors="replace")
