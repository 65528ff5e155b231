"""The board as markdown (``leaderboard/README.md``) and as JSON (``leaderboard/leaderboard.json``).

Numbers are shown in points (x100). A difference carries ``*`` when its p-value is below alpha:
for a family, compare's stratified test of the unweighted mean over its tasks; for a task, the
p-value adjusted across the family's tasks.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib import resources

from act_eval.compare.report import format_report, signed_points
from act_eval.leaderboard.board import KINDS, Board, Cell, Section, family_label
from act_eval.leaderboard.figures import heatmap_name
from act_eval.leaderboard.manifest import short_name, shots_label

JSON_FORMAT = "act-eval-leaderboard"
SUBSET_TITLES = {"lite": "Lite subset (at most 200 documents per task)", "full": "Full evaluation splits"}


def submission_format() -> str:
    """The submission format's documentation (``format.md`` in this package)."""
    return resources.files("act_eval.leaderboard").joinpath("format.md").read_text(encoding="utf-8")


def points(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def signed(x: float | None) -> str:
    return "–" if x is None else signed_points(x)


def value_text(cell: Cell) -> str:
    """``45.1``, or ``45.1 ± 0.8`` with a spread over few-shot seeds."""
    return points(cell.value) + (f" ± {points(cell.std)}" if cell.std is not None else "")


def cell_text(cell: Cell | None, alpha: float) -> str:
    """:func:`value_text`, and ``(+1.9*)`` with a difference from the baseline."""
    if cell is None:
        return "–"
    text = value_text(cell)
    if cell.diff is not None:
        text += f" ({signed(cell.diff)}{significance(cell, alpha)})"
    return text


def significance(cell: Cell, alpha: float) -> str:
    return "*" if cell.p is not None and cell.p < alpha else ""


def markdown(board: Board, screenshot: str | None = None) -> str:
    out = [
        "# act-eval leaderboard",
        "",
        "Verified lm-eval runs of the act-eval suites, per model: the baseline, ACT (`hf-act` with a head map), "
        "k-shot in-context learning and the training-free label-prior rivals (`act-eval calibrate`: contextual "
        "calibration, Zhao et al. 2021; batch calibration, Zhou et al. 2024, which is **transductive**: its prior "
        "is the mean over the test inputs) and first-token attention scaling (ZeroTuning's idea: `hf-act` with a "
        "first-token head map). Every entry passed `act-eval submit`: metrics recomputed from the logged "
        "samples (a rival's from its logged log-likelihoods and prior), full evaluation splits, document hashes "
        "against the task data, the head map's content hash. "
        "Differences and their significance come from `act_eval.compare` (paired tests on the same documents). "
        "Sortable tables and plots: [index.html](index.html); every number: [leaderboard.json](leaderboard.json). "
        "Built by `act-eval leaderboard build`; do not edit by hand.",
        "",
    ]
    if screenshot:
        out += [f"![the board in a browser]({screenshot})", ""]
    if not board.sections:
        out += ["No submissions yet: see [Submitting](#submitting) below.", ""]
    for section in board.sections:
        out += _section_markdown(board, section)
    if board.submissions:
        out += _submissions_markdown(board)
    out.append(submission_format())
    return "\n".join(out).rstrip() + "\n"


def _section_markdown(board: Board, section: Section) -> list[str]:
    families = list(section.families)
    metrics = ", ".join(f"{family_label(f)}: {section.metrics[f]}" for f in families)
    out = [
        f"## {SUBSET_TITLES.get(section.subset, section.subset)}",
        "",
        f"Primary metric per family ({metrics}), in points; a family's value is the unweighted mean over its "
        f"tasks. In brackets: the difference from the same model's baseline, `*` when p < {board.alpha:g} "
        "(stratified paired test of the family mean). ICL: mean ± std over few-shot seeds.",
        "",
        "| model | arm | suite | " + " | ".join(family_label(f) for f in families) + " | submission |",
        "|---|---|---|" + "--:|" * len(families) + "---|",
    ]
    for row in section.rows:
        cells = " | ".join(cell_text(row.families.get(f), board.alpha) for f in families)
        out.append(f"| {short_name(row.model)} | {row.label} | {row.suite} | {cells} | `{row.id}` |")
    out.append("")
    if section.winners:
        out += _winners_markdown(board, section)
    if section.gains:
        out += [
            "### Which model gains most from ACT",
            "",
            "Over each model's ACT results (one per task and head map): the mean difference from its baseline and how "
            f"many are significant (p Holm-adjusted within the family < {board.alpha:g}).",
            "",
            "| model | ACT results | mean difference | significant gains | significant losses | best task |",
            "|---|--:|--:|--:|--:|---|",
        ]
        for m in section.models:
            out.append(
                f"| {short_name(m.model)} | {m.results} | {signed(m.mean_diff)} | {m.gains} | {m.losses} | "
                f"{m.best_task} ({signed(m.best_diff)}) |"
            )
        out += [
            "",
            "| model | head map | task | baseline | ACT | difference [95% CI] | p (Holm) | verdict |",
            "|---|---|---|--:|--:|---|--:|---|",
        ]
        for g in section.gains:
            out.append(
                f"| {short_name(g.model)} | {g.head_map} | {g.task} | {points(g.baseline)} | {points(g.act)} | "
                f"{signed(g.diff)} [{signed(g.low)}, {signed(g.high)}] | {g.p:.3g} | {g.verdict} |"
            )
        out += ["", f"![ACT gain per task](plots/{heatmap_name(section.subset)})", ""]
    if section.details:
        out += ["### Per-task comparisons", ""]
        for d in section.details:
            arms = ", ".join(f"`{a}`" for a in d.arms)
            out += [
                f"#### {short_name(d.model)} · {family_label(d.family)}: {arms} against `{d.baseline}`",
                "",
                format_report(d.report, "markdown").replace("### ", "##### "),
                f"![forest plot](plots/{d.plot})",
                "",
            ]
    return out


def _winners_markdown(board: Board, section: Section) -> list[str]:
    """Per model and family: every kind of arm's value (difference from the baseline) and the highest."""
    kinds = [k for k in KINDS if any(k in w.cells for w in section.winners)]
    out = [
        "### Which arm wins, per model and family",
        "",
        "Each arm's family value (difference from the baseline, `*` when p < "
        f"{board.alpha:g}); the best arm is the highest value. Batch calibration is transductive (its prior is "
        "the mean over the test inputs), so it is not a like-for-like rival of arms that never see them.",
        "",
        "| model | family | " + " | ".join(KINDS[k] for k in kinds) + " | best arm |",
        "|---|---|" + "--:|" * len(kinds) + "---|",
    ]
    for w in section.winners:
        cells = " | ".join(cell_text(w.cells.get(k), board.alpha) for k in kinds)
        best = w.cells[w.best]
        out.append(
            f"| {short_name(w.model)} | {family_label(w.family)} | {cells} | "
            f"**{KINDS[w.best]}** ({signed(best.diff) if best.diff is not None else 'reference'}) |"
        )
    return out + [""]


def _submissions_markdown(board: Board) -> list[str]:
    out = [
        "## Submissions",
        "",
        "| id | model | weights | arm | suite | few-shot | lm-eval | transformers | act-eval | hardware | run on | accepted |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in board.submissions:
        m = s.manifest
        shots = shots_label(m)
        out.append(
            f"| `{s.id}` | {m.model.id} | `{m.model.weights}` | {m.arm_label} | {m.suite} | {shots} | {m.versions.lm_eval} | "
            f"{m.versions.transformers} | {m.versions.act_eval} | {m.hardware} | {m.date} | {s.accepted} |"
        )
    return out + [""]


def board_json(board: Board) -> str:
    """Every number of the board, with the settings that produced them and each submission's manifest."""
    data = {
        "format": JSON_FORMAT,
        "format_version": 1,
        "settings": {
            "alpha": board.alpha,
            "adjust": board.adjust,
            "n_resamples": board.n_resamples,
            "seed": board.seed,
        },
        "submissions": [{**s.record(), "manifest": json.loads(s.manifest.to_json())} for s in board.submissions],
        "sections": [
            {
                "subset": section.subset,
                "families": section.families,
                "metrics": section.metrics,
                "rows": [asdict(row) for row in section.rows],
                "models": [asdict(m) for m in section.models],
                "winners": [asdict(w) for w in section.winners],
                "gains": [asdict(g) for g in section.gains],
                "comparisons": [
                    {
                        "model": d.model,
                        "family": d.family,
                        "baseline": d.baseline,
                        "act": d.act,
                        "rivals": list(d.rivals),
                        "icl": d.icl,
                        "plot": f"plots/{d.plot}",
                        "report": json.loads(format_report(d.report, "json")),
                    }
                    for d in section.details
                ],
            }
            for section in board.sections
        ],
    }
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"
