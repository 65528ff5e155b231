"""Cost of hf-act against hf: forward time and peak memory on SmolLM2-135M-Instruct.

Same inputs, one process, runs interleaved (hf, act, hf, act, ...) so that machine load hits
both alike; the table reports ratios of medians. This is what lm-eval's ``_model_call`` does
per loglikelihood batch. Peak memory is the peak of the C heap in use during the call above
its level before (sampled every 0.2 ms from glibc's ``mallinfo2``; the resident-set size would
hide it, since the allocator reuses freed pages), or ``torch.cuda.max_memory_allocated`` on GPU.

    python benchmarks/bench_overhead.py [--lengths 128 256 512 1024 2048] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import statistics
import threading
import time

import torch

from act_eval.attention import disable_act, enable_act
from act_eval.models import resolve_pretrained


def heads_fraction(fraction: float, layers: int = 30, heads: int = 9, seed: int = 0) -> list[list[int]]:
    every = [[layer, head] for layer in range(layers) for head in range(heads)]
    return sorted(random.Random(seed).sample(every, round(fraction * len(every))))


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


def _heap_in_use() -> int:
    """Bytes the C allocator has handed out (heap plus mmapped blocks): where CPU tensors live."""
    info = _LIBC.mallinfo2()
    return info.uordblks + info.hblkhd


def peak_memory_mib(fn, device: torch.device) -> float:
    """Peak extra memory of one call of ``fn``, in MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base = _heap_in_use()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _heap_in_use())
            time.sleep(0.0002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    fn()
    done.set()
    thread.join()
    return (peak[0] - base) / 2**20


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
            base_t, act_t, base_m, act_m = [], [], [], []
            for _ in range(args.repeats):
                disable_act(model)
                base_t.append(timed(forward, device))
                base_m.append(peak_memory_mib(forward, device))
                enable_act(model, heads, check_model=False)
                act_t.append(timed(forward, device))
                act_m.append(peak_memory_mib(forward, device))
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
            row["memory_ratio"] = row["act_mib"] / row["hf_mib"]
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
