"""The leaderboard on genuine lm-eval output: manifests, verification, acceptance, the board and its page.

Runs come from lm-eval 0.4.13's ``dummy`` model (random log-likelihoods, no weights) on the real
lite suites and task data, saved as ``lm_eval --output_path OUT --log_samples`` saves them.
Different random seeds play different models and arms. Expected numbers are recomputed here
from the results files themselves; every refusal is checked to leave the leaderboard directory
byte for byte as it was.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from act_eval.cli import main
from act_eval.core.head_map import HeadMap, load_head_map
from act_eval.leaderboard import ROOT_ENV, default_root
from act_eval.leaderboard.browser import FLAGS, chromium, run_chromium
from act_eval.lm.runs import load_run
from fixtures.lm_eval_runs import quick_env_info, record_calibration

SUITE = "act_classification_lite"
CLS_TASKS = [
    "act_sst2_lite", "act_sst5_lite", "act_mr_lite", "act_subj_lite", "act_agnews_lite",
    "act_trec_lite", "act_cb_lite", "act_boolq_lite", "act_dbpedia_lite",
]  # fmt: skip


@dataclass(frozen=True)
class Runs:
    maps: dict[str, Path]
    base_a: Path
    act_a: Path
    icl_a: Path
    base_b: Path
    act_b: Path
    limited: Path
    first_token_a: Path  # tiny-a with a first-token map (its calibration recorded, as hf-act writes it)


@pytest.fixture(scope="session")
def runs(tmp_path_factory, data_dir) -> Runs:
    """Two "models" (tiny-a, tiny-b): baseline and ACT each, ICL for tiny-a, and a --limit run; manifests written."""
    from lm_eval.tasks import TaskManager

    from act_eval.icl import run_icl
    from act_eval.lm.evaluate import evaluate_and_save
    from act_eval.paths import resource_dir

    out = tmp_path_factory.mktemp("leaderboard_runs")
    maps = {}
    for model in ("tiny-a", "tiny-b"):
        hm = HeadMap(
            model=f"test/{model}", architecture="llama", num_layers=2, num_heads=2, num_kv_heads=1,
            heads={0: (1,)}, name=f"{model}.classification", task_family="classification",
        )  # fmt: skip
        maps[model] = hm.save(out / "maps" / f"{model}.classification.json")
    first_token = HeadMap(
        model="test/tiny-a", architecture="llama", num_layers=2, num_heads=2, num_kv_heads=1,
        heads={1: (0,)}, name="tiny-a.ft", task_family="classification", rule="first_token", factor=2.0,
    )  # fmt: skip
    maps["tiny-a.ft"] = first_token.save(out / "maps" / "tiny-a.ft.json")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    tm = TaskManager(include_path=[str(resource_dir("tasks"))], include_defaults=False)

    def evaluate(name: str, seed: int, head_map: Path | None = None, tasks: str = SUITE, **kwargs) -> Path:
        args = {"pretrained": "tiny", **({"head_map": str(head_map)} if head_map else {})}
        evaluate_and_save(
            "dummy", args, [tasks], out / name, task_manager=tm, random_seed=seed, bootstrap_iters=0, **kwargs
        )
        return out / name

    with quick_env_info():
        r = Runs(
            maps=maps,
            base_a=evaluate("base_a", 1),
            act_a=evaluate("act_a", 2, maps["tiny-a"]),
            icl_a=run_icl(
                "dummy",
                {"pretrained": "tiny"},
                [SUITE],
                1,
                [0, 1],
                out / "icl_a",
                builtin_tasks=False,
                bootstrap_iters=0,
            ).parent,  # fmt: skip
            base_b=evaluate("base_b", 3),
            act_b=evaluate("act_b", 4, maps["tiny-b"]),
            limited=evaluate("limited", 5, tasks="act_open_qa_lite", limit=10),
            first_token_a=evaluate("first_token_a", 6, maps["tiny-a.ft"]),
        )
    record_calibration(load_run(r.first_token_a).results_path, first_token)
    for path in (r.base_a, r.act_a, r.icl_a, r.limited, r.first_token_a):
        prepare(path, "test/tiny-a")
    for path in (r.base_b, r.act_b):
        prepare(path, "test/tiny-b")
    return r


def prepare(run_dir: Path, model_id: str) -> None:
    """``act-eval leaderboard manifest``, naming what a dummy run cannot record."""
    argv = [
        "leaderboard",
        "manifest",
        str(run_dir),
        "--model-id",
        model_id,
        "--revision",
        "r1",
        "--hardware",
        "test machine",
    ]
    assert main([*argv, "--force"]) == 0


def submit(root: Path, run_dir: Path, *extra: str) -> int:
    return main(["submit", str(run_dir), "--root", str(root), *extra])


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every directory under ``root``: "byte for byte unchanged" is equality of this."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def results_of(run_dir: Path) -> dict:
    return load_run(run_dir).results


def copy(src: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(src, tmp_path / name))


def rewrite_json(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def rewrite_samples(path: Path, edit) -> None:
    # split on "\n" only: documents may hold other characters str.splitlines() treats as line breaks
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    lines = edit(lines)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def samples_path(run_dir: Path, task: str) -> Path:
    return load_run(run_dir).samples_path(task)


# ----------------------------------------------------------------------------- the manifest


def test_manifest_is_written_from_what_the_run_records(runs):
    base, act, icl = (json.loads((p / "manifest.json").read_text()) for p in (runs.base_a, runs.act_a, runs.icl_a))
    recorded = results_of(runs.base_a)
    assert base["arm"] == "baseline" and act["arm"] == "act" and icl["arm"] == "icl"
    assert base["suite"] == SUITE and base["subset"] == "lite" and sorted(base["tasks"]) == sorted(CLS_TASKS)
    assert base["model"]["model_args"] == recorded["config"]["model_args"]
    assert base["model"]["lm_eval_model"] == "dummy"
    assert base["seeds"] == {
        "random": 1,
        "numpy": recorded["config"]["numpy_seed"],
        "torch": recorded["config"]["torch_seed"],
    }
    assert base["versions"]["lm_eval"] == recorded["lm_eval_version"]
    assert base["head_map"] is None and base["threshold"] is None
    assert base["fewshot"]["num_fewshot"] is None and act["fewshot"]["num_fewshot"] is None  # each task's own shots
    assert [str(runs.base_a / r) for r in base["runs"]] == [str(load_run(runs.base_a).results_path)]
    # ACT: the unpublished map travels with the submission, with the hash of the file the run loaded
    map_file = json.loads(runs.maps["tiny-a"].read_text())
    assert act["head_map"] == {"name": "tiny-a.classification", "content_hash": map_file["content_hash"]}
    assert (runs.act_a / "head_map.json").read_bytes() == runs.maps["tiny-a"].read_bytes()
    assert (act["threshold"], act["beta"]) == (map_file["threshold"], map_file["beta"])
    assert act["format_version"] == base["format_version"] == 1 and "rule" not in act and "factor" not in act
    # ICL: one run per few-shot seed, in the order of icl.json
    assert icl["fewshot"]["num_fewshot"] == 1 and icl["fewshot"]["seeds"] == [0, 1] and len(icl["runs"]) == 2


def test_manifest_needs_the_weights_named(runs, tmp_path, capsys):
    run = copy(runs.base_a, tmp_path, "run")
    (run / "manifest.json").unlink()
    assert main(["leaderboard", "manifest", str(run), "--model-id", "test/x", "--hardware", "h"]) == 2
    assert "needs a revision or a file_hash" in capsys.readouterr().err
    assert not (run / "manifest.json").exists()


# ----------------------------------------------------------------------------- accepting


def test_a_valid_submission_is_accepted_whole(runs, tmp_path, capsys):
    root = tmp_path / "board"
    assert submit(root, runs.base_a) == 0
    (stored,) = (root / "submissions").iterdir()
    out = capsys.readouterr().out
    assert stored.name.startswith(f"tiny-a.baseline.{SUITE}.") and "accepted" in out
    assert f"  baseline of test/tiny-a on {SUITE}: 1 run(s), 9 task(s)" in out  # the verification report
    # stored as data: the results file under the model's name (lm-eval named its folder after
    # pretrained=), byte for byte; each samples file gzip-compressed beside it, the same bytes inside
    source = load_run(runs.base_a)
    assert source.results_path.parent.name == "tiny"
    results = stored / "tiny-a" / source.results_path.name
    assert results.read_bytes() == source.results_path.read_bytes()
    for task in CLS_TASKS:
        plain = source.samples_path(task)
        assert gzip.decompress((results.parent / f"{plain.name}.gz").read_bytes()) == plain.read_bytes(), task
    assert sorted(p.name for p in results.parent.iterdir()) == sorted(
        [results.name] + [f"{source.samples_path(t).name}.gz" for t in CLS_TASKS]
    )
    manifest = json.loads((stored / "manifest.json").read_text())
    assert manifest["runs"] == [f"tiny-a/{source.results_path.name}"]
    assert manifest == {**json.loads((runs.base_a / "manifest.json").read_text()), "runs": manifest["runs"]}
    # the id's digest is over the uncompressed samples: the plain files lm-eval wrote give it
    record = json.loads((stored / "record.json").read_text())
    digest = hashlib.sha256()
    for task in source.tasks:
        digest.update(hashlib.sha256(source.samples_path(task).read_bytes()).digest())
    assert record["fingerprint"] == "sha256:" + digest.hexdigest() and record["id"] == stored.name
    assert record["tasks"]["act_cb_lite"] == {"family": SUITE, "metric": "acc", "filter": "none", "n": 56}
    assert not [p for p in root.rglob(".*")], "no work-in-progress directory is left"
    assert main(["leaderboard", "list", "--root", str(root)]) == 0
    assert stored.name in capsys.readouterr().out


def test_baseline_and_act_are_accepted_together(runs, tmp_path, capsys):
    root = tmp_path / "board"
    assert submit(root, runs.act_a, "--baseline", str(runs.base_a)) == 0
    ids = sorted(p.name for p in (root / "submissions").iterdir())
    assert [i.split(".")[1] for i in ids] == ["act-tiny-a", "baseline"]
    # the baseline already on the board is checked against, not accepted twice
    assert submit(root, runs.icl_a, "--baseline", str(runs.base_a)) == 0
    assert len(list((root / "submissions").iterdir())) == 3


def test_dry_run_and_root_from_the_environment(runs, tmp_path, monkeypatch, capsys):
    root = tmp_path / "env_board"
    monkeypatch.setenv(ROOT_ENV, str(root))
    assert default_root() == root
    assert main(["submit", str(runs.base_a), "--dry-run"]) == 0
    assert "would accept: tiny-a.baseline" in capsys.readouterr().out
    assert not root.exists()


def test_a_failed_commit_leaves_nothing(runs, tmp_path, monkeypatch, capsys):
    root = tmp_path / "board"
    assert submit(root, runs.base_a) == 0
    before = snapshot(root)

    def fail(src, dst):  # the copy is complete; the final rename fails
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", fail)
    assert main(["submit", str(runs.act_a), "--root", str(root)]) == 2
    assert "act-eval submit: error: OSError: disk full" in capsys.readouterr().err
    assert snapshot(root) == before


def compress_in_place(run_dir: Path) -> None:
    """Replace every samples file of the run by its .jsonl.gz (as a submitter may send them)."""
    run = load_run(run_dir)
    for task in run.tasks:
        plain = run.samples_path(task)
        (plain.parent / f"{plain.name}.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()


def test_compressed_samples_give_the_same_submission(runs, tmp_path, capsys):
    root = tmp_path / "board"
    assert submit(root, runs.base_a) == 0
    (stored,) = (root / "submissions").iterdir()
    # the same samples compressed by the submitter: the same id, so a duplicate of what is stored
    packed = copy(runs.base_a, tmp_path, "packed")
    compress_in_place(packed)
    fresh = tmp_path / "fresh"
    assert submit(fresh, packed, "--dry-run") == 0
    assert f"would accept: {stored.name} " in capsys.readouterr().out
    assert submit(root, packed) == 2
    assert f"refused (duplicate): its samples are identical to those of accepted submission {stored.name}" in (
        capsys.readouterr().err
    )
    # both forms of one task's samples: which one counts would be a guess
    both = copy(runs.base_a, tmp_path, "both")
    plain = load_run(both).samples_path("act_cb_lite")
    (plain.parent / f"{plain.name}.gz").write_bytes(gzip.compress(plain.read_bytes()))
    assert submit(fresh, both) == 2
    assert "refused (results): act_cb_lite: both samples_act_cb_lite_" in capsys.readouterr().err


def test_accepted_submissions_verify_again_as_stored(runs, tmp_path, capsys):
    root = tmp_path / "board"
    assert submit(root, runs.act_a, "--baseline", str(runs.base_a)) == 0
    capsys.readouterr()
    assert main(["leaderboard", "verify", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    ids = sorted(p.name for p in (root / "submissions").iterdir())
    assert [line.split()[1] for line in out.splitlines() if line.startswith("verified: ")] == ids
    assert "2 of 2 accepted submission(s) verified" in out
    # an old run's head map: checked by name and hash, and the report says it could not be more
    assert "the results file records no calibration (a run made before hf-act recorded it)" in out
    # a stored samples file altered afterwards: that submission fails, the other still passes
    act_dir = next(p for p in (root / "submissions").iterdir() if ".act-" in p.name)
    (archive,) = act_dir.glob("tiny-a/samples_act_sst2_lite_*.jsonl.gz")
    lines = gzip.decompress(archive.read_bytes()).decode().split("\n")
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "acc": 1.0 - first["acc"]})  # one document's outcome flipped
    archive.write_bytes(gzip.compress("\n".join(lines).encode()))
    assert main(["leaderboard", "verify", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"FAILED: {act_dir.name}: refused (metric): act_sst2_lite: acc,none is" in out
    assert "1 of 2 accepted submission(s) verified" in out
    archive.write_bytes(archive.read_bytes()[:-100])  # a truncated archive is named, not a traceback
    assert main(["leaderboard", "verify", act_dir.name, "--root", str(root)]) == 1
    assert "is not a complete gzip file" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the map that ran (config.act)


def with_record(runs: Runs, tmp: Path, name: str, **changes) -> Path:
    """tiny-a's ACT run as hf-act now writes it: its results record the calibration of the map it loaded."""
    run = copy(runs.act_a, tmp, name)
    record_calibration(load_run(run).results_path, load_head_map(run / "head_map.json"), **changes)
    return run


