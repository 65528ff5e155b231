"""``act-eval calibrate``: an lm-eval run re-scored by a label prior, written as an lm-eval run of its own.

The output is what ``lm_eval --output_path OUT --log_samples`` writes (``OUT/<model>/results_<date>.json``
and one ``samples_<task>_<date>.jsonl`` per task), so ``act-eval compare``, ``act-eval submit``
and the board read it like any run. Each sample keeps the base run's lines as logged (document,
requests, ``resps``, hashes: the same prompts, so it pairs with the baseline per document) with
its metrics re-scored (:mod:`act_eval.rivals.label_prior`) and a ``calibration`` entry holding the prior
it was scored with (and, for contextual calibration, the content-free inputs' log-likelihoods it
came from); the results file's ``config.calibration`` says which method ran, on which run, and
each task's prior(s). Everything but the content-free log-likelihoods can thus be recomputed
from the files alone (:func:`check_calibrated`, what ``act-eval submit`` runs).

Contextual calibration needs the model for the content-free prompts only: each document's
logged context is its own prompt (description, and for k-shot runs exactly the demonstrations
that document was shown), so the content-free prompt is that context with the document's query
replaced by the template rendered on :func:`label_prior.content_free_doc`. Zero-shot, every
document of a task shares one content-free prompt per input (a few forward passes per task).
The model is the base run's own (its ``config.model`` and ``model_args``): calibrating an ACT run
computes the prior under the same calibrated model (ACT + contextual calibration).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from act_eval import __version__
from act_eval.files import atomic_write_text
from act_eval.icl import icl_run_files, load_icl_runs, write_icl_manifest
from act_eval.lm.runs import Run, choice_scores, expand_group, load_run, read_records, samples_digest
from act_eval.lm.suite import lm_eval_group, project_task_manager, quiet
from act_eval.rivals.label_prior import (
    CALIBRATION_KEY,
    CONTENT_FREE,
    METHODS,
    TRANSDUCTIVE,
    batch_priors,
    calibrated_choice,
    check_prior,
    content_free_doc,
    mean_prior,
)

if TYPE_CHECKING:
    from lm_eval.api.model import LM

NORMALISATION = "softmax over the choices of lm-eval's summed continuation log-likelihoods"
_PAIR_METRICS = ("f1", "mcc")  # logged as [gold, pred] per document
_RTOL = 1e-9


@dataclass(frozen=True)
class TaskCalibration:
    """One task re-scored: its samples as they will be written, and what the results file records about it."""

    task: str
    filter: str
    records: list[dict[str, Any]]
    summary: dict[str, Any]


def calibrate_run(
    run: Run,
    method: str,
    output_path: Path,
    *,
    tasks: Sequence[str] | None = None,
    lm: LM | None = None,
    model_record: dict[str, Any] | None = None,
) -> Path:
    """Write ``run`` re-scored by ``method`` under ``output_path``; return the results file.

    ``tasks`` (tasks or groups; default all) picks what to calibrate; a group is written with its
    aggregate as lm-eval computes it. Contextual calibration needs ``lm`` (the model that made the
    run) and ``model_record`` (how it was loaded, for the record).
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration {method!r}; use one of {', '.join(METHODS)}")
    if CALIBRATION_KEY in run.results.get("config", {}):
        raise ValueError(f"{run} is already calibrated ({run.results['config'][CALIBRATION_KEY]['method']})")
    names = list(tasks or run.tasks)
    groups = [n for n in names if run.results.get("group_subtasks", {}).get(n)]
    leaves = list(dict.fromkeys(t for n in names for t in expand_group(n, [run])))
    missing = [t for t in leaves if t not in run.tasks]
    if missing:
        raise ValueError(f"{run} has no samples for {', '.join(missing)}")
    task_objects = _task_objects(leaves) if method == "contextual" else {}
    if method == "contextual" and lm is None:
        raise ValueError("contextual calibration needs the model for the content-free prompts")
    done = [_calibrate_task(run, task, method, lm, task_objects.get(task)) for task in leaves]
    return _write(run, method, output_path, groups, done, model_record)


def calibrate_arm(
    given: Path,
    paths: Sequence[Path],
    method: str,
    output_path: Path,
    *,
    tasks: Sequence[str] | None = None,
    model: str | None = None,
    device: str | None = None,
    batch_size: str = "8",
) -> tuple[list[Path], Path | None]:
    """Re-score one run, or every seed run of an ICL arm, by ``method``; the results files and the ICL manifest.

    ``paths`` is what ``given`` (the path the user named) stands for: one run, or an ICL arm (several runs, or an
    ``act-eval icl run`` directory), whose seed runs are each re-scored with their own demonstrations into
    ``OUT/seed_<S>/`` and listed in an ``icl.json`` (None for one run), so the result is an ICL arm again.
    Contextual calibration loads the first run's own model once (:func:`run_model`; ``model`` overrides its type).
    """
    icl = len(paths) > 1 or icl_run_files(given) is not None
    runs = load_icl_runs(paths) if icl else [load_run(given)]
    lm, record = run_model(runs[0], model, device, batch_size) if method == "contextual" else (None, None)
    written = []
    for run in runs:
        out = output_path / f"seed_{run.fewshot_seed}" if icl else output_path
        written.append(calibrate_run(run, method, out, tasks=tasks, lm=lm, model_record=record))
    if not icl:
        return written, None
    seeds = [run.fewshot_seed for run in runs]
    runs_written = [str(w.relative_to(output_path)) for w in written]
    return written, write_icl_manifest(output_path, seeds, runs_written, calibration=method, base=str(given))


