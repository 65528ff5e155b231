"""Calibrated attention in O(N) memory: exact ACT, block by block, without the whole probability matrix.

ACT changes a head's probabilities only on its sink columns ``S`` (act-spec.md): each row's
output is ``b_i N_i + beta C_i`` with ``C_i = sum_{j in S} P_ij V_j`` and
``N_i = sum_{j not in S} P_ij V_j`` (:func:`act_eval.calibration.calibrated_output`; the same
value as the issue's ``b_i (O_i - C_i) + beta C_i`` with ``O`` the standard output, computed
without the cancellation in ``O_i - C_i`` that ``b_i`` would amplify when the sinks hold most
of a row's mass). Both sums, and the masses ``m_i`` and ``1 - m_i`` that ``b_i`` needs, come
from one pass over blocks of query rows, each against only the keys its rows can see (a
causal prefix, a sliding-window band), so at most ``block x N`` float32 logits are held at once:
memory O(N x block) per layer, never O(N^2).

* :func:`column_statistics`: when a sequence starts, the sink statistic's column sums over the
  prompt rows (the sink set itself comes from :func:`act_eval.calibration.sinks_from_sums`,
  the one place that thresholds);
* :func:`calibrated_attention`: with the sink set known, the calibrated (and the plain) output.
  A decoding step runs only this, on its own rows.

First-token scaling (:func:`act_eval.calibration.first_token_output`) runs through the same
pass, its "sink set" being the first real token alone (:func:`first_prompt_key`): the rule
differs only in how a row's two parts are combined.

Everything here is a function of tensors (queries ``[B, h, Q, D]`` already matched to their keys
``[B, h, K, D]``, the model's mask, the scaling), so tests call it on hand-made inputs. All of it
is float32 whatever the model's dtype, and differentiable (the head search's screen takes
gradients through the output); the sink set, piecewise constant, carries none.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from act_eval.calibration import first_token

# A rule's output from a row's parts (other_out, other_mass, sink_out, sink_mass), e.g.
# :func:`act_eval.calibration.calibrated_output` with its beta bound
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


def _block_probs(
    query: Tensor, key: Tensor, allowed: Tensor, scaling: float, softcap: float | None, bias: Tensor | None, first_masked: int
) -> Tensor:
    """Float32 softmax of one block of rows over its key span, as :func:`attention_scores` forms the logits.

    Only columns from ``first_masked`` on hold masked entries (causal without a mask: the block's
    own triangle), so only those are masked; the scaling goes on the few query rows, not the logits.
    """
    scores = torch.matmul(query.float() * scaling, key.float().transpose(-1, -2))
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if bias is not None:
        scores = scores.add_(bias.float())
    scores[..., first_masked:].masked_fill_(~allowed[..., first_masked:], torch.finfo(torch.float32).min)
    return torch.softmax(scores, -1)


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
    """Per-block results joined along the query rows: written into one tensor, or concatenated at
    the end when autograd tracks them (it cannot see through writes into a buffer)."""

    def __init__(self, q_len: int) -> None:
        self.q_len, self.pieces, self.full = q_len, [], None

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
    """``(start, stop, lo, hi, allowed, bias, first_masked)`` per block of query rows, cropped to its key span."""
    starts = _steps(q_len, batch, heads, block, device)
    for start, (lo, hi) in zip(starts, _key_spans(attention_mask, starts, q_len, kv_len, batch, device)):
        stop = min(start + starts.step, q_len)
        allowed = allowed_rows(attention_mask, start, stop, q_len, kv_len, batch, device)[..., lo:hi]
        bias = bias_rows(attention_mask, start, stop, kv_len)
        # without a mask every row sees the keys up to the block's first row: only the triangle is masked
        first_masked = kv_len - q_len + start + 1 - lo if attention_mask is None else 0
        yield start, stop, lo, hi, allowed, None if bias is None else bias[..., lo:hi], first_masked


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

    What :func:`act_eval.calibration.column_sums` gives on the whole probability matrix with
    ``visible`` = prompt rows (:func:`prompt_rows`) and the keys they see, summed block by block.
    """
    batch, heads, q_len, _ = query.shape
    kv_len = key.shape[2]
    device = query.device
    key = key.float()
    total = torch.zeros(batch, heads, 1, kv_len, dtype=torch.float32, device=device)
    count = torch.zeros(batch, 1, kv_len, dtype=torch.float32, device=device)
    for start, stop, lo, hi, allowed, bias, first_masked in _blocks(attention_mask, q_len, kv_len, batch, heads, block, device):
        probs = _block_probs(query[:, :, start:stop], key[:, :, lo:hi], allowed, scaling, softcap, bias, first_masked)
        positions = torch.arange(kv_len - q_len + start, kv_len - q_len + stop, device=device)
        prompt = prompt_rows(allowed, positions, prompt_lengths)  # [B, 1, r]
        # sum_i prompt_i P_ij as one product: a masked key has P_ij = 0 in any row that sees a key
        total[..., lo:hi] += torch.matmul(prompt.to(torch.float32).unsqueeze(-2), probs)
        count[..., lo:hi] += (allowed & prompt.unsqueeze(-1)).sum(-2)
    return total.squeeze(-2), count