def test_a_recorded_calibration_is_checked_against_the_map(runs, tmp_path, capsys):
    run = with_record(runs, tmp_path, "recorded")
    ran = load_head_map(run / "head_map.json")
    assert submit(tmp_path / "board", run) == 0
    out = capsys.readouterr().out
    assert (
        f"head map tiny-a.classification (head_map.json): the calibration the run recorded ({ran.content_hash[:19]}..., "
        "1 head(s), threshold 0.1, beta 0.4) is this map file's" in out
    )
    # compare checks it too: the run's own head_map.json, then the head_map= it loaded
    assert main(["compare", str(runs.base_a), str(run), "--no-plot", "--format", "json"]) == 0
    assert "not checked" not in capsys.readouterr().err
    # a baseline must not calibrate
    base = copy(runs.base_a, tmp_path, "base_recorded")
    record_calibration(load_run(base).results_path, ran)
    assert submit(tmp_path / "board2", base) == 2
    assert "refused (manifest): a baseline run must not calibrate, but" in capsys.readouterr().err
    # a record that does not match the run's own settings
    odd = with_record(runs, tmp_path, "odd_threshold", threshold=0.2)
    assert submit(tmp_path / "board3", odd) == 2
    assert (
        "refused (head-map): head map tiny-a.classification: the run used threshold 0.2, the run's settings give the map's 0.1"
        in capsys.readouterr().err
    )


