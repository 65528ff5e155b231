"""``act-eval inspect``: one input captured before and after calibration, drawn as heatmap PNGs, a manifest of
the sink sets, and one HTML page.

:func:`inspect_input` captures the input (before calibration, and after when a head map is in
force); :func:`write_inspection` writes into one directory::

    overview.png                     layers by tokens: share of heads with each token as a sink
    layer<L>_before.png / _after.png every selected head of layer L, sinks marked
    layer<L>_head<H>.png             one head, every token labelled, before | after
    inspect.json                     tokens and, per pass, layer and head, the sink set and top column
    inspect.html                     one self-contained page (images embedded as base64)

The figures and ``inspect.json`` read the same records, so the marks are the sink sets listed.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from act_eval.core.enable import enable_act
from act_eval.core.head_map import check_threshold, resolve_head_map
from act_eval.core.rules import DEFAULT_THRESHOLD
from act_eval.core.switch import model_shape
from act_eval.files import atomic_write_text
from act_eval.sinks.capture import Capture, capture_attention
from act_eval.sinks.figures import HeadView, crop_note, plot_head, plot_layer, plot_sink_overview, shown_positions, token_label
from act_eval.sinks.prompts import encode, token_strings

if TYPE_CHECKING:
    from transformers import PreTrainedModel

FORMAT = "act-eval-inspect"
FORMAT_VERSION = 1
TOP_PREDICTIONS = 5


@dataclass(frozen=True)
class Inspection:
    """What was inspected and how: the input, the rule's settings, and what to draw."""

    model: str
    source: dict[str, Any]  # {"text": ...} or {"task": ..., "doc_id": ..., "text": ...}
    tokens: list[str]  # each token decoded on its own
    threshold: float
    head_map: dict[str, Any] | None  # name, hash, rule and its parameter (beta or factor), heads; None without calibration
    layers: list[int]  # layers drawn
    heads: list[int]  # heads drawn in each layer
    detail_heads: list[tuple[int, int]]  # (layer, head) drawn large, every token labelled


def inspect_input(
    model: PreTrainedModel,
    tokenizer: Any,
    identity: str,
    source: dict[str, Any],
    out: Path,
    *,
    layers: list[int],
    heads: list[int],
    detail: bool = False,
    head_map: str | None = None,
    threshold: float | None = None,
    beta: float | None = None,
    factor: float | None = None,
) -> Path:
    """One input's attention before calibration, and after it when ``head_map`` is given, written into ``out``
    (:func:`write_inspection`); returns the page. ``detail`` also draws each of ``heads`` large in every layer drawn.

    ``threshold`` marks the sinks drawn (ACT's, else the rule's default); for an ACT map it, and ``beta``, override
    the map's. A first-token map takes ``factor``; its threshold stays a marking, not the map's setting.
    """
    ids = encode(tokenizer, source["text"])
    if not ids:
        raise ValueError("the input encodes to no tokens")
    input_ids = torch.tensor([ids], device=model.device)
    recorded = None
    marked = DEFAULT_THRESHOLD if threshold is None else check_threshold(threshold)
    if head_map is not None:
        hm = resolve_head_map(head_map, model_id=identity, **model_shape(model))
        act = hm.rule == "act"
        controller = enable_act(model, hm, threshold=threshold if act else None, beta=beta, factor=factor, model_id=identity)
        marked = controller.threshold if act else marked
        recorded = {
            "name": hm.name or hm.source or "inline",
            "content_hash": hm.content_hash,
            "calibrated_heads": hm.num_calibrated,
            "rule": hm.rule,
            **({"beta": controller.beta} if act else {"factor": controller.factor}),
            "heads": {str(layer): list(h) for layer, h in sorted(hm.heads.items())},
        }
    before = capture_attention(model, input_ids, calibrate=False, threshold=marked, layers=layers)
    after = capture_attention(model, input_ids, threshold=marked, layers=layers) if recorded else None
    inspection = Inspection(
        model=identity,
        source=source,
        tokens=token_strings(tokenizer, ids),
        threshold=marked,
        head_map=recorded,
        layers=layers,
        heads=heads,
        detail_heads=[(layer, head) for layer in layers for head in heads] if detail else [],
    )
    return write_inspection(out, inspection, before, after, tokenizer)


