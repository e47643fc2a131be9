#!/usr/bin/env bash
# One entry point on a fresh machine (needs only python3 >= 3.10):
#   ./run.sh demo [--profile demo|tiny|full]   database up, simulated experiment, populate, summary
#   ./run.sh test [pytest args]                the whole test suite (unit + integration)
#   ./run.sh <neuralreg subcommand ...>        e.g. ./run.sh db status, ./run.sh status --prefix neuralreg_demo
# It creates .venv (or $NEURALREG_VENV) and installs the project into it when needed.
# $NEURALREG_TORCH: pip arguments for PyTorch (default torch==2.13.0: the CUDA build from PyPI on Linux x86_64).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${NEURALREG_VENV:-.venv}
PY=${PYTHON:-python3}

bootstrap() {
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$PY" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                echo "installing python3-venv (apt-get)"
                apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
                "$PY" -m venv "$VENV"
            else
                echo "error: '$PY -m venv' failed: install python3-venv" >&2; exit 1
            fi
        fi
    fi
    if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
        echo "installing neuralreg and its dependencies into $VENV (a few minutes the first time)"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -c "import torch" 2>/dev/null || \
            "$VENV/bin/python" -m pip install -q ${NEURALREG_TORCH:-torch==2.13.0}   # unquoted: several pip arguments
        "$VENV/bin/python" -m pip install -q -e ".[test]"
        touch "$VENV/.installed"
    fi
}

cmd=${1:-help}
case "$cmd" in
    demo)
        shift; bootstrap
        exec "$VENV/bin/neuralreg" demo "$@" ;;
    test)
        shift; bootstrap
        # CI (and NEURALREG_DB_RESET=1) may take over an existing test account whose password is unknown
        if [ "${CI:-}" = true ] || [ "${NEURALREG_DB_RESET:-}" = 1 ]; then
            "$VENV/bin/neuralreg" db up --reset-password
        else
            "$VENV/bin/neuralreg" db up
        fi
        exec "$VENV/bin/python" -m pytest -q "$@" ;;   # default: testpaths (tests/) from pyproject.toml
    help|-h|--help)
        sed -n '2,/^[^#]/{/^#/p}' "$0" ;;   # the comment block at the top
    *)
        bootstrap
        exec "$VENV/bin/neuralreg" "$@" ;;
esac
