"""Dataset-level sink statistics: which tokens become sinks, in which layers and heads, how often.

Counts come from :class:`act_eval.sinks.capture.LayerAttention` records (sink sets from
:func:`act_eval.core.calibration.sink_set`), one document at a time, so ``act-eval inspect`` on any
of the documents marks exactly the sinks counted here. Definitions, per (document, layer, head):

- a *sink event* is one position of the head's sink set (the first token never is one: the
  rule keeps the initial sink); a token's ``sink_rate`` is its events divided by its
  occurrences (beyond position 0) times the number of heads;
- the head *has a sink beyond the first token* when its sink set is not empty;
- the *first token is the top column* when position 0 holds the head's highest column score;
- an event is *near the end* when it falls on the last :data:`NEAR_END` positions, whose
  scores average over that few rows (the last key's score is the last row's self-attention).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from act_eval.core.switch import model_shape
from act_eval.files import atomic_write_text
from act_eval.sinks.capture import LayerAttention, capture_attention
from act_eval.sinks.figures import TOP_TOKENS, token_label
from act_eval.sinks.prompts import Prompt, encode, token_strings

if TYPE_CHECKING:
    from transformers import PreTrainedModel

FORMAT = "act-eval-sinks"
FORMAT_VERSION = 1
NEAR_END = 4


class _Totals:
    """Per-(layer, head) document counts over some documents."""

    def __init__(self, num_layers: int, num_heads: int) -> None:
        self.documents = 0
        self.beyond_first = np.zeros((num_layers, num_heads), dtype=np.int64)
        self.first_top = np.zeros((num_layers, num_heads), dtype=np.int64)
        self.events: Counter[str] = Counter()

    def shares(self) -> tuple[np.ndarray, np.ndarray]:
        n = max(self.documents, 1)
        return self.beyond_first / n, self.first_top / n


class SinkStats:
    """Accumulates sink sets document by document; :meth:`summary` gives the JSON content."""

    def __init__(
        self, model: str, num_layers: int, num_heads: int, threshold: float, tasks: Sequence[str], limit: int | None
    ) -> None:
        self.model, self.threshold, self.tasks, self.limit = model, threshold, list(tasks), limit
        self.num_layers, self.num_heads = num_layers, num_heads
        self.total = _Totals(num_layers, num_heads)
        self.per_task: dict[str, _Totals] = {}
        self.token_events: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((num_layers, num_heads), dtype=np.int64))
        self.occurrences: Counter[str] = Counter()
        self.near_end: Counter[str] = Counter()
        self.documents: list[dict[str, Any]] = []

    def add(self, prompt: Prompt, tokens: Sequence[str], layers: Sequence[LayerAttention]) -> None:
        """Count one document (batch row 0 of its capture); ``tokens`` are its decoded token strings."""
        task = self.per_task.setdefault(prompt.task, _Totals(self.num_layers, self.num_heads))
        sinks: list[list[int]] = []
        for record in layers:
            layer = record.layer
            for head, (positions, top) in enumerate(zip(record.sink_positions(), record.top_columns())):
                for totals in (self.total, task):
                    totals.beyond_first[layer, head] += bool(positions)
                    totals.first_top[layer, head] += top == 0
                for pos in positions:
                    self.token_events[tokens[pos]][layer, head] += 1
                    self.total.events[tokens[pos]] += 1
                    task.events[tokens[pos]] += 1
                    self.near_end[tokens[pos]] += pos >= len(tokens) - NEAR_END
                    sinks.append([layer, head, pos])
        self.total.documents += 1
        task.documents += 1
        self.occurrences.update(tokens[1:])
        self.documents.append({"task": prompt.task, "doc_id": prompt.doc_id, "num_tokens": len(tokens), "sinks": sinks})

    def summary(self) -> dict[str, Any]:
        """The statistics as JSON-ready data (tokens sorted by sink events, most first)."""
        heads = self.num_layers * self.num_heads
        all_events = max(sum(self.total.events.values()), 1)
        beyond, first = self.total.shares()
        tokens = [
            {
                "token": token,
                "sink_events": events,
                "share_of_events": events / all_events,
                "near_end_events": self.near_end[token],
                "occurrences": self.occurrences[token],
                "sink_rate": events / (self.occurrences[token] * heads),
                "heads": int((self.token_events[token] > 0).sum()),
                "per_layer_head": self.token_events[token].tolist(),
            }
            for token, events in self.total.events.most_common()
        ]
        per_task = {}
        for name, totals in self.per_task.items():
            task_beyond, task_first = totals.shares()
            per_task[name] = {
                "documents": totals.documents,
                "share_of_heads_with_sink_beyond_first": float(task_beyond.mean()),
                "share_of_heads_first_token_top": float(task_first.mean()),
                "top_tokens": [[token, events] for token, events in totals.events.most_common(5)],
            }
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "tasks": self.tasks,
            "limit": self.limit,
            "threshold": self.threshold,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_documents": self.total.documents,
            "share_of_heads_with_sink_beyond_first": float(beyond.mean()),
            "share_of_heads_first_token_top": float(first.mean()),
            "near_end": NEAR_END,
            "share_of_events_near_end": sum(self.near_end.values()) / all_events,
            "per_layer": [
                {"layer": layer, "sink_beyond_first": float(b.mean()), "first_token_top": float(f.mean())}
                for layer, (b, f) in enumerate(zip(beyond, first))
            ],
            "per_layer_head": {"sink_beyond_first": beyond.tolist(), "first_token_top": first.tolist()},
            "tokens": tokens,
            "per_task": per_task,
            "documents": self.documents,
        }


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    """Write the statistics atomically (compact: per-head matrices and per-document sink lists are long)."""
    return atomic_write_text(path, json.dumps(summary) + "\n")


def count_sinks(
    model: PreTrainedModel, tokenizer: Any, identity: str, prompts: Sequence[Prompt], threshold: float,
    tasks: Sequence[str], limit: int | None,
) -> SinkStats:
    """Every prompt captured on its own (the whole input is the prompt) and its sink sets counted."""
    import torch
    from tqdm import tqdm

    shape = model_shape(model)
    stats = SinkStats(identity, shape["num_layers"], shape["num_heads"], threshold, tasks, limit)
    for prompt in tqdm(prompts, desc="documents", unit="doc"):
        ids = encode(tokenizer, prompt.text)
        capture = capture_attention(model, torch.tensor([ids], device=model.device), threshold=threshold, keep_probs=False)
        stats.add(prompt, token_strings(tokenizer, ids), capture.layers)
    return stats


def summary_table(summary: dict[str, Any], top: int = TOP_TOKENS) -> str:
    """The headline numbers and the ``top`` most frequent sink tokens, as a Markdown table."""
    near_end = summary["near_end"]
    lines = [
        f"{summary['model']} on {', '.join(summary['tasks'])}: {summary['num_documents']} documents, "
        f"{summary['num_layers']} layers x {summary['num_heads']} heads, threshold {summary['threshold']:g}",
        f"heads whose highest column is the first token: {100 * summary['share_of_heads_first_token_top']:.1f}%",
        f"heads with a sink beyond the first token: {100 * summary['share_of_heads_with_sink_beyond_first']:.1f}%",
        f"sink events on the last {near_end} positions: {100 * summary['share_of_events_near_end']:.1f}%",
        "",
        f"| token | share of sink events | of which on the last {near_end} positions | occurrences | sink rate | heads |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for token in summary["tokens"][:top]:
        lines.append(
            f"| `{token_label(token['token']).replace('|', '¦')}` | {100 * token['share_of_events']:.1f}% "
            f"| {100 * token['near_end_events'] / token['sink_events']:.0f}% | {token['occurrences']} "
            f"| {token['sink_rate']:.3f} | {token['heads']} |"
        )
    return "\n".join(lines)
