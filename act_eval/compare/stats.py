"""Paired significance statistics for two evaluation runs on the same documents.

Many of ACT's evaluation sets are small (CB 56, COPA 100, ARC-Challenge 299), so a gain of a
few points can be noise, and the two runs being compared score the *same* documents: the tests
here are paired. lm-eval's own comparison script applies an unpaired z-test, which ignores that
pairing and is needlessly weak.

Conventions shared by every function:

- ``a`` is the reference arm (the baseline), ``b`` the other arm; differences are ``b - a``.
- Per-document values are either scalars (0/1 correctness, exact match, a per-document token F1,
  or a fraction such as correctness averaged over ICL seeds), shape ``(n,)``, or integer
  ``(gold, pred)`` pairs for corpus-level metrics such as macro-F1, shape ``(n, 2)``.
- A *metric* is a function from a batch of resampled document sets to one value per set:
  ``(R, n)`` or ``(R, n, 2)`` in, ``(R,)`` out. Resampling documents and recomputing the metric
  is what makes the bootstrap and the permutation test work for corpus-level metrics.
- A *stratum* is one task: ``(a, b, metric)``. The stratified functions test the unweighted mean
  over tasks of ``metric(b) - metric(a)`` (the group mean), resampling within each task; the
  one-task functions are the one-stratum case.
- Every resampling draws from ``numpy.random.default_rng(seed)``: the same inputs and seed give
  the same result.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _sps

from act_eval.compare.defaults import ADJUSTMENTS, CONFIDENCE, RESAMPLES, SEED

Metric = Callable[[np.ndarray], np.ndarray]
Stratum = tuple[ArrayLike, ArrayLike, Metric]

# McNemar: below this many discordant pairs (b + c) the exact binomial test is used, at or above
# it the continuity-corrected chi-square. 25 is the usual textbook rule (e.g. the rule of thumb
# "b + c < 25: use the exact test" quoted with McNemar's test in Wikipedia and in statsmodels'
# documentation); the exact test is valid for any b + c, the chi-square is not for small ones.
EXACT_MCNEMAR_BELOW = 25

# bound on resampled values held in memory at once (resamples x documents)
_CHUNK_CELLS = 2_000_000


# ----------------------------------------------------------------------------- metrics


def mean_metric(values: np.ndarray) -> np.ndarray:
    """Mean per-document value (accuracy, exact match, mean token F1) of each resampled set."""
    return values.mean(axis=1)


def macro_f1(pairs: np.ndarray) -> np.ndarray:
    """Macro-F1 of each resampled set of ``(gold, pred)`` integer pairs, as sklearn's default computes it.

    The classes are those present as gold or prediction in the set itself (``f1_score(...,
    average="macro")`` with no ``labels``; the suite's tasks aggregate exactly so), so a resample
    is scored as lm-eval would score it: a class predicted but never gold counts as F1 0, a class
    absent from both is left out.
    """
    gold, pred = pairs[..., 0], pairs[..., 1]
    total = np.zeros(pairs.shape[:-2])
    present = np.zeros(pairs.shape[:-2])
    for label in np.unique(pairs):
        g, p = gold == label, pred == label
        denom = g.sum(axis=-1) + p.sum(axis=-1)  # 2TP + FP + FN
        total += 2.0 * (g & p).sum(axis=-1) / np.maximum(denom, 1)
        present += denom > 0
    return total / present


def items_metric(aggregate: Callable[[list[Any]], float]) -> Metric:
    """Batch an lm-eval style aggregation (a list of per-document items -> one number).

    Lets any registered lm-eval aggregation (binary ``f1``, ``matthews_corrcoef``) be resampled
    unchanged; it is slower than the vectorised metrics above because it loops over resamples.
    """

    def metric(values: np.ndarray) -> np.ndarray:
        # resamples missing a class make sklearn warn (undefined precision/recall); expected here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if values.ndim == 3:
                return np.array([aggregate([tuple(map(int, item)) for item in v]) for v in values], dtype=float)
            return np.array([aggregate(list(v)) for v in values], dtype=float)

    return metric


def is_binary(values: ArrayLike) -> bool:
    """True when every value is 0 or 1 (what McNemar's test and Wilson intervals need)."""
    arr = np.asarray(values, dtype=float)
    return arr.ndim == 1 and bool(np.all((arr == 0) | (arr == 1)))


# ----------------------------------------------------------------------------- McNemar


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test: ``b`` documents only arm a got right, ``c`` only arm b got right."""

    b: int
    c: int
    statistic: float | None  # chi-square statistic; None for the exact test
    p_value: float
    method: str


def mcnemar_counts(
    b: int, c: int, *, exact: bool | None = None, correction: bool = True
) -> McNemarResult:
    """McNemar's test from the discordant counts.

    ``exact=None`` picks the exact binomial test when ``b + c < EXACT_MCNEMAR_BELOW`` and the
    chi-square test (with Edwards' continuity correction unless ``correction=False``) otherwise.
    The exact two-sided p-value is ``min(1, 2 * P(X <= min(b, c)))``, ``X ~ Binomial(b + c, 1/2)``.
    """
    if b < 0 or c < 0 or int(b) != b or int(c) != c:
        raise ValueError(f"McNemar counts must be non-negative integers, got b={b}, c={c}")
    b, c = int(b), int(c)
    n = b + c
    if exact is None:
        exact = n < EXACT_MCNEMAR_BELOW
    if exact:
        p = 1.0 if n == 0 else min(1.0, 2.0 * float(_sps.binom.cdf(min(b, c), n, 0.5)))
        return McNemarResult(b, c, None, p, "McNemar exact binomial")
    if n == 0:
        raise ValueError("the chi-square McNemar test needs at least one discordant pair")
    gap = abs(b - c)
    if correction:
        gap = max(gap - 1, 0)
    statistic = gap * gap / n
    p = float(_sps.chi2.sf(statistic, df=1))
    name = "McNemar chi-square, continuity-corrected" if correction else "McNemar chi-square"
    return McNemarResult(b, c, statistic, p, name)


def mcnemar(a: ArrayLike, b: ArrayLike, *, exact_below: int = EXACT_MCNEMAR_BELOW) -> McNemarResult:
    """McNemar's test on paired 0/1 outcomes (exact below ``exact_below`` discordant pairs)."""
    x, y = _paired_arrays(a, b)
    if not (is_binary(x) and is_binary(y)):
        raise ValueError(
            "McNemar's test needs 0/1 outcomes per document; for fractional values (e.g. "
            "correctness averaged over ICL seeds) use the paired permutation test"
        )
    only_a = int(np.sum((x == 1) & (y == 0)))
    only_b = int(np.sum((x == 0) & (y == 1)))
    return mcnemar_counts(only_a, only_b, exact=(only_a + only_b) < exact_below)


# ----------------------------------------------------------------------------- Wilson


def sign_test_greater(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(at least ``wins`` of the discordant pairs favour the treatment by chance)."""
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must be non-negative, got {wins} and {losses}")
    if wins + losses == 0:
        return 1.0
    return float(_sps.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (good coverage even for small n or p near 0/1)."""
    _check_confidence(confidence)
    if n <= 0:
        raise ValueError("a Wilson interval needs at least one trial")
    if successes < 0 or successes > n or int(successes) != successes:
        raise ValueError(f"successes must be an integer in [0, {n}], got {successes}")
    z = float(_sps.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class BootstrapResult:
    """Estimates on the full data and percentile intervals from paired document resampling."""

    a: float
    b: float
    diff: float
    a_interval: tuple[float, float]
    b_interval: tuple[float, float]
    diff_interval: tuple[float, float]
    confidence: float
    n_resamples: int


def paired_bootstrap(
    a: ArrayLike,
    b: ArrayLike,
    metric: Metric = mean_metric,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> BootstrapResult:
    """Paired bootstrap of ``metric(b) - metric(a)``: both arms get the same resampled documents."""
    return stratified_paired_bootstrap(
        [(a, b, metric)], confidence=confidence, n_resamples=n_resamples, seed=seed
    )


def stratified_paired_bootstrap(
    strata: Sequence[Stratum],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> BootstrapResult:
    """Paired bootstrap of the mean over tasks of ``metric(b) - metric(a)``, resampling within tasks.

    Percentile intervals. With all documents equal in both arms the difference interval has zero
    width; with one document every resample is that document.
    """
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    checked = _check_strata(strata)
    rng = np.random.default_rng(seed)
    sum_a = np.zeros(n_resamples)
    sum_b = np.zeros(n_resamples)
    for x, y, metric in checked:
        n = len(x)
        step = max(1, _CHUNK_CELLS // n)
        for start in range(0, n_resamples, step):
            stop = min(n_resamples, start + step)
            idx = rng.integers(0, n, size=(stop - start, n))
            sum_a[start:stop] += metric(x[idx])
            sum_b[start:stop] += metric(y[idx])
    k = len(checked)
    boot_a, boot_b = sum_a / k, sum_b / k
    est_a = float(np.mean([m(x[None])[0] for x, _, m in checked]))
    est_b = float(np.mean([m(y[None])[0] for _, y, m in checked]))
    tails = [(1 - confidence) / 2, (1 + confidence) / 2]

    def interval(values: np.ndarray) -> tuple[float, float]:
        low, high = np.quantile(values, tails)
        return float(low), float(high)

    return BootstrapResult(
        a=est_a,
        b=est_b,
        diff=est_b - est_a,
        a_interval=interval(boot_a),
        b_interval=interval(boot_b),
        diff_interval=interval(boot_b - boot_a),
        confidence=confidence,
        n_resamples=n_resamples,
    )


# ----------------------------------------------------------------------------- permutation


@dataclass(frozen=True)
class PermutationResult:
    """Two-sided paired permutation test of ``metric(b) - metric(a)``."""

    diff: float
    p_value: float
    exact: bool  # True: all swaps of the discordant documents enumerated
    n_permutations: int


def paired_permutation_test(
    a: ArrayLike,
    b: ArrayLike,
    metric: Metric = mean_metric,
    *,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> PermutationResult:
    """Paired permutation (swap) test: under H0 each document's two values are exchangeable."""
    return stratified_paired_permutation_test([(a, b, metric)], n_resamples=n_resamples, seed=seed)


def stratified_paired_permutation_test(
    strata: Sequence[Stratum], *, n_resamples: int = RESAMPLES, seed: int = SEED
) -> PermutationResult:
    """Swap test of the mean over tasks of ``metric(b) - metric(a)``.

    Each document's pair of values is swapped between the arms with probability 1/2; documents
    whose two values are equal (ties) cannot change anything and are left out of the swaps. When
    the ``2**d`` swap patterns of the ``d`` discordant documents number at most ``n_resamples``
    they are all enumerated and the p-value is exact (for 0/1 outcomes it then equals the exact
    McNemar p-value); otherwise ``n_resamples`` random patterns give ``(1 + hits) / (1 + R)``,
    which is never 0 (Phipson & Smyth 2010). A difference counts as at least as extreme as the
    observed one within a relative tolerance of 1e-9, so ties in the statistic are not lost to
    rounding.
    """
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    checked = _check_strata(strata)
    k = len(checked)
    observed = sum(float(m(y[None])[0] - m(x[None])[0]) for x, y, m in checked) / k
    discordant = [np.flatnonzero(_differs(x, y)) for x, y, _ in checked]
    d = sum(len(idx) for idx in discordant)
    exact = d < 63 and 2**d <= n_resamples
    total = 2**d if exact else n_resamples
    rng = np.random.default_rng(seed)
    max_n = max(len(x) for x, _, _ in checked)
    step = max(1, _CHUNK_CELLS // max_n)
    tolerance = 1e-9 * max(1.0, abs(observed))
    hits = 0
    for start in range(0, total, step):
        stop = min(total, start + step)
        if exact:
            codes = np.arange(start, stop, dtype=np.int64)[:, None]
            swaps = ((codes >> np.arange(d, dtype=np.int64)) & 1).astype(bool)
        else:
            swaps = rng.random((stop - start, d)) < 0.5
        stat = np.zeros(stop - start)
        offset = 0
        for (x, y, metric), idx in zip(checked, discordant):
            swap_s = swaps[:, offset : offset + len(idx)]
            offset += len(idx)
            xs = np.broadcast_to(x, (stop - start, *x.shape)).copy()
            ys = np.broadcast_to(y, (stop - start, *y.shape)).copy()
            rows, cols = np.nonzero(swap_s)
            xs[rows, idx[cols]], ys[rows, idx[cols]] = y[idx[cols]], x[idx[cols]]
            stat += metric(ys) - metric(xs)
        hits += int(np.sum(np.abs(stat / k) >= abs(observed) - tolerance))
    p = hits / total if exact else (hits + 1) / (total + 1)
    return PermutationResult(diff=observed, p_value=min(1.0, p), exact=exact, n_permutations=total)


# ----------------------------------------------------------------------------- multiplicity


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error; valid under any dependence between tasks)."""
    p = _check_p_values(p_values)
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def benjamini_hochberg(p_values: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg step-up adjustment (false discovery rate)."""
    p = _check_p_values(p_values)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    stepped = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


# the adjustments by their names (in ADJUSTMENTS' order: holm, bh, none)
_ADJUSTERS: dict[str, Callable[[ArrayLike], np.ndarray]] = dict(
    zip(ADJUSTMENTS, (holm, benjamini_hochberg, lambda p: _check_p_values(p).copy()), strict=True)
)


def adjust_p_values(p_values: ArrayLike, method: str) -> np.ndarray:
    """Adjust p-values by ``holm``, ``bh`` (Benjamini-Hochberg) or ``none``."""
    try:
        return _ADJUSTERS[method](p_values)
    except KeyError:
        raise ValueError(f"unknown p-value adjustment {method!r}; use one of {', '.join(ADJUSTMENTS)}") from None


# ----------------------------------------------------------------------------- helpers


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def _check_p_values(p_values: ArrayLike) -> np.ndarray:
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError("p-values must be a flat sequence")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    return p


def _paired_arrays(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        raise ValueError(f"paired inputs differ in shape: {x.shape} vs {y.shape}")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError("no documents to compare (empty input)")
    if x.ndim > 2 or (x.ndim == 2 and x.shape[1] != 2):
        raise ValueError(f"per-document values must have shape (n,) or (n, 2), got {x.shape}")
    return x, y


def _check_strata(strata: Sequence[Stratum]) -> list[tuple[np.ndarray, np.ndarray, Metric]]:
    if not strata:
        raise ValueError("no tasks to compare (empty input)")
    return [(*_paired_arrays(a, b), metric) for a, b, metric in strata]


def _differs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    neq = x != y
    return neq.any(axis=1) if neq.ndim == 2 else neq
