"""Head maps: which query heads are calibrated, and by which rule, in a documented, versioned JSON format.

This module is the one place that reads, validates, hashes and writes head maps. The format
(``head_maps/README.md`` documents every field)::

    {"format": "act-eval-head-map", "format_version": 1, "name": ..., "model": <hub id>,
     "architecture": <model_type>, "num_layers": L, "num_heads": H, "num_kv_heads": KV,
     "task_family": ..., "threshold": 0.1, "beta": 0.4,
     "heads": {"<layer>": [<query head>, ...], ...},   # 0-based, empty layers omitted
     "provenance": {...}, "content_hash": "sha256:<hex of the canonical JSON without this key>"}

That is an ACT map. A first-token map (``rule = "first_token"``: the first real token's
attention times ``factor`` in the listed heads) is format version 2, with ``"rule":
"first_token", "factor": g`` in place of ``threshold`` and ``beta``: a reader of version 1 refuses
it rather than calibrating its heads by ACT. ACT maps are still written as version 1, field for
field, so every existing file and content hash stays as it was.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from act_eval.core.rules import DEFAULT_BETA, DEFAULT_THRESHOLD, RULES
from act_eval.files import atomic_write_text
from act_eval.paths import resource_dir
from act_eval.suggest import did_you_mean

FORMAT = "act-eval-head-map"
FORMAT_VERSION = 1  # ACT maps
FIRST_TOKEN_VERSION = 2  # maps with a rule other than ACT's (the newest version this module reads)
_REQUIRED = ("model", "architecture", "num_layers", "num_heads", "num_kv_heads", "heads")


class HeadMapError(ValueError):
    """A head map that is malformed or does not fit the model it is used with."""


def check_threshold(value: Any) -> float:
    value = _number("threshold", value)
    if not 0.0 < value < 1.0:
        raise HeadMapError(f"act_threshold must lie in (0, 1), got {value}")
    return value


def check_beta(value: Any) -> float:
    value = _number("beta", value)
    if not 0.0 <= value <= 1.0:
        raise HeadMapError(f"act_beta must lie in [0, 1], got {value}")
    return value


def check_factor(value: Any) -> float:
    value = _number("factor", value)
    if not 0.0 < value < math.inf:
        raise HeadMapError(f"act_factor must be a positive number (the first token's attention is multiplied by it), got {value}")
    return value


def check_rule(value: Any) -> str:
    if value not in RULES:
        raise HeadMapError(f"rule must be one of {', '.join(RULES)}, got {value!r}")
    return value


def _number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HeadMapError(f"act_{name} must be a number, got {value!r}") from None
    if math.isnan(number):
        raise HeadMapError(f"act_{name} must be a number, got {value!r}")
    return number


@dataclass(frozen=True)
class HeadMap:
    model: str
    architecture: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    heads: dict[int, tuple[int, ...]]
    threshold: float = DEFAULT_THRESHOLD
    beta: float = DEFAULT_BETA
    name: str = ""
    task_family: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where it was read from (not part of the content)
    rule: str = RULES[0]  # "act", or "first_token" (then ``factor``, and threshold and beta unused)
    factor: float | None = None  # first_token: what the first token's attention is multiplied by

    def __post_init__(self) -> None:
        for key in ("num_layers", "num_heads", "num_kv_heads"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise HeadMapError(f"{self._where}{key} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise HeadMapError(
                f"{self._where}num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        check_threshold(self.threshold)
        check_beta(self.beta)
        check_rule(self.rule)
        if self.rule == "act" and self.factor is not None:
            raise HeadMapError(f"{self._where}factor is first-token scaling's parameter; an ACT map has threshold and beta")
        if self.rule == "first_token":
            if self.factor is None:
                raise HeadMapError(f"{self._where}a first_token map needs a factor")
            object.__setattr__(self, "factor", check_factor(self.factor))
            if (self.threshold, self.beta) != (DEFAULT_THRESHOLD, DEFAULT_BETA):
                raise HeadMapError(f"{self._where}threshold and beta are ACT's parameters; a first_token map has only a factor")
        for layer, heads in self.heads.items():
            if not 0 <= layer < self.num_layers:
                raise HeadMapError(
                    f"{self._where}layer {layer} is out of range: the model has {self.num_layers} layers (0-{self.num_layers - 1})"
                )
            for head in heads:
                if not 0 <= head < self.num_heads:
                    raise HeadMapError(
                        f"{self._where}head {head} of layer {layer} is out of range: "
                        f"the model has {self.num_heads} query heads per layer (0-{self.num_heads - 1})"
                    )
            if len(set(heads)) != len(heads):
                raise HeadMapError(f"{self._where}layer {layer} lists a head twice: {list(heads)}")

    @property
    def _where(self) -> str:
        return f"head map {self.name or self.source or '(inline)'}: "

    @property
    def num_calibrated(self) -> int:
        return sum(len(h) for h in self.heads.values())

    def content(self) -> dict[str, Any]:
        """The JSON content, without the hash, in canonical order (an ACT map's exactly as before rules existed)."""
        act = self.rule == "act"
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION if act else FIRST_TOKEN_VERSION,
            "name": self.name,
            "model": self.model,
            "architecture": self.architecture,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "task_family": self.task_family,
            **self.rule_settings(),
            "heads": {str(layer): sorted(self.heads[layer]) for layer in sorted(self.heads) if self.heads[layer]},
            "provenance": self.provenance,
        }

    def rule_settings(self) -> dict[str, Any]:
        """The rule's parameters as the map records them: threshold and beta (ACT), or the rule and its factor."""
        if self.rule == "act":
            return {"threshold": self.threshold, "beta": self.beta}
        return {"rule": self.rule, "factor": self.factor}

    def unsearched_tasks(self, tasks: Iterable[str | None]) -> list[str]:
        """The tasks among ``tasks`` that this map's search never saw (a task's ``_lite`` subset counts as the
        task), so a run can say when a map meets prompts it was not chosen on; none for a map whose provenance
        lists no searched tasks (the authors' maps)."""
        searched = set(self.provenance.get("tasks") or ())
        if not searched:
            return []
        return sorted({t for t in tasks if t is not None and t.removesuffix("_lite") not in searched})

    def settings_text(self) -> str:
        """The rule's parameters in a few characters, for listings."""
        return f"t={self.threshold:g} b={self.beta:g}" if self.rule == "act" else f"first_token g={self.factor:g}"

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON content: what results cite to name this exact map."""
        return content_hash(self.content())

    def to_json(self) -> str:
        return json.dumps({**self.content(), "content_hash": self.content_hash}, indent=1) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary file, then rename), so a crash never leaves half a map."""
        return atomic_write_text(Path(path), self.to_json())

    def summary_line(self) -> str:
        return (
            f"{self.name or self.source:54s} {self.model:36s} {self.task_family:18s} "
            f"{self.num_calibrated:4d}/{self.num_layers * self.num_heads} heads  "
            f"{self.settings_text()}  {self.content_hash[:19]}"
        )

    def describe(self) -> str:
        lines = [
            f"name:          {self.name}",
            f"model:         {self.model} ({self.architecture}, {self.num_layers} layers x {self.num_heads} heads, {self.num_kv_heads} KV heads)",
            f"task family:   {self.task_family}",
            f"threshold:     {self.threshold:g}    beta: {self.beta:g}" if self.rule == "act" else
            f"rule:          first_token (the first token's attention times {self.factor:g}, rows renormalised)",
            f"heads:         {self.num_calibrated} of {self.num_layers * self.num_heads}",
            f"content hash:  {self.content_hash}",
        ]
        for layer in range(self.num_layers):
            heads = self.heads.get(layer, ())
            if heads:
                marks = "".join("#" if h in heads else "." for h in range(self.num_heads))
                lines.append(f"  layer {layer:3d}  {marks}  {list(heads)}")
        if self.provenance:
            # per-head statistics and trajectories are long: `show --json` prints them
            brief = {k: v for k, v in self.provenance.items() if k not in ("head_stats", "greedy", "screened_heads")}
            data = brief.get("data")
            if isinstance(data, dict):  # per-task document counts, not the document indices
                brief["data"] = {
                    k: {task: d.get("documents") for task, d in v.items()} if isinstance(v, dict) and k in ("calibration", "validation") else v
                    for k, v in data.items()
                }
            lines.append("provenance:    " + json.dumps(brief, indent=2).replace("\n", "\n               "))
        return "\n".join(lines)


