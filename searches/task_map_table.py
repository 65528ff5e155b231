"""The README table for a search's per-task maps: each map's run on its own task against the baseline run,
with Holm across the maps (each map is one test of "this map helps its task", so a reader who scans the
column for a winner needs the family-wise correction across the rows, not within one).

    python searches/task_map_table.py BASELINE OUT

``OUT`` is ``evaluate_task_maps.sh``'s output folder: one run folder per task, named for the task the
map was evaluated on; the lite or full task is read from each run's own results.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from act_eval.compare.report import Row, compare_runs, signed_points
from act_eval.compare.stats import holm
from act_eval.lm.runs import load_run


def task_rows(baseline: Path, out: Path) -> list[tuple[str, Row, str]]:
    """(task, row, map) for every finished run under ``out``: the map is the name the run recorded."""
    base = load_run(baseline)
    rows = []
    for run_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        run = load_run(run_dir)
        (task,) = run.tasks
        report = compare_runs(base, run, [], tasks=[task])
        (row,) = [r for r in report.rows if r.task == task]
        rows.append((task, row, run.results.get("config", {}).get("act", {}).get("head_map", "?")))
    return rows


def table(rows: list[tuple[str, Row, str]]) -> str:
    adjusted = holm([row.p_value for _, row, _ in rows]) if rows else []
    lines = [
        f"| task | map | n | baseline -> map | p (Holm over {len(rows)}) |",
        "|---|---|--:|--:|--:|",
    ]
    for (task, row, name), p_holm in sorted(zip(rows, adjusted), key=lambda x: -x[0][1].diff):
        lines.append(
            f"| {task} | `{name}` | {row.n} | {100 * row.a_value:.1f} -> {100 * row.b_value:.1f} "
            f"({signed_points(row.diff)}) | {row.p_value:.2g} ({p_holm:.2g}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path, help="the baseline run (a board submission or a run folder)")
    parser.add_argument("out", type=Path, help="evaluate_task_maps.sh's output folder")
    args = parser.parse_args()
    print(table(task_rows(args.baseline, args.out)))


if __name__ == "__main__":
    main()
