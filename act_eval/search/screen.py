"""Screening: a first-order estimate of every head's effect from one forward and one backward pass.

Every head of every layer is mixed as ``o + alpha * (o_cal - o)`` (``LayerCall.mix``, one alpha per
example and head), with ``alpha = 0``: the forward pass is the plain model, and the gradient of
log p(gold | choices) with respect to each alpha is the effect's first-order (tangent) estimate
at no calibration. ``alpha = 1`` for one head is that head calibrated exactly. The sink set and the
redistribution come from :mod:`act_eval.core.calibration` through the ACT attention function, as in
every other path. The sink set itself is piecewise constant, so it carries no gradient.

An estimate ranks heads; it does not decide. The exact engine (:mod:`act_eval.search.engine`) confirms
the candidates it ranks first and a random control sample, and only confirmed heads enter a map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from act_eval.core.attention import ACT_ATTENTION, LayerCall
from act_eval.core.switch import model_shape
from act_eval.search.engine import RowBatch, Settings, batch_overhead, forward_arguments, gold_logprob, is_correct, length_batches
from act_eval.search.examples import Example


@dataclass
class Screened:
    """One example: baseline log p(gold | choices), correctness, and d log p / d alpha per (layer, head)."""

    logp: float
    correct: bool
    grad: Tensor  # [layers, heads], float64 on the CPU


def screen_examples(
    model: nn.Module, examples: list[Example], settings: Settings, batch_size: int = 8, at: Tensor | None = None,
) -> list[Screened]:
    """The first-order effect of calibrating each head alone, per example, in batches.

    ``at`` ([layers, heads]) moves the point where the gradient is taken (default 0, the plain
    model); tests use it for finite differences and for alpha = 1.
    """
    if model.config._attn_implementation != ACT_ATTENTION:
        raise ValueError("enable ACT on the model first: act_eval.core.enable.enable_act(model, None)")
    shape = model_shape(model)
    device = next(model.parameters()).device
    out: list[Screened | None] = [None] * len(examples)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:  # only the alphas need gradients
        p.requires_grad_(False)
    try:
        for batch in length_batches(examples, batch_size, batch_overhead(device)):
            for i, screened in zip(batch, _screen_batch(model, shape, device, [examples[i] for i in batch], settings, at)):
                out[i] = screened
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return out  # type: ignore[return-value]


def _screen_batch(model, shape: dict, device, batch: list[Example], settings: Settings, at: Tensor | None) -> list[Screened]:
    rows = RowBatch.of(batch, device)
    alpha = torch.zeros(shape["num_layers"], len(batch), shape["num_heads"], dtype=torch.float32, device=device)
    if at is not None:
        alpha += at.to(alpha)[:, None, :]
    alpha.requires_grad_(True)
    every = settings.for_heads(range(shape["num_heads"]))
    calls = {layer: LayerCall(every, mix=alpha[layer][rows.owner]) for layer in range(shape["num_layers"])}
    logits = model(rows.x, use_cache=False, logits_to_keep=rows.keep, **forward_arguments(rows.lengths, calls)).logits
    objectives, results = [], []
    for e, sums in zip(rows.examples, rows.choice_sums(torch.log_softmax(logits.float(), -1))):
        objectives.append(torch.log_softmax(sums, 0)[e.gold])
        logliks = sums.detach().double().tolist()
        results.append((gold_logprob(logliks, e.gold), is_correct(logliks, e.gold)))
    (grad,) = torch.autograd.grad(torch.stack(objectives).sum(), alpha)  # example k only sees alpha[:, k]
    grad = grad.detach().double().cpu()
    return [Screened(logp, correct, grad[:, k]) for k, (logp, correct) in enumerate(results)]
