"""``act-eval compare`` and ``act-eval icl`` end to end on genuine lm-eval output (dummy model).

Expected numbers are recomputed here from the samples files and results files lm-eval wrote,
with scipy's binomial test and hand-written Holm, not with act_eval's own code paths.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, chi2

from act_eval.cli import main
from act_eval.compare import stats
from fixtures.lm_eval_runs import N_DOCS, TINY_TASKS, build, copy_run, quick_env_info, record_calibration


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    return build(tmp_path_factory.mktemp("lm_eval_runs"))


def acc_by_doc(run_dir: Path, task: str) -> dict[int, float]:
    (path,) = run_dir.rglob(f"samples_{task}_*.jsonl")  # run_dir: OUT or OUT/tiny
    return {r["doc_id"]: r["acc"] for r in map(json.loads, path.read_text().splitlines())}


def reported(run_dir: Path, task: str, key: str = "acc,none") -> float:
    (path,) = run_dir.rglob("results_*.json")
    return json.loads(path.read_text())["results"][task][key]


def run_json(capsys, *args: str) -> dict:
    assert main(["compare", *map(str, args), "--format", "json", "--no-plot"]) == 0
    return json.loads(capsys.readouterr().out)


def error_of(capsys, *args: str) -> str:
    assert main(["compare", *map(str, args), "--no-plot"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("act-eval compare: error: ") and "\n" not in err  # one line, no traceback
    return err


def test_act_vs_baseline_numbers(runs, capsys):
    out = run_json(capsys, runs.base, runs.act)
    rows = {r["task"]: r for r in out["rows"]}
    assert list(rows) == ["tiny_cls", "tiny_yesno", "mean"]
    assert {r["comparison"] for r in out["rows"]} == {"act vs baseline"}
    raw_p = {}
    for task in ("tiny_cls", "tiny_yesno"):
        row = rows[task]
        a, b = acc_by_doc(runs.base, task), acc_by_doc(runs.act, task)
        assert row["n"] == N_DOCS
        assert row["a_value"] == pytest.approx(reported(runs.base, task))
        assert row["b_value"] == pytest.approx(reported(runs.act, task))
        assert row["diff"] == pytest.approx(row["b_value"] - row["a_value"])
        assert row["diff_low"] <= row["diff"] <= row["diff_high"]
        # McNemar recomputed from the samples files: exact binomial below 25 discordant documents
        only_a = sum(a[i] == 1 and b[i] == 0 for i in a)
        only_b = sum(a[i] == 0 and b[i] == 1 for i in a)
        if only_a + only_b < 25:
            expected = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
            assert row["test"] == "McNemar exact binomial"
        else:
            expected = chi2.sf((abs(only_a - only_b) - 1) ** 2 / (only_a + only_b), 1)
        assert row["p_value"] == pytest.approx(expected)
        raw_p[task] = expected
        successes = round(row["a_value"] * N_DOCS)
        assert row["a_interval"] == "Wilson"
        assert (row["a_low"], row["a_high"]) == pytest.approx(stats.wilson_interval(successes, N_DOCS))
        assert row["a_std"] is None
    # Holm over the two tasks, by hand: smaller p doubled, larger p kept (both capped at 1, monotone)
    small, large = sorted(raw_p.values())
    holm_small, holm_large = min(1, 2 * small), min(1, max(2 * small, large))
    assert sorted(rows[t]["p_adjusted"] for t in raw_p) == pytest.approx([holm_small, holm_large])
    for row in rows.values():
        if row["p_adjusted"] >= 0.05:
            assert row["verdict"] == "no significant difference"
        else:
            assert row["verdict"] == f"act {'better' if row['diff'] > 0 else 'worse'} than baseline"
    # group mean: unweighted mean of the two tasks, a permutation test over both, unadjusted
    mean = rows["mean"]
    assert mean["n"] == 2 * N_DOCS
    assert mean["a_value"] == pytest.approx((reported(runs.base, "tiny_cls") + reported(runs.base, "tiny_yesno")) / 2)
    assert mean["test"].startswith("permutation") and mean["test"].endswith("over 2 tasks")
    assert mean["p_adjusted"] == mean["p_value"]
    assert out["adjust"] == "holm" and out["exact_mcnemar_below"] == 25


def test_markdown_csv_plot_and_reproducibility(runs, capsys, tmp_path, monkeypatch):
    plot = tmp_path / "plots" / "forest.png"
    assert main(["compare", str(runs.base), str(runs.act), "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "### act vs baseline (acc, points, 95% intervals)" in text
    assert "| task | n | baseline | act | act − baseline | test | p | p (holm) | verdict |" in text
    assert "| tiny_cls | 24 |" in text and "| **mean** (2 tasks) | 48 |" in text
    assert f"forest plot: {plot}" in captured.err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the default plot path lands in the current directory
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(runs.base), str(runs.act), "--format", "csv"]) == 0
    assert (tmp_path / "act_compare_forest.png").stat().st_size > 1000
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["task"] for r in table] == ["tiny_cls", "tiny_yesno", "mean"]
    assert float(table[0]["a_value"]) == pytest.approx(reported(runs.base, "tiny_cls"))
    # seeds make the resampling reproducible; another seed moves the bootstrap intervals
    first = run_json(capsys, runs.base, runs.act, "--seed", "3", "--resamples", "2000")
    again = run_json(capsys, runs.base, runs.act, "--seed", "3", "--resamples", "2000")
    other = run_json(capsys, runs.base, runs.act, "--seed", "4", "--resamples", "2000")
    assert first == again
    assert [r["b_low"] for r in first["rows"]] + [r["diff_low"] for r in first["rows"]] != [
        r["b_low"] for r in other["rows"]
    ] + [r["diff_low"] for r in other["rows"]]


def test_icl_arm_is_mean_over_seeds_with_permutation_test(runs, capsys):
    out = run_json(capsys, runs.base, runs.act, "--icl", *runs.icl)
    comparisons = list(dict.fromkeys(r["comparison"] for r in out["rows"]))
    assert comparisons == ["act vs baseline", "icl-1shot vs baseline", "act vs icl-1shot"]
    row = next(r for r in out["rows"] if r["comparison"] == "icl-1shot vs baseline" and r["task"] == "tiny_cls")
    per_seed = [reported(d, "tiny_cls") for d in runs.icl]
    assert len(set(per_seed)) > 1  # the seeds really differ
    assert row["b_value"] == pytest.approx(np.mean(per_seed))
    assert row["b_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["b_interval"] == "bootstrap" and row["a_interval"] == "Wilson"
    assert row["test"].startswith("permutation")  # averaged correctness is fractional: no McNemar
    # the paired test runs on correctness averaged over seeds per document (recomputed here)
    seeds = [acc_by_doc(d, "tiny_cls") for d in runs.icl]
    base = acc_by_doc(runs.base, "tiny_cls")
    averaged = np.array([np.mean([s[i] for s in seeds]) for i in sorted(base)])
    assert set(averaged.tolist()) - {0.0, 1.0}  # some documents are fractional
    expected = stats.paired_permutation_test(np.array([base[i] for i in sorted(base)]), averaged, seed=0)
    assert row["p_value"] == pytest.approx(expected.p_value)
    assert row["diff"] == pytest.approx(np.mean(per_seed) - reported(runs.base, "tiny_cls"))
    # group mean of the ICL arm: spread over seeds of the per-seed group means
    mean_row = next(r for r in out["rows"] if r["comparison"] == "icl-1shot vs baseline" and r["task"] == "mean")
    group = [(reported(d, "tiny_cls") + reported(d, "tiny_yesno")) / 2 for d in runs.icl]
    assert mean_row["b_value"] == pytest.approx(np.mean(group))
    assert mean_row["b_std"] == pytest.approx(np.std(group, ddof=1))


def test_macro_f1_recomputed_and_checked_against_lm_eval(runs, capsys):
    out = run_json(capsys, runs.base, runs.act, "--metric", "f1", "--tasks", "tiny_cls")
    (row,) = out["rows"]
    assert row["a_value"] == pytest.approx(reported(runs.base, "tiny_cls", "f1,none"))
    assert row["b_value"] == pytest.approx(reported(runs.act, "tiny_cls", "f1,none"))
    assert row["test"].startswith("permutation") and row["a_interval"] == "bootstrap"
    # a wrongly named aggregation does not reproduce lm-eval's number: refused
    err = error_of(capsys, runs.base, runs.act, "--metric", "f1", "--tasks", "tiny_cls", "--aggregation", "mcc")
    assert "recomputed from the samples as matthews_corrcoef" in err and "--aggregation" in err
    err = error_of(capsys, runs.base, runs.act, "--metric", "f1", "--tasks", "tiny_cls", "--icl", *runs.icl)
    assert "cannot be averaged over seeds" in err


@pytest.mark.parametrize(("value", "verdict"), [(1.0, "act better than baseline"), (0.0, "act worse than baseline")])
def test_significant_verdicts(runs, capsys, tmp_path, value, verdict):
    # a copy of the ACT run whose tiny_cls outcomes are all `value` (results file updated to match)
    edited = copy_run(runs.act, tmp_path / "act_edited")
    (samples,) = edited.glob("tiny/samples_tiny_cls_*.jsonl")
    records = [dict(json.loads(line), acc=value) for line in samples.read_text().splitlines()]
    samples.write_text("".join(json.dumps(r) + "\n" for r in records))
    (results,) = edited.glob("tiny/results_*.json")
    data = json.loads(results.read_text())
    data["results"]["tiny_cls"]["acc,none"] = value
    results.write_text(json.dumps(data))
    row = next(r for r in run_json(capsys, runs.base, edited)["rows"] if r["task"] == "tiny_cls")
    base = acc_by_doc(runs.base, "tiny_cls")
    discordant = sum(v != value for v in base.values())  # every discordant pair favours one arm
    assert 2 * 0.5**discordant < 0.05  # premise: significant (7 and 17 discordant pairs here)
    assert row["p_value"] == pytest.approx(2 * 0.5**discordant)  # exact McNemar, by hand
    assert row["verdict"] == verdict


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ("oneshot", "prompts differ (prompt_hash)"),
        ("limited", "the runs scored different documents"),
        ("edited", "differ in document content (doc_hash)"),
        ("cls_only", "runs cover different tasks"),
    ],
)
def test_mismatched_runs_refused(runs, capsys, other, message):
    assert message in error_of(capsys, runs.base, getattr(runs, other))


def test_task_selection_notes_and_icl_refusals(runs, capsys):
    out = run_json(capsys, runs.base, runs.cls_only, "--tasks", "tiny_cls")
    assert [r["task"] for r in out["rows"]] == ["tiny_cls"]  # one task: no group-mean row
    assert main(["compare", str(runs.multi), str(runs.act), "--no-plot"]) == 0
    assert "holds 2 runs; using the newest" in capsys.readouterr().err
    assert "few-shot seed 1234" in error_of(capsys, runs.base, runs.act, "--icl", runs.base, runs.act)
    assert "no such run" in error_of(capsys, runs.base, runs.act / "nope")
    assert "baseline and act are the same run" in error_of(capsys, runs.base, runs.base / "tiny")
    assert "act and icl are the same run" in error_of(capsys, runs.base, runs.icl[0], "--icl", *runs.icl)


def test_recorded_calibration_is_checked_or_noted(runs, capsys, tmp_path):
    """A run that recorded its calibration is checked against its map file; compare says when it cannot be."""
    from act_eval.core.head_map import HeadMap

    hm = HeadMap(
        model="test/tiny", architecture="llama", num_layers=2, num_heads=2, num_kv_heads=1, heads={1: (0,)}, name="tiny.cls"
    )
    path = hm.save(tmp_path / "maps" / "tiny.cls.json")
    act = copy_run(runs.act, tmp_path / "act")
    (results,) = act.rglob("results_*.json")
    record_calibration(results, hm)
    # the map is nowhere compare can find it (not loaded by path, not published): noted, not refused
    assert main(["compare", str(runs.base), str(act), "--no-plot"]) == 0
    noted = f"used head map 'tiny.cls' ({hm.content_hash[:19]}..., 1 head(s), threshold 0.1, beta 0.4), which is not here"
    assert f"{noted}: not checked" in capsys.readouterr().err
    # the run loaded it by path: checked; edited since: refused in one line naming the map
    data = json.loads(results.read_text())
    data["config"]["model_args"] = {"pretrained": "tiny", "head_map": str(path)}
    results.write_text(json.dumps(data))
    run_json(capsys, runs.base, act)
    assert "note" not in capsys.readouterr().err
    edited = HeadMap(**{**{k: getattr(hm, k) for k in hm.__dataclass_fields__}, "heads": {1: (1,)}})
    edited.save(path)
    assert error_of(capsys, runs.base, act) == (
        f"act-eval compare: error: head map tiny.cls: the run used content hash {hm.content_hash} but the map file "
        f"now has {edited.content_hash}: the map was edited after the run"
    )
    # a run that loaded a map but recorded nothing (before hf-act recorded it): noted
    del data["config"]["act"]
    results.write_text(json.dumps(data))
    assert main(["compare", str(runs.base), str(act), "--no-plot"]) == 0
    assert "records no calibration (made before hf-act recorded it): its head map is not checked" in capsys.readouterr().err


def test_a_first_token_run_is_checked_against_its_map(runs, capsys, tmp_path):
    """A run of a first-token map records its rule and factor; compare checks them as it checks ACT's settings."""
    from act_eval.core.head_map import HeadMap

    hm = HeadMap(model="test/tiny", architecture="llama", num_layers=2, num_heads=2, num_kv_heads=1, heads={1: (0,)},
                 name="tiny.ft", rule="first_token", factor=2.0)
    path = hm.save(tmp_path / "maps" / "tiny.ft.json")
    act = copy_run(runs.act, tmp_path / "act")
    (results,) = act.rglob("results_*.json")
    record_calibration(results, hm)
    data = json.loads(results.read_text())
    data["config"]["model_args"] = {"pretrained": "tiny", "head_map": str(path)}
    results.write_text(json.dumps(data))
    run_json(capsys, runs.base, act)
    assert "note" not in capsys.readouterr().err
    # a rival of its own: paired with the baseline and with ACT
    rows = run_json(capsys, runs.base, runs.act, "--rival", act)["rows"]
    assert {r["comparison"] for r in rows} == {"act vs baseline", "first-token vs baseline", "act vs first-token"}
    data["config"]["model_args"]["act_factor"] = 0.5
    results.write_text(json.dumps(data))
    assert error_of(capsys, runs.base, act) == (
        "act-eval compare: error: head map tiny.ft: the run used factor 2, the run's settings give act_factor=0.5"
    )
    del data["config"]["act"]["factor"]
    results.write_text(json.dumps(data))
    assert "config.act is not hf-act's calibration record (lacks factor)" in error_of(capsys, runs.base, act)


