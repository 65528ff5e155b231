"""Data resolution for the task suite: local JSONL files, the hub switch, error messages, lite subsets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from act_eval.lm import task_data
from act_eval.lm.task_data import LITE_SIZE, load_task_data, lite_indices, read_rows

SST2 = {"name": "sst2", "hub": ["nyu-mll/glue", "sst2"], "eval_split": "validation", "train_split": "train",
        "fields": ["sentence", "label"]}  # fmt: skip


def test_reads_the_data_directory(data_dir: Path) -> None:
    data = load_task_data(SST2)
    assert set(data) == {"train", "validation"}
    first = json.loads((data_dir / "sst2" / "validation.jsonl").open().readline())
    assert data["validation"][0] == first
    assert len(data["validation"]) == 872


def test_lm_eval_metadata_and_model_args_are_ignored() -> None:
    # lm-eval passes the task's metadata and the run's model arguments as keyword arguments
    data = load_task_data(SST2, version=1.0, pretrained="/some/model", dtype="float32", config_source="x.yaml")
    assert len(data["validation"]) == 872


def test_offline_without_a_data_dir_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACT_EVAL_DATA_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"set ACT_EVAL_DATA_DIR to a directory holding sst2/train.jsonl, "
                                           r"sst2/validation.jsonl") as err:  # fmt: skip
        load_task_data(SST2)
    assert "nyu-mll/glue" in str(err.value)


def test_offline_error_reaches_lm_eval_users(monkeypatch: pytest.MonkeyPatch, task_manager) -> None:
    monkeypatch.delenv("ACT_EVAL_DATA_DIR")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="ACT_EVAL_DATA_DIR"):
        task_manager.load(["act_cb"])


def test_missing_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    (tmp_path / "sst2").mkdir()
    shutil.copy(data_dir / "sst2" / "validation.jsonl", tmp_path / "sst2" / "validation.jsonl")
    monkeypatch.setenv("ACT_EVAL_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "sst2" / "train.jsonl")):
        load_task_data(SST2)


def test_row_without_a_field_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "validation.jsonl"
    path.write_text('{"sentence": "fine", "label": 1}\n\n{"sentence": "no label"}\n')
    with pytest.raises(ValueError, match=rf"^{path}:3: row has no field 'label'$"):
        read_rows(path, ["sentence", "label"])


def test_nested_fields_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "validation.jsonl"
    path.write_text('{"question": "q", "choices": {"text": ["a", "b"]}, "answerKey": "A"}\n')
    with pytest.raises(ValueError, match=rf"^{path}:1: row has no field 'choices.label'$"):
        read_rows(path, ["question", "choices.text", "choices.label", "answerKey"])


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text('{"text": "ok", "label": 0}\n{"text": "broken", \n')
    with pytest.raises(ValueError, match=rf"^{path}:2: not valid JSON"):
        read_rows(path, ["text"])


def test_bad_act_data_block_is_refused() -> None:
    with pytest.raises(ValueError, match="act_data takes name, hub, eval_split"):
        load_task_data({"name": "sst2", "hub": ["nyu-mll/glue"], "eval_splt": "validation"})


def test_hub_is_tried_only_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    # no network here: with the hub allowed, the loader must go to datasets and then explain
    monkeypatch.delenv("ACT_EVAL_DATA_DIR")
    for env in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(env, "0")
    calls = []

    def unreachable(path: str, name: str | None, split: str):
        calls.append((path, name, split))
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr("datasets.load_dataset", unreachable)
    with pytest.raises(RuntimeError, match=r"could not load nyu-mll/glue \(sst2\).*set ACT_EVAL_DATA_DIR"):
        task_data.load_task_data(SST2)
    assert calls == [("nyu-mll/glue", "sst2", "train")]


def test_lite_indices_are_fixed_sorted_and_bounded() -> None:
    picked = lite_indices(872, "sst2")
    assert len(picked) == LITE_SIZE == 200
    assert picked == sorted(set(picked)) and 0 <= picked[0] and picked[-1] < 872
    assert picked == lite_indices(872, "sst2")
    # pinned: a change of the selection rule would silently change every published lite number
    assert picked[:5] == [4, 16, 17, 18, 19]
    assert lite_indices(100, "dbpedia") == list(range(100))
    assert lite_indices(872, "mr") != picked


def test_lite_tasks_hold_the_lite_rows_of_their_full_task(act_tasks: dict) -> None:
    lite = [name for name in act_tasks if name.endswith("_lite")]
    assert len(lite) == len(act_tasks) // 2 == 34
    for name in lite:
        full_docs = list(act_tasks[name.removesuffix("_lite")].eval_docs)
        lite_docs = list(act_tasks[name].eval_docs)
        assert len(lite_docs) == min(LITE_SIZE, len(full_docs)), name
        data_name = act_tasks[name].config.dataset_kwargs["act_data"]["name"]
        assert lite_docs == [full_docs[i] for i in lite_indices(len(full_docs), data_name)], name


def test_variants_of_a_task_share_their_lite_rows(act_tasks: dict) -> None:
    for paper, variant in [("act_agnews_lite", "act_agnews_spaced_lite"), ("act_arc_easy_lite", "act_arc_easy_text_lite")]:
        assert list(act_tasks[paper].eval_docs) == list(act_tasks[variant].eval_docs)
