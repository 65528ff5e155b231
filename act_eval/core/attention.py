"""ACT (and first-token scaling) as a transformers attention function, and what one call of it is given.

``act_attention_forward`` has the signature of every function in transformers'
``AttentionInterface``: tensors plus the attention module, and the forward call's extra keyword
arguments (transformers hands them down to the attention function, checked for every supported
architecture, GPT-2 included). What calibrates a layer is a :class:`LayerCall`: the layer's
:class:`ActSettings` (selected heads, threshold, beta, kernel: fixed while calibration is on)
and its :class:`SequenceSinks` (the sink set found when a sequence starts, which later calls of
the sequence, decoding with the KV cache, reuse). :func:`act_eval.core.enable.enable_act` leaves the settings and a
sequence state on each module with selected heads (``module.act``, ``module.act_sequence``), for
the calls lm-eval and ``generate`` make; a call may instead bring its own, one per layer, as
``model(..., act_layers={layer: LayerCall(...)})`` (the head search's way). The settings name the
rule (:data:`act_eval.core.rules.RULES`): ACT's sink calibration, or first-token scaling, which
both kernels run as a one-column "sink set" (the first real token) with its own reweighting. Layers with nothing
to calibrate go straight to the standard kernel (sdpa), so they pay nothing. Two kernels calibrate
the selected heads, with the same numbers: ``"blockwise"`` (the default) computes them block by
block of query rows from their sink columns and the rest (:mod:`act_eval.core.blockwise`,
memory O(N) per head); ``"eager"``, the reference the tests hold it against, recomputes each
selected head's whole probability matrix in float32 and calibrates it with
:mod:`act_eval.core.calibration`.

Which query rows are *prompt* rows (they alone decide the sink set) is an argument of the
forward call too: ``model(input_ids, act_prompt_lengths=lengths)`` (``[B]``, each row's context
length). ``hf-act`` and the head search pass it for a loglikelihood batch; without it every
unmasked row of the first call of a sequence is prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from act_eval.core.blockwise import (
    allowed_rows,
    attention_scores,
    bias_rows,
    calibrated_attention,
    column_statistics,
    first_prompt_key,
    plain_output,
    plain_pass,
    prompt_rows,
)
from act_eval.core.calibration import (
    calibrated_output,
    first_token,
    first_token_output,
    redistribute,
    scale_first_token,
    sink_set,
    sinks_from_sums,
)
from act_eval.core.rules import RULES
from act_eval.core.switch import UnsupportedArchitectureError

ACT_ATTENTION = "act"
PROMPT_LENGTHS = "act_prompt_lengths"  # the forward call's keyword argument for per-row prompt lengths
LAYERS = "act_layers"  # the forward call's keyword argument: {layer index: LayerCall}, the head search's way
KERNELS = ("blockwise", "eager")  # how selected heads are calibrated; the first is the default


def check_kernel(kernel: str) -> str:
    """``kernel`` if it names one of :data:`KERNELS`."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    return kernel


