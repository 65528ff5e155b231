"""The calibration a run recorded, checked against the head map file it names.

``hf-act`` adds its calibration to lm-eval's results file (lm-eval 0.4.13 merges
``LM.get_model_info()`` into ``results["config"]``, ``evaluator.py``)::

    "config": {..., "act": {"head_map": "<name>" or "inline", "head_map_hash": "sha256:...",
                            "heads": {"<layer>": [heads]}, "num_calibrated_heads": N,
                            "rule": "act", "threshold": t, "beta": b, "reference_sinks": bool}}

(a first-token map's run records ``"rule": "first_token", "factor": g`` instead of the last three;
runs made before rules existed have no ``rule`` and are ACT's), so a run proves which map ran. :func:`check_recorded_map` refuses a map file that is not that map
(edited after the run, or another map of the same name); ``act-eval submit`` and ``act-eval
compare`` both call it. Runs made before ``hf-act`` recorded the block have none
(:func:`recorded_map` returns None) and are checked the old way, by name and the manifest's hash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from act_eval.core.head_map import HeadMap, HeadMapError, load_head_map, parse_heads
from act_eval.leaderboard.manifest import HEAD_MAP_FILE
from act_eval.lm.runs import Run

INLINE = "inline"  # the block's head_map for heads given as act_heads= rather than a map file
_KEYS = ("head_map", "head_map_hash", "heads", "num_calibrated_heads")
RULE_KEYS = {"act": ("threshold", "beta"), "first_token": ("factor",)}  # each rule's recorded parameters


@dataclass(frozen=True)
class RecordedMap:
    """``config.act`` of a results file: the calibration that ran."""

    head_map: str  # the map's name, or "inline"
    content_hash: str
    heads: dict[int, tuple[int, ...]]
    num_calibrated_heads: int
    settings: dict[str, float]  # the rule's parameters (:data:`RULE_KEYS`): threshold and beta, or factor
    reference_sinks: bool | None
    rule: str = "act"

    def describe(self) -> str:
        rule = "" if self.rule == "act" else f"rule {self.rule}, "
        params = ", ".join(f"{name} {value:g}" for name, value in self.settings.items())
        return f"{self.content_hash[:19]}..., {self.num_calibrated_heads} head(s), {rule}{params}"


def recorded_map(run: Run) -> RecordedMap | None:
    """The run's recorded calibration, or None for a run without one (plain ``hf``, or an older ``hf-act``)."""
    block = run.results.get("config", {}).get("act")
    if block is None:
        return None
    where = f"{run}: config.act"
    rule = block.get("rule", "act") if isinstance(block, dict) else "act"
    if rule not in RULE_KEYS:
        raise ValueError(f"{where} names an unknown rule {rule!r}")
    keys = _KEYS + RULE_KEYS[rule]
    if not isinstance(block, dict) or any(k not in block for k in keys):
        missing = [k for k in keys if not isinstance(block, dict) or k not in block]
        raise ValueError(f"{where} is not hf-act's calibration record (lacks {', '.join(missing)})")
    try:
        heads = parse_heads(block["heads"], f"{where}: ")
        recorded = RecordedMap(
            head_map=str(block["head_map"]),
            content_hash=str(block["head_map_hash"]),
            heads={layer: tuple(sorted(h)) for layer, h in heads.items() if h},
            num_calibrated_heads=int(block["num_calibrated_heads"]),
            settings={name: float(block[name]) for name in RULE_KEYS[rule]},
            reference_sinks=block.get("reference_sinks"),
            rule=rule,
        )
    except (HeadMapError, TypeError, ValueError) as err:
        raise ValueError(f"{where} is malformed: {err}") from None
    counted = sum(len(h) for h in recorded.heads.values())
    if counted != recorded.num_calibrated_heads:
        raise ValueError(f"{where} lists {counted} heads but says num_calibrated_heads {recorded.num_calibrated_heads}")
    return recorded