def run_model(run: Run, model: str | None, device: str | None, batch_size: str) -> tuple[LM, dict[str, Any]]:
    """The run's own model (type and arguments as recorded), for the content-free prompts; and how it was loaded."""
    from lm_eval.api.registry import get_model

    model_type = model or run.results["config"]["model"]
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    args = dict(run.model_args)
    lm = get_model(model_type).create_from_arg_obj(args, {"batch_size": batch_size, "device": device})
    return lm, {"model": model_type, "model_args": args, "device": device, "batch_size": batch_size}


def _calibrate_task(run: Run, task: str, method: str, lm: LM | None, task_object: Any) -> TaskCalibration:
    filter_name, records = read_records(run, task)
    scores = [choice_scores(task, r) for r in records]
    for record, s in zip(records, scores):
        if float(record.get("acc", np.nan)) != float(int(np.argmax(s.loglikelihoods)) == s.gold):
            raise ValueError(
                f"{task} doc_id {s.doc_id}: the logged acc is not argmax of the logged log-likelihoods; "
                "this run was not scored as lm-eval's multiple_choice tasks are"
            )
    summary: dict[str, Any] = {"filter": filter_name}
    if method == "batch":
        by_size = batch_priors([s.loglikelihoods for s in scores])
        summary["priors"] = {str(n): p.tolist() for n, p in by_size.items()}
        entries = [{"prior": by_size[len(s.loglikelihoods)].tolist()} for s in scores]
    else:
        entries, prompts = _content_free(task, records, scores, lm, task_object)
        summary["content_free_prompts"] = len(prompts)
        distinct = {json.dumps(e["prior"]) for e in entries}
        summary["priors"] = [json.loads(p) for p in sorted(distinct)] if len(distinct) <= 10 else "per document"
        if len(prompts) <= 3 * 10:
            summary["prompts"] = prompts
    out = []
    for record, s, entry in zip(records, scores, entries):
        out.append(_rescored(task, record, s.gold, calibrated_choice(s.loglikelihoods, entry["prior"]), method, entry))
    return TaskCalibration(task, filter_name, out, summary)


def _content_free(
    task: str, records: list[dict[str, Any]], scores: list[Any], lm: LM, task_object: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each document's content-free prior from its own context; the distinct content-free prompts scored."""
    from lm_eval.api.instance import Instance

    per_doc: list[list[tuple[str, tuple[str, ...]]]] = []
    for record, s in zip(records, scores):
        if len(set(s.contexts)) != 1:
            raise ValueError(f"{task} doc_id {s.doc_id}: the choices have different contexts; no content-free prompt fits")
        context, doc = s.contexts[0], record["doc"]
        query = task_object.doc_to_text(doc)
        if not isinstance(query, str) or not context.endswith(query):
            raise ValueError(
                f"{task} doc_id {s.doc_id}: the logged context does not end in the task's rendering of the document "
                "(a chat template or another prompt?), so its demonstrations cannot be kept apart from it"
            )
        prefix = context[: len(context) - len(query)]
        per_doc.append([(prefix + task_object.doc_to_text(content_free_doc(doc, text)), s.continuations) for text in CONTENT_FREE])
    prompts = list(dict.fromkeys(ctx for doc in per_doc for ctx, _ in doc))
    pairs = list(dict.fromkeys((ctx, cont) for doc in per_doc for ctx, conts in doc for cont in conts))
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i, metadata=(task, i, 1))
        for i, pair in enumerate(pairs)
    ]
    scored = dict(zip(pairs, (float(ll) for ll, _ in lm.loglikelihood(instances))))
    entries = []
    for doc in per_doc:
        lls = [[scored[(ctx, cont)] for cont in conts] for ctx, conts in doc]
        entries.append(
            {
                "prior": mean_prior(lls).tolist(),
                "content_free": {
                    "inputs": list(CONTENT_FREE),
                    "loglikelihoods": lls,
                    "prompt_hash": hashlib.sha256("\x00".join(ctx for ctx, _ in doc).encode()).hexdigest(),
                },
            }
        )
    return entries, prompts


