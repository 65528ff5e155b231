"""Output calibration by a label prior: the training-free rivals of ACT that re-score lm-eval's choices.

Both methods divide the model's choice probabilities by an estimated prior over the choices
and predict the argmax, ``argmax_y p(y|x) / p_prior(y)`` (Zhao et al. 2021's ``W = diag(p)^-1``,
``b = 0``); they differ only in where the prior comes from:

- **contextual calibration** (Zhao et al., 2021, "Calibrate Before Use"): the mean of the
  choice probabilities on content-free inputs (``"N/A"``, ``""``, ``"[MASK]"``) rendered in the
  task's own template and demonstrations (:func:`content_free_doc`); no test input is used;
- **batch calibration** (Zhou et al., 2024, "Batch Calibration"): the mean of the choice
  probabilities over the evaluation inputs themselves (no labels), so it is **transductive**.

Choice probabilities (a choice, where lm-eval's papers leave it open): lm-eval scores each
choice by the summed log-likelihood of its continuation; ``p(y|x)`` here is the softmax of those
sums over the document's choices, the distribution lm-eval's own ``acc`` ranks. Priors are kept
per number of choices (ARC mixes 3, 4 and 5 options; a prior over 4 letters says nothing about a
5-option question). Everything here is pure numpy, so the verifier recomputes exactly what
``act-eval calibrate`` wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CALIBRATION_KEY = "calibration"  # where a re-scored run records its method and prior: results["config"], every sample
CONTENT_FREE = ("N/A", "", "[MASK]")  # Zhao et al. 2021, section 5
METHODS = {
    "contextual": "contextual calibration (Zhao et al., 2021, Calibrate Before Use)",
    "batch": "batch calibration (Zhou et al., 2024, Batch Calibration; transductive: uses the test inputs)",
}
TRANSDUCTIVE = {"contextual": False, "batch": True}
_PRIOR_ATOL = 1e-9  # a recorded prior must be a probability vector to this precision


def choice_probabilities(loglikelihoods: Sequence[float] | np.ndarray) -> np.ndarray:
    """Softmax of one document's summed continuation log-likelihoods over its choices."""
    x = np.asarray(loglikelihoods, dtype=float)
    e = np.exp(x - x.max())
    return e / e.sum()


def calibrated_choice(loglikelihoods: Sequence[float] | np.ndarray, prior: Sequence[float] | np.ndarray) -> int:
    """``argmax_y p(y|x) / prior(y)``: the first maximum, as lm-eval's ``np.argmax`` breaks ties."""
    x, p = np.asarray(loglikelihoods, dtype=float), np.asarray(prior, dtype=float)
    if x.shape != p.shape:
        raise ValueError(f"a prior over {p.size} choices cannot calibrate a document with {x.size}")
    return int(np.argmax(x - np.log(p)))  # the softmax's normaliser is the same for every choice


def mean_prior(per_input: Sequence[Sequence[float] | np.ndarray]) -> np.ndarray:
    """The prior both methods use: the mean of the inputs' choice probabilities (content-free inputs, or the batch)."""
    if not per_input:
        raise ValueError("a prior needs at least one input")
    return np.mean([choice_probabilities(x) for x in per_input], axis=0)


def batch_priors(loglikelihoods: Sequence[Sequence[float] | np.ndarray]) -> dict[int, np.ndarray]:
    """Batch calibration's prior per number of choices, over every evaluation document of a task."""
    groups: dict[int, list[Sequence[float]]] = {}
    for x in loglikelihoods:
        groups.setdefault(len(x), []).append(x)
    return {n: mean_prior(group) for n, group in sorted(groups.items())}


def content_free_doc(doc: Any, text: str) -> Any:
    """The document with every string in it (nested in lists and dicts too) replaced by ``text``.

    The template then renders the content-free input in the task's own format, whatever its
    fields (AG News ``text``; CB ``premise`` and ``hypothesis``; lettered multiple choice its
    ``stem`` and every option, so the letters stay and the options are empty). Numbers (labels,
    indices) stay, so the choices are the document's own.
    """
    if isinstance(doc, str):
        return text
    if isinstance(doc, dict):
        return {k: content_free_doc(v, text) for k, v in doc.items()}
    if isinstance(doc, list):
        return [content_free_doc(v, text) for v in doc]
    return doc


def check_prior(prior: Any, n_choices: int, where: str) -> np.ndarray:
    """A recorded prior as an array: ``n_choices`` positive probabilities summing to one, else ValueError."""
    try:
        p = np.asarray(prior, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: the prior {prior!r} is not a list of numbers") from None
    if p.shape != (n_choices,) or not np.all(p > 0) or not np.isclose(p.sum(), 1.0, rtol=0, atol=_PRIOR_ATOL):
        raise ValueError(f"{where}: the prior {prior!r} is not a distribution over the document's {n_choices} choices")
    return p


ARM_NAMES = {"contextual": "contextual-cal", "batch": "batch-cal (transductive)"}  # compare's arm names
LABELS = {"contextual": "contextual calibration", "batch": "batch calibration (transductive)"}  # in words, for tables


def arm_name(config: dict[str, Any]) -> str | None:
    """A calibrated run's arm name from its results ``config`` (``act+`` when the scores came from ``hf-act``); None if uncalibrated."""
    block = config.get(CALIBRATION_KEY)
    if not isinstance(block, dict):
        return None
    method = block.get("method")
    if method not in ARM_NAMES:
        raise ValueError(f"config.calibration names an unknown method {method!r}; known: {', '.join(ARM_NAMES)}")
    return f"act+{ARM_NAMES[method]}" if config.get("act") else ARM_NAMES[method]
