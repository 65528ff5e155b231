"""k-shot in-context learning as one arm: several lm-eval runs that differ only in their few-shot seed.

The paper reports k-shot ICL as the mean over 5 seeds of the demonstrations. :func:`run_icl` loads
the model once and calls lm-eval's ``simple_evaluate`` once per seed (``fewshot_random_seed``; the
other seeds keep lm-eval's defaults, as ``lm_eval --seed 0,1234,1234,S`` would), saving each run
exactly as the lm-eval CLI does with ``--log_samples``, and lists them in a manifest::

    OUT/icl.json                                  k, seeds, tasks, model, run files
    OUT/seed_<S>/<model>/results_<date>.json      one lm-eval run per seed
    OUT/seed_<S>/<model>/samples_<task>_<date>.jsonl

This module is the one reader and writer of ``icl.json`` (``act-eval calibrate`` writes one for
an ICL arm it re-scores, with its method in place of k and the model). :func:`load_icl_runs`
takes such a directory, or runs made otherwise (e.g. data-parallel ``accelerate launch -m lm_eval
... --seed 0,1234,1234,S --log_samples``, one output directory per seed), as one arm.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from act_eval.files import atomic_write_text
from act_eval.lm.runs import Run, finished_run, load_run, select_tasks

ICL_MANIFEST = "icl.json"


def read_icl_manifest(directory: str | Path) -> dict[str, Any] | None:
    """``directory/icl.json`` as written, or None where there is none."""
    path = Path(directory) / ICL_MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def icl_run_files(directory: str | Path) -> list[Path] | None:
    """The results files ``directory/icl.json`` lists, or None where there is no manifest."""
    manifest = read_icl_manifest(directory)
    return None if manifest is None else [Path(directory) / rel for rel in manifest["runs"]]


def write_icl_manifest(directory: Path, seeds: Sequence[int], runs: Sequence[str], **fields: Any) -> Path:
    """Write ``directory/icl.json``: ``fields`` (what the arm is), then its seeds and their run files."""
    body = {**fields, "seeds": list(seeds), "runs": list(runs)}
    return atomic_write_text(directory / ICL_MANIFEST, json.dumps(body, indent=2) + "\n")


def load_icl_runs(paths: Sequence[str | Path]) -> list[Run]:
    """The runs of one ICL arm: several run paths, or a directory written by ``act-eval icl run``.

    Refuses fewer than two runs, the same run twice, zero-shot runs, runs at different shot
    counts, and two runs with the same few-shot seed.
    """
    runs: list[Run] = []
    for path in paths:
        listed = icl_run_files(path)
        if listed is None:
            runs.append(load_run(path))
        else:
            runs.extend(load_run(file) for file in listed)
    if len(runs) < 2:
        raise ValueError("the ICL arm needs runs for at least two few-shot seeds")
    seen: dict[Path, Run] = {}
    for run in runs:
        key = run.results_path.resolve()
        if key in seen:
            raise ValueError(f"ICL run {run} is given twice")
        seen[key] = run
    seeds: dict[Any, Run] = {}
    for run in runs:
        if run.fewshot_seed in seeds:
            raise ValueError(
                f"ICL runs {seeds[run.fewshot_seed]} and {run} both used few-shot seed "
                f"{run.fewshot_seed}: the seeds must differ"
            )
        seeds[run.fewshot_seed] = run
    for task in sorted(set().union(*(r.tasks for r in runs))):
        shots = {run.n_shot(task) for run in runs if task in run.tasks}
        if len(shots) > 1:
            raise ValueError(f"ICL runs of {task} differ in shot count: {sorted(shots, key=str)}")
        if shots == {0}:
            raise ValueError(f"ICL runs of {task} are zero-shot (n-shot 0): run them with --num_fewshot k")
    return runs


def run_icl(
    model: str,
    model_args: dict[str, Any],
    tasks: Sequence[str],
    num_fewshot: int,
    seeds: Sequence[int],
    output_path: str | Path,
    *,
    include_path: Sequence[str | Path] = (),
    builtin_tasks: bool = True,
    limit: float | None = None,
    batch_size: int | str | None = None,
    device: str | None = None,
    bootstrap_iters: int = 100_000,
) -> Path:
    """Evaluate ``tasks`` at ``num_fewshot`` shots once per seed; return the ``icl.json`` manifest path.

    Resumable: a seed whose directory already holds a finished run of the same settings is read,
    not run again, so an interrupted job restarts where it stopped, and an existing ICL run of the
    same settings can be extended with more seeds (e.g. seeds run by several processes at once).
    """
    from lm_eval.api.registry import get_model

    from act_eval.lm.evaluate import evaluate_and_save
    from act_eval.lm.suite import suite_task_manager
    from act_eval.suggest import check_known

    if num_fewshot < 1:
        raise ValueError(f"ICL needs at least one demonstration, got --num_fewshot {num_fewshot}")
    if len(set(seeds)) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"give at least two distinct few-shot seeds, got {list(seeds)}")
    out = Path(output_path)
    settings = {"num_fewshot": num_fewshot, "tasks": list(tasks), "model": model}
    existing = read_icl_manifest(out)
    if existing is not None and {k: existing.get(k) for k in settings} != settings:
        raise ValueError(
            f"{out} already holds an ICL run with other settings ({out / ICL_MANIFEST}: "
            f"k={existing.get('num_fewshot')}, tasks={existing.get('tasks')}, model={existing.get('model')}); "
            "choose a new --output_path"
        )
    task_manager = suite_task_manager(include_path, builtin_tasks, metadata=model_args)
    check_known("task or group", tasks, task_manager.all_tasks)
    if device is None:
        # HFLM's own default is "cuda" even without a GPU; the lm-eval CLI's "cuda:0" default ends
        # in HFLM's auto-detection instead. Do that detection here.
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = None
    runs: list[str] = []
    for seed in seeds:
        wanted = {"few-shot seed": seed, "model_args": dict(model_args), "limit": limit, "shots": [num_fewshot]}
        finished = finished_run(out / f"seed_{seed}", tasks, wanted)
        if finished is not None:
            print(f"seed {seed}: finished earlier, reading {finished.results_path}")
            runs.append(str(finished.results_path.relative_to(out)))
            continue
        if lm is None:
            lm = get_model(model).create_from_arg_obj(dict(model_args), {"batch_size": batch_size, "device": device})
        written = evaluate_and_save(
            lm,
            model_args,
            tasks,
            out / f"seed_{seed}",
            task_manager=task_manager,
            model_type=model,
            num_fewshot=num_fewshot,
            limit=limit,
            batch_size=batch_size,
            device=device,
            fewshot_random_seed=seed,
            bootstrap_iters=bootstrap_iters,
        )
        ran = load_run(written)
        zero_shot = [t for t in ran.results["configs"] if ran.n_shot(t) == 0]
        if zero_shot:
            raise ValueError(f"task(s) {', '.join(zero_shot)} fix num_fewshot: 0 in their config; they cannot run as ICL")
        runs.append(str(written.relative_to(out)))
    recorded: dict[int, str] = {}
    existing = read_icl_manifest(out)  # read now, not at the start: another process may have added seeds meanwhile
    if existing is not None:
        recorded = dict(zip(existing["seeds"], existing["runs"]))
    recorded.update(zip(seeds, runs))
    recorded = dict(sorted(recorded.items()))
    return write_icl_manifest(out, list(recorded), list(recorded.values()), **settings)


def icl_summary(paths: Sequence[str | Path], metric: str = "acc", filter_name: str | None = None) -> str:
    """A markdown table: per task, k, each seed's value and the mean ± std over seeds (points)."""
    import numpy as np

    runs = load_icl_runs(paths)
    tasks = select_tasks({"icl": runs})
    seeds = [run.fewshot_seed for run in runs]
    lines = [
        f"| task | k | {' | '.join(f'seed {s}' for s in seeds)} | mean ± std |",
        "|---|--:|" + "--:|" * len(seeds) + "---|",
    ]
    for task in tasks:
        values = []
        for run in runs:
            value = run.reported(task, metric, filter_name or _only_filter(run, task, metric))
            if value is None:
                raise ValueError(f"{run} reports no {metric} under filter {filter_name!r} for {task}")
            values.append(100 * value)
        cells = " | ".join(f"{v:.1f}" for v in values)
        lines.append(
            f"| {task} | {runs[0].n_shot(task)} | {cells} | {np.mean(values):.1f} ± {np.std(values, ddof=1):.1f} |"
        )
    return "\n".join(lines) + "\n"


def _only_filter(run: Run, task: str, metric: str) -> str:
    filters = run.reported_filters(task, metric)
    if not filters:
        raise ValueError(f"{run} reports no {metric} for {task}")
    if len(filters) > 1:
        raise ValueError(f"{task}: {metric} is reported under several filters ({', '.join(filters)}); pick one with --filter")
    return filters[0]