@torch.no_grad()
def first_prompt_key(
    attention_mask: Tensor | None, q_len: int, kv_len: int, batch: int, prompt_lengths: Tensor | None, device: torch.device
) -> Tensor:
    """Boolean ``[B, 1, K]``: the first real token, the first key any prompt row sees (left padding skipped).

    What :func:`act_eval.calibration.first_token` gives on the keys prompt rows see, found block
    by block of rows (a mask is ``Q x K``; no block holds more than ``block x K`` of it).
    """
    if attention_mask is None:  # plain causal: every row sees key 0
        return (torch.arange(kv_len, device=device) == 0).expand(batch, 1, kv_len)
    seen = torch.zeros(batch, 1, kv_len, dtype=torch.bool, device=device)
    for start, stop, lo, hi, allowed, _, _ in _blocks(attention_mask, q_len, kv_len, batch, 1, None, device):
        positions = torch.arange(kv_len - q_len + start, kv_len - q_len + stop, device=device)
        prompt = prompt_rows(allowed, positions, prompt_lengths)
        seen[..., lo:hi] |= (allowed & prompt.unsqueeze(-1)).any(-2)
    return first_token(seen)


def plain_output(other_out: Tensor, other_mass: Tensor, sink_out: Tensor, sink_mass: Tensor) -> Tensor:
    """The uncalibrated output ``P @ V`` from a row's parts (every rule at its identity gives it)."""
    return other_out + sink_out


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
) -> tuple[Tensor, Tensor | None]:
    """Float32 ``(calibrated, plain or None)`` outputs ``[B, h, Q, D]`` given each head's sink set.

    ``sinks`` is ``[B, h, K]`` over the keys of this call (None: no sinks, plain attention).
    Per block: the softmax against the block's key span, its mass and output on the sink columns
    (gathered: few), then the same over the other columns after zeroing the sinks, then the
    rule's ``output`` of those parts (:data:`RowOutput`). A row that sees no key (left padding)
    gets a finite value that nothing reads.
    """
    batch, heads, q_len, dim = query.shape
    kv_len = key.shape[2]
    device = query.device
    key, value = key.float(), value.float()
    width = int(sinks.sum(-1).max()) if sinks is not None and sinks.numel() else 0
    if width:
        # each head's sink columns first (stable: in key order), padded to the widest head's count
        order = torch.sort(sinks.to(torch.uint8), dim=-1, descending=True, stable=True).indices[..., :width]
        valid = sinks.gather(-1, order)
        sink_values = value.gather(2, order.unsqueeze(-1).expand(-1, -1, -1, value.shape[-1]))
        columns = sinks.flatten(0, -2).any(0).nonzero().flatten().tolist()
        first_sink, last_sink = columns[0], columns[-1] + 1  # zeroing the sinks touches these columns only
    calibrated_rows, plain_rows = _Rows(q_len), _Rows(q_len)
    for start, stop, lo, hi, allowed, bias, first_masked in _blocks(attention_mask, q_len, kv_len, batch, heads, block, device):
        probs = _block_probs(query[:, :, start:stop], key[:, :, lo:hi], allowed, scaling, softcap, bias, first_masked)
        a, b = (max(first_sink, lo), min(last_sink, hi)) if width else (0, 0)
        if a < b:
            inside = valid & (order >= lo) & (order < hi)
            index = (order - lo).clamp(0, hi - lo - 1).unsqueeze(2).expand(-1, -1, stop - start, -1)
            on_sinks = probs.gather(-1, index) * inside.unsqueeze(2)  # [B, h, r, W]
            sink_mass, sink_out = on_sinks.sum(-1), torch.matmul(on_sinks, sink_values)
            drop = sinks[:, :, None, a:b]
            if probs.requires_grad:  # autograd keeps the softmax's output: zero a copy
                probs = torch.cat([probs[..., : a - lo], probs[..., a - lo : b - lo].masked_fill(drop, 0.0), probs[..., b - lo :]], -1)
            else:
                probs[..., a - lo : b - lo].masked_fill_(drop, 0.0)
        else:  # no sink among this block's keys
            sink_mass = probs.new_zeros(probs.shape[:-1])
            sink_out = probs.new_zeros(probs.shape[:-1] + (value.shape[-1],))
        parts = (torch.matmul(probs, value[:, :, lo:hi]), probs.sum(-1), sink_out, sink_mass)
        calibrated_rows.put(start, output(*parts))
        if plain:
            plain_rows.put(start, plain_output(*parts))
    return calibrated_rows.joined(), plain_rows.joined() if plain else None
