"""Every check a submission passes on its own before the store will take it.

In order, each refusal a :class:`SubmissionError` whose ``check`` names it:

``manifest``       the schema (:mod:`.manifest`), then each field the results file also records;
``results``        a listed results file is missing or is not lm-eval's;
``icl``            the ICL runs are not distinct few-shot seeds at one shot count (:func:`act_eval.icl.load_icl_runs`);
``missing-task``   a task of the suite is absent from the run, or has no samples file;
``suite``          the run has tasks the suite lacks, or the manifest names another subset;
``limited``        the run was made with ``--limit``;
``partial``        a task's samples do not cover every document of its evaluation split;
``doc-hash``       a document differs from the task data (lm-eval's ``doc_hash``);
``task-definition`` the run used another definition of a task than ``tasks/``;
``metric``         a metric in the results file differs from the one recomputed from the samples;
``head-map``       the head map is not found, its content hash or model differs, or its rule and
                   parameters (threshold and beta, or a first-token map's factor) are not the
                   manifest's; for a run that recorded its calibration (``config.act``,
                   :mod:`.recorded`), the map file must be the map that ran; a first-token run must
                   have recorded it (``hf-act`` did before that rule existed);
``calibration``    a contextual or batch calibration run (``act-eval calibrate``) whose per-document
                   metrics or prior do not follow from its logged log-likelihoods
                   (:func:`act_eval.rivals.rescore.check_calibrated`), or a run of another arm that
                   records a label calibration.

Duplicates and pairing with accepted submissions are the store's checks (:mod:`.store`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from act_eval.core.head_map import HeadMapError, load_head_map
from act_eval.icl import load_icl_runs
from act_eval.leaderboard import SubmissionError
from act_eval.leaderboard.manifest import CALIBRATED_ARMS, HEAD_MAP_FILE, Manifest, read_manifest
from act_eval.leaderboard.recorded import RecordedMap, check_recorded_map, recorded_map, run_settings
from act_eval.leaderboard.suites import Suite, comparable_config, load_suite
from act_eval.lm.pretrained import model_identity
from act_eval.lm.runs import Run, TaskSamples, load_run, model_args_dict, read_task_samples, samples_digest
from act_eval.lm.suite import quiet
from act_eval.rivals.label_prior import CALIBRATION_KEY
from act_eval.rivals.rescore import check_calibrated

# lm-eval's per-task result keys that are not "<metric>,<filter>" values
_NOT_METRICS = frozenset({"name", "alias", "sample_len", "sample_count"})
_RTOL, _ATOL = 1e-9, 1e-12  # recomputation differs from lm-eval's only by float summation order


@dataclass(frozen=True)
class TaskInfo:
    """What the board needs to know about one task of an accepted submission."""

    family: str
    metric: str  # the task's primary metric: the first of its metric_list
    filter: str
    n: int


@dataclass(frozen=True)
class Checked:
    """A submission that passed every check of its own."""

    path: Path
    manifest: Manifest
    runs: tuple[Run, ...]
    tasks: dict[str, TaskInfo]
    fingerprint: str  # sha256 over the samples files' uncompressed bytes: equal only for the same model outputs
    report: tuple[str, ...]  # what was checked, one line each, for the submitter


def verify_submission(path: Path) -> Checked:
    """Run every check of this module on the submission directory ``path``."""
    manifest = read_manifest(path)
    runs = _load_runs(path, manifest)
    suite = load_suite(manifest.suite)
    for index, run in enumerate(runs):
        _check_recorded(manifest, run, index)
        _check_shots(manifest, run, suite)
    _check_tasks(manifest, runs, suite)
    infos: dict[str, TaskInfo] = {}
    values = 0
    for run in runs:
        _check_complete(run, suite)
        samples = {task: _read_filters(run, task) for task in suite.tasks}
        _check_documents(run, suite, samples)
        values += _check_metrics(run, suite, samples)
        infos = {task: _task_info(suite, run, task, samples[task]) for task in suite.tasks}
    report = (
        f"{manifest.arm_label} of {manifest.model.id} on {suite.name}: {len(runs)} run(s), {len(suite.tasks)} task(s), "
        f"{sum(i.n for i in infos.values())} documents per run",
        "manifest, suite, shots, full splits, doc_hash of every document and task definitions agree; "
        f"{values} metric values recomputed from the samples match the results file(s)",
        _check_head_map(path, manifest, runs),
        _check_calibration(manifest, runs, suite),
    )
    return Checked(
        path=path, manifest=manifest, runs=runs, tasks=infos, fingerprint=_fingerprint(runs), report=report
    )


def _load_runs(path: Path, manifest: Manifest) -> tuple[Run, ...]:
    files = manifest.run_files(path)
    for file in files:
        if not file.is_file():
            raise SubmissionError("results", f"the manifest lists {file.relative_to(path)}, which is not in {path}")
    try:
        runs = tuple(load_run(file) for file in files)
    except (ValueError, FileNotFoundError) as err:
        raise SubmissionError("results", str(err)) from None
    if manifest.arm == "icl":
        try:
            load_icl_runs(files)
        except ValueError as err:
            raise SubmissionError("icl", str(err)) from None
    return runs


def _check_shots(manifest: Manifest, run: Run, suite: Suite) -> None:
    """Baseline and ACT run every task at its own default (open QA 5-shot, the rest zero-shot); ICL all at k."""
    k = manifest.fewshot.num_fewshot
    want = {task: suite.default_shots(task) if k is None else k for task in run.tasks if task in suite.tasks}
    wrong = {task: run.n_shot(task) for task in want if run.n_shot(task) != want[task]}
    if wrong:
        said = "the tasks' own shots (num_fewshot null)" if k is None else f"fewshot.num_fewshot = {k}"
        ran = ", ".join(f"{task} {shots}-shot (expected {want[task]})" for task, shots in sorted(wrong.items()))
        raise SubmissionError("manifest", f"the manifest says {said} but {run} ran {ran}")


def _check_recorded(manifest: Manifest, run: Run, index: int) -> None:
    """The manifest's fields that the results file also records (``run`` is ``manifest.runs[index]``) must say the same."""
    config = run.results.get("config", {})
    recorded = {
        "model.lm_eval_model": (manifest.model.lm_eval_model, config.get("model")),
        "model.model_args": (manifest.model.model_args, config.get("model_args")),
        "tasks": (sorted(manifest.tasks), run.tasks),
        "fewshot.seeds": (manifest.fewshot.seeds[index], config.get("fewshot_seed")),
        "fewshot.apply_chat_template": (manifest.fewshot.apply_chat_template, bool(run.results.get("chat_template"))),
        "fewshot.fewshot_as_multiturn": (
            manifest.fewshot.fewshot_as_multiturn,
            bool(run.results.get("fewshot_as_multiturn")),
        ),
        "seeds.random": (manifest.seeds.random, config.get("random_seed")),
        "seeds.numpy": (manifest.seeds.numpy, config.get("numpy_seed")),
        "seeds.torch": (manifest.seeds.torch, config.get("torch_seed")),
        "versions.lm_eval": (manifest.versions.lm_eval, run.results.get("lm_eval_version")),
        "versions.transformers": (manifest.versions.transformers, run.results.get("transformers_version")),
    }
    for name, (said, found) in recorded.items():
        if said != found:
            raise SubmissionError("manifest", f"the manifest says {name} = {said!r} but {run} records {found!r}")
    args = model_args_dict(manifest.model.model_args)
    pretrained = args.get("pretrained")
    identity = model_identity(pretrained) if isinstance(pretrained, str) else None
    if identity not in (None, pretrained, manifest.model.id):
        raise SubmissionError(
            "manifest", f"the manifest says model.id = {manifest.model.id!r} but the run loaded {identity}"
        )
    if manifest.head_map is not None:  # the act arm, or a calibrated ACT run
        named = args.get("head_map")
        ref = manifest.head_map.name
        if not (named == ref or (isinstance(named, str) and named.endswith(".json") and Path(named).stem == ref)):
            raise SubmissionError(
                "manifest", f"the manifest names head map {ref!r} but the run's model_args load head_map={named!r}"
            )
    else:
        calibration = sorted(k for k in args if k == "head_map" or k.startswith("act_"))
        if calibration:
            raise SubmissionError(
                "manifest", f"a {manifest.arm} run must not calibrate, but its model_args set {', '.join(calibration)}"
            )


