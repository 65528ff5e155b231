"""act_eval.lm.runs on genuine lm-eval ``--log_samples`` output (dummy model, tiny made-up tasks).

The runs come from ``fixtures/lm_eval_runs.py``: lm-eval 0.4.13's ``simple_evaluate`` with its
``dummy`` model, saved by lm-eval's own ``EvaluationTracker`` as the CLI saves them. Expected
values are recomputed here independently, from the log-likelihoods lm-eval logged per document.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from act_eval.icl import load_icl_runs
from act_eval.lm import runs as S
from fixtures.lm_eval_runs import ICL_SEEDS, N_DOCS, TASKS, TINY_TASKS, build, copy_run


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    return build(tmp_path_factory.mktemp("lm_eval_runs"))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def samples_file(run_dir: Path, task: str) -> Path:
    (path,) = run_dir.glob(f"tiny/samples_{task}_*.jsonl")
    return path


# ----------------------------------------------------------------------------- locating runs


def test_layout_written_by_lm_eval_and_every_way_to_point_at_it(runs):
    # lm-eval's tracker layout: OUT/<model_name_sanitized>/results_<date>.json beside
    # samples_<task>_<date>.jsonl with the same <date>
    (results,) = (runs.base / "tiny").glob("results_*.json")
    date = results.stem.split("_", 1)[1]
    assert sorted(p.name for p in (runs.base / "tiny").iterdir()) == sorted(
        [results.name] + [f"samples_{t}_{date}.jsonl" for t in TASKS]
    )
    for path in (runs.base, runs.base / "tiny", results):
        run = S.load_run(path)
        assert run.results_path == results and run.date_id == date and run.other_runs == ()
    assert run.tasks == TASKS and run.n_shot("tiny_cls") == 0 and run.fewshot_seed == 1234


def test_directory_errors(runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run"):
        S.load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no lm-eval results"):
        S.load_run(tmp_path / "empty")
    both = tmp_path / "two_models"
    copy_run(runs.base / "tiny", both / "model_a")
    copy_run(runs.act / "tiny", both / "model_b")
    with pytest.raises(ValueError, match="several models"):
        S.load_run(both)
    with pytest.raises(ValueError, match="not an lm-eval results file"):
        S.load_run(samples_file(runs.base, "tiny_cls"))


def test_several_runs_in_one_directory_newest_by_default(runs):
    found = S.find_results(runs.multi)
    assert len(found) == 2 and found[0].name < found[1].name  # ISO dates sort as text
    newest = S.load_run(runs.multi)
    assert newest.results_path == found[1] and newest.other_runs == (found[0],)
    older = S.load_run(found[0])  # the user picks a run by naming its results file
    assert older.results_path == found[0]
    # each run reads its own samples file (same date), not the other run's
    for run in (newest, older):
        got = S.read_task_samples(run, "tiny_cls").values("acc")
        logged = sorted(lines(run.samples_path("tiny_cls")), key=lambda r: r["doc_id"])
        assert got.tolist() == [r["acc"] for r in logged]
        assert np.mean(got) == pytest.approx(run.results["results"]["tiny_cls"]["acc,none"])


# ----------------------------------------------------------------------------- reading samples


def test_values_recomputed_from_logged_loglikelihoods(runs):
    run = S.load_run(runs.base)
    got = S.read_task_samples(run, "tiny_cls")
    assert got.doc_ids == tuple(range(N_DOCS)) and got.filter == "none"
    logged = {r["doc_id"]: r for r in lines(samples_file(runs.base, "tiny_cls"))}
    # independent: the prediction is the choice with the highest logged log-likelihood
    preds = [int(np.argmax([float(ll) for ll, _ in logged[i]["filtered_resps"]])) for i in got.doc_ids]
    golds = [int(logged[i]["target"]) for i in got.doc_ids]
    assert got.values("acc").tolist() == [float(p == g) for p, g in zip(preds, golds)]
    assert got.values("f1").tolist() == [[g, p] for g, p in zip(golds, preds)]
    assert got.values("f1").dtype == np.int64
    # lm-eval's own aggregates agree: accuracy, and the task's macro-F1 aggregation
    from sklearn.metrics import f1_score

    assert run.reported("tiny_cls", "acc", "none") == pytest.approx(np.mean(got.values("acc")))
    assert run.reported("tiny_cls", "f1", "none") == pytest.approx(
        f1_score(golds, preds, average="macro")
    )
    with pytest.raises(ValueError, match="no per-document metric 'bleu'.*it has acc, f1"):
        got.values("bleu")


def test_data_parallel_line_order_is_irrelevant(runs, tmp_path):
    # `accelerate launch` with 2 processes: rank r scores docs r, r+2, ... and the gathered lines
    # come rank by rank (evaluator.py: itertools.chain over ranks) -> even doc_ids, then odd ones
    dp = copy_run(runs.base, tmp_path / "dp")
    path = samples_file(dp, "tiny_cls")
    records = lines(path)
    by_rank = [r for r in records if r["doc_id"] % 2 == 0] + [r for r in records if r["doc_id"] % 2 == 1]
    assert [r["doc_id"] for r in by_rank] != [r["doc_id"] for r in records]
    path.write_text("".join(json.dumps(r) + "\n" for r in by_rank), encoding="utf-8")
    original = S.read_task_samples(S.load_run(runs.base), "tiny_cls")
    reordered = S.read_task_samples(S.load_run(dp), "tiny_cls")
    for attr in ("doc_ids", "doc_hashes", "prompt_hashes", "target_hashes"):
        assert getattr(reordered, attr) == getattr(original, attr)
    assert reordered.values("acc").tolist() == original.values("acc").tolist()


def test_missing_duplicate_and_unreadable_samples(runs, tmp_path):
    no_samples = copy_run(runs.base, tmp_path / "no_samples")
    samples_file(no_samples, "tiny_cls").unlink()
    with pytest.raises(FileNotFoundError, match="--log_samples"):
        S.read_task_samples(S.load_run(no_samples), "tiny_cls")
    doubled = copy_run(runs.base, tmp_path / "doubled")
    path = samples_file(doubled, "tiny_cls")
    path.write_text(path.read_text() * 2)  # one file appended twice (lm-eval opens it with "a")
    with pytest.raises(ValueError, match="doc_id 0 appears twice"):
        S.read_task_samples(S.load_run(doubled), "tiny_cls")
    truncated = copy_run(runs.base, tmp_path / "truncated")
    path = samples_file(truncated, "tiny_cls")
    path.write_text(path.read_text()[:-40])
    with pytest.raises(ValueError, match="not valid JSON"):
        S.read_task_samples(S.load_run(truncated), "tiny_cls")


def test_compressed_samples_read_as_the_plain_ones(runs, tmp_path):
    """``samples_*.jsonl.gz`` (as the leaderboard stores them) read exactly as lm-eval's ``.jsonl``."""
    plain = S.load_run(runs.base)
    packed = copy_run(runs.base, tmp_path / "packed")
    for task in TASKS:
        source = samples_file(packed, task)
        target = S.compress_samples(source, source.with_name(source.name + ".gz"))
        assert gzip.decompress(target.read_bytes()) == source.read_bytes()
        again = S.compress_samples(source, tmp_path / "again" / target.name)  # no name or time in the header
        assert again.read_bytes() == target.read_bytes()
        source.unlink()
    run = S.load_run(packed)
    for task in TASKS:
        assert run.samples_path(task).name.endswith(".jsonl.gz")
        assert S.samples_digest(run.samples_path(task)) == hashlib.sha256(plain.samples_path(task).read_bytes()).digest()
        ours, theirs = S.read_task_samples(run, task), S.read_task_samples(plain, task)
        for attr in ("doc_ids", "doc_hashes", "prompt_hashes", "target_hashes", "metrics"):
            assert getattr(ours, attr) == getattr(theirs, attr)
    with pytest.raises(ValueError, match="compressed samples are named"):
        S.compress_samples(plain.samples_path("tiny_cls"), tmp_path / "x.jsonl")
    # a truncated archive is named, and both forms side by side are refused
    archive = run.samples_path("tiny_cls")
    archive.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(ValueError, match="is not a complete gzip file"):
        S.read_task_samples(run, "tiny_cls")
    with pytest.raises(ValueError, match="is not a complete gzip file"):
        S.samples_digest(archive)
    shutil.copyfile(plain.samples_path("tiny_cls"), archive.with_suffix(""))
    with pytest.raises(ValueError, match=r"both samples_tiny_cls_.*\.jsonl and samples_tiny_cls_.*\.jsonl\.gz .*keep one"):
        run.samples_path("tiny_cls")


