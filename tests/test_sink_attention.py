"""The blockwise kernel (sdpa plus an exact sink-column correction) held against the eager reference."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from act_eval.core import blockwise as sink_attention
from act_eval.core.attention import ActSettings, LayerCall, SequenceSinks, act_attention_forward, eager_attention
from act_eval.core.blockwise import (
    allowed_rows,
    attention_scores,
    bias_rows,
    calibrated_attention,
    column_statistics,
    plain_output,
    plain_pass,
)
from act_eval.core.calibration import calibrated_output, column_sums, redistribute
from act_eval.core.enable import disable_act, enable_act
from act_eval.core.head_map import HeadMap, HeadMapError, parse_heads
from act_eval.core.switch import model_shape
from tiny_models import SUPPORTED, tiny_model

HEADS = [[0, 1], [1, 0], [1, 3], [2, 0], [2, 2]]


def make_mask(batch: int, n: int, *, window: int | None = None, pad: list[int] | None = None, bias: bool = False) -> torch.Tensor:
    """``[B, 1, n, n]`` causal mask, optionally sliding-window, left-padded, or float with biases."""
    rows, cols = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = (cols <= rows).expand(batch, 1, n, n).clone()
    if window is not None:
        allowed &= cols > rows - window
    for b, p in enumerate(pad or []):
        allowed[b, :, :, :p] = False
    if not bias:
        return allowed
    values = torch.randn(batch, 1, n, n, generator=torch.Generator().manual_seed(5)) * 0.5
    return torch.where(allowed, values, torch.finfo(torch.float32).min)


MASKS = {
    "causal": lambda b, n: None,
    "sliding_window_left_padded": lambda b, n: make_mask(b, n, window=4, pad=[0, 3]),
    "float_biases": lambda b, n: make_mask(b, n, bias=True, pad=[2, 0]),
}


def qkv(batch: int = 2, heads: int = 3, kv_heads: int = 3, n: int = 11, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, n, d, generator=g) * 1.5, torch.randn(batch, kv_heads, n, d, generator=g) * 1.5,
            torch.randn(batch, kv_heads, n, d, generator=g))


def full_probs(q, k, mask, scaling, softcap=None):
    b, _, n, _ = q.shape
    allowed = allowed_rows(mask, 0, n, n, k.shape[2], b, q.device)
    bias = None if mask is None else bias_rows(mask, 0, n, k.shape[2])
    return eager_attention(q, k, allowed, scaling, softcap, bias), allowed


# ---------------------------------------------------------------------------------------------
# the pure functions


def test_calibrated_output_equals_redistributed_probabilities_times_values():
    torch.manual_seed(0)
    n, d = 6, 4
    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    probs = torch.softmax((torch.randn(3, n, n) * 3).masked_fill(~allowed, float("-inf")), -1)
    v = torch.randn(3, n, d)
    sinks = torch.tensor([[False, True, False, True, False, False], [True, False, False, False, False, False],
                          [False, False, False, False, False, False]])
    on, off = probs * sinks[:, None, :], probs * ~sinks[:, None, :]
    parts = (off @ v, off.sum(-1), on @ v, on.sum(-1))
    got = calibrated_output(*parts, beta=0.3)
    torch.testing.assert_close(got, redistribute(probs, sinks, 0.3) @ v, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(calibrated_output(*parts, beta=1.0), probs @ v)
    # head 1's row 0 sees only its sink: left as it was, not NaN
    torch.testing.assert_close(got[1, 0], v[1, 0])


@pytest.mark.parametrize("mask_kind", list(MASKS))
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_column_statistics_are_the_whole_matrix_sums_in_small_blocks(mask_kind: str, softcap):
    q, k, _ = qkv()
    mask = MASKS[mask_kind](2, 11)
    probs, allowed = full_probs(q, k, mask, 0.4, softcap)
    lengths = torch.tensor([7, 11])
    total, count = column_statistics(q, k, mask, 0.4, softcap, lengths, block=6)
    visible = allowed & (allowed.any(-1, keepdim=True) & (torch.arange(11)[:, None] < lengths[:, None, None, None]))
    want_total, want_count = column_sums(probs, visible)
    torch.testing.assert_close(total, want_total)
    torch.testing.assert_close(count, want_count)


@pytest.mark.parametrize("mask_kind", list(MASKS))
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_calibrated_attention_is_the_rule_on_the_whole_matrix(mask_kind: str, softcap):
    q, k, v = qkv()
    mask = MASKS[mask_kind](2, 11)
    probs, allowed = full_probs(q, k, mask, 0.4, softcap)
    sinks = torch.zeros(2, 3, 11, dtype=torch.bool)
    sinks[0, 0, [3, 5]] = sinks[1, 2, 2] = sinks[1, 1, [0, 1, 4]] = True
    calibrated, plain = calibrated_attention(q, k, v, mask, 0.4, softcap, sinks, partial(calibrated_output, beta=0.3), plain=True, block=6)
    sees = allowed.any(-1).expand(2, 3, 11)
    torch.testing.assert_close(calibrated[sees], (redistribute(probs, sinks, 0.3) @ v)[sees])
    torch.testing.assert_close(plain[sees], (probs @ v)[sees])
    no_sinks, _ = calibrated_attention(q, k, v, mask, 0.4, softcap, None, plain_output, block=6)
    torch.testing.assert_close(no_sinks[sees], (probs @ v)[sees])


@pytest.mark.parametrize("mask_kind", list(MASKS))
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_a_plain_pass_gives_the_plain_output_log_sum_exp_and_column_sums(mask_kind: str, softcap):
    q, k, v = qkv()
    mask = MASKS[mask_kind](2, 11)
    probs, allowed = full_probs(q, k, mask, 0.4, softcap)
    lengths = torch.tensor([7, 11])
    got = plain_pass(q, k, v, mask, 0.4, softcap, lengths, block=6)
    sees = allowed.any(-1).expand(2, 3, 11)
    torch.testing.assert_close(got.out[sees], (probs @ v)[sees])
    logits = attention_scores(q, k, allowed, 0.4, softcap, bias_rows(mask, 0, 11, 11))
    torch.testing.assert_close(got.lse[sees], torch.logsumexp(logits, -1)[sees])
    total, count = column_statistics(q, k, mask, 0.4, softcap, lengths, block=6)
    torch.testing.assert_close(got.total, total)
    torch.testing.assert_close(got.count, count, atol=0, rtol=0)


def test_blocks_are_corrected_from_the_plain_pass_unless_a_row_leans_on_its_sinks(monkeypatch):
    """Rows 0-11 put most of their mass on key 3, rows 12-23 little: the first blocks are recomputed,
    the last ones corrected from the plain output, and both give the rule on the whole matrix."""
    g = torch.Generator().manual_seed(3)
    n, d = 24, 8
    u = torch.zeros(d)
    u[0] = 1.0
    q = torch.randn(1, 1, n, d, generator=g) * 0.3
    q[..., :12, 0] = 3.0
    q[..., 12:, 0] = 0.0
    k, v = torch.randn(1, 1, n, d, generator=g) * 0.3, torch.randn(1, 1, n, d, generator=g)
    k[..., 3, :] = 2.0 * u
    probs, allowed = full_probs(q, k, None, 1.0)
    sinks = torch.zeros(1, 1, n, dtype=torch.bool)
    sinks[..., 3] = True
    mass = probs[..., 3]
    assert mass[..., 3:12].min() > 0.5 and mass[..., 12:].max() < 0.5
    recomputed = []
    exact = sink_attention._exact_parts
    monkeypatch.setattr(sink_attention, "_exact_parts", lambda part, *a: recomputed.append(part.start) or exact(part, *a))
    known = plain_pass(q, k, v, None, 1.0, block=6)
    rule = partial(calibrated_output, beta=0.2)
    got, plain = calibrated_attention(q, k, v, None, 1.0, None, sinks, rule, plain=True, block=6, known=known)
    assert recomputed == [0, 6]  # blocks 12:18 and 18:24 were corrected
    want = redistribute(probs, sinks, 0.2) @ v
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(plain, probs @ v, atol=1e-6, rtol=1e-5)
    recomputed.clear()
    alone, none = calibrated_attention(q, k, v, None, 1.0, None, sinks, rule, block=6, known=plain_pass(q, k, v, None, 1.0, block=6))
    assert none is None and recomputed == [0, 6]
    torch.testing.assert_close(alone, got, atol=0, rtol=0)  # written over the plain pass's buffer: the same numbers
    recomputed.clear()
    without, _ = calibrated_attention(q, k, v, None, 1.0, None, sinks, rule, block=6)
    assert recomputed == [0, 6, 12, 18]
    torch.testing.assert_close(got, without, atol=1e-6, rtol=1e-5)


def test_a_block_holds_its_rows_logits_only_and_skips_keys_no_row_sees(monkeypatch):
    sizes = []

    block_logits = sink_attention._Block.logits

    def recording(*args, **kwargs):
        logits = block_logits(*args, **kwargs)
        sizes.append(logits.numel())
        return logits

    monkeypatch.setattr(sink_attention._Block, "logits", recording)
    q, k, v = qkv(batch=1, heads=2, kv_heads=2, n=64)
    block = 2 * 8  # eight rows of both heads
    for statistics in (lambda: column_statistics(q, k, None, 0.3, block=block), lambda: plain_pass(q, k, v, None, 0.3, block=block)):
        statistics()
        assert max(sizes) <= block * 64 and len(sizes) == 8
        assert sum(sizes) < 0.6 * 2 * 64 * 64  # causal: a block reads only the keys up to its last row
        sizes.clear()
    calibrated_attention(q, k, v, make_mask(1, 64, window=4), 0.3, None, None, plain_output, block=block)
    assert sum(sizes) <= 2 * 64 * (8 + 4)  # sliding window: a band


# ---------------------------------------------------------------------------------------------
# the attention function: blockwise == eager


def module_with(groups: int) -> nn.Module:
    """What the attention function reads of a module: its architecture, nothing about calibration."""
    module = nn.Module()
    module.num_key_value_groups = groups
    module.layer_idx = 0
    return module


RULES = ["act", "first_token"]
FACTOR = 0.3  # first_token: the first token's attention times 0.3


def call_with(heads: list[int], kernel: str, rule: str = "act", **fields) -> LayerCall:
    return LayerCall(ActSettings(tuple(heads), threshold=0.08, beta=0.3, kernel=kernel, rule=rule, factor=FACTOR), **fields)


def attend(call: LayerCall, q, k, v, mask, softcap=None, lengths=None):
    """The attention function on tensors, calibrated by ``call`` as a forward call's ``act_layers`` would."""
    module = module_with(q.shape[1] // k.shape[1])
    out, _ = act_attention_forward(
        module, q, k, v, mask, scaling=0.4, softcap=softcap, act_prompt_lengths=lengths, act_layers={0: call}
    )
    return out


def both_kernels(heads, q, k, v, mask, softcap=None, lengths=None, rule="act", **fields):
    outs = {}
    for kernel in ("eager", "blockwise"):
        call = call_with(heads, kernel, rule, **fields)
        outs[kernel] = (attend(call, q, k, v, mask, softcap, lengths), call)
    return outs


@pytest.mark.parametrize("mask_kind", list(MASKS))
@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("rule", RULES)
def test_blockwise_equals_eager(mask_kind: str, kv_heads: int, softcap, rule: str):
    q, k, v = qkv(heads=4, kv_heads=kv_heads, n=13)
    outs = both_kernels([0, 2, 3], q, k, v, MASKS[mask_kind](2, 13), softcap, lengths=[9, 13], rule=rule)
    (eager, em), (blockwise, bm) = outs["eager"], outs["blockwise"]
    rows = torch.ones(2, 13, dtype=torch.bool)
    if mask_kind != "causal":  # a left-pad row sees nothing: eager zeroes it, sdpa does not; neither is ever read
        rows = allowed_rows(MASKS[mask_kind](2, 13), 0, 13, 13, 13, 2, "cpu").any(-1)[:, 0]
    torch.testing.assert_close(blockwise[rows], eager[rows], atol=1e-5, rtol=1e-5)
    assert torch.equal(bm.sequence.sinks, em.sequence.sinks) and em.sequence.sinks.any()
    assert (eager - plain_attention(q, k, v, MASKS[mask_kind](2, 13), softcap))[rows].abs().max() > 1e-3
    if rule == "first_token":  # the first real token, after each row's left padding, and nothing else
        first = (~rows).sum(-1)
        assert bm.sequence.sinks.sum(-1).eq(1).all() and bm.sequence.sinks.float().argmax(-1).eq(first[:, None]).all()


def plain_attention(q, k, v, mask, softcap):
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    probs, _ = full_probs(q, k, mask, 0.4, softcap)
    return (probs @ v).transpose(1, 2)


def test_statistics_stay_float32_under_mixed_precision():
    """lm-eval's ``mixed_precision_dtype`` runs the model under autocast; the calibration does not follow it."""
    q, k, v = qkv(heads=4, kv_heads=2, n=12)
    outs = []
    for autocast in (False, True):
        call = call_with([0, 1, 2, 3], "blockwise")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outs.append(attend(call, q, k, v, None))
    assert outs[1].dtype == torch.float32
    torch.testing.assert_close(outs[1], outs[0], atol=0, rtol=0)


@pytest.mark.parametrize("rule", RULES)
def test_decoding_with_the_stored_sink_set_equals_eager(rule: str):
    """A cached decoding step reads the prefill's sink set and only its rows' log-sum-exp; the set
    is the sequence state enable_act leaves on the module, for calls that pass no calibration."""
    q, k, v = qkv(heads=4, kv_heads=2, n=12)
    got = {}
    for kernel in ("eager", "blockwise"):
        module = module_with(2)
        module.act, module.act_sequence = call_with([1, 2], kernel, rule).settings, SequenceSinks()
        act_attention_forward(module, q[:, :, :8], k[:, :, :8], v[:, :, :8], None, scaling=0.4)
        steps = [act_attention_forward(module, q[:, :, t : t + 1], k[:, :, : t + 1], v[:, :, : t + 1], None, scaling=0.4)[0]
                 for t in range(8, 12)]
        got[kernel] = torch.cat(steps, 1)
        assert module.act_sequence.sinks.shape[-1] == 8 and module.act_sequence.sinks.any()
    torch.testing.assert_close(got["blockwise"], got["eager"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rule", RULES)
def test_row_heads_and_mix_mean_the_same_and_carry_the_same_gradients(rule: str):
    """The head search's two fields: which heads a row calibrates, and a differentiable mix."""
    q, k, v = qkv(batch=3, heads=4, kv_heads=2, n=10)
    row_heads = torch.tensor([[True, False, True], [False, True, False], [True, True, True]])
    results = {}
    for kernel in ("eager", "blockwise"):
        mix = torch.tensor([[0.0, 0.5, 1.0], [0.3, 0.0, 2.0], [1.0, 1.0, -0.5]], requires_grad=True)
        qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
        out = attend(call_with([0, 1, 3], kernel, rule, row_heads=row_heads, mix=mix), qq, kk, vv, None)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        grads = torch.autograd.grad((out * weights).sum(), [mix, qq, kk, vv])
        results[kernel] = (out.detach(), *grads)
    for got, want in zip(results["blockwise"], results["eager"]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    mix_grad = results["blockwise"][1]
    assert mix_grad[row_heads].abs().min() > 0 and torch.equal(mix_grad[~row_heads], torch.zeros(int((~row_heads).sum())))


# ---------------------------------------------------------------------------------------------
# tiny models of every supported architecture


def ids(batch: int, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 100, (batch, n), generator=torch.Generator().manual_seed(seed))


def first_token_map(model: nn.Module, heads: list[list[int]], factor: float) -> HeadMap:
    """An inline first-token map for a tiny model."""
    return HeadMap(model="tiny", heads=parse_heads(heads), rule="first_token", factor=factor, **model_shape(model))


@pytest.mark.parametrize("arch", SUPPORTED)
@pytest.mark.parametrize("rule", RULES)
def test_every_supported_architecture_gives_the_eager_numbers(arch: str, rule: str):
    model = tiny_model(arch)
    x = ids(3, 16)
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[1, :5] = 0  # left padding
    calibration = dict(head_map=HEADS, threshold=0.05) if rule == "act" else dict(head_map=first_token_map(model, HEADS, FACTOR))
    got = {}
    for kernel in ("eager", "blockwise"):
        enable_act(model, **calibration, check_model=False, kernel=kernel)
        with torch.no_grad():
            full = torch.log_softmax(model(x, attention_mask=mask, act_prompt_lengths=[16, 16, 10]).logits, -1)
            prefill = model(x[:, :11], attention_mask=mask[:, :11], use_cache=True)
            step = model(x[:, 11:12], attention_mask=mask[:, :12], past_key_values=prefill.past_key_values, use_cache=True)
        got[kernel] = (full, torch.log_softmax(step.logits, -1))
        disable_act(model)
    with torch.no_grad():
        plain = torch.log_softmax(model(x, attention_mask=mask).logits, -1)
    real = mask.bool()
    (full, step), (full_eager, step_eager) = got["blockwise"], got["eager"]
    torch.testing.assert_close(full[real], full_eager[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step, step_eager, atol=1e-5, rtol=1e-5)
    assert (got["eager"][0] - plain)[real].abs().max() > 1e-3  # calibration changed something


def test_an_unknown_kernel_is_refused_before_anything_changes():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="kernel must be one of blockwise, eager, got 'fused'"):
        enable_act(model, HEADS, check_model=False, kernel="fused")
    assert not hasattr(model, "_act_controller") and model.config._attn_implementation != "act"


def test_hf_act_refuses_an_unknown_kernel_before_loading():
    from act_eval.lm.hf_act import HFActLM

    with pytest.raises(HeadMapError, match="act_kernel must be one of blockwise, eager, got 'flash'"):
        HFActLM(pretrained="smollm2-135m", act_kernel="flash")


# ---------------------------------------------------------------------------------------------
# the real models


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_real_model_log_likelihoods_equal_the_eager_reference(name: str, request):
    import json

    from lm_eval.api.instance import Instance
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from act_eval.lm.hf_act import HFActLM

    path = request.getfixturevalue("smollm2_path" if name.startswith("smol") else "gemma3_path")
    data_dir = request.getfixturevalue("data_dir")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    shape = model.config.get_text_config()
    heads = [[layer, head] for layer in range(1, shape.num_hidden_layers, 2) for head in range(0, shape.num_attention_heads, 2)]
    rows = [json.loads(line) for line in (data_dir / "sst2" / "validation.jsonl").open()][:4]
    reqs = [Instance("loglikelihood", {}, (f"Sentence: {r['sentence']} \nSentiment:", w), i)
            for i, r in enumerate(rows) for w in (" negative", " positive")]
    got = {}
    for kernel in ("eager", "blockwise"):
        lm = HFActLM(pretrained=model, tokenizer=tokenizer, device="cpu", batch_size=4, act_heads=heads,
                     act_check_model=False, act_kernel=kernel)
        got[kernel] = [ll for ll, _ in lm.loglikelihood(reqs, disable_tqdm=True)]
        disable_act(model)
    from lm_eval.models.huggingface import HFLM

    plain = [ll for ll, _ in HFLM(pretrained=model, tokenizer=tokenizer, device="cpu", batch_size=4).loglikelihood(reqs, disable_tqdm=True)]

    def worst(a: list[float], b: list[float]) -> float:
        return max(abs(x - y) / max(1.0, abs(y)) for x, y in zip(a, b, strict=True))

    assert worst(got["blockwise"], got["eager"]) <= 1e-5  # measured: 5e-7 (SmolLM2), 7e-7 (Gemma-3)
    assert worst(got["eager"], plain) > 0.1  # while calibration moves them by 2.6 and 0.46