def test_a_map_edited_after_the_run_is_refused(runs, tmp_path, capsys):
    run = with_record(runs, tmp_path, "edited_map")
    ran = load_head_map(run / "head_map.json")
    loaded = Path(shutil.copy(runs.maps["tiny-a"], tmp_path))  # the file the run loaded (head_map=), a copy to edit
    for path, args in ((load_run(run).results_path, lambda r: r["config"]), (run / "manifest.json", lambda m: m["model"])):
        rewrite_json(path, lambda data, args=args: args(data)["model_args"].update({"head_map": str(loaded)}))
    edited = HeadMap(**{**{k: getattr(ran, k) for k in ran.__dataclass_fields__}, "heads": {0: (0, 1)}, "source": ""})
    for path in (loaded, run / "head_map.json"):
        edited.save(path)  # a valid map file with its own new hash, and the same name
    message = (
        f"head map tiny-a.classification: the run used content hash {ran.content_hash} but the map file now has "
        f"{edited.content_hash}: the map was edited after the run"
    )
    root = tmp_path / "board"
    # submit refuses, whether the manifest still cites the map that ran or the edited one
    assert submit(root, run) == 2
    assert f"refused (head-map): {message}" in capsys.readouterr().err
    rewrite_json(run / "manifest.json", lambda m: m["head_map"].update({"content_hash": edited.content_hash}))
    assert submit(root, run) == 2
    assert f"refused (head-map): {message}" in capsys.readouterr().err
    assert not root.exists()
    # so does writing the manifest again, and compare (one line, naming the map)
    argv = ["leaderboard", "manifest", str(run), "--model-id", "test/tiny-a", "--revision", "r1", "--hardware", "h"]
    assert main([*argv, "--force"]) == 2
    assert message in capsys.readouterr().err
    assert main(["compare", str(runs.base_a), str(run), "--no-plot"]) == 2
    assert capsys.readouterr().err.strip() == f"act-eval compare: error: {message}"


