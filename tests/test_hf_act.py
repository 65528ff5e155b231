"""``hf-act`` on the real SmolLM2-135M-Instruct and Gemma-3-270M: the semantics act-spec.md fixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import logged
import torch

from act_eval.core.enable import disable_act, enable_act
from act_eval.core.head_map import HeadMapError

pytestmark = pytest.mark.slow

INSTRUCTION = "Classify the sentiment of the user's message into one of the following categories:'positive' or 'negative'.\n\n"
# every third layer, every other head: 50 of 270 heads
HEADS = [[layer, head] for layer in range(2, 30, 3) for head in range(0, 9, 2)]


@pytest.fixture(scope="module")
def smol(smollm2_path):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=smollm2_path, device="cpu", batch_size=1, dtype="float32")


@pytest.fixture(scope="module")
def sst2_requests(data_dir: Path):
    from lm_eval.api.instance import Instance

    rows = [json.loads(line) for line in (data_dir / "sst2" / "validation.jsonl").open()][:8]
    reqs = []
    for i, row in enumerate(rows):
        context = INSTRUCTION + f"Sentence: {row['sentence']} \nSentiment:"
        for word in (" negative", " positive", " rather positive, I think"):
            reqs.append(Instance("loglikelihood", {}, (context, word), i))
    return reqs


def act_lm(smol, **kw):
    """An hf-act wrapper around the already loaded model (saves reloading it per test)."""
    from act_eval.lm.hf_act import HFActLM

    disable_act(smol.model)
    kw.setdefault("batch_size", 8)
    return HFActLM(pretrained=smol.model, tokenizer=smol.tokenizer, device="cpu", act_check_model=False, **kw)


def loglikelihoods(lm, reqs) -> list[float]:
    return [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)]


def hf_lm(smol, batch_size: int):
    from lm_eval.models.huggingface import HFLM

    disable_act(smol.model)
    return HFLM(pretrained=smol.model, tokenizer=smol.tokenizer, device="cpu", batch_size=batch_size)


def max_diff(a: list[float], b: list[float]) -> float:
    """Largest difference, relative to the log-likelihood's size where that exceeds 1.

    float32 sums over 30 layers and several tokens carry noise that grows with the value:
    plain ``hf`` itself differs by about 2e-5 (1e-6 relative) between batch sizes 1 and 8.
    """
    return max(abs(x - y) / max(1.0, abs(y)) for x, y in zip(a, b, strict=True))


def test_empty_map_and_beta_one_equal_plain_hf(smol, sst2_requests):
    plain = loglikelihoods(hf_lm(smol, 8), sst2_requests)
    assert max_diff(loglikelihoods(act_lm(smol), sst2_requests), plain) <= 1e-5
    all_heads = [[layer, head] for layer in range(30) for head in range(9)]
    assert max_diff(loglikelihoods(act_lm(smol, act_heads=all_heads, act_beta=1.0), sst2_requests), plain) <= 1e-5
    # and calibration proper does change the numbers
    assert max_diff(loglikelihoods(act_lm(smol, act_heads=HEADS), sst2_requests), plain) > 1e-2


def test_batch_size_one_and_eight_agree(smol, sst2_requests):
    one = loglikelihoods(act_lm(smol, act_heads=HEADS, batch_size=1), sst2_requests)
    eight = loglikelihoods(act_lm(smol, act_heads=HEADS, batch_size=8), sst2_requests)
    # right padding with token 0 and no mask: without per-row prompt lengths this drifts by ~0.5
    assert max_diff(one, eight) <= 1e-5


def test_logits_cache_reuse_stays_valid(smol, sst2_requests):
    """One forward pass serves all one-token continuations of a context (lm-eval's logits cache)."""
    one_token = [r for r in sst2_requests if r.arguments[1] in (" negative", " positive")]
    cached = loglikelihoods(act_lm(smol, act_heads=HEADS), one_token)
    uncached = loglikelihoods(act_lm(smol, act_heads=HEADS, logits_cache=False), one_token)
    assert max_diff(cached, uncached) <= 1e-5


def test_one_pass_equals_prefill_and_cached_decoding(smol):
    model, tok = smol.model, smol.tokenizer
    enable_act(model, HEADS, check_model=False)
    context = tok(INSTRUCTION + "Sentence: a gorgeous, witty, seductive movie. \nSentiment:")["input_ids"]
    continuation = tok(" positive and warm", add_special_tokens=False)["input_ids"]
    x = torch.tensor([context + continuation])
    with torch.no_grad():
        one_pass = model(x, act_prompt_lengths=[len(context)]).logits[0, len(context) - 1 :]
        out = model(torch.tensor([context]), use_cache=True)
        steps, cache = [out.logits[0, -1:]], out.past_key_values
        for token in continuation:
            out = model(torch.tensor([[token]]), past_key_values=cache, use_cache=True)
            steps.append(out.logits[0, -1:])
            cache = out.past_key_values
    disable_act(model)
    torch.testing.assert_close(torch.cat(steps), one_pass, atol=1e-4, rtol=1e-4)


def test_last_context_position_does_not_depend_on_the_continuation(smol):
    model, tok = smol.model, smol.tokenizer
    enable_act(model, HEADS, check_model=False)
    context = tok(INSTRUCTION + "Sentence: the plot is a mess. \nSentiment:")["input_ids"]
    rows = [context + tok(w, add_special_tokens=False)["input_ids"] for w in (" negative", " very positive indeed")]
    with torch.no_grad():
        last = []
        for row in rows:
            last.append(model(torch.tensor([row]), act_prompt_lengths=[len(context)]).logits[0, len(context) - 1])
    disable_act(model)
    # float32 noise from the different sequence lengths is ~3e-5; a continuation-dependent sink set moves logits by >0.1
    torch.testing.assert_close(last[0], last[1], atol=1e-4, rtol=0)


def test_generate_until_left_padding_matches_each_row_alone(smol):
    from lm_eval.api.instance import Instance

    prompts = ["Q: What is the capital of France?\nA:", "Q: Name a primary colour.\nA:", "Q: 2+2=?\nA:"]
    reqs = [Instance("generate_until", {}, (p, {"until": ["\n"], "max_gen_toks": 12}), i) for i, p in enumerate(prompts)]
    together = act_lm(smol, act_heads=HEADS, batch_size=3).generate_until(reqs, disable_tqdm=True)
    alone = [act_lm(smol, act_heads=HEADS, batch_size=1).generate_until([r], disable_tqdm=True)[0] for r in reqs]
    assert together == alone
    assert any(text.strip() for text in together)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(act_threshold=1.5), r"act_threshold must lie in \(0, 1\), got 1.5"),
        (dict(act_beta=2), r"act_beta must lie in \[0, 1\], got 2"),
        (dict(act_heads=[[30, 0]]), "layer 30 is out of range: the model has 30 layers"),
        (dict(act_heads=[[3, 9]]), "head 9 of layer 3 is out of range"),
        (dict(act_heads="[[1, x]]"), "act_heads must be JSON"),
        (dict(head_map="llama-2-7b-chat.classification"), "num_layers is 32 but the loaded model has 30"),
        (dict(head_map="no-such-map"), "neither a file nor a published map"),
        (dict(act_reference_sinks="maybe"), "act_reference_sinks must be true or false, got 'maybe'"),
        (dict(tp_plan="auto"), "does not support tp_plan: tensor parallelism shards attention heads"),
    ],
)
def test_bad_model_args_are_refused_with_the_value_named(smol, kwargs, message):
    with pytest.raises((HeadMapError, ValueError, FileNotFoundError), match=message):
        act_lm(smol, **kwargs)


