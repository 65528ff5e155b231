"""The defined suites, as lm-eval itself builds them from ``tasks/``: the reference a run is checked against.

A suite is a group under ``tasks/groups`` (``act_suite_lite``, ``act_classification_lite``, ...).
Its leaf tasks, their families (the group directly above each task), their documents and their
definitions come from lm-eval's own ``TaskManager`` (:func:`act_eval.lm.suite.project_task_manager`) and the
task data (:mod:`act_eval.lm.task_data`), so "full evaluation split" and "the task's documents"
mean exactly what an lm-eval run of the suite evaluates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from act_eval.leaderboard import SubmissionError
from act_eval.lm.suite import project_task_manager, quiet

if TYPE_CHECKING:
    from lm_eval.api.group import ConfigurableGroup
    from lm_eval.api.task import Task

# config keys not compared with the task files: the run's shot count, the model arguments lm-eval
# copies into metadata, function reprs (with addresses) in fewshot_config, and the data loader's
# source (the data itself is checked document by document through doc_hash)
NOT_COMPARED = frozenset({"num_fewshot", "metadata", "fewshot_config", "custom_dataset"})


@dataclass
class Suite:
    name: str
    subset: str  # "lite" or "full"
    tasks: tuple[str, ...]  # leaf tasks, in the group's order
    families: dict[str, str]  # leaf task -> the group directly above it
    task_objects: dict[str, Task] = field(repr=False)
    groups: dict[str, ConfigurableGroup] = field(repr=False)
    _hashes: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    def doc_hashes(self, task: str) -> tuple[str, ...]:
        """lm-eval's ``doc_hash`` of every evaluation document, in doc_id order (``evaluator.py`` computes it so)."""
        if task not in self._hashes:
            from lm_eval.utils import handle_non_serializable, hash_string

            with quiet():  # eval_docs applies the task's process_docs (a datasets map) on each access
                docs = list(self.task_objects[task].eval_docs)
            self._hashes[task] = tuple(
                hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))
                for doc in docs
            )
        return self._hashes[task]

    def default_shots(self, task: str) -> int:
        """The task's own ``num_fewshot`` (what a run without ``--num_fewshot`` uses)."""
        return int(self.task_objects[task].config.num_fewshot or 0)

    def definition(self, task: str) -> dict[str, Any]:
        """The task's config as a results file logs it, less :data:`NOT_COMPARED` (plus its version)."""
        from lm_eval.utils import handle_non_serializable

        return comparable_config(
            json.loads(
                json.dumps(self.task_objects[task].dump_config(), default=handle_non_serializable, ensure_ascii=False)
            )
        )


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """A task config (a results file's ``configs[task]``, or a live one) less :data:`NOT_COMPARED`, plus its version."""
    kept = {k: v for k, v in config.items() if k not in NOT_COMPARED}
    kept["version"] = (config.get("metadata") or {}).get("version")
    return kept


def defined_suites() -> list[str]:
    return sorted(project_task_manager().all_groups)  # built-ins are not suites


@cache
def load_suite(name: str) -> Suite:
    """Build the suite's tasks with their data (seconds; cached per process)."""
    if name not in defined_suites():
        raise SubmissionError("suite", f"{name!r} is not a defined suite; defined: {', '.join(defined_suites())}")
    try:
        with quiet():
            loaded = project_task_manager().load([name])
    except RuntimeError as err:  # task data unreachable (act_eval.lm.task_data says how to fix it)
        raise ValueError(f"cannot build suite {name} to check against: {err}") from None
    group_map: dict[str, list[str]] = loaded["group_map"]
    families: dict[str, str] = {}

    def walk(group: str) -> None:
        for child in group_map[group]:
            if child in group_map:
                walk(child)
            else:
                families[child] = group

    walk(name)
    task_objects = loaded["tasks"]
    lite = {bool((task_objects[t].config.metadata or {}).get("act_lite")) for t in families}
    if len(lite) != 1:
        raise SubmissionError("suite", f"{name} mixes lite and full tasks: not a suite the board can place")
    return Suite(
        name=name,
        subset="lite" if lite == {True} else "full",
        tasks=tuple(families),
        families=families,
        task_objects=task_objects,
        groups={g: obj for g, obj in loaded["groups"].items() if g in group_map},
    )


def infer_suite(group_subtasks: dict[str, list[str]]) -> str:
    """The suite a run covers: the one top-level group it ran (``--tasks act_suite_lite``)."""
    top = [g for g in group_subtasks if not any(g in children for children in group_subtasks.values())]
    if len(top) != 1:
        raise ValueError(
            f"the run has {len(top)} top-level groups ({', '.join(top) or 'none'}): run one suite "
            f"({', '.join(defined_suites())}) or name it with --suite"
        )
    return top[0]
