"""The ACT attention function on tiny random models of every supported architecture."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from act_eval.core import attention
from act_eval.core.attention import ActSettings, LayerCall, act_attention_forward
from act_eval.core.calibration import calibrate
from act_eval.core.enable import disable_act, enable_act
from act_eval.core.switch import UnsupportedArchitectureError, attention_modules
from tiny_models import OTHERS, SUPPORTED, tiny_model
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

HEADS = [[0, 1], [2, 0], [2, 3]]


def ids(batch: int = 2, n: int = 14, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 100, (batch, n), generator=torch.Generator().manual_seed(seed))


def assert_calibrated(model) -> None:
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


def assert_refused(model, match: str = "AttentionInterface") -> None:
    x = ids()
    with torch.no_grad():
        plain = model(x).logits
        with pytest.raises(UnsupportedArchitectureError, match=match):
            enable_act(model, HEADS, check_model=False)
        after = model(x).logits
    assert not hasattr(model, "_act_controller")
    assert torch.equal(after, plain)  # a refusal leaves the model as it was


def layers_calling_the_interface(model) -> set[int]:
    """Ground truth independent of ``enable_act``: the layers in which a function registered
    with transformers' AttentionInterface actually runs (empty if the name is rejected)."""
    seen: set[int] = set()

    def counting(module, *args, **kwargs):
        seen.add(module.layer_idx)
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, *args, **kwargs)

    AttentionInterface.register("act_test_counting", counting)
    AttentionMaskInterface.register("act_test_counting", sdpa_mask)
    previous = model.config._attn_implementation or "sdpa"
    try:
        model.set_attn_implementation("act_test_counting")
        with torch.no_grad():
            model(ids())
    except (KeyError, ValueError):
        return set()
    finally:
        model.set_attn_implementation(previous)
    return seen


@pytest.mark.parametrize("arch", SUPPORTED)
def test_every_supported_architecture_is_calibrated(arch: str):
    assert_calibrated(tiny_model(arch))


@pytest.mark.parametrize("arch", OTHERS)
def test_an_architecture_is_calibrated_exactly_when_its_attention_function_runs(arch: str):
    """Whichever a transformers release does: calibrated if the interface runs in every layer,
    refused (and left untouched) otherwise."""
    model = tiny_model(arch)
    if len(layers_calling_the_interface(model)) == len(attention_modules(model)) > 0:
        assert_calibrated(model)
    else:
        assert_refused(model)


def test_a_layer_that_bypasses_the_attention_function_is_refused():
    """A model whose layer 1 computes attention without the interface is refused by name."""
    model = tiny_model("llama")
    bypass = attention_modules(model)[1]
    bypass.forward = lambda hidden_states, *args, **kwargs: (torch.zeros_like(hidden_states), None)
    assert_refused(model, match=r"layers \[1\] never called")


def test_layers_without_selected_heads_carry_no_state():
    model = tiny_model("llama")
    enable_act(model, [[2, 1]], check_model=False)
    modules = attention_modules(model)
    assert [hasattr(m, "act") for m in modules] == [False, False, True]
    assert modules[2].act.heads == (1,)


