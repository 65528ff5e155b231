"""The screen's first-order estimate: the derivative of the exact effect, batched, from the one calibration rule."""

from __future__ import annotations

import pytest
import torch

from act_eval.core.enable import enable_act
from act_eval.search.engine import Settings, exact_scores
from act_eval.search.screen import screen_examples
from test_search import RULE_SETTINGS, SETTINGS, examples
from tiny_models import tiny_model


def _at(layers: int, heads: int, layer: int, head: int, value: float) -> torch.Tensor:
    at = torch.zeros(layers, heads)
    at[layer, head] = value
    return at


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gpt2"])
@pytest.mark.parametrize("rule", list(RULE_SETTINGS))
def test_estimate_is_the_derivative_of_the_exact_effect(arch: str, rule: str):
    """alpha = 1 for one head is that head calibrated exactly; the gradient at 0 is the finite difference."""
    settings = RULE_SETTINGS[rule]
    model = tiny_model(arch)
    enable_act(model, None, check_model=False)
    exs = examples(4, seed=1)
    base = screen_examples(model, exs, settings, batch_size=3)  # batches of 3 and 1: padding must not matter
    exact = exact_scores(model, exs, settings)
    assert [b.logp for b in base] == pytest.approx([e.logp for e in exact], abs=1e-5)
    assert [b.correct for b in base] == [e.correct for e in exact]
    eps, moved = 1e-2, 0  # float32 attention: a smaller step drowns in rounding, a larger one in curvature
    for layer in range(3):
        for head in range(4):
            one = screen_examples(model, exs, settings, 4, _at(3, 4, layer, head, 1.0))
            up = screen_examples(model, exs, settings, 4, _at(3, 4, layer, head, eps))
            down = screen_examples(model, exs, settings, 4, _at(3, 4, layer, head, -eps))
            for k in range(len(exs)):
                assert one[k].logp == pytest.approx(exact[k].heads[(layer, head)][0], abs=1e-5)
                fd = (up[k].logp - down[k].logp) / (2 * eps)
                assert float(base[k].grad[layer, head]) == pytest.approx(fd, abs=2e-4 + 2e-3 * abs(fd)), (layer, head, k)
                moved += abs(fd) > 1e-3
    assert moved > 10  # the derivatives are not all zero


def test_batching_does_not_change_the_estimate():
    model = tiny_model("llama")
    enable_act(model, None, check_model=False)
    exs = examples(5, seed=2)
    one = screen_examples(model, exs, SETTINGS, batch_size=1)
    many = screen_examples(model, exs, SETTINGS, batch_size=5)
    for a, b in zip(one, many):
        assert torch.allclose(a.grad, b.grad, atol=1e-5) and a.logp == pytest.approx(b.logp, abs=1e-5)
    assert all(p.requires_grad for p in model.parameters())  # the screen gives the parameters back as it found them


@pytest.mark.slow
def test_estimate_on_real_smollm2(smollm2_path):
    """A few heads of the real model: derivative equals finite difference; alpha = 1 equals the exact engine."""
    from lm_eval.models.huggingface import HFLM

    from act_eval.search.examples import held_out_examples

    lm = HFLM(pretrained=smollm2_path, device="cpu", batch_size=1, dtype="float32")
    model = lm.model.eval()
    enable_act(model, None, check_model=False)
    exs, _ = held_out_examples(lm, ["act_agnews"], 1)
    settings = Settings()
    base = screen_examples(model, exs, settings)[0]
    heads = sorted(((l, h) for l in range(30) for h in range(9)), key=lambda lh: -abs(float(base.grad[lh])))[:3]
    exact = exact_scores(model, exs, settings, {l: [h] for l, h in heads})[0]
    eps = 1e-2
    for layer, head in heads:
        up = screen_examples(model, exs, settings, 1, _at(30, 9, layer, head, eps))[0]
        down = screen_examples(model, exs, settings, 1, _at(30, 9, layer, head, -eps))[0]
        one = screen_examples(model, exs, settings, 1, _at(30, 9, layer, head, 1.0))[0]
        fd = (up.logp - down.logp) / (2 * eps)
        assert abs(fd) > 1e-3
        assert float(base.grad[layer, head]) == pytest.approx(fd, rel=2e-2, abs=2e-4), (layer, head)
        assert one.logp == pytest.approx(exact.heads[(layer, head)][0], abs=1e-4)
