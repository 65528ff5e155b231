"""The ``act-eval`` command: one home for the project's subcommands.

Each subcommand lives in ``act_eval/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func``; heavy imports stay
inside the handlers so ``act-eval --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from act_eval import __version__

# subcommand module names, in the order ``--help`` lists them
COMMANDS = [
    "models",
    "head_maps",
    "tasks",
    "icl",
    "compare",
    "search",
    "inspect",
    "sinks",
    "submit",
    "leaderboard",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="act-eval",
        description="Attention Calibration Technique (ACT) for lm-evaluation-harness.",
    )
    parser.add_argument("--version", action="version", version=f"act-eval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"act_eval.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # user errors: one clear line, no traceback
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"act-eval {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
