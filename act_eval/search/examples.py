"""Held-out examples for the head search, rendered and tokenised exactly as lm-eval scores them.

Examples come from a task's *training* split only (never the evaluation split). Tasks without
one (HellaSwag, PIQA here) contribute nothing, so the evaluation split needs no exclusions.
Each example keeps the token rows one forward pass needs: the context alone when every choice
is one token (what lm-eval's logits cache does), plus ``context + choice[:-1]`` for longer choices.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    task: str
    doc_index: int  # position in the training split
    rows: tuple[tuple[int, ...], ...]  # token rows to run (right-padded with 0 when batched)
    prompt_len: int  # context tokens: the prompt rows that decide the sink set
    choices: tuple[tuple[int, tuple[int, ...]], ...]  # (row, continuation tokens) per choice
    gold: int


def expand_tasks(names: list[str]) -> list[str]:
    """Accept family names (``classification``), their lm-eval group names (``act_classification``) or tasks
    (:func:`act_eval.lm.suite.families`: the groups of ``tasks/groups``, members in their YAML's order)."""
    from act_eval.lm.suite import PREFIX, families, project_task_manager
    from act_eval.suggest import check_known

    family = families()
    out: list[str] = []
    for name in names:
        out.extend(family.get(name.removeprefix(PREFIX), [name]))
    known = [*project_task_manager().all_tasks, *family]
    check_known("task, group or family", [n for n in names if n.removeprefix(PREFIX) not in family], known)
    return list(dict.fromkeys(out))


def encode_example(lm, task_name: str, doc_index: int, context: str, continuations: list[str], gold: int) -> Example:
    """Tokenise with lm-eval's own pair encoding (``HFLM._encode_pair``), then lay out the rows."""
    pairs = [lm._encode_pair(context, cont) for cont in continuations]
    context_ids = tuple(pairs[0][0])
    if any(tuple(ctx) != context_ids for ctx, _ in pairs):
        raise ValueError(f"{task_name} doc {doc_index}: choices change the context tokens; the search needs one context")
    rows: list[tuple[int, ...]] = [context_ids]
    choices = []
    for _, cont in pairs:
        row = context_ids + tuple(cont[:-1])
        if row not in rows:
            rows.append(row)
        choices.append((rows.index(row), tuple(cont)))
    return Example(task_name, doc_index, tuple(rows), len(context_ids), tuple(choices), gold)


def held_out_examples(lm, task_names: list[str], per_task: int, seed: int = 1234,
                      offset: int = 0) -> tuple[list[Example], dict]:
    """``per_task`` training documents per task, a fixed random sample; ``offset`` skips the first
    ``offset`` of that sample, so calibration and validation slices never overlap.

    Returns the examples and a description for the map's provenance.
    """
    from act_eval.lm.suite import project_task_manager

    loaded = project_task_manager().load(task_names)["tasks"]
    examples: list[Example] = []
    used: dict[str, dict] = {}
    for name in task_names:
        task = loaded[name]
        if not task.has_training_docs():
            used[name] = {"split": None, "documents": 0, "note": "no training split: not used"}
            continue
        docs = list(task.training_docs())
        order = random.Random(f"{seed}:{name}").sample(range(len(docs)), len(docs))
        chosen = sorted(order[offset : offset + per_task])
        for index in chosen:
            doc = docs[index]
            context = task.fewshot_context(doc, 0)
            requests = task.construct_requests(doc=doc, ctx=context, metadata=(name, index, 1))
            continuations = [req.arguments[1] for req in requests]
            target = task.doc_to_target(doc)
            gold = target if isinstance(target, int) else task.doc_to_choice(doc).index(target)
            examples.append(encode_example(lm, name, index, context, continuations, gold))
        used[name] = {"split": task.config.training_split, "documents": len(chosen), "indices": chosen}
    return examples, used


def examples_digest(examples: list[Example]) -> str:
    """A hash of the exact token rows and labels: resuming a search requires the same examples."""
    blob = json.dumps([[e.task, e.doc_index, e.rows, e.prompt_len, e.choices, e.gold] for e in examples])
    return hashlib.sha256(blob.encode()).hexdigest()