def test_icl_command_runs_seeds_and_feeds_compare(runs, capsys, tmp_path):
    out = tmp_path / "icl"
    args = ["icl", "run", "--model", "dummy", "--model_args", "pretrained=tiny", "--tasks", "tiny_cls,tiny_yesno",
            "-k", "1", "--seeds", "0", "1", "--output_path", str(out), "--include_path", str(TINY_TASKS),
            "--no-builtin-tasks", "--bootstrap_iters", "0"]
    with quick_env_info():
        assert main(args) == 0
    manifest = json.loads((out / "icl.json").read_text())
    assert manifest["seeds"] == [0, 1] and manifest["num_fewshot"] == 1
    for seed, rel in zip((0, 1), manifest["runs"]):
        results = json.loads((out / rel).read_text())
        assert rel.startswith(f"seed_{seed}/tiny/results_")
        assert results["config"]["fewshot_seed"] == seed and results["n-shot"]["tiny_cls"] == 1
        assert results["config"]["model"] == "dummy"  # the model type, as `lm_eval --model dummy` records it
    printed = capsys.readouterr().out
    assert "| task | k | seed 0 | seed 1 | mean ± std |" in printed
    values = [100 * json.loads((out / rel).read_text())["results"]["tiny_cls"]["acc,none"] for rel in manifest["runs"]]
    assert f"| tiny_cls | 1 | {values[0]:.1f} | {values[1]:.1f} | {np.mean(values):.1f} ± {np.std(values, ddof=1):.1f} |" in printed
    assert main(["icl", "show", str(out)]) == 0
    assert capsys.readouterr().out in printed
    assert main(["icl", "show", str(out), "--metric", "f1"]) == 2  # tiny_yesno has no f1
    assert "reports no f1 for tiny_yesno" in capsys.readouterr().err
    # the manifest directory is one ICL arm for compare
    report = run_json(capsys, runs.base, runs.act, "--icl", out)
    assert any(r["comparison"] == "icl-1shot vs baseline" for r in report["rows"])
    # resumable: the same command reads the finished seeds instead of running them again
    files = sorted(out.rglob("results_*.json"))
    with quick_env_info():
        assert main(args) == 0
    assert "seed 0: finished earlier" in capsys.readouterr().out
    assert sorted(out.rglob("results_*.json")) == files and json.loads((out / "icl.json").read_text()) == manifest
    # interrupted during seed 1 (no manifest yet, no seed 1 run): only seed 1 runs again
    shutil.rmtree(out / "seed_1")
    (out / "icl.json").unlink()
    with quick_env_info():
        assert main(args) == 0
    assert json.loads((out / "icl.json").read_text())["seeds"] == [0, 1]
    assert sorted(out.rglob("results_*.json"))[0] == files[0]  # seed 0 untouched
    # extended with another seed (e.g. run by a second process): the arm grows to three seeds
    with quick_env_info():
        assert main([*args[:10], "--seeds", "1", "2", *args[13:]]) == 0
    assert json.loads((out / "icl.json").read_text())["seeds"] == [0, 1, 2]
    # other settings in the same directory are refused, never mixed in
    with quick_env_info():
        assert main([*args[:8], "-k", "2", *args[10:]]) == 2
    assert "already holds an ICL run with other settings" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(out / "seed_0", other / "seed_1")  # a seed-0 run where seed 1 belongs
    with quick_env_info():
        assert main([*args[:-7], "--output_path", str(other), *args[-5:]]) == 2
    assert "holds a run with other settings (few-shot seed: 0, not 1)" in capsys.readouterr().err
    assert main(["icl", "run", *args[2:8], "-k", "0", "--output_path", str(tmp_path / "zero")]) == 2
    assert "at least one demonstration" in capsys.readouterr().err


