"""Calibrated attention in O(N) memory: exact ACT, block by block, without the whole probability matrix.

ACT changes a head's probabilities only on its sink columns ``S`` (act-spec.md): each row's
output is ``b_i N_i + beta C_i`` with ``C_i = sum_{j in S} P_ij V_j`` and
``N_i = sum_{j not in S} P_ij V_j`` (:func:`act_eval.core.calibration.calibrated_output`; the same
value as the issue's ``b_i (O_i - C_i) + beta C_i`` with ``O`` the standard output, computed
without the cancellation in ``O_i - C_i`` that ``b_i`` would amplify when the sinks hold most
of a row's mass). Both sums, and the masses ``m_i`` and ``1 - m_i`` that ``b_i`` needs, come
from one pass over blocks of query rows, each against only the keys its rows can see (a
causal prefix, a sliding-window band), so at most ``block x N`` float32 logits are held at once:
memory O(N x block) per layer, never O(N^2).

* :func:`column_statistics`: when a sequence starts, the sink statistic's column sums over the
  prompt rows (the sink set itself comes from :func:`act_eval.core.calibration.sinks_from_sums`,
  the one place that thresholds);
* :func:`calibrated_attention`: with the sink set known, the calibrated (and the plain) output.
  A decoding step runs only this, on its own rows.

First-token scaling (:func:`act_eval.core.calibration.first_token_output`) runs through the same
pass, its "sink set" being the first real token alone (:func:`first_prompt_key`): the rule
differs only in how a row's two parts are combined.

Everything here is a function of tensors (queries ``[B, h, Q, D]`` already matched to their keys
``[B, h, K, D]``, the model's mask, the scaling), so tests call it on hand-made inputs. All of it
is float32 whatever the model's dtype, and differentiable (the head search's screen takes
gradients through the output); the sink set, piecewise constant, carries none.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import torch
from torch import Tensor

from act_eval.core.calibration import first_token

# A rule's output from a row's parts (other_out, other_mass, sink_out, sink_mass), e.g.
# :func:`act_eval.core.calibration.calibrated_output` with its beta bound
RowOutput = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

# Query rows (summed over batch rows and heads) per block: a block holds ``block x K`` float32
# logits. The model itself holds some tens of activations per token and layer (the MLP's are
# the widest), so a block of a few hundred rows stays within a few per cent of its peak memory.
CPU_BLOCK_ROWS = 512  # at 16k keys: 32 MiB of logits
GPU_BLOCK_ROWS = 4096  # fewer, larger kernels where launches cost more than memory


def block_rows(device: torch.device) -> int:
    """The block size for ``device``."""
    return CPU_BLOCK_ROWS if device.type == "cpu" else GPU_BLOCK_ROWS


def _mask_rows(attention_mask: Tensor, start: int, stop: int, kv_len: int) -> Tensor:
    """Rows ``start:stop`` of a ``[B, 1, Q or 1, K]`` mask, cropped to the keys of this call."""
    rows = slice(start, stop) if attention_mask.shape[-2] > 1 else slice(None)
    return attention_mask[..., rows, :kv_len]


def allowed_rows(
    attention_mask: Tensor | None, start: int, stop: int, q_len: int, kv_len: int, batch: int, device: torch.device
) -> Tensor:
    """Boolean ``[B, 1, stop - start, K]``: which keys query rows ``start:stop`` may see (None means causal)."""
    if attention_mask is None:
        rows = torch.arange(kv_len - q_len + start, kv_len - q_len + stop, device=device)
        cols = torch.arange(kv_len, device=device)
        return (cols[None, :] <= rows[:, None]).expand(batch, 1, stop - start, kv_len)
    mask = _mask_rows(attention_mask, start, stop, kv_len)
    if mask.dtype != torch.bool:
        mask = mask > torch.finfo(mask.dtype).min / 2
    return mask.expand(batch, -1, stop - start, kv_len)


def bias_rows(attention_mask: Tensor | None, start: int, stop: int, kv_len: int) -> Tensor | None:
    """A float mask may carry biases beyond masking; keep them (bool masks carry none)."""
    if attention_mask is None or attention_mask.dtype == torch.bool:
        return None
    mask = _mask_rows(attention_mask, start, stop, kv_len)
    return torch.where(mask > torch.finfo(mask.dtype).min / 2, mask, torch.zeros_like(mask))


def prompt_rows(allowed: Tensor, positions: Tensor, lengths: Tensor | None) -> Tensor:
    """``[B, 1, r]``: which of these query rows (absolute ``positions``) are prompt rows.

    A row that sees no key (left padding) never is; with ``lengths``, only the first
    ``lengths[b]`` positions of batch row ``b`` are (lm-eval's right-padded loglikelihood batches).
    """
    prompt = allowed.any(-1)
    if lengths is not None:
        prompt = prompt & (positions[None, None, :] < lengths.to(positions.device)[:, None, None])
    return prompt


def attention_scores(
    query: Tensor, key: Tensor, allowed: Tensor, scaling: float, softcap: float | None = None, bias: Tensor | None = None
) -> Tensor:
    """Float32 logits ``[..., Q, K]`` as the model's kernel forms them; masked entries at float32's minimum."""
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)).mul_(scaling)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if bias is not None:
        scores = scores.add_(bias.float())
    return scores.masked_fill_(~allowed, torch.finfo(torch.float32).min)


def _logits(query: Tensor, key: Tensor, scaling: float, softcap: float | None, bias: Tensor | None) -> Tensor:
    """Float32 logits of a block of rows against some keys, as :func:`attention_scores` forms them (unmasked);
    the scaling goes on the few query rows, not the logits."""
    scores = torch.matmul(query.float() * scaling, key.float().transpose(-1, -2))
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    return scores if bias is None else scores.add_(bias.float())


@dataclass
class _Block:
    """Query rows ``start:stop`` of a call against the key span ``lo:hi`` that any of them sees, with what masks them.

    Without a mask (plain causal) every row sees the keys before the block's first row, so only
    the columns from :attr:`first_masked` on can hold masked entries: :attr:`allowed` covers those
    alone, and the prompt rows and their column counts have closed forms.
    """

    start: int
    stop: int
    lo: int
    hi: int
    q_len: int
    kv_len: int
    batch: int
    mask: Tensor | None
    device: torch.device

    @cached_property
    def positions(self) -> Tensor:
        """The rows' absolute positions."""
        offset = self.kv_len - self.q_len
        return torch.arange(offset + self.start, offset + self.stop, device=self.device)

    @property
    def first_masked(self) -> int:
        """The first span column (relative to ``lo``) some row of the block may not see."""
        return self.kv_len - self.q_len + self.start + 1 - self.lo if self.mask is None else 0

    @cached_property
    def allowed(self) -> Tensor:
        """Boolean ``[B, 1, r, hi - lo - first_masked]``: which span columns from :attr:`first_masked` on each row sees."""
        if self.mask is None:
            cols = torch.arange(self.lo + self.first_masked, self.hi, device=self.device)
            return (cols[None, :] <= self.positions[:, None]).expand(self.batch, 1, -1, -1)
        return allowed_rows(self.mask, self.start, self.stop, self.q_len, self.kv_len, self.batch, self.device)[..., self.lo : self.hi]

    @cached_property
    def bias(self) -> Tensor | None:
        """A float mask's biases on the span (None for bool masks and no mask)."""
        bias = bias_rows(self.mask, self.start, self.stop, self.kv_len)
        return None if bias is None else bias[..., self.lo : self.hi]

    def logits(self, query: Tensor, key: Tensor, scaling: float, softcap: float | None) -> Tensor:
        """Float32 logits ``[B, h, r, hi - lo]`` of the block's rows of ``query`` against the span of ``key``, masked."""
        scores = _logits(query[:, :, self.start : self.stop], key[:, :, self.lo : self.hi], scaling, softcap, self.bias)
        first = self.first_masked
        scores[..., first:].masked_fill_(~self.allowed, torch.finfo(torch.float32).min)
        return scores

    def prompt(self, lengths: Tensor | None) -> Tensor:
        """``[B, 1, r]``: which rows are prompt rows (:func:`prompt_rows`)."""
        if self.mask is None:  # every row sees key 0
            rows = torch.ones(self.batch, 1, self.stop - self.start, dtype=torch.bool, device=self.device)
            return rows if lengths is None else rows & (self.positions[None, None, :] < lengths.to(self.device)[:, None, None])
        return prompt_rows(self.allowed, self.positions, lengths)

    def count(self, prompt: Tensor, lengths: Tensor | None) -> Tensor:
        """``[B, 1, hi - lo]``: per span key, how many prompt rows of the block see it."""
        if self.mask is None:
            # prompt rows are a prefix of the block's rows; key j is seen by those at positions >= j
            first, last = self.kv_len - self.q_len + self.start, self.kv_len - self.q_len + self.stop
            top = torch.full((self.batch,), last, device=self.device) if lengths is None else lengths.to(self.device).clamp(max=last)
            cols = torch.arange(self.lo, self.hi, device=self.device).clamp(min=first)
            return (top[:, None] - cols[None, :]).clamp(min=0).to(torch.float32).unsqueeze(1)
        return torch.matmul(prompt.to(torch.float32).unsqueeze(-2), self.allowed.to(torch.float32)).squeeze(-2)

    def sees(self, columns: Tensor) -> Tensor:
        """Boolean ``[B, h, r, W]``: whether each row sees each of the keys ``columns`` (``[B, h, W]``, absolute)."""
        if self.mask is None:
            return columns[:, :, None, :] <= self.positions[None, None, :, None]
        rows = allowed_rows(self.mask, self.start, self.stop, self.q_len, self.kv_len, self.batch, self.device)
        return _gather_columns(rows, columns)

    def column_bias(self, columns: Tensor) -> Tensor | None:
        """A float mask's biases ``[B, h, r, W]`` on the keys ``columns`` (None without)."""
        bias = bias_rows(self.mask, self.start, self.stop, self.kv_len)
        return None if bias is None else _gather_columns(bias, columns)


def _gather_columns(rows: Tensor, columns: Tensor) -> Tensor:
    """``rows`` (``[B, 1, r, K]``) on the keys ``columns`` (``[B, h, W]``): ``[B, h, r, W]``."""
    heads, width = columns.shape[1], columns.shape[-1]
    index = columns[:, :, None, :].expand(-1, -1, rows.shape[-2], -1)
    return rows.expand(-1, heads, -1, -1).gather(-1, index) if width else rows.new_zeros(index.shape)


def _block_probs(block: _Block, query: Tensor, key: Tensor, scaling: float, softcap: float | None) -> Tensor:
    """Float32 softmax of one block of rows over its key span."""
    return torch.softmax(block.logits(query, key, scaling, softcap), -1)


def _key_spans(attention_mask: Tensor | None, starts: range, q_len: int, kv_len: int, batch: int, device) -> list[tuple[int, int]]:
    """Per block of query rows, the range of keys any of its rows sees (causal: a prefix; sliding
    windows: a band), found for every block at once so that a GPU synchronises once per layer."""
    stops = [min(start + starts.step, q_len) for start in starts]
    if attention_mask is None:
        return [(0, kv_len - q_len + stop) for stop in stops]
    seen = torch.stack(
        [allowed_rows(attention_mask, a, b, q_len, kv_len, batch, device).any(-2).flatten(0, -2).any(0) for a, b in zip(starts, stops)]
    ).to(torch.uint8)
    lo = seen.argmax(-1)
    hi = kv_len - seen.flip(-1).argmax(-1)
    spans = torch.stack([lo, hi, seen.amax(-1)], -1).tolist()
    return [(a, b) if any_ else (0, 1) for a, b, any_ in spans]


def _steps(q_len: int, batch: int, heads: int, block: int | None, device: torch.device) -> range:
    """Starts of the blocks of query rows: ``block`` rows over all batch rows and heads."""
    block = block_rows(device) if block is None else block
    return range(0, q_len, max(1, block // (batch * heads)))


class _Rows:
    """Per-block results joined along the query rows: written into one tensor (``into``, or a new
    one), or concatenated at the end when autograd tracks them (it cannot see through writes into a buffer)."""

    def __init__(self, q_len: int, into: Tensor | None = None) -> None:
        self.q_len, self.pieces, self.full = q_len, [], into

    def put(self, start: int, piece: Tensor) -> None:
        if piece.requires_grad:
            self.pieces.append(piece)
            return
        if self.full is None:
            self.full = piece.new_empty(piece.shape[:2] + (self.q_len,) + piece.shape[3:])
        self.full[:, :, start : start + piece.shape[2]] = piece

    def joined(self) -> Tensor:
        return torch.cat(self.pieces, 2) if self.pieces else self.full


def _blocks(attention_mask: Tensor | None, q_len: int, kv_len: int, batch: int, heads: int, block: int | None, device):
    """The :class:`_Block` s of a call, each cropped to its key span."""
    starts = _steps(q_len, batch, heads, block, device)
    for start, (lo, hi) in zip(starts, _key_spans(attention_mask, starts, q_len, kv_len, batch, device)):
        yield _Block(start, min(start + starts.step, q_len), lo, hi, q_len, kv_len, batch, attention_mask, device)


@torch.no_grad()
def column_statistics(
    query: Tensor,
    key: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
    softcap: float | None = None,
    prompt_lengths: Tensor | None = None,
    block: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The sink statistic's column sums ``(total [B, h, K], count [B, 1, K])`` over the prompt rows.

    What :func:`act_eval.core.calibration.column_sums` gives on the whole probability matrix with
    ``visible`` = prompt rows (:func:`prompt_rows`) and the keys they see, summed block by block.
    """
    sums = plain_pass(query, key, None, attention_mask, scaling, softcap, prompt_lengths, block)
    return sums.total, sums.count


@dataclass
class PlainPass:
    """One pass over a sequence's first call: what :func:`calibrated_attention` needs besides the sink set.

    ``out`` is the plain output ``P @ V`` and ``lse`` each row's log-sum-exp (so any column's
    ``P_ij = exp(s_ij - lse_i)`` can be formed again from its logit alone); ``total`` and ``count``
    are :func:`column_statistics`'s, from which the sink set follows.
    """

    out: Tensor | None  # [B, h, Q, D] float32 (None: no values given)
    lse: Tensor | None  # [B, h, Q]
    total: Tensor  # [B, h, K]
    count: Tensor  # [B, 1, K]


@torch.no_grad()
def plain_pass(
    query: Tensor,
    key: Tensor,
    value: Tensor | None,
    attention_mask: Tensor | None,
    scaling: float,
    softcap: float | None = None,
    prompt_lengths: Tensor | None = None,
    block: int | None = None,
) -> PlainPass:
    """The plain attention of a sequence's first call and the sink statistic, from one pass over blocks of rows
    (the statistic alone when ``value`` is None).

    Each row's log-sum-exp comes from its softmax without a second pass of exponentials: its
    largest probability is ``exp(max_j s_ij - lse_i)``, so ``lse_i = max_j s_ij - log max_j P_ij``
    (``max_j P_ij >= 1 / K``: no precision is lost in the logarithm).
    """
    batch, heads, q_len, dim = query.shape
    kv_len = key.shape[2]
    key = key.float()
    total = torch.zeros(batch, heads, 1, kv_len, dtype=torch.float32, device=query.device)
    count = torch.zeros(batch, 1, kv_len, dtype=torch.float32, device=query.device)
    out = lse = None
    if value is not None:
        value = value.float()
        out = torch.empty(batch, heads, q_len, dim, dtype=torch.float32, device=query.device)
        lse = torch.empty(batch, heads, q_len, dtype=torch.float32, device=query.device)
    for part in _blocks(attention_mask, q_len, kv_len, batch, heads, block, query.device):
        scores = part.logits(query, key, scaling, softcap)
        probs = torch.softmax(scores, -1)
        if value is not None:
            rows = slice(part.start, part.stop)
            lse[:, :, rows] = scores.amax(-1) - probs.amax(-1).log()
            out[:, :, rows] = torch.matmul(probs, value[:, :, part.lo : part.hi])
        prompt = part.prompt(prompt_lengths)  # [B, 1, r]
        # sum_i prompt_i P_ij as one product: a masked key has P_ij = 0 in any row that sees a key
        total[..., part.lo : part.hi] += torch.matmul(prompt.to(torch.float32).unsqueeze(-2), probs)
        count[..., part.lo : part.hi] += part.count(prompt, prompt_lengths)
    return PlainPass(out, lse, total.squeeze(-2), count)


@torch.no_grad()
def first_prompt_key(
    attention_mask: Tensor | None, q_len: int, kv_len: int, batch: int, prompt_lengths: Tensor | None, device: torch.device
) -> Tensor:
    """Boolean ``[B, 1, K]``: the first real token, the first key any prompt row sees (left padding skipped).

    What :func:`act_eval.core.calibration.first_token` gives on the keys prompt rows see, found block
    by block of rows (a mask is ``Q x K``; no block holds more than ``block x K`` of it).
    """
    if attention_mask is None:  # plain causal: every row sees key 0
        return (torch.arange(kv_len, device=device) == 0).expand(batch, 1, kv_len)
    seen = torch.zeros(batch, 1, kv_len, dtype=torch.bool, device=device)
    for part in _blocks(attention_mask, q_len, kv_len, batch, 1, None, device):
        seen[..., part.lo : part.hi] |= part.count(part.prompt(prompt_lengths), prompt_lengths) > 0
    return first_token(seen)


def plain_output(other_out: Tensor, other_mass: Tensor, sink_out: Tensor, sink_mass: Tensor) -> Tensor:
    """The uncalibrated output ``P @ V`` from a row's parts (every rule at its identity gives it)."""
    return other_out + sink_out


@dataclass
class _SinkColumns:
    """Each head's sink columns first (stable: in key order), padded to the widest head's count."""

    sinks: Tensor  # [B, h, K]
    order: Tensor  # [B, h, W]: absolute key positions
    valid: Tensor  # [B, h, W]: False on padding
    keys: Tensor  # [B, h, W, D]
    values: Tensor  # [B, h, W, D]
    first: int  # zeroing the sinks touches the columns first:last only
    last: int

    @classmethod
    def of(cls, sinks: Tensor | None, key: Tensor, value: Tensor) -> _SinkColumns | None:
        """The sink columns of ``sinks`` (``[B, h, K]``; None when no head has one)."""
        width = int(sinks.sum(-1).max()) if sinks is not None and sinks.numel() else 0
        if not width:
            return None
        order = torch.sort(sinks.to(torch.uint8), dim=-1, descending=True, stable=True).indices[..., :width]
        index = order.unsqueeze(-1).expand(-1, -1, -1, value.shape[-1])
        columns = sinks.flatten(0, -2).any(0).nonzero().flatten().tolist()
        return cls(sinks, order, sinks.gather(-1, order), key.gather(2, index), value.gather(2, index), columns[0], columns[-1] + 1)


# A block's rows may be corrected from the plain output while their sinks hold at most this share
# of their mass: N_i = O_i - C_i then loses at most a factor 1 / (1 - m_i) = 2 of O_i's precision
CORRECTABLE_SINK_MASS = 0.5


def _corrected_parts(
    part: _Block, query: Tensor, scaling: float, softcap: float | None, columns: _SinkColumns, known: PlainPass
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """A block's row parts from the plain pass and the sink columns' logits alone, and whether a row's
    sinks hold more than :data:`CORRECTABLE_SINK_MASS` (a 0-dim bool: then the block is recomputed)."""
    rows = slice(part.start, part.stop)
    logits = _logits(query[:, :, rows], columns.keys, scaling, softcap, part.column_bias(columns.order))  # [B, h, r, W]
    seen = part.sees(columns.order) & columns.valid[:, :, None, :]
    on_sinks = torch.where(seen, torch.exp(logits - known.lse[:, :, rows, None]), 0.0)
    sink_mass = on_sinks.sum(-1)
    sink_out = torch.matmul(on_sinks, columns.values)
    parts = (known.out[:, :, rows] - sink_out, 1.0 - sink_mass, sink_out, sink_mass)
    return parts, (sink_mass > CORRECTABLE_SINK_MASS).any()


def _exact_parts(
    part: _Block, query: Tensor, key: Tensor, value: Tensor, scaling: float, softcap: float | None, columns: _SinkColumns | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A block's row parts from its whole softmax: its mass and output on the sink columns (gathered:
    few), then the same over the other columns after zeroing the sinks."""
    probs = _block_probs(part, query, key, scaling, softcap)
    lo, hi = part.lo, part.hi
    a, b = (max(columns.first, lo), min(columns.last, hi)) if columns is not None else (0, 0)
    if a < b:
        inside = columns.valid & (columns.order >= lo) & (columns.order < hi)
        index = (columns.order - lo).clamp(0, hi - lo - 1).unsqueeze(2).expand(-1, -1, part.stop - part.start, -1)
        on_sinks = probs.gather(-1, index) * inside.unsqueeze(2)  # [B, h, r, W]
        sink_mass, sink_out = on_sinks.sum(-1), torch.matmul(on_sinks, columns.values)
        drop = columns.sinks[:, :, None, a:b]
        if probs.requires_grad:  # autograd keeps the softmax's output: zero a copy
            probs = torch.cat([probs[..., : a - lo], probs[..., a - lo : b - lo].masked_fill(drop, 0.0), probs[..., b - lo :]], -1)
        else:
            probs[..., a - lo : b - lo].masked_fill_(drop, 0.0)
    else:  # no sink among this block's keys
        sink_mass = probs.new_zeros(probs.shape[:-1])
        sink_out = probs.new_zeros(probs.shape[:-1] + (value.shape[-1],))
    return torch.matmul(probs, value[:, :, lo:hi]), probs.sum(-1), sink_out, sink_mass


def calibrated_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
    softcap: float | None,
    sinks: Tensor | None,
    output: RowOutput,
    *,
    plain: bool = False,
    block: int | None = None,
    known: PlainPass | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Float32 ``(calibrated, plain or None)`` outputs ``[B, h, Q, D]`` given each head's sink set.

    ``sinks`` is ``[B, h, K]`` over the keys of this call (None: no sinks, plain attention).
    Per block, the rule's ``output`` (:data:`RowOutput`) of the row's parts: its mass and output
    on the sink columns and on the others. With ``known``, this call's :func:`plain_pass`, a
    block is corrected from it on the sink columns alone (``N_i = O_i - C_i``, ``1 - m_i``), no
    softmax recomputed, unless a row's sinks hold over :data:`CORRECTABLE_SINK_MASS` of its mass;
    otherwise the parts come from the block's softmax (which blocks, is read once for the whole
    call: a GPU synchronises once, not per block). Unless ``plain``, the calibrated output is
    written over ``known.out``. A row that sees no key (left padding) gets a finite value that
    nothing reads.
    """
    batch, heads, q_len, _ = query.shape
    kv_len = key.shape[2]
    key, value = key.float(), value.float()
    columns = _SinkColumns.of(sinks, key, value)
    if known is not None and columns is None:  # nothing to calibrate
        return known.out, known.out if plain else None
    # a block's plain output is read before its calibrated one is written: unless the plain output
    # is wanted too, the calibrated one takes its place (one [B, h, Q, D] float32 buffer, not two)
    calibrated_rows = _Rows(q_len, known.out if known is not None and not plain else None)
    plain_rows = _Rows(q_len)

    def put(start: int, parts: tuple[Tensor, Tensor, Tensor, Tensor]) -> None:
        calibrated_rows.put(start, output(*parts))
        if plain:
            plain_rows.put(start, plain_output(*parts))

    recompute = None  # every block
    if known is not None:
        leaning = {}
        for part in _blocks(attention_mask, q_len, kv_len, batch, heads, block, query.device):
            parts, leaning[part.start] = _corrected_parts(part, query, scaling, softcap, columns, known)
            put(part.start, parts)
        # one synchronisation for the layer, not one per block
        recompute = {start for start, lean in zip(leaning, torch.stack(list(leaning.values())).tolist()) if lean}
    if recompute is None or recompute:
        for part in _blocks(attention_mask, q_len, kv_len, batch, heads, block, query.device):
            if recompute is None or part.start in recompute:
                put(part.start, _exact_parts(part, query, key, value, scaling, softcap, columns))
    return calibrated_rows.joined(), plain_rows.joined() if plain else None
