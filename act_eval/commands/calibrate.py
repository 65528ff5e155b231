"""``act-eval calibrate {contextual,batch} RUN --output_path OUT``: a run re-scored by a label prior (ACT's rivals).

RUN may also be an ICL arm (an ``act-eval icl run`` directory or an accepted ICL submission):
every seed run is re-scored with its own demonstrations, into ``OUT/seed_<S>/`` with an
``icl.json`` listing them, so the result is an ICL arm again (ICL + calibration) for ``act-eval compare --icl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "calibrate",
        help="re-score an lm-eval --log_samples run by contextual or batch calibration (a run of its own)",
        description=(
            "contextual: Zhao et al. 2021 (Calibrate Before Use), the prior from content-free inputs (N/A, '', [MASK]) "
            "in each document's own prompt, demonstrations included, scored by the run's own model (an hf-act run: "
            "ACT + contextual calibration). batch: Zhou et al. 2024 (Batch Calibration), the prior from the mean "
            "choice probabilities over the evaluation documents, no model needed; transductive (it uses the test "
            "inputs). OUT is written as lm-eval writes --output_path, ready for `act-eval compare` and `act-eval submit`."
        ),
    )
    parser.add_argument("method", choices=("contextual", "batch"))
    parser.add_argument(
        "run", metavar="RUN", help="an lm-eval run (OUT, OUT/<model>, a results file or a submission), or an ICL arm"
    )
    parser.add_argument("--output_path", "--output-path", required=True, type=Path, help="where the calibrated run goes")
    parser.add_argument("--tasks", nargs="+", help="tasks or groups to calibrate (default: all of the run's)")
    parser.add_argument(
        "--model", help="lm-eval model type for the content-free prompts (default: the run's; hf-fast gives hf's numbers)"
    )
    parser.add_argument("--device", help="device for the content-free prompts (default: cuda if available, else cpu)")
    parser.add_argument("--batch_size", "--batch-size", default="8", help="batch size for the content-free prompts")
    parser.set_defaults(func=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    from act_eval.commands.compare import icl_paths
    from act_eval.files import atomic_write_text
    from act_eval.lm.runs import ICL_MANIFEST, load_icl_runs, load_run
    from act_eval.rivals.rescore import calibrate_run

    paths = icl_paths(Path(args.run))
    icl = len(paths) > 1 or (Path(args.run) / ICL_MANIFEST).is_file()
    runs = load_icl_runs(paths) if icl else [load_run(args.run)]
    lm, record = None, None
    if args.method == "contextual":
        lm, record = _load_model(runs[0], args.model, args.device, args.batch_size)
    written = []
    for run in runs:
        out = args.output_path / f"seed_{run.fewshot_seed}" if icl else args.output_path
        written.append(calibrate_run(run, args.method, out, tasks=args.tasks, lm=lm, model_record=record))
        print(f"wrote {written[-1]}")
    if icl:
        body = {
            "calibration": args.method,
            "base": str(args.run),
            "seeds": [run.fewshot_seed for run in runs],
            "runs": [str(w.relative_to(args.output_path)) for w in written],
        }
        print(f"wrote {atomic_write_text(args.output_path / ICL_MANIFEST, json.dumps(body, indent=2) + chr(10))}")
        print(f"next: act-eval compare BASELINE --icl {args.output_path}")
    else:
        print(f"next: act-eval compare BASELINE --rival {args.output_path}   (or act-eval leaderboard manifest {args.output_path})")
    return 0


def _load_model(run, model: str | None, device: str | None, batch_size: str) -> tuple[object, dict]:
    """The run's own model (type and arguments as recorded), for the content-free prompts."""
    from lm_eval.api.registry import get_model

    model_type = model or run.results["config"]["model"]
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    args = dict(run.model_args)
    lm = get_model(model_type).create_from_arg_obj(args, {"batch_size": batch_size, "device": device})
    return lm, {"model": model_type, "model_args": args, "device": device, "batch_size": batch_size}
