"""Head search speed: the fast engine against the naive procedure, same examples, same decisions.

Naive = what a direct search does: for every head and example, calibrate that head alone and run
the whole model with all logits (lm-eval's ``_model_call``). Fast = ``act_eval.search.score_heads``.
Both run here, on the same held-out SmolLM2 examples; the script checks that every (head,
example) decision agrees and reports the time ratio.

    python benchmarks/bench_search.py [--model smollm2-135m] [--tasks classification] [--per-task 1]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", nargs="+", default=["classification"])
    parser.add_argument("--per-task", type=int, default=1)
    parser.add_argument("--layers", type=int, nargs="*", help="only these layers (default: all)")
    args = parser.parse_args()

    from lm_eval.models.huggingface import HFLM

    from act_eval.attention import enable_act, model_shape
    from act_eval.models import resolve_pretrained
    from act_eval.search import Settings, is_correct, naive_head_results, score_heads
    from act_eval.search_data import expand_tasks, held_out_examples

    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = HFLM(pretrained=resolve_pretrained(args.model), device=device, dtype="float32", batch_size=1)
    model = lm.model.eval()
    enable_act(model, None, check_model=False)
    examples, _ = held_out_examples(lm, expand_tasks(args.tasks), args.per_task)
    settings = Settings()
    shape = model_shape(model)
    layers = args.layers or list(range(shape["num_layers"]))

    start = time.perf_counter()
    fast = score_heads(model, examples, settings, layers=layers, progress=False)
    fast_s = time.perf_counter() - start

    start = time.perf_counter()
    naive: dict[tuple[int, int], list[bool]] = {}
    for layer in layers:
        for example in examples:
            for head, lls in naive_head_results(model, example, layer, settings).items():
                naive.setdefault((layer, head), []).append(is_correct(lls, example.gold))
    naive_s = time.perf_counter() - start

    same = all(fast[key] == naive[key] for key in naive)
    pairs = len(naive) * len(examples)
    print(f"device={device} threads={torch.get_num_threads()} model={args.model} examples={len(examples)} "
          f"heads={len(naive)} (head, example) pairs={pairs}")
    print("| procedure | seconds | ms per (head, example) |")
    print("|---|---:|---:|")
    print(f"| naive (whole model per head, all logits) | {naive_s:.1f} | {1000 * naive_s / pairs:.1f} |")
    print(f"| act-eval search | {fast_s:.1f} | {1000 * fast_s / pairs:.1f} |")
    print(f"speed-up {naive_s / fast_s:.2f}x; identical decisions: {same}")
    if not same:
        raise SystemExit("decisions differ")


if __name__ == "__main__":
    main()
