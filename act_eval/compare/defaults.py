"""The comparison's defaults and choices, defined once: the statistics, the report, the board and the
command line read them from here (no numpy: ``act-eval --help`` imports this)."""

from __future__ import annotations

CONFIDENCE = 0.95  # interval level
ALPHA = 0.05  # significance level of verdicts and of the board's marks
RESAMPLES = 10_000  # bootstrap and permutation resamples
SEED = 0  # seed of every resampling
ADJUSTMENTS = ("holm", "bh", "none")  # p-value adjustment across a comparison's tasks; the first is the default
AGGREGATIONS = ("auto", "mean", "macro_f1", "f1", "mcc")  # how a metric aggregates over documents; "auto": the task's
FORMATS = ("markdown", "arms", "json", "csv")  # the report's formats; the first is the default
