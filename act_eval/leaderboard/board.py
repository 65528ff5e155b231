"""The board's content: every accepted submission's values, and each arm's difference from its baseline.

Like is compared with like only: the board has one section per subset (lite, full), a column per
task family (the group directly above each task), and a difference is computed only between
submissions of the same model (id, revision or file hash) and subset, on the same documents
(checked when they were accepted). Values are the task's primary metric (the first of its
``metric_list``); a family's value is the unweighted mean over its tasks, as the suite's groups
aggregate. ICL values are means over few-shot seeds.

Differences and their significance come from :func:`act_eval.compare.report.compare_runs`, once per
model, family, ACT submission and first-token submission (with the model's ICL submission and its
label-prior rivals on that family, if any; without either, once for the other arms): paired bootstrap
intervals, McNemar or permutation p-values, Holm-adjusted across the family's tasks; a family's
difference is compare's group mean (stratified tests, unadjusted). Per model and family,
:class:`FamilyWinner` says which arm scores highest (batch calibration is marked transductive:
it uses the test inputs).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from act_eval.compare.defaults import ALPHA, RESAMPLES, SEED
from act_eval.compare.report import Report, compare_runs, rival_name
from act_eval.compare.report import Row as CompareRow
from act_eval.leaderboard.manifest import ARMS, CALIBRATED_ARMS
from act_eval.leaderboard.store import Accepted
from act_eval.rivals.label_prior import LABELS

ARM_ORDER = {arm: i for i, arm in enumerate(ARMS)}  # the order rows and comparisons take
# the winner table's columns: an arm, or a rival computed on an ACT run ("act+contextual")
KINDS = {
    "baseline": "baseline",
    "act": "ACT",
    "icl": "ICL",
    **LABELS,
    "first_token": "first-token scaling",
    **{f"act+{arm}": f"ACT + {label}" for arm, label in LABELS.items()},
}
ADJUST = "holm"  # p-value adjustment across a family's tasks
ACT_VS_BASELINE = "act vs baseline"  # compare's name of that comparison (its arms are "baseline" and "act")


@dataclass(frozen=True)
class Cell:
    """One arm's value on a task or family, and its difference from the model's baseline."""

    value: float
    std: float | None = None  # over few-shot seeds (ICL)
    diff: float | None = None
    low: float | None = None
    high: float | None = None
    p: float | None = None  # adjusted across the family's tasks; the family mean's own test is one test
    test: str | None = None
    verdict: str | None = None


@dataclass
class Row:
    """One submission in a section's main table."""

    id: str
    model: str
    weights: str
    arm: str
    kind: str  # a key of KINDS
    label: str
    suite: str
    date: str
    hardware: str
    families: dict[str, Cell] = field(default_factory=dict)
    tasks: dict[str, Cell] = field(default_factory=dict)


@dataclass(frozen=True)
class Detail:
    """One compare report: a model's ACT submission (and ICL) against its baseline on one family."""

    model: str  # model id
    family: str
    baseline: str
    act: str | None
    icl: str | None
    rivals: tuple[str, ...]  # label-prior rival submissions, and a first-token one
    report: Report
    plot: str  # file name under plots/

    @property
    def arms(self) -> list[str]:
        """The submissions compared with the baseline."""
        return [s for s in (self.act, self.icl, *self.rivals) if s]


@dataclass(frozen=True)
class FamilyWinner:
    """One model on one family: each kind of arm's value and difference, and the arm that scores highest."""

    model: str  # model id
    family: str
    cells: dict[str, Cell]  # KINDS key -> that arm's family cell (the best submission of that kind)
    best: str  # KINDS key of the highest value


@dataclass(frozen=True)
class Gain:
    """ACT's difference from the baseline on one task, for the cross-model view."""

    model: str  # model id
    submission: str
    head_map: str
    family: str
    task: str
    metric: str
    baseline: float
    act: float
    diff: float
    low: float
    high: float
    p: float
    verdict: str


@dataclass(frozen=True)
class ModelGain:
    """How much one model gains from ACT over all its (task, head map) results."""

    model: str
    results: int
    mean_diff: float
    gains: int  # significantly better than the baseline
    losses: int  # significantly worse
    best_task: str
    best_diff: float


@dataclass
class Section:
    subset: str
    families: dict[str, list[str]]  # family -> its tasks, in suite order
    metrics: dict[str, str]  # family -> its primary metric
    rows: list[Row]
    details: list[Detail]
    gains: list[Gain]
    models: list[ModelGain]
    winners: list[FamilyWinner] = field(default_factory=list)


