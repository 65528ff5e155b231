"""``act-eval inspect``: one input's attention heatmaps per layer and head, sinks marked, before and after calibration."""

from __future__ import annotations

import argparse
from pathlib import Path

from act_eval.commands import add_model_run_options
from act_eval.core.rules import DEFAULT_BETA, DEFAULT_THRESHOLD


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "inspect",
        help="attention heatmaps of one input with the sinks marked, before and after calibration",
        description="Draw every selected head's attention on one input with its sink set marked (PNG files and one "
        "self-contained HTML page). With --head-map, draw it again with the map's calibration applied (ACT, or "
        "first-token scaling for a first-token map).",
    )
    parser.add_argument("--model", required=True, help="embedded model name (act-eval models list), local path or hub id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the input text (encoded as lm-eval encodes a context)")
    source.add_argument("--task", help="a task whose document --doc is the input (its context, as lm-eval builds it)")
    parser.add_argument("--doc", type=int, default=0, help="document index in the task's evaluation split (default: 0)")
    parser.add_argument(
        "--head-map", help="calibrate: published map name, JSON file, or inline heads like '[[10, 2], [12, 5]]'"
    )
    parser.add_argument("--threshold", type=float, help=f"sink threshold (default: the head map's, else {DEFAULT_THRESHOLD})")
    parser.add_argument("--beta", type=float, help=f"ACT maps: calibration beta (default: the head map's, else {DEFAULT_BETA})")
    parser.add_argument(
        "--factor", type=float, help="first-token maps: the first token's attention factor (default: the map's)"
    )
    parser.add_argument("--layers", type=int, nargs="+", help="layers to draw (default: all)")
    parser.add_argument(
        "--heads", type=int, nargs="+", help="heads to draw (default: all); also drawn large, every token labelled"
    )
    parser.add_argument("--out", default="act-eval-inspect", help="output directory (default: ./act-eval-inspect)")
    add_model_run_options(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from act_eval.core.switch import model_shape
    from act_eval.lm.pretrained import load_model
    from act_eval.sinks.inspection import inspect_input
    from act_eval.sinks.prompts import doc_prompt, load_tasks

    if args.text is not None and args.doc != 0:
        raise ValueError("--doc goes with --task, not --text")
    for option, value in (("--beta", args.beta), ("--factor", args.factor)):
        if args.head_map is None and value is not None:
            raise ValueError(f"{option} needs --head-map (it is the calibration's)")
    if args.task is not None:
        tasks = load_tasks([args.task], args.include_path, args.builtin_tasks)
        if len(tasks) != 1:
            raise ValueError(f"--task {args.task} is a group of {len(tasks)} tasks; name one of them: {', '.join(tasks)}")
        [(name, task)] = tasks.items()
        source = {"task": name, "doc_id": args.doc, "text": doc_prompt(name, task, args.doc).text}
    else:
        source = {"text": args.text}
    model, tokenizer, identity = load_model(args.model, args.device)
    shape = model_shape(model)
    page = inspect_input(
        model, tokenizer, identity, source, Path(args.out),
        layers=_selection("--layers", args.layers, shape["num_layers"]),
        heads=_selection("--heads", args.heads, shape["num_heads"]),
        detail=bool(args.heads),
        head_map=args.head_map, threshold=args.threshold, beta=args.beta, factor=args.factor,
    )
    print(page)
    return 0


def _selection(option: str, values: list[int] | None, count: int) -> list[int]:
    """The sorted, distinct indices given (all of ``range(count)`` when none), each checked."""
    if values is None:
        return list(range(count))
    bad = [v for v in values if not 0 <= v < count]
    if bad:
        raise ValueError(f"{option} {' '.join(map(str, bad))}: out of range, the model has {count} (0-{count - 1})")
    return sorted(set(values))