def test_a_published_map_edited_after_the_run_is_refused(runs, tmp_path, capsys, monkeypatch):
    import act_eval.core.head_map as head_maps
    published = tmp_path / "head_maps"
    run = with_record(runs, tmp_path, "published")
    ran = load_head_map(run / "head_map.json")
    ran.save(published / "tiny-a.classification.json")
    (run / "head_map.json").unlink()  # a published map is found by name
    monkeypatch.setattr(head_maps, "published_dir", lambda: published)
    assert submit(tmp_path / "board", run, "--dry-run") == 0
    assert "(the published map tiny-a.classification): the calibration the run recorded" in capsys.readouterr().out
    edited = HeadMap(**{**{k: getattr(ran, k) for k in ran.__dataclass_fields__}, "beta": 0.5, "source": ""})
    edited.save(published / "tiny-a.classification.json")
    message = (
        f"head map tiny-a.classification: the run used content hash {ran.content_hash} "
        f"but the map file now has {edited.content_hash}"
    )
    assert submit(tmp_path / "board", run) == 2
    assert f"refused (head-map): {message}" in capsys.readouterr().err
    # compare: the run loaded head_map=<path of the original file>, which still holds the map that ran
    assert main(["compare", str(runs.base_a), str(run), "--no-plot", "--format", "json"]) == 0
    capsys.readouterr()
    shutil.copyfile(published / "tiny-a.classification.json", tmp_path / "edited.json")
    rewrite_json(
        load_run(run).results_path, lambda r: r["config"]["model_args"].update({"head_map": str(tmp_path / "edited.json")})
    )
    assert main(["compare", str(runs.base_a), str(run), "--no-plot"]) == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- first-token scaling: an arm of its own


def test_a_first_token_manifest_records_the_rule_and_factor(runs):
    manifest = json.loads((runs.first_token_a / "manifest.json").read_text())
    ran = load_head_map(runs.maps["tiny-a.ft"])
    assert manifest["format_version"] == 2 and manifest["arm"] == "first_token"
    assert (manifest["rule"], manifest["factor"]) == ("first_token", 2.0)
    assert "threshold" not in manifest and "beta" not in manifest  # ACT's parameters, which the run never used
    assert manifest["head_map"] == {"name": "tiny-a.ft", "content_hash": ran.content_hash}
    assert (runs.first_token_a / "head_map.json").read_bytes() == runs.maps["tiny-a.ft"].read_bytes()
    assert list(manifest)[4:7] == ["head_map", "rule", "factor"]  # where version 1 has threshold and beta


def test_every_accepted_manifest_reads_back_byte_for_byte():
    """The committed board's manifests are files exactly as this act-eval writes them: version 1 for
    every arm but first-token scaling's (ACT's among them), version 2 for that one."""
    from act_eval.leaderboard.manifest import read_manifest

    manifests = sorted((Path(__file__).resolve().parents[1] / "leaderboard" / "submissions").glob("*/manifest.json"))
    assert manifests
    for path in manifests:
        manifest = read_manifest(path.parent)
        assert manifest.format_version == (2 if manifest.arm == "first_token" else 1), path
        assert manifest.to_json() == path.read_text(encoding="utf-8"), path
    assert {read_manifest(path.parent).format_version for path in manifests} == {1, 2}


@pytest.fixture(scope="module")
def first_token_board(runs, tmp_path_factory) -> Path:
    """tiny-a's baseline, ACT and first-token runs accepted and built into a board."""
    root = tmp_path_factory.mktemp("first_token_board") / "leaderboard"
    assert submit(root, runs.first_token_a, "--baseline", str(runs.base_a)) == 0
    assert submit(root, runs.act_a) == 0
    assert main(["leaderboard", "build", "--root", str(root), "--resamples", "200"]) == 0
    return root


