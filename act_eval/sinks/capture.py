"""Record every head's attention probabilities and sink set in one forward pass, before or after ACT.

The sink analysis needs what the heads really attend to, which sdpa never returns. A recording
attention function, registered with transformers' ``AttentionInterface`` like ACT's own,
computes every head eagerly (:func:`act_eval.core.attention.eager_attention`), finds the sink sets
with :func:`act_eval.core.calibration.sink_set` (the one place that computes them), applies the
map's rule (:meth:`act_eval.core.attention.ActSettings.reweight`) to the heads it calibrates in that layer, stores the
result in the layer's recorder, and returns the attention output, so later layers see calibrated
inputs when calibration is on. Everything about the capture arrives as the forward call's
``act_capture`` argument, one recorder per layer (the settings :func:`act_eval.core.enable.enable_act`
left on the module are copied into it), as the head search passes its calibration. Every
unmasked row is a prompt row: the whole input is the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from act_eval.core.attention import ActSettings, allowed_mask, eager_attention, mask_bias
from act_eval.core.calibration import sink_scores, sink_set
from act_eval.core.rules import DEFAULT_THRESHOLD
from act_eval.core.switch import UnsupportedArchitectureError, layer_modules, refuse_silent_layers, switched

CAPTURE_ATTENTION = "act_capture"
RECORDERS = "act_capture"  # the forward call's keyword argument: {layer index: recorder}


@dataclass
class LayerAttention:
    """What one layer's heads did in one forward pass (batch first, every query head)."""

    layer: int
    scores: Tensor  # [B, H, K] float32: each key's mean attention from the rows that see it
    sinks: Tensor  # [B, H, K] bool: the rule's sink set (the first token never belongs to it)
    calibrated_heads: tuple[int, ...]  # heads ACT recalibrated in this pass
    probs: Tensor | None = None  # [B, H, Q, K] float32 softmax, before calibration (if kept)
    calibrated: Tensor | None = None  # [B, H, Q, K] after calibration (if kept and any head calibrated)

    @property
    def after(self) -> Tensor | None:
        """The probabilities the heads used: calibrated where ACT changed them, else the softmax."""
        return self.calibrated if self.calibrated is not None else self.probs

    def sink_positions(self, row: int = 0) -> list[list[int]]:
        """Per head, the positions in its sink set (batch row ``row``)."""
        return [torch.nonzero(head).flatten().tolist() for head in self.sinks[row]]

    def top_columns(self, row: int = 0) -> list[int]:
        """Per head, the position with the highest column score: where the head's main sink is."""
        return self.scores[row].argmax(-1).tolist()


@dataclass
class Capture:
    """One recorded forward pass: a record per layer and the prediction it led to."""

    layers: list[LayerAttention]
    next_token_logits: Tensor  # [B, V] float32 at the last position


@dataclass
class _Recorder:
    """Per-module settings of one capture and the record it leaves."""

    threshold: float
    reference_drop_first: bool
    act: ActSettings | None  # the layer's ACT calibration to apply (None: the plain model)
    keep_probs: bool
    record: LayerAttention | None = field(default=None, repr=False)


def capture_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Eager attention for every head, recorded in this layer's recorder; ACT's heads calibrated if asked."""
    recorder: _Recorder = kwargs[RECORDERS][module.layer_idx]
    if kwargs.get("s_aux") is not None or kwargs.get("position_bias") is not None:
        raise UnsupportedArchitectureError("attention capture does not support learned sink logits or position biases")
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    batch, num_heads, q_len, _ = query.shape
    kv_len = key.shape[2]
    allowed = allowed_mask(attention_mask, q_len, kv_len, batch, query.device)
    kv_heads = torch.div(torch.arange(num_heads, device=query.device), num_heads // key.shape[1], rounding_mode="floor")
    probs = eager_attention(query, key[:, kv_heads], allowed, scaling, kwargs.get("softcap"), mask_bias(attention_mask, kv_len))
    visible = allowed & allowed.any(-1, keepdim=True)  # every row that sees anything is a prompt row
    sinks = sink_set(probs, visible, recorder.threshold, recorder.reference_drop_first)
    act = recorder.act
    heads = act.heads if act is not None else ()
    used = probs
    if heads:
        index = act.index(query.device)
        used = probs.clone()
        # ACT calibrates the sinks shown (this capture's threshold); first-token scaling, the first token
        keys = act.changed_keys(probs[:, index], visible) if act.first_token else sinks[:, index]
        used[:, index] = act.reweight(probs[:, index], keys)
    recorder.record = LayerAttention(
        layer=module.layer_idx,
        scores=sink_scores(probs, visible),
        sinks=sinks,
        calibrated_heads=heads,
        probs=probs if recorder.keep_probs else None,
        calibrated=used if recorder.keep_probs and heads else None,
    )
    out = torch.matmul(used, value[:, kv_heads].float()).transpose(1, 2)
    return out.to(query.dtype), None


def capture_attention(
    model: PreTrainedModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    calibrate: bool = True,
    threshold: float | None = None,
    layers: Sequence[int] | None = None,
    keep_probs: bool = True,
) -> Capture:
    """One forward pass over ``input_ids`` (the whole input is the prompt), recorded layer by layer.

    With ACT enabled on ``model`` (:func:`act_eval.core.enable.enable_act`), ``calibrate`` applies
    its heads and beta, as hf-act does; ``calibrate=False`` shows the plain model. ``threshold``
    defaults to ACT's when enabled, else the rule's default; the reference "drop the first
    detected sink" switch follows each layer's ACT state. Probabilities (``[B, H, N, N]`` per
    layer) are kept only for ``layers`` (default all) and only with ``keep_probs``; scores and
    sink sets are always kept.
    """
    controller = getattr(model, "_act_controller", None)
    if threshold is None:
        threshold = controller.threshold if controller is not None else DEFAULT_THRESHOLD
    modules = layer_modules(model, "record")
    wanted = set(range(len(modules)) if layers is None else layers)
    recorders = []
    for layer, module in enumerate(modules):
        act: ActSettings | None = getattr(module, "act", None)
        reference = act.reference_drop_first if act is not None else False
        recorders.append(_Recorder(threshold, reference, act if calibrate else None, keep_probs and layer in wanted))
    by_layer = {module.layer_idx: recorder for module, recorder in zip(modules, recorders)}
    with switched(model, CAPTURE_ATTENTION, capture_attention_forward, "record"), torch.no_grad():
        output = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1, **{RECORDERS: by_layer})
    refuse_silent_layers(model, CAPTURE_ATTENTION, [i for i, r in enumerate(recorders) if r.record is None])
    return Capture([r.record for r in recorders], output.logits[:, -1].float())
