"""The README's main job: the same weights scored by lm-eval without and with ACT, then compared.

The model loads once; the baseline arm runs it as ``hf-fast`` (``hf``'s numbers, fewer logits),
the ACT arm wraps the same weights in ``hf-act`` with a published map. Both runs are saved as
``lm_eval --output_path OUT --log_samples`` saves them (``OUT/hf``, ``OUT/act``), so
``act-eval compare`` and ``act-eval submit`` take them as they take CLI runs. A finished arm of
the same settings is read back instead of re-run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_TASKS = ("act_agnews_lite",)


def run_demo(
    model: str = DEFAULT_MODEL,
    head_map: str | None = None,
    tasks: Sequence[str] = DEFAULT_TASKS,
    output_path: str | Path = "runs/demo",
    *,
    batch_size: int = 8,
    device: str | None = None,
) -> tuple[Path, Path]:
    """Run both arms (or read them back); returns the baseline's and ACT's output directories."""
    from act_eval.core.head_map import resolve_head_map
    from act_eval.core.switch import config_shape
    from act_eval.lm.hf_act import HFActLM, config_without_weights
    from act_eval.lm.hf_fast import HFFastLM
    from act_eval.lm.pretrained import model_identity, resolve_pretrained
    from act_eval.lm.suite import suite_task_manager
    from act_eval.suggest import check_known

    head_map = head_map or f"{model}.classification"
    out = Path(output_path)
    manager = suite_task_manager()
    check_known("task or group", tasks, manager.all_tasks)
    path = resolve_pretrained(model)
    # a wrong map is refused before the weights load
    resolve_head_map(head_map, model_id=model_identity(path), **config_shape(config_without_weights(path, {})))

    arms: dict[str, Any] = {
        "hf": ("hf-fast", {"pretrained": model}),
        "act": ("hf-act", {"pretrained": model, "head_map": head_map}),
    }
    base = None
    for arm, (model_type, model_args) in arms.items():
        if _finished(out / arm, model_args, tasks):
            print(f"{arm}: finished earlier, reading {out / arm}")
            continue
        if base is None:
            base = HFFastLM(pretrained=path, batch_size=batch_size, device=device)
        lm = base if arm == "hf" else HFActLM(
            pretrained=base.model, tokenizer=base.tokenizer, head_map=head_map, batch_size=batch_size, device=str(base.device)
        )
        _evaluate(lm, model_type, model_args, tasks, out / arm, manager)
    return out / "hf", out / "act"


def _evaluate(lm, model_type: str, model_args: dict, tasks: Sequence[str], out: Path, manager) -> None:
    from act_eval.lm.evaluate import evaluate_and_save

    evaluate_and_save(lm, model_args, tasks, out, task_manager=manager, model_type=model_type, batch_size=lm.batch_size)


def _finished(out: Path, model_args: dict, tasks: Sequence[str]) -> bool:
    """Whether ``out`` holds a run of exactly these settings; another run there is an error."""
    from act_eval.lm.runs import load_run

    if not any(out.glob("*/results_*.json")):
        return False
    run = load_run(out)
    ran = sorted(set(run.tasks) | set(run.results.get("group_subtasks", {})))
    if run.results["config"].get("model_args") != model_args or not set(tasks) <= set(ran):
        raise ValueError(f"{out} holds a run with other settings; choose another --output_path or remove it")
    return True
