"""The ACT attention function on tiny random models of every supported architecture."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from act_eval.attention import (
    ActHeads,
    PromptRows,
    UnsupportedArchitectureError,
    act_attention_forward,
    attention_modules,
    disable_act,
    enable_act,
)
from act_eval.calibration import calibrate
from tiny_models import SUPPORTED, UNSUPPORTED, tiny_model

HEADS = [[0, 1], [2, 0], [2, 3]]


def ids(batch: int = 2, n: int = 14, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 100, (batch, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", SUPPORTED)
def test_every_supported_architecture_is_calibrated(arch: str):
    model = tiny_model(arch)
    x = ids()
    with torch.no_grad():
        plain = model(x).logits
        enable_act(model, HEADS, beta=1.0, check_model=False)
        beta_one = model(x).logits
        enable_act(model, HEADS, beta=0.4, threshold=0.05, check_model=False)
        calibrated = model(x).logits
        disable_act(model)
        restored = model(x).logits
    torch.testing.assert_close(beta_one, plain, atol=1e-5, rtol=0)  # eager path == standard kernel
    assert (calibrated - plain).abs().max() > 1e-3  # calibration changes something
    assert torch.equal(restored, plain)  # off means off
    assert all(not hasattr(m, "act") for m in attention_modules(model))


@pytest.mark.parametrize("arch", UNSUPPORTED)
def test_architectures_outside_the_interface_are_refused(arch: str):
    model = tiny_model(arch)
    with pytest.raises(UnsupportedArchitectureError, match="AttentionInterface"):
        enable_act(model, HEADS, check_model=False)
    assert not hasattr(model, "_act_controller")


def test_layers_without_selected_heads_carry_no_state():
    model = tiny_model("llama")
    enable_act(model, [[2, 1]], check_model=False)
    modules = attention_modules(model)
    assert [hasattr(m, "act") for m in modules] == [False, False, True]
    assert modules[2].act.heads == [1]


def test_attention_function_equals_the_rule_applied_by_hand():
    """Called directly on tensors: selected heads are the rule's output, others plain softmax."""
    torch.manual_seed(0)
    b, hq, hkv, n, d = 2, 4, 2, 9, 8
    q, k, v = torch.randn(b, hq, n, d), torch.randn(b, hkv, n, d), torch.randn(b, hkv, n, d)
    module = nn.Module()
    module.num_key_value_groups = hq // hkv
    rows = PromptRows()
    module.act = ActHeads([1, 2], threshold=0.12, beta=0.3, reference_drop_first=False, prompt_rows=rows)
    with rows.set([6, 9]):
        out, _ = act_attention_forward(module, q, k, v, None, scaling=d**-0.5)
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    for batch, prompt_len in ((0, 6), (1, 9)):
        for head in range(hq):
            kv = head // 2
            probs = torch.softmax((q[batch, head] @ k[batch, kv].T * d**-0.5).masked_fill(~mask, float("-inf")), -1)
            if head in (1, 2):
                visible = mask & (torch.arange(n) < prompt_len)[:, None]
                probs = calibrate(probs, visible, 0.12, 0.3)
            torch.testing.assert_close(out[batch, :, head], probs @ v[batch, kv], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gpt2"])
def test_one_pass_equals_prefill_then_cached_decoding(arch: str):
    """The sink set comes from the prompt and is kept for the continuation."""
    model = tiny_model(arch)
    ctl = enable_act(model, HEADS, threshold=0.05, check_model=False)
    x = ids(batch=1, n=12)
    prompt = 7
    with torch.no_grad(), ctl.prompt_lengths([prompt]):
        one_pass = model(x).logits[0]
    with torch.no_grad():
        out = model(x[:, :prompt], use_cache=True)
        steps = [out.logits[0]]
        cache = out.past_key_values
        for t in range(prompt, x.shape[1]):
            out = model(x[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits[0])
    torch.testing.assert_close(torch.cat(steps), one_pass, atol=1e-5, rtol=1e-4)


def test_last_context_prediction_does_not_depend_on_the_continuation():
    model = tiny_model("qwen2")
    ctl = enable_act(model, HEADS, threshold=0.05, check_model=False)
    x = ids(batch=1, n=12)
    other = x.clone()
    other[0, 8:] = torch.randint(3, 100, (4,), generator=torch.Generator().manual_seed(9))
    with torch.no_grad(), ctl.prompt_lengths([8]):
        a = model(x).logits[0, 7]
        b = model(other).logits[0, 7]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_left_padded_generation_matches_each_row_alone(arch: str):
    model = tiny_model(arch)
    enable_act(model, HEADS, threshold=0.05, check_model=False)
    rows = [ids(1, 9, seed=3)[0], ids(1, 5, seed=4)[0]]
    width = max(len(r) for r in rows)
    batch = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    together = model.generate(input_ids=batch, attention_mask=mask, **kw)[:, width:]
    for i, r in enumerate(rows):
        alone = model.generate(input_ids=r[None], attention_mask=torch.ones(1, len(r), dtype=torch.long), **kw)
        assert together[i].tolist() == alone[0, len(r):].tolist()


def test_prompt_rows_are_cleared_after_the_call():
    rows = PromptRows()
    with rows.set([3]):
        assert rows.lengths.tolist() == [3]
    assert rows.lengths is None
