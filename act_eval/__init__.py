"""act-eval: the Attention Calibration Technique (ACT) for lm-evaluation-harness.

Data flow: head map (:mod:`act_eval.core.head_map`) -> attention function
(:mod:`act_eval.core.attention`, math in :mod:`act_eval.core.calibration`) -> model wrapper
(:mod:`act_eval.lm.hf_act`, on :mod:`act_eval.lm.hf_fast`) -> lm-eval -> logged samples -> statistics -> leaderboard.

Kept import-light (no torch here): the package is imported at interpreter start-up by the
lm-eval registration hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "enable_act": "act_eval.core.enable",
    "disable_act": "act_eval.core.enable",
    "HeadMap": "act_eval.core.head_map",
    "load_head_map": "act_eval.core.head_map",
}

if TYPE_CHECKING:
    from act_eval.core.enable import disable_act, enable_act
    from act_eval.core.head_map import HeadMap, load_head_map


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'act_eval' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