def test_a_first_token_run_is_accepted_as_its_own_arm(runs, tmp_path, capsys):
    root = tmp_path / "board"
    assert submit(root, runs.first_token_a, "--baseline", str(runs.base_a)) == 0
    out = capsys.readouterr().out
    ran = load_head_map(runs.maps["tiny-a.ft"])
    ids = sorted(p.name for p in (root / "submissions").iterdir())
    assert [i.split(".")[1] for i in ids] == ["baseline", "first-token-tiny-a"] and ".ft.act_classification_lite." in ids[1]
    assert f"first-token scaling (tiny-a.ft) of test/tiny-a on {SUITE}: 1 run(s), 9 task(s)" in out
    assert (
        f"head map tiny-a.ft (head_map.json): the calibration the run recorded ({ran.content_hash[:19]}..., 1 head(s), "
        "rule first_token, factor 2) is this map file's (content hash, heads, rule, factor)" in out
    )
    stored = json.loads(next((root / "submissions").glob("*first-token*/manifest.json")).read_text())
    assert {k: stored[k] for k in ("arm", "rule", "factor")} == {"arm": "first_token", "rule": "first_token", "factor": 2.0}
    # the same run again is a duplicate; an ACT run of the same model is another arm, not one
    assert submit(root, runs.first_token_a) == 2
    assert "refused (duplicate)" in capsys.readouterr().err
    assert submit(root, runs.act_a) == 0
    assert main(["leaderboard", "verify", "--root", str(root)]) == 0
    assert "3 of 3 accepted submission(s) verified" in capsys.readouterr().out


def test_the_board_shows_first_token_scaling_paired_with_the_baseline(runs, first_token_board):
    data = json.loads((first_token_board / "leaderboard.json").read_text())
    (section,) = data["sections"]
    rows = {r["arm"]: r for r in section["rows"]}
    scaled = rows["first_token"]
    assert scaled["label"] == "first-token scaling (tiny-a.ft)" and scaled["kind"] == "first_token"
    diff = family_mean(runs.first_token_a) - family_mean(runs.base_a)
    assert scaled["families"][SUITE]["diff"] == pytest.approx(diff)
    assert scaled["families"][SUITE]["p"] is not None
    (comparison,) = section["comparisons"]
    assert comparison["rivals"] == [scaled["id"]] and comparison["act"] == rows["act"]["id"]
    names = {r["comparison"] for r in comparison["report"]["rows"]}
    assert names == {"act vs baseline", "first-token vs baseline", "act vs first-token"}
    (winner,) = section["winners"]
    assert set(winner["cells"]) == {"baseline", "act", "first_token"}
    assert winner["cells"]["first_token"]["diff"] == pytest.approx(diff)
    assert [g["submission"] for g in section["gains"]] == [rows["act"]["id"]] * 9  # the ACT view stays ACT's
    readme = (first_token_board / "README.md").read_text()
    assert "| tiny-a | first-token scaling (tiny-a.ft) | act_classification_lite |" in readme
    assert "| model | family | baseline | ACT | first-token scaling | best arm |" in readme
    html = (first_token_board / "index.html").read_text()
    assert "first-token scaling (tiny-a.ft)" in html and "first-token scaling" in html


def _edited_factor(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.first_token_a, tmp, "edited_factor")
    rewrite_json(run / "manifest.json", lambda m: m.update({"factor": 3.0}))
    return run


def _recorded_factor(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.first_token_a, tmp, "recorded_factor")  # the results file claims another factor than the map's
    rewrite_json(load_run(run).results_path, lambda r: r["config"]["act"].update({"factor": 3.0}))
    return run


def _recorded_rule(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.first_token_a, tmp, "recorded_rule")  # the record claims ACT ran the map's heads

    def claim_act(results: dict) -> None:
        block = results["config"]["act"]
        del block["factor"]
        block.update({"rule": "act", "threshold": 0.1, "beta": 0.4})

    rewrite_json(load_run(run).results_path, claim_act)
    return run


def _no_record(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.first_token_a, tmp, "no_record")
    rewrite_json(load_run(run).results_path, lambda r: r["config"].pop("act"))
    return run


def _first_token_as_act(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.first_token_a, tmp, "as_act")  # a version 1 ACT manifest for a first-token run: ACT's defaults would pass

    def as_act(manifest: dict) -> None:
        del manifest["rule"], manifest["factor"]
        manifest.update({"format_version": 1, "arm": "act", "threshold": 0.1, "beta": 0.4})

    rewrite_json(run / "manifest.json", as_act)
    return run


def _edited_first_token_map(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.first_token_a, tmp, "edited_ft_map")
    ran = load_head_map(run / "head_map.json")
    HeadMap(**{**{k: getattr(ran, k) for k in ran.__dataclass_fields__}, "factor": 3.0, "source": ""}).save(run / "head_map.json")
    return run


def _first_token_version_1(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.first_token_a, tmp, "ft_version_1")
    rewrite_json(run / "manifest.json", lambda m: m.update({"format_version": 1}))
    return run