def write_inspection(out: Path, inspection: Inspection, before: Capture, after: Capture | None, tokenizer: Any) -> Path:
    """Draw and write everything for one input; return the HTML page's path."""
    out.mkdir(parents=True, exist_ok=True)
    labels = [token_label(t) for t in inspection.tokens]
    shown = shown_positions(len(labels))
    passes = {"before": before} if after is None else {"before": before, "after": after}
    captions = {"before": "before calibration", "after": "after calibration"} if after else {"before": "no calibration"}
    title = f"{inspection.model} · {_source_line(inspection.source)}"
    images: dict[str, Any] = {
        "overview": plot_sink_overview(
            out / "overview.png",
            [(captions[name], _sinks(capture), _first_is_top(capture)) for name, capture in passes.items()],
            labels, shown, f"{title}\nshare of each layer's heads with the token in their sink set",
        ).name,  # fmt: skip
        "layers": {},
        "heads": {},
    }
    for layer in inspection.layers:
        images["layers"][layer] = {
            name: plot_layer(
                out / f"layer{layer:02d}_{name}.png",
                [_view(capture, layer, head) for head in inspection.heads],
                labels, shown, f"{title}\nlayer {layer}, {captions[name]}",
            ).name  # fmt: skip
            for name, capture in passes.items()
        }
    for layer, head in inspection.detail_heads:
        images["heads"][f"{layer}.{head}"] = plot_head(
            out / f"layer{layer:02d}_head{head:02d}.png",
            [(captions[name], _view(capture, layer, head)) for name, capture in passes.items()],
            labels, shown, f"{title}\nlayer {layer}, head {head}",
        ).name  # fmt: skip
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": inspection.model,
        "input": inspection.source,
        "threshold": inspection.threshold,
        "head_map": inspection.head_map,
        "tokens": inspection.tokens,
        "shown_positions": shown,
        "passes": {name: _pass_record(capture, tokenizer) for name, capture in passes.items()},
        "images": images,
    }
    atomic_write_text(out / "inspect.json", json.dumps(manifest, indent=1) + "\n")
    page = _page(out, inspection, manifest, labels, captions)
    # character references keep the page intact whatever encoding the file is written in
    return atomic_write_text(out / "inspect.html", page.encode("ascii", "xmlcharrefreplace").decode("ascii"))


def _sinks(capture: Capture) -> np.ndarray:
    return torch.stack([record.sinks[0] for record in capture.layers]).cpu().numpy()


def _first_is_top(capture: Capture) -> np.ndarray:
    return np.array([[top == 0 for top in record.top_columns()] for record in capture.layers])


def _view(capture: Capture, layer: int, head: int) -> HeadView:
    record = capture.layers[layer]
    return HeadView(
        head=head,
        probs=record.after[0, head].cpu().numpy(),
        sinks=record.sinks[0, head].cpu().numpy(),
        first_is_top=record.top_columns()[head] == 0,
        calibrated=head in record.calibrated_heads,
    )


def _pass_record(capture: Capture, tokenizer: Any) -> dict[str, Any]:
    """Sink sets and top columns per layer and head, and the top next-token predictions."""
    probs = torch.softmax(capture.next_token_logits[0], -1)
    top = torch.topk(probs, TOP_PREDICTIONS)
    return {
        "layers": [
            {
                "layer": record.layer,
                "calibrated_heads": list(record.calibrated_heads),
                "sinks": record.sink_positions(),
                "top_column": record.top_columns(),
            }
            for record in capture.layers
        ],
        "next_token": [[tokenizer.decode([i]), p] for i, p in zip(top.indices.tolist(), top.values.tolist())],
    }


def _rule_text(head_map: dict[str, Any]) -> str:
    """The map's rule and its parameter in words: ACT's beta, or first-token scaling's factor."""
    if head_map["rule"] == "act":
        return f"ACT, beta {head_map['beta']:g}"
    return f"first-token scaling, factor {head_map['factor']:g}"


def _source_line(source: dict[str, Any]) -> str:
    return f"{source['task']} doc {source['doc_id']}" if "task" in source else "text input"


