"""Cost of hf-act against hf: forward time and peak memory on SmolLM2-135M-Instruct, per ACT kernel.

Same inputs, one process, runs interleaved (hf, eager, blockwise, hf, ...) so that machine load
hits all alike; the table reports ratios of medians to hf and, with several repeats, the ratio of
the fastest pass of each (the least disturbed by other work on the machine). One forward pass
over a batch-1 prompt with the logits of its last position only, as ``hf-act`` scores a long
context through ``hf-fast``: attention, not the vocabulary, is what grows with the length. Peak memory is the
peak of the C heap in use during the call above its level before (sampled every 0.2 ms from
glibc's ``mallinfo2`` by a thread, during the timed call itself: a long pass is run once per
repeat, not twice; the resident-set size would hide the peak, since the allocator reuses freed
pages), or ``torch.cuda.max_memory_allocated`` on GPU.

Long lengths take minutes per pass on a CPU, so each (length, share) row is appended to
``--json`` as soon as it is measured and rows already there are skipped: run one length at a
time and resume. A kernel whose estimated memory would not fit is skipped with the reason recorded.

    python benchmarks/bench_overhead.py --lengths 1024 4096 --json bench.json [--repeats 3]
    python benchmarks/bench_overhead.py --lengths 16384 --repeats 1 --json bench.json
    python benchmarks/bench_overhead.py --table bench.json     # the README table from the rows
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import statistics
import threading
import time

import torch

from act_eval.core.enable import disable_act, enable_act
from act_eval.lm.pretrained import resolve_pretrained


def heads_fraction(fraction: float, layers: int = 30, heads: int = 9, seed: int = 0) -> list[list[int]]:
    every = [[layer, head] for layer in range(layers) for head in range(heads)]
    return sorted(random.Random(seed).sample(every, round(fraction * len(every))))


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


def measure(fn, device: torch.device) -> tuple[float, float]:
    """Seconds and peak extra memory (MiB) of one call of ``fn``, measured together."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start, (torch.cuda.max_memory_allocated() - base) / 2**20
    base = _heap_in_use()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _heap_in_use())
            time.sleep(0.0002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return seconds, (peak[0] - base) / 2**20


KERNELS = ("eager", "blockwise")


def eager_bytes(length: int, heads: list[list[int]], batch: int) -> int:
    """A rough upper estimate of the eager kernel's peak: a layer's float32 probabilities and the
    rule's temporaries (about six of them) for the layer with the most selected heads."""
    per_layer = max((sum(1 for layer, _ in heads if layer == i) for i in {layer for layer, _ in heads}), default=0)
    return 6 * 4 * batch * per_layer * length * length


def available_bytes() -> int:
    with open("/proc/meminfo") as handle:
        info = dict(line.split(":", 1) for line in handle)
    return int(info["MemAvailable"].split()[0]) * 1024


def load_rows(path: str | None) -> dict:
    if not path:
        return {"rows": []}
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {"rows": []}


def save_rows(path: str | None, data: dict) -> None:
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=1)
        os.replace(tmp, path)


def table(rows: list[dict]) -> str:
    """The README table: per length and share, ms and MiB of hf and each kernel, ratios to hf."""
    lines = [
        "| tokens | heads | hf ms | eager ms | blockwise ms | blockwise, fastest of each | hf MiB | eager MiB | blockwise MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: (r["tokens"], r["heads_fraction"])):
        cells = {}
        for kernel in KERNELS:
            got = row["kernels"].get(kernel, {})
            if "ms" in got:
                cells[kernel] = (f"{got['ms']:.0f} ({got['ms'] / row['hf_ms']:.2f}x)", f"{got['mib']:.0f} ({got['mib'] / row['hf_mib']:.2f}x)")
            else:
                cells[kernel] = ("skipped" if "skipped" in got else "not run", "")
        fastest = row["kernels"].get("blockwise", {}).get("ms_min")
        fastest = f"{fastest / row['hf_ms_min']:.2f}x" if fastest and row.get("hf_ms_min") and row["repeats"] > 1 else ""
        lines.append(
            f"| {row['tokens']} | {row['heads_fraction']:.0%} ({row['heads']}) | {row['hf_ms']:.0f} | {cells['eager'][0]} | "
            f"{cells['blockwise'][0]} | {fastest} | {row['hf_mib']:.0f} | {cells['eager'][1]} | {cells['blockwise'][1]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 8192, 16384])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="append the rows here (rows already there are skipped)")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                        help="one unmeasured pass per length first (--no-warmup saves one long pass)")
    parser.add_argument("--table", metavar="JSON", help="print the table of a results file and exit")
    args = parser.parse_args()
    if args.table:
        print(table(load_rows(args.table)["rows"]))
        return

    from transformers import AutoModelForCausalLM

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(resolve_pretrained("smollm2-135m"), dtype=dtype).to(device).eval()
    data = load_rows(args.json)
    data.update(device=str(device), dtype=str(dtype), threads=torch.get_num_threads())
    done = {(r["tokens"], r["heads_fraction"], r["batch"]) for r in data["rows"]}
    print(f"device={device} dtype={dtype} batch={args.batch} threads={torch.get_num_threads()}", flush=True)
    for length in args.lengths:
        x = torch.randint(100, 40000, (args.batch, length), generator=torch.Generator().manual_seed(length)).to(device)

        def forward() -> None:
            with torch.no_grad():
                model(x, use_cache=False, logits_to_keep=1)

        warm = False
        for fraction in args.fractions:
            if (length, fraction, args.batch) in done:
                continue
            heads = heads_fraction(fraction)
            kernels = {}
            runs = []
            for kernel in args.kernels:
                need = eager_bytes(length, heads, args.batch) if kernel == "eager" else 0
                if device.type == "cpu" and need > 0.7 * available_bytes():
                    kernels[kernel] = {
                        "skipped": f"needs about {need / 2**30:.0f} GiB, over 70% of the {available_bytes() / 2**30:.0f} GiB available"
                    }
                else:
                    runs.append(kernel)
            if args.warmup and not warm:
                disable_act(model)
                forward()  # warm-up, once per length
                warm = True
            base_t, base_m = [], []
            times = {k: [] for k in runs}
            mems = {k: [] for k in runs}
            for _ in range(args.repeats):
                disable_act(model)
                seconds, mib = measure(forward, device)
                base_t.append(seconds)
                base_m.append(mib)
                for kernel in runs:
                    enable_act(model, heads, check_model=False, kernel=kernel)
                    seconds, mib = measure(forward, device)
                    times[kernel].append(seconds)
                    mems[kernel].append(mib)
                    disable_act(model)
            for kernel in runs:
                kernels[kernel] = {
                    "ms": 1000 * statistics.median(times[kernel]),
                    "ms_min": 1000 * min(times[kernel]),
                    "mib": statistics.median(mems[kernel]),
                }
            row = {
                "tokens": length,
                "batch": args.batch,
                "heads_fraction": fraction,
                "heads": len(heads),
                "repeats": args.repeats,
                "hf_ms": 1000 * statistics.median(base_t),
                "hf_ms_min": 1000 * min(base_t),
                "hf_mib": statistics.median(base_m),
                "kernels": kernels,
            }
            data["rows"].append(row)
            save_rows(args.json, data)
            print(table([row]).splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
