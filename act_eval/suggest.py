""""Did you mean" for names a user types: head maps, tasks, families, model names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known names, or an empty string when none is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {close[0]!r}?)"


def check_known(kind: str, names: Iterable[str], known: Iterable[str]) -> None:
    """Refuse the first name that is not known, with the closest known one."""
    known = sorted(set(known))
    for name in names:
        if name not in known:
            raise ValueError(f"unknown {kind} {name!r}{did_you_mean(name, known)}")