def test_several_filters_need_a_choice(runs, tmp_path):
    # generation tasks log one line per document and filter (e.g. strict-match, flexible-extract)
    multi = copy_run(runs.base, tmp_path / "filters")
    path = samples_file(multi, "tiny_cls")
    records = lines(path)
    extra = [dict(r, filter="strict", acc=1.0) for r in records]
    path.write_text("".join(json.dumps(r) + "\n" for r in records + extra), encoding="utf-8")
    run = S.load_run(multi)
    with pytest.raises(ValueError, match=r"several filters \(none, strict\).*--filter"):
        S.read_task_samples(run, "tiny_cls")
    assert S.read_task_samples(run, "tiny_cls", "strict").values("acc").tolist() == [1.0] * N_DOCS
    assert S.read_task_samples(run, "tiny_cls", "none").values("acc").tolist() == [r["acc"] for r in records]
    with pytest.raises(ValueError, match="no filter 'bogus'"):
        S.read_task_samples(run, "tiny_cls", "bogus")


# ----------------------------------------------------------------------------- pairing checks


def read(run_dir: Path, task: str = "tiny_cls") -> S.TaskSamples:
    return S.read_task_samples(S.load_run(run_dir), task)


def test_pairing_accepts_same_documents_and_prompts(runs):
    base, act = read(runs.base), read(runs.act)
    S.check_paired(base, act, names=("baseline", "act"), same_prompt=True)
    assert base.values("acc").tolist() != act.values("acc").tolist()  # different "models"