@dataclass
class Board:
    sections: list[Section]
    submissions: list[Accepted]
    alpha: float
    adjust: str
    n_resamples: int
    seed: int


def build_board(
    submissions: Sequence[Accepted], *, n_resamples: int = RESAMPLES, seed: int = SEED, alpha: float = ALPHA
) -> Board:
    subsets = sorted({s.manifest.subset for s in submissions}, key=lambda s: (s != "lite", s))
    sections = [
        _section(subset, [s for s in submissions if s.manifest.subset == subset], n_resamples, seed, alpha)
        for subset in subsets
    ]
    return Board(sections, list(submissions), alpha, ADJUST, n_resamples, seed)


def family_label(family: str) -> str:
    """``act_multiple_choice_lite`` -> ``multiple_choice``: the section already says lite or full."""
    return family.removeprefix("act_").removesuffix("_lite")


def _section(subset: str, entries: list[Accepted], n_resamples: int, seed: int, alpha: float) -> Section:
    entries = sorted(entries, key=lambda e: (e.manifest.model.id, ARM_ORDER[e.manifest.arm], e.id))
    families: dict[str, list[str]] = {}
    metrics: dict[str, str] = {}
    for entry in entries:
        for task, info in entry.tasks.items():
            if task not in families.setdefault(info.family, []):
                families[info.family].append(task)
            if metrics.setdefault(info.family, info.metric) != info.metric:
                raise ValueError(f"family {info.family} mixes primary metrics ({metrics[info.family]}, {info.metric})")
    # by name, so a prompt variant's column (act_classification_spaced_lite) follows its family's
    families = dict(sorted(families.items()))
    rows = {e.id: _row(e, families) for e in entries}
    details: list[Detail] = []
    for family, tasks in families.items():
        for key in dict.fromkeys(e.manifest.model_key for e in entries):
            arms = {
                arm: [e for e in entries if e.manifest.model_key == key and e.manifest.arm == arm and _covers(e, tasks)]
                for arm in ARM_ORDER
            }
            if not arms["baseline"]:
                continue
            base = arms["baseline"][0]
            calibrated = [e for arm in CALIBRATED_ARMS for e in arms[arm]]
            # one first-token submission per comparison, as one ACT submission: compare names each arm once
            combos = itertools.product(arms["act"] or [None], arms["icl"] or [None], arms["first_token"] or [None])
            for act, icl, scaled in combos:
                rivals = calibrated + ([scaled] if scaled else [])
                if act is None and icl is None and not rivals:
                    continue
                report = compare_runs(
                    base.runs[0],
                    act.runs[0] if act else None,
                    icl.runs if icl else (),
                    rivals=[r.runs[0] for r in rivals],
                    tasks=tasks,
                    metric=metrics[family],
                    filter_name=base.tasks[tasks[0]].filter,
                    n_resamples=n_resamples,
                    seed=seed,
                    adjust=ADJUST,
                    alpha=alpha,
                )
                details.append(
                    Detail(
                        key[0], family, base.id, act.id if act else None, icl.id if icl else None,
                        tuple(r.id for r in rivals), report, _plot_name(base, act, icl, scaled, family),
                    )  # fmt: skip
                )
                if act:
                    _fill(rows[act.id], family, tasks, report, ACT_VS_BASELINE)
                if icl:
                    _fill(rows[icl.id], family, tasks, report, f"icl-{icl.manifest.fewshot.num_fewshot}shot vs baseline")
                for rival in rivals:
                    _fill(rows[rival.id], family, tasks, report, f"{rival_name(rival.runs[0])} vs baseline")
    gains = _gains(details, {e.id: e for e in entries})
    winners = _winners(list(rows.values()), families)
    return Section(subset, families, metrics, list(rows.values()), details, gains, _model_gains(gains, alpha), winners)


def _plot_name(base: Accepted, act: Accepted | None, icl: Accepted | None, scaled: Accepted | None, family: str) -> str:
    """One forest plot per comparison: named after its ACT (else baseline) submission and the ICL and first-token ones."""
    with_icl = f".with-icl-{icl.fingerprint.removeprefix('sha256:')[:8]}" if icl else ""
    with_scaled = f".with-first-token-{scaled.fingerprint.removeprefix('sha256:')[:8]}" if scaled else ""
    return f"forest.{act.id if act else base.id}{with_icl}{with_scaled}.{family_label(family)}.png"


