"""The ``act-eval search`` job: load, draw examples, score heads, select, write the map."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from act_eval import __version__
from act_eval.head_map import HeadMap, check_beta, check_threshold
from act_eval.paths import cache_dir


@dataclass
class SearchConfig:
    model: str
    tasks: list[str]
    out: str
    name: str | None = None
    per_task: int = 16
    val_per_task: int = 8
    threshold: float = 0.1
    beta: float = 0.4
    alpha: float = 0.2
    patience: int = 2
    seed: int = 1234
    checkpoint: str | None = None
    restart: bool = False
    device: str | None = None


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def run_search(config: SearchConfig) -> HeadMap | None:
    """Run the search; returns the map (None on ranks other than 0 of a sharded run)."""
    import torch
    from lm_eval.models.huggingface import HFLM

    from act_eval.attention import enable_act, model_shape
    from act_eval.models import model_identity, resolve_pretrained
    from act_eval.search import Checkpoint, Settings, map_correct, score_heads
    from act_eval.search_data import examples_digest, expand_tasks, held_out_examples
    from act_eval.selection import as_layers, greedy, head_stats, screen

    check_threshold(config.threshold)
    check_beta(config.beta)
    if config.per_task < 1 or config.val_per_task < 0:
        raise ValueError("--per-task must be at least 1 and --val-per-task at least 0")
    torch.manual_seed(config.seed)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    identity = model_identity(config.model)
    lm = HFLM(pretrained=resolve_pretrained(config.model), device=device, dtype="float32", batch_size=1)
    model = lm.model.eval()
    enable_act(model, None, model_id=identity, check_model=False)
    shape = model_shape(model)
    settings = Settings(config.threshold, config.beta)
    tasks = expand_tasks(config.tasks)
    cal, cal_data = held_out_examples(lm, tasks, config.per_task, config.seed)
    val, val_data = held_out_examples(lm, tasks, config.val_per_task, config.seed, offset=config.per_task)
    if not cal:
        raise ValueError(f"none of {tasks} has a training split to search on")

    digest = hashlib.sha256(
        json.dumps([identity, shape, examples_digest(cal), asdict(settings), __version__]).encode()
    ).hexdigest()
    ckpt_dir = Path(config.checkpoint) if config.checkpoint else cache_dir() / "search" / digest[:16]
    rank, world = _rank_world()
    if config.restart and rank == 0 and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(ckpt_dir, digest)
    layers = [layer for layer in range(shape["num_layers"]) if layer % world == rank]
    results = score_heads(model, cal, settings, checkpoint, layers=layers, progress=rank == 0)
    if rank != 0:
        return None
    if world > 1:  # wait for the other ranks' layers
        while len(checkpoint.load_layers()) < shape["num_layers"]:
            time.sleep(2)
        results = score_heads(model, cal, settings, checkpoint, progress=False)

    stats = head_stats(results)
    kept = screen(stats, config.alpha)

    def val_accuracy(heads: dict[int, list[int]]) -> float:
        return sum(map_correct(model, heads, val, settings)) / len(val) if val else 0.0

    chosen, trajectory = greedy(kept, val_accuracy, config.patience) if val else (kept, [])
    base_cal = sum(results[(-1, -1)]) / len(cal)
    screened_map, greedy_map = as_layers(kept), as_layers(chosen)
    scores = {
        "baseline": {"calibration": base_cal, "validation": val_accuracy({}) if val else None},
        "screened": {"heads": len(kept), "calibration": sum(map_correct(model, screened_map, cal, settings)) / len(cal),
                     "validation": val_accuracy(screened_map) if val else None},
        "greedy": {"heads": len(chosen), "calibration": sum(map_correct(model, greedy_map, cal, settings)) / len(cal),
                   "validation": val_accuracy(greedy_map) if val else None},
    }
    out = Path(config.out)
    family = "classification" if set(tasks) & {"act_sst2", "act_agnews"} else "multiple_choice" if set(tasks) & {"act_arc_easy", "act_copa"} else "custom"
    hm = HeadMap(
        model=identity, heads={layer: tuple(hs) for layer, hs in greedy_map.items()}, threshold=config.threshold,
        beta=config.beta, name=config.name or out.name.removesuffix(".json"), task_family=family,
        provenance={
            "method": "act-eval search: each head calibrated alone on held-out training examples; keep rule, then greedy pass",
            "tool": f"act-eval {__version__}",
            "model": config.model,
            "data": {"calibration": cal_data, "validation": val_data, "seed": config.seed,
                     "calibration_examples": len(cal), "validation_examples": len(val),
                     "examples_sha256": examples_digest(cal)},
            "keep_rule": {"rule": "wins > losses and one-sided exact sign test p <= alpha", "alpha": config.alpha},
            "greedy": {"patience": config.patience, "trajectory": trajectory},
            "screened_heads": [[s.layer, s.head] for s in kept],
            "scores": scores,
            "head_stats": [s.as_dict() for s in stats],
        },
        **shape,
    )
    hm.save(out)
    return hm
