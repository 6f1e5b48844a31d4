#!/usr/bin/env bash
# Set up dartok on a fresh machine: the Fashion-MNIST data package, a venv in .venv,
# the CPU torch wheel first (so nothing pulls a CUDA build), then the package itself.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
LOG=$(mktemp)
pip_install() {
    if ! .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >"$LOG" 2>&1; then
        cat "$LOG" >&2; echo "setup.sh: pip install $* failed" >&2; exit 1
    fi
}
pip_install "torch==2.13.0"
pip_install -c constraints.txt -e ".[test]"
rm -f "$LOG"
.venv/bin/python -c "import dartok, timm; print('dartok', dartok.__version__, '| timm', timm.__version__)"
