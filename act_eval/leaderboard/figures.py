"""The board's plots: compare's forest plot per report, and a task x (model, head map) heatmap of ACT's gains."""

from __future__ import annotations

from pathlib import Path

from act_eval.compare.forest import forest_plot
from act_eval.leaderboard.board import Gain, Section
from act_eval.leaderboard.manifest import short_name


def section_plots(section: Section, directory: Path, alpha: float) -> list[Path]:
    """Every plot of one section, written under ``directory``; the heatmap only when there are ACT results."""
    written = [forest_plot(d.report, directory / d.plot) for d in section.details]
    if section.gains:
        written.append(gain_heatmap(section.gains, directory / heatmap_name(section.subset), alpha))
    return written


def heatmap_name(subset: str) -> str:
    return f"act_gain_heatmap.{subset}.png"


def gain_heatmap(gains: list[Gain], path: Path, alpha: float) -> Path:
    """ACT minus baseline (points) per task and ACT submission; a star marks p (adjusted) < alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(dict.fromkeys(g.task for g in sorted(gains, key=lambda g: (g.family, g.task))))
    columns = list(dict.fromkeys((g.model, g.head_map) for g in gains))
    grid = np.full((len(tasks), len(columns)), np.nan)
    marks = [["" for _ in columns] for _ in tasks]
    for g in gains:
        i, j = tasks.index(g.task), columns.index((g.model, g.head_map))
        grid[i, j] = 100 * g.diff
        marks[i][j] = f"{100 * g.diff:+.1f}" + ("*" if g.p < alpha else "")
    bound = max(1.0, float(np.nanmax(np.abs(grid))))
    fig, ax = plt.subplots(figsize=(1.8 * len(columns) + 3.5, 0.38 * len(tasks) + 1.8))
    image = ax.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    for i, row in enumerate(marks):
        for j, text in enumerate(row):
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(columns)), [f"{short_name(m)}\n{h}" for m, h in columns], fontsize=8)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    fig.colorbar(image, ax=ax, label="ACT − baseline (points)")
    ax.set_title(f"ACT gain per task; * p (Holm) < {alpha:g}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
