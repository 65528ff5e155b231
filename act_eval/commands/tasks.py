"""``act-eval tasks path``: where the task YAMLs are, for ``lm_eval --include_path``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("tasks", help="the task suite's YAMLs")
    action = parser.add_subparsers(dest="action", required=True)
    action.add_parser("path", help="print the directory to pass to --include_path").set_defaults(func=_path)


def _path(args: argparse.Namespace) -> int:
    from act_eval.paths import resource_dir

    print(resource_dir("tasks"))
    return 0
