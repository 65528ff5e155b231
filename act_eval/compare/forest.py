"""Forest plot of a comparison report: each task's difference with its interval, one panel per comparison."""

from __future__ import annotations

from pathlib import Path

from act_eval.compare.report import Report


def forest_plot(report: Report, path: str | Path) -> Path:
    """Write the differences (points) with their intervals as a PNG; filled markers are significant after adjustment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comparisons = report.comparisons
    n_rows = len(report.tasks) + (1 if len(report.tasks) > 1 else 0)
    fig, axes = plt.subplots(
        1, len(comparisons), figsize=(4.2 * len(comparisons) + 1.5, 0.45 * n_rows + 1.6), sharex=True, sharey=True, squeeze=False
    )
    for ax, comparison in zip(axes[0], comparisons):
        rows = [r for r in report.rows if r.comparison == comparison]
        for y, row in enumerate(rows):
            significant = row.p_adjusted < report.alpha
            colour = ("tab:green" if row.diff > 0 else "tab:red") if significant else "tab:gray"
            ax.errorbar(
                100 * row.diff,
                y,
                xerr=[[100 * (row.diff - row.diff_low)], [100 * (row.diff_high - row.diff)]],
                fmt="D" if row.task == "mean" else "o",
                color=colour,
                markerfacecolor=colour if significant else "white",
                capsize=3,
            )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [r.task for r in rows])
        ax.set_title(comparison, fontsize=10)
        ax.set_xlabel(f"difference in {report.metric} (points)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()
    fig.suptitle(
        f"{round(report.confidence * 100, 2):g}% paired-bootstrap intervals; filled: p ({report.adjust}) < {report.alpha:g}",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
