"""ACT as a transformers attention function, registered under one name with its mask.

``act_attention_forward`` has the signature of every function in transformers'
``AttentionInterface``: tensors plus the attention module. What it needs beyond the tensors
lives on the module as ``module.act`` (an :class:`ActHeads`), on the module's device: the
selected heads, the rule's parameters, and the sink set found at prefill, which later calls
(decoding, or continuations scored with the KV cache) reuse. Layers without an ``act``
attribute go straight to the standard kernel (sdpa), so they pay nothing. Two kernels calibrate
the selected heads, with the same numbers: ``"blockwise"`` (the default) computes them block by
block of query rows from their sink columns and the rest (:mod:`act_eval.sink_attention`,
memory O(N) per head); ``"eager"``, the reference the tests hold it against, recomputes each
selected head's whole probability matrix in float32 and calibrates it with
:mod:`act_eval.calibration`.

Which query rows are *prompt* rows (they alone decide the sink set) is an argument of the
forward call: ``model(input_ids, act_prompt_lengths=lengths)`` (``[B]``, each row's context
length; transformers hands extra keyword arguments down to the attention function, checked for
every supported architecture, GPT-2 included). ``hf-act`` passes it for a loglikelihood batch;
without it every unmasked row of the first call of a sequence is prompt. The head search still
sets lengths on a shared :class:`PromptRows` object, read when the call passes none.
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

from act_eval.calibration import redistribute, sink_set, sinks_from_sums
from act_eval.head_map import HeadMap, check_beta, check_threshold, resolve_head_map
from act_eval.sink_attention import (
    allowed_rows,
    attention_scores,
    bias_rows,
    calibrated_attention,
    column_statistics,
    prompt_rows,
)

ACT_ATTENTION = "act"
PROMPT_LENGTHS = "act_prompt_lengths"  # the forward call's keyword argument for per-row prompt lengths
KERNELS = ("blockwise", "eager")  # how selected heads are calibrated; the first is the default


def check_kernel(kernel: str) -> str:
    """``kernel`` if it names one of :data:`KERNELS`."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    return kernel


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
    kernel: str = KERNELS[0]
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

    def __post_init__(self) -> None:
        check_kernel(self.kernel)

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

    def starts_sequence(self, batch: int, q_len: int, kv_len: int) -> bool:
        """Whether this call starts a sequence (its prompt rows then decide the sink set)."""
        return kv_len == q_len or self._sinks is None or self._sinks.shape[0] != batch

    def begin(self, sinks: Tensor, kv_len: int) -> Tensor:
        """Keep the sink set found at the start of a sequence of ``kv_len`` tokens."""
        self._sinks, self._seen = sinks, kv_len
        return sinks

    def advance(self, q_len: int, kv_len: int) -> Tensor:
        """The stored sink set on the keys of a later call of the same sequence."""
        # keys cover absolute positions [seen - kv_len, seen) (a sliding-window cache drops the oldest)
        self._seen += q_len
        stored = self._sinks
        start = self._seen - kv_len
        current = torch.zeros(stored.shape[:-1] + (kv_len,), dtype=torch.bool, device=stored.device)
        if start < stored.shape[-1]:
            part = stored[..., max(start, 0):]
            offset = max(-start, 0)
            current[..., offset:offset + part.shape[-1]] = part[..., : kv_len - offset]
        return current

    def lengths(self, given: Tensor | list[int] | None, device: torch.device) -> Tensor | None:
        """Per batch row, its prompt length for this call (None: every row that sees a key is prompt).

        ``given`` is the call's :data:`PROMPT_LENGTHS` argument; without one, the shared
        :class:`PromptRows` (the head search's way)."""
        lengths = self.prompt_rows.lengths if given is None else given
        return None if lengths is None else torch.as_tensor(lengths, dtype=torch.long).to(device)

    def blend(self, plain: Tensor, calibrated: Tensor) -> Tensor:
        """``[B, h, Q, *]`` per row: calibrated only for its ``row_heads``, moved ``mix`` of the way.

        Linear in what it mixes, so probabilities (eager) and outputs (blockwise) mix alike."""
        if self.row_heads is not None:
            calibrated = torch.where(self.row_heads.to(plain.device)[:, :, None, None], calibrated, plain)
        if self.mix is not None:
            calibrated = plain + self.mix.to(plain.device)[:, :, None, None] * (calibrated - plain)
        return calibrated