def _img(out: Path, name: str, alt: str) -> str:
    data = base64.b64encode((out / name).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
img { max-width: 100%; border: 1px solid #ddd; margin: 4px; }
.pair { display: flex; flex-wrap: wrap; align-items: flex-start; }
.note { background: #fff6d5; padding: .5em; border-left: 4px solid #e0b000; }
.tok { display: inline-block; font-family: monospace; padding: 1px 3px; margin: 1px; border-radius: 3px; white-space: pre; }
nav a { margin-right: .6em; }
td, th { padding: 2px 10px; text-align: left; }
"""


def _page(out: Path, inspection: Inspection, manifest: dict[str, Any], labels: list[str], captions: dict[str, str]) -> str:
    """The HTML page: settings, legend, tokens, predictions, then every figure."""
    esc = html.escape
    before_layers = manifest["passes"]["before"]["layers"]
    counts = np.zeros(len(labels), dtype=int)  # heads (all layers, before) with each token as a sink
    for record in before_layers:
        for positions in record["sinks"]:
            counts[positions] += 1
    most = max(int(counts.max()), 1)
    chips = "".join(
        f'<span class="tok" title="position {pos}: sink in {count} heads" '
        f'style="background: rgba(232,17,45,{0.85 * count / most:.2f})">{esc(label)}</span>'
        for pos, (label, count) in enumerate(zip(labels, counts))
    )
    hm = inspection.head_map
    calibration = (
        f"head map {esc(hm['name'])} ({hm['calibrated_heads']} heads, {_rule_text(hm)}, {esc(hm['content_hash'][:19])})"
        if hm
        else "no calibration (give --head-map or --act-heads to see its effect)"
    )
    predictions = "".join(
        f"<tr><th>{esc(captions[name])}</th>"
        + "".join(f"<td>{esc(token_label(tok))!s} {100 * p:.1f}%</td>" for tok, p in record["next_token"])
        + "</tr>"
        for name, record in manifest["passes"].items()
    )
    note = crop_note(len(labels), manifest["shown_positions"])
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>act-eval inspect: {esc(inspection.model)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Attention sinks: {esc(inspection.model)}</h1>",
        f"<p><b>Input:</b> {esc(_source_line(inspection.source))}, {len(labels)} tokens. "
        f"<b>Sink threshold:</b> {inspection.threshold:g}. <b>Calibration:</b> {calibration}.</p>",
        f"<p class='note'>{esc(note)}</p>" if note else "",
        "<p><b>Marks:</b> <span style='color:#e8112d'>▼ red</span>: the key is in the head's sink set "
        "(mean attention from the rows that see it above the threshold; the keys ACT scales down in a calibrated head). "
        "<span style='color:#1f9bd7'>▽ blue</span>: the first token holds the head's highest column score "
        "(the initial sink, which the rule never calibrates). "
        "Colours use a power scale (gamma 0.4) so weak attention stays visible.</p>",
        "<h2>Tokens</h2><p>shaded by the number of heads (all layers, "
        f"{esc(captions['before'])}) that have the token as a sink</p>",
        f"<div>{chips}</div>",
        f"<h2>Next-token prediction</h2><table>{predictions}</table>",
        "<h2>Overview</h2>",
        _img(out, manifest["images"]["overview"], "overview"),
    ]
    if inspection.layers:
        parts.append("<h2>Layers</h2><nav>" + "".join(f"<a href='#layer{l}'>{l}</a>" for l in inspection.layers) + "</nav>")
        for layer in inspection.layers:
            pair = "".join(_img(out, name, f"layer {layer} {key}") for key, name in manifest["images"]["layers"][layer].items())
            parts.append(f"<h3 id='layer{layer}'>Layer {layer}</h3><div class='pair'>{pair}</div>")
    if inspection.detail_heads:
        parts.append("<h2>Heads</h2>")
        for key, name in manifest["images"]["heads"].items():
            layer, head = key.split(".")
            parts.append(f"<h3>Layer {layer}, head {head}</h3>{_img(out, name, f'layer {layer} head {head}')}")
    parts.append("</body></html>")
    return "\n".join(parts)
