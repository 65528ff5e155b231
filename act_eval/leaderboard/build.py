"""Write the board files under the leaderboard root, each whole or not at all.

``README.md``, ``index.html`` and ``leaderboard.json`` are replaced by atomic renames; the
plots are drawn into a hidden directory that then takes the place of ``plots/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from act_eval.compare.defaults import ALPHA, RESAMPLES, SEED
from act_eval.files import atomic_write_text
from act_eval.leaderboard.board import Board, build_board
from act_eval.leaderboard.figures import section_plots
from act_eval.leaderboard.html import page
from act_eval.leaderboard.render import board_json, markdown
from act_eval.leaderboard.store import Store

# the README's screenshot, relative to the directory holding the leaderboard root (the checkout)
SCREENSHOT = Path("docs") / "img" / "leaderboard.png"


def default_screenshot(root: Path) -> Path:
    return root.resolve().parent / SCREENSHOT


def build(
    root: Path, *, n_resamples: int = RESAMPLES, seed: int = SEED, alpha: float = ALPHA, screenshot: Path | None = None
) -> Board:
    """Build the board from every accepted submission; with ``screenshot``, also photograph the page there."""
    board = build_board(Store(root).accepted(), n_resamples=n_resamples, seed=seed, alpha=alpha)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".plots-", dir=root))
    try:
        staging.chmod(0o755)
        for section in board.sections:
            section_plots(section, staging, alpha)
        html = page(board, staging)
        _replace_dir(staging, root / "plots")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shown = screenshot or default_screenshot(root)
    link = os.path.relpath(shown.resolve(), root.resolve()) if screenshot or shown.is_file() else None
    atomic_write_text(root / "leaderboard.json", board_json(board))
    atomic_write_text(root / "index.html", html)
    atomic_write_text(root / "README.md", markdown(board, link))
    if screenshot:
        from act_eval.leaderboard.browser import screenshot as take

        take(root / "index.html", screenshot)
    return board


def _replace_dir(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=".plots-old-", dir=target.parent))
        os.rename(target, old / "plots")
    os.rename(new, target)
    if old:
        shutil.rmtree(old)
