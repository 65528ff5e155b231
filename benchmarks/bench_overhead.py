"""Cost of hf-act against hf: forward time and peak memory on SmolLM2-135M-Instruct.

Same inputs, one process, runs interleaved (hf, act, hf, act, ...) so that machine load hits
both alike; the table reports ratios of medians. This is what lm-eval's ``_model_call`` does
per loglikelihood batch. Peak memory is the peak of the process's resident set above its level
before the call (CPU) or ``torch.cuda.max_memory_allocated`` (GPU).

    python benchmarks/bench_overhead.py [--lengths 128 256 512 1024 2048] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time

import psutil
import torch

from act_eval.attention import disable_act, enable_act
from act_eval.models import resolve_pretrained


def heads_fraction(fraction: float, layers: int = 30, heads: int = 9, seed: int = 0) -> list[list[int]]:
    every = [[layer, head] for layer in range(layers) for head in range(heads)]
    return sorted(random.Random(seed).sample(every, round(fraction * len(every))))


def peak_memory(fn, device: torch.device) -> tuple[float, float]:
    """Run ``fn``; return (seconds, peak extra memory in MiB)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start, (torch.cuda.max_memory_allocated() - base) / 2**20
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    done.set()
    thread.join()
    return elapsed, (peak[0] - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.1, 0.5, 1.0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(resolve_pretrained("smollm2-135m"), dtype=dtype).to(device).eval()
    rows = []
    print(f"device={device} dtype={dtype} batch={args.batch} threads={torch.get_num_threads()}")
    print("| tokens | heads | hf ms | hf-act ms | time ratio | hf MiB | hf-act MiB | memory ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        x = torch.randint(100, 40000, (args.batch, length), generator=torch.Generator().manual_seed(length)).to(device)

        def forward() -> None:
            with torch.no_grad():
                model(x, use_cache=False)

        for fraction in args.fractions:
            heads = heads_fraction(fraction)
            forward()  # warm-up
            base_t, base_m, act_t, act_m = [], [], [], []
            for _ in range(args.repeats):
                disable_act(model)
                t, m = peak_memory(forward, device)
                base_t.append(t)
                base_m.append(m)
                enable_act(model, heads, check_model=False)
                t, m = peak_memory(forward, device)
                act_t.append(t)
                act_m.append(m)
            disable_act(model)
            row = {
                "tokens": length,
                "heads_fraction": fraction,
                "heads": len(heads),
                "hf_ms": 1000 * statistics.median(base_t),
                "act_ms": 1000 * statistics.median(act_t),
                "hf_mib": statistics.median(base_m),
                "act_mib": statistics.median(act_m),
            }
            row["time_ratio"] = row["act_ms"] / row["hf_ms"]
            row["memory_ratio"] = row["act_mib"] / row["hf_mib"] if row["hf_mib"] > 0 else float("nan")
            rows.append(row)
            print(
                f"| {length} | {fraction:.0%} ({len(heads)}) | {row['hf_ms']:.0f} | {row['act_ms']:.0f} | "
                f"{row['time_ratio']:.2f}x | {row['hf_mib']:.0f} | {row['act_mib']:.0f} | {row['memory_ratio']:.2f}x |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": str(device), "dtype": str(dtype), "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
