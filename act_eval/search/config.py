"""What an ``act-eval search`` is asked to do, with every default defined once.

The command line takes its defaults and choices from :class:`SearchConfig`, and the keep rule
and the greedy pass (:mod:`.selection`, :mod:`.combine`) take theirs from its fields. No torch:
``act-eval --help`` imports this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from act_eval.core.head_map import check_beta, check_factor, check_threshold
from act_eval.core.rules import DEFAULT_BETA, DEFAULT_THRESHOLD, RULES

if TYPE_CHECKING:
    from act_eval.search.engine import Settings

KEEP_RULES = ("effect", "flips")  # the keep rules (:mod:`.selection`); the first is the default
ACT_FIELDS = ("threshold", "beta", "betas", "thresholds")  # the search's settings for each rule
FIRST_TOKEN_FIELDS = ("factor", "factors")


@dataclass
class SearchConfig:
    """A search's inputs: the model and tasks, the slices, the rule searched and its grid, the keep rule, the screen's
    candidates, the greedy pass, and where it checkpoints."""

    model: str
    tasks: list[str]
    out: str
    name: str | None = None
    task_maps: str | None = None  # directory for one map per task (None: family map only)
    per_task: int = 100
    val_per_task: int = 20
    threshold: float = DEFAULT_THRESHOLD
    beta: float = DEFAULT_BETA
    rule: str = RULES[0]  # or "first_token": scale the first token's attention by ``factor``
    factor: float = 2.0
    keep_rule: str = KEEP_RULES[0]
    alpha: float = 0.05
    min_effect: float = 0.005
    harm_alpha: float = 0.05
    top_k: int = 16
    controls: int = 8
    per_task_candidates: int = 2
    patience: int = 3
    guard_alpha: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.7])
    thresholds: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.15])
    factors: list[float] = field(default_factory=lambda: [0.5, 0.8, 1.25, 2.0])
    chunk: int = 50
    batch_size: int = 8
    seed: int = 1234
    checkpoint: str | None = None
    restart: bool = False
    device: str | None = None

    def check(self) -> None:
        """Everything :meth:`check_settings` checks, and the slice sizes and keep rule: refused before a model loads."""
        self.check_settings()
        if self.per_task < 2 or self.val_per_task < 1:
            raise ValueError("--per-task must be at least 2 and --val-per-task at least 1 (the keep rule and the greedy pass need them)")
        if self.keep_rule not in KEEP_RULES:
            raise ValueError(f"--keep-rule must be {' or '.join(KEEP_RULES)}, not {self.keep_rule!r}")

    def check_settings(self) -> None:
        """The rule, its parameters valid, and none of the other rule's set (they would be silently unused)."""
        if self.rule not in RULES:
            raise ValueError(f"--rule must be one of {', '.join(RULES)}, not {self.rule!r}")
        unused = FIRST_TOKEN_FIELDS if self.rule == "act" else ACT_FIELDS
        given = [f"--{name}" for name in unused if getattr(self, name) != getattr(DEFAULTS, name)]
        if given:
            verb = "does" if len(given) == 1 else "do"
            raise ValueError(f"{', '.join(given)} {verb} not apply to --rule {self.rule} (ACT: --threshold --beta --thresholds "
                             "--betas; first_token: --factor --factors)")
        check_threshold(self.threshold)
        check_beta(self.beta)
        check_factor(self.factor)
        for b in self.betas:
            check_beta(b)
        for t in self.thresholds:
            check_threshold(t)
        for f in self.factors:
            check_factor(f)

    def searched(self) -> "Settings":
        """The settings the heads are screened, confirmed, kept and combined at."""
        from act_eval.search.engine import Settings

        return Settings(self.threshold, self.beta) if self.rule == "act" else Settings(rule=self.rule, factor=self.factor)

    def grid(self) -> list["Settings"]:
        """The settings the final map is scored at on validation (ACT: threshold-major, as before rules existed)."""
        from act_eval.search.engine import Settings

        if self.rule == "act":
            return [Settings(t, b) for t in self.thresholds for b in self.betas]
        return [Settings(rule=self.rule, factor=f) for f in self.factors]

    def grid_axes(self) -> dict:
        return {"betas": self.betas, "thresholds": self.thresholds} if self.rule == "act" else {"factors": self.factors}


DEFAULTS = SearchConfig(model="", tasks=[], out="")  # every field at its default
