"""Exact head search engine: the effect of calibrating each (layer, head) alone, on held-out examples.

It confirms what the screen (:mod:`act_eval.search.screen`) estimates: per example, the log
p(gold | choices) and correctness with each candidate head calibrated alone (:func:`exact_scores`),
and the same for a whole map (:func:`map_scores`, the greedy pass on the validation slice).

The naive procedure runs the whole model once per head per example. This one gets the same
numbers with far less work, using only what calibration provably leaves alone:

* one plain pass per example records every decoder layer's output and every layer's keys and
  values and, in the same pass, the sink set of every head to be scored (the first token, for
  first-token scaling): those layers run plain, bit for bit, and also find the sink set
  (``LayerCall.record_only``), so the heads are found exactly where the naive procedure finds them;
* a head whose sink set is empty for an example cannot change it: no forward pass at all;
* the other heads of a layer run batched, one head per copy of the rows (``LayerCall.row_heads``),
  starting at that layer from the recorded hidden states (the layers below are unchanged);
* query rows before a head's first sink are unchanged in every later layer (causal attention),
  so a pass starts at its heads' earliest first sink, reusing the recorded keys and values of
  earlier rows; heads are grouped into passes by first sink (:func:`plan_passes`), so a head
  whose sink comes late does not pay for one whose sink comes early;
* only the positions whose log-probabilities are scored go through the LM head.

:func:`naive_head_results` is the reference (lm-eval's way: full model, all logits) that tests
and ``benchmarks/bench_search.py`` compare against.

Every pass brings its own calibration as arguments of the forward call (``act_layers``, one
:class:`act_eval.core.attention.LayerCall` per calibrated layer, and ``act_prompt_lengths``): nothing
is written onto the model's modules, and layers a pass leaves out run plain.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from act_eval.core.attention import ACT_ATTENTION, KERNELS, LAYERS, PROMPT_LENGTHS, ActSettings, LayerCall, SequenceSinks
from act_eval.core.rules import DEFAULT_BETA, DEFAULT_THRESHOLD, RULES
from act_eval.core.switch import attention_modules, model_shape
from act_eval.search.examples import Example


@dataclass(frozen=True)
class Settings:
    """The rule a search calibrates heads with, and its parameters: ACT's threshold and beta, or
    first-token scaling's factor (then threshold and beta are unused)."""

    threshold: float = DEFAULT_THRESHOLD
    beta: float = DEFAULT_BETA
    reference_drop_first: bool = False
    rule: str = RULES[0]
    factor: float = 1.0
    # how the calibrated heads are computed: the same numbers to float32 noise, so no part of the digest
    # (the published SmolLM2 confirmation ran on "eager", then the default)
    kernel: str = KERNELS[0]

    def for_heads(self, heads: Sequence[int]) -> ActSettings:
        """A layer's calibration of ``heads`` under these settings."""
        return ActSettings(tuple(heads), self.threshold, self.beta, self.reference_drop_first, self.kernel, self.rule, self.factor)

    def recorded(self) -> dict[str, Any]:
        """The parameters as a map and its provenance record them: ACT's threshold and beta (as before
        other rules existed), or the rule and its factor."""
        if self.rule == "act":
            return {"threshold": self.threshold, "beta": self.beta}
        return {"rule": self.rule, "factor": self.factor}

    def key(self) -> list:
        """What names these settings among a search's stored results (ACT's: ``[threshold, beta]``, as before)."""
        return list(self.recorded().values())

    def digest(self) -> dict[str, Any]:
        """What ties a checkpoint to these settings; an ACT search's is what it was before rules existed."""
        if self.rule == "act":
            return {**self.recorded(), "reference_drop_first": self.reference_drop_first}
        return self.recorded()


