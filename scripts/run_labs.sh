#!/usr/bin/env bash
# The main job: set up (first time only), then run every lab top to bottom on the current profile
# (LABS_PROFILE, default smoke = the embedded model, offline) and print a per-lab summary.
#   bash scripts/run_labs.sh              # all labs
#   bash scripts/run_labs.sh --labs 03 10 # some labs
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${LABS_VENV:-.venv}/bin/python" -m labhelpers.harness.runner "$@"
