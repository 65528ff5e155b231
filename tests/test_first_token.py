"""First-token scaling end to end on tiny models: the identity at factor 1, padding, decoding, the search's maps."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
import torch

from act_eval.core.enable import disable_act, enable_act
from act_eval.core.head_map import HeadMap, load_head_map, parse_heads
from act_eval.core.switch import model_shape
from act_eval.search.config import SearchConfig
from act_eval.search.engine import Settings
from test_search import _job, _tasked, examples
from tiny_models import tiny_model

ARCHS = ["llama", "gemma3_text", "gpt2"]
REPO = Path(__file__).resolve().parents[1]


def first_token_map(model, factor: float, heads=None) -> HeadMap:
    shape = model_shape(model)
    every = [[layer, head] for layer in range(shape["num_layers"]) for head in range(shape["num_heads"])]
    return HeadMap(model="tiny", heads=parse_heads(every if heads is None else heads), rule="first_token", factor=factor, **shape)


def ids(batch: int, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 100, (batch, n), generator=torch.Generator().manual_seed(seed))


def logits(model, x, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(x, **kwargs).logits.float(), -1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kernel", ["blockwise", "eager"])
def test_factor_one_is_the_plain_model(arch: str, kernel: str):
    model = tiny_model(arch)
    x = ids(2, 12)
    plain = logits(model, x)
    controller = enable_act(model, first_token_map(model, 1.0), check_model=False, kernel=kernel)
    assert (controller.rule, controller.factor) == ("first_token", 1.0)
    torch.testing.assert_close(logits(model, x), plain, atol=2e-6, rtol=0)  # float32 kernels: rounding only
    enable_act(model, first_token_map(model, 0.5), check_model=False, kernel=kernel)
    assert (logits(model, x) - plain).abs().max() > 1e-3  # a factor other than 1 moves them
    disable_act(model)
    assert torch.equal(logits(model, x), plain)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_batch_of_eight_with_padding_gives_each_row_what_it_gives_alone(arch: str):
    """lm-eval's loglikelihood batches (right-padded with token 0, prompt lengths passed) and generate's (left-padded, masked)."""
    model = tiny_model(arch)
    enable_act(model, first_token_map(model, 2.0, [[0, 1], [1, 0], [1, 3], [2, 2]]), check_model=False)
    lengths = [12, 5, 9, 12, 7, 3, 10, 8]
    rows = [ids(1, n, seed=i)[0] for i, n in enumerate(lengths)]
    right = torch.zeros(8, 12, dtype=torch.long)
    left = torch.zeros(8, 12, dtype=torch.long)
    mask = torch.zeros(8, 12, dtype=torch.long)
    for b, row in enumerate(rows):
        right[b, : len(row)] = row
        left[b, 12 - len(row) :], mask[b, 12 - len(row) :] = row, 1
    scored = logits(model, right, act_prompt_lengths=lengths)
    generated = logits(model, left, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0))  # as generate passes them
    for b, row in enumerate(rows):
        alone = logits(model, row[None], act_prompt_lengths=[len(row)])[0]
        torch.testing.assert_close(scored[b, : len(row)], alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(generated[b, 12 - len(row) :], alone, atol=1e-5, rtol=1e-5)
    disable_act(model)
    assert (logits(model, right) - scored).abs().max() > 1e-3  # the agreement is not the plain model's


@pytest.mark.parametrize("arch", ARCHS)
def test_decoding_with_the_cache_equals_one_pass(arch: str):
    """The rule needs no prompt statistic: each decoded row gets what the same row gets in one pass."""
    model = tiny_model(arch)
    enable_act(model, first_token_map(model, 0.5), check_model=False)
    x = ids(1, 12)
    whole = logits(model, x)
    with torch.no_grad():
        cache = model(x[:, :8], use_cache=True).past_key_values
        for t in range(8, 12):
            step = model(x[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            torch.testing.assert_close(torch.log_softmax(step.logits[:, -1].float(), -1), whole[:, t], atol=1e-5, rtol=1e-5)


def test_a_search_with_the_first_token_rule_writes_a_map_of_that_kind(tmp_path):
    model = tiny_model("llama")
    enable_act(model, None, check_model=False)
    cal, val = _tasked(examples(8, seed=3)), _tasked(examples(4, seed=4))
    # loose keep and combination rules, so that the tiny model's heads reach the map
    hm = _job(tmp_path, model, rule="first_token", factor=0.5, factors=[0.5, 2.0], guard_alpha=0.0, patience=10).run(cal, val, "tiny", {})
    assert hm.rule == "first_token" and hm.factor in (0.5, 2.0) and hm.num_calibrated > 0
    back = load_head_map(tmp_path / "map.json")
    assert (back.rule, back.factor, back.content_hash) == ("first_token", hm.factor, hm.content_hash)
    assert {p.name for p in (tmp_path / "tasks").iterdir()} == {"map.a.json", "map.b.json"}
    assert all(load_head_map(p).rule == "first_token" for p in (tmp_path / "tasks").iterdir())
    prov = hm.provenance
    assert prov["searched_setting"] == {"rule": "first_token", "factor": 0.5}
    assert prov["settings"]["factors"] == [0.5, 2.0] and "betas" not in prov["settings"]
    assert [row["factor"] for row in prov["settings"]["grid"]] == [0.5, 2.0]
    assert prov["method"].startswith("act-eval search (second generation), first-token scaling")


def test_an_act_checkpoint_keeps_its_digest_and_its_stored_evaluations():
    """The committed SmolLM2 checkpoint was written before rules existed; an ACT search still finds every file of it."""
    ckpt = REPO / "searches" / "smollm2-135m.classification" / "checkpoint"
    meta = json.loads((ckpt / "meta.json").read_text())
    settings = Settings(0.1, 0.4)
    assert settings.digest() == meta["inputs"]["settings"]
    assert hashlib.sha256(json.dumps(meta["inputs"], sort_keys=True).encode()).hexdigest() == meta["digest"]
    for path in sorted((ckpt / "evals").iterdir())[:5]:
        tag, heads, threshold, beta = json.loads(json.loads(gzip.decompress(path.read_bytes()))["key"])
        key = json.dumps([tag, heads, *Settings(threshold, beta).key()])
        assert "evals/" + hashlib.sha256(key.encode()).hexdigest()[:20] == f"evals/{path.name.removesuffix('.json.gz')}"
    assert Settings(rule="first_token", factor=2.0).digest() == {"rule": "first_token", "factor": 2.0}


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(rule="first_token", beta=0.2), "--beta does not apply to --rule first_token"),
        (dict(rule="first_token", betas=[0.1], thresholds=[0.2]), "--betas, --thresholds do not apply"),
        (dict(factors=[0.5]), "--factors does not apply to --rule act"),
        (dict(rule="first_token", factor=0.0), "act_factor must be a positive number"),
        (dict(rule="first_token", factors=[2.0, -1.0]), "act_factor must be a positive number"),
        (dict(rule="zero"), "--rule must be one of act, first_token"),
    ],
)
def test_search_settings_of_the_other_rule_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(model="tiny", tasks=["a"], out="x.json", **change).check_settings()