def content_hash(content: Mapping[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def parse_heads(value: Any, where: str = "") -> dict[int, tuple[int, ...]]:
    """Accept ``{"layer": [heads]}`` or ``[[layer, head], ...]`` (JSON text or Python objects)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise HeadMapError(f"{where}heads must be JSON like [[layer, head], ...]: {err}") from None
    result: dict[int, list[int]] = {}
    if isinstance(value, Mapping):
        items: Iterable = ((layer, head) for layer, heads in value.items() for head in _as_list(heads, where))
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise HeadMapError(f"{where}heads must be a mapping or a list of [layer, head] pairs, got {value!r}")
    for item in items:
        try:
            layer, head = item
            layer_i, head_i = _int(layer), _int(head)
        except (TypeError, ValueError):
            raise HeadMapError(f"{where}bad head entry {item!r}: expected [layer, head] with integers") from None
        result.setdefault(layer_i, []).append(head_i)
    return {layer: tuple(heads) for layer, heads in result.items()}


def _as_list(heads: Any, where: str) -> list:
    if not isinstance(heads, (list, tuple)):
        raise HeadMapError(f"{where}heads of a layer must be a list, got {heads!r}")
    return list(heads)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, str):
        return int(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)


def from_dict(data: Mapping[str, Any], source: str = "") -> HeadMap:
    """Validate a parsed JSON document and build the map; the stored hash must match the content."""
    where = f"head map {source}: " if source else "head map: "
    if data.get("format") != FORMAT:
        raise HeadMapError(f"{where}not an act-eval head map (format is {data.get('format')!r}, expected {FORMAT!r})")
    version = data.get("format_version")
    if version not in (FORMAT_VERSION, FIRST_TOKEN_VERSION):
        raise HeadMapError(
            f"{where}unsupported format_version {version!r} (this act-eval reads {FORMAT_VERSION} and {FIRST_TOKEN_VERSION})"
        )
    rule = _rule_of(data, version, where)
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise HeadMapError(f"{where}missing field(s): {', '.join(missing)}")
    hm = HeadMap(
        model=str(data["model"]),
        architecture=str(data["architecture"]),
        num_layers=data["num_layers"],
        num_heads=data["num_heads"],
        num_kv_heads=data["num_kv_heads"],
        heads=parse_heads(data["heads"], where),
        threshold=data.get("threshold", DEFAULT_THRESHOLD),
        beta=data.get("beta", DEFAULT_BETA),
        name=str(data.get("name", "")),
        task_family=str(data.get("task_family", "")),
        provenance=dict(data.get("provenance") or {}),
        source=source,
        rule=rule,
        factor=data.get("factor"),
    )
    stored = data.get("content_hash")
    if stored is not None and stored != hm.content_hash:
        raise HeadMapError(
            f"{where}content_hash {stored} does not match the content ({hm.content_hash}): the file was edited after it was hashed"
        )
    return hm


def _rule_of(data: Mapping[str, Any], version: int, where: str) -> str:
    """The map's rule: version 1 is ACT's format (no rule field); version 2 names another rule and its factor alone."""
    if version == FORMAT_VERSION:
        if "rule" in data or "factor" in data:
            raise HeadMapError(f"{where}rule and factor need format_version {FIRST_TOKEN_VERSION}; version {FORMAT_VERSION} is ACT's")
        return "act"
    rule = data.get("rule")
    if rule == "act" or rule not in RULES:
        raise HeadMapError(
            f"{where}format_version {FIRST_TOKEN_VERSION} needs rule 'first_token' (got {rule!r}; ACT maps are version {FORMAT_VERSION})"
        )
    extra = [key for key in ("threshold", "beta") if key in data]
    if extra:
        raise HeadMapError(f"{where}a {rule} map has no {' or '.join(extra)} (ACT's parameters); it has a factor")
    if "factor" not in data:
        raise HeadMapError(f"{where}missing field(s): factor")
    check_factor(data["factor"])
    return rule


def check_overrides(hm: HeadMap, threshold: Any = None, beta: Any = None, factor: Any = None, reference_sinks: bool = False) -> None:
    """Refuse a setting the map's rule has no use for (``act_threshold`` for a first-token map, ...)."""
    where = hm._where
    if hm.rule == "act" and factor is not None:
        raise HeadMapError(f"{where}act_factor applies to first_token maps; this is an ACT map (threshold and beta)")
    if hm.rule == "first_token":
        acts = (("threshold", threshold), ("beta", beta), ("reference_sinks", reference_sinks or None))
        given = [f"act_{name}" for name, value in acts if value is not None]
        if given:
            raise HeadMapError(
                f"{where}{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to ACT maps; this map scales the "
                f"first token's attention (rule first_token, factor {hm.factor:g}: set act_factor instead)"
            )


def published_dir() -> Path:
    return resource_dir("head_maps")


def published_head_maps() -> list[HeadMap]:
    return [load_head_map(str(p)) for p in sorted(published_dir().glob("*.json"))]


def load_head_map(name_or_path: str | os.PathLike) -> HeadMap:
    """Resolve ``head_map=``: an existing file path, else a published map's name (``head_maps/<name>.json``)."""
    path = Path(name_or_path)
    if not path.is_file():
        candidate = published_dir() / f"{name_or_path}.json"
        if not candidate.is_file():
            names = sorted(p.stem for p in published_dir().glob("*.json"))
            raise FileNotFoundError(
                f"head map {str(name_or_path)!r} is neither a file nor a published map{did_you_mean(str(name_or_path), names)}; "
                f"published: {', '.join(names) or 'none'}"
            )
        path = candidate
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HeadMapError(f"head map {path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise HeadMapError(f"head map {path}: expected a JSON object")
    return from_dict(data, source=str(path))


def resolve_head_map(
    spec: HeadMap | str | Mapping | list | None,
    *,
    model_id: str,
    architecture: str,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    check_model: bool = True,
) -> HeadMap:
    """The map a run calibrates with, checked against the model's shape (read from its config,
    so that a wrong map is refused before any weights load).

    ``spec``: a :class:`HeadMap`, a published map's name or a file path, inline heads
    (``{"layer": [heads]}`` or ``[[layer, head], ...]``, JSON text or objects), or None (no heads).
    """
    shape = dict(architecture=architecture, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads)
    if spec is None:
        hm = HeadMap(model=model_id, heads={}, **shape)
    elif isinstance(spec, HeadMap):
        hm = spec
    elif isinstance(spec, str) and not spec.lstrip().startswith(("[", "{")):
        hm = load_head_map(spec)
    else:
        hm = HeadMap(model=model_id, heads=parse_heads(spec, "act_heads: "), source="act_heads", **shape)
    check_fits(hm, model_id=model_id, check_model=check_model, **shape)
    return hm


def _same_model(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return s.rstrip("/").rsplit("/", 1)[-1].lower()

    return norm(a) == norm(b)


def check_fits(hm: HeadMap, *, model_id: str, architecture: str, num_layers: int, num_heads: int,
               num_kv_heads: int, check_model: bool = True) -> None:
    """Refuse a map made for another model, naming what differs."""
    where = hm._where
    if hm.architecture != architecture:
        raise HeadMapError(f"{where}made for architecture {hm.architecture!r}, but the loaded model is {architecture!r}")
    for key, have in (("num_layers", num_layers), ("num_heads", num_heads), ("num_kv_heads", num_kv_heads)):
        want = getattr(hm, key)
        if want != have:
            raise HeadMapError(f"{where}{key} is {want} but the loaded model has {have}")
    if check_model and not _same_model(hm.model, model_id):
        raise HeadMapError(
            f"{where}made for model {hm.model!r}, but the loaded model is {model_id!r} "
            "(pass act_check_model=False to use it anyway)"
        )
