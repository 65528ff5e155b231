"""Combining kept heads into a map, and choosing beta and the threshold, on a validation slice.

Heads interact, so single-head effects do not add up. The map is built greedily on a slice of
the *training* data disjoint from the calibration slice: candidates are tried in order of their
calibration effect, and one is accepted only when, with it added to the map so far,

* the stratified objective (the mean over tasks of each task's mean log p(gold | choices)) rises,
* the task-mean accuracy does not fall (the guard: the objective is what the search optimises,
  accuracy is what a user reports), and
* **no task's** mean log p(gold | choices) falls by more than ``tolerance`` (default 0): a head
  that helps the pool by hurting one task is never accepted.

The search stops after ``patience`` consecutive rejections. The settings grid then scores the
final map at every (beta, threshold) pair on the same slice and picks the best objective whose
accuracy is not below the searched setting's; every score goes into the map's provenance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from act_eval.selection import as_layers

Evaluate = Callable[[dict[int, list[int]], float, float], list[tuple[float, bool]]]  # heads, threshold, beta


@dataclass(frozen=True)
class SliceScore:
    objective: float  # mean over tasks of mean log p(gold | choices)
    accuracy: float  # mean over tasks of accuracy
    per_task: dict  # task -> {"logp", "acc", "n"}

    def as_dict(self) -> dict:
        return asdict(self)


def slice_score(scores: list[tuple[float, bool]], tasks: list[str]) -> SliceScore:
    """Per-task means, then their mean: every task weighs the same."""
    per_task = {}
    for task in sorted(set(tasks)):
        rows = [s for s, t in zip(scores, tasks) if t == task]
        per_task[task] = {"n": len(rows), "logp": sum(r[0] for r in rows) / len(rows), "acc": sum(r[1] for r in rows) / len(rows)}
    k = len(per_task)
    return SliceScore(sum(r["logp"] for r in per_task.values()) / k, sum(r["acc"] for r in per_task.values()) / k, per_task)


def accepts(new: SliceScore, old: SliceScore, tolerance: float = 0.0) -> bool:
    """The greedy acceptance rule (module docstring)."""
    return (
        new.objective > old.objective
        and new.accuracy >= old.accuracy
        and all(new.per_task[t]["logp"] >= old.per_task[t]["logp"] - tolerance for t in old.per_task)
    )


def greedy_map(
    candidates: list[tuple[int, int]], evaluate: Evaluate, tasks: list[str], threshold: float, beta: float,
    patience: int = 3, tolerance: float = 0.0,
) -> tuple[list[tuple[int, int]], list[dict]]:
    """The accepted heads in order, and one trajectory row per candidate tried."""
    chosen: list[tuple[int, int]] = []
    current = slice_score(evaluate({}, threshold, beta), tasks)
    trajectory = [{"step": 0, "tried": None, "accepted": None, "score": current.as_dict()}]
    misses = 0
    for step, head in enumerate(candidates, start=1):
        trial = slice_score(evaluate(as_layers(chosen + [head]), threshold, beta), tasks)
        ok = accepts(trial, current, tolerance)
        trajectory.append({"step": step, "tried": list(head), "accepted": ok, "score": trial.as_dict()})
        if ok:
            chosen.append(head)
            current, misses = trial, 0
        else:
            misses += 1
            if misses >= patience:
                break
    return chosen, trajectory


def choose_settings(
    heads: dict[int, list[int]], evaluate: Evaluate, tasks: list[str], searched: tuple[float, float],
    betas: list[float], thresholds: list[float],
) -> tuple[tuple[float, float], list[dict]]:
    """(threshold, beta) for the final map, and every grid point's score."""
    base = slice_score(evaluate(heads, *searched), tasks)
    grid = []
    best, best_score = searched, base
    for threshold in thresholds:
        for beta in betas:
            score = base if (threshold, beta) == searched else slice_score(evaluate(heads, threshold, beta), tasks)
            grid.append({"threshold": threshold, "beta": beta, "objective": score.objective, "accuracy": score.accuracy,
                         "per_task": score.per_task})
            if score.accuracy >= base.accuracy and score.objective > best_score.objective:
                best, best_score = (threshold, beta), score
    return best, grid
