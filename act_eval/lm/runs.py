"""Reading lm-eval runs written with ``--log_samples``: the one place that parses that output.

lm-eval 0.4.13 (``loggers/evaluation_tracker.py``) writes, for ``--output_path OUT``::

    OUT/<model_name_sanitized>/results_<date>.json
    OUT/<model_name_sanitized>/samples_<task>_<date>.jsonl     (one per task, same <date>)

where ``<date>`` is ``datetime.now().isoformat()`` with ``:`` replaced by ``-`` (it sorts as
text). Running again into the same OUT adds another ``results_<date>.json`` beside the first, so
a directory can hold several runs. Each samples line holds one document under one filter:
``doc_id``, ``filter``, ``doc_hash`` (the document), ``prompt_hash`` (the first request's
context: changes with the prompt template and the few-shot examples), ``target_hash`` and one
key per metric with that document's value (a number, or ``[gold, pred]`` for corpus-level
metrics such as F1). Under data parallelism the lines come rank by rank, so documents are paired
by ``doc_id`` here and line order never matters.

Samples files are read as lm-eval writes them (``.jsonl``) or gzip-compressed
(``samples_<task>_<date>.jsonl.gz``, as the leaderboard stores them: :func:`compress_samples`).
A file's identity is the sha256 of its uncompressed bytes (:func:`samples_digest`), so the same
samples give the same digest in either form.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from act_eval.files import atomic_file

SAMPLES_SUFFIXES = (".jsonl", ".jsonl.gz")  # as lm-eval writes them; compressed, as the leaderboard stores them
_GZIP_ERRORS = (EOFError, OSError, zlib.error)  # gzip.BadGzipFile is an OSError


@dataclass(frozen=True)
class Run:
    """One lm-eval invocation: its ``results_<date>.json`` and the samples files written with it."""

    results_path: Path
    results: dict[str, Any]
    other_runs: tuple[Path, ...] = ()  # other results files in the same directory, not chosen

    @property
    def date_id(self) -> str:
        return self.results_path.stem.rsplit("_", 1)[-1]

    @property
    def tasks(self) -> list[str]:
        """Tasks with per-document samples (groups have none)."""
        return sorted(self.results.get("configs", {}))

    def n_shot(self, task: str) -> int | None:
        return self.results.get("n-shot", {}).get(task)

    @property
    def fewshot_seed(self) -> int | None:
        return self.results.get("config", {}).get("fewshot_seed")

    def samples_path(self, task: str) -> Path:
        """The task's samples file beside the results file, ``.jsonl`` or ``.jsonl.gz`` (if neither exists, the plain name).

        Refuses a directory holding both (which of them was scored would be a guess).
        """
        stem = f"samples_{task}_{self.date_id}"
        found = [self.results_path.parent / f"{stem}{s}" for s in SAMPLES_SUFFIXES]
        present = [p for p in found if p.is_file()]
        if len(present) > 1:
            raise ValueError(
                f"{task}: both {present[0].name} and {present[1].name} are next to {self.results_path}: keep one"
            )
        return present[0] if present else found[0]

    def settings(self) -> dict[str, Any]:
        """What the run was asked to do, as its results file records it (the names :func:`finished_run` reports)."""
        config = self.results.get("config", {})
        return {
            "few-shot seed": config.get("fewshot_seed"),
            "model_args": config.get("model_args"),
            "limit": config.get("limit"),
            "shots": sorted({self.n_shot(task) for task in self.tasks}),
        }

    @property
    def model_args(self) -> dict[str, Any]:
        """``config.model_args`` as a dict (lm-eval records the CLI's ``k=v,k=v`` string as given)."""
        return model_args_dict(self.results.get("config", {}).get("model_args") or {})

    def reported(self, task: str, metric: str, filter_name: str) -> float | None:
        """The value lm-eval reported in the results file, or None if it has none."""
        value = self.results.get("results", {}).get(task, {}).get(f"{metric},{filter_name}")
        return float(value) if isinstance(value, (int, float)) else None

    def reported_filters(self, task: str, metric: str) -> list[str]:
        """The filters under which the results file reports ``metric`` for ``task``."""
        keys = self.results.get("results", {}).get(task, {})
        return [k.split(",", 1)[1] for k in keys if k.startswith(f"{metric},")]

    def metric_config(self, task: str, metric: str) -> dict[str, Any]:
        """The task config's ``metric_list`` entry for ``metric`` (empty if not listed)."""
        for entry in self.results.get("configs", {}).get(task, {}).get("metric_list", []) or []:
            if entry.get("metric") == metric:
                return entry
        return {}

    def higher_is_better(self, task: str, metric: str) -> bool:
        return bool(self.results.get("higher_is_better", {}).get(task, {}).get(metric, True))

    def __str__(self) -> str:
        return str(self.results_path)


@dataclass(frozen=True)
class TaskSamples:
    """One task's logged documents under one filter, ordered by ``doc_id``."""

    run: Run
    task: str
    filter: str
    doc_ids: tuple[int, ...]
    doc_hashes: tuple[str, ...]
    prompt_hashes: tuple[str, ...]
    target_hashes: tuple[str, ...]
    metrics: dict[str, list[Any]] = field(repr=False)

    def values(self, metric: str) -> np.ndarray:
        """Per-document values of ``metric``: floats ``(n,)`` or integer ``(gold, pred)`` pairs ``(n, 2)``."""
        if metric not in self.metrics:
            raise ValueError(
                f"{self.task}: no per-document metric {metric!r} in {self.run.samples_path(self.task)}; "
                f"it has {', '.join(sorted(self.metrics)) or 'none'}"
            )
        raw = self.metrics[metric]
        if all(_is_number(v) for v in raw):
            return np.asarray(raw, dtype=float)
        if all(isinstance(v, list) and len(v) == 2 and all(_is_integer(x) for x in v) for v in raw):
            return np.asarray(raw, dtype=np.int64)
        example = next(v for v in raw if not _is_number(v))
        raise ValueError(
            f"{self.task}: metric {metric!r} has per-document values like {example!r}; act-eval "
            "resamples numbers or integer [gold, pred] pairs only"
        )


def find_results(path: str | Path) -> list[Path]:
    """The ``results_*.json`` files a path points at, oldest first.

    ``path`` may be a results file, the ``OUT/<model>`` directory, or ``OUT`` itself when it
    holds exactly one model directory.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".json" or path.name.startswith("samples_"):
            raise ValueError(f"{path} is not an lm-eval results file: pass results_<date>.json or its directory")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no such run: {path}")
    here = _results_in(path)
    if here:
        return here
    models = sorted(p for p in path.iterdir() if p.is_dir() and _results_in(p))
    if len(models) == 1:
        return _results_in(models[0])
    if len(models) > 1:
        names = ", ".join(str(p) for p in models)
        raise ValueError(f"{path} holds runs of several models ({names}): pass one of them")
    raise FileNotFoundError(
        f"no lm-eval results_*.json under {path} (expected OUT/<model>/results_<date>.json from "
        "lm-eval --output_path OUT --log_samples)"
    )


def model_args_dict(model_args: dict[str, Any] | str) -> dict[str, Any]:
    """lm-eval records model_args as given: a dict, or the CLI's ``k=v,k=v`` string."""
    if isinstance(model_args, dict):
        return model_args
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(model_args)


def load_run(path: str | Path) -> Run:
    """Load a run; from a directory with several runs the newest, unless a results file is named."""
    found = find_results(path)
    chosen = found[-1]
    try:
        results = json.loads(chosen.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{chosen} is not valid JSON: {err}") from None
    if not isinstance(results, dict) or "results" not in results:
        raise ValueError(f"{chosen} is not an lm-eval results file (no 'results' key)")
    return Run(chosen, results, tuple(found[:-1]))


def finished_run(directory: str | Path, tasks: Sequence[str], wanted: dict[str, Any]) -> Run | None:
    """The run in ``directory`` if it ran ``tasks`` with the ``wanted`` :meth:`Run.settings`; None if it holds no run.

    A run with other settings there is an error, never something to overwrite or mix in: the
    demo's arms and the ICL runner's seeds resume from finished runs only.
    """
    directory = Path(directory)
    if not any(directory.glob("*/results_*.json")):
        return None
    run = load_run(directory)
    ran = set(run.tasks) | set(run.results.get("group_subtasks", {}))
    settings = run.settings()
    found = {**{key: settings[key] for key in wanted}, "tasks": sorted(set(tasks) & ran)}
    want = {**wanted, "tasks": sorted(set(tasks))}
    differ = [key for key in want if found[key] != want[key]]
    if differ:
        raise ValueError(
            f"{directory} holds a run with other settings ({', '.join(f'{k}: {found[k]!r}, not {want[k]!r}' for k in differ)}); "
            "choose a new --output_path or remove that directory"
        )
    return run


def expand_group(name: str, runs: Sequence[Run]) -> list[str]:
    """A group name (``act_classification_lite``) as its leaf tasks, from the runs' ``group_subtasks``; a task as itself."""
    for run in runs:
        subtasks = run.results.get("group_subtasks", {})
        if subtasks.get(name):
            return [t for child in subtasks[name] for t in expand_group(child, runs)]
    return [name]


def select_tasks(runs: dict[str, Run | Sequence[Run]], tasks: Sequence[str] | None = None) -> list[str]:
    """The tasks to compare: ``tasks`` if given (each must be in every run; a group stands for its tasks), else
    every run's tasks, which must agree."""
    flat = [(name, run) for name, group in runs.items() for run in (group if isinstance(group, Sequence) else [group])]
    if tasks:
        tasks = [t for name in tasks for t in expand_group(name, [run for _, run in flat])]
        for name, run in flat:
            missing = [t for t in tasks if t not in run.tasks]
            if missing:
                raise ValueError(
                    f"{name} run {run} has no samples for task(s) {', '.join(missing)}; it has {', '.join(run.tasks) or 'none'}"
                )
        return list(dict.fromkeys(tasks))
    reference_name, reference = flat[0]
    for name, run in flat[1:]:
        if set(run.tasks) != set(reference.tasks):
            only_ref = sorted(set(reference.tasks) - set(run.tasks))
            only_run = sorted(set(run.tasks) - set(reference.tasks))
            raise ValueError(
                f"runs cover different tasks: only in {reference_name} ({reference}): {', '.join(only_ref) or '-'}; "
                f"only in {name} ({run}): {', '.join(only_run) or '-'}; pass --tasks (tasks or a group) to compare the shared ones"
            )
    if not reference.tasks:
        raise ValueError(f"{reference_name} run {reference} has no tasks with samples")
    return reference.tasks


def read_task_samples(run: Run, task: str, filter_name: str | None = None) -> TaskSamples:
    """Read one task's samples file, keyed by ``doc_id`` (line order is irrelevant).

    ``filter_name=None`` takes the task's only filter and refuses when there are several.
    """
    filter_name, ordered = read_records(run, task, filter_name)
    names = ordered[0].get("metrics") or []
    return TaskSamples(
        run=run,
        task=task,
        filter=filter_name,
        doc_ids=tuple(int(r["doc_id"]) for r in ordered),
        doc_hashes=tuple(r["doc_hash"] for r in ordered),
        prompt_hashes=tuple(r["prompt_hash"] for r in ordered),
        target_hashes=tuple(r["target_hash"] for r in ordered),
        metrics={m: [r.get(m) for r in ordered] for m in names},
    )


def read_records(run: Run, task: str, filter_name: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The task's logged lines under one filter, as written, ordered by ``doc_id``; and that filter's name.

    ``filter_name=None`` takes the task's only filter and refuses when there are several.
    """
    path = run.samples_path(task)
    if not path.is_file():
        raise FileNotFoundError(
            f"no samples for task {task} next to {run.results_path} (expected {path.name} or {path.name}.gz): "
            "run lm-eval with --log_samples"
        )
    lines: dict[str, list[dict[str, Any]]] = {}
    with open_samples(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{number} is not valid JSON (a truncated run?)") from None
            lines.setdefault(record.get("filter", "none"), []).append(record)
    if not lines:
        raise ValueError(f"{path} holds no documents")
    if filter_name is None:
        if len(lines) > 1:
            raise ValueError(f"{task} has several filters ({', '.join(sorted(lines))}): pick one with --filter")
        filter_name = next(iter(lines))
    elif filter_name not in lines:
        raise ValueError(f"{task} has no filter {filter_name!r} in {path}; it has {', '.join(sorted(lines))}")
    records = lines[filter_name]
    by_id: dict[int, dict[str, Any]] = {}
    for record in records:
        doc_id = int(record["doc_id"])
        if doc_id in by_id:
            raise ValueError(f"{path}: doc_id {doc_id} appears twice under filter {filter_name!r}")
        by_id[doc_id] = record
    return filter_name, [by_id[i] for i in sorted(by_id)]


@dataclass(frozen=True)
class ChoiceScores:
    """One document of a multiple-choice task as lm-eval scored it: each choice's request and log-likelihood."""

    doc_id: int
    gold: int
    contexts: tuple[str, ...]  # the context of each choice's request (the whole prompt, demonstrations included)
    continuations: tuple[str, ...]
    loglikelihoods: np.ndarray  # summed log-likelihood of each continuation (``filtered_resps``)


def choice_scores(task: str, record: dict[str, Any]) -> ChoiceScores:
    """Parse a logged multiple-choice line: lm-eval writes numbers in ``filtered_resps`` and ``target`` as text."""
    doc_id = record.get("doc_id")
    try:
        requests = [record["arguments"][f"gen_args_{i}"] for i in range(len(record["arguments"]))]
        lls = np.asarray([float(r[0]) for r in record["filtered_resps"]], dtype=float)
        gold = int(record["target"])
    except (KeyError, TypeError, ValueError, IndexError):
        raise ValueError(
            f"{task} doc_id {doc_id}: not a multiple-choice sample with one log-likelihood per choice and an "
            "integer target (label calibration re-scores lm-eval's multiple_choice tasks only)"
        ) from None
    if len(requests) != len(lls) or not 0 <= gold < len(lls):
        raise ValueError(f"{task} doc_id {doc_id}: {len(requests)} requests, {len(lls)} scores and gold {gold} do not fit")
    return ChoiceScores(
        doc_id=int(doc_id),
        gold=gold,
        contexts=tuple(str(r["arg_0"]) for r in requests),
        continuations=tuple(str(r["arg_1"]) for r in requests),
        loglikelihoods=lls,
    )


@contextmanager
def open_samples(path: Path) -> Iterator[Iterator[str]]:
    """The lines of a samples file, plain or gzip-compressed; a damaged archive is a ValueError naming the file."""
    handle = gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")
    with handle:
        yield _checked_lines(handle, path)


def _checked_lines(handle: Any, path: Path) -> Iterator[str]:
    try:
        yield from handle
    except _GZIP_ERRORS as err:
        raise ValueError(f"{path} is not a complete gzip file ({err}): a truncated copy?") from None


def samples_digest(path: Path) -> bytes:
    """sha256 of the samples file's uncompressed bytes: the same for a ``.jsonl`` and its ``.jsonl.gz``."""
    digest = hashlib.sha256()
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except _GZIP_ERRORS as err:
        raise ValueError(f"{path} is not a complete gzip file ({err}): a truncated copy?") from None
    return digest.digest()


def compress_samples(source: Path, target: Path) -> Path:
    """Write ``source`` (plain or compressed) to ``target`` as ``.jsonl.gz``, atomically and byte-reproducibly.

    The gzip header carries no file name and time stamp, so the same samples always give the same file.
    """
    if not target.name.endswith(".jsonl.gz"):
        raise ValueError(f"{target}: compressed samples are named samples_<task>_<date>.jsonl.gz")
    opener = gzip.open if source.name.endswith(".gz") else open
    with atomic_file(target, "wb") as raw, opener(source, "rb") as src:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                out.write(block)
    return target


def check_paired(a: TaskSamples, b: TaskSamples, *, names: tuple[str, str], same_prompt: bool) -> None:
    """Refuse to pair two runs of a task unless they scored the same documents (and prompts).

    ``same_prompt`` is for arms that must see identical inputs (baseline vs ACT); a few-shot arm
    against a zero-shot one legitimately differs in prompt and is checked on documents only.
    """
    label_a, label_b = f"{names[0]} ({a.run})", f"{names[1]} ({b.run})"
    if a.task != b.task:
        raise ValueError(f"cannot pair different tasks: {a.task} in {label_a} with {b.task} in {label_b}")
    task = a.task
    if a.doc_ids != b.doc_ids:
        only_a = sorted(set(a.doc_ids) - set(b.doc_ids))
        only_b = sorted(set(b.doc_ids) - set(a.doc_ids))
        raise ValueError(
            f"{task}: the runs scored different documents: {len(a.doc_ids)} in {label_a}, "
            f"{len(b.doc_ids)} in {label_b}; {len(only_a)} doc_ids only in {names[0]}{_examples(only_a)}, "
            f"{len(only_b)} only in {names[1]}{_examples(only_b)} (same --limit/--samples needed)"
        )
    for attr, what in (("doc_hashes", "document content (doc_hash)"), ("target_hashes", "target (target_hash)")):
        bad = [i for i, x, y in zip(a.doc_ids, getattr(a, attr), getattr(b, attr)) if x != y]
        if bad:
            raise ValueError(
                f"{task}: {len(bad)} of {len(a.doc_ids)} documents differ in {what} between {label_a} "
                f"and {label_b}{_examples(bad)}: the runs read different data"
            )
    if same_prompt:
        bad = [i for i, x, y in zip(a.doc_ids, a.prompt_hashes, b.prompt_hashes) if x != y]
        if bad:
            raise ValueError(
                f"{task}: {len(bad)} of {len(a.doc_ids)} prompts differ (prompt_hash) between {label_a} "
                f"and {label_b}{_examples(bad)}; n-shot {a.run.n_shot(task)} vs {b.run.n_shot(task)}: "
                "these arms must see identical prompts"
            )


def _results_in(directory: Path) -> list[Path]:
    # the date suffix is ISO 8601 with '-' for ':', so text order is time order (as lm-eval's
    # own get_latest_filename assumes)
    return sorted(directory.glob("results_*.json"), key=lambda p: p.stem.rsplit("_", 1)[-1])


def _examples(ids: Sequence[int]) -> str:
    if not ids:
        return ""
    shown = ", ".join(str(i) for i in ids[:5])
    return f" (doc_id {shown}{', ...' if len(ids) > 5 else ''})"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool included: lm-eval may log a metric as True/False


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
