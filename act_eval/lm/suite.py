"""lm-eval's TaskManager over this suite's task YAMLs: built here, not in every command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager


def suite_task_manager(
    include_path: Sequence[str | Path] = (), builtin_tasks: bool = False, metadata: Mapping[str, Any] | None = None
) -> TaskManager:
    """The suite's tasks (``tasks/``), then ``include_path``; lm-eval's own tasks if ``builtin_tasks``."""
    from lm_eval.tasks import TaskManager

    from act_eval.paths import resource_dir

    paths = [str(resource_dir("tasks")), *map(str, include_path)]
    return TaskManager(include_path=paths, include_defaults=builtin_tasks, metadata=dict(metadata) if metadata else None)
