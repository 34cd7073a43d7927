"""scripts/cluster.sh: up starts PostgreSQL, Redis and workers on loopback; its config runs `shira`; down stops all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.process import ROOT
from tests.support.sounds import encode, noise, tone

SCRIPT = ROOT / "scripts" / "cluster.sh"
SERVERS = bool(shutil.which("redis-server")) and any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


def _run(*argv: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(not SERVERS and not os.environ.get("SHIRA_REQUIRE_SERVERS"), reason="no redis-server/PostgreSQL")
def test_up_gives_a_config_that_every_command_uses_and_down_stops_everything(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    state = tmp_path / "cluster"
    shira = str(Path(sys.executable).with_name("shira"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIRA_")}
    env |= {"SHIRA_CLUSTER_DIR": str(state), "SHIRA": shira, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    up = _run("bash", str(SCRIPT), "up", "--workers", "1", "--model", str(tiny_model_dir), env=env)
    try:
        assert up.returncode == 0, up.stderr
        config = up.stdout.strip().splitlines()[-1]
        assert Path(config).is_file() and "[cluster]" in Path(config).read_text()
        sounds = tmp_path / "sounds"
        sounds.mkdir()
        encode(tone(1.0, 880.0), sounds / "tone.wav")
        encode(noise(1.0, seed=4), sounds / "noise.ogg", "ogg")
        index = _run(shira, "--config", config, "index", str(sounds), "--space", "demo", "--json", env=env)
        assert index.returncode == 0, index.stderr
        stats = _run(shira, "--config", config, "stats", "--space", "demo", "--json", env=env)
        assert json.loads(stats.stdout)["samples"] == 2, stats.stderr
        search = _run(shira, "--config", config, "search", "a tone", "--space", "demo", "--json", env=env)
        assert search.returncode == 0, search.stderr
        assert {r["name"] for r in json.loads(search.stdout)["results"]} == {"tone.wav", "noise.ogg"}
        log = (state / "worker-1.log").read_text()
        assert "serving" in log and "Traceback" not in log
        pids = [int(p.read_text()) for p in state.glob("*.pid")]
        assert len(pids) == 2  # redis and the worker; PostgreSQL is kept by pg_ctl
    finally:
        down = _run("bash", str(SCRIPT), "down", env=env)
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