FIRST_TOKEN_REFUSALS = {
    "first-token: edited factor": (_edited_factor, "head-map", "the run used factor 2, the manifest says 3"),
    "first-token: recorded factor": (_recorded_factor, "head-map", "head map tiny-a.ft: the run used factor 3, the run's settings give the map's 2"),
    "first-token: recorded rule": (_recorded_rule, "head-map", "head map tiny-a.ft: the run recorded rule act, the map's rule is first_token"),
    "first-token: no record": (_no_record, "head-map", "records no calibration (config.act): a first_token run of hf-act records"),
    "first-token: as an ACT run": (_first_token_as_act, "head-map", "head map 'tiny-a.ft' has rule first_token, the manifest (act arm) says act"),
    "first-token: map edited": (_edited_first_token_map, "head-map", "the map was edited after the run"),
    "first-token: version 1": (_first_token_version_1, "manifest", "lacks threshold, beta"),
}  # fmt: skip


# ----------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def populated_root(runs, tmp_path_factory) -> Path:
    """A leaderboard holding tiny-a's baseline and a built board: refusals must leave all of it untouched."""
    root = tmp_path_factory.mktemp("populated") / "board"
    assert submit(root, runs.base_a) == 0
    assert main(["leaderboard", "build", "--root", str(root), "--resamples", "200"]) == 0
    return root


def _edit_metric(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "edited_metric")
    rewrite_json(
        load_run(run).results_path,
        lambda r: r["results"]["act_sst2_lite"].update({"acc,none": r["results"]["act_sst2_lite"]["acc,none"] + 0.01}),
    )
    return run


def _missing_task(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "missing_task")
    results = load_run(run)
    results.samples_path("act_trec_lite").unlink()

    def drop(r: dict) -> None:
        for key in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples"):
            r[key].pop("act_trec_lite", None)

    rewrite_json(results.results_path, drop)
    rewrite_json(run / "manifest.json", lambda m: m["tasks"].remove("act_trec_lite"))
    return run


def _missing_samples_file(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "missing_samples")
    samples_path(run, "act_agnews_lite").unlink()
    return run


def _wrong_head_map_hash(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "wrong_hash")
    rewrite_json(run / "manifest.json", lambda m: m["head_map"].update({"content_hash": "sha256:" + "0" * 64}))
    return run


def _edited_document(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "edited_doc")
    path = samples_path(run, "act_mr_lite")
    rewrite_samples(path, lambda lines: [{**x, "doc_hash": "f" * 64} if x["doc_id"] == 7 else x for x in lines])
    return run


def _dropped_document(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "dropped_doc")
    rewrite_samples(samples_path(run, "act_boolq_lite"), lambda lines: [x for x in lines if x["doc_id"] != 11])
    return run


def _other_definition(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "other_definition")
    rewrite_json(
        load_run(run).results_path, lambda r: r["configs"]["act_sst2_lite"].update({"description": "Be brief.\n\n"})
    )
    return run


def _other_shots(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "other_shots")  # a task run with --num_fewshot, not at its default
    rewrite_json(load_run(run).results_path, lambda r: r["n-shot"].update({"act_sst2_lite": 2}))
    return run


def _invalid_json(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "invalid_json")
    (run / "manifest.json").write_text('{"format": "act-eval-submission",', encoding="utf-8")
    return run


def _unknown_arm(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "unknown_arm")
    rewrite_json(run / "manifest.json", lambda m: m.update({"arm": "finetuned"}))
    return run


def _no_hardware(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "no_hardware")
    rewrite_json(run / "manifest.json", lambda m: m.pop("hardware"))
    return run


def _manifest_disagrees(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "disagrees")
    rewrite_json(run / "manifest.json", lambda m: m["seeds"].update({"random": 99}))
    return run


def _same_samples(runs: Runs, tmp: Path) -> Path:
    return runs.base_a  # already on the board


def _same_configuration(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.base_b, tmp, "same_configuration")  # another run claiming to be tiny-a's baseline
    prepare(run, "test/tiny-a")
    return run


def _other_prompts(runs: Runs, tmp: Path) -> Path:
    run = copy(runs.act_a, tmp, "other_prompts")  # ACT must see the baseline's prompts
    rewrite_samples(samples_path(run, "act_cb_lite"), lambda lines: [{**x, "prompt_hash": "e" * 64} for x in lines])
    return run


