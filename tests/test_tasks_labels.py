"""Label mappings and metrics of the task suite, on the real rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


def _words(task, doc: dict) -> list[str]:
    return [w.strip() for w in task.doc_to_choice(doc)]


def test_trec_labels_map_by_meaning(act_tasks: dict, data_dir: Path) -> None:
    # coarse_label order in the data: ABBR, ENTY, DESC, HUM, LOC, NUM
    meaning = ["Expression", "Entity", "Description", "Person", "Location", "Number"]
    task = act_tasks["act_trec"]
    docs = list(task.eval_docs)
    assert len(docs) == 500
    for doc in docs:
        assert _words(task, doc)[task.doc_to_target(doc)] == meaning[doc["coarse_label"]]
    by_text = {doc["text"]: _words(task, doc)[task.doc_to_target(doc)] for doc in docs}
    assert by_text["How far is it from Denver to Aspen ?"] == "Number"
    assert by_text["What county is Modesto , California in ?"] == "Location"
    assert by_text["Who was Galileo ?"] == "Person"
    assert by_text["What is an atom ?"] == "Description"
    assert by_text["What does USPS stand for ?"] == "Expression"


def test_trec_mapping_differs_from_the_paper_code_on_four_classes() -> None:
    import importlib.util

    from act_eval.paths import resource_dir

    spec = importlib.util.spec_from_file_location("cls_utils", resource_dir("tasks") / "classification" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    # the authors' code used coarse_label itself as the word index
    wrong = [c for c in range(6) if utils.trec_target({"coarse_label": c}) != c]
    assert wrong == [0, 2, 4, 5]  # ABBR, DESC, LOC, NUM


@pytest.mark.parametrize("name", ["act_arc_easy", "act_arc_challenge"])
def test_arc_digit_keys_pick_the_right_option(name: str, act_tasks: dict, data_dir: Path) -> None:
    task = act_tasks[name]
    docs = list(task.eval_docs)
    digit = [doc for doc in docs if doc["answerKey"].isdigit()]
    assert digit, "the ARC dev sets hold rows keyed 1-4"
    for doc in docs:
        gold = task.doc_to_target(doc)
        assert doc["choices"]["label"][gold] == doc["answerKey"]
        assert task.doc_to_choice(doc) == list("ABCDE"[: len(doc["choices"]["text"])])
    # a row keyed "1".."4": the answer is the n-th option, shown as the n-th letter
    doc = next(d for d in digit if d["answerKey"] == "3") if name == "act_arc_easy" else digit[0]
    gold = task.doc_to_target(doc)
    assert gold == int(doc["answerKey"]) - 1
    assert f"\n{'ABCD'[gold]}. {doc['choices']['text'][gold]}\n" in task.doc_to_text(doc) + "\n"


def test_arc_digit_keyed_row_written_out(act_tasks: dict) -> None:
    task = act_tasks["act_arc_easy"]
    doc = next(d for d in task.eval_docs if d["id"] == "NYSEDREGENTS_2014_8_10")
    assert task.doc_to_text(doc) == (
        "A green plant absorbs light. A frog eats flies. These are both examples of how organisms\n"
        "A. obtain energy\nB. escape predators\nC. produce offspring\nD. excrete waste\nAnswer:"
    )
    assert task.doc_to_target(doc) == 0  # answerKey "1"


def test_arc_options_beyond_four(act_tasks: dict) -> None:
    task = act_tasks["act_arc_easy"]
    five = [d for d in task.eval_docs if len(d["choices"]["text"]) == 5]
    three = [d for d in task.eval_docs if len(d["choices"]["text"]) == 3]
    assert five and three
    assert task.doc_to_choice(five[0]) == ["A", "B", "C", "D", "E"]
    assert "\nE. " in task.doc_to_text(five[0])
    assert task.doc_to_choice(three[0]) == ["A", "B", "C"]


def test_commonsense_qa_has_five_options_and_letter_keys(act_tasks: dict, data_dir: Path) -> None:
    task = act_tasks["act_commonsense_qa"]
    docs = list(task.eval_docs)
    assert len(docs) == 1221
    golds = []
    for doc in docs:
        assert task.doc_to_choice(doc) == ["A", "B", "C", "D", "E"]
        gold = task.doc_to_target(doc)
        assert "ABCDE"[gold] == doc["answerKey"]
        golds.append(gold)
    assert sorted(set(golds)) == [0, 1, 2, 3, 4]
    text_task = act_tasks["act_commonsense_qa_text"]
    doc = docs[0]
    assert text_task.doc_to_choice(doc) == ["bank", "library", "department store", "mall", "new york"]


def test_other_mc_golds(act_tasks: dict, data_dir: Path) -> None:
    for name, path, gold_of in [
        ("act_hellaswag", "hellaswag/validation.jsonl", lambda r: int(r["label"])),
        ("act_piqa", "piqa/validation.jsonl", lambda r: r["label"]),
        ("act_copa", "copa/validation.jsonl", lambda r: r["label"]),
        ("act_openbookqa", "openbookqa/validation.jsonl", lambda r: "ABCD".index(r["answerKey"])),
    ]:
        task = act_tasks[name]
        assert [task.doc_to_target(d) for d in task.eval_docs] == [gold_of(r) for r in _rows(data_dir / path)]


def test_copa_stem_asks_for_cause_or_effect(act_tasks: dict) -> None:
    task = act_tasks["act_copa"]
    stems = {d["question"]: d["stem"] for d in task.eval_docs}
    assert stems["effect"].endswith(" What is the effect?")
    assert stems["cause"].endswith(" What is the cause?")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("act_sst2", ["negative", "positive"]),
        ("act_sst5", ["terrible", "negative", "neutral", "positive", "great"]),
        ("act_mr", ["negative", "positive"]),
        ("act_subj", ["objective", "subjective"]),
        ("act_agnews", ["World", "Sports", "Business", "Technology"]),
        ("act_cb", ["Yes", "No", "Maybe"]),
        ("act_boolq", ["False", "True"]),
    ],
)
def test_label_words_follow_the_dataset_label_order(name: str, words: list[str], act_tasks: dict) -> None:
    task = act_tasks[name]
    doc = next(iter(task.eval_docs))
    assert _words(task, doc) == words
    assert {task.doc_to_target(d) for d in task.eval_docs} == set(range(len(words)))


def test_macro_f1_is_reported_where_there_are_more_than_two_classes(act_tasks: dict) -> None:
    multi = {"act_sst5", "act_agnews", "act_trec", "act_cb", "act_dbpedia"}
    for name in ["act_sst2", "act_sst5", "act_mr", "act_subj", "act_agnews", "act_trec", "act_cb", "act_boolq", "act_dbpedia"]:
        for variant in (name, f"{name}_spaced", f"{name}_lite"):
            expected = {"acc", "f1"} if name in multi else {"acc"}
            assert set(act_tasks[variant].aggregation()) == expected, variant


def test_macro_f1_aggregation_is_macro(act_tasks: dict) -> None:
    from sklearn.metrics import f1_score

    aggregate = act_tasks["act_sst5"].aggregation()["f1"]
    pairs = [(0, 0), (1, 1), (1, 2), (2, 2), (3, 4), (4, 4), (4, 3), (0, 1)]
    golds, preds = zip(*pairs)
    assert aggregate(pairs) == pytest.approx(f1_score(golds, preds, average="macro"))
    # by hand: per-class F1 0.667, 0.5, 0.667, 0, 0.5 -> mean 0.4667
    assert aggregate(pairs) == pytest.approx((2 / 3 + 1 / 2 + 2 / 3 + 0 + 1 / 2) / 5)


def test_classification_metric_end_to_end(act_tasks: dict) -> None:
    # lm-eval's own multiple_choice scoring: argmax of the label words' log-likelihoods
    task = act_tasks["act_trec"]
    doc = next(iter(task.eval_docs))  # gold " Number" (index 4)
    lls = [(-3.0, False), (-2.0, False), (-5.0, False), (-4.0, False), (-1.0, True), (-6.0, False)]
    assert task.process_results(doc, lls) == {"acc": 1.0, "f1": (4, 4)}
    wrong = [(-1.0, True)] + lls[1:4] + [(-9.0, False), lls[5]]
    assert task.process_results(doc, wrong) == {"acc": 0.0, "f1": (4, 0)}


def test_open_qa_scoring_against_all_aliases(act_tasks: dict) -> None:
    task = act_tasks["act_triviaqa"]
    doc = next(iter(task.eval_docs))  # "Onion", 17 aliases
    assert task.process_results(doc, [" Onions"]) == {"exact_match": 1.0, "token_f1": 1.0}
    assert task.process_results(doc, [" the Spanish onion"]) == {"exact_match": 1.0, "token_f1": 1.0}
    scores = task.process_results(doc, [" a red onion"])
    assert scores["exact_match"] == 0.0 and scores["token_f1"] == pytest.approx(2 / 3)  # vs "Onion"
    assert task.process_results(doc, [" Carrot"]) == {"exact_match": 0.0, "token_f1": 0.0}
    nq = act_tasks["act_nq_open"]
    doc = next(iter(nq.eval_docs))  # ['14 December 1972 UTC', 'December 1972']
    assert nq.process_results(doc, [" December, 1972"])["exact_match"] == 1.0
    assert nq.process_results(doc, [" 1972"]) == {"exact_match": 0.0, "token_f1": pytest.approx(2 / 3)}