def _check_tasks(manifest: Manifest, runs: tuple[Run, ...], suite: Suite) -> None:
    if manifest.subset != suite.subset:
        raise SubmissionError(
            "suite", f"the manifest says subset {manifest.subset!r} but {suite.name} is the {suite.subset} subset"
        )
    for run in runs:
        missing = [t for t in suite.tasks if t not in run.tasks]
        if missing:
            raise SubmissionError(
                "missing-task", f"{run} lacks {len(missing)} task(s) of {suite.name}: {', '.join(missing)}"
            )
        extra = [t for t in run.tasks if t not in suite.tasks]
        if extra:
            raise SubmissionError("suite", f"{run} has task(s) outside {suite.name}: {', '.join(extra)}")
        for task in suite.tasks:
            try:
                samples = run.samples_path(task)
            except ValueError as err:
                raise SubmissionError("results", str(err)) from None
            if not samples.is_file():
                raise SubmissionError(
                    "missing-task",
                    f"{task}: no samples file {samples.name} (or {samples.name}.gz) next to {run.results_path.name}",
                )


def _check_complete(run: Run, suite: Suite) -> None:
    limit = run.results.get("config", {}).get("limit")
    if limit is not None:
        raise SubmissionError(
            "limited", f"{run} was run with --limit {limit:g}: the leaderboard takes full evaluation splits only"
        )
    for task in suite.tasks:
        counts = run.results.get("n-samples", {}).get(task, {})
        if counts.get("effective") != counts.get("original"):
            raise SubmissionError(
                "partial", f"{task}: {run} evaluated {counts.get('effective')} of {counts.get('original')} documents"
            )