def _rescored(task: str, record: dict[str, Any], gold: int, pred: int, method: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The logged line with its metrics for the calibrated prediction and the calibration recorded."""
    out = dict(record)
    for metric in record.get("metrics") or []:
        if metric == "acc":
            out["acc"] = float(pred == gold)
        elif metric in _PAIR_METRICS:
            out[metric] = [gold, pred]
        else:
            raise ValueError(f"{task}: cannot re-score metric {metric!r} by a label prior (acc, f1 and mcc only)")
    out[CALIBRATION_KEY] = {"method": method, **entry}
    return out


def _task_objects(tasks: Sequence[str]) -> dict[str, Any]:
    with quiet():
        return project_task_manager().load(list(tasks))["tasks"]


def _write(
    run: Run,
    method: str,
    output_path: Path,
    groups: list[str],
    done: list[TaskCalibration],
    model_record: dict[str, Any] | None,
) -> Path:
    from lm_eval.api.metrics import stderr_for_metric

    base = run.results
    tasks = [d.task for d in done]
    results = {k: v for k, v in base.items()}
    metrics: dict[str, dict[str, Any]] = {}
    objects = _task_objects(tasks)
    for d in done:
        aggregations = objects[d.task].aggregation()
        entry = {k: v for k, v in base["results"][d.task].items() if "," not in k}
        for metric in d.records[0].get("metrics") or []:
            values = [r[metric] for r in d.records]
            entry[f"{metric},{d.filter}"] = float(aggregations[metric](values))
            stderr = stderr_for_metric(aggregations[metric], int(base["config"].get("bootstrap_iters") or 0))
            entry[f"{metric}_stderr,{d.filter}"] = float(stderr(values)) if stderr else "N/A"
        metrics[d.task] = entry
    for group in groups:
        with quiet():
            metrics[group] = lm_eval_group(group).aggregate(metrics)
    date_id = datetime.now(timezone.utc).replace(tzinfo=None).isoformat().replace(":", "-")
    keep = set(tasks) | set(groups)
    for key in ("configs", "versions", "n-shot", "higher_is_better", "n-samples", "task_hashes"):
        if isinstance(base.get(key), dict):
            results[key] = {k: v for k, v in base[key].items() if k in keep}
    results["results"] = {name: metrics[name] for name in [*groups, *tasks]}
    results["groups"] = {g: metrics[g] for g in groups}
    results["group_subtasks"] = {k: v for k, v in base.get("group_subtasks", {}).items() if k in keep}
    results["date"] = datetime.now(timezone.utc).timestamp()
    results["config"] = {
        **base["config"],
        CALIBRATION_KEY: {
            "method": method,
            "source": METHODS[method],
            "transductive": TRANSDUCTIVE[method],
            "normalisation": NORMALISATION,
            "act_eval_version": __version__,
            "base_run": {
                "results_file": run.results_path.name,
                "date": base.get("date"),
                "samples_sha256": {t: samples_digest(run.samples_path(t)).hex() for t in tasks},
            },
            **({"content_free": list(CONTENT_FREE), "model": model_record} if method == "contextual" else {}),
            "tasks": {d.task: d.summary for d in done},
        },
    }
    directory = output_path / run.results_path.parent.name
    directory.mkdir(parents=True, exist_ok=True)
    for d in done:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in d.records)
        atomic_write_text(directory / f"samples_{d.task}_{date_id}.jsonl", text)
    return atomic_write_text(directory / f"results_{date_id}.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def check_calibrated(run: Run, task: str, method: str) -> int:
    """Recompute every document's calibrated metrics (and batch calibration's prior) from the logged samples.

    The prior recorded in each sample must be a distribution over its choices and give the logged
    acc (and [gold, pred] pairs); batch calibration's prior must be the mean choice distribution
    of the task's documents, contextual calibration's the mean over its logged content-free
    log-likelihoods. Returns the number of documents checked; a mismatch is a ValueError naming one.
    """
    _, records = read_records(run, task)
    scores = [choice_scores(task, r) for r in records]
    expected = batch_priors([s.loglikelihoods for s in scores]) if method == "batch" else None
    by_prompt: dict[str, Any] = {}  # documents that share content-free prompts (zero-shot: all) share their scores
    for record, s in zip(records, scores):
        where = f"{task} doc_id {s.doc_id}"
        entry = record.get(CALIBRATION_KEY)
        if not isinstance(entry, dict) or entry.get("method") != method:
            raise ValueError(f"{where}: the sample records no {method} calibration")
        prior = check_prior(entry.get("prior"), len(s.loglikelihoods), where)
        if expected is not None:
            truth = expected[len(s.loglikelihoods)]
        else:
            content_free = entry.get("content_free") or {}
            try:
                truth = mean_prior(content_free["loglikelihoods"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{where}: the sample records no content-free log-likelihoods") from None
            shared = by_prompt.setdefault(content_free.get("prompt_hash"), content_free["loglikelihoods"])
            if shared != content_free["loglikelihoods"]:
                raise ValueError(f"{where}: its content-free prompts were scored differently for another document")
        if not np.allclose(prior, truth, rtol=_RTOL, atol=1e-12):
            raise ValueError(f"{where}: the recorded prior {prior.tolist()} is not the {method} prior {truth.tolist()}")
        pred = calibrated_choice(s.loglikelihoods, prior)
        for metric in record.get("metrics") or []:
            want = float(pred == s.gold) if metric == "acc" else [s.gold, pred]
            got = record.get(metric)
            if (float(got) if metric == "acc" else got) != want:
                raise ValueError(f"{where}: {metric} is logged as {got!r}, the calibrated prediction gives {want!r}")
    return len(records)
