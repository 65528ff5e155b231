"""Which heads to keep: the keep rule and the greedy pass, recorded in every searched map.

Keep rule (screening): a head is kept when calibrating it alone turns more held-out examples
from wrong to right (wins) than from right to wrong (losses), and a one-sided exact sign test on
those discordant examples gives p <= ``alpha`` (default 0.2). A net gain of one or two examples
is what noise produces on a few hundred examples, so it is not enough; a liberal alpha is
right for a screen because the greedy pass then checks combinations on a separate slice.

Greedy pass: heads interact, so kept heads are added one at a time in order of gain (then
p-value, then position) and the map is re-scored on a separate validation slice of the
training data; the search stops after ``patience`` additions that do not raise the slice's
accuracy, and returns the best prefix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from act_eval.stats import sign_test_greater


@dataclass(frozen=True)
class HeadStat:
    layer: int
    head: int
    n: int
    wins: int
    losses: int
    delta: float  # accuracy change on the calibration slice
    p_value: float  # one-sided exact sign test on (wins, losses)

    def as_dict(self) -> dict:
        return asdict(self)


def head_stats(results: dict[tuple[int, int], list[bool]]) -> list[HeadStat]:
    """Paired statistics of every head against the baseline (key ``(-1, -1)``)."""
    base = results[(-1, -1)]
    stats = []
    for (layer, head), correct in sorted(results.items()):
        if layer < 0:
            continue
        wins = sum(c and not b for c, b in zip(correct, base))
        losses = sum(b and not c for c, b in zip(correct, base))
        stats.append(HeadStat(layer, head, len(base), wins, losses, (wins - losses) / len(base), sign_test_greater(wins, losses)))
    return stats


def screen(stats: list[HeadStat], alpha: float = 0.2) -> list[HeadStat]:
    """Heads that pass the keep rule, best first."""
    kept = [s for s in stats if s.wins > s.losses and s.p_value <= alpha]
    return sorted(kept, key=lambda s: (-s.delta, s.p_value, s.layer, s.head))


def as_layers(heads: list[HeadStat]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for s in heads:
        out.setdefault(s.layer, []).append(s.head)
    return {layer: sorted(hs) for layer, hs in sorted(out.items())}


def greedy(kept: list[HeadStat], accuracy, patience: int = 2) -> tuple[list[HeadStat], list[dict]]:
    """Add kept heads in order while ``accuracy(map)`` on the validation slice improves.

    ``accuracy`` takes ``{layer: [heads]}`` and returns the slice accuracy. Returns the chosen
    heads and the trajectory (one row per step) for the map's provenance.
    """
    best_acc = accuracy({})
    trajectory = [{"step": 0, "added": None, "accuracy": best_acc}]
    chosen: list[HeadStat] = []
    best: list[HeadStat] = []
    misses = 0
    for step, stat in enumerate(kept, start=1):
        chosen.append(stat)
        acc = accuracy(as_layers(chosen))
        trajectory.append({"step": step, "added": [stat.layer, stat.head], "accuracy": acc})
        if acc > best_acc:
            best_acc, best, misses = acc, list(chosen), 0
        else:
            misses += 1
            if misses >= patience:
                break
    return best, trajectory
