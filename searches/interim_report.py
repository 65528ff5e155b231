"""Interim numbers from an unfinished search's checkpoint: the keep rule and estimate-vs-exact
agreement on the calibration examples whose exact confirmation is stored so far.

The checkpoint does not store which task each example belongs to; the calibration slice is laid
out task by task in the family's order. A finished search's map records that layout in its
provenance (``--map``); without one, the classification searches' layout is assumed (100 documents
per task, BoolQ 32). The model's shape and the chunk size come from the checkpoint's ``meta.json``.

    python searches/interim_report.py searches/smollm2-135m.classification/checkpoint
    python searches/interim_report.py searches/smollm2-135m.multiple_choice/checkpoint \
        --map searches/smollm2-135m.multiple_choice/smollm2-135m.multiple_choice.json
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

from act_eval.search.selection import keep_heads, spearman, stratified_test

CLASSIFICATION = [("act_sst2", 100), ("act_sst5", 100), ("act_mr", 100), ("act_subj", 100), ("act_agnews", 100),
          ("act_trec", 100), ("act_cb", 100), ("act_boolq", 32), ("act_dbpedia", 100)]


def _load(path: Path):
    return json.loads(gzip.decompress(path.read_bytes()))


def _load_json(path: Path):
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--map", type=Path, help="the search's map: its provenance gives the calibration layout")
    args = parser.parse_args()
    layout = CLASSIFICATION
    if args.map:
        calibration = _load_json(args.map)["provenance"]["data"]["calibration"]
        layout = [(task, d["documents"]) for task, d in calibration.items() if d["documents"]]
    inputs = _load_json(args.checkpoint / "meta.json")["inputs"]  # the model's shape and the chunk size, as searched
    heads_per_layer, total = inputs["shape"]["num_heads"], inputs["shape"]["num_layers"] * inputs["shape"]["num_heads"]
    chunk = inputs["chunk"]
    task_of = [t for t, n in layout for _ in range(n)]
    screen = {int(p.name[6:10]): _load(p) for p in (args.checkpoint / "screen").glob("chunk_*")}
    exact_dir = next(args.checkpoint.glob("exact_*"))
    cand = _load(exact_dir / "candidates.json.gz")
    rows, grads, tasks = [], [], []
    for path in sorted(exact_dir.glob("chunk_*")):
        i = int(path.name[6:10])
        for j, row in enumerate(_load(path)):
            rows.append(row)
            grads.append(screen[i]["grad"][j])
            tasks.append(task_of[i * chunk + j])
    pooled = [tuple(h) for h in cand["top"] + cand["controls"]]
    per_head = {h: ([r["heads"][f"{h[0]},{h[1]}"][0] for r in rows], [r["heads"][f"{h[0]},{h[1]}"][1] for r in rows])
                for h in pooled}
    base, correct = [r["logp"] for r in rows], [r["correct"] for r in rows]
    stats = keep_heads(base, correct, per_head, tasks, total)
    est = {h: stratified_test([g[h[0] * heads_per_layer + h[1]] for g in grads], tasks)[0] for h in pooled}
    exact = {(s.layer, s.head): s.effect for s in stats}
    print(f"confirmed examples: {len(rows)} ({', '.join(sorted(set(tasks)))}); baseline accuracy {np.mean(correct):.3f}")
    for name in ("top", "controls"):
        hs = [tuple(h) for h in cand[name]]
        print(f"{name}: {len(hs)} heads, Spearman {spearman([est[h] for h in hs], [exact[h] for h in hs]):.2f}, "
              f"sign agreement {np.mean([(est[h] > 0) == (exact[h] > 0) for h in hs]):.2f}")
    print(f"| head | sample | estimate | exact effect (nats) | wins | losses | p (stratified t) | p, Holm over {total} | kept |")
    print("|---|---|--:|--:|--:|--:|--:|--:|---|")
    controls = {tuple(h) for h in cand["controls"]}
    for s in stats:
        h = (s.layer, s.head)
        print(f"| ({s.layer}, {s.head}) | {'control' if h in controls else 'top'} | {est[h]:+.4f} | {s.effect:+.4f} | "
              f"{s.wins} | {s.losses} | {s.p_value:.2g} | {s.p_holm:.2g} | {'yes' if s.kept else 'no'} |")
    flips = keep_heads(base, correct, per_head, tasks, total, rule="flips", alpha=0.2)
    print("flip rule (alpha 0.2) keeps:", [(s.layer, s.head, s.wins, s.losses, f"{s.p_value:.2g}") for s in flips if s.kept])


if __name__ == "__main__":
    main()
