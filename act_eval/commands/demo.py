"""``act-eval demo``: the README's main job (baseline and ACT on the same weights, then compared)."""

from __future__ import annotations

import argparse
import sys
import time

from act_eval.demo import DEFAULT_MODEL, DEFAULT_TASKS


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="score tasks with and without ACT on one loaded model, save both runs, print the paired comparison",
        description=(
            "Loads the model once, runs lm-eval on TASKS as hf-fast (hf's numbers) and as hf-act with a published "
            "head map, saves both as --output_path/--log_samples runs (OUT/hf, OUT/act) and prints "
            "`act-eval compare OUT/hf OUT/act`. A finished arm is read back, not re-run."
        ),
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"embedded model name or path (default: {DEFAULT_MODEL})")
    parser.add_argument("--head-map", help="published map name or JSON file (default: <model>.classification)")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help=f"comma-separated tasks (default: {','.join(DEFAULT_TASKS)})")
    parser.add_argument("--output_path", default="runs/demo", help="where both runs go (default: runs/demo)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from lm_eval.utils import setup_logging

    from act_eval.compare.forest import forest_plot
    from act_eval.compare.report import compare_runs, format_report
    from act_eval.demo import run_demo
    from act_eval.lm.runs import load_run

    setup_logging()  # lm-eval's log lines, hf-act's start-up line among them, as the lm_eval CLI shows them
    start = time.monotonic()
    tasks = [t for t in args.tasks.split(",") if t]
    hf_dir, act_dir = run_demo(args.model, args.head_map, tasks, args.output_path, batch_size=args.batch_size, device=args.device)
    report = compare_runs(load_run(hf_dir), load_run(act_dir))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(format_report(report, "markdown"), end="")
    plot = forest_plot(report, f"{args.output_path}/act_compare_forest.png")
    print(f"\nruns: {hf_dir} {act_dir}; forest plot: {plot}; {time.monotonic() - start:.0f} s", file=sys.stderr)
    return 0
