"""The suite as lm-eval sees it: every task and group loads offline from --include_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLASSIFICATION = ["sst2", "sst5", "mr", "subj", "agnews", "trec", "cb", "boolq", "dbpedia"]
MULTIPLE_CHOICE = ["hellaswag", "arc_easy", "arc_challenge", "piqa", "openbookqa", "copa", "commonsense_qa"]
OPEN_QA = ["nq_open", "triviaqa"]


def _names(names: list[str], suffix: str = "") -> list[str]:
    return [f"act_{n}{suffix}" for n in names]


def test_every_task_loads_offline_with_its_data(act_tasks: dict) -> None:
    expected = (
        _names(CLASSIFICATION) + _names(CLASSIFICATION, "_spaced")
        + _names(MULTIPLE_CHOICE) + _names(MULTIPLE_CHOICE, "_text") + _names(OPEN_QA)
    )  # fmt: skip
    assert sorted(act_tasks) == sorted(expected + [f"{n}_lite" for n in expected])
    for name, task in act_tasks.items():
        docs = list(task.eval_docs)
        assert docs, name
        assert task.config.test_split == task.config.dataset_kwargs["act_data"]["eval_split"], name
        # zero-shot unless --num_fewshot says otherwise; open QA is 5-shot (see tasks/README.md)
        expected_shots = 5 if name.startswith(("act_nq_open", "act_triviaqa")) else None
        assert task.config.num_fewshot == expected_shots, name


def test_fewshot_pool_is_train_where_there_is_one(act_tasks: dict) -> None:
    validation_pool = {"act_hellaswag", "act_piqa", "act_nq_open", "act_triviaqa"}
    for name, task in act_tasks.items():
        base = name.removesuffix("_lite").removesuffix("_spaced").removesuffix("_text")
        act_data = task.config.dataset_kwargs["act_data"]
        if base in validation_pool:
            assert "train_split" not in act_data, name
            assert task.config.fewshot_split == "validation", name
        else:
            assert task.config.fewshot_split == task.config.training_split == act_data["train_split"] == "train", name
            assert len(task.fewshot_docs()) >= 32, name


def test_groups_average_their_tasks_unweighted(task_manager) -> None:
    loaded = task_manager.load(["act_suite", "act_suite_lite", "act_classification_spaced", "act_multiple_choice_text"])
    groups, group_map = loaded["groups"], loaded["group_map"]
    assert group_map["act_suite"] == ["act_classification", "act_multiple_choice", "act_open_qa"]
    assert group_map["act_classification"] == _names(CLASSIFICATION)
    assert group_map["act_multiple_choice"] == _names(MULTIPLE_CHOICE)
    assert group_map["act_open_qa"] == _names(OPEN_QA)
    assert group_map["act_classification_spaced"] == _names(CLASSIFICATION, "_spaced")
    assert group_map["act_multiple_choice_text"] == _names(MULTIPLE_CHOICE, "_text")
    assert group_map["act_suite_lite"] == ["act_classification_lite", "act_multiple_choice_lite", "act_open_qa_lite"]
    assert group_map["act_classification_lite"] == _names(CLASSIFICATION, "_lite")
    assert len(groups["act_suite"].get_all_tasks()) == 18
    for group in groups.values():
        metrics = {m.metric for m in group.aggregate_metric_list}
        assert metrics, group.name
        assert all(m.weight_by_size is False and m.aggregation == "mean" for m in group.aggregate_metric_list)
    assert {m.metric for m in groups["act_suite"].aggregate_metric_list} == {"acc", "exact_match", "token_f1"}


def test_group_mean_is_over_leaf_tasks(task_manager) -> None:
    # act_suite's acc is the plain mean of its 16 tasks, not of its three sub-groups
    suite = task_manager.load(["act_suite"])["groups"]["act_suite"]
    leaves = [t.task_name for t in suite.get_all_tasks()]
    metrics = {name: {"acc,none": 0.0, "sample_len": 10} for name in leaves[:9]}  # classification
    metrics |= {name: {"acc,none": 1.0, "sample_len": 1000} for name in leaves[9:16]}  # multiple choice
    metrics |= {name: {"exact_match,none": 0.5, "sample_len": 5} for name in leaves[16:]}
    result = suite.aggregate(metrics)
    assert result["acc,none"] == 7 / 16
    assert result["exact_match,none"] == 0.5


def test_tasks_path_command_prints_the_include_path(tasks_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "act_eval.cli", "tasks", "path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(out) == tasks_dir
    assert (Path(out) / "groups" / "act_suite_lite.yaml").is_file()


def test_include_path_works_from_any_directory(tmp_path: Path, tasks_dir: Path) -> None:
    # `!function utils.x` resolves next to the YAML and act_eval.lm.task_data by import, so the
    # suite does not depend on the current directory
    script = (
        "from lm_eval.tasks import TaskManager\n"
        f"tm = TaskManager(include_path={str(tasks_dir)!r}, include_defaults=False)\n"
        "t = tm.load(['act_trec_lite'])['tasks']['act_trec_lite']\n"
        "doc = next(iter(t.eval_docs))\n"
        "print(len(list(t.eval_docs)), doc['text'], t.doc_to_choice(doc)[t.doc_to_target(doc)])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    # the first lite row is TREC test row 1, a LOC question
    assert out.stdout.strip().splitlines()[-1] == "200 What county is Modesto , California in ?  Location"