def test_map_for_another_model_is_refused(smol, tmp_path):
    from act_eval.core.head_map import HeadMap
    from act_eval.lm.hf_act import HFActLM

    other = HeadMap(model="Qwen/Qwen2-0.5B", architecture="llama", num_layers=30, num_heads=9, num_kv_heads=3, heads={3: (1,)})
    path = other.save(tmp_path / "other.json")
    disable_act(smol.model)
    with pytest.raises(HeadMapError, match="made for model 'Qwen/Qwen2-0.5B'"):
        HFActLM(pretrained=smol.model, tokenizer=smol.tokenizer, device="cpu", head_map=str(path))


def test_gemma3_real_model_calibrates(gemma3_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma3_path)
    model = AutoModelForCausalLM.from_pretrained(gemma3_path, dtype=torch.float32).eval()
    assert "sliding_attention" in model.config.layer_types
    x = tok(INSTRUCTION + "Sentence: a charming and often affecting journey. \nSentiment:", return_tensors="pt")["input_ids"]
    heads = [[layer, head] for layer in range(1, 18, 2) for head in (0, 3)]
    with torch.no_grad():
        plain = model(x).logits
        enable_act(model, heads, beta=1.0, model_id="google/gemma-3-270m")
        same = model(x).logits
        enable_act(model, heads, model_id="google/gemma-3-270m")
        calibrated = model(x).logits
        disable_act(model)
    torch.testing.assert_close(same, plain, atol=1e-4, rtol=1e-4)
    assert (calibrated - plain).abs().max() > 1e-2


