"""``act-eval compare BASELINE [ACT] [--icl RUNS...] [--rival RUNS...]``: paired significance of ACT, ICL and the rivals against the baseline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from act_eval.compare.defaults import ADJUSTMENTS, AGGREGATIONS, ALPHA, CONFIDENCE, FORMATS, RESAMPLES, SEED

if TYPE_CHECKING:
    from act_eval.lm.runs import Run

DEFAULT_PLOT = "act_compare_forest.png"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare",
        help="paired tests of ACT against the baseline (and k-shot ICL) from lm-eval --log_samples runs",
        description=(
            "Each RUN is an lm-eval --output_path directory written with --log_samples (OUT or OUT/<model>; "
            "the newest run when it holds several), one results_<date>.json file to pick a run, or a leaderboard "
            "submission directory. A run that recorded its calibration (hf-act's config.act) is checked against "
            "its head map file first."
        ),
    )
    parser.add_argument("baseline", metavar="BASELINE", help="the baseline run")
    parser.add_argument("act", metavar="ACT", nargs="?", help="the ACT run (same prompts as the baseline; optional)")
    parser.add_argument(
        "--icl",
        nargs="+",
        metavar="RUN",
        help="k-shot runs, one per few-shot seed, a directory from `act-eval icl run`, or an accepted ICL submission",
    )
    parser.add_argument(
        "--rival",
        nargs="+",
        default=[],
        metavar="RUN",
        help="runs from `act-eval calibrate` (contextual / batch calibration) or hf-act runs of a first-token head map, "
        "each an arm of its own",
    )
    parser.add_argument("--tasks", nargs="+", help="compare these tasks only (default: all, which must match)")
    parser.add_argument("--metric", default="acc", help="per-document metric to compare (default: acc)")
    parser.add_argument("--filter", dest="filter_name", help="lm-eval filter to read (default: the task's only one)")
    parser.add_argument(
        "--aggregation",
        default=AGGREGATIONS[0],
        choices=AGGREGATIONS,
        help="how the metric aggregates over documents (default: from the run's task config)",
    )
    parser.add_argument("--confidence", type=float, default=CONFIDENCE, help=f"interval level (default: {CONFIDENCE})")
    parser.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level for verdicts (default: {ALPHA})")
    parser.add_argument("--adjust", default=ADJUSTMENTS[0], choices=ADJUSTMENTS, help="p-value adjustment across tasks")
    parser.add_argument("--resamples", type=int, default=RESAMPLES,
                        help=f"bootstrap / permutation resamples (default: {RESAMPLES})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of every resampling (default: {SEED})")
    parser.add_argument("--format", default=FORMATS[0], choices=FORMATS,
                        help="markdown: a table per comparison (default); arms: one table, a column per arm "
                        "against the baseline; json, csv: every row")
    plot = parser.add_mutually_exclusive_group()
    plot.add_argument("--plot", default=DEFAULT_PLOT, metavar="PATH", help=f"forest plot PNG (default: {DEFAULT_PLOT})")
    plot.add_argument("--no-plot", action="store_true", help="do not write the forest plot")
    parser.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from act_eval.compare.report import compare_runs, format_report
    from act_eval.icl import load_icl_runs
    from act_eval.leaderboard.manifest import run_paths
    from act_eval.lm.runs import load_run

    baseline = load_run(args.baseline)
    act = load_run(args.act) if args.act else None
    listed = [p for path in args.icl or () for p in run_paths(Path(path))]
    icl = load_icl_runs(listed) if listed else []
    rivals = [(load_run(path), Path(path)) for path in args.rival]
    named = [(baseline, Path(args.baseline)), *([(act, Path(args.act))] if act else []), *rivals]
    _check_maps([*named, *((run, run.results_path) for run in icl)])
    report = compare_runs(
        baseline,
        act,
        icl,
        rivals=[run for run, _ in rivals],
        tasks=args.tasks,
        metric=args.metric,
        filter_name=args.filter_name,
        aggregation=args.aggregation,
        confidence=args.confidence,
        n_resamples=args.resamples,
        seed=args.seed,
        adjust=args.adjust,
        alpha=args.alpha,
    )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(format_report(report, args.format), end="", flush=True)
    if not args.no_plot:
        from act_eval.compare.forest import forest_plot

        print(f"forest plot: {forest_plot(report, args.plot)}", file=sys.stderr)
    return 0


def _check_maps(runs: list[tuple[Run, Path]]) -> None:
    """Refuse a run whose recorded calibration is not its head map file; note runs that cannot be checked.

    Each run comes with the path the user named, which bounds the search for a submission's head_map.json.
    """
    from act_eval.leaderboard.recorded import check_run_map

    for run, given in runs:
        note = check_run_map(run, given)
        if note:
            print(f"note: {note}", file=sys.stderr)
