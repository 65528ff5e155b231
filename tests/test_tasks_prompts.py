"""The first request of every task, as lm-eval builds it, against the paper's format written out by hand.

The expected strings follow the authors' code (GATECH-EIC/ACT utils/data_utils.py): instruction
+ template for classification (label words scored as continuations), instruction + "\\n\\n" +
question + lettered options + "\\nAnswer:" for multiple choice. Rows are the first rows of the
evaluation splits in ACT_EVAL_DATA_DIR.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SST2 = "Classify the sentiment of the user's message into one of the following categories:'positive' or 'negative'.\n\n"
SST5 = (
    "Classify the sentiment of the user's message into one of the following categories:"
    "'terrible', 'negative', 'neutral', 'positive', or 'great'.\n\n"
)
MR = "Classify the sentiment of the movie's review into one of the following categories:'positive' or 'negative'.\n\n"
SUBJ = (
    "Classify the sentiment polarity of the movie's review into one of the following categories: "
    "'subjective' or 'object'.\n\n"
)
AGNEWS = "Classify the news articles into the categories of 'World', 'Sports', 'Business', or 'Technology'.\n\n"
TREC = (
    "Classify the given questions into the following categories of 'Description', 'Entity', "
    "'Expression', 'Person', 'Number', or 'Location'.\n\n"
)
CB = "Read the following paragraph and determine if the hypothesis is true.\n\n"
BOOLQ = "Read the text and answer the question by True or False.\n\n"
DBPEDIA = (
    "Classify the given text into one of the most relevant categories: 'company', 'school', 'artist', "
    "'sport', 'politics', 'transportation', 'building', 'nature', 'village', 'animal', 'plant', "
    "'album', 'film', or 'book'.\n\n"
)
DBPEDIA_WORDS = [
    " company", " school", " artist", " sport", " politics", " transportation", " building",
    " nature", " village", " animal", " plant", " album", " film", " book",
]  # fmt: skip


CLASSIFICATION = ["act_sst2", "act_sst5", "act_mr", "act_subj", "act_agnews", "act_trec", "act_cb", "act_boolq", "act_dbpedia"]


def _boolq_first_passage(data_dir: Path) -> str:
    # the one row too long to write out here; the format around it is spelled out below
    with (data_dir / "boolq" / "validation.jsonl").open() as fh:
        return json.loads(fh.readline())["passage"]


# task -> (prompt of the first evaluated row, label words, gold index)
def classification_cases(data_dir: Path) -> dict[str, tuple[str, list[str], int]]:
    return {
        "act_sst2": (
            SST2 + "Sentence: it 's a charming and often affecting journey .  \nSentiment: ",
            [" negative", " positive"],
            1,
        ),
        "act_sst5": (
            SST5 + "Sentence: in his first stab at the form , jacquot takes a slightly anarchic approach "
            "that works only sporadically . \nSentiment: ",
            [" terrible", " negative", " neutral", " positive", " great"],
            2,
        ),
        "act_mr": (
            MR + "Review: compassionately explores the seemingly irreconcilable situation between "
            "conservative christian parents and their estranged gay and lesbian children . \nSentiment: ",
            [" negative", " positive"],
            1,
        ),
        "act_subj": (
            SUBJ + "Input: smart and alert , thirteen conversations about one thing is a small gem . \nType: ",
            [" objective", " subjective"],
            1,
        ),
        "act_agnews": (
            AGNEWS + "Article: Fears for T N pension after talks Unions representing workers at Turner   "
            "Newall say they are 'disappointed' after talks with stricken parent firm Federal Mogul. "
            "\nCategory: ",
            [" World", " Sports", " Business", " Technology"],
            2,
        ),
        "act_trec": (
            TREC + "Question: How far is it from Denver to Aspen ? \nType: ",
            [" Description", " Entity", " Expression", " Person", " Number", " Location"],
            4,  # coarse_label 5 = NUM -> " Number"
        ),
        "act_cb": (
            CB + "Premise: Valence the void-brain, Valence the virtuous valet. Why couldn't the figger "
            "choose his own portion of titanic anatomy to shaft? Did he think he was helping? "
            "Hypothesis: Valence was helping. Answer: ",
            ["Yes", "No", "Maybe"],
            1,
        ),
        "act_boolq": (
            BOOLQ + "Text: " + _boolq_first_passage(data_dir)
            + " Question: does ethanol take more energy make that produces? \nAnswer: ",
            [" False", " True"],
            0,
        ),
        "act_dbpedia": (
            DBPEDIA + "Input:  The April Witch is a fantasy short story by Ray Bradbury.[citation needed] \nType: ",
            DBPEDIA_WORDS,
            13,
        ),
    }


GENERATE = "Generate the correct answer to the following question.\n\n"
# task -> (instruction + question stem, options, gold index)
MC_CASES: dict[str, tuple[str, list[str], int]] = {
    "act_hellaswag": (
        "Complete the following sentence with an appropriate ending.\n\n"
        "[header] How to recover from an emotional affair [title] Forgive yourself. [step] While "
        "forgiving others can be challenging, it's often even harder to forgive yourself. Remember "
        "that if you had known the path of your actions and their consequences, you probably would "
        "not have done what you did.",
        [
            "Take some time to live in the past and let go of those emotions. For example, if you had "
            "experienced a miscarriage, forgiveness would be easy.",
            "Forgiveness in someone else can only serve to make it harder. [substeps] Cheating can be "
            "very emotional, and can even be worse.",
            "To begin forgiving yourself, admit that you messed up or made a mistake. Making mistakes "
            "is part of being human and no one is exempt from it.",
            "In the moment, forgive yourself for all the things you could have done differently. "
            "[substeps] Though you may have felt wronged, forgiving yourself for your actions will "
            "take time and effort to live.",
        ],
        2,
    ),
    "act_arc_easy": (
        GENERATE + "Which technology was developed most recently?",
        ["cellular telephone", "television", "refrigerator", "airplane"],
        0,
    ),
    "act_arc_challenge": (
        GENERATE + "Juan and LaKeisha roll a few objects down a ramp. They want to see which object "
        "rolls the farthest. What should they do so they can repeat their investigation?",
        [
            "Put the objects in groups.",
            "Change the height of the ramp.",
            "Choose different objects to roll.",
            "Record the details of the investigation.",
        ],
        3,
    ),
    "act_piqa": (
        "Generate the correct solution to accomplish the following goal.\n\n"
        "How do I ready a guinea pig cage for it's new occupants?",
        [
            "Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper "
            "strips, you will also need to supply it with a water bottle and a food dish.",
            "Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans "
            "material, you will also need to supply it with a water bottle and a food dish.",
        ],
        0,
    ),
    "act_openbookqa": (
        "Generate the most appropriate answer to the following question.\n\n"
        "Frilled sharks and angler fish live far beneath the surface of the ocean, which is why they are known as",
        ["Deep sea animals", "fish", "Long Sea Fish", "Far Sea Animals"],
        0,
    ),
    "act_copa": (
        GENERATE + "The man turned on the faucet. What is the effect?",
        ["The toilet filled with water.", "Water flowed from the spout."],
        1,
    ),
    "act_commonsense_qa": (
        GENERATE + "A revolving door is convenient for two direction travel, but it also serves as a "
        "security measure at a what?",
        ["bank", "library", "department store", "mall", "new york"],
        0,
    ),
}

QA_CASES = {
    "act_nq_open": (
        "Answer the following question with a short answer.\n\n"
        "Question: when was the last time anyone was on the moon?\nAnswer:",
        ["14 December 1972 UTC", "December 1972"],
    ),
    "act_triviaqa": (
        "Answer the following question with a short answer.\n\n"
        "Question: Brunswick, Lancastrian and Pearl Pickler are types of which vegetable?\nAnswer:",
        ["Onion", "Onion skins", "Allium angolense", "Bulb onion"],  # first of 17
    ),
}


def first_requests(task) -> list[tuple]:
    """The (context, continuation-or-gen-kwargs) pairs lm-eval builds for the first evaluated row."""
    task.build_all_requests(limit=1)
    return [inst.arguments for inst in task.instances]


def _gold(task) -> int:
    return task.doc_to_target(next(iter(task.eval_docs)))


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_classification_first_prompt_is_the_papers(name: str, act_tasks: dict, data_dir: Path) -> None:
    prompt, words, gold = classification_cases(data_dir)[name]
    task = act_tasks[name]
    # exact strings: the template keeps its trailing space, the label words their leading one
    assert first_requests(task) == [(prompt, word) for word in words]
    assert _gold(task) == gold


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_spaced_variant_drops_only_the_trailing_space(name: str, act_tasks: dict, data_dir: Path) -> None:
    prompt, words, gold = classification_cases(data_dir)[name]
    assert prompt.endswith(": ")
    task = act_tasks[f"{name}_spaced"]
    spaced_words = [" " + w.lstrip() for w in words]  # CB's words get the space they lack
    assert first_requests(task) == [(prompt[:-1], word) for word in spaced_words]
    assert _gold(task) == gold


@pytest.mark.parametrize("name", list(MC_CASES))
def test_lettered_prompt_is_the_papers(name: str, act_tasks: dict) -> None:
    stem, options, gold = MC_CASES[name]
    lettered = "".join(f"\n{letter}. {text}" for letter, text in zip("ABCDE", options))
    task = act_tasks[name]
    letters = [f" {letter}" for letter in "ABCDE"[: len(options)]]
    assert first_requests(task) == [(stem + lettered + "\nAnswer:", letter) for letter in letters]
    assert _gold(task) == gold


@pytest.mark.parametrize("name", list(MC_CASES))
def test_text_protocol_scores_the_answer_text(name: str, act_tasks: dict) -> None:
    stem, options, gold = MC_CASES[name]
    task = act_tasks[f"{name}_text"]
    assert first_requests(task) == [(stem + "\nAnswer:", f" {text}") for text in options]
    assert _gold(task) == gold
    assert set(task.aggregation()) == {"acc", "acc_norm"}


@pytest.mark.parametrize("name", list(QA_CASES))
def test_open_qa_prompt_and_greedy_short_generation(name: str, act_tasks: dict) -> None:
    prompt, golds = QA_CASES[name]
    task = act_tasks[name]
    doc = next(iter(task.eval_docs))
    assert task.fewshot_context(doc, num_fewshot=0) == prompt
    assert task.doc_to_target(doc)[: len(golds)] == golds
    # 5-shot by default: five "Question: ...?\nAnswer: <first gold>" blocks between instruction and query
    [(context, gen_kwargs)] = first_requests(task)
    instruction, query = prompt.split("\n\n")
    head, *demos, tail = context.split("\n\n")
    assert (head, tail) == (instruction, query)
    assert len(demos) == 5
    pool = {task.doc_to_text(d): task.doc_to_target(d)[0] for d in task.eval_docs}
    for demo in demos:
        question, answer = demo.split("\nAnswer: ")
        assert pool[question + "\nAnswer:"] == answer
    assert gen_kwargs["do_sample"] is False
    assert gen_kwargs["until"] == ["\n", ".", ","]
    assert gen_kwargs["max_gen_toks"] == 32


def test_triviaqa_questions_lose_the_reference_copys_csv_quoting(act_tasks: dict) -> None:
    questions = [doc["question"] for doc in act_tasks["act_triviaqa"].eval_docs]
    assert 'What type of clothing is a "sou-wester"?' in questions
    assert not [q for q in questions if '""' in q]


def _fewshot(task, doc: dict, k: int, seed: int = 1234) -> str:
    task.set_fewshot_seed(seed)
    return task.fewshot_context(doc, num_fewshot=k)


def test_classification_demonstrations_are_template_plus_label_word(act_tasks: dict, data_dir: Path) -> None:
    task = act_tasks["act_sst2"]
    doc = next(iter(task.eval_docs))
    context = _fewshot(task, doc, 3)
    instruction, *demos, query = context.split("\n\n")
    assert instruction + "\n\n" == SST2
    assert query == "Sentence: it 's a charming and often affecting journey .  \nSentiment: "
    train = {json.loads(line)["sentence"]: json.loads(line)["label"] for line in (data_dir / "sst2" / "train.jsonl").open()}
    assert len(demos) == 3
    for demo in demos:
        # the paper's demo: template.format(row) + label word, so "Sentiment: " + " positive"
        sentence, label_line = demo.removeprefix("Sentence: ").split(" \nSentiment: ")
        assert label_line == [" negative", " positive"][train[sentence]]


def test_trec_demonstrations_use_the_meaning_mapped_words(act_tasks: dict, data_dir: Path) -> None:
    task = act_tasks["act_trec"]
    context = _fewshot(task, next(iter(task.eval_docs)), 8)
    coarse = {json.loads(line)["text"]: json.loads(line)["coarse_label"] for line in (data_dir / "trec" / "train.jsonl").open()}
    word_of = {0: "Expression", 1: "Entity", 2: "Description", 3: "Person", 4: "Location", 5: "Number"}
    demos = context.split("\n\n")[1:-1]
    assert len(demos) == 8
    for demo in demos:
        question, word = demo.removeprefix("Question: ").split(" \nType:  ")
        assert word == word_of[coarse[question]]


def test_multiple_choice_demonstrations_end_in_the_gold_letter(act_tasks: dict) -> None:
    task = act_tasks["act_commonsense_qa"]
    train = {doc["question"]: doc for doc in task.fewshot_docs()}
    context = _fewshot(task, next(iter(task.eval_docs)), 4)
    instruction, *demos, query = context.split("\n\n")
    assert instruction == GENERATE.strip()
    assert query.endswith("\nE. new york\nAnswer:")
    assert len(demos) == 4
    for demo in demos:
        question = demo.split("\n")[0]
        assert demo.endswith("\nAnswer: " + "ABCDE"[train[question]["choices"]["label"].index(train[question]["answerKey"])])


@pytest.mark.parametrize("name", ["act_piqa_lite", "act_hellaswag_lite", "act_nq_open_lite"])
def test_validation_only_tasks_never_show_the_evaluated_row_as_a_demo(name: str, act_tasks: dict) -> None:
    task = act_tasks[name]
    docs = list(task.eval_docs)
    assert task.config.fewshot_split == task.config.test_split == "validation"
    query = task.doc_to_text(docs[0])
    # the whole pool but one: the evaluated row must be the one left out
    context = _fewshot(task, docs[0], len(docs) - 1)
    assert context.count(query) == 1 and context.endswith(query)
