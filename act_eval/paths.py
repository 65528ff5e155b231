"""Where the project's data directories live, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_REPO = _PACKAGE.parent


def resource_dir(name: str) -> Path:
    """Return ``head_maps`` or ``tasks``: the wheel's copy when installed, the checkout's otherwise."""
    installed = _PACKAGE / "_data" / name
    if installed.is_dir():
        return installed
    return _REPO / name


def cache_dir() -> Path:
    """act-eval's cache (converted GGUF models), ``$ACT_EVAL_CACHE`` or ``~/.cache/act-eval``."""
    import os

    root = os.environ.get("ACT_EVAL_CACHE") or Path.home() / ".cache" / "act-eval"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
