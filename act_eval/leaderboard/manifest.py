"""The submission manifest: what was run, on what, and how; its schema and its reader.

``leaderboard/README.md`` (from ``format.md`` beside this module) documents every field. The
reader refuses anything off-schema with a message that names the field, so a typo never reaches
the board. Fields that the results file also records are cross-checked against it in
:mod:`.verify`; the rest (model identity and hash, head map, hardware) are the submitter's word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from act_eval.core.head_map import HeadMapError, check_beta, check_factor, check_threshold
from act_eval.icl import ICL_MANIFEST
from act_eval.leaderboard import SubmissionError
from act_eval.rivals.label_prior import LABELS

FORMAT = "act-eval-submission"
FORMAT_VERSION = 1  # every arm but first_token: ACT's threshold and beta
# a run of a first-token head map: its rule and factor in place of threshold and beta, so that a
# reader of version 1 refuses it rather than take it for an uncalibrated arm
FIRST_TOKEN_VERSION = 2
MANIFEST = "manifest.json"
HEAD_MAP_FILE = "head_map.json"  # an unpublished head map travels with its submission
ARMS = ("baseline", "act", "icl", "contextual", "batch", "first_token")
# the label-prior rivals (``act-eval calibrate``): one run re-scored from a baseline or ACT run's samples
CALIBRATED_ARMS = tuple(LABELS)
SUBSETS = ("full", "lite")
# the manifest's calibration fields of a run without a head map; a map's run sets its rule's parameters
UNCALIBRATED: Mapping[str, Any] = MappingProxyType({"threshold": None, "beta": None, "rule": "act", "factor": None})
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelInfo:
    id: str  # hub id the weights come from (head maps cite the same id)
    revision: str | None  # hub revision or commit
    file_hash: str | None  # "sha256:<hex>" of the weights file(s)
    lm_eval_model: str  # lm-eval model type: hf, hf-act, ...
    model_args: dict[str, Any] | str  # exactly as the results file records them

    @property
    def name(self) -> str:
        return short_name(self.id)

    @property
    def weights(self) -> str:
        """The revision, else the start of the file hash: enough to tell two weights apart in a table."""
        return self.revision or (self.file_hash or "")[:19]


@dataclass(frozen=True)
class HeadMapRef:
    name: str
    content_hash: str


@dataclass(frozen=True)
class FewShot:
    num_fewshot: int | None  # None: every task at its own default from tasks/ (baseline, act); k: all at k (icl)
    seeds: tuple[int | None, ...]  # the few-shot seed of each run, in the order of ``runs``
    apply_chat_template: bool
    fewshot_as_multiturn: bool


@dataclass(frozen=True)
class Seeds:
    random: int | None
    numpy: int | None
    torch: int | None


@dataclass(frozen=True)
class Versions:
    lm_eval: str
    transformers: str
    act_eval: str


@dataclass(frozen=True)
class Manifest:
    arm: str
    model: ModelInfo
    head_map: HeadMapRef | None
    threshold: float | None
    beta: float | None
    suite: str
    subset: str
    tasks: tuple[str, ...]
    fewshot: FewShot
    seeds: Seeds
    versions: Versions
    hardware: str
    date: str
    runs: tuple[str, ...]  # results files, relative to the submission directory
    rule: str = "act"  # the head map's rule: "first_token" only in a version 2 manifest (the first_token arm)
    factor: float | None = None  # first_token: the factor the run scaled the first token's attention by

    def run_files(self, directory: Path) -> list[Path]:
        """The results files of the submission in ``directory``."""
        return [directory / rel for rel in self.runs]

    @property
    def format_version(self) -> int:
        return FORMAT_VERSION if self.rule == "act" else FIRST_TOKEN_VERSION

    def to_json(self) -> str:
        """The manifest file: a version 1 manifest exactly as before first-token runs existed, byte for byte."""
        data = {"format": FORMAT, "format_version": self.format_version, **asdict(self)}
        return json.dumps({key: data[key] for key in _TOP_KEYS[self.format_version]}, indent=2) + "\n"

    @property
    def model_key(self) -> tuple[str, str | None, str | None, str]:
        """What must agree for two submissions to be compared: the same weights on the same subset."""
        return (self.model.id, self.model.revision, self.model.file_hash, self.subset)

    @property
    def configuration(self) -> tuple[Any, ...]:
        """Two submissions of one model with this equal and a task in common are duplicates."""
        head_map = self.head_map.content_hash if self.head_map else None
        return (self.model_key, self.arm, head_map, self.threshold, self.beta, self.factor, self.fewshot.num_fewshot)

    @property
    def arm_label(self) -> str:
        if self.arm in CALIBRATED_ARMS:
            act = f"ACT ({self.head_map.name}) + " if self.head_map else ""
            return act + LABELS[self.arm]
        if self.arm == "act" and self.head_map:
            return f"ACT ({self.head_map.name})"
        if self.arm == "first_token" and self.head_map:
            return f"first-token scaling ({self.head_map.name})"
        if self.arm == "icl":
            return f"ICL {self.fewshot.num_fewshot}-shot × {len(self.runs)} seeds"
        return "baseline"


def short_name(model_id: str) -> str:
    """``HuggingFaceTB/SmolLM2-135M-Instruct`` -> ``SmolLM2-135M-Instruct``, for ids and tables."""
    return model_id.rstrip("/").rsplit("/", 1)[-1]


def shots_label(manifest: Manifest) -> str:
    """The few-shot setting in words, for tables."""
    f = manifest.fewshot
    if f.num_fewshot is None:
        return "task defaults"
    return f"{f.num_fewshot} (seeds {', '.join(map(str, f.seeds))})"


def read_manifest(directory: Path) -> Manifest:
    """Read and validate ``directory/manifest.json``."""
    path = directory / MANIFEST
    if not path.is_file():
        raise SubmissionError(
            "manifest", f"no {MANIFEST} in {directory}: write one with `act-eval leaderboard manifest {directory}`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SubmissionError("manifest", f"{path} is not valid JSON: {err}") from None
    return parse_manifest(data, str(path))


def run_paths(path: Path) -> list[Path]:
    """What a path given for an arm stands for: a submission directory (a manifest, no ``icl.json``) for the runs
    its manifest lists, anything else (a run, an ``act-eval icl run`` directory) for itself."""
    if path.is_dir() and (path / MANIFEST).is_file() and not (path / ICL_MANIFEST).is_file():
        return read_manifest(path).run_files(path)
    return [path]


def parse_manifest(data: Any, where: str = MANIFEST) -> Manifest:
    """Validate a parsed manifest; every problem names its field."""
    f = _Fields(where)
    version = data.get("format_version") if isinstance(data, dict) else FORMAT_VERSION
    if version not in tuple(_TOP_KEYS):  # a tuple: a malformed version may be unhashable
        read = " and ".join(map(str, _TOP_KEYS))
        f.fail("format_version", f"must be {read} (the versions this act-eval reads)", version)
    top = f.object(data, "", _TOP_KEYS[version])
    if top["format"] != FORMAT:
        f.fail("format", f"must be {FORMAT!r}", top["format"])
    arm = f.choice(top["arm"], "arm", ARMS)

    m = f.object(top["model"], "model", ("id", "revision", "file_hash", "lm_eval_model", "model_args"))
    model = ModelInfo(
        id=f.text(m["id"], "model.id"),
        revision=f.text(m["revision"], "model.revision", nullable=True),
        file_hash=f.sha256(m["file_hash"], "model.file_hash", nullable=True),
        lm_eval_model=f.text(m["lm_eval_model"], "model.lm_eval_model"),
        model_args=m["model_args"]
        if isinstance(m["model_args"], (dict, str))
        else f.fail(
            "model.model_args", "must be an object or a string, as the results file records it", m["model_args"]
        ),
    )
    if model.revision is None and model.file_hash is None:
        f.fail("model", "needs a revision or a file_hash (or both) to name the exact weights", None)

    head_map = None
    if top["head_map"] is not None:
        h = f.object(top["head_map"], "head_map", ("name", "content_hash"))
        head_map = HeadMapRef(f.text(h["name"], "head_map.name"), f.sha256(h["content_hash"], "head_map.content_hash"))
    if arm in ("act", "first_token") and head_map is None:
        f.fail("head_map", f"is required for the {arm} arm (name and content_hash of the map the run used)", None)
    settings = _rule_settings(f, top, arm, head_map is not None)

    runs = tuple(f.text(r, f"runs[{i}]") for i, r in enumerate(f.array(top["runs"], "runs")))
    for i, run in enumerate(runs):
        p = PurePosixPath(run)
        if p.is_absolute() or ".." in p.parts or not re.fullmatch(r"results_.+\.json", p.name):
            f.fail(f"runs[{i}]", "must be a relative path to an lm-eval results_<date>.json inside the submission", run)
    if len(set(runs)) != len(runs):
        f.fail("runs", "lists a run twice", list(runs))

    s = f.object(top["fewshot"], "fewshot", ("num_fewshot", "seeds", "apply_chat_template", "fewshot_as_multiturn"))
    fewshot = FewShot(
        num_fewshot=f.integer(s["num_fewshot"], "fewshot.num_fewshot", minimum=0, nullable=True),
        seeds=tuple(
            f.integer(x, f"fewshot.seeds[{i}]", nullable=True)
            for i, x in enumerate(f.array(s["seeds"], "fewshot.seeds"))
        ),
        apply_chat_template=f.boolean(s["apply_chat_template"], "fewshot.apply_chat_template"),
        fewshot_as_multiturn=f.boolean(s["fewshot_as_multiturn"], "fewshot.fewshot_as_multiturn"),
    )
    if len(fewshot.seeds) != len(runs):
        f.fail("fewshot.seeds", f"must give one few-shot seed per run ({len(runs)} runs)", list(fewshot.seeds))
    if arm == "icl":
        if fewshot.num_fewshot is None or fewshot.num_fewshot < 1 or len(runs) < 2:
            f.fail("fewshot", "the icl arm needs num_fewshot >= 1 and at least two runs (one per few-shot seed)", s)
    elif fewshot.num_fewshot is not None or len(runs) != 1:
        f.fail("fewshot", f"the {arm} arm is one run at the tasks' own shots (num_fewshot null, one entry in runs)", s)

    seeds = f.object(top["seeds"], "seeds", ("random", "numpy", "torch"))
    versions = f.object(top["versions"], "versions", ("lm_eval", "transformers", "act_eval"))
    tasks = tuple(f.text(t, f"tasks[{i}]") for i, t in enumerate(f.array(top["tasks"], "tasks")))
    if len(set(tasks)) != len(tasks):
        f.fail("tasks", "lists a task twice", list(tasks))
    date = f.text(top["date"], "date")
    try:
        datetime.fromisoformat(date)
    except ValueError:
        f.fail("date", "must be an ISO 8601 date and time", date)
    return Manifest(
        arm=arm,
        model=model,
        head_map=head_map,
        **settings,
        suite=f.text(top["suite"], "suite"),
        subset=f.choice(top["subset"], "subset", SUBSETS),
        tasks=tasks,
        fewshot=fewshot,
        seeds=Seeds(*(f.integer(seeds[k], f"seeds.{k}", nullable=True) for k in ("random", "numpy", "torch"))),
        versions=Versions(*(f.text(versions[k], f"versions.{k}") for k in ("lm_eval", "transformers", "act_eval"))),
        hardware=f.text(top["hardware"], "hardware"),
        date=date,
        runs=runs,
    )


_TOP_KEYS = {  # each version's fields, in file order: version 2 has the rule and factor where version 1 has threshold and beta
    FORMAT_VERSION: (
        "format", "format_version", "arm", "model", "head_map", "threshold", "beta", "suite", "subset",
        "tasks", "fewshot", "seeds", "versions", "hardware", "date", "runs",
    ),
    FIRST_TOKEN_VERSION: (
        "format", "format_version", "arm", "model", "head_map", "rule", "factor", "suite", "subset",
        "tasks", "fewshot", "seeds", "versions", "hardware", "date", "runs",
    ),
}  # fmt: skip


def _rule_settings(f: _Fields, top: dict[str, Any], arm: str, has_map: bool) -> Mapping[str, Any]:
    """The calibration's parameters the manifest's version holds: ACT's threshold and beta, or the rule and factor."""
    if top["format_version"] == FIRST_TOKEN_VERSION:
        if arm != "first_token":
            f.fail("arm", "must be first_token in a version 2 manifest (the run of a first-token head map)", arm)
        if top["rule"] != "first_token":
            f.fail("rule", "must be 'first_token' (the head map's rule)", top["rule"])
        return {**UNCALIBRATED, "rule": "first_token", "factor": _calibration(f, arm, "factor", top["factor"], check_factor)}
    if arm == "first_token":
        f.fail("format_version", f"must be {FIRST_TOKEN_VERSION} for the first_token arm (rule and factor)", 1)
    if arm == "act" or (arm in CALIBRATED_ARMS and has_map):  # a calibrated ACT run keeps its map
        return {
            **UNCALIBRATED,
            "threshold": _calibration(f, arm, "threshold", top["threshold"], check_threshold),
            "beta": _calibration(f, arm, "beta", top["beta"], check_beta),
        }
    for name in ("head_map", "threshold", "beta"):
        if top[name] is not None:
            f.fail(name, f"must be null for the {arm} arm (no calibration)", top[name])
    return UNCALIBRATED