def _read_filters(run: Run, task: str) -> dict[str, TaskSamples]:
    """The task's samples under each filter its results report."""
    keys = run.results.get("results", {}).get(task, {})
    filters = sorted({k.split(",", 1)[1] for k in keys if "," in k and k not in _NOT_METRICS})
    if not filters:
        raise SubmissionError("metric", f"{task}: {run} reports no metric for the task")
    try:
        return {f: read_task_samples(run, task, f) for f in filters}
    except (ValueError, FileNotFoundError) as err:
        raise SubmissionError("results", str(err)) from None


def _check_documents(run: Run, suite: Suite, samples: dict[str, dict[str, TaskSamples]]) -> None:
    for task in suite.tasks:
        expected = suite.doc_hashes(task)
        for filt, got in samples[task].items():
            if got.doc_ids != tuple(range(len(expected))):
                missing = sorted(set(range(len(expected))) - set(got.doc_ids))
                raise SubmissionError(
                    "partial",
                    f"{task}: the samples (filter {filt}) hold {len(got.doc_ids)} documents, the evaluation split has "
                    f"{len(expected)}" + (f"; missing doc_id {_few(missing)}" if missing else "; doc_ids out of range"),
                )
            bad = [i for i, h in zip(got.doc_ids, got.doc_hashes, strict=True) if h != expected[i]]
            if bad:
                raise SubmissionError(
                    "doc-hash",
                    f"{task}: {len(bad)} of {len(expected)} documents differ from the task data (doc_hash of doc_id "
                    f"{_few(bad)}): the run read other data than ACT_EVAL_DATA_DIR holds",
                )
        live = suite.definition(task)
        logged = comparable_config(run.results.get("configs", {}).get(task, {}))
        differ = sorted(k for k in set(live) | set(logged) if live.get(k) != logged.get(k))
        if differ:
            raise SubmissionError(
                "task-definition",
                f"{task}: the run's task config differs from tasks/ in {', '.join(differ)}: it ran another definition",
            )


