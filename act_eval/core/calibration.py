"""The calibration rules as pure functions on tensors: ACT (``../shared/notes/act-spec.md``) and
first-token scaling (ZeroTuning's idea, Han et al., 2025).

Everything here takes post-softmax attention probabilities of the selected heads and says
nothing about models, modules or caches, so tests can check the rules on hand-made tensors.
This module is the one place that computes the sink set and the first token; the attention
function, the head search and the sink analysis all call it.

A rule changes a head's probabilities on a set of key columns and renormalises the rest: ACT
scales its sink set ``S`` by ``beta`` and gives the freed mass to the other keys
(:func:`redistribute`); first-token scaling multiplies the first real token's column by
``factor`` and renormalises the row (:func:`scale_first_token`), which is adding ``log(factor)``
to that column's logits.

Shapes: ``probs`` is ``[..., Q, K]`` (queries by keys); ``visible`` is a boolean tensor
broadcastable to it that is True where query row ``i`` is a *prompt* row and can see key
``j`` (causal, sliding window and padding masks already applied). Arithmetic is float32 (float64 inputs stay float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

from act_eval.core.rules import DEFAULT_BETA, DEFAULT_THRESHOLD


def _at_least_fp32(probs: Tensor) -> Tensor:
    return probs.to(torch.promote_types(probs.dtype, torch.float32))


def column_sums(probs: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
    """Per key, the attention prompt rows give it and how many prompt rows see it.

    Both ``[..., K]`` and additive over rows, so blocks of query rows can be summed one at a time
    (:mod:`act_eval.core.blockwise`) and finished by :func:`scores_from_sums`.
    """
    probs = _at_least_fp32(probs)
    weight = visible.to(probs.dtype)
    return (probs * weight).sum(-2), weight.sum(-2)


def scores_from_sums(total: Tensor, count: Tensor) -> Tensor:
    """Column means from :func:`column_sums`; a key no prompt row sees scores 0."""
    return torch.where(count > 0, total / count.clamp_min(1.0), torch.zeros_like(total))


def sink_scores(probs: Tensor, visible: Tensor) -> Tensor:
    """Per key, the mean attention it receives from the prompt rows that can see it.

    Returns ``[..., K]``; a key no prompt row can see (padding, continuation tokens) scores 0,
    so it can never become a sink.
    """
    return scores_from_sums(*column_sums(probs, visible))


def _first_true(flags: Tensor) -> Tensor:
    """One-hot of the first True along the last dimension (all False where there is none)."""
    return flags & (flags.to(torch.int32).cumsum(-1) == 1)


def first_token(seen: Tensor) -> Tensor:
    """Boolean ``[..., K]``: the sequence's first real token, from which keys any prompt row sees.

    ``seen`` is ``[..., K]`` (True where some prompt row can see the key): the first real token is
    the first such key, position 0 after any left padding. ACT never makes it a sink; first-token
    scaling changes it alone.
    """
    return _first_true(seen)


def sink_set(
    probs: Tensor,
    visible: Tensor,
    threshold: float = DEFAULT_THRESHOLD,
    reference_drop_first: bool = False,
) -> Tensor:
    """Boolean ``[..., K]``: the keys whose calibration this head applies.

    A key is a sink when its score exceeds ``threshold``. The first real token (the first key
    any prompt row can see, i.e. position 0 after left padding) is never a sink. With
    ``reference_drop_first`` the authors' code is reproduced instead: it drops the first
    *detected* sink, which differs when the first token scores below the threshold.
    """
    total, count = column_sums(probs, visible)
    return sinks_from_sums(total, count, threshold, reference_drop_first)


def sinks_from_sums(
    total: Tensor, count: Tensor, threshold: float = DEFAULT_THRESHOLD, reference_drop_first: bool = False
) -> Tensor:
    """:func:`sink_set` from :func:`column_sums` (summed over every prompt row): the thresholding
    and the first-token rule, for the whole matrix and for blockwise sums alike."""
    detected = scores_from_sums(total, count) > threshold
    if reference_drop_first:
        keep_out = _first_true(detected)
    else:
        keep_out = first_token((count > 0).expand(detected.shape))
    return detected & ~keep_out


def redistribute(probs: Tensor, sinks: Tensor, beta: float = DEFAULT_BETA) -> Tensor:
    """Scale sink columns by ``beta`` and give the freed mass to the other keys in proportion.

    ``sinks`` is ``[..., K]`` and applies to every row (prompt and continuation alike). Rows keep
    their sum; a row whose whole mass is on sinks (``1 - m == 0``) is left as it was. ``1 - m``
    is computed as the mass on the other keys rather than by subtraction, so a row that sees
    only sinks is exactly such a row even when rounding puts ``m`` a hair below 1.
    """
    probs = _at_least_fp32(probs)
    is_sink = sinks.unsqueeze(-2)
    on_sinks = torch.where(is_sink, probs, 0.0)
    mass = on_sinks.sum(-1, keepdim=True)
    free = (probs - on_sinks).sum(-1, keepdim=True)
    ok = free > 0
    boost = torch.where(ok, 1.0 + (1.0 - beta) * mass / torch.where(ok, free, 1.0), 1.0)
    sink_scale = torch.where(ok, torch.full_like(mass, beta), 1.0)
    return torch.where(is_sink, probs * sink_scale, probs * boost)


def calibrated_output(
    other_out: Tensor, other_mass: Tensor, sink_out: Tensor, sink_mass: Tensor, beta: float = DEFAULT_BETA
) -> Tensor:
    """:func:`redistribute`'s output ``P' @ V`` from a row's two parts, never the whole matrix.

    ``sink_mass`` is ``m_i = sum_{j in S} P_ij`` and ``sink_out`` is ``C_i = sum_{j in S} P_ij V_j``;
    ``other_mass`` and ``other_out`` are the same over the keys outside ``S`` (``[..., Q]`` and
    ``[..., Q, D]``). The output is ``b_i N_i + beta C_i`` with ``b_i = 1 + (1 - beta) m_i / (1 - m_i)``,
    ``1 - m_i`` being ``other_mass`` as :func:`redistribute` computes it (a sum, not a
    subtraction); a row with ``other_mass == 0`` is left as it was. ``beta = 1`` gives the plain output.
    """
    ok = other_mass > 0
    boost = torch.where(ok, 1.0 + (1.0 - beta) * sink_mass / torch.where(ok, other_mass, 1.0), 1.0)
    sink_scale = torch.where(ok, beta, 1.0).to(boost.dtype)
    return other_out * boost.unsqueeze(-1) + sink_out * sink_scale.unsqueeze(-1)


def scale_first_token(probs: Tensor, first: Tensor, factor: float) -> Tensor:
    """Multiply the first token's column by ``factor`` and renormalise each row (the eager reference).

    ``first`` is ``[..., K]`` (:func:`first_token`) and applies to every row. With ``m_i = P_i0``:
    ``P'_i0 = factor m_i / (1 + (factor - 1) m_i)`` and ``P'_ij = P_ij / (1 + (factor - 1) m_i)``,
    i.e. the softmax with ``log(factor)`` added to column 0's logits. ``factor = 1`` divides by
    exactly 1; a row that cannot see the first token (``m_i = 0``) is unchanged.
    """
    probs = _at_least_fp32(probs)
    is_first = first.unsqueeze(-2)
    mass = torch.where(is_first, probs, 0.0).sum(-1, keepdim=True)
    return torch.where(is_first, probs * factor, probs) / (1.0 + (factor - 1.0) * mass)


def first_token_output(other_out: Tensor, other_mass: Tensor, first_out: Tensor, first_mass: Tensor, factor: float) -> Tensor:
    """:func:`scale_first_token`'s output ``P' @ V`` from a row's two parts, never the whole matrix.

    The parts are :func:`calibrated_output`'s, with the first token as the only "sink":
    ``(N_i + factor C_i) / (1 + (factor - 1) m_i)``. ``other_mass`` is not needed (the row's
    mass is 1 by the softmax); it is taken so that both rules' outputs have one signature.
    """
    scale = 1.0 / (1.0 + (factor - 1.0) * first_mass)
    return (other_out + first_out * factor) * scale.unsqueeze(-1)


def calibrate(
    probs: Tensor,
    visible: Tensor,
    threshold: float = DEFAULT_THRESHOLD,
    beta: float = DEFAULT_BETA,
    reference_drop_first: bool = False,
) -> Tensor:
    """The whole rule for one forward pass whose prompt rows are marked in ``visible``."""
    return redistribute(probs, sink_set(probs, visible, threshold, reference_drop_first), beta)
