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
    "demo",
    "models",
    "head_maps",
    "tasks",
    "icl",
    "compare",
    "calibrate",
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
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
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
    except Exception as err:  # one clear line; --debug shows the traceback
        if args.debug:
            raise
        print(f"act-eval {args.command}: error: {error_line(err)}", file=sys.stderr)
        return 2


# errors whose message is written for the user; anything else also names its type
_USER_ERRORS = (ValueError, FileNotFoundError, KeyError, ModuleNotFoundError)


def error_line(err: Exception) -> str:
    """The error as one line, with a pointer to ``--debug`` for errors that are not the user's."""
    msg = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    msg = " ".join(msg.split()) or type(err).__name__
    if isinstance(err, _USER_ERRORS):
        return msg
    return f"{type(err).__name__}: {msg} (run with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