def _check_metrics(run: Run, suite: Suite, samples: dict[str, dict[str, TaskSamples]]) -> int:
    """Recompute each task's metrics with the task's own aggregations, then each group's with lm-eval's group code.

    Returns how many reported values were compared.
    """
    reported_all = run.results.get("results", {})
    compared = 0
    recomputed_all: dict[str, dict[str, Any]] = {}
    for task in suite.tasks:
        aggregations = suite.task_objects[task].aggregation()
        reported = reported_all[task]
        recomputed: dict[str, Any] = {"sample_len": len(suite.doc_hashes(task))}
        for key, value in reported.items():
            if key in _NOT_METRICS or "_stderr," in key:
                continue
            metric, _, filt = key.partition(",")
            if metric not in aggregations:
                raise SubmissionError(
                    "metric", f"{task}: the results file reports {key}, a metric the task does not define"
                )
            got = samples[task][filt]
            if metric not in got.metrics:
                raise SubmissionError(
                    "metric", f"{task}: {key} has no per-document values in {run.samples_path(task).name}"
                )
            recomputed[key] = float(aggregations[metric](got.metrics[metric]))
            _same(task, key, value, recomputed[key], run)
            compared += 1
        for metric in aggregations:
            if not any(k.startswith(f"{metric},") for k in reported):
                raise SubmissionError("metric", f"{task}: the results file does not report {metric}")
        if reported.get("sample_len") != recomputed["sample_len"]:
            raise SubmissionError(
                "partial",
                f"{task}: sample_len is {reported.get('sample_len')}, the split has {recomputed['sample_len']}",
            )
        recomputed_all[task] = recomputed
    for name, group in suite.groups.items():
        if name not in reported_all:
            continue
        with quiet():  # a suite mixing metrics warns, per group, that each metric is missing somewhere
            aggregated = group.aggregate(recomputed_all)
        for key, value in reported_all[name].items():
            if key in _NOT_METRICS or "_stderr," in key:
                continue
            if key not in aggregated:
                raise SubmissionError(
                    "metric", f"{name}: the results file reports {key}, which the group does not aggregate"
                )
            _same(name, key, value, aggregated[key], run)
            compared += 1
    return compared


def _same(task: str, key: str, reported: Any, recomputed: float, run: Run) -> None:
    if not isinstance(reported, (int, float)) or not math.isclose(reported, recomputed, rel_tol=_RTOL, abs_tol=_ATOL):
        raise SubmissionError(
            "metric",
            f"{task}: {key} is {reported!r} in {run.results_path.name} but {recomputed!r} recomputed from the samples",
        )


