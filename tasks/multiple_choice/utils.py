"""Multiple-choice helpers for the act-eval task YAMLs.

Each task's ``process_docs`` adds three fields to its rows, so that one prompt builder serves
all seven tasks: ``stem`` (the question as the paper writes it), ``options`` (answer texts in
dataset order) and ``gold`` (index of the right option).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

LETTERS = "ABCDEFGH"


def lettered_prompt(doc: Mapping[str, Any]) -> str:
    """The paper's protocol: question, ``A. ...`` lines, then ``Answer:`` (scored over letters)."""
    options = "".join(f"\n{LETTERS[i]}. {text}" for i, text in enumerate(doc["options"]))
    return f"{doc['stem']}{options}\nAnswer:"


def letters(doc: Mapping[str, Any]) -> list[str]:
    """The option letters, one per option: lm-eval scores `` A``, `` B``, ... after ``Answer:``."""
    return list(LETTERS[: len(doc["options"])])


def text_prompt(doc: Mapping[str, Any]) -> str:
    """lm-eval's usual protocol: the same question without options; the answer text is scored."""
    return f"{doc['stem']}\nAnswer:"


def _keyed_gold(doc: Mapping[str, Any]) -> int:
    # ARC keys are letters or digits ("1".."4"); CSQA and OpenBookQA use letters. The key's
    # position among the choice labels is the answer, whatever the labels look like.
    return doc["choices"]["label"].index(doc["answerKey"])


def _adds_fields(
    fn: Callable[[Mapping[str, Any]], tuple[str, list[str], int]],
) -> Callable[[datasets.Dataset], datasets.Dataset]:
    """Turn ``doc -> (stem, options, gold)`` into a ``process_docs`` that adds those fields."""

    @functools.wraps(fn)
    def process(dataset: datasets.Dataset) -> datasets.Dataset:
        def add(doc: Mapping[str, Any]) -> dict[str, Any]:
            stem, options, gold = fn(doc)
            return {"stem": stem, "options": options, "gold": gold}

        return dataset.map(add)

    return process


@_adds_fields
def process_hellaswag(doc: Mapping[str, Any]) -> tuple[str, list[str], int]:
    """HellaSwag: the raw ``ctx`` (not ctx_a/ctx_b) and its endings; label is a string."""
    return doc["ctx"], doc["endings"], int(doc["label"])


@_adds_fields
def process_arc(doc: Mapping[str, Any]) -> tuple[str, list[str], int]:
    """ARC-Easy/Challenge: 3 to 5 options; answer keys may be digits."""
    return doc["question"], doc["choices"]["text"], _keyed_gold(doc)


@_adds_fields
def process_piqa(doc: Mapping[str, Any]) -> tuple[str, list[str], int]:
    """PIQA: the goal and its two solutions."""
    return doc["goal"], [doc["sol1"], doc["sol2"]], doc["label"]


@_adds_fields
def process_openbookqa(doc: Mapping[str, Any]) -> tuple[str, list[str], int]:
    """OpenBookQA: ``question_stem`` and four options."""
    return doc["question_stem"], doc["choices"]["text"], _keyed_gold(doc)


@_adds_fields
def process_copa(doc: Mapping[str, Any]) -> tuple[str, list[str], int]:
    """COPA, phrased as the paper does: ``{premise} What is the {cause|effect}?``."""
    return f"{doc['premise']} What is the {doc['question']}?", [doc["choice1"], doc["choice2"]], doc["label"]


@_adds_fields
def process_commonsense_qa(doc: Mapping[str, Any]) -> tuple[str, list[str], int]:
    """CommonsenseQA: five options, letter keys."""
    return doc["question"], doc["choices"]["text"], _keyed_gold(doc)