def _calibration(f: _Fields, arm: str, name: str, value: Any, check: Any) -> float:
    try:
        return check(value)
    except HeadMapError as err:
        f.fail(name, f"is invalid for the {arm} arm ({err})", value)


class _Fields:
    """Typed field access that turns every schema violation into one ``manifest`` refusal."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, what: str, value: Any) -> Any:
        name = f"field '{field}'" if field else "the manifest"
        raise SubmissionError("manifest", f"{self.where}: {name} {what}, got {json.dumps(value, default=str)[:120]}")

    def object(self, value: Any, field: str, keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, "must be an object", value)
        prefix = f"{field}." if field else ""
        missing = [k for k in keys if k not in value]
        if missing:
            self.fail(field, f"lacks {', '.join(prefix + k for k in missing)}", sorted(value))
        unknown = sorted(set(value) - set(keys))
        if unknown:
            self.fail(field, f"has unknown field(s) {', '.join(prefix + k for k in unknown)}", sorted(value))
        return value

    def array(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            self.fail(field, "must be a non-empty list", value)
        return value

    def text(self, value: Any, field: str, *, nullable: bool = False) -> Any:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(field, "must be a non-empty string" + (" or null" if nullable else ""), value)
        return value

    def choice(self, value: Any, field: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            self.fail(field, f"must be one of {', '.join(choices)}", value)
        return value

    def integer(self, value: Any, field: str, *, minimum: int | None = None, nullable: bool = False) -> Any:
        if value is None and nullable:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
            bound = f" >= {minimum}" if minimum is not None else ""
            self.fail(field, f"must be an integer{bound}" + (" or null" if nullable else ""), value)
        return value

    def boolean(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            self.fail(field, "must be true or false", value)
        return value

    def sha256(self, value: Any, field: str, *, nullable: bool = False) -> Any:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            self.fail(field, "must be 'sha256:<64 lowercase hex digits>'" + (" or null" if nullable else ""), value)
        return value