REFUSALS = {
    "edited metric": (_edit_metric, "metric", "act_sst2_lite: acc,none is"),
    "missing task": (_missing_task, "missing-task", f"lacks 1 task(s) of {SUITE}: act_trec_lite"),
    "missing samples file": (_missing_samples_file, "missing-task", "act_agnews_lite: no samples file samples_act_agnews_lite_"),
    "limited run": (lambda runs, tmp: runs.limited, "limited", "was run with --limit 10"),
    "wrong head-map hash": (_wrong_head_map_hash, "head-map", "the manifest says sha256:0000"),
    "edited document": (_edited_document, "doc-hash", "act_mr_lite: 1 of 200 documents differ from the task data (doc_hash of doc_id 7)"),
    "dropped document": (_dropped_document, "partial", "act_boolq_lite: the samples (filter none) hold 199 documents"),
    "other task definition": (_other_definition, "task-definition", "act_sst2_lite: the run's task config differs from tasks/ in description"),
    "task at other shots": (_other_shots, "manifest", "ran act_sst2_lite 2-shot (expected 0)"),
    "malformed manifest: not JSON": (_invalid_json, "manifest", "is not valid JSON"),
    "malformed manifest: unknown arm": (_unknown_arm, "manifest", "field 'arm' must be one of baseline, act, icl"),
    "malformed manifest: missing field": (_no_hardware, "manifest", "lacks hardware"),
    "manifest disagrees with the results": (_manifest_disagrees, "manifest", "seeds.random = 99"),
    "duplicate: same samples": (_same_samples, "duplicate", "identical to those of accepted submission tiny-a.baseline"),
    "duplicate: same configuration": (_same_configuration, "duplicate", "already holds baseline results of test/tiny-a"),
    "prompts differ from the baseline": (_other_prompts, "pairing", "act_cb_lite: 56 of 56 prompts differ"),
    **FIRST_TOKEN_REFUSALS,
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_bad_submission_is_refused_and_changes_nothing(case, runs, populated_root, tmp_path, capsys):
    make, check, message = REFUSALS[case]
    run = make(runs, tmp_path)
    before = snapshot(populated_root)
    assert submit(populated_root, run) == 2
    err = capsys.readouterr().err
    assert f"refused ({check}):" in err and message in err, err
    assert "act-eval-submit-" not in err  # names the user's files, not the private copy
    assert snapshot(populated_root) == before


# ----------------------------------------------------------------------------- the board


@pytest.fixture(scope="module")
def board(runs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("board") / "leaderboard"
    for run in (runs.base_a, runs.act_a, runs.icl_a, runs.base_b, runs.act_b):
        assert submit(root, run) == 0
    assert main(["leaderboard", "build", "--root", str(root), "--resamples", "2000"]) == 0
    return root


def family_mean(run_dir: Path) -> float:
    results = results_of(run_dir)["results"]
    return float(np.mean([results[t]["acc,none"] for t in CLS_TASKS]))


def test_board_values_and_differences_come_from_the_runs(runs, board):
    from act_eval.compare.report import compare_runs

    data = json.loads((board / "leaderboard.json").read_text())
    (section,) = data["sections"]
    assert section["subset"] == "lite" and list(section["families"]) == [SUITE]
    assert section["families"][SUITE] == CLS_TASKS and section["metrics"] == {SUITE: "acc"}
    rows = {(r["model"], r["arm"]): r for r in section["rows"]}
    assert len(rows) == 5
    base, act = rows[("test/tiny-a", "baseline")], rows[("test/tiny-a", "act")]
    assert base["families"][SUITE]["value"] == pytest.approx(family_mean(runs.base_a))
    assert base["families"][SUITE]["diff"] is None
    assert act["families"][SUITE]["diff"] == pytest.approx(family_mean(runs.act_a) - family_mean(runs.base_a))
    # ICL: the mean over seeds of each seed's family mean, with their spread
    seeds = [family_mean(p.parent) for p in sorted(runs.icl_a.glob("seed_*/*/results_*.json"))]
    icl = rows[("test/tiny-a", "icl")]["families"][SUITE]
    assert icl["value"] == pytest.approx(np.mean(seeds)) and icl["std"] == pytest.approx(np.std(seeds, ddof=1))
    assert icl["diff"] == pytest.approx(np.mean(seeds) - family_mean(runs.base_a))
    # the significance is compare's, on the same settings: family mean and each task
    report = compare_runs(load_run(runs.base_a), load_run(runs.act_a), tasks=CLS_TASKS, n_resamples=2000, seed=0)
    mean = next(r for r in report.rows if r.task == "mean" and r.comparison == "act vs baseline")
    assert act["families"][SUITE]["p"] == pytest.approx(mean.p_value)
    assert (act["families"][SUITE]["low"], act["families"][SUITE]["high"]) == pytest.approx(
        (mean.diff_low, mean.diff_high)
    )
    for r in report.rows:
        if r.task != "mean":
            assert (
                act["tasks"][r.task]["p"] == pytest.approx(r.p_adjusted)
                and act["tasks"][r.task]["verdict"] == r.verdict
            )


def test_cross_model_view_ranks_models_by_their_act_gain(runs, board):
    data = json.loads((board / "leaderboard.json").read_text())
    (section,) = data["sections"]
    expected = {}
    for model, base, act in (("test/tiny-a", runs.base_a, runs.act_a), ("test/tiny-b", runs.base_b, runs.act_b)):
        b, a = results_of(base)["results"], results_of(act)["results"]
        expected[model] = {t: a[t]["acc,none"] - b[t]["acc,none"] for t in CLS_TASKS}
    models = section["models"]
    assert [m["model"] for m in models] == sorted(expected, key=lambda m: -np.mean(list(expected[m].values())))
    for m in models:
        diffs = expected[m["model"]]
        assert m["results"] == 9 and m["mean_diff"] == pytest.approx(np.mean(list(diffs.values())))
        assert m["best_diff"] == pytest.approx(max(diffs.values())) == pytest.approx(diffs[m["best_task"]])
    gains = section["gains"]
    assert len(gains) == 18 and [g["diff"] for g in gains] == sorted((g["diff"] for g in gains), reverse=True)
    for g in gains:
        assert g["diff"] == pytest.approx(expected[g["model"]][g["task"]])
        assert (g["p"] < 0.05) == (g["verdict"] != "no significant difference")


def test_compare_takes_accepted_submissions_and_icl_directories(runs, board, capsys):
    """An accepted submission's directory is a run for compare, an accepted ICL submission's an ICL arm."""
    subs = {p.name.split(".")[1]: p for p in (board / "submissions").iterdir() if p.name.startswith("tiny-a.")}

    def rows(*args) -> list[dict]:
        assert main(["compare", *map(str, args), "--format", "json", "--no-plot", "--resamples", "500"]) == 0
        return json.loads(capsys.readouterr().out)["rows"]

    stored = rows(subs["baseline"], subs["act-tiny-a"], "--icl", subs["icl-1shot"])
    assert stored == rows(runs.base_a, runs.act_a, "--icl", runs.icl_a)  # the run directories, icl.json included
    assert {r["comparison"] for r in stored} == {"act vs baseline", "icl-1shot vs baseline", "act vs icl-1shot"}


def test_board_files_are_written_and_self_contained(board):
    readme = (board / "README.md").read_text()
    html = (board / "index.html").read_text()
    plots = sorted((board / "plots").iterdir())
    # forest plots: tiny-a's ACT with its ICL, tiny-b's ACT; and the cross-model heatmap
    assert len(plots) == 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)
    for plot in plots:
        assert f"plots/{plot.name}" in readme
    assert html.count("data:image/png;base64,") == len(plots)
    assert 'src="http' not in html and "<link" not in html, "the page loads nothing from elsewhere"
    assert "## Submission format (versions 1 and 2)" in readme and "| tiny-a | ACT (tiny-a.classification) |" in readme
    assert "### Which model gains most from ACT" in readme
    assert not [p for p in board.rglob(".*")]


# ----------------------------------------------------------------------------- the page in a browser


class DevTools:
    """Chrome DevTools protocol over ``--remote-debugging-pipe`` (Chromium reads fd 3, writes fd 4); stdlib only."""

    def __init__(self, binary: str) -> None:
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        # copies at fds >= 10 (so the dup2 onto 3 and 4 cannot overwrite one another), closed on exec;
        # 3 and 4 themselves are made inheritable by dup2 and are the only descriptors Chromium keeps
        child_in, child_out = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome, from_chrome))

        def wire() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self._profile = tempfile.mkdtemp(prefix="act-eval-cdp-")
        self.proc = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={self._profile}",
                "--remote-debugging-pipe",
                "--window-size=1280,900",
                "about:blank",
            ],
            preexec_fn=wire,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in (to_chrome, from_chrome, child_in, child_out):
            os.close(fd)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._next(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._next(timeout)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed, released) at the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1}
            )

    def _next(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no message from Chromium")
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.session = None
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._write)
        os.close(self._read)
        shutil.rmtree(self._profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser_binary() -> str:
    binary = chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/extra.sh installs it in CI)")
    return binary


