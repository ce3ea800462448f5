"""The `marrow` command. Each module here registers one group of sub-commands.

Handlers import their heavy dependencies (torch, the web app) when they run, so
`marrow --help` and the user-management commands start fast.
"""
from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
from pathlib import Path

from app.errors import DomainError

# One module per group; each defines register(subparsers).
GROUPS = ("app.cli.imaging", "app.cli.modelling", "app.cli.reports", "app.cli.bench", "app.cli.server",
          "app.cli.records")


def print_json(result: dict, out: Path | None) -> None:
    """Print a benchmark's results, and write them to `out` too when given."""
    text = json.dumps(result, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)


def marrow_command(*args: str) -> list[str]:
    """This interpreter running `marrow ARGS` (needs no console script on PATH)."""
    return [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))", *args]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marrow", description="MarrowDiff: bone-marrow differential counts")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in GROUPS:
        importlib.import_module(name).register(sub)
    return parser


def _stop(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (`kill`, a timeout, a supervisor) unwinds like Ctrl-C: the servers a benchmark
    # started and the temporary folders are cleaned up. `marrow run`/`web`/`worker` install
    # their own handlers (uvicorn's, Celery's warm shutdown) over this one while they serve.
    previous = signal.signal(signal.SIGTERM, _stop) if threading.current_thread() is threading.main_thread() else None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError, RuntimeError, DomainError) as exc:
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))  # e.g. "users add"
        print(f"marrow {command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
