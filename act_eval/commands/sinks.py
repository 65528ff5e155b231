"""``act-eval sinks``: which tokens become attention sinks over a task's documents, per layer and head."""

from __future__ import annotations

import argparse
from pathlib import Path

from act_eval.commands import add_model_run_options
from act_eval.core.rules import DEFAULT_THRESHOLD


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sinks",
        help="dataset-level attention-sink statistics (JSON and a plot)",
        description="Run the model over task documents (their contexts, as lm-eval builds them) and count, per layer and "
        "head, the sink sets ACT's rule finds: which token strings become sinks and how often, and how many heads have "
        "a sink beyond the first token. Writes sinks.json and sinks.png.",
    )
    parser.add_argument("--model", required=True, help="embedded model name (act-eval models list), local path or hub id")
    parser.add_argument("--tasks", required=True, help="comma-separated task or group names")
    parser.add_argument("--limit", type=int, help="documents per task (default: all)")
    parser.add_argument("--threshold", type=float, help=f"sink threshold (default: {DEFAULT_THRESHOLD})")
    parser.add_argument("--out", default="act-eval-sinks", help="output directory (default: ./act-eval-sinks)")
    add_model_run_options(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from act_eval.core.head_map import check_threshold
    from act_eval.lm.pretrained import load_model
    from act_eval.sinks.figures import plot_sink_stats
    from act_eval.sinks.prompts import load_tasks, task_prompts
    from act_eval.sinks.stats import count_sinks, summary_table, write_summary

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    threshold = DEFAULT_THRESHOLD if args.threshold is None else check_threshold(args.threshold)
    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    tasks = load_tasks(names, args.include_path, args.builtin_tasks)
    prompts = [prompt for name, task in tasks.items() for prompt in task_prompts(name, task, args.limit)]
    model, tokenizer, identity = load_model(args.model, args.device)
    summary = count_sinks(model, tokenizer, identity, prompts, threshold, list(tasks), args.limit).summary()
    out = Path(args.out)
    write_summary(summary, out / "sinks.json")
    plot_sink_stats(out / "sinks.png", summary)
    print(summary_table(summary))
    print(f"wrote {out / 'sinks.json'} and {out / 'sinks.png'}")
    return 0
