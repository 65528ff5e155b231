"""``act-eval icl run|show``: k-shot in-context learning over several few-shot seeds, as one arm.

The paper reports k-shot ICL as the mean over 5 seeds of the demonstrations. ``run`` loads the
model once and calls lm-eval's ``simple_evaluate`` once per seed (``fewshot_random_seed``; the
other seeds keep lm-eval's defaults, as ``lm_eval --seed 0,1234,1234,S`` would), saving each run
exactly as the lm-eval CLI does with ``--log_samples``::

    OUT/icl.json                                  manifest: k, seeds, tasks, run files
    OUT/seed_<S>/<model>/results_<date>.json      one lm-eval run per seed
    OUT/seed_<S>/<model>/samples_<task>_<date>.jsonl

``act-eval compare BASELINE ACT --icl OUT`` then treats them as one arm. Runs made otherwise
(e.g. data-parallel ``accelerate launch -m lm_eval ... --seed 0,1234,1234,S --log_samples``, one
output directory per seed) are read the same way: pass their directories to ``show`` or ``--icl``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from act_eval.files import atomic_write_text
from act_eval.lm.evaluate import evaluate_and_save

if TYPE_CHECKING:
    from act_eval.lm.runs import Run

DEFAULT_SEEDS = (0, 1, 2, 3, 4)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("icl", help="k-shot in-context learning over several few-shot seeds")
    action = parser.add_subparsers(dest="action", required=True)

    run = action.add_parser("run", help="run tasks at k shots once per few-shot seed (lm-eval Python API)")
    run.add_argument("--model", required=True, help="lm-eval model type, e.g. hf or hf-act")
    run.add_argument("--model_args", default="", help="as for lm_eval: JSON or key=value,key=value")
    run.add_argument("--tasks", required=True, help="comma-separated task or group names")
    run.add_argument("--num_fewshot", "-k", type=int, default=4, help="demonstrations per prompt (default: 4)")
    run.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="few-shot seeds (default: 0 1 2 3 4)")
    run.add_argument("--output_path", required=True, help="directory for the per-seed runs and icl.json")
    run.add_argument("--include_path", action="append", default=[], help="extra task directory (repeatable)")
    run.add_argument(
        "--no-builtin-tasks",
        dest="builtin_tasks",
        action="store_false",
        help="index only act-eval's and --include_path tasks (skips lm-eval's ~6 s task indexing)",
    )
    run.add_argument("--limit", type=float, help="documents per task (testing only)")
    run.add_argument("--batch_size", default=None)
    run.add_argument("--device", default=None, help="e.g. cuda:0 or cpu (default: cuda if available)")
    run.add_argument("--bootstrap_iters", type=int, default=100_000, help="lm-eval's stderr bootstrap (default as lm-eval)")
    run.set_defaults(func=_run)

    show = action.add_parser("show", help="per-seed values and mean ± std of ICL runs")
    show.add_argument("runs", nargs="+", metavar="RUN", help="run paths, or a directory from `icl run`")
    show.add_argument("--metric", default="acc")
    show.add_argument("--filter", dest="filter_name")
    show.set_defaults(func=_show)


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

    from act_eval.lm.runs import ICL_MANIFEST
    from act_eval.lm.suite import suite_task_manager
    from act_eval.suggest import check_known

    if num_fewshot < 1:
        raise ValueError(f"ICL needs at least one demonstration, got --num_fewshot {num_fewshot}")
    if len(set(seeds)) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"give at least two distinct few-shot seeds, got {list(seeds)}")
    out = Path(output_path)
    manifest = out / ICL_MANIFEST
    settings = {"num_fewshot": num_fewshot, "tasks": list(tasks), "model": model}
    if manifest.exists():
        existing = json.loads(manifest.read_text(encoding="utf-8"))
        if {k: existing.get(k) for k in settings} != settings:
            raise ValueError(
                f"{out} already holds an ICL run with other settings ({manifest}: "
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
        written = finished_run(out / f"seed_{seed}", model_args, tasks, num_fewshot, seed, limit)
        if written is not None:
            print(f"seed {seed}: finished earlier, reading {written}")
            runs.append(str(written.relative_to(out)))
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
        results = json.loads(written.read_text(encoding="utf-8"))
        zero_shot = [t for t in results["configs"] if results["n-shot"].get(t) == 0]
        if zero_shot:
            raise ValueError(f"task(s) {', '.join(zero_shot)} fix num_fewshot: 0 in their config; they cannot run as ICL")
        runs.append(str(written.relative_to(out)))
    recorded: dict[int, str] = {}
    if manifest.exists():  # read now, not at the start: another process may have added seeds meanwhile
        recorded = dict(zip(*(json.loads(manifest.read_text(encoding="utf-8"))[k] for k in ("seeds", "runs"))))
    recorded.update(zip(seeds, runs))
    recorded = dict(sorted(recorded.items()))
    body = {**settings, "seeds": list(recorded), "runs": list(recorded.values())}
    atomic_write_text(manifest, json.dumps(body, indent=2) + "\n")
    return manifest


def finished_run(
    seed_dir: Path, model_args: dict[str, Any], tasks: Sequence[str], num_fewshot: int, seed: int, limit: float | None
) -> Path | None:
    """The results file of a finished run of exactly these settings in ``seed_dir``, or None if there is none.

    A run with other settings there is an error rather than something to overwrite silently.
    """
    from act_eval.lm.runs import load_run

    if not any(seed_dir.glob("*/results_*.json")):
        return None
    run = load_run(seed_dir)
    config = run.results.get("config", {})
    ran = set(run.tasks) | set(run.results.get("group_subtasks", {}))
    found = {
        "few-shot seed": config.get("fewshot_seed"),
        "model_args": config.get("model_args"),
        "limit": config.get("limit"),
        "shots": sorted({run.n_shot(t) for t in run.tasks}),
        "tasks": sorted(set(tasks) & ran),
    }
    wanted = {"few-shot seed": seed, "model_args": dict(model_args), "limit": limit, "shots": [num_fewshot], "tasks": sorted(tasks)}
    differ = [k for k in wanted if found[k] != wanted[k]]
    if differ:
        raise ValueError(
            f"{seed_dir} holds a run with other settings ({', '.join(f'{k}: {found[k]!r}, not {wanted[k]!r}' for k in differ)}); "
            "choose a new --output_path or remove that directory"
        )
    return run.results_path


def icl_summary(paths: Sequence[str | Path], metric: str = "acc", filter_name: str | None = None) -> str:
    """A markdown table: per task, k, each seed's value and the mean ± std over seeds (points)."""
    import numpy as np

    from act_eval.lm.runs import load_icl_runs, select_tasks

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


def _run(args: argparse.Namespace) -> int:
    from lm_eval._cli.utils import key_val_to_dict, try_parse_json

    parsed = try_parse_json(args.model_args) if args.model_args else {}
    model_args = parsed if isinstance(parsed, dict) else key_val_to_dict(parsed)
    manifest = run_icl(
        args.model,
        model_args,
        [t for item in args.tasks.split(",") if (t := item.strip())],
        args.num_fewshot,
        args.seeds,
        args.output_path,
        include_path=args.include_path,
        builtin_tasks=args.builtin_tasks,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        bootstrap_iters=args.bootstrap_iters,
    )
    print(f"ICL runs: {manifest.parent} (pass it to `act-eval compare ... --icl`)")
    print(icl_summary([manifest.parent]), end="")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(icl_summary(args.runs, args.metric, args.filter_name), end="")
    return 0
