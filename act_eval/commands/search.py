"""``act-eval search``: build a head map from held-out training data."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search which heads to calibrate, on held-out training examples",
        description="Score every (layer, head) by calibrating it alone on held-out training examples, keep the heads "
        "that pass the keep rule, refine greedily on a separate slice, and write a head map with full provenance. "
        "Resumable (a checkpoint after each layer) and shardable across processes (torchrun / accelerate launch).",
    )
    p.add_argument("--model", required=True, help="embedded name (smollm2-135m, gemma3-270m), hub id or path")
    p.add_argument("--tasks", required=True, nargs="+", help="family (classification, multiple_choice), group or task names")
    p.add_argument("--out", required=True, help="where to write the head map (JSON)")
    p.add_argument("--name", help="the map's name (default: the file name without .json)")
    p.add_argument("--per-task", type=int, default=16, help="calibration examples per task (default 16)")
    p.add_argument("--val-per-task", type=int, default=8, help="validation examples per task for the greedy pass (default 8)")
    p.add_argument("--threshold", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=0.4)
    p.add_argument("--alpha", type=float, default=0.2, help="keep rule: one-sided sign-test level (default 0.2)")
    p.add_argument("--patience", type=int, default=2, help="greedy pass: stop after this many non-improving additions")
    p.add_argument("--seed", type=int, default=1234, help="which training documents are drawn")
    p.add_argument("--checkpoint", help="checkpoint directory (default: in the act-eval cache, named by the inputs)")
    p.add_argument("--restart", action="store_true", help="discard an existing checkpoint")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from act_eval.search_run import SearchConfig, run_search

    config = SearchConfig(
        model=args.model, tasks=args.tasks, out=args.out, name=args.name, per_task=args.per_task,
        val_per_task=args.val_per_task, threshold=args.threshold, beta=args.beta, alpha=args.alpha,
        patience=args.patience, seed=args.seed, checkpoint=args.checkpoint, restart=args.restart, device=args.device,
    )
    hm = run_search(config)
    if hm is not None:
        print(hm.describe())
    return 0
