"""Switching a model's attention to one of act-eval's functions, and back: the one place that does.

ACT's attention function (:mod:`.attention`) and the sink analysis's recording function
(:mod:`act_eval.sinks.capture`) both run through transformers' ``AttentionInterface``: each is
registered under its own name with sdpa's mask, the model is switched to that name, and the
implementation it had is restored afterwards. An architecture that cannot be switched, or whose
layers do not all reach the function, is refused here with the same words for every caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from transformers import AttentionInterface, PretrainedConfig, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

_NOT_ROUTED = "this architecture does not route attention through transformers' AttentionInterface"


class UnsupportedArchitectureError(ValueError):
    """The model does not route attention through transformers' AttentionInterface."""


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every decoder layer, in layer order."""
    found: dict[int, nn.Module] = {}
    for module in model.modules():
        if (
            type(module).__name__.endswith("Attention")
            and isinstance(getattr(module, "layer_idx", None), int)
            and not getattr(module, "is_cross_attention", False)
        ):
            found.setdefault(module.layer_idx, module)
    return [found[i] for i in sorted(found)]


def model_shape(model: PreTrainedModel) -> dict[str, Any]:
    """Architecture, layer and head counts as head maps record them."""
    return config_shape(model.config)


def config_shape(config: PretrainedConfig) -> dict[str, Any]:
    """:func:`model_shape` from a model's config alone (checks that need no weights)."""
    config = config.get_text_config()
    heads = config.num_attention_heads
    return {
        "architecture": config.model_type,
        "num_layers": config.num_hidden_layers,
        "num_heads": heads,
        "num_kv_heads": getattr(config, "num_key_value_heads", None) or heads,
    }


def layer_modules(model: PreTrainedModel, purpose: str) -> list[nn.Module]:
    """:func:`attention_modules`, refused unless there is one per decoder layer (``purpose``: what act-eval would do)."""
    modules = attention_modules(model)
    num_layers = model.config.get_text_config().num_hidden_layers
    if len(modules) != num_layers:
        raise UnsupportedArchitectureError(
            f"{model.config.model_type}: found {len(modules)} attention modules with a layer index in a "
            f"{num_layers}-layer model: {_NOT_ROUTED}, so act-eval cannot {purpose} it"
        )
    return modules


def switch_attention(model: PreTrainedModel, name: str, forward: Callable[..., Any], purpose: str) -> str:
    """Register ``forward`` (with sdpa's mask) under ``name``, switch ``model`` to it; returns the implementation it had."""
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, forward)
    if name not in AttentionMaskInterface._global_mapping:
        AttentionMaskInterface.register(name, sdpa_mask)
    previous = model.config._attn_implementation or "sdpa"
    try:
        model.set_attn_implementation(name)
    except (KeyError, ValueError) as err:
        raise UnsupportedArchitectureError(
            f"{model.config.model_type} does not support custom attention functions ({err}); act-eval cannot {purpose} it"
        ) from None
    return previous


def restore_attention(model: PreTrainedModel, previous: str) -> None:
    """Put back the implementation :func:`switch_attention` returned."""
    model.set_attn_implementation(previous)


@contextmanager
def switched(model: PreTrainedModel, name: str, forward: Callable[..., Any], purpose: str) -> Iterator[None]:
    """``model`` on ``forward`` for the block, its own attention implementation again afterwards."""
    previous = switch_attention(model, name, forward, purpose)
    try:
        yield
    finally:
        restore_attention(model, previous)


def refuse_silent_layers(model: PreTrainedModel, name: str, silent: list[int], cause: Exception | None = None) -> None:
    """Refuse a model some of whose layers never called the function ``name`` (Bloom and MPT accept a name and ignore it)."""
    if silent:
        raise UnsupportedArchitectureError(
            f"{model.config.model_type}: layers {silent} never called the '{name}' attention function "
            f"with the forward call's arguments; {_NOT_ROUTED}"
        ) from cause
