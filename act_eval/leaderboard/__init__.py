"""The leaderboard: verified submissions of lm-eval runs and the boards built from them.

One module per job:

- :mod:`.manifest`: the submission manifest's schema and reader; :mod:`.prepare` writes one
  from what an lm-eval run recorded;
- :mod:`.suites`: the defined suites as lm-eval builds them (tasks, families, document hashes);
- :mod:`.verify`: every check a submission must pass on its own;
- :mod:`.store`: accepted submissions under ``<root>/submissions/<id>/`` (duplicates, pairing,
  atomic acceptance);
- :mod:`.board`: the board's content (values, differences and their significance from
  :mod:`act_eval.compare.report`); :mod:`.render` and :mod:`.html` turn it into markdown, JSON and a
  static page, :mod:`.figures` into plots; :mod:`.build` writes them all; :mod:`.browser`
  drives headless Chromium (the README's screenshot, the page tests).

The root directory is ``--root``, else ``$ACT_EVAL_LEADERBOARD``, else the checkout's
``leaderboard/`` (``./leaderboard`` when act-eval is installed from a wheel).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "ACT_EVAL_LEADERBOARD"
SUBMISSIONS = "submissions"


class SubmissionError(ValueError):
    """A refused submission; ``check`` names the failed check (tests and scripts match on it)."""

    def __init__(self, check: str, problem: str) -> None:
        super().__init__(f"refused ({check}): {problem}")
        self.check = check
        self.problem = problem


def default_root(root: str | os.PathLike | None = None) -> Path:
    """The leaderboard directory: ``root`` if given, else ``$ACT_EVAL_LEADERBOARD``, else the checkout's."""
    if root:
        return Path(root)
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV])
    checkout = Path(__file__).resolve().parents[2] / "leaderboard"
    return checkout if checkout.is_dir() else Path.cwd() / "leaderboard"
