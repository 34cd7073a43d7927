"""The `shira` command line."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.registry import load_config
from bot.logs import setup_logging
from bot.malloc import return_large_buffers
from core.config import Config, ConfigError, with_overrides
from core.errors import ModelLoadError, UserError
from core.messages import Door, Hit, Reply, Request


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="shira", description="Search sound by meaning (CLAP + FAISS + SQLite).")
    add_global_options(parser, default=None)
    # The same options are accepted after the command too: `shira run --config X` works like `shira --config X run`.
    shared = argparse.ArgumentParser(add_help=False)
    add_global_options(shared, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, json_flag: bool = True, space: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[shared])
        if space:
            p.add_argument("--space", help="library name (default: the console library)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON object")
        return p

    p = command("index", "bulk-import files and folders into a library (resumable)")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--description", default="", help="description stored with every file")
    p = command("search", "find sounds by text")
    p.add_argument("text", nargs="+")
    p.add_argument("-k", type=int, help="number of results")
    p = command("similar", "find sounds like a file")
    p.add_argument("file", type=Path)
    p.add_argument("-k", type=int, help="number of results")
    p = command("identify", '"which sample is this?": exact match, labels and similar sounds, one line per file')
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("-k", type=int, help="number of similar sounds")
    p = command("timeline", "which sounds occur when in a long recording or a video")
    p.add_argument("file", type=Path)
    p.add_argument("--labels", default="", help='comma-separated labels, e.g. "dog, siren" (default: the library\'s)')
    p.add_argument("--srt", type=Path, help="write SubRip subtitles here")
    p.add_argument("--vtt", type=Path, help="write WebVTT subtitles here")
    p.add_argument("--png", type=Path, help="write the chart here")
    p = command("labels", '"what sound is this?": zero-shot labels for a file')
    p.add_argument("file", type=Path)
    p.add_argument("-k", type=int, help="number of labels")
    command("stats", "library statistics")
    p = command("remove", "remove a sample by id")
    p.add_argument("id", type=int)
    command("console", "talk to the bot in this terminal", json_flag=False)
    command("run", "start the chat adapters the config enables", json_flag=False, space=False)
    p = command("migrate", "copy this library's SQLite store into PostgreSQL and verify the copy", space=False)
    p.add_argument("--to", required=True, metavar="postgresql://…", help="the target database (empty, or --replace)")
    p.add_argument("--replace", action="store_true", help="empty a target that already holds rows first")
    command("worker", "serve model jobs from Redis Streams ([cluster] redis_url)", json_flag=False, space=False)
    return parser


def add_global_options(parser: argparse.ArgumentParser, default: object) -> None:
    """--config, --data-dir, --model and --verbose."""
    parser.add_argument("--config", type=Path, default=default, help="TOML config file (see config.example.toml)")
    parser.add_argument("--data-dir", type=Path, default=default, help="where the library lives (overrides the config)")
    parser.add_argument("--model", default=default, help="CLAP hub id or local directory (overrides the config)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=False if default is None else default, help="debug logging"
    )


def hit_json(hit: Hit) -> dict[str, Any]:
    """A Hit as a JSON object."""
    return {
        "id": hit.sample_id,
        "name": hit.name,
        "score": round(hit.score, 6),
        "start": round(hit.start, 3),
        "end": round(hit.end, 3),
        "duration": round(hit.duration, 3),
        "space": hit.space,
        "tags": list(hit.tags),
        "description": hit.description,
    }


def identify_json(path: Path, reply: Reply) -> dict[str, Any]:
    """One line of `shira identify --json`: the exact match (or null), labels and similar sounds, or an error."""
    if reply.is_error:
        return {"file": str(path), "error": reply.text}
    exact = reply.exact
    return {
        "file": str(path),
        "exact": None
        if exact is None
        else {
            "id": exact.sample_id,
            "name": exact.name,
            "offset": round(exact.offset, 3),
            "confidence": round(exact.confidence, 4),
        },
        "labels": [{"label": lb.label, "score": round(lb.score, 6)} for lb in reply.labels],
        "results": [
            {
                "id": h.sample_id,
                "name": h.name,
                "score": round(h.score, 6),
                "start": round(h.start, 3),
                "end": round(h.end, 3),
            }
            for h in reply.hits
        ],
    }


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    """Print JSON or text."""
    print(json.dumps(payload, ensure_ascii=False) if getattr(args, "json", False) else text)


def emit_hits(args: argparse.Namespace, hits: tuple[Hit, ...]) -> None:
    """Print results as JSON or numbered lines."""
    from core.replies import hit_line

    text = "\n".join(hit_line(i + 1, h) for i, h in enumerate(hits)) or "No sounds found."
    emit(args, {"results": [hit_json(h) for h in hits]}, text)


MODEL_FREE = frozenset({"stats", "remove"})  # never load the model (nor import torch)


async def _run_command(args: argparse.Namespace, config: Config) -> int:
    from core.engine import Engine
    from core.files import local_ref
    from core.messages import Command

    space = args.space or config.console.space

    def request(command: Command, **fields: Any) -> Request:
        return Request("cli", space, "cli", command, is_admin=True, **fields)

    def check(reply: Reply) -> Reply:
        if reply.is_error:
            raise UserError(reply.text)
        return reply

    needs_model = args.command not in MODEL_FREE
    async with Engine.open(config, model=needs_model, warm_labels=args.command == "console") as engine:
        if args.command == "index":
            from bot.importer import import_paths

            report = await import_paths(engine, args.paths, space, args.description, progress=not args.json)
            emit(args, report.as_json(), report.summary())
        elif args.command == "search":
            reply = check(await engine.handle(request(Command.SEARCH, text=" ".join(args.text), k=args.k)))
            emit_hits(args, reply.hits)
        elif args.command == "similar":
            reply = check(await engine.handle(request(Command.SIMILAR, audio=(local_ref(args.file),), k=args.k)))
            emit_hits(args, reply.hits)
        elif args.command == "identify":
            failed = 0
            for path in args.files:  # the model loads once for all of them
                reply = await engine.handle(request(Command.IDENTIFY, audio=(local_ref(path),), k=args.k))
                emit(args, identify_json(path, reply), f"{path}: {reply.text}")
                failed += reply.is_error
            return 1 if failed else 0
        elif args.command == "timeline":
            await _timeline(args, engine, request(Command.TIMELINE, audio=(local_ref(args.file),), text=args.labels))
        elif args.command == "labels":
            reply = check(await engine.handle(request(Command.IDENTIFY, audio=(local_ref(args.file),), k=args.k)))
            labels = reply.labels[: args.k or config.search.labels]
            found = [{"label": lb.label, "score": round(lb.score, 6)} for lb in labels]
            emit(args, {"labels": found}, "\n".join(f"{lb.score:6.1%}  {lb.label}" for lb in labels))
        elif args.command == "stats":
            stats = check(await engine.handle(request(Command.STATS))).stats
            spaces = check(await engine.handle(request(Command.SPACES))).spaces
            assert stats is not None
            emit(
                args,
                {**dataclasses.asdict(stats), "spaces": list(spaces)},
                f"{space}: {stats.samples} sounds, {stats.seconds / 60:.1f} minutes",
            )
        elif args.command == "remove":
            reply = check(await engine.handle(request(Command.REMOVE, text=str(args.id))))
            emit(args, {"removed": args.id, "name": reply.title}, reply.text)
        elif args.command == "console":
            from adapters.console import ConsoleAdapter

            console = ConsoleAdapter(engine, dataclasses.replace(config.console, space=space))
            await console.start()
            await console.wait()
    return 0


async def _migrate(args: argparse.Namespace, config: Config) -> int:
    from core.migrate import MigrateError, migrate

    say = (lambda line: None) if args.json else print
    try:
        checks = await migrate(Path(config.data_dir) / "shira.db", args.to, args.replace, say)
    except MigrateError as exc:
        print(f"shira: {exc}", file=sys.stderr)
        return 1
    tables = {c.table: {"rows": c.rows, "sha256": c.source_sha256} for c in checks}
    if args.json:
        emit(args, {"verified": True, "tables": tables}, "")
    print(f"set [cluster] postgres_dsn to use it (files stay in {Path(config.data_dir) / 'files'})", file=sys.stderr)
    return 0


async def _worker(config: Config) -> int:
    """Serve the cluster's model jobs until SIGTERM or SIGINT, then drain."""
    import signal

    from core.worker import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop)
    return 0