@dataclass(frozen=True)
class ActSettings:
    """How one layer is calibrated: its selected query heads, the rule and its parameters, the kernel.

    ``rule`` is one of :data:`act_eval.core.rules.RULES`: ``"act"`` (``threshold``, ``beta``,
    ``reference_drop_first``) or ``"first_token"`` (``factor``; the others unused). Fixed while
    calibration is on; nothing about a call or a sequence lives here."""

    heads: tuple[int, ...]
    threshold: float
    beta: float
    reference_drop_first: bool = False
    kernel: str = KERNELS[0]
    rule: str = RULES[0]
    factor: float = 1.0
    # the heads as a tensor per device: a cache of ``heads``, not state
    _index: dict[Any, Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(self.heads))
        check_kernel(self.kernel)
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")

    @property
    def first_token(self) -> bool:
        """Whether the rule is first-token scaling (else ACT)."""
        return self.rule == "first_token"

    def changed_keys(self, probs: Tensor, visible: Tensor) -> Tensor:
        """Boolean ``[B, h, K]``: the columns the rule changes, from a sequence's whole probability matrices
        (the eager way): ACT's sink set, or the first real token."""
        if self.first_token:
            return first_token(visible.any(-2)).expand(probs.shape[:-2] + probs.shape[-1:])
        return sink_set(probs, visible, self.threshold, self.reference_drop_first)

    def reweight(self, probs: Tensor, keys: Tensor) -> Tensor:
        """The rule on whole probability matrices (the eager reference)."""
        if self.first_token:
            return scale_first_token(probs, keys, self.factor)
        return redistribute(probs, keys, self.beta)

    def output(self, other_out: Tensor, other_mass: Tensor, sink_out: Tensor, sink_mass: Tensor) -> Tensor:
        """The rule's output from a row's parts (the blockwise kernel's :data:`~act_eval.core.blockwise.RowOutput`)."""
        if self.first_token:
            return first_token_output(other_out, other_mass, sink_out, sink_mass, self.factor)
        return calibrated_output(other_out, other_mass, sink_out, sink_mass, self.beta)

    def index(self, device: torch.device) -> Tensor:
        """The selected query-head indices on ``device`` (cached per device)."""
        if device not in self._index:
            self._index[device] = torch.tensor(self.heads, dtype=torch.long, device=device)
        return self._index[device]

    def others(self, num_heads: int, device: torch.device) -> Tensor:
        """The query heads of a ``num_heads``-head layer that are not selected, on ``device`` (cached)."""
        if (num_heads, device) not in self._index:
            rest = [head for head in range(num_heads) if head not in self.heads]
            self._index[(num_heads, device)] = torch.tensor(rest, dtype=torch.long, device=device)
        return self._index[(num_heads, device)]


@dataclass
class SequenceSinks:
    """Per-sequence state: the sink set found when the sequence started, and the tokens seen since.

    It outlives the call that found it on purpose: a later call of the same sequence (a decoding
    step with the KV cache, a continuation scored after its context) no longer holds the prompt
    rows, so it can only reuse their sink set (act-spec.md: found once per sequence and head).
    A new sequence (a call whose queries cover all its keys, or another batch size) replaces it.
    It cannot ride on the KV cache: transformers keeps the cache in the attention module's own
    forward and never hands it to the attention function. So a caller that runs the sequence
    holds it in its :class:`LayerCall`; calls that bring none (lm-eval's, ``generate``'s) share
    the one :func:`enable_act` left on the module, one sequence at a time.
    """

    sinks: Tensor | None = None  # [B, h, K at the start]
    seen: int = 0  # tokens of the sequence seen so far

    def starts_sequence(self, batch: int, q_len: int, kv_len: int) -> bool:
        """Whether this call starts a sequence (its prompt rows then decide the sink set)."""
        return kv_len == q_len or self.sinks is None or self.sinks.shape[0] != batch

    def begin(self, sinks: Tensor, kv_len: int) -> Tensor:
        """Keep the sink set found at the start of a sequence of ``kv_len`` tokens."""
        self.sinks, self.seen = sinks, kv_len
        return sinks

    def advance(self, q_len: int, kv_len: int) -> Tensor:
        """The kept sink set on the keys of a later call of the same sequence."""
        # keys cover absolute positions [seen - kv_len, seen) (a sliding-window cache drops the oldest)
        self.seen += q_len
        stored = self.sinks
        start = self.seen - kv_len
        current = torch.zeros(stored.shape[:-1] + (kv_len,), dtype=torch.bool, device=stored.device)
        if start < stored.shape[-1]:
            part = stored[..., max(start, 0):]
            offset = max(-start, 0)
            current[..., offset:offset + part.shape[-1]] = part[..., : kv_len - offset]
        return current


