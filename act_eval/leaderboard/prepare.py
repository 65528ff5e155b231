"""Write a submission's manifest from what an lm-eval output directory already records.

Everything the results file says (model arguments, tasks, shots, seeds, versions, date,
hardware) is copied from it; the arm, the suite and the head map follow from the model
arguments, the run's groups and, for a run from ``act-eval calibrate``, its ``config.calibration``; the model's identity comes from :func:`act_eval.lm.pretrained.model_identity`
and its file hash from the weights on this machine. Only what cannot be known (a hub revision
for a hub model without a recorded commit, or other hardware wording) needs an option.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from act_eval import __version__
from act_eval.core.head_map import HeadMap, load_head_map, published_dir
from act_eval.files import atomic_write_text
from act_eval.icl import icl_run_files
from act_eval.leaderboard.manifest import (
    HEAD_MAP_FILE,
    MANIFEST,
    UNCALIBRATED,
    FewShot,
    HeadMapRef,
    Manifest,
    ModelInfo,
    Seeds,
    Versions,
    parse_manifest,
)
from act_eval.leaderboard.recorded import check_recorded_map, recorded_map, run_settings
from act_eval.lm.pretrained import embedded_model, model_identity
from act_eval.lm.runs import Run, load_run, model_args_dict
from act_eval.rivals.label_prior import CALIBRATION_KEY

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def prepare_manifest(
    run_dir: Path,
    *,
    suite: str | None = None,
    model_id: str | None = None,
    revision: str | None = None,
    file_hash: str | None = None,
    hardware: str | None = None,
    force: bool = False,
) -> Path:
    """Write ``run_dir/manifest.json`` (and ``head_map.json`` for an unpublished map); return the manifest path.

    ``run_dir`` is an lm-eval ``--output_path`` directory (its newest run) or a directory from
    ``act-eval icl run`` (all its seed runs, the ICL arm).
    """
    from act_eval.leaderboard.suites import infer_suite, load_suite

    target = run_dir / MANIFEST
    if target.exists() and not force:
        raise ValueError(f"{target} exists; pass --force to replace it")
    icl = icl_run_files(run_dir)
    runs = [load_run(run_dir)] if icl is None else [load_run(file) for file in icl]
    first = runs[0]
    config = first.results.get("config", {})
    args = model_args_dict(config.get("model_args") or {})
    if "act_heads" in args:
        raise ValueError(
            "the run calibrated inline act_heads: save them as a head map and run with head_map= to submit"
        )
    calibration = config.get(CALIBRATION_KEY)  # written by `act-eval calibrate`: that method is the arm
    head_map = load_head_map(args["head_map"]) if "head_map" in args else None
    arm = (
        "icl" if icl is not None else calibration["method"] if calibration else head_map.rule if head_map else "baseline"
    )  # a map's rule is its run's arm: act or first_token
    if head_map and head_map.rule != "act" and arm != head_map.rule:
        raise ValueError(f"a {arm} run of the {head_map.rule} map {head_map.name} cannot be submitted (not an arm of the board yet)")
    suite_name = suite or infer_suite(first.results.get("group_subtasks", {}))
    recorded = recorded_map(first)
    if head_map and recorded:  # refuse now, not at submit, a map edited since the run
        check_recorded_map(recorded, head_map, args)
    pretrained = str(args.get("pretrained", ""))
    manifest = Manifest(
        arm=arm,
        model=ModelInfo(
            id=model_id or model_identity(pretrained),
            revision=revision or config.get("model_sha") or None,
            file_hash=file_hash or weights_hash(pretrained),
            lm_eval_model=config.get("model"),
            model_args=config.get("model_args"),
        ),
        head_map=HeadMapRef(head_map.name, head_map.content_hash) if head_map else None,
        **_settings(head_map, args),
        suite=suite_name,
        subset=load_suite(suite_name).subset,
        tasks=tuple(first.tasks),
        fewshot=FewShot(
            num_fewshot=max((first.n_shot(t) or 0) for t in first.tasks) if arm == "icl" else None,
            seeds=tuple(run.fewshot_seed for run in runs),
            apply_chat_template=bool(first.results.get("chat_template")),
            fewshot_as_multiturn=bool(first.results.get("fewshot_as_multiturn")),
        ),
        seeds=Seeds(config.get("random_seed"), config.get("numpy_seed"), config.get("torch_seed")),
        versions=Versions(first.results.get("lm_eval_version"), first.results.get("transformers_version"), __version__),
        hardware=hardware or describe_hardware(first),
        date=_date(first),
        runs=tuple(str(run.results_path.relative_to(run_dir)) for run in runs),
    )
    text = manifest.to_json()
    parse_manifest(json.loads(text), str(target))  # what is written must read back
    if head_map and Path(head_map.source).resolve().parent != published_dir().resolve():
        shutil.copyfile(head_map.source, run_dir / HEAD_MAP_FILE)  # the submission carries an unpublished map
    return atomic_write_text(target, text)


def _settings(head_map: HeadMap | None, args: dict[str, Any]) -> Mapping[str, Any]:
    """The manifest's calibration fields: the parameters the run used (the map's, unless ``act_*`` overrode them)."""
    if head_map is None:
        return UNCALIBRATED
    return {**UNCALIBRATED, "rule": head_map.rule, **run_settings(head_map, args)}


def weights_hash(pretrained: str) -> str | None:
    """sha256 of the weights ``pretrained`` names on this machine, or None for a hub id.

    An embedded name or a checkpoint converted from one hashes its GGUF file (what was
    downloaded, so both spellings of one model agree); a directory hashes its weight files.
    """
    files: list[Path] = []
    embedded = embedded_model(pretrained)
    source = Path(pretrained) / "act_eval_source.txt"
    if embedded is not None:
        files = [embedded.locate()]
    elif source.is_file() and len(lines := source.read_text().splitlines()) > 1 and Path(lines[1]).is_file():
        files = [Path(lines[1])]
    elif Path(pretrained).is_dir():
        files = sorted(p for p in Path(pretrained).iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        return None
    if len(files) == 1:
        return "sha256:" + _sha256(files[0])
    listing = "".join(f"{_sha256(f)}  {f.name}\n" for f in files)  # sha256sum's format, in name order
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_hardware(run: Run) -> str:
    """CPU model and count, and GPU, from the environment report lm-eval stores with the run.

    Not the ``device`` lm-eval records: that is what was asked for (the CLI's default is
    ``cuda:0`` even on a machine without a GPU, where HFLM falls back to the CPU).
    """
    info = run.results.get("pretty_env_info") or ""

    def line(label: str) -> str | None:
        match = re.search(rf"^{re.escape(label)}:\s*(.+)$", info, re.MULTILINE)
        return match.group(1).strip() if match else None

    cpu, count, gpu = line("Model name"), line("CPU(s)"), line("GPU models and configuration")
    if not cpu:
        raise ValueError(f"{run} records no hardware details; describe the machine with --hardware")
    cores = f" ({count} cores)" if count else ""
    accelerator = f"GPU {gpu}" if line("Is CUDA available") == "True" and gpu else "no CUDA GPU"
    return f"CPU {cpu}{cores}; {accelerator}"


def _date(run: Run) -> str:
    """When the run started (lm-eval's ``date``, epoch seconds), else its results file's date id."""
    started = run.results.get("date")
    if isinstance(started, (int, float)):
        return datetime.fromtimestamp(started, tz=timezone.utc).isoformat(timespec="seconds")
    day, _, clock = run.date_id.partition("T")  # 2026-11-22T16-36-10.521632: ':' became '-'
    return datetime.fromisoformat(f"{day}T{clock.replace('-', ':')}").isoformat(timespec="seconds")
