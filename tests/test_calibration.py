"""The calibration rule of act-spec.md, checked on hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from act_eval.core.calibration import (
    calibrate,
    first_token,
    first_token_output,
    redistribute,
    scale_first_token,
    sink_scores,
    sink_set,
)


def causal(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()


# A 4-token causal attention pattern whose column means are easy to work by hand.
P = torch.tensor(
    [
        [1.00, 0.00, 0.00, 0.00],
        [0.50, 0.50, 0.00, 0.00],
        [0.20, 0.60, 0.20, 0.00],
        [0.10, 0.50, 0.30, 0.10],
    ]
)


def test_sink_scores_are_column_means_over_rows_that_see_the_key():
    # key 0: (1 + .5 + .2 + .1)/4 = .45; key 1: (.5 + .6 + .5)/3 = .5333; key 2: (.2 + .3)/2 = .25; key 3: .1/1
    scores = sink_scores(P, causal(4))
    torch.testing.assert_close(scores, torch.tensor([0.45, 1.6 / 3, 0.25, 0.1]))


def test_first_token_is_never_a_sink_and_threshold_is_strict():
    # threshold .25: key 0 (.45) excluded as the first token, key 1 (.533) in, key 2 (.25) not (strict >)
    assert sink_set(P, causal(4), threshold=0.25).tolist() == [False, True, False, False]
    assert sink_set(P, causal(4), threshold=0.09).tolist() == [False, True, True, True]


def test_reference_switch_drops_first_detected_sink_instead():
    # threshold .5: only key 1 is detected; the spec keeps it, the reference code drops it
    assert sink_set(P, causal(4), threshold=0.5).tolist() == [False, True, False, False]
    assert sink_set(P, causal(4), threshold=0.5, reference_drop_first=True).tolist() == [False] * 4
    # when the first token is detected both rules agree
    assert sink_set(P, causal(4), 0.2, reference_drop_first=True).tolist() == sink_set(P, causal(4), 0.2).tolist()


def test_redistribution_by_hand():
    sinks = torch.tensor([False, True, False, False])
    out = redistribute(P, sinks, beta=0.4)
    # row 3: m = .5; sink -> .2; others scaled by 1 + .6 * .5 / .5 = 1.6
    torch.testing.assert_close(out[3], torch.tensor([0.16, 0.20, 0.48, 0.16]))
    # row 2: m = .6; others scaled by 1 + .6 * .6 / .4 = 1.9
    torch.testing.assert_close(out[2], torch.tensor([0.38, 0.24, 0.38, 0.0]))
    # row 0 cannot see the sink: unchanged
    torch.testing.assert_close(out[0], P[0])
    torch.testing.assert_close(out.sum(-1), torch.ones(4))


def test_row_with_all_mass_on_sinks_is_left_unchanged_and_nothing_is_nan():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = redistribute(probs, torch.tensor([False, True]), beta=0.4)
    assert torch.equal(out, probs)
    assert not torch.isnan(out).any()


def test_beta_one_is_identity_and_beta_zero_removes_sinks():
    sinks = torch.tensor([False, True, False, False])
    torch.testing.assert_close(redistribute(P, sinks, 1.0), P)
    zeroed = redistribute(P, sinks, 0.0)
    assert torch.all(zeroed[1:, 1] == 0)
    torch.testing.assert_close(zeroed.sum(-1), torch.ones(4))


def test_continuation_rows_and_pad_keys_do_not_enter_the_statistic():
    # rows 2-3 are continuation: only rows 0-1 are prompt
    prompt = torch.tensor([True, True, False, False])[:, None] & causal(4)
    scores = sink_scores(P, prompt)
    torch.testing.assert_close(scores, torch.tensor([0.75, 0.5, 0.0, 0.0]))
    # keys no prompt row can see (continuation, padding) are never sinks, however much attention they get
    assert sink_set(P, prompt, threshold=0.01).tolist() == [False, True, False, False]


def test_left_padding_moves_the_first_token():
    # two pad keys in front: the first real token is key 2 and is never a sink
    n = 5
    allowed = causal(n) & torch.tensor([False, False, True, True, True])[None, :]
    logits = torch.randn(n, n)
    probs = torch.softmax(logits.masked_fill(~allowed, -1e9), -1) * allowed
    probs[:2] = 0
    s = sink_set(probs, allowed, threshold=0.0001)
    assert s.tolist() == [False, False, False, True, True]


def _naive(probs: torch.Tensor, prompt_len: int, threshold: float, beta: float) -> torch.Tensor:
    """The spec, literally, with Python loops (one head, no padding)."""
    n = probs.shape[0]
    sinks = []
    for j in range(n):
        rows = [i for i in range(min(prompt_len, n)) if i >= j]
        if rows and sum(float(probs[i, j]) for i in rows) / len(rows) > threshold and j != 0:
            sinks.append(j)
    out = probs.clone()
    for i in range(n):
        m = sum(float(probs[i, j]) for j in sinks)
        if 1 - m == 0:
            continue
        for j in range(i + 1):
            out[i, j] = beta * probs[i, j] if j in sinks else probs[i, j] * (1 + (1 - beta) * m / (1 - m))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_literal_implementation_of_the_spec(seed: int):
    g = torch.Generator().manual_seed(seed)
    n, prompt_len = 12, 8
    logits = torch.randn(3, n, n, generator=g, dtype=torch.float64) * 3
    mask = causal(n)
    probs = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1)
    visible = mask & (torch.arange(n) < prompt_len)[:, None]
    out = calibrate(probs, visible, threshold=0.08, beta=0.4)
    for h in range(3):
        torch.testing.assert_close(out[h], _naive(probs[h], prompt_len, 0.08, 0.4), atol=1e-12, rtol=1e-10)


def test_row_that_sees_only_sinks_is_unchanged_despite_rounding():
    # float32 thirds do not sum to exactly 1: 1 - m by subtraction would be a tiny positive number
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1 / 3, 1 / 3, 1 / 3]], dtype=torch.float32)
    out = redistribute(probs, torch.tensor([False, True, True, True]), beta=0.4)
    assert torch.equal(out, probs)


# ---------------------------------------------------------------------------------------------
# first-token scaling: P'_i0 = g P_i0 / (g P_i0 + 1 - P_i0), P'_ij = P_ij / (g P_i0 + 1 - P_i0)

FIRST = torch.tensor([True, False, False, False])


def test_first_token_scaling_by_hand():
    out = scale_first_token(P, FIRST, 2.0)
    # row 3: P_i0 = .1, denominator 2 * .1 + .9 = 1.1
    torch.testing.assert_close(out[3], torch.tensor([0.2, 0.5, 0.3, 0.1]) / 1.1)
    # row 1: .5 -> 1 / 1.5, .5 -> .5 / 1.5
    torch.testing.assert_close(out[1], torch.tensor([2 / 3, 1 / 3, 0.0, 0.0]))
    # row 0 sees the first token alone: 2 * 1 / 2, unchanged
    torch.testing.assert_close(out[0], P[0])
    halved = scale_first_token(P, FIRST, 0.5)  # row 2: .2 -> .1 / .9, the rest / .9
    torch.testing.assert_close(halved[2], torch.tensor([0.1, 0.6, 0.2, 0.0]) / 0.9)
    torch.testing.assert_close(out.sum(-1), torch.ones(4))
    assert torch.equal(scale_first_token(P, FIRST, 1.0), P)  # the identity, exactly


def test_first_token_scaling_is_log_factor_added_to_the_first_logit():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 7, generator=g, dtype=torch.float64) * 3
    mask = causal(7)
    probs = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1)
    for factor in (0.3, 1.25, 4.0):
        biased = logits.clone()
        biased[..., 0] += torch.log(torch.tensor(factor, dtype=torch.float64))
        want = torch.softmax(biased.masked_fill(~mask, float("-inf")), -1)
        torch.testing.assert_close(scale_first_token(probs, first_token(mask.any(-2)), factor), want)


def test_the_first_token_is_the_first_key_a_prompt_row_sees():
    assert first_token(torch.tensor([False, False, True, True])).tolist() == [False, False, True, False]  # two pad keys
    assert first_token(torch.tensor([[True, True], [False, False]])).tolist() == [[True, False], [False, False]]


def test_first_token_output_is_the_scaled_probabilities_times_values():
    g = torch.Generator().manual_seed(1)
    n, d = 6, 4
    allowed = causal(n)
    probs = torch.softmax((torch.randn(3, n, n, generator=g) * 3).masked_fill(~allowed, float("-inf")), -1)
    v = torch.randn(3, n, d, generator=g)
    first = torch.zeros(3, n, dtype=torch.bool)
    first[:2, 0] = first[2, 2] = True  # head 2's sequence is left-padded by two keys
    on, off = probs * first[:, None, :], probs * ~first[:, None, :]
    parts = (off @ v, off.sum(-1), on @ v, on.sum(-1))
    for factor in (0.5, 2.0):
        torch.testing.assert_close(first_token_output(*parts, factor=factor), scale_first_token(probs, first, factor) @ v)
    assert torch.equal(first_token_output(*parts, factor=1.0), parts[0] + parts[2])
