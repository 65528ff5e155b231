"""``act-eval sinks``: which tokens become attention sinks over a task's documents, per layer and head."""

from __future__ import annotations

import argparse
from pathlib import Path

from act_eval.commands import add_model_run_options
from act_eval.core.rules import DEFAULT_THRESHOLD

TOP_TOKENS = 15  # rows of the printed table


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
    import torch
    from tqdm import tqdm

    from act_eval.core.head_map import check_threshold
    from act_eval.core.switch import model_shape
    from act_eval.lm.pretrained import load_model
    from act_eval.sinks.capture import capture_attention
    from act_eval.sinks.figures import plot_sink_stats
    from act_eval.sinks.prompts import encode, load_tasks, task_prompts, token_strings
    from act_eval.sinks.stats import SinkStats, write_summary

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    threshold = DEFAULT_THRESHOLD if args.threshold is None else check_threshold(args.threshold)
    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    tasks = load_tasks(names, args.include_path, args.builtin_tasks)
    prompts = [prompt for name, task in tasks.items() for prompt in task_prompts(name, task, args.limit)]
    model, tokenizer, identity = load_model(args.model, args.device)
    shape = model_shape(model)
    stats = SinkStats(identity, shape["num_layers"], shape["num_heads"], threshold, list(tasks), args.limit)
    for prompt in tqdm(prompts, desc="documents", unit="doc"):
        ids = encode(tokenizer, prompt.text)
        capture = capture_attention(model, torch.tensor([ids], device=model.device), threshold=threshold, keep_probs=False)
        stats.add(prompt, token_strings(tokenizer, ids), capture.layers)
    summary = stats.summary()
    out = Path(args.out)
    write_summary(summary, out / "sinks.json")
    plot_sink_stats(out / "sinks.png", summary, top=TOP_TOKENS)
    print(_table(summary))
    print(f"wrote {out / 'sinks.json'} and {out / 'sinks.png'}")
    return 0


def _table(summary: dict) -> str:
    """The headline numbers and the most frequent sink tokens, as a Markdown table."""
    from act_eval.sinks.figures import token_label

    near_end = summary["near_end"]
    lines = [
        f"{summary['model']} on {', '.join(summary['tasks'])}: {summary['num_documents']} documents, "
        f"{summary['num_layers']} layers x {summary['num_heads']} heads, threshold {summary['threshold']:g}",
        f"heads whose highest column is the first token: {100 * summary['share_of_heads_first_token_top']:.1f}%",
        f"heads with a sink beyond the first token: {100 * summary['share_of_heads_with_sink_beyond_first']:.1f}%",
        f"sink events on the last {near_end} positions: {100 * summary['share_of_events_near_end']:.1f}%",
        "",
        f"| token | share of sink events | of which on the last {near_end} positions | occurrences | sink rate | heads |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for token in summary["tokens"][:TOP_TOKENS]:
        lines.append(
            f"| `{token_label(token['token']).replace('|', '¦')}` | {100 * token['share_of_events']:.1f}% "
            f"| {100 * token['near_end_events'] / token['sink_events']:.0f}% | {token['occurrences']} "
            f"| {token['sink_rate']:.3f} | {token['heads']} |"
        )
    return "\n".join(lines)
