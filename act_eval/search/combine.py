"""Combining kept heads into a map, and choosing the rule's settings, on a validation slice.

Heads interact, so single-head effects do not add up. The map is built greedily on a slice of
the *training* data disjoint from the calibration slice: candidates are tried in order of their
calibration effect, and one is accepted only when, with it added to the map so far,

* the stratified objective (the mean over tasks of each task's mean log p(gold | choices)) rises,
* the task-mean accuracy does not fall (the guard: the objective is what the search optimises,
  accuracy is what a user reports), and
* **no task is significantly hurt**: per task, the paired change in log p(gold | choices) from
  the map so far to the map with the head (the same validation examples, scored both ways) is
  tested with a one-sided one-sample t-test (:func:`act_eval.search.selection.task_tests`, the keep
  rule's harm test); a head is refused when any task's p < ``guard_alpha`` (default 0.05,
  uncorrected across tasks, i.e. cautious). A head that helps the pool by hurting one task is
  never accepted. The first version refused a head when any task's mean fell at all; with 20
  validation documents per task that refused every head on noise (the first SmolLM2 search), so
  the guard is now a test, as the keep rule is. ``guard_alpha = 0`` switches it off.

The search stops after ``patience`` consecutive rejections. The settings grid then scores the
final map at every grid point on the same slice (ACT: every (threshold, beta) pair; first-token
scaling: every factor) and picks the best objective whose accuracy is not below the searched
setting's; every score goes into the map's provenance. Settings are
:class:`act_eval.search.engine.Settings`, whatever the rule: nothing here depends on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from act_eval.search.config import SearchConfig
from act_eval.search.selection import as_layers, task_tests

if TYPE_CHECKING:
    from act_eval.search.engine import Settings

Evaluate = Callable[[dict[int, list[int]], "Settings"], list[tuple[float, bool]]]  # heads, settings


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


def harmed_tasks(new: list[tuple[float, bool]], old: list[tuple[float, bool]], tasks: list[str],
                 guard_alpha: float) -> tuple[list[str], dict]:
    """Tasks whose paired change from ``old`` to ``new`` is significantly negative, and every task's test."""
    deltas = np.asarray([a[0] - b[0] for a, b in zip(new, old)], dtype=float)
    tests = task_tests(deltas, tasks)
    return sorted(t for t, r in tests.items() if r["p_less"] < guard_alpha), tests


def accepts(new: list[tuple[float, bool]], old: list[tuple[float, bool]], tasks: list[str],
            guard_alpha: float = SearchConfig.guard_alpha) -> tuple[bool, list[str], dict]:
    """The greedy acceptance rule (module docstring); also the tasks that blocked the head, and every task's test."""
    harmed, tests = harmed_tasks(new, old, tasks, guard_alpha)
    a, b = slice_score(new, tasks), slice_score(old, tasks)
    return a.objective > b.objective and a.accuracy >= b.accuracy and not harmed, harmed, tests


def greedy_map(
    candidates: list[tuple[int, int]], evaluate: Evaluate, tasks: list[str], settings: "Settings",
    patience: int = SearchConfig.patience, guard_alpha: float = SearchConfig.guard_alpha,
) -> tuple[list[tuple[int, int]], list[dict]]:
    """The accepted heads in order, and one trajectory row per candidate tried."""
    chosen: list[tuple[int, int]] = []
    current = evaluate({}, settings)
    trajectory = [{"step": 0, "tried": None, "accepted": None, "score": slice_score(current, tasks).as_dict()}]
    misses = 0
    for step, head in enumerate(candidates, start=1):
        trial = evaluate(as_layers(chosen + [head]), settings)
        ok, harmed, tests = accepts(trial, current, tasks, guard_alpha)
        trajectory.append({"step": step, "tried": list(head), "accepted": ok, "score": slice_score(trial, tasks).as_dict(),
                           "harmed_tasks": harmed, "p_less": {t: r["p_less"] for t, r in tests.items()}})
        if ok:
            chosen.append(head)
            current, misses = trial, 0
        else:
            misses += 1
            if misses >= patience:
                break
    return chosen, trajectory


def choose_settings(
    heads: dict[int, list[int]], evaluate: Evaluate, tasks: list[str], searched: "Settings", grid: list["Settings"],
) -> tuple["Settings", list[dict]]:
    """The settings for the final map, and every grid point's score (in ``grid``'s order)."""
    base = slice_score(evaluate(heads, searched), tasks)
    rows = []
    best, best_score = searched, base
    for settings in grid:
        score = base if settings == searched else slice_score(evaluate(heads, settings), tasks)
        rows.append({**settings.recorded(), "objective": score.objective, "accuracy": score.accuracy, "per_task": score.per_task})
        if score.accuracy >= base.accuracy and score.objective > best_score.objective:
            best, best_score = settings, score
    return best, rows
