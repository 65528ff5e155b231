"""ACT as a transformers attention function, registered under one name with its mask.

``act_attention_forward`` has the signature of every function in transformers'
``AttentionInterface``: tensors plus the attention module. What it needs beyond the tensors
lives on the module as ``module.act`` (an :class:`ActHeads`), on the module's device: the
selected heads, the rule's parameters, and the sink set found at prefill, which later calls
(decoding, or continuations scored with the KV cache) reuse. Layers without an ``act``
attribute go straight to the standard kernel (sdpa), so they pay nothing. Selected heads are
recomputed eagerly in float32 and calibrated with :mod:`act_eval.calibration`.

Which query rows are *prompt* rows (they alone decide the sink set) is told by a shared
:class:`PromptRows` object: the lm-eval wrapper sets each row's context length for a
loglikelihood batch; otherwise every unmasked row of the first call of a sequence is prompt.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, PretrainedConfig, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from act_eval.calibration import redistribute, sink_set
from act_eval.head_map import HeadMap, check_beta, check_threshold, resolve_head_map

ACT_ATTENTION = "act"


class UnsupportedArchitectureError(ValueError):
    """The model does not route attention through transformers' AttentionInterface."""


@dataclass
class PromptRows:
    """Per batch row, how many leading positions are prompt (context) for the next forward pass."""

    lengths: Tensor | None = None

    @contextlib.contextmanager
    def set(self, lengths: Tensor | list[int]) -> Iterator[None]:
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        try:
            yield
        finally:
            self.lengths = None


@dataclass
class ActHeads:
    """Calibration state of one attention module."""

    heads: list[int]
    threshold: float
    beta: float
    reference_drop_first: bool
    prompt_rows: PromptRows
    calls: int = 0  # forward calls seen (the probe checks the function really runs)
    # [B, h]: which selected heads each batch row calibrates (None: all). The head search uses it
    # to try one head per row, every head of a layer in one batch.
    row_heads: Tensor | None = None
    # [B, h] float: per row, how far each selected head moves towards its calibrated output
    # (o + mix * (o_cal - o); None: all the way). The head search's screen differentiates by it.
    mix: Tensor | None = None
    _index: dict[torch.device, Tensor] = field(default_factory=dict, repr=False)
    _sinks: Tensor | None = field(default=None, repr=False)  # [B, h, K at prefill]
    _seen: int = 0  # tokens of the current sequence seen so far

    def index(self, device: torch.device) -> Tensor:
        """The selected query-head indices on ``device`` (cached per device)."""
        if device not in self._index:
            self._index[device] = torch.tensor(self.heads, dtype=torch.long, device=device)
        return self._index[device]

    def resume(self, sinks: Tensor, seen: int) -> None:
        """Continue a sequence whose first ``seen`` tokens were run elsewhere, with their sink set."""
        self._sinks, self._seen = sinks, seen

    @property
    def last_sinks(self) -> Tensor | None:
        """The sink set ``[B, h, K]`` found at the start of the current sequence."""
        return self._sinks

    def sinks_for(self, probs: Tensor, allowed: Tensor, q_len: int, kv_len: int) -> Tensor:
        """The sink set for this call: found afresh when a sequence starts, else the stored one."""
        batch = probs.shape[0]
        if kv_len == q_len or self._sinks is None or self._sinks.shape[0] != batch:
            rows = torch.arange(kv_len - q_len, kv_len, device=probs.device)
            prompt = allowed.any(-1)  # [B, 1, Q]: rows that see anything (left-pad rows do not)
            if self.prompt_rows.lengths is not None:
                lengths = self.prompt_rows.lengths.to(probs.device)
                prompt = prompt & (rows[None, None, :] < lengths[:, None, None])
            visible = allowed & prompt.unsqueeze(-1)
            self._sinks = sink_set(probs, visible, self.threshold, self.reference_drop_first)
            self._seen = kv_len
            return self._sinks
        # later call of the same sequence: keys cover absolute positions [seen - kv_len, seen)
        self._seen += q_len
        stored = self._sinks
        start = self._seen - kv_len
        current = torch.zeros(stored.shape[:-1] + (kv_len,), dtype=torch.bool, device=stored.device)
        if start < stored.shape[-1]:
            part = stored[..., max(start, 0):]
            offset = max(-start, 0)
            current[..., offset:offset + part.shape[-1]] = part[..., : kv_len - offset]
        return current


