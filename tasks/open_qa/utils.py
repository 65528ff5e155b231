"""Open-QA helpers for the act-eval task YAMLs: prompt, gold aliases, SQuAD-style scoring."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets


def question_prompt(doc: Mapping[str, Any]) -> str:
    """``Question: ...?\\nAnswer:``; NQ-open questions carry no question mark, TriviaQA's do."""
    question = doc["question"].strip()
    if not question.endswith("?"):
        question += "?"
    return f"Question: {question}\nAnswer:"


def process_nq_open(dataset: datasets.Dataset) -> datasets.Dataset:
    """NQ-open: ``answer`` is already the list of gold strings."""
    return dataset.map(lambda doc: {"answers": list(doc["answer"])})


def process_triviaqa(dataset: datasets.Dataset) -> datasets.Dataset:
    """TriviaQA: the canonical value first (few-shot demos show it), then every alias."""

    def fields(doc: Mapping[str, Any]) -> dict[str, Any]:
        answers = list(dict.fromkeys([doc["answer"]["value"], *doc["answer"]["aliases"]]))
        return {"question": _csv_unquote(doc["question"]), "answers": answers}

    return dataset.map(fields)


def _csv_unquote(question: str) -> str:
    # The reference copy (llm-foundry's subsample) keeps CSV quoting on about 7% of questions:
    # '"What type of clothing is a ""sou-wester""?"'. Outer quotes plus doubled inner ones are CSV
    # escaping, not question text: undo them.
    if len(question) > 1 and question[0] == question[-1] == '"' and '""' in question:
        return question[1:-1].replace('""', '"')
    return question


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token-overlap F1 between normalised strings."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def process_results(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, float]:
    """Best exact match and token F1 of the generation over all gold aliases."""
    prediction = results[0]
    golds: list[str] = doc["answers"]
    return {
        "exact_match": max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds),
        "token_f1": max(token_f1(prediction, g) for g in golds),
    }
