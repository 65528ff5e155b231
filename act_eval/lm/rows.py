"""Which request each row of an lm-eval loglikelihood batch is, and which of its logits are scored.

lm-eval right-pads loglikelihood batches with token 0 and passes no attention mask, so a row does
not say where its context ends. Before HFLM batches the requests, :meth:`RequestWindows.of`
records, for every request, the token window HFLM will feed and its context length; a padded row
is matched back by the longest recorded window it starts with (a real trailing token 0 is
possible, so zeros are not simply stripped). ``hf-act``'s calibration depends on this (only prompt
rows decide the sink set); ``hf-fast`` keeps only the logits the requests score
(:func:`scored_tail`). A row that matches no request (lm-eval's batch-size probe) keeps all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestWindows:
    """Window length -> window tokens -> (context length of its first request, smallest context length)."""

    windows: dict[int, dict[tuple[int, ...], tuple[int, int]]] = field(default_factory=dict)
    ambiguous: int = 0  # requests that feed the same tokens as another with a different context length

    @classmethod
    def of(cls, requests: Iterable[tuple[Any, list[int], list[int]]], max_length: int) -> RequestWindows:
        """The windows HFLM feeds for ``(key, context tokens, continuation tokens)`` requests."""
        found = cls()
        for _, context, continuation in requests:
            window = tuple((context + continuation)[-(max_length + 1):][:-1])
            prompt = len(window) - (len(continuation) - 1)
            known = found.windows.setdefault(len(window), {})
            first, shortest = known.setdefault(window, (prompt, prompt))
            if prompt != first:
                known[window] = (first, min(shortest, prompt))
                found.ambiguous += 1
        return found

    def __bool__(self) -> bool:
        return bool(self.windows)

    def match(self, row: list[int]) -> tuple[int, int] | None:
        """(first, smallest) context length of a right-padded row: the longest recorded window it starts with."""
        end = len(row)
        while True:
            found = self.windows.get(end, {}).get(tuple(row[:end]))
            if found is not None:
                return found
            if end == 0 or row[end - 1] != 0:
                return None
            end -= 1


def scored_tail(length: int, prompts: list[int | None]) -> int | None:
    """Positions to keep at the end of rows padded to ``length``, or None for all of them.

    A row whose context is ``p`` tokens scores the logits at positions ``p - 1`` onwards (the
    last context token predicts the first continuation token), so the tail must reach back to
    the smallest ``p - 1``. A row with no known context (None) needs every position.
    """
    if not prompts or any(p is None for p in prompts):
        return None
    keep = length - (min(prompts) - 1)
    return None if keep >= length else keep
