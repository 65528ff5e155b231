"""Paired comparison of evaluation arms (baseline, ACT, k-shot ICL, label-prior rivals) on the documents they share.

Per task and for the unweighted group mean over tasks it reports each arm's value with an
interval, the difference with a paired-bootstrap interval, a p-value (raw and adjusted across
tasks) and a plain verdict. Which interval and which test, and why:

- arm interval: Wilson for 0/1 outcomes under a mean metric (accuracy, exact match); otherwise
  (macro-F1, fractional ICL averages, the group mean) the percentile bootstrap over documents;
- difference interval: percentile paired bootstrap (both arms resample the same documents);
- p-value: McNemar (exact binomial below ``stats.EXACT_MCNEMAR_BELOW`` discordant documents,
  continuity-corrected chi-square above) when both arms have 0/1 outcomes under a mean metric;
  the paired permutation test otherwise: corpus-level metrics, the ICL arm (per-document
  correctness averaged over seeds is fractional, which McNemar cannot take) and the group mean
  (swaps within every task of the group);
- adjustment: Holm (default) or Benjamini-Hochberg across the tasks of one comparison; the group
  mean is a single test and is reported unadjusted.

The ICL arm is several runs of the same task at k shots with different few-shot seeds: its value
is the mean over seeds, its spread the standard deviation over seeds (ddof=1), and its
per-document values for the paired tests are correctness averaged over seeds.

Rivals are single runs re-scored by a label prior (``act-eval calibrate``: contextual or batch
calibration, :mod:`act_eval.rivals.label_prior`), or ``hf-act`` runs of a first-token head map, named from
what their results file records (batch calibration's name says it is transductive). Each arm is
compared with the baseline; with an ACT run, ACT is also compared with ICL and with every rival.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from act_eval.compare import stats
from act_eval.compare.defaults import ADJUSTMENTS, AGGREGATIONS, ALPHA, CONFIDENCE, FORMATS, RESAMPLES, SEED
from act_eval.lm.runs import Run, TaskSamples, check_paired, read_task_samples, select_tasks
from act_eval.rivals.label_prior import arm_name

FIRST_TOKEN = "first-token"  # the arm name of a first-token scaling run (ZeroTuning's idea, a head map's rule)
# lm-eval registry names of the pair aggregations act-eval can name explicitly
_REGISTRY_NAMES = {"f1": "f1", "mcc": "matthews_corrcoef"}


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: a single run, or the seed runs of the ICL arm."""

    name: str
    runs: tuple[Run, ...]


@dataclass(frozen=True)
class TaskArm:
    """One arm's per-document values on one task (averaged over runs for a multi-run arm)."""

    values: np.ndarray
    per_run: tuple[float, ...]  # the metric of each run on all documents


@dataclass(frozen=True)
class Row:
    """One line of the report: a task (or the group mean) in one comparison."""

    comparison: str
    task: str
    n: int
    metric: str
    a_name: str
    a_value: float
    a_low: float
    a_high: float
    a_interval: str
    a_std: float | None  # spread over seeds, multi-run arms only
    b_name: str
    b_value: float
    b_low: float
    b_high: float
    b_interval: str
    b_std: float | None
    diff: float
    diff_low: float
    diff_high: float
    test: str
    p_value: float
    p_adjusted: float
    verdict: str


@dataclass
class Report:
    """Rows of every comparison plus the settings that produced them."""

    metric: str
    confidence: float
    alpha: float
    adjust: str
    n_resamples: int
    seed: int
    arms: dict[str, list[str]]
    tasks: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def comparisons(self) -> list[str]:
        return list(dict.fromkeys(r.comparison for r in self.rows))


