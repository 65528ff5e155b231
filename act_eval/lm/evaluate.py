"""One lm-eval evaluation saved exactly as ``lm_eval --output_path OUT --log_samples`` saves it.

For commands that load a model once and evaluate it several times (``act-eval icl run``: one
run per few-shot seed; ``act-eval demo``: the same weights with and without calibration).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager


def evaluate_and_save(
    model: str | LM,
    model_args: dict[str, Any],
    tasks: Sequence[str],
    output_path: str | Path,
    *,
    task_manager: TaskManager,
    model_type: str | None = None,
    **evaluate_kwargs: Any,
) -> Path:
    """One ``simple_evaluate`` call saved as ``lm_eval --output_path OUT --log_samples`` saves it; returns the results file.

    ``model`` is an lm-eval model name or an already loaded LM (then ``model_args`` only names
    the output directory, as lm-eval's tracker takes the name from ``pretrained=``, and
    ``model_type`` is recorded as the results' ``config.model``, where the CLI records the
    ``--model`` it was given and ``simple_evaluate`` would put the weights' path).
    """
    from lm_eval import evaluator
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(output_path))
    results = evaluator.simple_evaluate(
        model=model,
        model_args=dict(model_args),
        tasks=list(tasks),
        log_samples=True,
        evaluation_tracker=tracker,
        task_manager=task_manager,
        **evaluate_kwargs,
    )
    samples = results.pop("samples")
    if model_type is not None:
        results["config"]["model"] = model_type
    # as lm-eval's CLI (_cli/run.py): aggregated results first (this sets the date id), then samples
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    model_dir = str(tracker.general_config_tracker.model_name_sanitized)
    written = Path(output_path) / model_dir / f"results_{getattr(tracker, 'date_id', '')}.json"
    if not written.is_file():
        raise FileNotFoundError(f"lm-eval did not write {written} (see its log above)")
    return written