def allowed_mask(attention_mask: Tensor | None, q_len: int, kv_len: int, batch: int, device) -> Tensor:
    """Boolean ``[B, 1, Q, K]``: which keys each query may see (mask None means plain causal)."""
    return allowed_rows(attention_mask, 0, q_len, q_len, kv_len, batch, device)


def eager_attention(
    query: Tensor,
    key: Tensor,
    allowed: Tensor,
    scaling: float,
    softcap: float | None = None,
    additive_mask: Tensor | None = None,
) -> Tensor:
    """Float32 softmax attention probabilities ``[B, h, Q, K]`` with masked entries exactly 0."""
    scores = attention_scores(query, key, allowed, scaling, softcap, additive_mask)
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

    Heads ACT leaves alone run on sdpa; selected heads are calibrated by the state's kernel.
    sdpa cannot softcap (Gemma-2): there every head runs in float32, blockwise or eagerly.
    """
    state: ActHeads | None = getattr(module, "act", None)
    if state is not None:
        state.calls += 1
        if not state.heads:
            state = None
    softcap = kwargs.get("softcap")
    out = None
    if softcap is None:
        if state is None or state.kernel == "eager" or len(state.heads) < query.shape[1]:
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
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    lengths = None if state is None else state.lengths(kwargs.get(PROMPT_LENGTHS), query.device)
    kernel = _eager_kernel if state is not None and state.kernel == "eager" else _blockwise_kernel
    with torch.autocast(query.device.type, enabled=False):  # float32 even under lm-eval's mixed precision
        return kernel(state, query, key, value, attention_mask, scaling, softcap, out, lengths), None


def _eager_kernel(
    state: ActHeads, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float, softcap: float | None, out: Tensor | None, lengths: Tensor | None,
) -> Tensor:
    """The reference: selected heads' whole probability matrices in float32, calibrated, times V."""
    batch, _, q_len, _ = query.shape
    kv_len = key.shape[2]
    groups = query.shape[1] // key.shape[1]
    allowed = allowed_mask(attention_mask, q_len, kv_len, batch, query.device)
    if out is not None:
        eager_heads = state.index(query.device)
        selected = slice(None)
    else:
        out = torch.empty_like(query.transpose(1, 2))
        eager_heads = torch.arange(query.shape[1], device=query.device)
        selected = state.index(query.device)
    kv_heads = torch.div(eager_heads, groups, rounding_mode="floor")
    probs = eager_attention(query[:, eager_heads], key[:, kv_heads], allowed, scaling, softcap, mask_bias(attention_mask, kv_len))
    chosen = probs[:, selected]
    if state.starts_sequence(batch, q_len, kv_len):
        positions = torch.arange(kv_len - q_len, kv_len, device=query.device)
        visible = allowed & prompt_rows(allowed, positions, lengths).unsqueeze(-1)
        sinks = state.begin(sink_set(chosen, visible, state.threshold, state.reference_drop_first), kv_len)
    else:
        sinks = state.advance(q_len, kv_len)
    calibrated = state.blend(chosen, redistribute(chosen, sinks, state.beta))
    # out of place, so that the screen's gradients can flow through probs
    probs = calibrated if isinstance(selected, slice) else probs.index_copy(1, selected, calibrated)
    heads_out = torch.matmul(probs, value[:, kv_heads].float())  # [B, h, Q, D]
    return out.index_copy(2, eager_heads, heads_out.transpose(1, 2).to(out.dtype))  # sdpa's output stays intact