def _covers(entry: Accepted, tasks: list[str]) -> bool:
    return all(t in entry.tasks for t in tasks)


def _row(entry: Accepted, families: dict[str, list[str]]) -> Row:
    m = entry.manifest
    row = Row(
        id=entry.id,
        model=m.model.id,
        weights=m.model.weights,
        arm=m.arm,
        kind=f"act+{m.arm}" if m.arm in CALIBRATED_ARMS and m.head_map else m.arm,
        label=m.arm_label,
        suite=m.suite,
        date=m.date,
        hardware=m.hardware,
    )
    per_run = {
        task: [run.reported(task, info.metric, info.filter) for run in entry.runs] for task, info in entry.tasks.items()
    }
    for task, values in per_run.items():
        row.tasks[task] = _spread_cell(values)
    for family, tasks in families.items():
        if _covers(entry, tasks):  # each run's family mean, then their mean and spread over runs (seeds)
            row.families[family] = _spread_cell(np.mean([per_run[t] for t in tasks], axis=0).tolist())
    return row


def _spread_cell(per_run: list[float]) -> Cell:
    return Cell(float(np.mean(per_run)), float(np.std(per_run, ddof=1)) if len(per_run) > 1 else None)


def _fill(row: Row, family: str, tasks: list[str], report: Report, comparison: str) -> None:
    """Copy a comparison's differences into the row's task cells and its family cell."""
    for r in report.rows:
        if r.comparison != comparison:
            continue
        if r.task != "mean":
            row.tasks[r.task] = _with_diff(row.tasks[r.task], r)
        if r.task == "mean" or len(tasks) == 1:  # one task: its row is the family's
            row.families[family] = _with_diff(row.families[family], r)


def _with_diff(cell: Cell, r: CompareRow) -> Cell:
    return Cell(cell.value, cell.std, r.diff, r.diff_low, r.diff_high, r.p_adjusted, r.test, r.verdict)


def _winners(rows: list[Row], families: dict[str, list[str]]) -> list[FamilyWinner]:
    """Per model (and weights) and family, each kind of arm's best family cell, and the kind that scores highest."""
    out = []
    for model, weights in dict.fromkeys((r.model, r.weights) for r in rows):
        mine = [r for r in rows if (r.model, r.weights) == (model, weights)]
        for family in families:
            cells: dict[str, Cell] = {}
            for kind in KINDS:
                found = [r.families[family] for r in mine if r.kind == kind and family in r.families]
                if found:
                    cells[kind] = max(found, key=lambda c: c.value)
            if len(cells) > 1:
                out.append(FamilyWinner(model, family, cells, max(cells, key=lambda k: cells[k].value)))
    return out


def _gains(details: list[Detail], entries: dict[str, Accepted]) -> list[Gain]:
    """ACT's per-task differences, once per (ACT submission, task), largest first."""
    seen: dict[tuple[str, str], Gain] = {}
    for d in (d for d in details if d.act):
        head_map = entries[d.act].manifest.head_map
        for r in d.report.rows:
            if r.comparison == ACT_VS_BASELINE and r.task != "mean" and (d.act, r.task) not in seen:
                seen[(d.act, r.task)] = Gain(
                    model=d.model,
                    submission=d.act,
                    head_map=head_map.name if head_map else "",
                    family=d.family,
                    task=r.task,
                    metric=r.metric,
                    baseline=r.a_value,
                    act=r.b_value,
                    diff=r.diff,
                    low=r.diff_low,
                    high=r.diff_high,
                    p=r.p_adjusted,
                    verdict=r.verdict,
                )
    return sorted(seen.values(), key=lambda g: (-g.diff, g.model, g.task))


def _model_gains(gains: list[Gain], alpha: float) -> list[ModelGain]:
    """Per model: mean difference, significant gains and losses, best task; the model that gains most first."""
    out = []
    for model in dict.fromkeys(g.model for g in gains):
        mine = [g for g in gains if g.model == model]
        best = max(mine, key=lambda g: g.diff)
        out.append(
            ModelGain(
                model=model,
                results=len(mine),
                mean_diff=float(np.mean([g.diff for g in mine])),
                gains=sum(g.p < alpha and g.diff > 0 for g in mine),
                losses=sum(g.p < alpha and g.diff < 0 for g in mine),
                best_task=best.task,
                best_diff=best.diff,
            )
        )
    return sorted(out, key=lambda m: -m.mean_diff)