def test_pairing_refuses_different_prompts_unless_allowed(runs):
    base, oneshot = read(runs.base), read(runs.oneshot)
    with pytest.raises(ValueError, match=rf"{N_DOCS} of {N_DOCS} prompts differ.*n-shot 0 vs 1"):
        S.check_paired(base, oneshot, names=("baseline", "act"), same_prompt=True)
    # a few-shot arm against the zero-shot baseline: same documents, prompts may differ
    S.check_paired(base, oneshot, names=("baseline", "icl"), same_prompt=False)


def test_pairing_refuses_different_document_content(runs):
    with pytest.raises(ValueError, match=r"1 of 24 documents differ in document content \(doc_hash\).*doc_id 3\)"):
        S.check_paired(read(runs.base), read(runs.edited), names=("baseline", "act"), same_prompt=False)


def test_pairing_refuses_different_document_sets(runs):
    with pytest.raises(ValueError, match=r"different documents: 24 in baseline.*10 in act.*14 doc_ids only in baseline \(doc_id 10, 11"):
        S.check_paired(read(runs.base), read(runs.limited), names=("baseline", "act"), same_prompt=True)


def test_pairing_refuses_different_tasks(runs):
    with pytest.raises(ValueError, match="cannot pair different tasks"):
        S.check_paired(read(runs.base, "tiny_cls"), read(runs.act, "tiny_yesno"), names=("a", "b"), same_prompt=False)
    base, cls_only = S.load_run(runs.base), S.load_run(runs.cls_only)
    with pytest.raises(ValueError, match=r"different tasks: only in baseline .*: tiny_yesno; only in act .*: -; pass --tasks"):
        S.select_tasks({"baseline": base, "act": cls_only})
    assert S.select_tasks({"baseline": base, "act": cls_only}, ["tiny_cls"]) == ["tiny_cls"]
    with pytest.raises(ValueError, match="act run .* has no samples for task\\(s\\) tiny_yesno"):
        S.select_tasks({"baseline": base, "act": cls_only}, ["tiny_yesno"])