def test_start_up_line_names_the_calibration_and_an_empty_map_is_flagged(smol, caplog):
    with logged(caplog, "lm_eval.models.hf_act"):
        act_lm(smol, act_heads=[[3, 1], [3, 4], [12, 0]], act_beta=0.2)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hf-act: head map")]
    assert "3 heads [3:[1, 4], 12:[0]]" in line and "threshold 0.1, beta 0.2" in line
    assert not [r for r in caplog.records if r.name == "lm_eval.models.hf_act" and r.levelname == "WARNING"]
    caplog.clear()
    with logged(caplog, "lm_eval.models.hf_act"):
        act_lm(smol, act_heads=[])
    warnings = [r.getMessage() for r in caplog.records if r.name == "lm_eval.models.hf_act" and r.levelname == "WARNING"]
    assert warnings == ["hf-act: head map act_heads selects no head: this run computes exactly what `hf` computes"]


def test_a_run_on_tasks_the_map_was_not_searched_on_is_flagged(smol, tmp_path, caplog):
    """The tasks arrive with the requests: the map's own task (lite split) passes quietly, another is named."""
    from lm_eval.api.instance import Instance

    from act_eval.core.head_map import HeadMap

    hm = HeadMap(model="HuggingFaceTB/SmolLM2-135M-Instruct", architecture="llama", num_layers=30, num_heads=9,
                 num_kv_heads=3, heads={3: (1,)}, name="sst2-map", provenance={"tasks": ["act_sst2"]})
    lm = act_lm(smol, head_map=str(hm.save(tmp_path / "sst2-map.json")))

    def requests(task: str) -> list:
        return [Instance("loglikelihood", {}, (INSTRUCTION + "Sentence: fine \nSentiment:", w), 0, (task, 0, 1))
                for w in (" negative", " positive")]

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "lm_eval.models.hf_act" and r.levelname == "WARNING"]

    with logged(caplog, "lm_eval.models.hf_act"):
        lm.loglikelihood(requests("act_sst2_lite"), disable_tqdm=True)
    assert warnings() == []
    with logged(caplog, "lm_eval.models.hf_act"):
        lm.loglikelihood(requests("act_sst2_lite") + requests("act_mr_lite"), disable_tqdm=True)
    assert warnings() == ["hf-act: head map sst2-map was searched on act_sst2; this run also scores act_mr_lite"]


def test_model_info_records_the_map_that_ran(smol, tmp_path):
    """lm-eval merges get_model_info() into results["config"]: the map's name and content hash travel with the run."""
    from act_eval.core.head_map import HeadMap

    hm = HeadMap(model="HuggingFaceTB/SmolLM2-135M-Instruct", architecture="llama", num_layers=30, num_heads=9,
                 num_kv_heads=3, heads={3: (1, 4), 12: (0,)}, name="test-map", beta=0.3)
    info = act_lm(smol, head_map=str(hm.save(tmp_path / "test-map.json"))).get_model_info()
    assert info["act"] == {
        "head_map": "test-map", "head_map_hash": hm.content_hash, "heads": {"3": [1, 4], "12": [0]},
        "num_calibrated_heads": 3, "rule": "act", "threshold": 0.1, "beta": 0.3, "reference_sinks": False,
    }
    assert "model_num_parameters" in info  # HFLM's own info is kept


def test_a_first_token_map_runs_by_path_and_is_recorded(smol, sst2_requests, tmp_path, caplog):
    """Factor 1 is plain ``hf``; another factor moves the numbers, batch 1 and 8 agree, and the results say which rule ran."""
    from act_eval.core.head_map import HeadMap, parse_heads

    hm = HeadMap(model="HuggingFaceTB/SmolLM2-135M-Instruct", architecture="llama", num_layers=30, num_heads=9,
                 num_kv_heads=3, heads=parse_heads(HEADS), name="ft-test", rule="first_token", factor=1.0)
    path = str(hm.save(tmp_path / "ft-test.json"))
    plain = loglikelihoods(hf_lm(smol, 8), sst2_requests)
    assert max_diff(loglikelihoods(act_lm(smol, head_map=path), sst2_requests), plain) <= 1e-5
    with logged(caplog, "lm_eval.models.hf_act"):
        halved = act_lm(smol, head_map=path, act_factor=0.5)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hf-act: head map")]
    assert "head map ft-test" in line and "50 heads" in line and line.endswith("rule first_token, factor 0.5")
    eight = loglikelihoods(halved, sst2_requests)
    assert max_diff(eight, plain) > 1e-2
    assert max_diff(loglikelihoods(act_lm(smol, head_map=path, act_factor=0.5, batch_size=1), sst2_requests), eight) <= 1e-5
    info = halved.get_model_info()["act"]
    assert {k: info[k] for k in ("head_map", "head_map_hash", "rule", "factor")} == {
        "head_map": "ft-test", "head_map_hash": hm.content_hash, "rule": "first_token", "factor": 0.5}
    assert "threshold" not in info and "beta" not in info
    with pytest.raises(HeadMapError, match="act_beta applies to ACT maps"):
        act_lm(smol, head_map=path, act_beta=0.2)