def allowed_mask(attention_mask: Tensor | None, q_len: int, kv_len: int, batch: int, device) -> Tensor:
    """Boolean ``[B, 1, Q, K]``: which keys each query may see (mask None means plain causal)."""
    if attention_mask is None:
        rows = torch.arange(kv_len - q_len, kv_len, device=device)
        cols = torch.arange(kv_len, device=device)
        return (cols[None, :] <= rows[:, None]).expand(batch, 1, q_len, kv_len)
    mask = attention_mask[..., :kv_len]
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


def eager_attention(
    query: Tensor,
    key: Tensor,
    allowed: Tensor,
    scaling: float,
    softcap: float | None = None,
    additive_mask: Tensor | None = None,
) -> Tensor:
    """Float32 softmax attention probabilities ``[B, h, Q, K]`` with masked entries exactly 0."""
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if additive_mask is not None:
        scores = scores + additive_mask.float()
    scores = scores.masked_fill(~allowed, torch.finfo(torch.float32).min)
    # a fully masked row (left padding) would be uniform: zero it so it neither counts nor NaNs
    return torch.softmax(scores, dim=-1) * allowed


def act_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Standard attention for every head, with the module's selected heads calibrated.

    Heads run on sdpa; selected heads are recomputed eagerly in float32 and calibrated. A
    softcapped model (Gemma-2), which sdpa cannot serve, runs every head eagerly.
    """
    state: ActHeads | None = getattr(module, "act", None)
    if state is not None:
        state.calls += 1
        if not state.heads:
            state = None
    softcap = kwargs.get("softcap")
    if softcap is None:
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        if state is None:
            return out, None
    elif kwargs.get("position_bias") is not None:
        raise UnsupportedArchitectureError("ACT's eager path does not support attention with position biases")
    if kwargs.get("s_aux") is not None:
        raise UnsupportedArchitectureError("ACT does not support attention with learned sink logits (s_aux)")

    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    q_len, kv_len = query.shape[2], key.shape[2]
    if attention_mask is None and q_len > 1 and kv_len > q_len:  # prefill into an empty static cache
        key, value, kv_len = key[:, :, :q_len], value[:, :, :q_len], q_len
    groups = query.shape[1] // key.shape[1]
    allowed = allowed_mask(attention_mask, q_len, kv_len, query.shape[0], query.device)
    if softcap is None:
        eager_heads = state.index(query.device)
        selected = slice(None)
    else:
        out = torch.empty_like(query.transpose(1, 2))
        eager_heads = torch.arange(query.shape[1], device=query.device)
        selected = state.index(query.device) if state is not None else None
    kv_heads = torch.div(eager_heads, groups, rounding_mode="floor")
    probs = eager_attention(query[:, eager_heads], key[:, kv_heads], allowed, scaling, softcap, mask_bias(attention_mask, kv_len))
    if state is not None:
        chosen = probs[:, selected]
        calibrated = redistribute(chosen, state.sinks_for(chosen, allowed, q_len, kv_len), state.beta)
        if state.row_heads is not None:
            calibrated = torch.where(state.row_heads.to(probs.device)[:, :, None, None], calibrated, chosen)
        if state.mix is not None:  # P @ V is linear in P: mixing probabilities mixes outputs
            calibrated = chosen + state.mix.to(probs.device)[:, :, None, None] * (calibrated - chosen)
        # out of place, so that the screen's gradients can flow through probs
        probs = calibrated if isinstance(selected, slice) else probs.index_copy(1, selected, calibrated)
    heads_out = torch.matmul(probs, value[:, kv_heads].float())  # [B, h, Q, D]
    out = out.index_copy(2, eager_heads, heads_out.transpose(1, 2).to(out.dtype))  # sdpa's output stays intact
    return out, None


def mask_bias(attention_mask: Tensor | None, kv_len: int) -> Tensor | None:
    """A float mask may carry biases beyond masking; keep them (bool masks carry none)."""
    if attention_mask is None or attention_mask.dtype == torch.bool:
        return None
    mask = attention_mask[..., :kv_len]
    return torch.where(mask > torch.finfo(mask.dtype).min / 2, mask, torch.zeros_like(mask))


def register() -> None:
    """Register the attention function and its mask (sdpa's) under one name; idempotent."""
    if ACT_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ACT_ATTENTION, act_attention_forward)
    if ACT_ATTENTION not in AttentionMaskInterface._global_mapping:
        AttentionMaskInterface.register(ACT_ATTENTION, sdpa_mask)


