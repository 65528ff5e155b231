"""Label-prior calibration (ACT's rivals): the math by hand, the identity, real runs re-scored, submit's refusals.

Real samples come from the accepted leaderboard submissions (SmolLM2-135M-Instruct's baseline
and its 4-shot ICL run), so the identity check is against lm-eval's own logged accuracy. The
content-free prompts are scored by a stub whose log-likelihoods are written out here, except in
the one ``slow`` test, which scores them with the real SmolLM2.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from act_eval.cli import main
from act_eval.compare.report import compare_runs
from act_eval.lm.runs import choice_scores, load_run, read_records
from act_eval.rivals.label_prior import (
    batch_priors,
    calibrated_choice,
    choice_probabilities,
    content_free_doc,
    mean_prior,
)
from act_eval.rivals.rescore import calibrate_run, check_calibrated

BOARD = Path(__file__).resolve().parents[1] / "leaderboard" / "submissions"
BASELINE = BOARD / "smollm2-135m-instruct.baseline.act_suite_lite.96aa53dc"
ICL_SEED_0 = BOARD / "smollm2-135m-instruct.icl-4shot.act_classification_lite.36ba6975" / "seed_0"
CLS_LITE = "act_classification_lite"


class StubLM:
    """Scores a content-free prompt by which input it holds, from a table written out in the test."""

    def __init__(self, table: dict[str, dict[str, float]]) -> None:
        self.table = table
        self.contexts: list[str] = []

    def loglikelihood(self, requests):
        out = []
        for r in requests:
            context, continuation = r.arguments
            self.contexts.append(context)
            key = "N/A" if "N/A" in context else "[MASK]" if "[MASK]" in context else ""
            out.append((self.table[key][continuation], False))
        return out


# ----------------------------------------------------------------------------- the math, by hand


def test_two_class_contextual_prior_by_hand():
    # content-free choice probabilities 0.8/0.2, 0.6/0.4, 0.7/0.3: the prior is their mean, 0.7/0.3;
    # log-likelihoods need not sum to one (lm-eval's are over the whole vocabulary): +5 changes nothing
    inputs = [np.log([0.8, 0.2]) - 5, np.log([0.6, 0.4]), np.log([0.7, 0.3]) + 5]
    prior = mean_prior(inputs)
    assert prior == pytest.approx([0.7, 0.3], abs=1e-12)
    # a document at 0.6/0.4: uncalibrated choice 0; 0.6/0.7 = 0.857 < 0.4/0.3 = 1.333, so calibrated choice 1
    doc = np.log([0.6, 0.4]) - 2
    assert int(np.argmax(doc)) == 0 and calibrated_choice(doc, prior) == 1
    # at 0.75/0.25: 1.071 > 0.833, choice 0 stays
    assert calibrated_choice(np.log([0.75, 0.25]), prior) == 0


def test_four_class_prior_by_hand():
    prior = mean_prior([np.log([0.4, 0.3, 0.2, 0.1])])
    assert prior == pytest.approx([0.4, 0.3, 0.2, 0.1])
    # p / prior = 0.875, 1.0, 1.25, 1.0: choice 2, where the raw argmax is 0
    doc = np.log([0.35, 0.3, 0.25, 0.1])
    assert calibrated_choice(doc, prior) == 2 and int(np.argmax(doc)) == 0
    with pytest.raises(ValueError, match="prior over 4 choices cannot calibrate a document with 3"):
        calibrated_choice(np.log([0.5, 0.3, 0.2]), prior)


def test_batch_prior_is_the_mean_per_number_of_choices():
    docs = [np.log([0.9, 0.1]), np.log([0.5, 0.5]) + 3, np.log([0.7, 0.3]), np.log([0.2, 0.2, 0.6])]
    priors = batch_priors(docs)
    assert sorted(priors) == [2, 3]
    assert priors[2] == pytest.approx([0.7, 0.3]) and priors[3] == pytest.approx([0.2, 0.2, 0.6])
    assert choice_probabilities([0.0, math.log(3)]) == pytest.approx([0.25, 0.75])


def test_the_identity_prior_reproduces_lm_evals_accuracy():
    """A uniform prior changes no prediction: lm-eval's logged acc, document by document, on 16 real tasks."""
    run = load_run(BASELINE)
    families = run.results["group_subtasks"]
    tasks = families[CLS_LITE] + families["act_multiple_choice_lite"]
    checked = 0
    for task in tasks:
        _, records = read_records(run, task)
        for record in records:
            s = choice_scores(task, record)
            uniform = np.full(len(s.loglikelihoods), 1 / len(s.loglikelihoods))
            assert float(calibrated_choice(s.loglikelihoods, uniform) == s.gold) == record["acc"], (task, s.doc_id)
            checked += 1
    assert checked == 1556 + 1300