@dataclass(frozen=True)
class LayerCall:
    """Everything that calibrates one layer in one forward call.

    The head search passes one per layer as the call's :data:`LAYERS` argument, because what it
    calibrates changes from call to call: other heads per pass, per batch row (``row_heads``), by
    a differentiable amount (``mix``), resuming a sequence whose start ran in another pass
    (``sequence``). Without that argument the attention function builds one from what
    :func:`enable_act` left on the module (its settings and its sequence state).
    """

    settings: ActSettings
    # the sequence this call belongs to; the call reads and updates it (a caller can read the sink set back)
    sequence: SequenceSinks = field(default_factory=SequenceSinks)
    # [B, h]: which selected heads each batch row calibrates (None: all); the search tries one head per row
    row_heads: Tensor | None = None
    # [B, h] float: per row, how far each selected head moves towards its calibrated output
    # (o + mix * (o_cal - o); None: all the way); the search's screen differentiates by it
    mix: Tensor | None = None
    # True: the layer runs plain (bit for bit the standard kernel's output) and only finds the
    # selected heads' sink set into ``sequence``; the exact engine's recording pass needs both
    record_only: bool = False

    @property
    def blended(self) -> bool:
        """Whether some row is not simply calibrated (it needs the plain output too)."""
        return self.row_heads is not None or self.mix is not None

    def blend(self, plain: Tensor, calibrated: Tensor) -> Tensor:
        """``[B, h, Q, *]`` per row: calibrated only for its ``row_heads``, moved ``mix`` of the way.

        Linear in what it mixes, so probabilities (eager) and outputs (blockwise) mix alike."""
        if self.row_heads is not None:
            calibrated = torch.where(self.row_heads.to(plain.device)[:, :, None, None], calibrated, plain)
        if self.mix is not None:
            calibrated = plain + self.mix.to(plain.device)[:, :, None, None] * (calibrated - plain)
        return calibrated


def layer_call(module: nn.Module, kwargs: dict[str, Any]) -> LayerCall | None:
    """This layer's calibration in this call (None: plain attention).

    A call that passes :data:`LAYERS` brings its own: layers it leaves out run plain, whatever
    the modules hold. Otherwise the settings :func:`enable_act` put on the module, with the
    module's sequence state, which later calls that pass nothing (decoding) reuse."""
    given = kwargs.get(LAYERS)
    if given is not None:
        return given.get(module.layer_idx)
    settings: ActSettings | None = getattr(module, "act", None)
    return None if settings is None else LayerCall(settings, module.act_sequence)


def prompt_lengths(given: Tensor | list[int] | None, device: torch.device) -> Tensor | None:
    """The call's :data:`PROMPT_LENGTHS` on ``device`` (None: every row that sees a key is prompt)."""
    return None if given is None else torch.as_tensor(given, dtype=torch.long).to(device)


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

    Heads ACT leaves alone run on sdpa; selected heads are calibrated by the settings' kernel.
    sdpa cannot softcap (Gemma-2): there every head runs in float32, blockwise or eagerly.
    """
    call = layer_call(module, kwargs)
    if call is not None and not call.settings.heads:
        call = None
    recording = call is not None and call.record_only
    softcap = kwargs.get("softcap")
    out = None
    if softcap is None:
        if call is None or recording or call.settings.kernel == "eager":
            out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        else:  # blockwise: the selected heads are computed there, sdpa does the others
            out = _plain_heads(module, query, key, value, attention_mask, call.settings.others(query.shape[1], query.device),
                               dropout, scaling, kwargs)
        if call is None:
            return out, None
    elif kwargs.get("position_bias") is not None:
        raise UnsupportedArchitectureError("ACT's eager path does not support attention with position biases")
    if kwargs.get("s_aux") is not None:
        raise UnsupportedArchitectureError("ACT does not support attention with learned sink logits (s_aux)")

    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    q_len, kv_len = query.shape[2], key.shape[2]
    if attention_mask is None and q_len > 1 and kv_len > q_len:  # prefill into an empty static cache
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    lengths = None if call is None else prompt_lengths(kwargs.get(PROMPT_LENGTHS), query.device)
    if recording:  # the sink set (its column sums, whichever the kernel), then the plain output as if nothing were selected
        _sequence_sinks(call, *_selected(call.settings, query, key), attention_mask, scaling, softcap, lengths)
        if out is not None:
            return out, None
        call = None
    kernel = _eager_kernel if call is not None and call.settings.kernel == "eager" else _blockwise_kernel
    with torch.autocast(query.device.type, enabled=False):  # float32 even under lm-eval's mixed precision
        return kernel(call, query, key, value, attention_mask, scaling, softcap, out, lengths), None


def _plain_heads(
    module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, heads: Tensor,
    dropout: float, scaling: float | None, kwargs: dict[str, Any],
) -> Tensor | None:
    """sdpa's output ``[B, Q, h, D]`` with the query heads ``heads`` filled (None if there are none); the other slots are left for the caller.

    Each of those heads is given its own key/value head, so sdpa sees plain multi-head attention;
    of the module it reads only whether it is causal."""
    batch, num_heads, q_len, _ = query.shape
    if not heads.numel():
        return None
    causal = SimpleNamespace(is_causal=getattr(module, "is_causal", True))
    part, _ = sdpa_attention_forward(causal, *_heads(heads, query, key, value), attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    return _put_heads(part.new_empty(batch, q_len, num_heads, part.shape[-1]), heads, part)


def _put_heads(out: Tensor, heads: Tensor, part: Tensor) -> Tensor:
    """``out`` (``[B, Q, h, D]``) with ``part`` in the slots of ``heads``: in place unless autograd tracks either
    (the screen differentiates through both)."""
    part = part.to(out.dtype)
    return out.index_copy(2, heads, part) if out.requires_grad or part.requires_grad else out.index_copy_(2, heads, part)


def _eager_kernel(
    call: LayerCall, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float, softcap: float | None, out: Tensor | None, lengths: Tensor | None,
) -> Tensor:
    """The reference: selected heads' whole probability matrices in float32, calibrated, times V."""
    batch, _, q_len, _ = query.shape
    kv_len = key.shape[2]
    allowed = allowed_mask(attention_mask, q_len, kv_len, batch, query.device)
    settings, sequence = call.settings, call.sequence
    if out is not None:  # the selected heads alone
        eager_heads = settings.index(query.device)
        selected = slice(None)
        eager_q, eager_k, eager_v = _selected(settings, query, key, value)
    else:  # softcapped: every head
        out = torch.empty_like(query.transpose(1, 2))
        eager_heads = torch.arange(query.shape[1], device=query.device)
        selected = settings.index(query.device)
        eager_q, eager_k, eager_v = _every_head(query, key, value)
    probs = eager_attention(eager_q, eager_k, allowed, scaling, softcap, mask_bias(attention_mask, kv_len))
    chosen = probs[:, selected]
    if sequence.starts_sequence(batch, q_len, kv_len):
        positions = torch.arange(kv_len - q_len, kv_len, device=query.device)
        visible = allowed & prompt_rows(allowed, positions, lengths).unsqueeze(-1)
        sinks = sequence.begin(settings.changed_keys(chosen, visible), kv_len)
    else:
        sinks = sequence.advance(q_len, kv_len)
    calibrated = call.blend(chosen, settings.reweight(chosen, sinks))
    # out of place, so that the screen's gradients can flow through probs
    probs = calibrated if isinstance(selected, slice) else probs.index_copy(1, selected, calibrated)
    heads_out = torch.matmul(probs, eager_v.float())  # [B, h, Q, D]
    return out.index_copy(2, eager_heads, heads_out.transpose(1, 2).to(out.dtype))  # sdpa's output stays intact