def test_a_group_name_selects_its_tasks(runs, tmp_path):
    """``--tasks act_classification_lite`` works as in lm-eval: the group's leaf tasks, nested groups expanded."""
    base = S.load_run(runs.base)
    suite = {"suite": ["family"], "family": ["tiny_cls", "tiny_yesno"]}  # as lm-eval records nested groups
    grouped = S.Run(base.results_path, {**base.results, "group_subtasks": suite})
    cls_only = S.load_run(runs.cls_only)
    assert S.select_tasks({"baseline": grouped, "act": base}, ["suite"]) == ["tiny_cls", "tiny_yesno"]
    with pytest.raises(ValueError, match="act run .* has no samples for task\\(s\\) tiny_yesno"):
        S.select_tasks({"baseline": grouped, "act": cls_only}, ["family"])


# ----------------------------------------------------------------------------- ICL runs


def test_icl_runs_load_and_refuse_bad_sets(runs, tmp_path):
    loaded = load_icl_runs(runs.icl)
    assert [r.fewshot_seed for r in loaded] == list(ICL_SEEDS)
    assert {r.n_shot("tiny_cls") for r in loaded} == {1}
    with pytest.raises(ValueError, match="at least two"):
        load_icl_runs(runs.icl[:1])
    with pytest.raises(ValueError, match="given twice"):
        load_icl_runs([runs.icl[0], runs.icl[0] / ".." / "tiny"])
    with pytest.raises(ValueError, match="differ in shot count"):
        load_icl_runs([runs.icl[0], runs.base])
    with pytest.raises(ValueError, match="both used few-shot seed 1234"):
        load_icl_runs([runs.base, runs.act])
    # two zero-shot runs that differ in few-shot seed (edited in a copy): still not ICL
    other = copy_run(runs.act, tmp_path / "seed99")
    (results,) = (other / "tiny").glob("results_*.json")
    data = json.loads(results.read_text())
    data["config"]["fewshot_seed"] = 99
    results.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="zero-shot"):
        load_icl_runs([runs.base, other])


# ----------------------------------------------------------------------------- the real CLI


@pytest.mark.slow
def test_lm_eval_cli_run_added_to_a_directory(runs, tmp_path):
    """``lm_eval run ... --log_samples`` itself (a subprocess, ~15 s), into an OUT that already holds a run."""
    out = copy_run(runs.base, tmp_path / "out")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    subprocess.run(
        [sys.executable, "-m", "lm_eval", "run", "--model", "dummy", "--model_args", "pretrained=tiny",
         "--tasks", "tiny_cls", "--include_path", str(TINY_TASKS), "--log_samples",
         "--output_path", str(out), "--seed", "6,1234,1234,1234"],
        check=True, env=env, capture_output=True, cwd=tmp_path,
    )
    run = S.load_run(out)
    assert len(run.other_runs) == 1 and run.results["config"]["random_seed"] == 6  # the CLI run is newest
    assert run.tasks == ["tiny_cls"]
    got = S.read_task_samples(run, "tiny_cls")
    assert got.doc_ids == tuple(range(N_DOCS))
    assert np.mean(got.values("acc")) == pytest.approx(run.reported("tiny_cls", "acc", "none"))
    # the CLI scores the same documents with the same prompts as the in-process run
    S.check_paired(read(runs.base), got, names=("in-process", "cli"), same_prompt=True)