def forward_arguments(lengths: list[int], layers: dict[int, LayerCall]) -> dict:
    """The forward call's arguments that calibrate ``layers`` (the others run plain) with these prompt lengths."""
    return {PROMPT_LENGTHS: lengths, LAYERS: layers}


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layer that holds each attention module, in layer order."""
    attn = attention_modules(model)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == len(attn):
            if all(any(sub is a for sub in layer.modules()) for layer, a in zip(module, attn)):
                return list(module)
    raise ValueError("could not find the decoder layers of this model")


def pad_rows(rows: tuple[tuple[int, ...], ...], device: torch.device) -> Tensor:
    """Right-pad with token 0, as lm-eval does for loglikelihood batches."""
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


def choice_sums(log_probs: Tensor, example: Example, start: int) -> Tensor:
    """Summed log-probability of each choice's tokens (differentiable); column ``start`` of
    ``log_probs`` [rows, positions, vocab] is the last prompt position."""
    sums = []
    for row, tokens in example.choices:
        idx = torch.arange(start, start + len(tokens), device=log_probs.device)
        tok = torch.tensor(tokens, device=log_probs.device)
        sums.append(log_probs[row, idx, tok].sum())
    return torch.stack(sums)


def choice_logliks(log_probs: Tensor, example: Example, width: int) -> list[float]:
    """Sum of log-probabilities of each choice's tokens; ``log_probs`` holds the last positions of each row."""
    return choice_sums(log_probs, example, example.prompt_len - 1 - (width - log_probs.shape[1])).tolist()


def compact_rows(example: Example) -> Example:
    """The same example with every row that is a prefix of another row dropped.

    Causal attention gives a prefix row the same log-probabilities as the longer row holds at
    those positions (right padding only follows), and every row's prompt is the same context, so
    each choice can be read from the longest row that contains its tokens. Two-row classification
    examples (a one-token label beside a longer one) run one row instead of two.
    """
    rows = example.rows
    keep = [r for r in rows if not any(len(o) > len(r) and o[: len(r)] == r for o in rows)]
    keep = list(dict.fromkeys(keep))
    where = {r: next(i for i, o in enumerate(keep) if o[: len(r)] == r) for r in rows}
    choices = tuple((where[rows[row]], tokens) for row, tokens in example.choices)
    return replace(example, rows=tuple(keep), choices=choices)


def is_correct(logliks: list[float], gold: int) -> bool:
    """lm-eval's acc: the highest log-likelihood (first on ties) is the gold choice."""
    return max(range(len(logliks)), key=lambda i: (logliks[i], -i)) == gold


def gold_logprob(logliks: list[float], gold: int) -> float:
    """log p(gold | choices): the log-softmax over the choices' summed log-likelihoods, whose argmax is acc."""
    return float(torch.log_softmax(torch.tensor(logliks, dtype=torch.float64), 0)[gold])


def _kept(example: Example) -> int:
    """How many last positions of each row are scored."""
    width = max(len(r) for r in example.rows)
    return width - example.prompt_len + 1


def _sliding_limit(model: nn.Module) -> int | None:
    """Longest input whose keys a sliding-window cache keeps in full (None: no sliding layers)."""
    config = model.config.get_text_config()
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or []
    if window and (any("sliding" in t for t in types) or config.model_type in ("mistral", "qwen2")):
        return window - 1
    return None


@dataclass
class _Recorded:
    """What the recording pass over one example leaves for the per-head passes."""

    example: Example  # compacted: the rows the passes run (:func:`compact_rows`)
    x: Tensor
    correct: bool
    logliks: list[float]
    outputs: list  # per decoder layer: its output (tensor or tuple)
    keys: list[Tensor]
    values: list[Tensor]
    sinks: dict[tuple[int, int], Tensor]  # per recorded (layer, head): [R, W] bool

    def sink_sets(self, layer: int, heads: Sequence[int]) -> Tensor:
        """``[R, len(heads), W]``: the recorded sink sets of ``heads`` of ``layer`` (KeyError: one was not recorded)."""
        return torch.stack([self.sinks[(layer, h)] for h in heads], 1)


