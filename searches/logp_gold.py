"""Did a map move the search's own objective on evaluation documents? The paired change in
log p(gold | choices) between two runs of the same multiple-choice tasks, from their logged samples.

Accuracy is the argmax of the choices' log-likelihoods; the search chooses heads on the log-softmax
of the gold choice over them. A map can raise that probability on documents it never saw without
moving any argmax (a model with a strong letter bias), and this says which happened: per task, the
mean change in nats, a paired t-test (scipy), how many documents changed their prediction, and
the change on the documents the baseline got right and on those it got wrong (a map that only
flattens an overconfident distribution lowers the first and raises the second).

It also asks the question directly: is the change more than a change of temperature? Each run's
choice log-likelihoods are divided by the one temperature per task that maximises that run's own
mean log p(gold) (fitted on the documents it is reported on: a diagnostic of what the map does, not
a choice of anything), and the paired change is measured again between the two tempered runs. A map
that only tempers an overconfident letter bias leaves nothing there.

    python searches/logp_gold.py BASELINE_RUN MAP_RUN --tasks act_multiple_choice_lite
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import optimize, stats
from scipy.special import log_softmax

from act_eval.lm.runs import check_paired, choice_scores, load_run, read_records, read_task_samples, select_tasks


FLAT = 1000.0  # the largest temperature searched: the choices are then all but uniform


def gold_logprobs(scores: list, temperature: float = 1.0) -> np.ndarray:
    """Per document: log p(gold | choices) with the choices' log-likelihoods divided by ``temperature``."""
    return np.array([log_softmax(np.asarray(s.loglikelihoods) / temperature)[s.gold] for s in scores])


def best_temperature(scores: list) -> float:
    """The temperature that maximises the mean log p(gold) over these documents (searched on log T)."""
    fit = optimize.minimize_scalar(lambda log_t: -gold_logprobs(scores, float(np.exp(log_t))).mean(),
                                   bounds=(np.log(0.05), np.log(FLAT)), method="bounded")
    return float(np.exp(fit.x))


def logp_gold(run, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Per document, ordered by doc_id: log p(gold | choices), the predicted choice, the gold one, and
    log p(gold | choices) at the run's best temperature for the task (returned last)."""
    _, records = read_records(run, task)
    scores = [choice_scores(task, r) for r in records]
    temperature = best_temperature(scores)
    return (gold_logprobs(scores),
            np.array([int(np.argmax(s.loglikelihoods)) for s in scores]),
            np.array([s.gold for s in scores]),
            gold_logprobs(scores, temperature), temperature)


def _temperature(t: float) -> str:
    return "flat" if t >= 100 else f"{t:.2f}"  # beyond 100 the mean barely moves: uniform in effect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline")
    parser.add_argument("run")
    parser.add_argument("--tasks", nargs="+")
    args = parser.parse_args()
    base, other = load_run(args.baseline), load_run(args.run)
    print("| task | n | mean log p(gold), baseline | change (nats) | p (paired t) | predictions changed | "
          "change where the baseline is right | where it is wrong | best T, baseline -> run | "
          "change, each at its best T (nats) | p (paired t) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for task in select_tasks({"baseline": base, "run": other}, args.tasks):
        check_paired(read_task_samples(base, task), read_task_samples(other, task), names=("baseline", "run"),
                     same_prompt=True)
        (a, pa, gold, ta, t_a), (b, pb, _, tb, t_b) = logp_gold(base, task), logp_gold(other, task)
        p = stats.ttest_rel(b, a).pvalue if np.any(a != b) else 1.0
        p_t = stats.ttest_rel(tb, ta).pvalue if np.any(ta != tb) else 1.0
        right = pa == gold
        split = [f"{np.mean(b[m] - a[m]):+.3f} ({int(m.sum())})" if m.any() else "–" for m in (right, ~right)]
        print(f"| {task} | {len(a)} | {a.mean():.3f} | {b.mean() - a.mean():+.3f} | {p:.2g} | {int(np.sum(pa != pb))} | "
              f"{split[0]} | {split[1]} | {_temperature(t_a)} -> {_temperature(t_b)} | {tb.mean() - ta.mean():+.3f} | {p_t:.2g} |")


if __name__ == "__main__":
    main()