def _blockwise_kernel(
    call: LayerCall | None, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float, softcap: float | None, out: Tensor | None, lengths: Tensor | None,
) -> Tensor:
    """Selected heads calibrated block by block (:mod:`act_eval.core.blockwise`), in O(N) memory.

    ``out`` is sdpa's output for the heads left alone (the selected heads' slots are filled
    here), or None when every head runs here: all selected, or softcapping rules sdpa out. When
    a sequence starts, one :func:`~act_eval.core.blockwise.plain_pass` gives the plain output and
    the prompt rows' column sums, the sink set follows from those, and the output is corrected
    on the sink columns; later calls of the sequence (decoding) reuse the sink set on their own
    rows. The screen, which differentiates, finds the sink set first and then calibrates (the
    plain pass is not differentiable), as does first-token scaling, whose column is known at once.
    """
    batch, num_heads, q_len, _ = query.shape
    kv_len = key.shape[2]
    device = query.device
    if call is None:  # a softcapped layer with nothing to calibrate
        every, _ = calibrated_attention(*_every_head(query, key, value), attention_mask, scaling, softcap, None, plain_output)
        return every.transpose(1, 2).to(query.dtype)
    settings = call.settings
    heads = settings.index(device)
    chosen_q, chosen_k, chosen_v = _selected(settings, query, key, value)
    # softcapped: every head in one pass (the others have no sinks, so they come out plain)
    q, k, v = (chosen_q, chosen_k, chosen_v) if softcap is None else _every_head(query, key, value)
    known = None
    if call.sequence.starts_sequence(batch, q_len, kv_len) and not settings.first_token and not _differentiates(call, query):
        known = plain_pass(q, k, v, attention_mask, scaling, softcap, lengths)
    sums = None if known is None else (known.total if softcap is None else known.total[:, heads], known.count)
    sinks = _sequence_sinks(call, chosen_q, chosen_k, attention_mask, scaling, softcap, lengths, sums)
    if softcap is not None:
        sinks = torch.zeros(batch, num_heads, kv_len, dtype=torch.bool, device=device).index_copy(1, heads, sinks)
    calibrated, plain = calibrated_attention(q, k, v, attention_mask, scaling, softcap, sinks, settings.output, plain=call.blended, known=known)
    if softcap is not None:
        out = calibrated.transpose(1, 2).to(query.dtype)
        calibrated, plain = calibrated[:, heads], None if plain is None else plain[:, heads]
    elif out is None:
        out = query.new_empty(batch, q_len, num_heads, query.shape[-1])
    if call.blended:
        calibrated = call.blend(plain, calibrated)
    return _put_heads(out, heads, calibrated.transpose(1, 2))


