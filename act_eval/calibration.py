"""The ACT calibration rule (``../shared/notes/act-spec.md``) as pure functions on tensors.

Everything here takes post-softmax attention probabilities of the selected heads and says
nothing about models, modules or caches, so tests can check the rule on hand-made tensors.
This module is the one place that computes the sink set; the attention function, the head
search and the sink analysis all call it.

Shapes: ``probs`` is ``[..., Q, K]`` (queries by keys); ``visible`` is a boolean tensor
broadcastable to it that is True where query row ``i`` is a *prompt* row and can see key
``j`` (causal, sliding window and padding masks already applied). Arithmetic is float32 (float64 inputs stay float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_THRESHOLD = 0.1
DEFAULT_BETA = 0.4


def _at_least_fp32(probs: Tensor) -> Tensor:
    return probs.to(torch.promote_types(probs.dtype, torch.float32))


def sink_scores(probs: Tensor, visible: Tensor) -> Tensor:
    """Per key, the mean attention it receives from the prompt rows that can see it.

    Returns ``[..., K]``; a key no prompt row can see (padding, continuation tokens) scores 0,
    so it can never become a sink.
    """
    probs = _at_least_fp32(probs)
    weight = visible.to(probs.dtype)
    count = weight.sum(-2)
    total = (probs * weight).sum(-2)
    return torch.where(count > 0, total / count.clamp_min(1.0), torch.zeros_like(total))


def _first_true(flags: Tensor) -> Tensor:
    """One-hot of the first True along the last dimension (all False where there is none)."""
    return flags & (flags.to(torch.int32).cumsum(-1) == 1)


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
    scores = sink_scores(probs, visible)
    detected = scores > threshold
    if reference_drop_first:
        keep_out = _first_true(detected)
    else:
        seen = visible.expand(probs.shape).any(-2)
        keep_out = _first_true(seen)
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


def calibrate(
    probs: Tensor,
    visible: Tensor,
    threshold: float = DEFAULT_THRESHOLD,
    beta: float = DEFAULT_BETA,
    reference_drop_first: bool = False,
) -> Tensor:
    """The whole rule for one forward pass whose prompt rows are marked in ``visible``."""
    return redistribute(probs, sink_set(probs, visible, threshold, reference_drop_first), beta)
