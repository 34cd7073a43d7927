"""The corpus: Debian's hydrogen-drumkits (754 real drum samples), installed with apt-get and listed.

Run alone to install and list: python -m bench.corpus [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from bot.importer import walk

log = logging.getLogger(__name__)

PACKAGE = "hydrogen-drumkits"
ROOT = Path("/usr/share/hydrogen/data/drumkits")
QUICK_FILES = 60


def install() -> None:
    """apt-get install the drum kits if they are not there yet (apt-get update once first)."""
    if ROOT.is_dir() and any(ROOT.iterdir()):
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(f"{ROOT} is missing and apt-get is not available: install {PACKAGE} by hand")
    log.info("installing %s with apt-get", PACKAGE)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", PACKAGE], check=True, env=env)


def all_files() -> list[Path]:
    """Every audio file of the kits, in a stable order."""
    return list(walk([ROOT]))


def unique(files: list[Path]) -> list[Path]:
    """Drop byte-identical copies, so neither side gets a free pass from de-duplication."""
    seen: set[str] = set()
    kept = []
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            kept.append(path)
    return kept


def subset(files: list[Path], n: int) -> list[Path]:
    """n files spread evenly over the sorted list, so every kit is represented."""
    if n >= len(files):
        return files
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def corpus(quick: bool) -> list[Path]:
    """Install if needed and return the benchmark's files: all unique ones, or a spread subset with --quick."""
    install()
    files = unique(all_files())
    return subset(files, QUICK_FILES) if quick else files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_FILES} files")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in corpus(args.quick):
        print(path)


if __name__ == "__main__":
    main()
