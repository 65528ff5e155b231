"""Calibration on and off for a loaded transformers model: :func:`enable_act` and :func:`disable_act`.

``enable_act`` fits a head map to the model, leaves each selected layer's settings and a
sequence state on its attention module (for the calls lm-eval and ``generate`` make, which
bring none), switches the model to ACT's attention function (:mod:`.switch`) and proves with a
two-token probe that every layer runs it; ``disable_act`` restores the model exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from act_eval.core.attention import (
    ACT_ATTENTION,
    KERNELS,
    LAYERS,
    ActSettings,
    LayerCall,
    SequenceSinks,
    act_attention_forward,
    check_kernel,
)
from act_eval.core.head_map import HeadMap, check_beta, check_factor, check_overrides, check_threshold, resolve_head_map
from act_eval.core.switch import (
    attention_modules,
    layer_modules,
    model_shape,
    refuse_silent_layers,
    restore_attention,
    switch_attention,
)


@dataclass
class ActController:
    """Handle returned by :func:`enable_act`: the map in force and what to restore."""

    model: PreTrainedModel
    head_map: HeadMap
    threshold: float
    beta: float
    previous_attention: str
    kernel: str = KERNELS[0]
    factor: float | None = None  # first_token maps: the factor in force

    @property
    def rule(self) -> str:
        return self.head_map.rule


def enable_act(
    model: PreTrainedModel,
    head_map: HeadMap | str | dict | list | None = None,
    *,
    threshold: float | None = None,
    beta: float | None = None,
    reference_drop_first: bool = False,
    model_id: str | None = None,
    check_model: bool = True,
    kernel: str = KERNELS[0],
    factor: float | None = None,
) -> ActController:
    """Turn calibration on for a loaded transformers model; :func:`disable_act` turns it off.

    ``head_map`` is a :class:`HeadMap`, a published map's name or a file path, or inline heads
    (``{"layer": [heads]}`` or ``[[layer, head], ...]``). Its rule decides what the heads get:
    ACT (``threshold``/``beta`` override the map's) or first-token scaling (``factor`` overrides
    the map's; a setting of the other rule is refused). The map must fit the model (architecture,
    layer and head counts; the model id too unless ``check_model=False``). ``kernel`` is
    ``"blockwise"`` (block by block from the changed columns, O(N) memory) or ``"eager"`` (the
    float32 reference); same numbers.
    """
    check_kernel(kernel)
    disable_act(model)
    shape = model_shape(model)
    model_id = model_id or getattr(model.config, "_name_or_path", "") or ""
    head_map = resolve_head_map(head_map, model_id=model_id, check_model=check_model, **shape)
    check_overrides(head_map, threshold, beta, factor, reference_drop_first)
    threshold = head_map.threshold if threshold is None else check_threshold(threshold)
    beta = head_map.beta if beta is None else check_beta(beta)
    factor = head_map.factor if factor is None else check_factor(factor)

    modules = layer_modules(model, "calibrate")
    previous = switch_attention(model, ACT_ATTENTION, act_attention_forward, "calibrate")
    for layer, module in enumerate(modules):
        heads = sorted(head_map.heads.get(layer, ()))
        if heads:
            module.act = ActSettings(tuple(heads), threshold, beta, reference_drop_first, kernel, head_map.rule, factor or 1.0)
            module.act_sequence = SequenceSinks()  # for calls that bring none (lm-eval's, generate's)
    controller = ActController(model, head_map, threshold, beta, previous, kernel, factor)
    model._act_controller = controller
    _probe(model, shape["num_layers"], shape["num_heads"])
    return controller


def _probe(model: PreTrainedModel, num_layers: int, num_heads: int) -> None:
    """Run two tokens through the model and check the attention function really ran in every layer.

    Some architectures (Bloom, MPT) accept a custom attention name and silently ignore it. Every
    head of every layer is "calibrated" at beta = 1 (which changes nothing) through the call's own
    :data:`LAYERS` argument, so a layer ran the function, with the call's arguments, exactly when
    its sink set was found; nothing is written onto the modules.
    """
    probe = ActSettings(tuple(range(num_heads)), 0.5, 1.0)
    calls = {layer: LayerCall(probe) for layer in range(num_layers)}
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[1, 2]], device=device), use_cache=False, **{LAYERS: calls})
        silent = [layer for layer, call in calls.items() if call.sequence.sinks is None]
    except KeyError as err:
        silent = list(range(num_layers))
        saved_error: Exception | None = err
    else:
        saved_error = None
    if silent:
        disable_act(model)
        refuse_silent_layers(model, ACT_ATTENTION, silent, saved_error)


def disable_act(model: PreTrainedModel) -> None:
    """Remove calibration and restore the attention implementation the model had before."""
    controller: ActController | None = getattr(model, "_act_controller", None)
    if controller is None:
        return
    for module in attention_modules(model):
        if hasattr(module, "act"):
            del module.act, module.act_sequence
    restore_attention(model, controller.previous_attention)
    del model._act_controller
