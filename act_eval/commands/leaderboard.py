"""``act-eval leaderboard manifest|build|verify|list``: prepare submissions and build the board."""

from __future__ import annotations

import argparse
from pathlib import Path

from act_eval.compare.defaults import ALPHA, RESAMPLES, SEED

_ROOT_HELP = "leaderboard directory (default: $ACT_EVAL_LEADERBOARD or the checkout's leaderboard/)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("leaderboard", help="write submission manifests and build the leaderboard")
    action = parser.add_subparsers(dest="action", required=True)

    manifest = action.add_parser(
        "manifest",
        help="write RUN_DIR/manifest.json from what the lm-eval run recorded",
        description=(
            "RUN_DIR is an lm-eval --output_path directory (its newest run) or a directory from `act-eval icl run`. "
            "The arm follows from the model arguments (head_map= -> act) and icl.json, the suite from the run's group."
        ),
    )
    manifest.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    manifest.add_argument("--suite", help="the defined suite the run covers (default: the group it ran)")
    manifest.add_argument("--model-id", help="hub id of the weights (default: from pretrained=)")
    manifest.add_argument("--revision", help="hub revision or commit of the weights")
    manifest.add_argument(
        "--file-hash", help="sha256:<hex> of the weights (default: hashed from pretrained= when local)"
    )
    manifest.add_argument("--hardware", help="the machine, in words (default: from lm-eval's environment report)")
    manifest.add_argument("--force", action="store_true", help="replace an existing manifest.json")
    manifest.set_defaults(func=_manifest)

    build = action.add_parser(
        "build", help="write README.md, index.html, leaderboard.json and plots/ from the submissions"
    )
    build.add_argument("--root", help=_ROOT_HELP)
    build.add_argument(
        "--resamples", type=int, default=RESAMPLES, help=f"bootstrap / permutation resamples (default: {RESAMPLES})"
    )
    build.add_argument("--seed", type=int, default=SEED, help=f"seed of every resampling (default: {SEED})")
    build.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level (default: {ALPHA})")
    build.add_argument(
        "--screenshot",
        nargs="?",
        const="",
        metavar="PNG",
        help="also photograph the page with headless Chromium (default path: docs/img/leaderboard.png beside the root)",
    )
    build.set_defaults(func=_build)

    verify = action.add_parser(
        "verify",
        help="run every check again on accepted submissions (writes nothing)",
        description=(
            "Each accepted submission (or those named) must pass every check of `act-eval submit` as it is stored, "
            "give its recorded id and fingerprint from its samples, and pair with the other submissions."
        ),
    )
    verify.add_argument("ids", nargs="*", metavar="ID", help="submission ids (default: all)")
    verify.add_argument("--root", help=_ROOT_HELP)
    verify.set_defaults(func=_verify)

    listing = action.add_parser("list", help="list accepted submissions")
    listing.add_argument("--root", help=_ROOT_HELP)
    listing.set_defaults(func=_list)


def _manifest(args: argparse.Namespace) -> int:
    from act_eval.leaderboard.prepare import prepare_manifest

    path = prepare_manifest(
        args.run_dir,
        suite=args.suite,
        model_id=args.model_id,
        revision=args.revision,
        file_hash=args.file_hash,
        hardware=args.hardware,
        force=args.force,
    )
    print(f"wrote {path}; check it, then: act-eval submit {args.run_dir}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from act_eval.leaderboard import default_root
    from act_eval.leaderboard.build import build, default_screenshot

    root = default_root(args.root)
    screenshot = None
    if args.screenshot is not None:
        screenshot = Path(args.screenshot) if args.screenshot else default_screenshot(root)
    board = build(root, n_resamples=args.resamples, seed=args.seed, alpha=args.alpha, screenshot=screenshot)
    print(
        f"{len(board.submissions)} submission(s) -> {root / 'README.md'}, {root / 'index.html'}, {root / 'leaderboard.json'}"
    )
    if screenshot:
        print(f"screenshot: {screenshot}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from act_eval.leaderboard import default_root
    from act_eval.leaderboard.store import Store

    outcome = Store(default_root(args.root)).reverify(args.ids)
    for accepted, refusal in outcome:
        if refusal is None:
            print(f"verified: {accepted.id} (fingerprint {accepted.fingerprint[:19]}...)")
            for line in accepted.report:
                print(f"  {line}")
        else:
            print(f"FAILED: {accepted.id}: {refusal}")
    failed = sum(refusal is not None for _, refusal in outcome)
    print(f"{len(outcome) - failed} of {len(outcome)} accepted submission(s) verified")
    return 1 if failed else 0


def _list(args: argparse.Namespace) -> int:
    from act_eval.leaderboard import default_root
    from act_eval.leaderboard.store import Store

    for s in Store(default_root(args.root)).accepted():
        print(f"{s.id:72s} {s.manifest.arm_label:32s} {s.manifest.suite:26s} {s.accepted}")
    return 0