def test_page_renders_its_tables_in_chromium(board, browser_binary):
    dom = run_chromium("--dump-dom", (board / "index.html").as_uri()).stdout
    # the script ran (it marks every sortable table) and the board has one row per submission
    assert dom.count('data-sortable="ready"') == dom.count('class="sortable')
    assert dom.count('<tr data-id="') == 5


def test_page_sorts_on_header_clicks_in_chromium(board, browser_binary):
    cdp = DevTools(browser_binary)
    try:
        (page,) = [t for t in cdp.send("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        cdp.session = cdp.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        cdp.send("Page.enable")
        cdp.send("Runtime.enable")
        cdp.send("Page.navigate", {"url": (board / "index.html").as_uri()})
        cdp.wait_event("Page.loadEventFired")
        column = 'th[data-key="diff:act_classification_lite"]'
        index = cdp.evaluate(
            f"Array.from(document.querySelector({json.dumps(column)}).parentNode.children).indexOf(document.querySelector({json.dumps(column)}))"
        )

        def order() -> list:
            return cdp.evaluate(
                f"Array.from(document.querySelectorAll('#board-lite tbody tr')).map(r => r.cells[{index}].getAttribute('data-value'))"
            )

        def ids() -> list:
            return cdp.evaluate("Array.from(document.querySelectorAll('#board-lite tbody tr')).map(r => r.dataset.id)")

        start = ids()
        values = [float(v) for v in order() if v]
        assert len(values) == 3 and order()[0] == ""  # ACT a, ICL a, ACT b have a difference; baselines (first) none
        cdp.click(column)
        assert cdp.evaluate(f"document.querySelector({json.dumps(column)}).getAttribute('aria-sort')") == "descending"
        clicked = order()
        assert [float(v) for v in clicked[:3]] == sorted(values, reverse=True) and clicked[3:] == ["", ""]
        cdp.click(column)
        clicked = order()
        assert [float(v) for v in clicked[:3]] == sorted(values) and clicked[3:] == ["", ""]
        assert sorted(ids()) == sorted(start)  # rows move whole
        cdp.click("#board-lite th:nth-child(2)")  # a text column: alphabetical
        arms = cdp.evaluate(
            "Array.from(document.querySelectorAll('#board-lite tbody tr')).map(r => r.cells[1].textContent)"
        )
        assert arms == sorted(arms, key=str.lower)
        assert not [e for e in cdp.events if e.get("method") == "Runtime.exceptionThrown"]
    finally:
        cdp.close()


def test_build_takes_the_screenshot_the_readme_shows(runs, board, browser_binary, tmp_path):
    root = tmp_path / "shot" / "leaderboard"
    shutil.copytree(board / "submissions", root / "submissions")
    png = tmp_path / "shot" / "docs" / "img" / "leaderboard.png"
    assert main(["leaderboard", "build", "--root", str(root), "--resamples", "200", "--screenshot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![the board in a browser](../docs/img/leaderboard.png)" in (root / "README.md").read_text()
