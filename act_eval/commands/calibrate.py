"""``act-eval calibrate {contextual,batch} RUN --output_path OUT``: a run re-scored by a label prior (ACT's rivals).

RUN may also be an ICL arm (an ``act-eval icl run`` directory or an accepted ICL submission):
every seed run is re-scored with its own demonstrations, into ``OUT/seed_<S>/`` with an
``icl.json`` listing them, so the result is an ICL arm again (ICL + calibration) for ``act-eval compare --icl``.
"""

from __future__ import annotations

import argparse
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
    from act_eval.leaderboard.manifest import run_paths
    from act_eval.rivals.rescore import calibrate_arm

    given = Path(args.run)
    written, manifest = calibrate_arm(
        given, run_paths(given), args.method, args.output_path,
        tasks=args.tasks, model=args.model, device=args.device, batch_size=args.batch_size,
    )
    for path in written:
        print(f"wrote {path}")
    if manifest is not None:
        print(f"wrote {manifest}")
        print(f"next: act-eval compare BASELINE --icl {args.output_path}")
    else:
        print(f"next: act-eval compare BASELINE --rival {args.output_path}   (or act-eval leaderboard manifest {args.output_path})")
    return 0
