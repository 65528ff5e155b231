"""Which heads to keep: the keep rules, their multiplicity control, and the estimate-vs-exact check.

Effect of a head on one example: the change in log p(gold | choices) when that head alone is
calibrated (the continuous quantity whose argmax is lm-eval's acc), plus the change in correctness.

Keep rule ``effect`` (the default):

* **Paired one-sample t-test per task** (``scipy.stats.ttest_1samp`` on the per-example changes).
  The t-test tests the *mean* change, which is what the greedy combination then sums and what a
  user's average log-probability sees; Wilcoxon's signed-rank test tests a pseudo-median, and a
  head can move most examples up a little while moving a few down a lot. With 100+ examples per
  task the t statistic's normal approximation holds for these bounded, roughly symmetric changes.
* **Stratified by task**: examples from different tasks are not exchangeable (one head moved AG
  News by +0.155 nats and TREC by -0.068), so the per-task one-sided p-values are combined with
  Stouffer's method weighted by sqrt(n) (``scipy.stats.combine_pvalues``), and the effect size is
  the mean of the per-task means (every task weighs the same, whatever its slice size).
* **No task may be hurt**: a head whose effect on any task is significantly negative (one-sided
  t-test, p < ``harm_alpha``, uncorrected, i.e. cautious) is not kept, however much it helps the pool.
* **Multiplicity**: Holm's step-down over *every head of the model* (``num_heads_total``), not only
  the ones tested exactly: heads that were screened out count as untested hypotheses (p = 1), and
  Holm is monotone, so the family-wise error over all heads stays at most ``alpha``; BH would
  control only the false discovery rate, and a map is a list a user applies in full.
* **Minimum effect**: the stratified mean change must reach ``min_effect`` nats.

Keep rule ``flips`` (the first generation, kept for comparison): more wins (wrong -> right) than
losses, and a one-sided exact sign test on the discordant examples with p <= ``alpha``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as st

from act_eval.compare.stats import sign_test_greater
from act_eval.search.config import KEEP_RULES, SearchConfig


@dataclass(frozen=True)
class HeadStat:
    layer: int
    head: int
    n: int
    wins: int
    losses: int
    effect: float  # stratified mean change in log p(gold | choices), nats
    per_task: dict  # task -> {"n", "mean", "p_less"}
    p_value: float  # effect rule: stratified one-sided p; flips rule: sign test
    p_holm: float  # Holm-adjusted over every head of the model
    kept: bool

    def as_dict(self) -> dict:
        return asdict(self)


def holm(p_values: list[float], total: int) -> list[float]:
    """Holm-adjusted p-values for ``p_values`` within a family of ``total`` hypotheses (the rest untested, p = 1)."""
    if total < len(p_values):
        raise ValueError(f"the family ({total}) is smaller than the tests ({len(p_values)})")
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (total - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def task_tests(deltas: np.ndarray, tasks: list[str]) -> dict:
    """Per task: n, mean change and both one-sided paired t-test p-values (the sign decides when nothing varies)."""
    out = {}
    for task in sorted(set(tasks)):
        d = deltas[[t == task for t in tasks]]
        if len(d) < 2 or np.all(d == d[0]):  # no spread (a head with no sink here): the sign decides
            greater, less = (0.0, 1.0) if d.mean() > 0 else (1.0, 0.0) if d.mean() < 0 else (1.0, 1.0)
        else:
            greater = float(st.ttest_1samp(d, 0.0, alternative="greater").pvalue)
            less = float(st.ttest_1samp(d, 0.0, alternative="less").pvalue)
        out[task] = {"n": int(len(d)), "mean": float(d.mean()), "p_greater": greater, "p_less": less}
    return out


def stratified_test(deltas: list[float], tasks: list[str]) -> tuple[float, float, dict]:
    """(mean of per-task mean changes, Stouffer-combined one-sided p, per-task results)."""
    per_task = task_tests(np.asarray(deltas, dtype=float), tasks)
    effect = float(np.mean([r["mean"] for r in per_task.values()]))
    ps = [min(max(r["p_greater"], 1e-300), 1.0 - 1e-16) for r in per_task.values()]
    if len(ps) == 1:
        return effect, ps[0], per_task
    weights = [np.sqrt(r["n"]) for r in per_task.values()]
    p = float(st.combine_pvalues(ps, method="stouffer", weights=weights).pvalue)
    return effect, p, per_task


def keep_heads(
    base_logp: list[float], base_correct: list[bool], heads: dict[tuple[int, int], tuple[list[float], list[bool]]],
    tasks: list[str], num_heads_total: int, rule: str = KEEP_RULES[0], alpha: float = SearchConfig.alpha,
    min_effect: float = SearchConfig.min_effect, harm_alpha: float = SearchConfig.harm_alpha,
) -> list[HeadStat]:
    """Every tested head's statistics and decision, best first (kept heads by effect, then p)."""
    if rule not in KEEP_RULES:
        raise ValueError(f"keep rule must be {' or '.join(map(repr, KEEP_RULES))}, not {rule!r}")
    rows = []
    for (layer, head), (logp, correct) in sorted(heads.items()):
        deltas = [a - b for a, b in zip(logp, base_logp)]
        wins = sum(c and not b for c, b in zip(correct, base_correct))
        losses = sum(b and not c for c, b in zip(correct, base_correct))
        effect, p, per_task = stratified_test(deltas, tasks)
        if rule == "flips":
            p = sign_test_greater(wins, losses)
        rows.append((layer, head, len(deltas), wins, losses, effect, per_task, p))
    adjusted = holm([r[-1] for r in rows], num_heads_total) if rule == "effect" else [r[-1] for r in rows]
    out = []
    for row, p_adj in zip(rows, adjusted):
        layer, head, n, wins, losses, effect, per_task, p = row
        if rule == "effect":
            harmless = all(r["p_less"] >= harm_alpha for r in per_task.values())
            kept = p_adj <= alpha and effect >= min_effect and harmless
        else:
            kept = wins > losses and p <= alpha
        out.append(HeadStat(layer, head, n, wins, losses, effect, per_task, p, p_adj, kept))
    return sorted(out, key=lambda s: (not s.kept, -s.effect if rule == "effect" else -(s.wins - s.losses), s.p_value, s.layer, s.head))


def spearman(estimates: list[float], exact: list[float]) -> float | None:
    """Rank correlation of screened estimates with exact effects (None with fewer than 3 pairs or no spread)."""
    if len(estimates) < 3 or len(set(estimates)) < 2 or len(set(exact)) < 2:
        return None
    return float(st.spearmanr(estimates, exact).statistic)


def as_layers(heads: list[tuple[int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for layer, head in heads:
        out.setdefault(layer, []).append(head)
    return {layer: sorted(hs) for layer, hs in sorted(out.items())}