def _blockwise_kernel(
    state: ActHeads | None, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float, softcap: float | None, out: Tensor | None, lengths: Tensor | None,
) -> Tensor:
    """Selected heads calibrated block by block (:mod:`act_eval.sink_attention`), in O(N) memory.

    ``out`` is sdpa's output for every head, or None when every head is selected (sdpa's work
    would be thrown away) or when softcapping rules sdpa out (then every head runs here). The
    sink set is found from the prompt rows' column sums when a sequence starts and reused on later
    calls (decoding), which then run only their own rows.
    """
    batch, num_heads, q_len, _ = query.shape
    kv_len = key.shape[2]
    groups = num_heads // key.shape[1]
    device = query.device
    kv_every = torch.div(torch.arange(num_heads, device=device), groups, rounding_mode="floor")
    if state is None:  # a softcapped layer with nothing to calibrate
        every, _ = calibrated_attention(query, key[:, kv_every], value[:, kv_every], attention_mask, scaling, softcap, None, 1.0)
        return every.transpose(1, 2).to(query.dtype)
    heads = state.index(device)
    everyone = state.heads == list(range(num_heads))  # then the queries need no copy
    chosen_q = query if everyone else query[:, heads]
    chosen_k, chosen_v = (key, value) if everyone and groups == 1 else (key[:, kv_every[heads]], value[:, kv_every[heads]])
    if state.starts_sequence(batch, q_len, kv_len):
        sums = column_statistics(chosen_q, chosen_k, attention_mask, scaling, softcap, lengths)
        sinks = state.begin(sinks_from_sums(*sums, state.threshold, state.reference_drop_first), kv_len)
    else:
        sinks = state.advance(q_len, kv_len)
    if out is not None and not bool(sinks.any()):  # no selected head has a sink: nothing changes
        return out
    blended = state.row_heads is not None or state.mix is not None
    if softcap is not None:  # every head in one pass; the others have no sinks, so they come out plain
        every_sinks = torch.zeros(batch, num_heads, kv_len, dtype=torch.bool, device=device).index_copy(1, heads, sinks)
        calibrated, plain = calibrated_attention(
            query, key[:, kv_every], value[:, kv_every], attention_mask, scaling, softcap, every_sinks, state.beta, plain=blended
        )
        out = calibrated.transpose(1, 2).to(query.dtype)
        calibrated, plain = calibrated[:, heads], None if plain is None else plain[:, heads]
    else:
        calibrated, plain = calibrated_attention(chosen_q, chosen_k, chosen_v, attention_mask, scaling, None, sinks, state.beta, plain=blended)
        if out is None:
            out = torch.empty_like(query.transpose(1, 2))
    if blended:
        calibrated = state.blend(plain, calibrated)
    calibrated = calibrated.transpose(1, 2).to(out.dtype)
    # in place unless autograd holds sdpa's output (the screen differentiates through it)
    return out.index_copy(2, heads, calibrated) if out.requires_grad else out.index_copy_(2, heads, calibrated)


def mask_bias(attention_mask: Tensor | None, kv_len: int) -> Tensor | None:
    """A float mask may carry biases beyond masking; keep them (bool masks carry none)."""
    return None if attention_mask is None else bias_rows(attention_mask, 0, attention_mask.shape[-2], kv_len)


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
    kernel: str = KERNELS[0]

    def prompt_lengths(self, lengths: Tensor | list[int]):
        """Context manager: the next forward passes treat the first ``lengths[b]`` rows as prompt.

        For code that cannot pass ``act_prompt_lengths=`` to the forward call itself."""
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
    kernel: str = KERNELS[0],
) -> ActController:
    """Turn ACT on for a loaded transformers model; :func:`disable_act` turns it off.

    ``head_map`` is a :class:`HeadMap`, a published map's name or a file path, or inline heads
    (``{"layer": [heads]}`` or ``[[layer, head], ...]``). ``threshold``/``beta`` override the
    map's. The map must fit the model (architecture, layer and head counts; the model id too
    unless ``check_model=False``). ``kernel`` is ``"blockwise"`` (block by block from the sink
    columns, O(N) memory) or ``"eager"`` (the float32 reference); same numbers.
    """
    check_kernel(kernel)
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
            module.act = ActHeads(heads, threshold, beta, reference_drop_first, prompt_rows, kernel)
    controller = ActController(model, head_map, threshold, beta, prompt_rows, previous, kernel)
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
