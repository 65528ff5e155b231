"""The ``act-eval search`` job: screen every head, confirm exactly, keep, combine, choose settings, write maps.

Stages, each checkpointed in a :class:`SearchStore` before the next reads it back:

1. **screen** (:mod:`act_eval.search.screen`): one forward and one backward pass per calibration
   example give every head's first-order effect on log p(gold | choices);
2. **confirm** (:func:`act_eval.search.engine.exact_scores`): the ``top_k`` heads with the largest
   stratified estimate, a seeded random control sample of ``controls`` other heads, and per task
   the ``per_task_candidates`` heads that task's estimate ranks first (on that task's examples),
   each calibrated alone, exactly; Spearman's rank correlation of estimate and exact effect, on
   the candidates and on the controls, goes into provenance;
3. **keep** (:mod:`act_eval.search.selection`): only exactly confirmed heads can pass the keep rule;
4. **combine and choose settings** (:mod:`act_eval.search.combine`) on the validation slice, a
   disjoint part of the training data; per family and per task.

The rule is ACT's (``rule="act"``) or first-token scaling (``rule="first_token"``, ZeroTuning's
idea): the stages are the same, the heads being mixed, confirmed and combined under that rule
(:class:`act_eval.search.engine.Settings`), and the settings grid is over (threshold, beta) or over factors.

Stages 1-2 run over chunks of examples; under ``torchrun`` / ``accelerate launch`` (RANK and
WORLD_SIZE in the environment) each rank takes every WORLD_SIZE-th chunk, and rank 0 waits for
the others' files and does stages 3-4.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from act_eval import __version__
from act_eval.core.head_map import HeadMap
from act_eval.lm.suite import family_of
from act_eval.paths import cache_dir
from act_eval.search.config import SearchConfig


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _key(layer: int, head: int) -> str:
    return f"{layer},{head}"


def _unkey(key: str) -> tuple[int, int]:
    layer, head = key.split(",")
    return int(layer), int(head)


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _protocol(tasks: list[str]) -> str:
    spaced = {t.endswith("_spaced") for t in tasks}
    return "spaced" if spaced == {True} else "paper" if spaced == {False} else "mixed"


def run_search(config: SearchConfig) -> HeadMap | None:
    """Run the search; returns the family map (None on ranks other than 0 of a sharded run)."""
    import torch
    from lm_eval.models.huggingface import HFLM

    from act_eval.core.enable import enable_act
    from act_eval.core.switch import model_shape
    from act_eval.lm.pretrained import model_identity, resolve_pretrained
    from act_eval.search.examples import examples_digest, expand_tasks, held_out_examples
    from act_eval.search.store import SearchStore

    config.check()
    tasks = expand_tasks(config.tasks)  # a misspelt task is refused before the model loads
    torch.manual_seed(config.seed)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    identity = model_identity(config.model)
    lm = HFLM(pretrained=resolve_pretrained(config.model), device=device, dtype="float32", batch_size=1)
    model = lm.model.eval()
    enable_act(model, None, model_id=identity, check_model=False)
    shape = model_shape(model)
    settings = config.searched()
    cal, cal_data = held_out_examples(lm, tasks, config.per_task, config.seed)
    val, val_data = held_out_examples(lm, tasks, config.val_per_task, config.seed, offset=config.per_task)
    if not cal:
        raise ValueError(f"none of {tasks} has a training split to search on")

    inputs = {
        "model": identity, "shape": shape, "calibration": examples_digest(cal), "validation": examples_digest(val),
        "settings": settings.digest(), "chunk": config.chunk, "seed": config.seed,
    }  # the candidates are not inputs: their exact results live under a name derived from them
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    ckpt_dir = Path(config.checkpoint) if config.checkpoint else cache_dir() / "search" / digest[:16]
    rank, world = _rank_world()
    if config.restart and rank == 0 and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    store = SearchStore(ckpt_dir, digest, inputs)
    job = SearchJob(config, model, shape, settings, store, rank, world, tasks)
    return job.run(cal, val, identity, {"calibration": cal_data, "validation": val_data})


_STAGES = ("candidates and a random control sample confirmed exactly, kept by a stratified paired test, combined greedily "
           "on a disjoint validation slice of the training data, settings chosen on that slice")
METHODS = {  # the map's provenance.method, per rule
    "act": "act-eval search (second generation): every head screened by a first-order estimate of its effect on "
           f"log p(gold | choices), {_STAGES}",
    "first_token": "act-eval search (second generation), first-token scaling (ZeroTuning's idea, Han et al., 2025): "
                   "every head screened by a first-order estimate of the effect on log p(gold | choices) of multiplying "
                   f"its attention to the first token by the factor and renormalising, {_STAGES}",
}


@dataclass
class SearchJob:
    """The stages on a loaded model and drawn examples (tests drive it with tiny models)."""

    config: SearchConfig
    model: object
    shape: dict
    settings: object
    store: object
    rank: int
    world: int
    tasks: list[str]

    def run(self, cal: list, val: list, identity: str, data: dict) -> HeadMap | None:
        screened = self.screen(cal)
        confirmed = self.confirm(cal, screened)
        if self.rank != 0:
            return None
        return self.finish(cal, val, screened, confirmed, identity, data)

    def todo(self, names: list[str]) -> list[int]:
        """Chunks still to compute: this rank's share first, then the others' (a rank that died or
        lags is covered; results are deterministic and written atomically, so a chunk done twice is harmless)."""
        missing = [i for i in range(len(names)) if not self.store.has(names[i])]
        return sorted(missing, key=lambda i: (i % self.world != self.rank, i))

    # --- stage 1 -------------------------------------------------------------------------------

    def screen(self, cal: list) -> dict:
        """Per example: baseline logp and correctness, and the estimate per head (rounded for size)."""
        from tqdm.auto import tqdm

        from act_eval.search.screen import screen_examples

        chunks = _chunks(len(cal), self.config.chunk)
        names = [f"screen/chunk_{i:04d}" for i in range(len(chunks))]
        todo = self.todo(names)
        bar = tqdm(total=sum(len(chunks[i]) for i in todo), desc="screen (forward + backward)", disable=self.rank != 0)
        for i in todo:
            if self.store.has(names[i]):  # another process finished it meanwhile
                continue
            rows = screen_examples(self.model, [cal[j] for j in chunks[i]], self.settings, self.config.batch_size)
            self.store.save(names[i], {
                "logp": [r.logp for r in rows], "correct": [r.correct for r in rows],
                "grad": [[float(f"{g:.5g}") for g in r.grad.flatten().tolist()] for r in rows],
            })
            bar.update(len(chunks[i]))
        bar.close()
        self.store.wait_for(names)
        parts = [self.store.load(n) for n in names]
        return {k: [v for p in parts for v in p[k]] for k in ("logp", "correct", "grad")}

    # --- stage 2 -------------------------------------------------------------------------------

    def estimates(self, screened: dict, cal: list, task: str | None = None) -> dict[tuple[int, int], float]:
        """Per head, the stratified mean estimate (mean of per-task means), or one task's mean."""
        heads = self.shape["num_heads"]
        by_task: dict[str, list[list[float]]] = {}
        for ex, grad in zip(cal, screened["grad"]):
            if task is None or ex.task == task:
                by_task.setdefault(ex.task, []).append(grad)
        means = [[sum(col) / len(rows) for col in zip(*rows)] for rows in by_task.values()]
        pooled = [sum(col) / len(means) for col in zip(*means)]
        return {(i // heads, i % heads): v for i, v in enumerate(pooled)}

    def candidates(self, screened: dict, cal: list) -> dict:
        """Which heads the exact engine confirms: pooled top-k, random controls, per-task top picks."""
        est = self.estimates(screened, cal)
        ranked = sorted(est, key=lambda h: (-est[h], h))
        top = ranked[: self.config.top_k]
        rest = sorted(set(est) - set(top))
        controls = sorted(random.Random(f"{self.config.seed}:controls").sample(rest, min(self.config.controls, len(rest))))
        per_task = {}
        for task in sorted({e.task for e in cal}):
            t_est = self.estimates(screened, cal, task)
            picks = [h for h in sorted(t_est, key=lambda h: (-t_est[h], h)) if h not in top and h not in controls]
            per_task[task] = picks[: self.config.per_task_candidates]
        return {"top": top, "controls": controls, "per_task": per_task}

    def confirm(self, cal: list, screened: dict) -> dict:
        """Exact per-head, per-example log p(gold | choices) and correctness for every candidate."""
        from tqdm.auto import tqdm

        from act_eval.search.engine import exact_scores
        from act_eval.search.selection import as_layers

        cand = self.candidates(screened, cal)
        pooled = cand["top"] + cand["controls"]
        chunks = _chunks(len(cal), self.config.chunk)
        tag = hashlib.sha256(json.dumps(cand, sort_keys=True, default=list).encode()).hexdigest()[:12]
        self.store.save(f"exact_{tag}/candidates", cand)
        names = [f"exact_{tag}/chunk_{i:04d}" for i in range(len(chunks))]
        todo = self.todo(names)
        bar = tqdm(total=sum(len(chunks[i]) for i in todo), desc=f"confirm exactly ({len(pooled)} heads + per task)",
                   disable=self.rank != 0)
        for i in todo:
            if self.store.has(names[i]):
                continue
            rows = []
            for j in chunks[i]:
                heads = as_layers(pooled + cand["per_task"].get(cal[j].task, []))
                scored = exact_scores(self.model, [cal[j]], self.settings, heads)[0]
                rows.append({"logp": scored.logp, "correct": scored.correct,
                             "heads": {_key(*h): [float(f"{v[0]:.9g}"), v[1]] for h, v in scored.heads.items()}})
                bar.update(1)
            self.store.save(names[i], rows)
        bar.close()
        self.store.wait_for(names)
        rows = [r for n in names for r in self.store.load(n)]
        return {"candidates": cand, "rows": rows}

    # --- stages 3-4 (rank 0) -------------------------------------------------------------------

    def evaluator(self, val: list, tag: str, done: Callable[[int], object]):
        """``evaluate(heads, settings)`` on ``val``, each result stored (a resumed search re-reads it);
        ``done(1)`` after each (a progress bar's update)."""
        from act_eval.search.engine import map_scores

        def evaluate(heads: dict[int, list[int]], settings) -> list[tuple[float, bool]]:
            key = json.dumps([tag, sorted((int(k), sorted(v)) for k, v in heads.items() if v), *settings.key()])
            name = "evals/" + hashlib.sha256(key.encode()).hexdigest()[:20]
            if not self.store.has(name):
                scores = map_scores(self.model, heads, val, settings)
                self.store.save(name, {"key": key, "scores": [[float(f"{a:.9g}"), b] for a, b in scores]})
            done(1)
            return [tuple(s) for s in self.store.load(name)["scores"]]

        return evaluate

    def keep(self, rows: list[dict], cal: list, heads: list[tuple[int, int]], task: str | None = None):
        from act_eval.search.selection import keep_heads

        idx = [i for i, e in enumerate(cal) if task is None or e.task == task]
        per_head = {h: ([rows[i]["heads"][_key(*h)][0] for i in idx], [rows[i]["heads"][_key(*h)][1] for i in idx]) for h in heads}
        c = self.config
        return keep_heads([rows[i]["logp"] for i in idx], [rows[i]["correct"] for i in idx], per_head,
                          [cal[i].task for i in idx], self.shape["num_layers"] * self.shape["num_heads"], c.keep_rule,
                          c.alpha, c.min_effect, c.harm_alpha)

    def agreement(self, stats, est: dict) -> dict:
        from act_eval.search.selection import spearman

        exact = {(s.layer, s.head): s.effect for s in stats}
        heads = sorted(exact)
        return {
            "heads": len(heads),
            "spearman": spearman([est[h] for h in heads], [exact[h] for h in heads]),
            "sign_agreement": sum((est[h] > 0) == (exact[h] > 0) for h in heads) / len(heads) if heads else None,
        }

    def build(self, label: str, stats, val: list, tasks: list[str]) -> dict:
        """Greedy map at the searched setting, then the settings grid, on ``val``."""
        from tqdm.auto import tqdm

        from act_eval.search.combine import choose_settings, greedy_map, slice_score
        from act_eval.search.selection import as_layers

        c = self.config
        bar = tqdm(desc=f"combine and choose settings ({label}, {len(val)} validation examples)", unit=" maps",
                   disable=self.rank != 0)
        evaluate = self.evaluator(val, label, bar.update)
        kept = [(s.layer, s.head) for s in stats if s.kept]
        searched = self.settings
        chosen, trajectory = greedy_map(kept, evaluate, tasks, searched, c.patience, c.guard_alpha)
        heads = as_layers(chosen)
        if heads:
            best, grid = choose_settings(heads, evaluate, tasks, searched, c.grid())
        else:
            best, grid = searched, []
        final = slice_score(evaluate(heads, best), tasks)
        baseline = slice_score(evaluate({}, searched), tasks)
        bar.close()
        return {"heads": heads, "settings": best, "kept": kept, "trajectory": trajectory, "grid": grid,
                "validation": {"baseline": baseline.as_dict(), "map": final.as_dict()}}

    def finish(self, cal, val, screened, confirmed, identity, data) -> HeadMap:
        rows, cand = confirmed["rows"], confirmed["candidates"]
        pooled = cand["top"] + cand["controls"]
        stats = self.keep(rows, cal, pooled)
        est = self.estimates(screened, cal)
        by_head = {(s.layer, s.head): s for s in stats}
        agreement = {
            "candidates": self.agreement([by_head[h] for h in cand["top"]], est),
            "controls": self.agreement([by_head[h] for h in cand["controls"]], est),
            "all": self.agreement(stats, est),
        }
        val_tasks = [e.task for e in val]
        family = self.build("family", stats, val, val_tasks)
        common = {"identity": identity, "data": data, "agreement": agreement, "candidates": cand, "cal": cal, "val": val}
        out = Path(self.config.out)
        all_tasks = sorted({e.task for e in cal})
        hm = self.write(out, self.config.name or out.name.removesuffix(".json"), family_of(self.tasks), all_tasks, family, stats, common)
        if self.config.task_maps:
            for task in all_tasks:
                t_heads = pooled + cand["per_task"].get(task, [])
                t_stats = self.keep(rows, cal, t_heads, task)
                t_val = [e for e in val if e.task == task]
                if not t_val:
                    continue
                built = self.build(task, t_stats, t_val, [task] * len(t_val))
                name = f"{hm.name}.{task}"
                self.write(Path(self.config.task_maps) / f"{name}.json", name, task, [task], built, t_stats, common)
        return hm

    def write(self, path: Path, name: str, family: str, tasks_used: list[str], built: dict, stats, common: dict) -> HeadMap:
        c = self.config
        chosen = built["settings"].recorded()
        hm = HeadMap(
            model=common["identity"], heads={layer: tuple(hs) for layer, hs in built["heads"].items()},
            name=name, task_family=family, **chosen,
            provenance={
                "method": METHODS[c.rule],
                "tool": f"act-eval {__version__}",
                "model": c.model,
                "prompt_protocol": _protocol(tasks_used),
                "tasks": tasks_used,
                "data": {**common["data"], "seed": c.seed, "calibration_examples": len(common["cal"]),
                         "validation_examples": len(common["val"])},
                "searched_setting": self.settings.recorded(),
                "keep_rule": {"rule": c.keep_rule, "alpha": c.alpha, "min_effect_nats": c.min_effect,
                              "harm_alpha": c.harm_alpha, "test": "per-task one-sample t (scipy), Stouffer-combined "
                              "(weights sqrt n), Holm over every head of the model; no task significantly hurt"
                              if c.keep_rule == "effect" else "wins > losses and one-sided exact sign test p <= alpha"},
                "screen": {"top_k": c.top_k, "controls": c.controls, "per_task_candidates": c.per_task_candidates,
                           "candidates": {"top": [list(h) for h in common["candidates"]["top"]],
                                          "controls": [list(h) for h in common["candidates"]["controls"]],
                                          "per_task": {t: [list(h) for h in hs] for t, hs in common["candidates"]["per_task"].items()}},
                           "estimate_vs_exact": common["agreement"]},
                "combination": {"rule": "greedy on validation: stratified objective rises, task-mean accuracy does not "
                                        "fall, no task's paired change in log p(gold) significantly negative (one-sided t, "
                                        "p < guard_alpha, per task)",
                                "patience": c.patience, "guard_alpha": c.guard_alpha, "kept": [list(h) for h in built["kept"]],
                                "trajectory": built["trajectory"]},
                "settings": {**c.grid_axes(), "chosen": chosen, "grid": built["grid"],
                             "rule": "highest validation objective whose accuracy is not below the searched setting's"},
                "validation": built["validation"],
                "head_stats": [s.as_dict() for s in stats],
            },
            **self.shape,
        )
        hm.save(path)
        return hm
