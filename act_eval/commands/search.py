"""``act-eval search``: build head maps from held-out training data."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search which heads to calibrate, on held-out training examples",
        description="Screen every (layer, head) with a first-order estimate of its effect on log p(gold | choices) "
        "(one forward and one backward pass per example), confirm the top candidates and a random control sample "
        "exactly, keep heads by a stratified paired test with Holm's correction, combine them greedily on a disjoint "
        "validation slice of the training data, choose beta and the threshold there (the factor, with --rule first_token), "
        "and write head maps with full "
        "provenance. Checkpointed (resumable later, elsewhere, with the same --checkpoint directory) and shardable "
        "across processes (torchrun / accelerate launch).",
    )
    p.add_argument("--model", required=True, help="embedded name (smollm2-135m, gemma3-270m), hub id or path")
    p.add_argument("--tasks", required=True, nargs="+",
                   help="family (classification, classification_spaced, multiple_choice), group or task names")
    p.add_argument("--out", required=True, help="where to write the family head map (JSON)")
    p.add_argument("--name", help="the map's name (default: the file name without .json)")
    p.add_argument("--task-maps", metavar="DIR", help="also write one map per task into DIR (<name>.<task>.json)")
    p.add_argument("--per-task", type=int, default=100, help="calibration documents per task (default 100)")
    p.add_argument("--val-per-task", type=int, default=20, help="validation documents per task, disjoint (default 20)")
    p.add_argument("--threshold", type=float, default=0.1, help="the searched threshold (default 0.1)")
    p.add_argument("--beta", type=float, default=0.4, help="the searched beta (default 0.4)")
    p.add_argument("--rule", choices=["act", "first_token"], default="act",
                   help="act: ACT's sink calibration (default; --threshold --beta --thresholds --betas); first_token: "
                   "scale each selected head's attention to the first token by a factor and renormalise (ZeroTuning's "
                   "idea; --factor --factors); the map records the rule")
    p.add_argument("--factor", type=float, default=2.0, help="first_token: the searched factor (default 2.0)")
    p.add_argument("--keep-rule", choices=["effect", "flips"], default="effect",
                   help="effect: stratified paired t on log p(gold) with Holm (default); flips: the first-generation sign test")
    p.add_argument("--alpha", type=float, default=0.05, help="keep rule level (Holm-adjusted for effect; default 0.05)")
    p.add_argument("--min-effect", type=float, default=0.005, help="keep rule: minimum mean change in log p(gold), nats")
    p.add_argument("--harm-alpha", type=float, default=0.05, help="keep rule: reject a head that hurts any task at this level")
    p.add_argument("--top-k", type=int, default=16, help="heads the exact engine confirms, by estimate (default 16)")
    p.add_argument("--controls", type=int, default=8, help="random control heads confirmed exactly (default 8)")
    p.add_argument("--per-task-candidates", type=int, default=2, help="extra heads per task confirmed on that task")
    p.add_argument("--patience", type=int, default=3, help="greedy pass: stop after this many rejections in a row")
    p.add_argument("--guard-alpha", type=float, default=0.05,
                   help="greedy pass: refuse a head when one task's paired change is significantly negative at this level "
                   "(one-sided t per task; 0 switches the guard off; default 0.05)")
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.7], help="settings grid on validation")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.15], help="settings grid on validation")
    p.add_argument("--factors", type=float, nargs="+", default=[0.5, 0.8, 1.25, 2.0], help="first_token: factor grid on validation")
    p.add_argument("--chunk", type=int, default=50, help="examples per checkpoint file (default 50)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per screening pass (default 8)")
    p.add_argument("--seed", type=int, default=1234, help="which training documents are drawn, and the control sample")
    p.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory (default: in the act-eval cache, named by the inputs)")
    p.add_argument("--restart", action="store_true", help="discard an existing checkpoint")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from act_eval.search.job import SearchConfig, run_search

    fields = SearchConfig.__dataclass_fields__
    config = SearchConfig(**{k: v for k, v in vars(args).items() if k in fields})
    hm = run_search(config)
    if hm is not None:  # the full provenance: act-eval head-maps show NAME --json
        v = hm.provenance["validation"]
        print(hm.summary_line())
        print(f"heads: {sorted((layer, h) for layer, hs in hm.heads.items() for h in hs)}")
        print(f"validation: objective {v['baseline']['objective']:.4f} -> {v['map']['objective']:.4f}, "
              f"accuracy {v['baseline']['accuracy']:.4f} -> {v['map']['accuracy']:.4f}")
    return 0
