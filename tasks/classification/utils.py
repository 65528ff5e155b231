"""Classification helpers for the act-eval task YAMLs: TREC's label words and macro-F1."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# TREC's coarse_label order is ABBR, ENTY, DESC, HUM, LOC, NUM; the paper lists its label words as
# Description, Entity, Expression, Person, Number, Location. Map by meaning (ABBR=Expression,
# LOC=Location, NUM=Number); the authors' code indexes the word list with coarse_label directly,
# which gives four of the six classes the wrong word.
TREC_WORD_OF_COARSE = (2, 1, 0, 3, 5, 4)


def trec_target(doc: Mapping[str, Any]) -> int:
    """Index of the TREC label word (paper order) for the document's coarse label."""
    return TREC_WORD_OF_COARSE[doc["coarse_label"]]


def macro_f1(items: Iterable[tuple[int, int]]) -> float:
    """Macro-F1 over (gold, prediction) pairs: lm-eval's registered ``f1`` aggregation is binary."""
    from sklearn.metrics import f1_score

    golds, preds = zip(*items)
    return float(f1_score(golds, preds, average="macro"))
