"""act_eval.compare.stats against published examples and values worked by hand (source stated per test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, false_discovery_control

from act_eval.compare import stats


def paired(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 outcome vectors with the given 2x2 paired table (documents in a fixed, mixed order)."""
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    order = np.random.default_rng(123).permutation(len(a))
    return np.array(a, dtype=float)[order], np.array(b, dtype=float)[order]


# ----------------------------------------------------------------------------- McNemar


def test_mcnemar_agresti_presidential_approval():
    # Agresti, Categorical Data Analysis (2nd ed. 2002, sec. 10.1; 3rd ed. 2013, sec. 11.1):
    # approval of the President in two surveys of the same 1600 people: 794 approve both times,
    # 150 approve then disapprove, 86 disapprove then approve, 570 disapprove both times.
    # z = (86 - 150) / sqrt(86 + 150) = -4.17, z^2 = 4096 / 236 = 17.36, p < 0.001 (3.1e-5 by hand
    # from the normal tail); with the continuity correction (|b-c| - 1)^2 / (b+c) = 3969/236 = 16.82.
    plain = stats.mcnemar_counts(150, 86, exact=False, correction=False)
    assert plain.statistic == pytest.approx(4096 / 236)
    assert round(plain.statistic, 2) == 17.36
    assert plain.p_value == pytest.approx(2 * (1 - 0.5 * math.erfc(-4.166 / math.sqrt(2))), rel=2e-3)
    corrected = stats.mcnemar_counts(150, 86)  # b + c = 236 >= 25: chi-square, corrected
    assert round(corrected.statistic, 2) == 16.82
    assert corrected.method == "McNemar chi-square, continuity-corrected"
    # the same table given as per-document outcomes
    a, b = paired(794, 150, 86, 570)
    from_docs = stats.mcnemar(a, b)
    assert (from_docs.b, from_docs.c) == (150, 86)
    assert from_docs.statistic == corrected.statistic


def test_mcnemar_exact_small_counts_by_hand():
    # by hand: b=1, c=6, n=7: P(X <= 1) = (C(7,0) + C(7,1)) / 2^7 = 8/128; two-sided 16/128 = 0.125
    result = stats.mcnemar(*paired(3, 1, 6, 2))
    assert (result.b, result.c, result.statistic) == (1, 6, None)
    assert result.method == "McNemar exact binomial"
    assert result.p_value == pytest.approx(16 / 128)
    # b=0, c=5: 2 * (1/2)^5 = 0.0625
    assert stats.mcnemar_counts(0, 5).p_value == pytest.approx(0.0625)
    # the doubled tail never exceeds 1: b = c = 3 gives 2 * P(X <= 3 | n=6) = 2 * 42/64 -> 1
    assert stats.mcnemar_counts(3, 3).p_value == 1.0


def test_mcnemar_switches_from_exact_to_chi_square_at_25_discordant_pairs():
    # b=7, c=17: 24 discordant pairs -> exact. By hand: sum_{k<=7} C(24,k) = 1 + 24 + 276 + 2024
    # + 10626 + 42504 + 134596 + 346104 = 536155; p = 2 * 536155 / 2^24 = 0.063915
    below = stats.mcnemar_counts(7, 17)
    assert stats.EXACT_MCNEMAR_BELOW == 25
    assert below.statistic is None
    assert below.p_value == pytest.approx(2 * 536155 / 2**24)
    assert below.p_value == pytest.approx(binomtest(7, 24, 0.5).pvalue)  # scipy's own exact test
    # b=8, c=17: 25 pairs -> chi-square with correction: (9 - 1)^2 / 25 = 2.56; z = 1.6,
    # p = 2 * (1 - Phi(1.6)) = 2 * 0.0548 = 0.1096 (normal table)
    at = stats.mcnemar_counts(8, 17)
    assert at.statistic == pytest.approx(2.56)
    assert at.p_value == pytest.approx(0.1096, abs=1e-4)
    # the per-document entry point uses the same switch
    assert stats.mcnemar(*paired(5, 7, 17, 5)).statistic is None
    assert stats.mcnemar(*paired(5, 8, 17, 5)).statistic == pytest.approx(2.56)


def test_mcnemar_ties_all_equal_and_one_document():
    # ties: b = c above the cut-off: corrected |b - c| - 1 is floored at 0 -> statistic 0, p = 1
    tie = stats.mcnemar_counts(20, 20)
    assert (tie.statistic, tie.p_value) == (0.0, 1.0)
    # all-equal inputs: no discordant pair, nothing to test -> p = 1
    same = np.array([1, 0, 1, 1.0])
    assert stats.mcnemar(same, same).p_value == 1.0
    # one document, one discordant pair: exact 2 * P(X <= 0 | n=1) = 2 * 1/2 = 1
    assert stats.mcnemar([0.0], [1.0]).p_value == 1.0