async def _timeline(args: argparse.Namespace, door: Door, ask: Request) -> None:
    """Run a timeline with a progress bar, write the files asked for, print the summary or the JSON."""
    import dataclasses as dc

    from core.cues import to_json

    bar = _seconds_bar(not args.json)

    async def progress(seconds: float) -> None:
        if bar is not None:
            bar.update(seconds - bar.n)

    try:
        reply = await door.handle(dc.replace(ask, progress=progress))
    finally:
        if bar is not None:
            bar.close()
    timeline = reply.timeline
    if reply.is_error or timeline is None:
        raise UserError(reply.text)
    for path, content in ((args.srt, timeline.srt), (args.vtt, timeline.vtt)):
        if path is not None:
            path.write_text(content, encoding="utf-8")
    if args.png is not None:
        args.png.write_bytes(timeline.png)
    emit(args, to_json(timeline.events, timeline.duration), reply.text)


def _seconds_bar(show: bool) -> Any:
    """A progress bar in seconds of audio on stderr, when it is a terminal."""
    if not show or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit="s", desc="listening", file=sys.stderr, bar_format="{desc}: {n:.0f} s of audio [{elapsed}]")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `shira` script."""
    return_large_buffers()
    args = build_parser().parse_args(argv)
    try:
        config = with_overrides(load_config(args.config), args.data_dir, args.model)
    except ConfigError as exc:
        print(f"shira: {exc}", file=sys.stderr)
        return 2
    setup_logging(config, verbose=args.verbose, quiet=args.command not in ("run", "worker"))
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(args, config))
        if args.command == "run":
            from bot.app import run_adapters

            return asyncio.run(run_adapters(config))
        if args.command == "worker":
            return asyncio.run(_worker(config))
        return asyncio.run(_run_command(args, config))
    except KeyboardInterrupt:
        return 130
    except ModelLoadError as exc:
        print(f"shira: {exc}", file=sys.stderr)
        return 3
    except ConfigError as exc:  # found only once running, such as a health port already taken
        print(f"shira: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"shira: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