def test_arms_table_puts_every_arm_against_the_baseline_in_one_table(runs, capsys):
    rows = run_json(capsys, runs.base, runs.act, "--icl", *runs.icl)["rows"]
    assert main(["compare", str(runs.base), str(runs.act), "--icl", *map(str, runs.icl), "--format", "arms", "--no-plot"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| task | n | baseline | act | icl-1shot |"
    body = [line.strip("| ").split(" | ") for line in lines[2:] if line.startswith("| ")]
    assert [cells[0] for cells in body] == ["tiny_cls", "tiny_yesno", "**mean** (2 tasks)"]
    for cells, task in zip(body, ["tiny_cls", "tiny_yesno", "mean"]):
        for arm, cell in zip(["act", "icl-1shot"], cells[3:]):
            (r,) = [r for r in rows if r["comparison"] == f"{arm} vs baseline" and r["task"] == task]
            assert cells[1] == str(r["n"]) and cells[2] == f"{100 * r['a_value']:.1f}"
            assert cell.startswith(f"{100 * r['b_value']:.1f}")
            assert (" ± " in cell) == (r["b_std"] is not None)  # only the ICL arm has seeds
            diff = round(100 * r["diff"], 1) or 0.0
            assert f"{diff:+.1f}".replace("-", "−") in cell
            assert cell.count("**") == (4 if r["p_adjusted"] < 0.05 else 0)
    # ACT against ICL is a comparison of two arms, not of an arm with the baseline: not a column
    assert "act vs icl" not in "\n".join(lines)
