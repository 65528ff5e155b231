"""Shared test set-up: offline hub, the real data directory, and the real embedded models.

Tests marked ``slow`` load SmolLM2-135M-Instruct or Gemma-3-270M (GGUF from PyPI, converted
once into the act-eval cache); CI runs them, ``pytest -m "not slow"`` skips them locally.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
os.environ.setdefault("ACT_EVAL_DATA_DIR", str(SHARED_DATA))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["ACT_EVAL_DATA_DIR"])
    assert path.is_dir(), f"benchmark data not found at {path}; set ACT_EVAL_DATA_DIR"
    return path


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from act_eval.lm.pretrained import resolve_pretrained

    return resolve_pretrained("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3_path() -> str:
    from act_eval.lm.pretrained import resolve_pretrained

    return resolve_pretrained("gemma3-270m")


@pytest.fixture(scope="session")
def tasks_dir() -> Path:
    from act_eval.paths import resource_dir

    return resource_dir("tasks")


@pytest.fixture(scope="session")
def task_manager(tasks_dir: Path, data_dir: Path):
    """lm-eval's TaskManager over the project's task YAMLs only (built-ins left out: faster)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(tasks_dir)], include_defaults=False)


@pytest.fixture(scope="session")
def act_tasks(task_manager) -> dict:
    """Every act-eval task, full and lite, built by lm-eval from the real data: {name: Task}."""
    return task_manager.load(task_manager.all_subtasks)["tasks"]


@contextlib.contextmanager
def logged(caplog, name: str):
    """Capture INFO and above from one logger even after lm-eval stops its loggers propagating."""
    logger = logging.getLogger(name)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # each record once, whatever the root logger does
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
        logger.propagate = propagate