# ---------------------------------------------------------------------------------------------
# turning calibration on and off for a model


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


@dataclass
class ActController:
    """Handle returned by :func:`enable_act`: the map in force and the shared prompt rows."""

    model: PreTrainedModel
    head_map: HeadMap
    threshold: float
    beta: float
    prompt_rows: PromptRows
    previous_attention: str

    def prompt_lengths(self, lengths: Tensor | list[int]):
        """Context manager: the next forward passes treat the first ``lengths[b]`` rows as prompt."""
        return self.prompt_rows.set(lengths)


def enable_act(
    model: PreTrainedModel,
    head_map: HeadMap | str | dict | list | None = None,
    *,
    threshold: float | None = None,
    beta: float | None = None,
    reference_drop_first: bool = False,
    model_id: str | None = None,
    check_model: bool = True,
) -> ActController:
    """Turn ACT on for a loaded transformers model; :func:`disable_act` turns it off.

    ``head_map`` is a :class:`HeadMap`, a published map's name or a file path, or inline heads
    (``{"layer": [heads]}`` or ``[[layer, head], ...]``). ``threshold``/``beta`` override the
    map's. The map must fit the model (architecture, layer and head counts; the model id too
    unless ``check_model=False``).
    """
    disable_act(model)
    shape = model_shape(model)
    model_id = model_id or getattr(model.config, "_name_or_path", "") or ""
    head_map = resolve_head_map(head_map, model_id=model_id, check_model=check_model, **shape)
    threshold = head_map.threshold if threshold is None else check_threshold(threshold)
    beta = head_map.beta if beta is None else check_beta(beta)

    modules = attention_modules(model)
    if len(modules) != shape["num_layers"]:
        raise UnsupportedArchitectureError(
            f"found {len(modules)} attention modules with a layer index in a {shape['num_layers']}-layer "
            f"{shape['architecture']} model: this architecture does not route attention through "
            "transformers' AttentionInterface, so ACT cannot calibrate it"
        )
    register()
    previous = model.config._attn_implementation or "sdpa"
    try:
        model.set_attn_implementation(ACT_ATTENTION)
    except (KeyError, ValueError) as err:
        raise UnsupportedArchitectureError(
            f"{shape['architecture']} does not support custom attention functions ({err}); ACT cannot calibrate it"
        ) from None
    prompt_rows = PromptRows()
    for layer, module in enumerate(modules):
        heads = sorted(head_map.heads.get(layer, ()))
        if heads:
            module.act = ActHeads(heads, threshold, beta, reference_drop_first, prompt_rows)
    controller = ActController(model, head_map, threshold, beta, prompt_rows, previous)
    model._act_controller = controller
    _probe(model, modules)
    return controller


def _probe(model: PreTrainedModel, modules: list[nn.Module]) -> None:
    """Run two tokens through the model and check the attention function really ran in every layer.

    Some architectures (Bloom, MPT) accept a custom attention name and silently ignore it.
    """
    saved = {i: getattr(m, "act", None) for i, m in enumerate(modules)}
    probe_state = PromptRows()
    for module in modules:
        module.act = ActHeads([], 0.5, 1.0, False, probe_state)
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[1, 2]], device=device), use_cache=False)
        silent = [i for i, m in enumerate(modules) if m.act.calls == 0]
    except KeyError as err:
        silent = list(range(len(modules)))
        saved_error: Exception | None = err
    else:
        saved_error = None
    finally:
        for i, module in enumerate(modules):
            if saved[i] is None:
                del module.act
            else:
                module.act = saved[i]
    if silent:
        disable_act(model)
        raise UnsupportedArchitectureError(
            f"{model.config.model_type}: layers {silent} never called the '{ACT_ATTENTION}' attention function; "
            "this architecture does not route attention through transformers' AttentionInterface"
        ) from saved_error


def disable_act(model: PreTrainedModel) -> None:
    """Remove calibration and restore the attention implementation the model had before."""
    controller: ActController | None = getattr(model, "_act_controller", None)
    if controller is None:
        return
    for module in attention_modules(model):
        if hasattr(module, "act"):
            del module.act
    model.set_attn_implementation(controller.previous_attention)
    del model._act_controller