def compare_runs(
    baseline: Run,
    act: Run | None,
    icl: Sequence[Run] = (),
    *,
    rivals: Sequence[Run] = (),
    tasks: Sequence[str] | None = None,
    metric: str = "acc",
    filter_name: str | None = None,
    aggregation: str = AGGREGATIONS[0],
    confidence: float = CONFIDENCE,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
    adjust: str = ADJUSTMENTS[0],
    alpha: float = ALPHA,
) -> Report:
    """Compare every arm with the baseline, and ACT (if given) with ICL and each rival, task by task.

    Refuses (ValueError) when the arms cover different tasks or documents, when baseline and
    ACT or a rival saw different prompts, or when the recomputed metric disagrees with lm-eval's
    own number.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; use one of {', '.join(AGGREGATIONS)}")
    stats.adjust_p_values([], adjust)  # validates the name before any work
    if act is None and not icl and not rivals:
        raise ValueError("nothing to compare with the baseline: give an ACT run, ICL runs or a rival")
    rival_arms = [Arm(rival_name(run), (run,)) for run in rivals]
    names = [arm.name for arm in rival_arms]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"two rivals are both {twice}: compare one run per method")
    runs = {
        "baseline": [baseline],
        **({"act": [act]} if act is not None else {}),
        **({"icl": list(icl)} if icl else {}),
        **{arm.name: list(arm.runs) for arm in rival_arms},
    }
    seen: dict[Path, str] = {}
    for name, group in runs.items():
        for run in group:
            other = seen.setdefault(run.results_path.resolve(), name)
            if other != name:
                raise ValueError(f"{other} and {name} are the same run ({run}): compare different runs")
    task_names = select_tasks(runs, tasks)
    act_arm = Arm("act", (act,)) if act is not None else None
    icl_arm = Arm(_icl_name(icl, task_names[0]), tuple(icl)) if icl else None
    base_arm = Arm("baseline", (baseline,))
    arms = [base_arm, *(a for a in (act_arm, icl_arm) if a), *rival_arms]
    report = Report(
        metric=metric,
        confidence=confidence,
        alpha=alpha,
        adjust=adjust,
        n_resamples=n_resamples,
        seed=seed,
        arms={arm.name: [str(run) for run in arm.runs] for arm in arms},
        tasks=task_names,
    )
    for arm in arms:
        for run in arm.runs:
            if run.other_runs:
                report.notes.append(
                    f"{arm.name}: {run.results_path.parent} holds {len(run.other_runs) + 1} runs; using the "
                    f"newest, {run.results_path.name} (pass a results_*.json file to pick another)"
                )

    data: dict[str, dict[str, TaskArm]] = {}
    metrics: dict[str, stats.Metric] = {}
    higher: dict[str, bool] = {}
    for task in task_names:
        samples = {arm.name: [read_task_samples(run, task, filter_name) for run in arm.runs] for arm in arms}
        _check_arms(samples, arms, icl_arm)
        metric_fn, how = _resolve_metric(samples["baseline"][0], metric, aggregation)
        metrics[task] = metric_fn
        higher[task] = baseline.higher_is_better(task, metric)
        data[task] = {}
        for arm in arms:
            per_run = [s.values(metric) for s in samples[arm.name]]
            if len(per_run) > 1 and per_run[0].ndim == 2:
                raise ValueError(
                    f"{task}: {arm.name} has {len(per_run)} runs but {metric!r} is a corpus-level metric "
                    "(gold, pred per document), which cannot be averaged over seeds per document; "
                    "compare the ICL arm on a per-document metric such as acc"
                )
            scores = tuple(float(metric_fn(v[None])[0]) for v in per_run)
            for s, score in zip(samples[arm.name], scores):
                _check_reported(s, metric, score, how)
            data[task][arm.name] = TaskArm(np.mean(per_run, axis=0) if len(per_run) > 1 else per_run[0], scores)

    pairs = [(base_arm, arm) for arm in arms[1:]]
    if act_arm:
        pairs += [(arm, act_arm) for arm in arms[2:]]
    for a, b in pairs:
        report.rows.extend(_comparison_rows(report, a, b, data, metrics, higher))
    return report


def _icl_name(icl: Sequence[Run], task: str) -> str:
    """``icl-4shot``; seed runs re-scored by ``act-eval calibrate`` add their method (``icl-4shot+contextual-cal``)."""
    names = {arm_name(run.results.get("config", {})) for run in icl}
    if len(names) > 1:
        raise ValueError(f"the ICL runs mix calibrations ({', '.join(sorted(map(str, names)))}): one arm per method")
    (calibrated,) = names
    return f"icl-{icl[0].n_shot(task)}shot" + (f"+{calibrated}" if calibrated else "")


def rival_name(run: Run) -> str:
    """A rival's arm name: its label calibration's (``act-eval calibrate``), else :data:`FIRST_TOKEN` for a run
    of a first-token head map (``hf-act`` records the map's rule in ``config.act``)."""
    config = run.results.get("config", {})
    name, act = arm_name(config), config.get("act")
    if name is None and isinstance(act, dict) and act.get("rule") == "first_token":
        return FIRST_TOKEN
    if name is None:
        raise ValueError(
            f"{run} records no calibration (config.calibration, or a first-token map in config.act): make a rival "
            "with `act-eval calibrate`, or run hf-act with a first-token head map"
        )
    return name


def _check_arms(samples: dict[str, list[TaskSamples]], arms: list[Arm], icl: Arm | None) -> None:
    """Every arm scored the baseline's documents; all but ICL also its prompts; ICL seeds differ."""
    base = samples["baseline"][0]
    filters = {s.filter for group in samples.values() for s in group}
    if len(filters) > 1:
        raise ValueError(f"{base.task}: the runs were read under different filters ({', '.join(sorted(filters))})")
    for arm in arms[1:]:
        for s in samples[arm.name]:
            check_paired(base, s, names=("baseline", arm.name), same_prompt=arm is not icl)
    if icl:
        group = samples[icl.name]
        for i, first in enumerate(group):
            for second in group[i + 1 :]:
                if first.prompt_hashes == second.prompt_hashes:
                    raise ValueError(
                        f"{base.task}: ICL runs {first.run} and {second.run} have identical prompts for every "
                        "document: they did not use different few-shot seeds"
                    )


def _resolve_metric(samples: TaskSamples, metric: str, aggregation: str) -> tuple[stats.Metric, str]:
    """How to recompute ``metric`` on a resampled document set, and a name for messages."""
    values = samples.values(metric)
    if values.ndim == 1:
        if aggregation not in ("auto", "mean"):
            raise ValueError(
                f"{samples.task}: {metric!r} has one number per document; only the mean aggregation applies, "
                f"not {aggregation!r}"
            )
        return stats.mean_metric, "mean"
    if aggregation == "mean":
        raise ValueError(f"{samples.task}: {metric!r} logs (gold, pred) pairs, which have no mean; use macro_f1, f1 or mcc")
    if aggregation == "auto":
        configured = samples.run.metric_config(samples.task, metric).get("aggregation")
        if isinstance(configured, str) and "def " in configured:
            aggregation = "macro_f1"  # a task-defined function (logged as source): check it is macro-F1
        elif not configured:
            return _registry_metric(samples, metric, None)
        else:
            aggregation = configured
    if aggregation == "macro_f1":
        return stats.macro_f1, "macro_f1"
    return _registry_metric(samples, metric, _REGISTRY_NAMES.get(aggregation, aggregation))


def _registry_metric(samples: TaskSamples, metric: str, name: str | None) -> tuple[stats.Metric, str]:
    """lm-eval's own aggregation: registered under ``name``, or the metric's default when None."""
    from lm_eval.api.registry import get_aggregation, get_metric_aggregation

    aggregate = get_aggregation(name) if name else get_metric_aggregation(metric)
    if aggregate is None:
        raise ValueError(
            f"{samples.task}: no lm-eval aggregation {name or 'default'!r} for {metric!r}; pass --aggregation"
        )
    return stats.items_metric(aggregate), name or aggregate.__name__


def _check_reported(samples: TaskSamples, metric: str, recomputed: float, how: str) -> None:
    """The value recomputed from the samples must be lm-eval's own, or the report would describe another metric."""
    reported = samples.run.reported(samples.task, metric, samples.filter)
    if reported is not None and not np.isclose(recomputed, reported, rtol=1e-6, atol=1e-9):
        raise ValueError(
            f"{samples.task}: {metric} recomputed from the samples as {how} is {recomputed:.6f}, but "
            f"{samples.run} reports {reported:.6f}; pass --aggregation to name the task's aggregation"
        )


def _comparison_rows(
    report: Report,
    a: Arm,
    b: Arm,
    data: dict[str, dict[str, TaskArm]],
    metrics: dict[str, stats.Metric],
    higher: dict[str, bool],
) -> list[Row]:
    """Rows of ``b`` against reference ``a``: one per task, then the group mean when there are several."""
    tasks, confidence, n_resamples, seed = report.tasks, report.confidence, report.n_resamples, report.seed
    comparison = f"{b.name} vs {a.name}"
    raw: list[dict] = []
    for task in tasks:
        x, y = data[task][a.name], data[task][b.name]
        fn = metrics[task]
        boot = stats.paired_bootstrap(x.values, y.values, fn, confidence=confidence, n_resamples=n_resamples, seed=seed)
        a_binary, b_binary = _one_outcome_each(x, fn), _one_outcome_each(y, fn)
        if a_binary and b_binary:
            test = stats.mcnemar(x.values, y.values)
            p, test_name = test.p_value, test.method
        else:
            perm = stats.paired_permutation_test(x.values, y.values, fn, n_resamples=n_resamples, seed=seed)
            p, test_name = perm.p_value, "permutation" + (" (exact)" if perm.exact else "")
        raw.append(
            dict(
                task=task,
                n=len(x.values),
                a=_arm_cells(x, boot.a, boot.a_interval, a_binary, confidence),
                b=_arm_cells(y, boot.b, boot.b_interval, b_binary, confidence),
                boot=boot,
                test=test_name,
                p=p,
                higher=higher[task],
            )
        )
    adjusted = stats.adjust_p_values([r["p"] for r in raw], report.adjust)
    for r, p_adj in zip(raw, adjusted):
        r["p_adj"] = float(p_adj)
    if len(tasks) > 1:
        strata = [(data[t][a.name].values, data[t][b.name].values, metrics[t]) for t in tasks]
        boot = stats.stratified_paired_bootstrap(strata, confidence=confidence, n_resamples=n_resamples, seed=seed)
        perm = stats.stratified_paired_permutation_test(strata, n_resamples=n_resamples, seed=seed)

        def group_arm(name: str, value: float, interval: tuple[float, float]) -> dict:
            per_run = np.mean([data[t][name].per_run for t in tasks], axis=0)
            return _cells(value, interval, "bootstrap", _spread(per_run))

        raw.append(
            dict(
                task="mean",
                n=sum(len(data[t][a.name].values) for t in tasks),
                a=group_arm(a.name, boot.a, boot.a_interval),
                b=group_arm(b.name, boot.b, boot.b_interval),
                boot=boot,
                test="permutation" + (" (exact)" if perm.exact else "") + f" over {len(tasks)} tasks",
                p=perm.p_value,
                p_adj=perm.p_value,
                higher=all(higher[t] for t in tasks),
            )
        )
    rows = []
    for r in raw:
        boot = r["boot"]
        rows.append(
            Row(
                comparison=comparison,
                task=r["task"],
                n=r["n"],
                metric=report.metric,
                a_name=a.name,
                **{f"a_{k}": v for k, v in r["a"].items()},
                b_name=b.name,
                **{f"b_{k}": v for k, v in r["b"].items()},
                diff=boot.diff,
                diff_low=boot.diff_interval[0],
                diff_high=boot.diff_interval[1],
                test=r["test"],
                p_value=float(r["p"]),
                p_adjusted=r["p_adj"],
                verdict=_verdict(boot.diff, r["p_adj"], report.alpha, r["higher"], a.name, b.name),
            )
        )
    return rows


def _one_outcome_each(arm: TaskArm, metric: stats.Metric) -> bool:
    """McNemar and Wilson need one 0/1 outcome per document: a single run under a mean metric."""
    return metric is stats.mean_metric and len(arm.per_run) == 1 and stats.is_binary(arm.values)


def _arm_cells(arm: TaskArm, value: float, boot_interval: tuple[float, float], binary: bool, confidence: float) -> dict:
    if binary:
        successes = int(round(arm.values.sum()))
        return _cells(value, stats.wilson_interval(successes, len(arm.values), confidence), "Wilson", None)
    return _cells(value, boot_interval, "bootstrap", _spread(arm.per_run))


def _cells(value: float, interval: tuple[float, float], method: str, spread: float | None) -> dict:
    return dict(value=float(value), low=float(interval[0]), high=float(interval[1]), interval=method, std=spread)


def _spread(per_run: Sequence[float]) -> float | None:
    return float(np.std(per_run, ddof=1)) if len(per_run) > 1 else None


def _verdict(diff: float, p_adjusted: float, alpha: float, higher_is_better: bool, a: str, b: str) -> str:
    if p_adjusted < alpha and diff != 0:
        better = (diff > 0) == higher_is_better
        return f"{b} {'better' if better else 'worse'} than {a}"
    return "no significant difference"


# ----------------------------------------------------------------------------- output


def format_report(report: Report, fmt: str) -> str:
    """The report as a markdown table per comparison, one table of every arm against the baseline,
    JSON, or CSV (one row per task and comparison)."""
    if fmt == "json":
        settings = {k: v for k, v in asdict(report).items() if k not in ("rows", "notes")}
        settings["exact_mcnemar_below"] = stats.EXACT_MCNEMAR_BELOW
        return json.dumps({**settings, "rows": [asdict(r) for r in report.rows]}, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(Row.__dataclass_fields__), lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(r) for r in report.rows)
        return out.getvalue()
    if fmt == "markdown":
        return _markdown(report)
    if fmt == "arms":
        return _arms_table(report)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def _markdown(report: Report) -> str:
    level = round(report.confidence * 100, 2)
    lines = []
    for comparison in report.comparisons:
        rows = [r for r in report.rows if r.comparison == comparison]
        first = rows[0]
        lines += [
            f"### {comparison} ({report.metric}, points, {level:g}% intervals)",
            "",
            f"| task | n | {first.a_name} | {first.b_name} | {first.b_name} − {first.a_name} | test | p | "
            f"p ({report.adjust}) | verdict |",
            "|---|--:|---|---|---|---|--:|--:|---|",
        ]
        for r in rows:
            task = f"**mean** ({len(report.tasks)} tasks)" if r.task == "mean" else r.task
            lines.append(
                f"| {task} | {r.n} | {_arm_text(r.a_value, r.a_low, r.a_high, r.a_std)} | "
                f"{_arm_text(r.b_value, r.b_low, r.b_high, r.b_std)} | "
                f"{signed_points(r.diff)} [{signed_points(r.diff_low)}, {signed_points(r.diff_high)}] | {r.test} | "
                f"{_p_text(r.p_value)} | {_p_text(r.p_adjusted)} | {r.verdict} |"
            )
        lines.append("")
    seeds = "; ± is the std over few-shot seeds" if any(len(runs) > 1 for runs in report.arms.values()) else ""
    lines.append(
        f"Arm intervals: Wilson for 0/1 outcomes, percentile bootstrap otherwise; differences: paired "
        f"bootstrap ({report.n_resamples} resamples, seed {report.seed}){seeds}. p adjusted ({report.adjust}) "
        f"across the tasks of each comparison; the group mean is one test (unadjusted). Verdicts at "
        f"alpha = {report.alpha:g}."
    )
    return "\n".join(lines) + "\n"


def _arms_table(report: Report) -> str:
    """Rows = tasks, columns = the baseline and each arm compared with it: the view a reader scans
    across arms. A cell is the arm's value (± std over seeds), its difference from the baseline and
    the adjusted p, in bold when below alpha."""
    against = [c for c in report.comparisons if c.endswith(" vs baseline")]
    if not against:
        raise ValueError("the arms table needs arms compared with a baseline")
    cells: dict[str, dict[str, Row]] = {}
    for r in report.rows:
        if r.comparison in against:
            cells.setdefault(r.task, {})[r.b_name] = r
    arms = [c.removesuffix(" vs baseline") for c in against]
    lines = [
        f"| task | n | baseline | {' | '.join(arms)} |",
        "|---|--:|--:|" + "---|" * len(arms),
    ]
    for task, by_arm in cells.items():
        first = next(iter(by_arm.values()))
        name = f"**mean** ({len(report.tasks)} tasks)" if task == "mean" else task
        row = [name, str(first.n), f"{100 * first.a_value:.1f}"]
        for arm in arms:
            r = by_arm.get(arm)
            if r is None:
                row.append("–")
                continue
            spread = f" ± {100 * r.b_std:.1f}" if r.b_std is not None else ""
            mark = "**" if r.p_adjusted < report.alpha else ""
            row.append(f"{100 * r.b_value:.1f}{spread} ({mark}{signed_points(r.diff)}{mark}, p {_p_text(r.p_adjusted)})")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"Cells: {report.metric} in points (difference from the baseline, p adjusted ({report.adjust}) across "
        f"tasks; the mean row's p is one test of the group mean); bold when p < {report.alpha:g}.",
    ]
    return "\n".join(lines) + "\n"


def _arm_text(value: float, low: float, high: float, std: float | None) -> str:
    spread = f" ± {100 * std:.1f}" if std is not None else ""
    return f"{100 * value:.1f}{spread} [{100 * low:.1f}, {100 * high:.1f}]"


def signed_points(x: float) -> str:
    """A difference in points with its sign and a true minus (``+1.9``, ``−0.4``); one that rounds to zero is ``+0.0``."""
    points = round(100 * x, 1) or 0.0  # no "-0.0" for a difference that rounds to zero
    return f"{points:+.1f}".replace("-", "−")


def _p_text(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"
