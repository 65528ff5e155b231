"""Keep rules, multiplicity control and the greedy combination, on hand-made numbers against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from act_eval.search.combine import accepts, choose_settings, greedy_map, slice_score
from act_eval.search.engine import Settings
from act_eval.search.selection import holm, keep_heads, spearman, stratified_test


def test_holm_counts_every_head_of_the_model():
    # step-down by hand: sorted p = 0.001, 0.01, 0.04 in a family of 10 -> 10*0.001, 9*0.01, max(8*0.04, .09)
    assert holm([0.04, 0.001, 0.01], total=10) == pytest.approx([0.32, 0.01, 0.09])
    assert holm([0.2, 0.3], total=2) == pytest.approx([0.4, 0.4])  # monotone: never below an earlier step
    assert holm([0.5], total=3) == [1.0]
    with pytest.raises(ValueError):
        holm([0.1, 0.2], total=1)


def test_stratified_test_is_per_task_t_combined_by_stouffer():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.03, 0.05, 40), rng.normal(0.01, 0.08, 25)
    deltas, tasks = list(a) + list(b), ["a"] * 40 + ["b"] * 25
    effect, p, per_task = stratified_test(deltas, tasks)
    assert effect == pytest.approx((a.mean() + b.mean()) / 2)  # tasks weigh the same, not examples
    pa = stats.ttest_1samp(a, 0, alternative="greater").pvalue
    pb = stats.ttest_1samp(b, 0, alternative="greater").pvalue
    assert per_task["a"]["p_greater"] == pytest.approx(pa) and per_task["b"]["p_greater"] == pytest.approx(pb)
    assert per_task["b"]["p_less"] == pytest.approx(stats.ttest_1samp(b, 0, alternative="less").pvalue)
    z = (np.sqrt(40) * stats.norm.isf(pa) + np.sqrt(25) * stats.norm.isf(pb)) / np.sqrt(40 + 25)
    assert p == pytest.approx(stats.norm.sf(z))  # Stouffer, weights sqrt(n)


def _heads(base, effects):
    """Per head: logp = base + effect per example, correctness unchanged."""
    return {h: ([x + d for x, d in zip(base, eff)], [True] * len(base)) for h, eff in effects.items()}


def test_keep_rule_effect_needs_significance_after_holm_a_minimum_effect_and_no_hurt_task():
    rng = np.random.default_rng(1)
    n = 60
    tasks = ["a"] * n + ["b"] * n
    base = list(rng.normal(-1, 0.3, 2 * n))
    noise = rng.normal(0, 0.01, 2 * n)
    effects = {
        (0, 0): 0.02 + noise,  # helps both tasks clearly
        (0, 1): 0.003 + noise / 10,  # significant but below the minimum effect
        (1, 0): np.r_[0.08 + noise[:n], -0.02 + noise[n:]],  # helps the pool by hurting task b
        (1, 1): noise,  # nothing
    }
    got = {(s.layer, s.head): s for s in keep_heads(base, [True] * 2 * n, _heads(base, effects), tasks, 270, min_effect=0.005)}
    assert [h for h, s in got.items() if s.kept] == [(0, 0)]
    assert got[(1, 0)].effect > got[(0, 0)].effect and got[(1, 0)].per_task["b"]["p_less"] < 0.05
    assert got[(0, 1)].p_holm < 0.05 and got[(0, 1)].effect < 0.005
    ps = [s.p_value for s in got.values()]
    assert [s.p_holm for s in got.values()] == pytest.approx(holm(ps, 270))
    # with only 3 examples per task the same head is not significant once 270 heads are counted
    short = [x for i, x in enumerate(base) if i % n < 3]
    small = keep_heads(short, [True] * 6, _heads(short, {(0, 0): 0.02 + rng.normal(0, 0.03, 6)}), ["a"] * 3 + ["b"] * 3, 270)
    assert not small[0].kept and small[0].p_holm > 0.05


def test_keep_rule_flips_is_the_first_generation_sign_test():
    base = [True, False, False, False, True, False, False, False]
    heads = {(0, 0): ([0.0] * 8, [True] * 7 + [False]),  # 5 wins, 0 losses
             (1, 0): ([0.0] * 8, [False, True, True, True, True, False, False, False])}  # 3 wins, 1 loss
    got = {(s.layer, s.head): s for s in keep_heads([0.0] * 8, base, heads, ["t"] * 8, 270, rule="flips", alpha=0.2)}
    assert (got[(0, 0)].wins, got[(0, 0)].losses, got[(0, 0)].p_value) == (5, 0, pytest.approx(1 / 32))
    assert got[(1, 0)].p_value == pytest.approx(5 / 16) and not got[(1, 0)].kept and got[(0, 0)].kept
    with pytest.raises(ValueError, match="keep rule"):
        keep_heads([0.0], [True], {}, ["t"], 1, rule="votes")


def test_spearman_matches_scipy():
    est, exact = [0.1, 0.3, 0.2, -0.1], [0.05, 0.2, 0.25, -0.3]
    assert spearman(est, exact) == pytest.approx(stats.spearmanr(est, exact).statistic)
    assert spearman([1.0, 2.0], [1.0, 2.0]) is None


def test_greedy_never_accepts_a_head_that_helps_the_pool_by_hurting_one_task():
    tasks = ["a", "a", "b", "b"]

    def scores(shift_a, shift_b, correct=(True, False, True, False)):
        return [(-1 + shift_a, correct[0]), (-1 + shift_a, correct[1]), (-1 + shift_b, correct[2]), (-1 + shift_b, correct[3])]

    table = {
        (): scores(0, 0),
        ((0, (1,)),): scores(0.3, -0.01),  # pooled +0.145, task b down: rejected
        ((1, (2,)),): scores(0.05, 0.02),  # both up: accepted
        ((1, (2, 3)),): scores(0.06, 0.03, (False, False, True, False)),  # objective up, accuracy down: rejected
        ((1, (2,)), (2, (0,))): scores(0.1, 0.02),  # accepted
    }

    def evaluate(heads, settings):
        return table[tuple((k, tuple(v)) for k, v in heads.items())]

    chosen, trajectory = greedy_map([(0, 1), (1, 2), (1, 3), (2, 0)], evaluate, tasks, Settings(), patience=3)
    assert chosen == [(1, 2), (2, 0)]
    assert [row["accepted"] for row in trajectory] == [None, False, True, False, True]
    assert trajectory[1]["harmed_tasks"] == ["b"]
    old, new = table[()], table[((0, (1,)),)]
    assert slice_score(new, tasks).objective > slice_score(old, tasks).objective
    assert not accepts(new, old, tasks)[0] and accepts(new, old, tasks, guard_alpha=0.0)[0]  # 0 switches the guard off


def test_greedy_guard_refuses_only_a_significant_drop_on_one_task():
    """A task whose mean falls by noise does not block a head; one that falls consistently does (paired t, one-sided)."""
    from scipy import stats as st

    tasks = ["a"] * 6 + ["b"] * 6
    old = [(-1.0, False)] * 12
    noisy_b = [0.30, -0.35, 0.20, -0.25, 0.10, -0.05]  # mean -0.0083, sd 0.25
    steady_b = [-0.05, -0.06, -0.04, -0.05, -0.07, -0.05]
    for b, blocked in ((noisy_b, False), (steady_b, True)):
        new = [(-0.8, False)] * 6 + [(-1.0 + d, False) for d in b]
        ok, harmed, tests = accepts(new, old, tasks)
        p = float(st.ttest_1samp(b, 0.0, alternative="less").pvalue)
        assert tests["b"]["p_less"] == pytest.approx(p) and (p < 0.05) is blocked
        assert ok is not blocked and harmed == (["b"] if blocked else [])


def test_settings_are_chosen_on_validation_with_accuracy_as_a_guard():
    tasks = ["a", "b"]
    results = {(0.1, 0.4): [(-1.0, True), (-1.0, False)], (0.1, 0.0): [(-0.5, False), (-0.5, False)],  # better objective, worse acc
               (0.1, 0.7): [(-0.9, True), (-1.0, False)], (0.2, 0.4): [(-2.0, True), (-2.0, True)],
               (0.2, 0.0): [(-3.0, True), (-3.0, True)], (0.2, 0.7): [(-1.5, True), (-1.5, False)]}
    grid = [Settings(t, b) for t in (0.1, 0.2) for b in (0.0, 0.4, 0.7)]
    chosen, rows = choose_settings({0: [1]}, lambda heads, s: results[(s.threshold, s.beta)], tasks, Settings(0.1, 0.4), grid)
    assert chosen == Settings(0.1, 0.7) and len(rows) == 6
    assert [(r["threshold"], r["beta"]) for r in rows] == [(s.threshold, s.beta) for s in grid]  # ACT's rows as before


def test_factors_are_chosen_the_same_way():
    tasks = ["a", "b"]
    results = {2.0: [(-1.0, True), (-1.0, False)], 0.5: [(-0.5, False), (-0.5, False)],  # better objective, worse acc
               1.25: [(-0.9, True), (-1.0, False)]}
    grid = [Settings(rule="first_token", factor=f) for f in (0.5, 1.25, 2.0)]
    chosen, rows = choose_settings({0: [1]}, lambda heads, s: results[s.factor], tasks, grid[-1], grid)
    assert chosen == grid[1]
    assert [{k: r[k] for k in ("rule", "factor")} for r in rows] == [{"rule": "first_token", "factor": f} for f in (0.5, 1.25, 2.0)]
    assert "threshold" not in rows[0] and "beta" not in rows[0]
