"""The prompts the sink analysis feeds a model: a task document's context, tokenized as lm-eval does.

ACT finds sinks on the prompt rows only, so the analysis must see exactly the tokens those rows
hold in an evaluation: the context lm-eval builds for the document (instruction, few-shot
demonstrations, template), with its trailing whitespace moved into the continuation for
loglikelihood requests (``LM._encode_pair``), encoded as ``HFLM.tok_encode`` encodes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lm_eval.api.task import Task

FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed


@dataclass(frozen=True)
class Prompt:
    """One document's context as the model sees it in an evaluation."""

    task: str
    doc_id: int
    text: str


def load_tasks(names: Sequence[str], include_path: Sequence[str | Path] = (), builtin_tasks: bool = True) -> dict[str, Task]:
    """lm-eval's tasks for ``names`` (groups expand to their tasks), act-eval's task YAMLs included."""
    from act_eval.lm.suite import suite_task_manager
    from act_eval.suggest import check_known

    manager = suite_task_manager(include_path, builtin_tasks)
    check_known("task or group", names, manager.all_tasks)
    tasks = manager.load(list(names))["tasks"]
    if not tasks:
        raise ValueError(f"no tasks found for {', '.join(names)}")
    return tasks


def task_prompts(name: str, task: Task, limit: int | None = None) -> list[Prompt]:
    """The first ``limit`` documents' contexts (all with ``None``), built by lm-eval itself."""
    task.set_fewshot_seed(FEWSHOT_SEED)
    task.build_all_requests(limit=limit)
    prompts: dict[int, Prompt] = {}
    for instance in task.instances:
        if instance.doc_id not in prompts:
            text = instance.arguments[0]
            if instance.request_type == "loglikelihood":
                text = text.rstrip()  # lm-eval moves the context's trailing whitespace into the continuation
            prompts[instance.doc_id] = Prompt(name, instance.doc_id, text)
    return [prompts[i] for i in sorted(prompts)]


def doc_prompt(name: str, task: Task, doc_id: int) -> Prompt:
    """Document ``doc_id`` (0-based, evaluation split order) of one task."""
    count = len(task.eval_docs)
    if not 0 <= doc_id < count:
        raise ValueError(f"{name} has {count} documents (0-{count - 1}); got --doc {doc_id}")
    return task_prompts(name, task, limit=doc_id + 1)[doc_id]


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids as ``HFLM.tok_encode`` gives them: the tokenizer's special tokens, BOS never doubled."""
    bos = tokenizer.bos_token
    return tokenizer.encode(text, add_special_tokens=not (bos and text.startswith(bos)))


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token decoded on its own: the strings the statistics count and the heatmaps label."""
    return [tokenizer.decode([i]) for i in ids]
