"""``act-eval head-maps list|show``: the published head maps."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("head-maps", help="list or show published head maps")
    action = parser.add_subparsers(dest="action", required=True)
    listing = action.add_parser("list", help="list published maps")
    listing.add_argument("pattern", nargs="?", default="*",
                         help="only names matching this shell pattern, e.g. 'gemma3-270m.*' or '*.act_trec*' (default: all)")
    listing.set_defaults(func=_list)
    show = action.add_parser("show", help="print one map (name or path) with a per-layer summary")
    show.add_argument("map")
    show.add_argument("--json", action="store_true", help="print the file as JSON")
    show.set_defaults(func=_show)
    convert = action.add_parser("convert-reference", help="convert the ACT authors' published maps into this format")
    convert.add_argument("files", nargs="+", help="reference JSON files (../shared/data/reference_head_maps/*.json)")
    convert.add_argument("--out", help="output directory (default: the published head_maps/ directory)")
    convert.set_defaults(func=_convert)


def _list(args: argparse.Namespace) -> int:
    import sys
    from fnmatch import fnmatchcase

    from act_eval.core.head_map import published_head_maps

    maps = [hm for hm in published_head_maps() if fnmatchcase(hm.name, args.pattern)]
    if not maps:
        print(f"no published head map is named like {args.pattern!r} (act-eval head-maps list shows them all)", file=sys.stderr)
        return 2
    for hm in maps:
        print(hm.summary_line())
    return 0


def _show(args: argparse.Namespace) -> int:
    from act_eval.core.head_map import load_head_map

    hm = load_head_map(args.map)
    print(hm.to_json() if args.json else hm.describe())
    return 0


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from act_eval.core.head_map import published_dir
    from act_eval.core.reference_maps import convert_reference_map

    out = Path(args.out) if args.out else published_dir()
    for src in args.files:
        hm = convert_reference_map(src)
        target = hm.save(out / f"{hm.name}.json")
        print(f"{src} -> {target} ({hm.num_calibrated} heads, {hm.content_hash[:19]})")
    return 0