def check_recorded_map(recorded: RecordedMap, head_map: HeadMap, model_args: dict[str, Any]) -> None:
    """Refuse (ValueError, one line naming the map) a map file that is not the map the run recorded."""
    name = head_map.name or head_map.source
    if recorded.head_map == INLINE:
        raise ValueError(f"head map {name}: the run calibrated inline act_heads, not a map file")
    if recorded.content_hash != head_map.content_hash:  # the hash covers the name: equal hashes, equal names
        if head_map.name and recorded.head_map != head_map.name:
            raise ValueError(
                f"head map {name}: the run used another map, {recorded.head_map!r} (content hash {recorded.content_hash})"
            )
        raise ValueError(
            f"head map {name}: the run used content hash {recorded.content_hash} but the map file now has "
            f"{head_map.content_hash}: the map was edited after the run"
        )
    own = {layer: tuple(sorted(h)) for layer, h in head_map.heads.items() if h}
    if recorded.heads != own:
        raise ValueError(f"head map {name}: the run calibrated heads {_heads(recorded.heads)}, the map has {_heads(own)}")
    if recorded.rule != head_map.rule:  # equal hashes, other rule: the record was edited
        raise ValueError(f"head map {name}: the run recorded rule {recorded.rule}, the map's rule is {head_map.rule}")
    expected_settings = run_settings(head_map, model_args)
    for param, used in recorded.settings.items():
        expected = expected_settings[param]
        if not math.isclose(used, expected, rel_tol=0, abs_tol=1e-12):
            source = f"act_{param}={expected:g}" if f"act_{param}" in model_args else f"the map's {expected:g}"
            raise ValueError(f"head map {name}: the run used {param} {used:g}, the run's settings give {source}")


def run_settings(head_map: HeadMap, model_args: dict[str, Any]) -> dict[str, float]:
    """The rule's parameters a run of ``head_map`` used (:data:`RULE_KEYS`): the map's, unless ``act_<name>`` overrode one."""
    return {name: float(model_args.get(f"act_{name}", getattr(head_map, name))) for name in RULE_KEYS[head_map.rule]}


def check_run_map(run: Run, given: Path) -> str | None:
    """For ``act-eval compare``: check the run's recorded calibration against its map file; a note, or None.

    The map file is the ``head_map.json`` of the submission the run belongs to (between the
    results file and ``given``, the path the user named), else the ``head_map=`` the run loaded
    (a path or a published name), else the recorded name among the published maps. A mismatch is
    a ValueError; a run without a record, or whose map is nowhere here, gets a note.
    """
    recorded = recorded_map(run)
    args = run.model_args
    if recorded is None:
        if "head_map" in args or any(k.startswith("act_") for k in args):
            return f"{run} records no calibration (made before hf-act recorded it): its head map is not checked"
        return None
    if recorded.head_map == INLINE:
        return f"{run} calibrated inline act_heads ({recorded.describe()}): no map file to check"
    for candidate in _map_candidates(run, given, args, recorded):
        try:
            head_map = load_head_map(candidate)  # a map file that is there but invalid is an error, not skipped
        except FileNotFoundError:
            continue
        check_recorded_map(recorded, head_map, args)
        return None
    return f"{run} used head map {recorded.head_map!r} ({recorded.describe()}), which is not here: not checked"


def _map_candidates(run: Run, given: Path, args: dict[str, Any], recorded: RecordedMap) -> Sequence[str | Path]:
    given = given.resolve()
    found: list[str | Path] = []
    directory = run.results_path.resolve().parent
    while True:
        if (directory / HEAD_MAP_FILE).is_file():
            found.append(directory / HEAD_MAP_FILE)
            break
        if directory == given or given not in directory.parents:
            break
        directory = directory.parent
    if isinstance(args.get("head_map"), str):
        found.append(args["head_map"])
    found.append(recorded.head_map)
    return found


def _heads(heads: dict[int, tuple[int, ...]]) -> str:
    return "{" + ", ".join(f"{layer}: {list(h)}" for layer, h in sorted(heads.items())) + "}" if heads else "none"