def test_mcnemar_refuses_fractional_empty_and_mismatched_input():
    with pytest.raises(ValueError, match="permutation"):
        stats.mcnemar([0.4, 1.0], [1.0, 0.0])  # e.g. correctness averaged over ICL seeds
    with pytest.raises(ValueError, match="empty"):
        stats.mcnemar([], [])
    with pytest.raises(ValueError, match="shape"):
        stats.mcnemar([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="non-negative"):
        stats.mcnemar_counts(-1, 3)


# ----------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of
        # seven methods", Stat Med 17:857-872, Table II, method 3 (Wilson score, no correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0000),
    ],
)
def test_wilson_newcombe_1998(x, n, low, high):
    got = stats.wilson_interval(x, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_one_trial_by_hand():
    # x = n: the lower limit is n / (n + z^2); n = 1, z = 1.959964: 1 / 4.841459 = 0.20655
    low, high = stats.wilson_interval(1, 1)
    assert low == pytest.approx(1 / (1 + 1.959964**2), rel=1e-6)
    assert high == 1.0
    # a wider level gives a wider interval
    assert stats.wilson_interval(5, 10, 0.99)[0] < stats.wilson_interval(5, 10, 0.95)[0]


def test_wilson_refuses_bad_input():
    with pytest.raises(ValueError, match="at least one trial"):
        stats.wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        stats.wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        stats.wilson_interval(1, 10, confidence=95)


# ----------------------------------------------------------------------------- permutation


def test_permutation_exact_equals_exact_mcnemar_for_01_outcomes():
    # Enumerating the 2^7 swaps of 7 discordant documents (b=1, c=6) gives
    # P(|b* - c*| >= 5) = 2 * 8/128 = 0.125: the exact McNemar p-value worked above.
    a, b = paired(3, 1, 6, 2)
    result = stats.paired_permutation_test(a, b)
    assert result.exact and result.n_permutations == 128
    assert result.diff == pytest.approx((6 - 1) / 12)
    assert result.p_value == pytest.approx(0.125)


def test_permutation_monte_carlo_close_to_exact_binomial():
    # 42 discordant documents: 2^42 swaps cannot be enumerated; 20000 random swaps estimate the
    # exact binomial p-value 2 * P(X <= 12 | n=42) within a few Monte Carlo standard errors.
    a, b = paired(50, 30, 12, 40)
    exact_p = binomtest(12, 42, 0.5).pvalue
    result = stats.paired_permutation_test(a, b, n_resamples=20_000, seed=1)
    assert not result.exact and result.n_permutations == 20_000
    assert abs(result.p_value - exact_p) < 4 * math.sqrt(exact_p * (1 - exact_p) / 20_000)


def test_permutation_ties_all_equal_one_document_and_seed():
    # all-equal inputs: nothing can be swapped -> the observed difference 0 is the only one, p = 1
    same = np.array([1.0, 0.0, 0.5, 1.0])
    assert stats.paired_permutation_test(same, same).p_value == 1.0
    # tied documents are left out: 2 discordant documents among many ties -> 4 patterns
    a, b = paired(100, 0, 2, 100)
    result = stats.paired_permutation_test(a, b)
    assert result.exact and result.n_permutations == 4
    assert result.p_value == pytest.approx(2 / 4)  # both patterns with |diff| = 2/202 count
    # one document: two patterns, both as extreme -> p = 1
    assert stats.paired_permutation_test([0.0], [1.0]).p_value == 1.0
    # fractional values (ICL correctness averaged over seeds) work; seeds make it reproducible
    rng = np.random.default_rng(5)
    x, y = rng.random(60), rng.random(60)
    first = stats.paired_permutation_test(x, y, n_resamples=500, seed=7)
    assert first == stats.paired_permutation_test(x, y, n_resamples=500, seed=7)
    assert first.p_value != stats.paired_permutation_test(x, y, n_resamples=500, seed=8).p_value


def test_permutation_never_returns_zero_in_monte_carlo():
    # every one of 200 documents favours b: no random swap reaches the observed difference, so
    # p = (0 + 1) / (R + 1) (Phipson & Smyth 2010), not 0
    a, b = np.zeros(200), np.ones(200)
    assert stats.paired_permutation_test(a, b, n_resamples=999).p_value == pytest.approx(1 / 1000)


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_standard_error_matches_plug_in_formula():
    # Efron & Tibshirani, An Introduction to the Bootstrap (1993), sec. 5.2: the bootstrap standard
    # error of a mean tends to the plug-in sigma_hat / sqrt(n) with sigma_hat^2 = sum (d - dbar)^2 / n.
    # Here d = b - a per document; the percentile interval is then about diff +- 1.96 se.
    rng = np.random.default_rng(0)
    a = (rng.random(400) < 0.6).astype(float)
    b = np.where(rng.random(400) < 0.8, a, 1 - a)
    d = b - a
    se = math.sqrt(np.mean((d - d.mean()) ** 2) / len(d))
    result = stats.paired_bootstrap(a, b, n_resamples=20_000, seed=3)
    assert result.diff == pytest.approx(d.mean())
    low, high = result.diff_interval
    assert (high - low) / (2 * 1.959964) == pytest.approx(se, rel=0.05)
    assert low < result.diff < high
    assert result.a == pytest.approx(a.mean()) and result.b == pytest.approx(b.mean())


def test_bootstrap_all_equal_one_document_seed_and_errors():
    same = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    flat = stats.paired_bootstrap(same, same)
    assert flat.diff == 0.0 and flat.diff_interval == (0.0, 0.0)  # zero-width difference
    assert flat.a_interval[0] < flat.a_interval[1]  # the arms themselves still vary
    one = stats.paired_bootstrap([0.0], [1.0])  # every resample is the one document
    assert one.diff_interval == (1.0, 1.0) and one.a_interval == (0.0, 0.0)
    rng = np.random.default_rng(9)
    a, b = rng.random(50), rng.random(50)
    assert stats.paired_bootstrap(a, b, seed=4) == stats.paired_bootstrap(a, b, seed=4)
    assert stats.paired_bootstrap(a, b, seed=4) != stats.paired_bootstrap(a, b, seed=5)
    with pytest.raises(ValueError, match="empty"):
        stats.paired_bootstrap([], [])
    with pytest.raises(ValueError, match="n_resamples"):
        stats.paired_bootstrap(a, b, n_resamples=0)
    with pytest.raises(ValueError, match="empty"):
        stats.stratified_paired_bootstrap([])


def test_stratified_group_mean_by_hand():
    # task 1: acc 0/4 -> 3/4 (+0.75); task 2: 1/2 -> 1/2, all ties (0). The group value is the
    # unweighted mean of task values: a = (0 + 0.5)/2 = 0.25, b = (0.75 + 0.5)/2 = 0.625, diff 0.375
    t1 = (np.array([0, 0, 0, 0.0]), np.array([1, 1, 1, 0.0]), stats.mean_metric)
    t2 = (np.array([1, 0.0]), np.array([1, 0.0]), stats.mean_metric)
    boot = stats.stratified_paired_bootstrap([t1, t2], n_resamples=2000)
    assert (boot.a, boot.b, boot.diff) == pytest.approx((0.25, 0.625, 0.375))
    perm = stats.stratified_paired_permutation_test([t1, t2])
    # 3 discordant documents, all in task 1, each worth +-1/4 / 2 tasks: 8 patterns, and only the
    # two with all three signs equal reach |diff| >= 0.375 -> p = 2/8
    assert perm.exact and perm.n_permutations == 8
    assert perm.p_value == pytest.approx(0.25)


# ----------------------------------------------------------------------------- corpus metrics


def test_macro_f1_by_hand_and_bootstrap():
    # gold [0,0,1,1,2,2], pred [0,1,1,1,2,0] worked by hand:
    # class 0: TP 1, FP 1, FN 1 -> 2/4 = 0.5; class 1: TP 2, FP 1, FN 0 -> 4/5 = 0.8;
    # class 2: TP 1, FP 0, FN 1 -> 2/3; macro-F1 = (0.5 + 0.8 + 0.6667) / 3 = 0.65556
    pairs = np.array([[0, 0], [0, 1], [1, 1], [1, 1], [2, 2], [2, 0]])
    assert stats.macro_f1(pairs[None])[0] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # classes as sklearn's default takes them, by hand: gold [0,0], pred [0,1]: class 0 F1 2/3,
    # class 1 (predicted, never gold) 0 -> 1/3; a class absent from a set is left out:
    # gold = pred = [0, 0] -> 1.0
    from sklearn.metrics import f1_score

    assert stats.macro_f1(np.array([[[0, 0], [0, 1]]]))[0] == pytest.approx(1 / 3)
    assert f1_score([0, 0], [0, 1], average="macro") == pytest.approx(1 / 3)
    assert stats.macro_f1(np.array([[[0, 0], [0, 0]], [[2, 2], [2, 0]]])) == pytest.approx([1.0, (2 / 3 + 0) / 2])
    # resampling documents and recomputing the corpus metric: perfect predictions vs the above
    perfect = pairs.copy()
    perfect[:, 1] = perfect[:, 0]
    boot = stats.paired_bootstrap(pairs, perfect, stats.macro_f1, n_resamples=2000)
    assert boot.diff == pytest.approx(1 - (0.5 + 0.8 + 2 / 3) / 3)
    assert boot.diff_interval[1] <= 1.0 and boot.diff_interval[0] >= 0.0  # never worse than perfect
    # 2 discordant documents (1 and 5) -> 4 swap patterns. By hand, swapping only document 1 gives
    # both arms gold/pred sets with per-class F1 (0.8, 1, 2/3) and (2/3, 0.8, 1): difference 0; the
    # same for document 5 alone. Only "none" and "both" reach |diff| = 0.3444 -> p = 2/4.
    perm = stats.paired_permutation_test(pairs, perfect, stats.macro_f1)
    assert perm.n_permutations == 4 and perm.p_value == pytest.approx(0.5)


def test_macro_f1_equals_sklearn_on_random_sets():
    # sklearn's f1_score(average="macro") is the reference the suite's tasks aggregate with
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(2)
    sets = rng.integers(0, 5, size=(20, 30, 2))
    expected = [f1_score(s[:, 0], s[:, 1], average="macro") for s in sets]
    assert stats.macro_f1(sets) == pytest.approx(expected)


def test_items_metric_wraps_an_lm_eval_aggregation():
    # lm-eval's registered binary "f1" aggregation, resampled unchanged; on the full data it equals
    # F1 by hand: gold [1,1,0,0], pred [1,0,1,0]: TP 1, FP 1, FN 1 -> 0.5
    from lm_eval.api.registry import get_aggregation

    metric = stats.items_metric(get_aggregation("f1"))
    pairs = np.array([[1, 1], [1, 0], [0, 1], [0, 0]])
    assert metric(pairs[None])[0] == pytest.approx(0.5)
    assert metric(np.stack([pairs, pairs])).shape == (2,)


def test_is_binary():
    assert stats.is_binary([0, 1, 1.0])
    assert not stats.is_binary([0, 0.5])
    assert not stats.is_binary(np.zeros((3, 2)))  # pairs are not outcomes


# ----------------------------------------------------------------------------- multiplicity


def test_holm_and_bh_worked_by_hand():
    # p = [0.01, 0.04, 0.03, 0.005], m = 4, sorted 0.005, 0.01, 0.03, 0.04:
    # Holm: 4*0.005 = 0.02, 3*0.01 = 0.03, 2*0.03 = 0.06, 1*0.04 -> max(0.04, 0.06) = 0.06
    # BH:   0.005*4/1 = 0.02, 0.01*4/2 = 0.02, 0.03*4/3 = 0.04, 0.04*4/4 = 0.04 (running min from the top)
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # capped at 1, ties keep equal values
    assert stats.holm([0.6, 0.6]) == pytest.approx([1.0, 1.0])
    assert stats.adjust_p_values(p, "none") == pytest.approx(p)


def test_bh_and_holm_on_benjamini_hochberg_1995_example():
    # Benjamini & Hochberg (1995), JRSS B 57:289-300, sec. 4: fifteen p-values from a thrombolysis
    # trial; at 0.05 the BH procedure rejects the four smallest. Holm by hand rejects three:
    # 0.0001 <= .05/15, 0.0004 <= .05/14, 0.0019 <= .05/13, but 0.0095 > .05/12 = 0.00417.
    p = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344,
         0.0459, 0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000]
    bh = stats.benjamini_hochberg(p)
    assert int(np.sum(bh <= 0.05)) == 4
    assert bh == pytest.approx(false_discovery_control(p))  # scipy's independent implementation
    assert int(np.sum(stats.holm(p) <= 0.05)) == 3


def test_adjustment_edge_cases():
    assert stats.holm([]).size == 0 and stats.benjamini_hochberg([]).size == 0
    assert stats.holm([0.2]) == pytest.approx([0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.1, 1.5])
    with pytest.raises(ValueError, match="unknown p-value adjustment"):
        stats.adjust_p_values([0.1], "bonferroni")
