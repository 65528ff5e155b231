"""The one place that reads task data for the act-eval lm-eval tasks.

Every task YAML under ``tasks/`` sets ``custom_dataset: !function act_eval.lm.task_data.load_task_data``
and describes its data in ``dataset_kwargs.act_data``::

    dataset_kwargs:
      act_data:
        name: sst2                    # <ACT_EVAL_DATA_DIR>/sst2/<split>.jsonl
        hub: [nyu-mll/glue, sst2]     # hub path [and config], for machines with network access
        eval_split: validation        # the YAML's test_split
        train_split: train            # optional: the few-shot pool when present
        fields: [sentence, label]     # every row must have these (dotted paths reach into dicts)

lm-eval calls the loader with the task's ``metadata`` and ``dataset_kwargs`` as keyword
arguments; the metadata also carries the run's model arguments, so unknown keys are ignored.
A lite task adds ``metadata.act_lite: true``, which keeps a fixed subset of at most
:data:`LITE_SIZE` documents of the evaluation split (:func:`lite_indices`).

Resolution: ``ACT_EVAL_DATA_DIR`` set -> read the JSONL files there (no network); unset and the
hub allowed -> ``datasets.load_dataset``; unset while ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``
is on -> an error that says what to set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

DATA_DIR_ENV = "ACT_EVAL_DATA_DIR"
# documents per task in the lite groups: CPU scale (the issue allows up to 500)
LITE_SIZE = 200
_OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_MISSING = object()


@dataclass(frozen=True)
class DataSpec:
    """A task's ``dataset_kwargs.act_data``: where its rows live and what each row must hold."""

    name: str
    hub: tuple[str, str | None]
    eval_split: str
    train_split: str | None
    fields: tuple[str, ...]

    @classmethod
    def from_kwargs(cls, act_data: Mapping[str, Any]) -> DataSpec:
        """Check the YAML block, so a typo in a task file fails loudly instead of loading wrong data."""
        keys = set(act_data)
        if not {"name", "hub", "eval_split"} <= keys <= {"name", "hub", "eval_split", "train_split", "fields"}:
            raise ValueError(
                "dataset_kwargs.act_data takes name, hub, eval_split and optionally train_split, "
                f"fields; got {sorted(keys)}"
            )
        hub = act_data["hub"]
        path, *config = [hub] if isinstance(hub, str) else hub
        return cls(
            name=act_data["name"],
            hub=(path, config[0] if config else None),
            eval_split=act_data["eval_split"],
            train_split=act_data.get("train_split"),
            fields=tuple(act_data.get("fields", ())),
        )

    @property
    def splits(self) -> list[str]:
        """The splits to read: the few-shot pool (when there is one) and the evaluated split."""
        return [s for s in (self.train_split, self.eval_split) if s is not None]


def load_task_data(
    act_data: Mapping[str, Any], act_lite: bool = False, **_metadata: Any
) -> datasets.DatasetDict:
    """lm-eval ``custom_dataset`` hook: the task's splits, from ``ACT_EVAL_DATA_DIR`` or the hub."""
    import datasets

    spec = DataSpec.from_kwargs(act_data)
    data_dir = local_data_dir()
    if data_dir is not None:
        files = {split: data_dir / spec.name / f"{split}.jsonl" for split in spec.splits}
        splits = {split: datasets.Dataset.from_list(read_rows(path, spec.fields)) for split, path in files.items()}
    else:
        splits = _load_from_hub(spec)
    if act_lite:
        evaluated = splits[spec.eval_split]
        splits[spec.eval_split] = evaluated.select(lite_indices(len(evaluated), spec.name))
    return datasets.DatasetDict(splits)


def local_data_dir() -> Path | None:
    """``ACT_EVAL_DATA_DIR`` as a directory, or None when unset; a setting that names no
    directory is refused at once (the model wrappers call this before loading weights)."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        where = "" if path.is_absolute() else f", relative to the current directory {os.getcwd()}"
        raise FileNotFoundError(
            f"{DATA_DIR_ENV}={value!r} is not a directory (resolved to {path.absolute()}{where}); "
            f"it must hold <task>/<split>.jsonl, for example ../shared/data"
        )
    return path


class _QuietCustomLoaderNote(logging.Filter):
    """Drop lm-eval's per-task "Custom kwargs can be passed to `--metadata`" note for this suite's
    tasks: it fires for every task with a ``custom_dataset`` loader, and ours takes no kwargs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("act_") and "Custom kwargs can be passed to `--metadata`" in message)


logging.getLogger("lm_eval.api.task").addFilter(_QuietCustomLoaderNote())


def read_rows(path: Path, fields: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read one JSONL split; a missing file, bad JSON or a row without a field names file and line."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such data file ({DATA_DIR_ENV}={os.environ.get(DATA_DIR_ENV, '')!r} "
            f"must hold <task>/<split>.jsonl)"
        )
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for field in fields:
                if _lookup(row, field) is _MISSING:
                    raise ValueError(f"{path}:{lineno}: row has no field {field!r}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def lite_indices(n_rows: int, key: str, size: int = LITE_SIZE) -> list[int]:
    """The lite subset of a split: ``size`` row indices, in file order, the same on every machine.

    Rows are ranked by ``sha256(f"{key}:{index}")`` and the first ``size`` kept. A hash, not
    ``random.sample``, because Python only guarantees ``random()`` sequences across versions,
    not ``sample``; ``key`` is the data name, so every variant of a task sees the same rows.
    """
    ranked = sorted(range(n_rows), key=lambda i: hashlib.sha256(f"{key}:{i}".encode()).hexdigest())
    return sorted(ranked[:size])


def _lookup(row: Mapping[str, Any], field: str) -> Any:
    value: Any = row
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _offline() -> bool:
    return any(os.environ.get(env, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for env in _OFFLINE_ENVS)


def _load_from_hub(spec: DataSpec) -> dict[str, datasets.Dataset]:
    import datasets

    path, config = spec.hub
    where = path + (f" ({config})" if config else "")
    files = ", ".join(f"{spec.name}/{split}.jsonl" for split in spec.splits)
    if _offline():
        raise RuntimeError(
            f"task data {spec.name!r}: the hub is off (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) and "
            f"{DATA_DIR_ENV} is not set; set {DATA_DIR_ENV} to a directory holding {files} "
            f"(for example ../shared/data), or allow hub access to download {where}"
        )
    try:
        loaded = {split: datasets.load_dataset(path, config, split=split) for split in spec.splits}
    except Exception as err:  # network, auth or schema trouble: say how to avoid the hub
        raise RuntimeError(
            f"task data {spec.name!r}: could not load {where} from the hub ({err}); "
            f"set {DATA_DIR_ENV} to a directory holding {files} to read local copies"
        ) from err
    for split, dataset in loaded.items():
        missing = {f.split(".")[0] for f in spec.fields} - set(dataset.column_names)
        if missing:
            raise ValueError(f"{where} split {split!r} has no column(s) {sorted(missing)}")
    return loaded
