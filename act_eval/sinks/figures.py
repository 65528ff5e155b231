"""Figures of the sink analysis: attention heatmaps with sinks marked, and dataset statistics.

Everything here draws arrays it is given (probabilities, sink sets, counts); nothing computes a
sink. Images stay bounded whatever the input: at most :data:`MAX_TOKENS` positions are drawn
(the first and last ones, with the gap marked), and the per-layer overview aggregates heads.
Marks: a red triangle (and, in single-head figures, a red outline) on every key of the head's
sink set, the keys ACT calibrates; a hollow triangle on the first token where it holds the
head's highest column score, the initial sink the rule keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_TOKENS = 96  # positions drawn per axis
TOP_TOKENS = 15  # the most frequent sink tokens shown: in the statistics' figure and their summary table
_KEEP_FIRST = 24  # of those, taken from the start of a long input (the rest from its end)
_CELL = 0.1  # inches per token in single-head figures (labels stay readable)
_SINK = "#e8112d"
_INITIAL = "#1f9bd7"


@dataclass(frozen=True)
class HeadView:
    """One head of one pass, as drawn: its probabilities and marks."""

    head: int
    probs: np.ndarray  # [N, N] query rows by key columns
    sinks: np.ndarray  # [N] bool: the rule's sink set
    first_is_top: bool  # the first token holds the highest column score
    calibrated: bool  # ACT recalibrated this head in this pass


def token_label(text: str, width: int = 14) -> str:
    """A token as a readable axis label: newlines as ⏎, tabs as ⇥, a blank token as ␣, long ones cut."""
    label = text.replace("\r", "").replace("\n", "⏎").replace("\t", "⇥")
    if not label.strip():
        label = "␣" * max(len(label), 1)
    return label if len(label) <= width else label[: width - 1] + "…"


def shown_positions(n: int, cap: int = MAX_TOKENS) -> list[int]:
    """The positions drawn for an ``n``-token input: all of them, or the first and last ones up to ``cap``."""
    if n <= cap:
        return list(range(n))
    return list(range(_KEEP_FIRST)) + list(range(n - (cap - _KEEP_FIRST), n))


def crop_note(n: int, shown: Sequence[int]) -> str | None:
    """The sentence that says what a cropped figure leaves out (``None`` when nothing is)."""
    if len(shown) == n:
        return None
    gap = _gap(shown)
    return (
        f"{n} tokens: figures show positions 0-{shown[gap - 1]} and {shown[gap]}-{n - 1} "
        f"({n - len(shown)} in between hidden, marked by a dashed line); sink sets and statistics use every token."
    )


def _gap(shown: Sequence[int]) -> int | None:
    """Index in ``shown`` after which positions were skipped, if any."""
    for k in range(1, len(shown)):
        if shown[k] != shown[k - 1] + 1:
            return k
    return None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _norm():
    from matplotlib.colors import PowerNorm

    return PowerNorm(gamma=0.4, vmin=0.0, vmax=1.0)  # sinks take most of the mass: lift the rest


def _draw_head(ax: Any, view: HeadView, labels: Sequence[str], shown: Sequence[int], full: bool) -> Any:
    """Heatmap of one head on ``ax`` with its marks; ``full`` labels every token, else only the marked ones."""
    idx = np.asarray(shown)
    image = ax.imshow(view.probs[np.ix_(idx, idx)], cmap="magma", norm=_norm(), interpolation="nearest", aspect="auto")
    marked = [(k, _SINK) for k, pos in enumerate(shown) if view.sinks[pos]]
    if view.first_is_top and shown[0] == 0:
        marked.insert(0, (0, _INITIAL))
    for k, colour in marked:
        filled = colour == _SINK
        ax.plot(k, -0.5, marker="v", markersize=6 if full else 5, clip_on=False, color=colour,
                markerfacecolor=colour if filled else "none", zorder=5)  # fmt: skip
        if full and filled:
            ax.add_patch(_column_outline(k, len(shown)))
    gap = _gap(shown)
    if gap is not None:
        ax.axvline(gap - 0.5, color="white", linestyle="--", linewidth=1)
        ax.axhline(gap - 0.5, color="white", linestyle="--", linewidth=1)
    if full:
        ticks = list(range(len(shown)))
        ax.set_xticks(ticks, [labels[p] for p in shown], rotation=90, fontsize=6)
        ax.set_yticks(ticks, [f"{labels[p]} {p}" for p in shown], fontsize=6)
        for k, colour in marked:
            ax.get_xticklabels()[k].set_color(colour)
    else:
        ax.set_xticks([k for k, _ in marked], [labels[shown[k]] for k, _ in marked], rotation=90, fontsize=6)
        for tick, (_, colour) in zip(ax.get_xticklabels(), marked):
            tick.set_color(colour)
        ax.set_yticks([])
    ax.tick_params(length=2, pad=1)
    return image


def _column_outline(k: int, n: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((k - 0.5, k - 0.5), 1, n - k, fill=False, edgecolor=_SINK, linewidth=0.8)


def plot_layer(path: Path, views: Sequence[HeadView], labels: Sequence[str], shown: Sequence[int], title: str) -> Path:
    """One layer, one pass: a grid of small heatmaps, one per head, only the marked tokens labelled."""
    plt = _pyplot()
    cols = int(np.ceil(np.sqrt(len(views))))
    rows = int(np.ceil(len(views) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols + 0.6, 2.5 * rows + 0.7), squeeze=False, layout="constrained")
    for ax in axes.flat[len(views):]:
        ax.axis("off")
    for ax, view in zip(axes.flat, views):
        image = _draw_head(ax, view, labels, shown, full=False)
        sinks = int(view.sinks.sum())
        ax.set_title(
            f"head {view.head}: {sinks} sink{'s' * (sinks != 1)}" + (" · calibrated" if view.calibrated else ""),
            fontsize=8, pad=9, color=_SINK if view.calibrated else "black",
        )  # fmt: skip
    fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention probability")
    return _save(fig, path, dpi=80)


def plot_head(
    path: Path, panels: Sequence[tuple[str, HeadView]], labels: Sequence[str], shown: Sequence[int], title: str
) -> Path:
    """One head, every token labelled: one panel per pass (before, after calibration), same colour scale."""
    plt = _pyplot()
    side = _CELL * len(shown) + 1.6
    fig, axes = plt.subplots(
        1, len(panels), figsize=(side * len(panels) + 0.8, side + 0.6), squeeze=False, sharey=True, layout="constrained"
    )
    for ax, (caption, view) in zip(axes[0], panels):
        image = _draw_head(ax, view, labels, shown, full=True)
        ax.set_title(caption, fontsize=9, pad=10)
        ax.set_xlabel("key (attended to)", fontsize=7)
    axes[0][0].set_ylabel("query", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.5, label="attention probability")
    return _save(fig, path, dpi=100)


def plot_sink_overview(
    path: Path, panels: Sequence[tuple[str, np.ndarray, np.ndarray]], labels: Sequence[str], shown: Sequence[int], title: str
) -> Path:
    """Layers by tokens: the share of a layer's heads with each token in their sink set.

    ``panels`` holds ``(caption, sinks [L, H, N] bool, first_is_top [L, H] bool)`` per pass. The
    first token's column shows instead the share of heads whose highest column score it holds.
    """
    plt = _pyplot()
    num_layers = panels[0][1].shape[0]
    width = _CELL * len(shown) + 1.4
    fig, axes = plt.subplots(
        1, len(panels), figsize=(width * len(panels) + 1.0, 0.16 * num_layers + 1.9),
        squeeze=False, sharey=True, layout="constrained",
    )  # fmt: skip
    idx = np.asarray(shown)
    for ax, (caption, sinks, first_is_top) in zip(axes[0], panels):
        share = sinks.mean(axis=1)  # [L, N]
        share[:, 0] = first_is_top.mean(axis=1)
        image = ax.imshow(share[:, idx], cmap="Reds", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        ax.set_xticks(range(len(shown)), [labels[p] for p in shown], rotation=90, fontsize=6)
        ax.set_yticks(range(num_layers), [str(layer) for layer in range(num_layers)], fontsize=6)
        ax.set_title(caption, fontsize=9)
        gap = _gap(shown)
        if gap is not None:
            ax.axvline(gap - 0.5, color="black", linestyle="--", linewidth=1)
    axes[0][0].set_ylabel("layer", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.6, label="share of heads (first token: highest column)")
    return _save(fig, path, dpi=90)


def plot_sink_stats(path: Path, stats: dict[str, Any], top: int = TOP_TOKENS) -> Path:
    """Dataset statistics from :mod:`act_eval.sinks.stats`: top sink tokens, and per layer and head the
    share of documents with a sink beyond the first token and with the first token as top column."""
    plt = _pyplot()
    tokens = stats["tokens"][:top]
    beyond = np.asarray(stats["per_layer_head"]["sink_beyond_first"])
    first = np.asarray(stats["per_layer_head"]["first_token_top"])
    num_layers, num_heads = beyond.shape
    height = max(4.0, 0.16 * num_layers + 1.8)
    head_width = min(0.3 * num_heads + 1.6, 8.0)
    fig, axes = plt.subplots(
        1, 3, figsize=(5.0 + 2 * head_width, height),
        gridspec_kw={"width_ratios": [5.0, head_width, head_width]}, layout="constrained",
    )  # fmt: skip
    bars = axes[0]
    total = np.array([100 * t["share_of_events"] for t in tokens])
    near_end = np.array([t["near_end_events"] / t["sink_events"] for t in tokens]) * total
    bars.barh(range(len(tokens)), total, color=_SINK, label="elsewhere")
    bars.barh(range(len(tokens)), near_end, color="#f4a3ad", label=f"on the last {stats['near_end']} positions")
    bars.legend(fontsize=7, loc="lower right")
    bars.set_yticks(range(len(tokens)), [f"“{token_label(t['token'])}”" for t in tokens], fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("% of all sink events (first token excluded)", fontsize=8)
    bars.set_title(f"most frequent sink tokens ({stats['num_documents']} documents)", fontsize=9)
    for y, t in enumerate(tokens):
        bars.text(total[y], y, f" rate {t['sink_rate']:.3f}", va="center", fontsize=6)
    overall_beyond = 100 * stats["share_of_heads_with_sink_beyond_first"]
    overall_first = 100 * stats["share_of_heads_first_token_top"]
    for ax, grid, caption in (
        (axes[1], beyond, f"sink beyond the first token\n({overall_beyond:.0f}% of heads overall)"),
        (axes[2], first, f"first token is the top column\n({overall_first:.0f}% of heads overall)"),
    ):
        image = ax.imshow(grid, cmap="Reds", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        ax.set_xlabel("head", fontsize=8)
        ax.set_ylabel("layer", fontsize=8)
        ax.set_xticks(range(num_heads), [str(h) for h in range(num_heads)], fontsize=6)
        ax.set_yticks(range(num_layers), [str(layer) for layer in range(num_layers)], fontsize=6)
        ax.set_title(caption, fontsize=9)
    fig.colorbar(image, ax=axes[1:], shrink=0.7, label="share of documents")
    names = stats["tasks"] if len(stats["tasks"]) <= 3 else [*stats["tasks"][:3], f"{len(stats['tasks']) - 3} more tasks"]
    fig.suptitle(f"{stats['model']}: attention sinks on {', '.join(names)} (threshold {stats['threshold']:g})", fontsize=10)
    return _save(fig, path, dpi=90)


def _save(fig: Any, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
