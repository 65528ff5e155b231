"""Did a map move the search's own objective on evaluation documents? The paired change in
log p(gold | choices) between two runs of the same multiple-choice tasks, from their logged samples.

Accuracy is the argmax of the choices' log-likelihoods; the search chooses heads on the log-softmax
of the gold choice over them. A map can raise that probability on documents it never saw without
moving any argmax (a model with a strong letter bias), and this says which happened: per task, the
mean change in nats, a paired t-test (scipy), how many documents changed their prediction, and
the change on the documents the baseline got right and on those it got wrong (a map that only
flattens an overconfident distribution lowers the first and raises the second).

    python searches/logp_gold.py BASELINE_RUN MAP_RUN --tasks act_multiple_choice_lite
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats
from scipy.special import log_softmax

from act_eval.lm.runs import check_paired, choice_scores, load_run, read_records, read_task_samples, select_tasks


def logp_gold(run, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per document, ordered by doc_id: log p(gold | choices), the predicted choice and the gold one."""
    _, records = read_records(run, task)
    scores = [choice_scores(task, r) for r in records]
    return (np.array([log_softmax(s.loglikelihoods)[s.gold] for s in scores]),
            np.array([int(np.argmax(s.loglikelihoods)) for s in scores]),
            np.array([s.gold for s in scores]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline")
    parser.add_argument("run")
    parser.add_argument("--tasks", nargs="+")
    args = parser.parse_args()
    base, other = load_run(args.baseline), load_run(args.run)
    print("| task | n | mean log p(gold), baseline | change (nats) | p (paired t) | predictions changed | "
          "change where the baseline is right | where it is wrong |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for task in select_tasks({"baseline": base, "run": other}, args.tasks):
        check_paired(read_task_samples(base, task), read_task_samples(other, task), names=("baseline", "run"),
                     same_prompt=True)
        (a, pa, gold), (b, pb, _) = logp_gold(base, task), logp_gold(other, task)
        p = stats.ttest_rel(b, a).pvalue if np.any(a != b) else 1.0
        right = pa == gold
        split = [f"{np.mean(b[m] - a[m]):+.3f} ({int(m.sum())})" if m.any() else "–" for m in (right, ~right)]
        print(f"| {task} | {len(a)} | {a.mean():.3f} | {b.mean() - a.mean():+.3f} | {p:.2g} | {int(np.sum(pa != pb))} | "
              f"{split[0]} | {split[1]} |")


if __name__ == "__main__":
    main()