def test_attention_function_equals_the_rule_applied_by_hand():
    """Called directly on tensors: selected heads are the rule's output, others plain softmax."""
    torch.manual_seed(0)
    b, hq, hkv, n, d = 2, 4, 2, 9, 8
    q, k, v = torch.randn(b, hq, n, d), torch.randn(b, hkv, n, d), torch.randn(b, hkv, n, d)
    module = nn.Module()
    module.num_key_value_groups = hq // hkv
    module.layer_idx = 0
    layers = {0: LayerCall(ActSettings((1, 2), threshold=0.12, beta=0.3))}
    out, _ = act_attention_forward(module, q, k, v, None, scaling=d**-0.5, act_prompt_lengths=[6, 9], act_layers=layers)
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
    enable_act(model, HEADS, threshold=0.05, check_model=False)
    x = ids(batch=1, n=12)
    prompt = 7
    with torch.no_grad():
        one_pass = model(x, act_prompt_lengths=[prompt]).logits[0]
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
    enable_act(model, HEADS, threshold=0.05, check_model=False)
    x = ids(batch=1, n=12)
    other = x.clone()
    other[0, 8:] = torch.randint(3, 100, (4,), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        a = model(x, act_prompt_lengths=[8]).logits[0, 7]
        b = model(other, act_prompt_lengths=[8]).logits[0, 7]
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


@pytest.mark.parametrize("arch", SUPPORTED)
def test_prompt_lengths_travel_as_a_forward_argument(arch: str, monkeypatch):
    """``act_prompt_lengths=`` reaches the attention function in every calibrated layer of every
    supported architecture (GPT-2 included) and means what it says: a row's positions before its
    prompt length decide its sink set, so they score as the prompt alone does."""
    model = tiny_model(arch)
    enable_act(model, HEADS, threshold=0.05, check_model=False)
    arrived = []
    lengths = attention.prompt_lengths
    monkeypatch.setattr(attention, "prompt_lengths", lambda given, device: arrived.append(given) or lengths(given, device))
    x = ids(batch=2, n=12)
    x[1, 8:] = 0  # right padding, no mask: as lm-eval feeds a loglikelihood batch
    with torch.no_grad():
        passed = model(x, act_prompt_lengths=[12, 6]).logits
        assert arrived == [[12, 6]] * 2  # the two layers with selected heads
        whole = model(x).logits  # without lengths every row is prompt, padding included
        alone = model(x[1:, :6]).logits[0]  # row 1's prompt on its own
    torch.testing.assert_close(passed[1, :6], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(passed[0], whole[0], atol=0, rtol=0)
    assert (passed[1] - whole[1]).abs().max() > 1e-3  # the lengths changed row 1's sink set


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_layer_calls_travel_as_a_forward_argument_and_override_the_modules(arch: str):
    """``act_layers=`` calibrates the layers it names, as enable_act's settings do, and only them."""
    model = tiny_model(arch)
    x = ids()
    settings = {0: ActSettings((1,), 0.05, 0.4), 2: ActSettings((0, 3), 0.05, 0.4)}
    with torch.no_grad():
        enable_act(model, [[0, 1], [2, 0], [2, 3]], threshold=0.05, beta=0.4, check_model=False)
        from_modules = model(x).logits
        enable_act(model, None, check_model=False)
        passed = model(x, act_layers={layer: LayerCall(s) for layer, s in settings.items()}).logits
        plain = model(x).logits
        enable_act(model, [[1, 2]], threshold=0.05, check_model=False)
        overridden = model(x, act_layers={layer: LayerCall(s) for layer, s in settings.items()}).logits
        none = model(x, act_layers={}).logits
    torch.testing.assert_close(passed, from_modules, atol=0, rtol=0)
    torch.testing.assert_close(overridden, from_modules, atol=0, rtol=0)  # the call's, not the module's
    torch.testing.assert_close(none, plain, atol=0, rtol=0)  # layers a call leaves out run plain
    assert (passed - plain).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
@pytest.mark.parametrize("rule", ["act", "first_token"])
def test_a_record_only_call_runs_plain_and_finds_the_sink_set_of_the_layer_calibrated_alone(arch: str, rule: str):
    """The exact engine's recording pass: the plain model bit for bit (softcapped Gemma-2 included),
    and in every layer the sink set that calibrating that layer alone finds (its input is the plain model's)."""
    model = tiny_model(arch)
    enable_act(model, None, check_model=False)
    x = ids()
    settings = ActSettings((0, 2, 3), 0.05, 0.4, rule=rule, factor=2.0)
    recording = {layer: LayerCall(settings, record_only=True) for layer in range(3)}
    with torch.no_grad():
        plain = model(x).logits
        recorded = model(x, act_layers=recording).logits
        for layer in range(3):
            alone = LayerCall(settings)
            model(x, act_layers={layer: alone})
            assert torch.equal(recording[layer].sequence.sinks, alone.sequence.sinks), layer
    assert torch.equal(recorded, plain)
    assert all(bool(call.sequence.sinks.any()) for call in recording.values())  # the comparison is not between empty sets


def test_concurrent_calls_with_different_row_heads_do_not_leak_into_each_other():
    """Nothing about a call is stored on the modules: two threads calibrating other heads per row
    at the same time each get what they get alone."""
    import threading

    model = tiny_model("llama")
    enable_act(model, None, check_model=False)
    x = ids(batch=3, n=14)
    settings = ActSettings((0, 1, 3), 0.05, 0.4)
    assignments = [torch.eye(3, dtype=torch.bool), torch.tensor([[False, True, True], [True, False, False], [False, False, True]])]

    def run(row_heads: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x, act_layers={1: LayerCall(settings, row_heads=row_heads)}).logits

    alone = [run(r) for r in assignments]
    assert (alone[0] - alone[1]).abs().max() > 1e-3  # the assignments differ in effect
    got: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def worker(i: int) -> None:
        start.wait()
        got[i].extend(run(assignments[i]) for _ in range(8))

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        for out in got[i]:
            torch.testing.assert_close(out, alone[i], atol=0, rtol=0)
    assert all(not hasattr(m, "act") for m in attention_modules(model))


def test_a_call_that_brings_its_own_calibration_leaves_a_sequence_being_decoded_alone():
    """The per-sequence state enable_act keeps for decoding is the module's; a call passing
    ``act_layers`` (a head search pass between two decoding steps) neither reads nor changes it."""
    model = tiny_model("qwen2")
    enable_act(model, HEADS, threshold=0.05, check_model=False)
    x = ids(batch=1, n=12)
    other = ids(batch=2, n=9, seed=5)
    with torch.no_grad():
        one_pass = model(x, act_prompt_lengths=[7]).logits[0]
        out = model(x[:, :7], use_cache=True)
        steps, cache = [out.logits[0]], out.past_key_values
        for t in range(7, x.shape[1]):
            model(other, act_layers={2: LayerCall(ActSettings((0, 1, 2, 3), 0.05, 0.4))})  # another batch size, other sinks
            out = model(x[:, t : t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits[0])
            cache = out.past_key_values
    torch.testing.assert_close(torch.cat(steps), one_pass, atol=1e-5, rtol=1e-4)