def test_content_free_docs_render_in_the_tasks_own_templates():
    from act_eval.lm.suite import project_task_manager

    tasks = project_task_manager().load(["act_cb_lite", "act_arc_easy_lite"])["tasks"]
    cb = {"premise": "It rained.", "hypothesis": "The street is wet", "label": 0, "idx": 3}
    assert tasks["act_cb_lite"].doc_to_text(content_free_doc(cb, "N/A")) == "Premise: N/A Hypothesis: N/A. Answer: "
    assert tasks["act_cb_lite"].doc_to_text(content_free_doc(cb, "")) == "Premise:  Hypothesis: . Answer: "
    arc = next(iter(tasks["act_arc_easy_lite"].eval_docs))
    free = content_free_doc(arc, "[MASK]")
    assert free["gold"] == arc["gold"] and len(free["options"]) == len(arc["options"])
    letters = "ABCDE"[: len(arc["options"])]
    assert tasks["act_arc_easy_lite"].doc_to_text(free) == "[MASK]\n" + "".join(f"{c}. [MASK]\n" for c in letters) + "Answer:"


# ----------------------------------------------------------------------------- runs re-scored


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bc")
    calibrate_run(load_run(BASELINE), "batch", out, tasks=[CLS_LITE])
    return out


def test_batch_calibration_run_is_an_lm_eval_run_with_its_prior_recorded(batch_run):
    base, run = load_run(BASELINE), load_run(batch_run)
    config = run.results["config"]["calibration"]
    assert config["method"] == "batch" and config["transductive"] is True
    assert run.tasks == sorted(base.results["group_subtasks"][CLS_LITE])
    assert list(run.results["group_subtasks"]) == [CLS_LITE]
    for task in run.tasks:
        _, records = read_records(run, task)
        _, originals = read_records(base, task)
        scores = [choice_scores(task, r) for r in originals]
        (prior,) = batch_priors([s.loglikelihoods for s in scores]).values()
        expected = [float(calibrated_choice(s.loglikelihoods, prior) == s.gold) for s in scores]
        assert [r["acc"] for r in records] == expected
        assert run.reported(task, "acc", "none") == pytest.approx(np.mean(expected), abs=1e-12)
        assert config["tasks"][task]["priors"][str(len(prior))] == pytest.approx(prior.tolist())
        assert [r["prompt_hash"] for r in records] == [r["prompt_hash"] for r in originals]  # the same prompts
        assert check_calibrated(run, task, "batch") == len(records)
    means = [run.reported(t, "acc", "none") for t in run.tasks]
    assert run.reported(CLS_LITE, "acc", "none") == pytest.approx(np.mean(means))


def test_compare_pairs_a_rival_with_the_baseline(batch_run):
    base, run = load_run(BASELINE), load_run(batch_run)
    report = compare_runs(base, None, rivals=[run], tasks=["act_agnews_lite", "act_trec_lite"], n_resamples=500)
    assert report.comparisons == ["batch-cal (transductive) vs baseline"]
    row = next(r for r in report.rows if r.task == "act_agnews_lite")
    assert row.diff == pytest.approx(run.reported("act_agnews_lite", "acc", "none") - 0.365)
    with pytest.raises(ValueError, match="records no calibration"):
        compare_runs(base, None, rivals=[base], tasks=["act_agnews_lite"], n_resamples=100)


