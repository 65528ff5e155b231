"""``act-eval demo`` (the README's main job) on the real SmolLM2: two saved lm-eval runs that
``compare`` pairs, the ACT run recording its map, finished arms read back, wrong maps refused early."""

from __future__ import annotations

import json

import pytest

from act_eval.core.head_map import HeadMap, HeadMapError
from act_eval.demo import run_demo
from act_eval.lm.runs import load_run, open_samples, read_task_samples

pytestmark = pytest.mark.slow


def test_demo_saves_both_arms_and_reads_them_back(tmp_path, capsys):
    hm = HeadMap(model="HuggingFaceTB/SmolLM2-135M-Instruct", architecture="llama", num_layers=30, num_heads=9,
                 num_kv_heads=3, heads={layer: (0, 4, 8) for layer in range(2, 30, 3)}, name="demo-test", beta=0.2)
    path = str(hm.save(tmp_path / "demo-test.json"))
    hf_dir, act_dir = run_demo("smollm2-135m", path, ["act_cb_lite"], tmp_path / "demo", batch_size=8)
    hf, act = load_run(hf_dir), load_run(act_dir)
    assert hf.results["config"]["model"] == "hf-fast" and act.results["config"]["model"] == "hf-act"
    assert act.results["config"]["act"]["head_map_hash"] == hm.content_hash
    assert "act" not in hf.results["config"]
    scores = {}
    for name, run in (("hf", hf), ("act", act)):
        with open_samples(run.samples_path("act_cb_lite")) as lines:
            scores[name] = {row["doc_id"]: row["resps"] for row in map(json.loads, lines)}
    assert sorted(scores["hf"]) == sorted(scores["act"]) == list(range(56))
    assert scores["hf"] != scores["act"]  # calibration changed the log-likelihoods
    assert read_task_samples(hf, "act_cb_lite").doc_hashes == read_task_samples(act, "act_cb_lite").doc_hashes

    capsys.readouterr()
    again = run_demo("smollm2-135m", path, ["act_cb_lite"], tmp_path / "demo", batch_size=8)
    assert again == (hf_dir, act_dir)
    assert capsys.readouterr().out.count("finished earlier") == 2


def test_a_map_for_another_model_is_refused_before_loading(tmp_path):
    with pytest.raises(HeadMapError, match="made for architecture 'gemma3_text'"):
        run_demo("smollm2-135m", "gemma3-270m.classification", ["act_cb_lite"], tmp_path / "demo")
    assert not (tmp_path / "demo").exists()
