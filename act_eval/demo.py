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
    from act_eval.lm.evaluate import evaluate_and_save
    from act_eval.lm.hf_act import HFActLM, fitted_head_map
    from act_eval.lm.hf_fast import HFFastLM
    from act_eval.lm.pretrained import resolve_pretrained
    from act_eval.lm.runs import finished_run
    from act_eval.lm.suite import suite_task_manager
    from act_eval.suggest import check_known

    head_map = head_map or f"{model}.classification"
    out = Path(output_path)
    manager = suite_task_manager()
    check_known("task or group", tasks, manager.all_tasks)
    path = resolve_pretrained(model)
    fitted_head_map(head_map, path, {})  # a wrong map is refused before the weights load

    arms: dict[str, Any] = {
        "hf": ("hf-fast", {"pretrained": model}),
        "act": ("hf-act", {"pretrained": model, "head_map": head_map}),
    }
    base = None
    for arm, (model_type, model_args) in arms.items():
        if finished_run(out / arm, tasks, {"model_args": model_args}) is not None:
            print(f"{arm}: finished earlier, reading {out / arm}")
            continue
        if base is None:
            base = HFFastLM(pretrained=path, batch_size=batch_size, device=device)
        lm = base if arm == "hf" else HFActLM(
            pretrained=base.model, tokenizer=base.tokenizer, head_map=head_map, batch_size=batch_size, device=str(base.device)
        )
        evaluate_and_save(lm, model_args, tasks, out / arm, task_manager=manager, model_type=model_type, batch_size=lm.batch_size)
    return out / "hf", out / "act"
