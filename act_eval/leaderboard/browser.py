"""Headless Chromium for the board: the screenshot in the README, and the page tests.

The flags keep a headless run self-contained (no sandbox inside containers, no GPU, no
network-touching background services, a throwaway profile), so it behaves the same on a
developer machine and in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_ENV = "ACT_EVAL_CHROMIUM"
_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--hide-scrollbars",
)


def chromium() -> str | None:
    """The browser binary: ``$ACT_EVAL_CHROMIUM``, else Debian's ``chromium`` (or another Chrome) on PATH."""
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV]
    return next((path for name in _NAMES if (path := shutil.which(name))), None)


def run_chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the browser with :data:`FLAGS`, a fresh profile and ``args``; raise with its stderr if it fails."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError(f"no Chromium found: install Debian's chromium package or set {CHROMIUM_ENV}")
    with tempfile.TemporaryDirectory(prefix="act-eval-chromium-") as profile:
        done = subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=timeout
        )
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done


def screenshot(page: Path, png: Path, *, width: int = 1400, height: int = 1100) -> Path:
    """Render ``page`` and save the top ``width`` x ``height`` pixels as a PNG."""
    png.parent.mkdir(parents=True, exist_ok=True)
    run_chromium(f"--window-size={width},{height}", f"--screenshot={png.resolve()}", page.resolve().as_uri())
    if not png.is_file():
        raise RuntimeError(f"chromium did not write {png}")
    return png
