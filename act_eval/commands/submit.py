"""``act-eval submit RUN_DIR [--baseline RUN_DIR]``: verify a run and accept it onto the leaderboard."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "submit",
        help="verify an lm-eval run (with its manifest.json) and add it to the leaderboard",
        description=(
            "RUN_DIR holds manifest.json (write it with `act-eval leaderboard manifest RUN_DIR`), the lm-eval "
            "results file(s) it lists and their --log_samples files. Every check must pass; a refused "
            "submission leaves the leaderboard untouched. See leaderboard/README.md for the format."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the submission directory")
    parser.add_argument(
        "--baseline",
        metavar="RUN_DIR",
        type=Path,
        help="the baseline this ACT/ICL run is compared with: accepted together with it (or, if already on the board, checked against it)",
    )
    parser.add_argument(
        "--root", help="leaderboard directory (default: $ACT_EVAL_LEADERBOARD or the checkout's leaderboard/)"
    )
    parser.add_argument("--dry-run", action="store_true", help="run every check, write nothing")
    parser.set_defaults(func=_submit)


def _submit(args: argparse.Namespace) -> int:
    from act_eval.leaderboard import default_root
    from act_eval.leaderboard.store import Store

    root = default_root(args.root)
    accepted = Store(root).submit(args.run_dir, args.baseline, dry_run=args.dry_run)
    verb = "would accept" if args.dry_run else "accepted"
    for submission in accepted:
        print(f"{verb}: {submission.id} ({submission.manifest.arm_label}, {submission.manifest.suite})")
        for line in submission.report:
            print(f"  {line}")
    if not args.dry_run:
        print(f"rebuild the board: act-eval leaderboard build --root {root}")
    return 0
