"""The suite's tasks as lm-eval sees them: its ``TaskManager``, built here only, and the groups and
families that ``tasks/`` defines.

Every caller that loads tasks (the head search's examples, the sink analysis's prompts, the
demo, the ICL runner, the rivals' re-scoring, the leaderboard's suites) builds lm-eval's
``TaskManager`` here. The groups are read from ``tasks/groups/*.yaml`` and nowhere else: a
*family* is a group of tasks (not of groups), named without the suite's prefix
(``act_classification`` is the family ``classification``). A variant of a task (another prompt
protocol, ``act_sst2_spaced``, or a lite twin, ``act_sst2_lite``) includes the YAML of the task it
varies (tasks/README.md), and belongs to that task's family.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from act_eval.paths import resource_dir

if TYPE_CHECKING:
    from lm_eval.api.group import ConfigurableGroup
    from lm_eval.tasks import TaskManager

PREFIX = "act_"  # every task and group of the suite is named act_<...>


def suite_task_manager(
    include_path: Sequence[str | Path] = (), builtin_tasks: bool = False, metadata: Mapping[str, Any] | None = None
) -> TaskManager:
    """The suite's tasks (``tasks/``), then ``include_path``; lm-eval's own tasks if ``builtin_tasks``."""
    from lm_eval.tasks import TaskManager

    paths = [str(resource_dir("tasks")), *map(str, include_path)]
    return TaskManager(include_path=paths, include_defaults=builtin_tasks, metadata=dict(metadata) if metadata else None)


@lru_cache(maxsize=1)
def project_task_manager() -> TaskManager:
    """lm-eval's index of the suite's own tasks (no built-ins, no extra paths), built once per process."""
    with quiet():
        return suite_task_manager()


@cache
def lm_eval_group(name: str) -> ConfigurableGroup:
    """lm-eval's object for one of the suite's groups, which aggregates its tasks' metrics as a run does (cached)."""
    with quiet():
        return project_task_manager().load([name])["groups"][name]


@contextmanager
def quiet() -> Iterator[None]:
    """No per-task hints or group warnings from lm-eval, no progress bars from datasets: a check is not a run."""
    import datasets

    logger = logging.getLogger("lm_eval")
    level, bars = logger.level, datasets.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


def groups() -> dict[str, tuple[str, ...]]:
    """Every group of ``tasks/groups`` and its members, as its YAML lists them."""
    return dict(_groups())


def families() -> dict[str, tuple[str, ...]]:
    """The groups of tasks (not of groups) by family name (``classification``), members in their YAML's order."""
    every = _groups()
    return {name.removeprefix(PREFIX): members for name, members in every.items() if not set(members) & set(every)}


def base_task(task: str) -> str:
    """The task that ``task`` is a variant of (the task whose YAML it includes, followed to the end), else ``task``."""
    varies = _variants()
    while task in varies:
        task = varies[task]
    return task


def family_of(tasks: Sequence[str]) -> str:
    """The family of a set of tasks: the one family that holds every task's :func:`base_task` when they are two or
    more, else the task itself when it is one, else ``"custom"``."""
    bases = {base_task(task) for task in tasks}
    if len(bases) > 1:
        for name, members in families().items():
            if bases <= set(members):
                return name
    return tasks[0] if len(tasks) == 1 else "custom"


@cache
def _groups() -> dict[str, tuple[str, ...]]:
    found = {}
    for path in sorted((resource_dir("tasks") / "groups").glob("*.yaml")):
        data = _read_yaml(path)
        found[data["group"]] = tuple(data["task"])
    return found


@cache
def _variants() -> dict[str, str]:
    """Task -> the task whose YAML it includes, for every task YAML under ``tasks/``."""
    names = {}
    includes = {}
    for path in sorted(resource_dir("tasks").rglob("*.yaml")):
        data = _read_yaml(path)
        if isinstance(data.get("task"), str):
            names[path.resolve()] = data["task"]
            listed = data.get("include") or []
            includes[data["task"]] = [(path.parent / f).resolve() for f in ([listed] if isinstance(listed, str) else listed)]
    return {task: names[f] for task, files in includes.items() for f in files if f in names}


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    class Loader(yaml.SafeLoader):
        """Reads lm-eval's ``!function`` tags as plain text: only names and includes are wanted here."""

    Loader.add_multi_constructor("!", lambda loader, tag, node: loader.construct_scalar(node))
    return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader) or {}