def _check_head_map(path: Path, manifest: Manifest, runs: tuple[Run, ...]) -> str:
    """The map the run used: the submission's own head_map.json, else the published map of that name.

    A run that recorded its calibration (``config.act``) must have run exactly this map file; one
    without the record (before hf-act wrote it) is checked by name and the manifest's hash only,
    and the returned report line says so.
    """
    try:
        records = [(run, recorded_map(run)) for run in runs]
    except ValueError as err:
        raise SubmissionError("head-map", str(err)) from None
    ref = manifest.head_map
    if ref is None:
        calibrated = [str(run) for run, record in records if record is not None]
        if calibrated:
            raise SubmissionError(
                "manifest", f"a {manifest.arm} run must not calibrate, but {calibrated[0]} records a calibration (config.act)"
            )
        return f"head map: none ({manifest.arm} arm; its results record no ACT calibration)"
    included = path / HEAD_MAP_FILE
    try:
        head_map = load_head_map(included if included.is_file() else ref.name)
    except (FileNotFoundError, HeadMapError) as err:
        raise SubmissionError("head-map", f"head map {ref.name!r}: {err}") from None
    where = HEAD_MAP_FILE if included.is_file() else f"the published map {ref.name}"
    if head_map.name != ref.name:
        raise SubmissionError(
            "head-map", f"{HEAD_MAP_FILE} is the map {head_map.name!r}, the manifest names {ref.name!r}"
        )
    args = model_args_dict(manifest.model.model_args)
    recorded: RecordedMap | None = records[0][1]
    if recorded is not None:
        try:
            check_recorded_map(recorded, head_map, args)
        except ValueError as err:
            raise SubmissionError("head-map", str(err)) from None
    if head_map.content_hash != ref.content_hash:
        raise SubmissionError(
            "head-map",
            f"head map {ref.name!r} has content hash {head_map.content_hash}, the manifest says {ref.content_hash}",
        )
    if head_map.model != manifest.model.id:
        raise SubmissionError(
            "head-map",
            f"head map {ref.name!r} was made for {head_map.model}, the submission's model is {manifest.model.id}",
        )
    if head_map.rule != manifest.rule:
        raise SubmissionError(
            "head-map", f"head map {ref.name!r} has rule {head_map.rule}, the manifest ({manifest.arm} arm) says {manifest.rule}"
        )
    params = run_settings(head_map, args)
    for name, used in params.items():
        if used != getattr(manifest, name):
            raise SubmissionError(
                "head-map", f"the run used {name} {used:g}, the manifest says {getattr(manifest, name):g}"
            )
    if recorded is None and head_map.rule != "act":
        raise SubmissionError(
            "head-map",
            f"{runs[0]} records no calibration (config.act): a {head_map.rule} run of hf-act records its map, rule "
            "and parameters, so this results file was not written by it",
        )
    if recorded is None:
        return (
            f"head map {ref.name} ({where}): the results file records no calibration (a run made before hf-act "
            "recorded it), so only the map's name, the manifest's content hash, model, threshold and beta were "
            "checked, not that this map is the one that ran"
        )
    return (
        f"head map {ref.name} ({where}): the calibration the run recorded ({recorded.describe()}) is this map "
        f"file's (content hash, heads, {'' if head_map.rule == 'act' else 'rule, '}{', '.join(params)})"
    )


def _check_calibration(manifest: Manifest, runs: tuple[Run, ...], suite: Suite) -> str:
    """A rival's metrics recomputed from its logged log-likelihoods and priors; other arms record no label calibration."""
    blocks = [run.results.get("config", {}).get(CALIBRATION_KEY) for run in runs]
    if manifest.arm not in CALIBRATED_ARMS:
        if any(blocks):
            raise SubmissionError(
                "calibration", f"a {manifest.arm} run must not be re-scored, but {runs[0]} records config.calibration"
            )
        return "label calibration: none"
    block = blocks[0]
    if not isinstance(block, dict) or block.get("method") != manifest.arm:
        method = block.get("method") if isinstance(block, dict) else None
        raise SubmissionError(
            "calibration", f"the manifest says arm {manifest.arm} but {runs[0]} records calibration method {method!r}"
        )
    try:
        documents = sum(check_calibrated(runs[0], task, manifest.arm) for task in suite.tasks)
    except (ValueError, FileNotFoundError) as err:
        raise SubmissionError("calibration", str(err)) from None
    source = (
        "the prior recomputed as the mean choice distribution over each task's documents (transductive)"
        if manifest.arm == "batch"
        else "the prior recomputed from the logged content-free log-likelihoods (those are the model's, as resps are)"
    )
    return (
        f"label calibration ({block.get('source')}): {documents} documents re-scored from their logged "
        f"log-likelihoods; {source}; every acc and [gold, pred] follows"
    )


def _task_info(suite: Suite, run: Run, task: str, samples: dict[str, TaskSamples]) -> TaskInfo:
    metric = suite.task_objects[task].config.metric_list[0]["metric"]
    filters = [f for f in samples if run.reported(task, metric, f) is not None]
    return TaskInfo(
        family=suite.families[task],
        metric=metric,
        filter="none" if "none" in filters else filters[0],
        n=len(suite.doc_hashes(task)),
    )


def _fingerprint(runs: tuple[Run, ...]) -> str:
    digest = hashlib.sha256()
    for run in runs:
        for task in run.tasks:
            digest.update(samples_digest(run.samples_path(task)))
    return "sha256:" + digest.hexdigest()


def _few(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")
