#!/usr/bin/env bash
# The test suite: set up (first time only), then pytest = labhelpers unit tests, data/docs/packaging
# checks, and every notebook in labs/ executed by nbval on the smoke profile, offline.
#   bash scripts/test.sh                  # everything
#   bash scripts/test.sh tests/           # without the notebooks
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 LABS_PROFILE="${LABS_PROFILE:-smoke}"
exec "${LABS_VENV:-.venv}/bin/python" -m pytest "$@"
