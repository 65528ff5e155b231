"""One module per ``act-eval`` subcommand; shared argument groups live here."""

from __future__ import annotations

import argparse


def add_model_run_options(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that load a model and read task documents (icl run, inspect, sinks)."""
    parser.add_argument("--include_path", action="append", default=[], help="extra task directory (repeatable)")
    parser.add_argument(
        "--no-builtin-tasks", dest="builtin_tasks", action="store_false",
        help="index only act-eval's and --include_path tasks (skips lm-eval's ~6 s task indexing)",
    )
    parser.add_argument("--device", help="e.g. cuda:0 or cpu (default: cuda if available)")