def _differentiates(call: LayerCall, query: Tensor) -> bool:
    """Whether autograd tracks this call (the head search's screen)."""
    return torch.is_grad_enabled() and (query.requires_grad or (call.mix is not None and call.mix.requires_grad))


def _selected(settings: ActSettings, query: Tensor, *kv: Tensor) -> tuple[Tensor, ...]:
    """The selected heads' queries and, matched to them, their keys (and values): ``[B, h, *, D]`` each."""
    everyone = settings.heads == tuple(range(query.shape[1]))  # then nothing needs a copy
    return _heads(settings.index(query.device), query, *kv, everyone=everyone)


def _every_head(query: Tensor, *kv: Tensor) -> tuple[Tensor, ...]:
    """Every query head with its key (and value) head."""
    return _heads(torch.arange(query.shape[1], device=query.device), query, *kv, everyone=True)


def _heads(heads: Tensor, query: Tensor, *kv: Tensor, everyone: bool = False) -> tuple[Tensor, ...]:
    """The query heads ``heads`` and, matched to each, its key (and value) head: ``[B, h, *, D]`` each.
    ``everyone``: ``heads`` is every query head in order, so the queries need no copy (nor keys without GQA)."""
    groups = query.shape[1] // kv[0].shape[1]
    kv_heads = torch.div(heads, groups, rounding_mode="floor")
    return (query if everyone else query[:, heads], *(t if everyone and groups == 1 else t[:, kv_heads] for t in kv))


def _sequence_sinks(
    call: LayerCall, query: Tensor, key: Tensor, attention_mask: Tensor | None, scaling: float,
    softcap: float | None, lengths: Tensor | None, sums: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """The selected heads' sink set ``[B, h, K]`` in this call: found from the prompt rows when a sequence
    starts (and kept in ``call.sequence``), else the kept one on this call's keys. ``sums``: the
    selected heads' column sums when the caller has them already."""
    batch, _, q_len, _ = query.shape
    kv_len = key.shape[2]
    if call.sequence.starts_sequence(batch, q_len, kv_len):
        return call.sequence.begin(_changed_keys(call.settings, query, key, attention_mask, scaling, softcap, lengths, sums), kv_len)
    return call.sequence.advance(q_len, kv_len)


def _changed_keys(
    settings: ActSettings, query: Tensor, key: Tensor, attention_mask: Tensor | None, scaling: float,
    softcap: float | None, lengths: Tensor | None, sums: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """:meth:`ActSettings.changed_keys` without the whole matrices (``[B, h, K]``, when a sequence starts):
    the first real token, or ACT's sink set from the prompt rows' column sums."""
    batch, heads, q_len, _ = query.shape
    kv_len = key.shape[2]
    if settings.first_token:
        return first_prompt_key(attention_mask, q_len, kv_len, batch, lengths, query.device).expand(batch, heads, kv_len)
    if sums is None:
        sums = column_statistics(query, key, attention_mask, scaling, softcap, lengths)
    return sinks_from_sums(*sums, settings.threshold, settings.reference_drop_first)


def mask_bias(attention_mask: Tensor | None, kv_len: int) -> Tensor | None:
    """A float mask may carry biases beyond masking; keep them (bool masks carry none)."""
    return None if attention_mask is None else bias_rows(attention_mask, 0, attention_mask.shape[-2], kv_len)
