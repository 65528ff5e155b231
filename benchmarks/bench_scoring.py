"""hf-fast against hf: a real lm-eval evaluation, timed side by side, with equal results.

One process, one loaded model shared by both wrappers, runs interleaved (hf, hf-fast, hf,
hf-fast, ...) so that machine load hits both alike; the table reports the ratio of medians
of the whole ``simple_evaluate`` call (task loading, request building, scoring, metrics) and
of its scoring part alone (the ``loglikelihood`` call) on the act-eval tasks at k shots, and
the largest log-likelihood difference between the two.

    python benchmarks/bench_scoring.py [--models gemma3-270m smollm2-135m] [--tasks act_sst5_lite act_agnews_lite]
        [--num_fewshot 4] [--limit 24] [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from act_eval.lm.pretrained import resolve_pretrained
from act_eval.paths import resource_dir


def evaluate(lm, tasks: list[str], num_fewshot: int, limit: int, task_manager) -> tuple[float, float, list[float]]:
    """Seconds for one evaluation, seconds of it spent scoring, and every choice's log-likelihood."""
    from lm_eval import evaluator

    scoring = [0.0]
    score = type(lm).loglikelihood

    def timed_loglikelihood(requests, *args, **kwargs):
        begin = time.perf_counter()
        try:
            return score(lm, requests, *args, **kwargs)
        finally:
            scoring[0] += time.perf_counter() - begin

    lm.loglikelihood = timed_loglikelihood
    start = time.perf_counter()
    out = evaluator.simple_evaluate(
        model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, log_samples=True,
        task_manager=task_manager, fewshot_random_seed=0, bootstrap_iters=0, verbosity="ERROR",
    )
    seconds = time.perf_counter() - start
    del lm.loglikelihood
    lls = [resp[0][0] for task in tasks for s in out["samples"][task] for resp in s["resps"]]
    return seconds, scoring[0], lls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gemma3-270m", "smollm2-135m"])
    parser.add_argument("--tasks", nargs="+", default=["act_sst5_lite", "act_agnews_lite"])
    parser.add_argument("--num_fewshot", type=int, default=4)
    parser.add_argument("--limit", type=int, default=24, help="documents per task")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args()

    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from act_eval.lm.hf_fast import HFFastLM

    task_manager = TaskManager(include_path=[str(resource_dir("tasks"))], include_defaults=False)
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    print(f"device={args.device} dtype={dtype} batch={args.batch_size} threads={torch.get_num_threads()} "
          f"tasks={','.join(args.tasks)} k={args.num_fewshot} limit={args.limit}")
    print("| model | hf s | hf-fast s | speed-up | hf scoring s | hf-fast scoring s | scoring speed-up | max abs log-lik diff | choices |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name in args.models:
        hf = HFLM(pretrained=resolve_pretrained(name), device=args.device, batch_size=args.batch_size, dtype=dtype)
        fast = HFFastLM(pretrained=hf.model, tokenizer=hf.tokenizer, device=args.device, batch_size=args.batch_size)
        evaluate(fast, args.tasks, args.num_fewshot, 2, task_manager)  # warm-up
        times: dict[str, list[float]] = {"hf": [], "fast": [], "hf_scoring": [], "fast_scoring": []}
        for _ in range(args.repeats):
            t_hf, s_hf, ll_hf = evaluate(hf, args.tasks, args.num_fewshot, args.limit, task_manager)
            t_fast, s_fast, ll_fast = evaluate(fast, args.tasks, args.num_fewshot, args.limit, task_manager)
            for key, value in (("hf", t_hf), ("fast", t_fast), ("hf_scoring", s_hf), ("fast_scoring", s_fast)):
                times[key].append(value)
        row = {
            "model": name,
            **{f"{key}_s": statistics.median(values) for key, values in times.items()},
            "max_abs_diff": max(abs(a - b) for a, b in zip(ll_hf, ll_fast, strict=True)),
            "choices": len(ll_hf),
        }
        row["speedup"] = row["hf_s"] / row["fast_s"]
        row["scoring_speedup"] = row["hf_scoring_s"] / row["fast_scoring_s"]
        rows.append(row)
        print(f"| {name} | {row['hf_s']:.1f} | {row['fast_s']:.1f} | {row['speedup']:.2f}x | {row['hf_scoring_s']:.1f} | "
              f"{row['fast_scoring_s']:.1f} | {row['scoring_speedup']:.2f}x | {row['max_abs_diff']:.1e} | {row['choices']} |",
              flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": args.device, "dtype": dtype, "args": vars(args), "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
