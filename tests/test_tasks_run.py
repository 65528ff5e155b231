"""One lite task per family through lm-eval with the real SmolLM2-135M-Instruct (slow)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_lite_tasks_run_end_to_end_on_smollm2(smollm2_path: str, task_manager) -> None:
    from lm_eval import simple_evaluate

    names = ["act_agnews_lite", "act_agnews_spaced_lite", "act_arc_easy_lite", "act_nq_open_lite"]
    out = simple_evaluate(
        model="hf",
        model_args={"pretrained": smollm2_path, "dtype": "float32"},
        tasks=names,
        limit=8,
        batch_size=8,
        device="cpu",
        task_manager=task_manager,
        log_samples=True,
    )
    results, samples = out["results"], out["samples"]
    assert set(results) == set(names)
    assert {name: len(samples[name]) for name in names} == dict.fromkeys(names, 8)
    for name in names[:3]:
        assert 0.0 <= results[name]["acc,none"] <= 1.0
    assert 0.0 <= results["act_nq_open_lite"]["token_f1,none"] <= 1.0

    # the trailing-space artefact reaches the model: same rows, same label words, different contexts
    paper, spaced = samples["act_agnews_lite"][0], samples["act_agnews_spaced_lite"][0]
    assert paper["doc_id"] == spaced["doc_id"]
    (paper_ctx, paper_word), (spaced_ctx, spaced_word) = paper["arguments"][0], spaced["arguments"][0]
    assert paper_ctx == spaced_ctx + " " and paper_word == spaced_word == " World"
    # different scores per row: the lone space token changes what the model predicts
    paper_lls = [float(r[0][0]) for r in paper["resps"]]
    spaced_lls = [float(r[0][0]) for r in spaced["resps"]]
    assert paper_lls != spaced_lls

    # lettered multiple choice scores one-token letters after "Answer:"
    arc = samples["act_arc_easy_lite"][0]
    assert [cont for _, cont in arc["arguments"]] == [" A", " B", " C", " D"]

    # open QA: greedy generations, cut at the stop sequences
    for sample in samples["act_nq_open_lite"]:
        answer = sample["filtered_resps"][0]
        assert "\n" not in answer and "." not in answer and "," not in answer
