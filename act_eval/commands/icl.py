"""``act-eval icl run|show``: k-shot in-context learning over several few-shot seeds, as one arm (:mod:`act_eval.icl`).

``act-eval compare BASELINE ACT --icl OUT`` then treats the seed runs as one arm; ``show`` and
``--icl`` also take runs made otherwise (one output directory per seed).
"""

from __future__ import annotations

import argparse

from act_eval.commands import add_model_run_options

DEFAULT_SEEDS = (0, 1, 2, 3, 4)  # the paper's five seeds of the demonstrations


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("icl", help="k-shot in-context learning over several few-shot seeds")
    action = parser.add_subparsers(dest="action", required=True)

    run = action.add_parser("run", help="run tasks at k shots once per few-shot seed (lm-eval Python API)")
    run.add_argument("--model", required=True, help="lm-eval model type, e.g. hf or hf-act")
    run.add_argument("--model_args", default="", help="as for lm_eval: JSON or key=value,key=value")
    run.add_argument("--tasks", required=True, help="comma-separated task or group names")
    run.add_argument("--num_fewshot", "-k", type=int, default=4, help="demonstrations per prompt (default: 4)")
    run.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                     help=f"few-shot seeds (default: {' '.join(map(str, DEFAULT_SEEDS))})")
    run.add_argument("--output_path", required=True, help="directory for the per-seed runs and icl.json")
    run.add_argument("--limit", type=float, help="documents per task (testing only)")
    run.add_argument("--batch_size", default=None)
    add_model_run_options(run)
    run.add_argument("--bootstrap_iters", type=int, default=100_000, help="lm-eval's stderr bootstrap (default as lm-eval)")
    run.set_defaults(func=_run)

    show = action.add_parser("show", help="per-seed values and mean ± std of ICL runs")
    show.add_argument("runs", nargs="+", metavar="RUN", help="run paths, or a directory from `icl run`")
    show.add_argument("--metric", default="acc")
    show.add_argument("--filter", dest="filter_name")
    show.set_defaults(func=_show)


def _run(args: argparse.Namespace) -> int:
    from lm_eval._cli.utils import key_val_to_dict, try_parse_json

    from act_eval.icl import icl_summary, run_icl

    parsed = try_parse_json(args.model_args) if args.model_args else {}
    model_args = parsed if isinstance(parsed, dict) else key_val_to_dict(parsed)
    manifest = run_icl(
        args.model,
        model_args,
        [t for item in args.tasks.split(",") if (t := item.strip())],
        args.num_fewshot,
        args.seeds,
        args.output_path,
        include_path=args.include_path,
        builtin_tasks=args.builtin_tasks,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        bootstrap_iters=args.bootstrap_iters,
    )
    print(f"ICL runs: {manifest.parent} (pass it to `act-eval compare ... --icl`)")
    print(icl_summary([manifest.parent]), end="")
    return 0


def _show(args: argparse.Namespace) -> int:
    from act_eval.icl import icl_summary

    print(icl_summary(args.runs, args.metric, args.filter_name), end="")
    return 0
