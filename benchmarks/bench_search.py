"""Head search speed, on the same examples in one run: naive, the exact engine, and screening + confirmation.

* naive: for every head and example, calibrate that head alone and run the whole model with all
  logits (lm-eval's ``_model_call``);
* exact engine (``act_eval.search.engine.exact_scores``, the first-generation search): every head of
  ``--layers``, each calibrated alone, from recorded states;
* screening + confirmation (the second generation): one forward and one backward pass per example
  estimate every head of the model, then the exact engine confirms the ``--confirm`` heads the
  estimate ranks first.

Costs are per (head, example) at the margin: model loading and example preparation are excluded,
both wall time and this process's CPU time are reported (on a shared machine the CPU time is the
fair measure: other processes' load slows every phase differently),
and every procedure's time is divided by the (head, example) pairs it decides (screening +
confirmation decides every head of the model: the unconfirmed ones are screened out). Naive
runs on the confirmed heads, so the script also checks that the confirmed heads' exact
log p(gold | choices) and correctness agree with naive, example by example.

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
    parser.add_argument("--layers", type=int, nargs="*", help="layers the exact engine scores in full (default: all)")
    parser.add_argument("--confirm", type=int, default=18, help="heads confirmed exactly after screening (default 18)")
    args = parser.parse_args()

    from lm_eval.models.huggingface import HFLM

    from act_eval.core.enable import enable_act
    from act_eval.core.switch import model_shape
    from act_eval.lm.pretrained import resolve_pretrained
    from act_eval.search.engine import Settings, exact_scores, gold_logprob, is_correct, naive_head_results
    from act_eval.search.examples import expand_tasks, held_out_examples
    from act_eval.search.screen import screen_examples

    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = HFLM(pretrained=resolve_pretrained(args.model), device=device, dtype="float32", batch_size=1)
    model = lm.model.eval()
    enable_act(model, None, check_model=False)
    examples, _ = held_out_examples(lm, expand_tasks(args.tasks), args.per_task)
    settings = Settings()
    shape = model_shape(model)
    layers = args.layers or list(range(shape["num_layers"]))
    all_heads = shape["num_layers"] * shape["num_heads"]
    n = len(examples)

    clock = _Clock()
    screened = screen_examples(model, examples, settings)
    est = sum(s.grad for s in screened) / n
    confirm = sorted(sorted(((l, h) for l in range(shape["num_layers"]) for h in range(shape["num_heads"])),
                            key=lambda lh: -float(est[lh]))[: args.confirm])
    screen_only = clock.lap()
    confirmed = exact_scores(model, examples, settings, {l: [h for ll, h in confirm if ll == l] for l, _ in confirm})
    confirm_t = clock.lap()
    screen_t = (screen_only[0] + confirm_t[0], screen_only[1] + confirm_t[1])
    exact_scores(model, examples, settings, {layer: list(range(shape["num_heads"])) for layer in layers})
    exact_t = clock.lap()
    exact_pairs = len(layers) * shape["num_heads"] * n

    naive = {}
    for ex_i, example in enumerate(examples):
        for layer, head in confirm:
            lls = naive_head_results(model, example, layer, settings, [head])[head]
            naive[(ex_i, layer, head)] = (gold_logprob(lls, example.gold), is_correct(lls, example.gold))
    naive_pairs = len(naive)
    naive_t = clock.lap()

    same = all(confirmed[i].heads[(l, h)][1] == naive[(i, l, h)][1] for (i, l, h) in naive)
    worst = max(abs(confirmed[i].heads[(l, h)][0] - naive[(i, l, h)][0]) for (i, l, h) in naive)
    rows = [("naive (whole model per head, all logits)", naive_pairs, naive_t),
            ("exact engine, every head of the layers", exact_pairs, exact_t),
            (f"screening + confirmation of {len(confirm)}", all_heads * n, screen_t),
            ("  of which screening (every head)", all_heads * n, screen_only),
            (f"  of which confirmation ({len(confirm)} heads)", len(confirm) * n, confirm_t)]
    print(f"device={device} threads={torch.get_num_threads()} model={args.model} examples={n} heads={all_heads} "
          f"confirmed={len(confirm)} exact-engine layers={len(layers)}")
    print("| procedure | (head, example) pairs decided | wall s | CPU s | wall ms per pair | CPU ms per pair | "
          "speed-up vs naive (wall / CPU) |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    naive_per = [t / naive_pairs for t in naive_t]
    for name, pairs, (wall, cpu) in rows:
        print(f"| {name} | {pairs} | {wall:.1f} | {cpu:.1f} | {1000 * wall / pairs:.2f} | {1000 * cpu / pairs:.2f} | "
              f"{naive_per[0] * pairs / wall:.1f}x / {naive_per[1] * pairs / cpu:.1f}x |")
    print(f"confirmed heads vs naive: same correctness on every (head, example): {same}; "
          f"largest |delta log p(gold)| {worst:.2e}")
    if not same:
        raise SystemExit("decisions differ")


class _Clock:
    """Wall and process CPU time since the last lap."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return out


if __name__ == "__main__":
    main()