class HeadSearch:
    """Scores every head of ``model`` on ``examples`` (one example at a time, all heads of a layer per pass)."""

    def __init__(self, model: nn.Module, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        self.shape = model_shape(model)
        self.layers = decoder_layers(model)
        self.device = next(model.parameters()).device
        self.sliding_limit = _sliding_limit(model)
        if model.config._attn_implementation != ACT_ATTENTION:
            raise ValueError("enable ACT on the model first: act_eval.core.enable.enable_act(model, None)")

    def all_heads(self) -> dict[int, list[int]]:
        """Every head of every layer."""
        return {layer: list(range(self.shape["num_heads"])) for layer in range(self.shape["num_layers"])}

    def record(self, example: Example, heads: dict[int, list[int]] | None = None) -> _Recorded:
        """One plain pass: outputs, keys, values, baseline score, and the sink sets of ``heads`` (default: all)."""
        heads = self.all_heads() if heads is None else heads
        calls = {layer: LayerCall(self.settings.for_heads(sorted(hs)), record_only=True) for layer, hs in heads.items() if hs}
        example = compact_rows(example)
        x = pad_rows(example.rows, self.device)
        outputs: list = [None] * len(self.layers)
        hooks = [
            layer.register_forward_hook(lambda mod, args, out, i=i: outputs.__setitem__(i, out))
            for i, layer in enumerate(self.layers)
        ]
        lengths = [example.prompt_len] * x.shape[0]
        try:
            with torch.no_grad():
                out = self.model(x, use_cache=True, logits_to_keep=_kept(example), **forward_arguments(lengths, calls))
        finally:
            for hook in hooks:
                hook.remove()
        logliks = choice_logliks(torch.log_softmax(out.logits.float(), -1), example, x.shape[1])
        cache = out.past_key_values
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        sinks = {(layer, h): call.sequence.sinks[:, i] for layer, call in calls.items() for i, h in enumerate(call.settings.heads)}
        return _Recorded(example, x, is_correct(logliks, example.gold), logliks, outputs, keys, values, sinks)

    @contextlib.contextmanager
    def _skip_below(self, layer: int, output) -> Iterator[None]:
        """Layers below ``layer`` return the recorded output instead of computing it."""
        for below in self.layers[:layer]:
            below.forward = lambda *args, **kwargs: output
        try:
            yield
        finally:
            for below in self.layers[:layer]:
                del below.forward

    def layer_results(self, rec: _Recorded, layer: int, heads: list[int] | None = None) -> dict[int, list[float]]:
        """Log-likelihoods of every choice with each head of ``layer`` (or of ``heads``) calibrated alone."""
        heads = range(self.shape["num_heads"]) if heads is None else heads
        sinks = {h: rec.sinks[(layer, h)][0] for h in heads}  # [W] each
        first = {h: int(sinks[h].nonzero()[0]) for h in heads if bool(sinks[h].any())}
        results = {h: rec.logliks for h in heads if h not in first}
        rows, width = rec.x.shape
        if self.sliding_limit is not None and width > self.sliding_limit:
            first = dict.fromkeys(first, 0)  # a sliding-window cache would not hold the whole prefix
        order = sorted(first, key=lambda h: (first[h], h))
        for group in plan_passes([first[h] for h in order], width, rows):
            results.update(self._pass(rec, layer, order[group], first[order[group][0]]))
        return results

    def _pass(self, rec: _Recorded, layer: int, active: list[int], start: int) -> dict[int, list[float]]:
        """One batched pass from ``layer`` and position ``start`` up, one head of ``active`` per copy of the rows."""
        example = rec.example
        rows, width = rec.x.shape
        n = len(active)
        row_heads = torch.zeros(rows * n, n, dtype=torch.bool, device=self.device)
        for a in range(n):
            row_heads[a * rows : (a + 1) * rows, a] = True
        x = rec.x.repeat(n, 1)
        cache = None
        sequence = SequenceSinks()
        if start > 0:  # the sequence resumes at ``start``: the recorded sink set and keys and values of the rows before
            from transformers import DynamicCache

            sequence = SequenceSinks(rec.sink_sets(layer, active).repeat(n, 1, 1), seen=start)
            prefix = [(k[:, :, :start].repeat(n, 1, 1, 1), v[:, :, :start].repeat(n, 1, 1, 1)) for k, v in zip(rec.keys, rec.values)]
            cache = DynamicCache(ddp_cache_data=prefix, config=self.model.config)
        below = None
        if layer > 0:
            out = rec.outputs[layer - 1]
            hidden = out[0] if isinstance(out, tuple) else out
            hidden = hidden[:, start:].repeat(n, 1, 1)
            below = (hidden,) + tuple(out[1:]) if isinstance(out, tuple) else hidden
        skip = self._skip_below(layer, below) if layer > 0 else contextlib.nullcontext()
        call = LayerCall(self.settings.for_heads(active), sequence, row_heads=row_heads)
        arguments = forward_arguments([example.prompt_len] * (rows * n), {layer: call})
        with torch.no_grad(), skip:
            out = self.model(
                x[:, start:], past_key_values=cache, use_cache=cache is not None, logits_to_keep=_kept(example), **arguments
            )
        log_probs = torch.log_softmax(out.logits.float(), -1)
        return {h: choice_logliks(log_probs[a * rows : (a + 1) * rows], example, width) for a, h in enumerate(active)}


PASS_OVERHEAD = 8  # a forward pass's fixed cost, in token rows (Python and kernel launches over every layer)


def cheapest_split(n: int, cost: Callable[[int, int], float], most: int | None = None) -> list[slice]:
    """Split items ``0..n-1`` into consecutive groups (of at most ``most``) at least total cost, exactly.

    ``cost(i, j)`` is the cost of the group ``i:j``; dynamic programming over the last cut (ties: the earliest).
    """
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest plan for the first j items
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(0 if most is None else max(0, j - most), j):
            total = best[i] + cost(i, j)
            if total < best[j]:
                best[j], cut[j] = total, i
    groups, j = [], n
    while j > 0:
        groups.append(slice(cut[j], j))
        j = cut[j]
    return groups[::-1]


def plan_passes(starts: list[int], width: int, rows: int, overhead: int = PASS_OVERHEAD) -> list[slice]:
    """Split heads sorted by first sink into consecutive groups, one batched pass each, at least total cost.

    A group runs every copy from its earliest first sink, so batching heads whose sinks come late with
    one whose sink comes early wastes the rows in between; a pass of its own costs ``overhead``.
    Cost of a group = overhead + heads * rows * (width - start) (:func:`cheapest_split`).
    """
    return cheapest_split(len(starts), lambda i, j: overhead * rows + (j - i) * rows * (width - starts[i]))


def naive_head_results(
    model: nn.Module, example: Example, layer: int, settings: Settings, heads: list[int] | None = None,
) -> dict[int, list[float]]:
    """The reference: calibrate one head (each of ``heads``, default all), run the whole model on every row, score from all logits."""
    x = pad_rows(example.rows, next(model.parameters()).device)
    lengths = [example.prompt_len] * x.shape[0]
    results = {}
    for head in range(model_shape(model)["num_heads"]) if heads is None else heads:
        with torch.no_grad():
            logits = model(x, use_cache=False, **forward_arguments(lengths, {layer: LayerCall(settings.for_heads([head]))})).logits
        results[head] = choice_logliks(torch.log_softmax(logits.float(), -1), example, x.shape[1])
    return results


@dataclass
class Scored:
    """One example under the exact engine: log p(gold | choices) and correctness, baseline and per head."""

    logp: float
    correct: bool
    heads: dict[tuple[int, int], tuple[float, bool]]  # (layer, head) calibrated alone


def exact_scores(
    model: nn.Module, examples: list[Example], settings: Settings, heads: dict[int, list[int]] | None = None,
) -> list[Scored]:
    """Each head of ``heads`` (default: every head) calibrated alone on each example, exactly.

    Examples run one at a time: the recording of one example is freed before the next, so memory
    does not grow with the number of examples.
    """
    search = HeadSearch(model, settings)
    heads = search.all_heads() if heads is None else heads
    out = []
    for example in examples:
        rec = search.record(example, heads)
        per_head = {}
        for layer, hs in sorted(heads.items()):
            for head, logliks in search.layer_results(rec, layer, sorted(hs)).items():
                per_head[(layer, head)] = (gold_logprob(logliks, example.gold), is_correct(logliks, example.gold))
        out.append(Scored(gold_logprob(rec.logliks, example.gold), rec.correct, per_head))
    return out


def batch_overhead(device: torch.device) -> float:
    """A batch's fixed cost in tokens, against which :func:`length_batches` weighs padding: on a CPU a
    pass's Python and launches (:data:`PASS_OVERHEAD`), padding costing its full price; on an
    accelerator, where padding is nearly free, so much that the fewest batches win (then the least padding)."""
    return PASS_OVERHEAD if device.type == "cpu" else 1e9


def length_batches(examples: list[Example], batch_size: int, overhead: float = PASS_OVERHEAD) -> list[list[int]]:
    """Indices of ``examples`` in batches of at most ``batch_size`` and similar length, in a fixed order.

    Sorted by length, then cut where the padded tokens plus ``overhead`` per batch add up least
    (:func:`cheapest_split`): a long example does not pad seven short ones to its length.
    """
    order = sorted(range(len(examples)), key=lambda i: (examples[i].prompt_len, max(map(len, examples[i].rows)), i))
    shapes = [(len(rows), max(map(len, rows))) for rows in (compact_rows(examples[i]).rows for i in order)]

    def cost(i: int, j: int) -> float:  # the batch's padded tokens: its rows times its widest row
        return overhead + sum(r for r, _ in shapes[i:j]) * max(w for _, w in shapes[i:j])

    return [order[group] for group in cheapest_split(len(order), cost, batch_size)]


@dataclass
class RowBatch:
    """Several examples' compacted rows in one right-padded batch; positions ``keep`` reach the LM head."""

    examples: list[Example]
    x: Tensor
    owner: Tensor  # [rows]: which example each row belongs to
    lengths: list[int]  # per row, its prompt length (the rows that decide the sink set)
    lo: int  # first position kept: the earliest last-prompt position

    @classmethod
    def of(cls, examples: list[Example], device: torch.device) -> "RowBatch":
        examples = [compact_rows(e) for e in examples]
        rows = tuple(r for e in examples for r in e.rows)
        owner = torch.tensor([k for k, e in enumerate(examples) for _ in e.rows], device=device)
        lengths = [e.prompt_len for e in examples for _ in e.rows]
        return cls(examples, pad_rows(rows, device), owner, lengths, min(e.prompt_len for e in examples) - 1)

    @property
    def keep(self) -> Tensor:
        return torch.arange(self.lo, self.x.shape[1], device=self.x.device)

    def choice_sums(self, log_probs: Tensor) -> list[Tensor]:
        """Per example, its choices' summed log-probabilities from ``log_probs`` [rows, keep, vocab]."""
        out, first = [], 0
        for e in self.examples:
            out.append(choice_sums(log_probs[first : first + len(e.rows)], e, e.prompt_len - 1 - self.lo))
            first += len(e.rows)
        return out


def map_scores(
    model: nn.Module, heads: dict[int, list[int]], examples: list[Example], settings: Settings, batch_size: int = 8,
) -> list[tuple[float, bool]]:
    """Per example, (log p(gold | choices), correct) with every head of ``heads`` calibrated together (batched)."""
    search = HeadSearch(model, settings)
    layers = {layer: settings.for_heads(sorted(hs)) for layer, hs in heads.items() if hs}
    out: list[tuple[float, bool]] = [(0.0, False)] * len(examples)
    for idx in length_batches(examples, batch_size, batch_overhead(search.device)):
        batch = RowBatch.of([examples[i] for i in idx], search.device)
        calls = {layer: LayerCall(layer_settings) for layer, layer_settings in layers.items()}
        with torch.no_grad():
            logits = model(batch.x, use_cache=False, logits_to_keep=batch.keep, **forward_arguments(batch.lengths, calls)).logits
        for i, e, sums in zip(idx, batch.examples, batch.choice_sums(torch.log_softmax(logits.float(), -1))):
            logliks = sums.double().tolist()
            out[i] = (gold_logprob(logliks, e.gold), is_correct(logliks, e.gold))
    return out