def test_the_commands_calibrate_and_compare_a_rival_without_an_act_run(tmp_path, capsys):
    out = tmp_path / "bc"
    assert main(["calibrate", "batch", str(BASELINE), "--tasks", "act_cb_lite", "--output_path", str(out)]) == 0
    argv = ["compare", str(BASELINE), "--rival", str(out), "--tasks", "act_cb_lite", "--no-plot", "--resamples", "200"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "### batch-cal (transductive) vs baseline" in printed and "act vs" not in printed


def test_an_icl_arm_is_calibrated_seed_by_seed_into_an_icl_arm(tmp_path, capsys):
    out = tmp_path / "icl_bc"
    assert main(["calibrate", "batch", str(ICL_SEED_0.parent), "--tasks", "act_cb_lite", "--output_path", str(out)]) == 0
    listed = json.loads((out / "icl.json").read_text())
    assert listed["seeds"] == [0, 1, 2, 3, 4] and all(r.startswith(f"seed_{s}/") for s, r in zip(listed["seeds"], listed["runs"]))
    capsys.readouterr()
    argv = ["compare", str(BASELINE), "--icl", str(out), "--tasks", "act_cb_lite", "--no-plot", "--resamples", "200"]
    assert main(argv) == 0
    assert "### icl-4shot+batch-cal (transductive) vs baseline" in capsys.readouterr().out


def test_contextual_calibration_zero_shot_scores_three_prompts_per_task(tmp_path):
    table = {
        "N/A": {"Yes": math.log(0.5), "No": math.log(0.3), "Maybe": math.log(0.2)},
        "": {"Yes": math.log(0.7), "No": math.log(0.2), "Maybe": math.log(0.1)},
        "[MASK]": {"Yes": math.log(0.6), "No": math.log(0.1), "Maybe": math.log(0.3)},
    }
    lm = StubLM(table)
    calibrate_run(load_run(BASELINE), "contextual", tmp_path, tasks=["act_cb_lite"], lm=lm, model_record={"model": "stub"})
    run = load_run(tmp_path)
    instruction = "Read the following paragraph and determine if the hypothesis is true.\n\n"
    assert sorted(set(lm.contexts)) == sorted(
        instruction + f"Premise: {t} Hypothesis: {t}. Answer: " for t in ("N/A", "", "[MASK]")
    )
    assert len(lm.contexts) == 9  # 3 inputs x 3 choices, once for all 56 documents
    summary = run.results["config"]["calibration"]["tasks"]["act_cb_lite"]
    assert summary["priors"] == [pytest.approx([0.6, 0.2, 0.2])]
    assert check_calibrated(run, "act_cb_lite", "contextual") == 56
    # one document's content-free scores changed (and its prior and prediction to match): refused
    path = run.samples_path("act_cb_lite")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    entry = lines[3]["calibration"]
    entry["content_free"]["loglikelihoods"][0] = [math.log(0.1), math.log(0.1), math.log(0.8)]
    entry["prior"] = mean_prior(entry["content_free"]["loglikelihoods"]).tolist()
    scores = choice_scores("act_cb_lite", lines[3])
    pred = calibrated_choice(scores.loglikelihoods, entry["prior"])
    lines[3]["acc"], lines[3]["f1"] = float(pred == scores.gold), [scores.gold, pred]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(ValueError, match="doc_id 3: its content-free prompts were scored differently"):
        check_calibrated(run, "act_cb_lite", "contextual")


def test_contextual_calibration_k_shot_keeps_each_documents_demonstrations(tmp_path):
    table = {k: {" negative": math.log(0.25), " positive": math.log(0.75)} for k in ("N/A", "", "[MASK]")}
    lm = StubLM(table)
    base = load_run(ICL_SEED_0)
    calibrate_run(base, "contextual", tmp_path, tasks=["act_sst2_lite"], lm=lm, model_record={"model": "stub"})
    _, originals = read_records(base, "act_sst2_lite")
    contexts = set(lm.contexts)
    for record in originals[:20]:
        context = record["arguments"]["gen_args_0"]["arg_0"]
        query = f"Sentence: {record['doc']['sentence']} \nSentiment: "
        assert context.endswith(query)
        assert context[: -len(query)] + "Sentence: N/A \nSentiment: " in contexts  # its own four demonstrations
    assert len(contexts) > 3 * 100  # documents drew different demonstrations
    assert check_calibrated(load_run(tmp_path), "act_sst2_lite", "contextual") == 200


# ----------------------------------------------------------------------------- the board


@pytest.fixture
def board_with_baseline(tmp_path) -> Path:
    root = tmp_path / "board"
    (root / "submissions").mkdir(parents=True)
    shutil.copytree(BASELINE, root / "submissions" / BASELINE.name)
    return root


def _submittable(batch_run: Path, tmp_path: Path) -> Path:
    run_dir = Path(shutil.copytree(batch_run, tmp_path / "bc"))
    assert main(["leaderboard", "manifest", str(run_dir)]) == 0
    return run_dir


def _edit_first_sample(run_dir: Path, task: str, edit) -> None:
    path = load_run(run_dir).samples_path(task)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    edit(lines)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def test_submit_verifies_a_calibrated_run(batch_run, board_with_baseline, tmp_path, capsys):
    run_dir = _submittable(batch_run, tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["arm"] == "batch" and manifest["head_map"] is None
    assert main(["submit", str(run_dir), "--root", str(board_with_baseline), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "batch calibration (transductive) of HuggingFaceTB/SmolLM2-135M-Instruct" in out
    assert "1556 documents re-scored from their logged log-likelihoods" in out


def test_the_board_shows_a_rival_as_its_own_arm_and_which_arm_wins(batch_run, board_with_baseline, tmp_path):
    from act_eval.leaderboard.build import build

    run_dir = _submittable(batch_run, tmp_path)
    assert main(["submit", str(run_dir), "--root", str(board_with_baseline)]) == 0
    board = build(board_with_baseline, n_resamples=200)
    (section,) = board.sections
    rival = next(r for r in section.rows if r.arm == "batch")
    assert rival.label == "batch calibration (transductive)"
    family = rival.families[CLS_LITE]
    assert family.diff == pytest.approx(load_run(batch_run).reported(CLS_LITE, "acc", "none") - 0.49690476190476196)
    (winner,) = [w for w in section.winners if w.family == CLS_LITE]
    assert set(winner.cells) == {"baseline", "batch"} and winner.best == "batch"
    readme = (board_with_baseline / "README.md").read_text()
    assert "### Which arm wins, per model and family" in readme and "**batch calibration (transductive)**" in readme
    assert 'id="winners-lite"' in (board_with_baseline / "index.html").read_text()
    assert json.loads((board_with_baseline / "leaderboard.json").read_text())["sections"][0]["winners"][0]["best"] == "batch"


@pytest.mark.parametrize("tamper", ["acc", "prior"])
def test_submit_refuses_a_tampered_calibrated_run(batch_run, board_with_baseline, tmp_path, capsys, tamper):
    run_dir = _submittable(batch_run, tmp_path)
    task = "act_sst2_lite"

    def edit(lines):
        if tamper == "acc":  # one document's acc flipped, and the task's reported acc moved to match it
            lines[0]["acc"] = 1.0 - lines[0]["acc"]
        else:  # a prior that favours the other label
            lines[0]["calibration"]["prior"] = [0.01, 0.99]

    _edit_first_sample(run_dir, task, edit)
    if tamper == "acc":
        results = load_run(run_dir).results_path
        data = json.loads(results.read_text())
        _, records = read_records(load_run(run_dir), task)
        data["results"][task]["acc,none"] = float(np.mean([r["acc"] for r in records]))
        group = [data["results"][t]["acc,none"] for t in data["group_subtasks"][CLS_LITE]]
        data["results"][CLS_LITE]["acc,none"] = float(np.mean(group))
        results.write_text(json.dumps(data, indent=2))
    before = sorted(p.name for p in (board_with_baseline / "submissions").iterdir())
    assert main(["submit", str(run_dir), "--root", str(board_with_baseline)]) == 2
    err = capsys.readouterr().err
    assert "refused (calibration)" in err and f"{task} doc_id 0" in err
    assert sorted(p.name for p in (board_with_baseline / "submissions").iterdir()) == before


# ----------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_content_free_prior_on_smollm2(tmp_path, smollm2_path):
    """The prior is SmolLM2's own label distribution on the hand-written content-free SST-2 prompts."""
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    lm = get_model("hf").create_from_arg_obj({"pretrained": smollm2_path, "dtype": "float32"}, {"batch_size": 2, "device": "cpu"})
    calibrate_run(load_run(BASELINE), "contextual", tmp_path, tasks=["act_sst2_lite"], lm=lm, model_record={"model": "hf"})
    run = load_run(tmp_path)
    instruction = "Classify the sentiment of the user's message into one of the following categories:'positive' or 'negative'.\n\n"
    prompts = [instruction + f"Sentence: {t} \nSentiment: " for t in ("N/A", "", "[MASK]")]
    summary = run.results["config"]["calibration"]["tasks"]["act_sst2_lite"]
    assert summary["prompts"] == prompts
    requests = [
        Instance("loglikelihood", {}, (p, c), i, ("t", i, 1)) for i, (p, c) in enumerate((p, c) for p in prompts for c in (" negative", " positive"))
    ]
    lls = np.asarray([ll for ll, _ in lm.loglikelihood(requests)]).reshape(3, 2)
    (prior,) = summary["priors"]
    assert prior == pytest.approx(np.mean([choice_probabilities(x) for x in lls], axis=0), rel=1e-5)
    assert check_calibrated(run, "act_sst2_lite", "contextual") == 200
