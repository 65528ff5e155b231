"""``act-eval search``: build head maps from held-out training data."""

from __future__ import annotations

import argparse

from act_eval.core.rules import RULES
from act_eval.search.config import DEFAULTS as D
from act_eval.search.config import KEEP_RULES, SearchConfig


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
    p.add_argument("--per-task", type=int, default=D.per_task, help=f"calibration documents per task (default {D.per_task})")
    p.add_argument("--val-per-task", type=int, default=D.val_per_task,
                   help=f"validation documents per task, disjoint (default {D.val_per_task})")
    p.add_argument("--threshold", type=float, default=D.threshold, help=f"the searched threshold (default {D.threshold})")
    p.add_argument("--beta", type=float, default=D.beta, help=f"the searched beta (default {D.beta})")
    p.add_argument("--rule", choices=RULES, default=D.rule,
                   help="act: ACT's sink calibration (default; --threshold --beta --thresholds --betas); first_token: "
                   "scale each selected head's attention to the first token by a factor and renormalise (ZeroTuning's "
                   "idea; --factor --factors); the map records the rule")
    p.add_argument("--factor", type=float, default=D.factor, help=f"first_token: the searched factor (default {D.factor})")
    p.add_argument("--keep-rule", choices=KEEP_RULES, default=D.keep_rule,
                   help="effect: stratified paired t on log p(gold) with Holm (default); flips: the first-generation sign test")
    p.add_argument("--alpha", type=float, default=D.alpha,
                   help=f"keep rule level (Holm-adjusted for effect; default {D.alpha})")
    p.add_argument("--min-effect", type=float, default=D.min_effect,
                   help="keep rule: minimum mean change in log p(gold), nats")
    p.add_argument("--harm-alpha", type=float, default=D.harm_alpha,
                   help="keep rule: reject a head that hurts any task at this level")
    p.add_argument("--top-k", type=int, default=D.top_k, help=f"heads the exact engine confirms, by estimate (default {D.top_k})")
    p.add_argument("--controls", type=int, default=D.controls, help=f"random control heads confirmed exactly (default {D.controls})")
    p.add_argument("--per-task-candidates", type=int, default=D.per_task_candidates,
                   help="extra heads per task confirmed on that task")
    p.add_argument("--patience", type=int, default=D.patience, help="greedy pass: stop after this many rejections in a row")
    p.add_argument("--guard-alpha", type=float, default=D.guard_alpha,
                   help="greedy pass: refuse a head when one task's paired change is significantly negative at this level "
                   f"(one-sided t per task; 0 switches the guard off; default {D.guard_alpha})")
    p.add_argument("--betas", type=float, nargs="+", default=list(D.betas), help="settings grid on validation")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(D.thresholds), help="settings grid on validation")
    p.add_argument("--factors", type=float, nargs="+", default=list(D.factors), help="first_token: factor grid on validation")
    p.add_argument("--chunk", type=int, default=D.chunk, help=f"examples per checkpoint file (default {D.chunk})")
    p.add_argument("--batch-size", type=int, default=D.batch_size, help=f"examples per screening pass (default {D.batch_size})")
    p.add_argument("--seed", type=int, default=D.seed, help="which training documents are drawn, and the control sample")
    p.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory (default: in the act-eval cache, named by the inputs)")
    p.add_argument("--restart", action="store_true", help="discard an existing checkpoint")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from act_eval.search.job import run_search

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
