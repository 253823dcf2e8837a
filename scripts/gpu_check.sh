#!/usr/bin/env bash
# The GPU check: the eight training labs' trainers (03-09, 12) with the full profile's settings, memory plans and time
# estimates against measurements, on a CUDA machine, in under 8 minutes. Made for the lent GPU machine: no
# network, 64 MiB of files per command, torch/transformers/peft/accelerate there but no trl or datasets.
#
#   bash scripts/gpu_wheels.sh                  # here: download the wheels into .whl/ (sizes, 64 MiB check)
#   bash scripts/gpu_check.sh --wheels .whl     # there (device run, carry [".whl"]): install them, run the check
#     on the lent machine, where only $OUT comes back (timeout_s 600; the check stops itself at 480 s):
#     set -o pipefail; bash scripts/gpu_check.sh --wheels .whl --out $OUT/gpu_run.json 2>&1 | tee $OUT/gpu_check.log
#     then copy gpu_run.json to docs/gpu_run.json here and commit it
#   bash scripts/gpu_check.sh --dry-run         # anywhere: the items, the wheels and the sizes (CI)
#   bash scripts/gpu_check.sh --device cpu --tiny --out /tmp/x.json   # the items, tiny, on a CPU (tests)
#   ... --only memory_lora_8b lab05_qlora                               # some items alone (last argument)
#
# --wheels DIR pip-installs DIR/*.whl with --no-index --no-deps into $GPU_CHECK_SITE (default /tmp/gpu-check-site),
# put first on PYTHONPATH. Then bench/gpu_check.py runs each item under its time guard (see its docstring) and
# writes the JSON summary to --out (default docs/gpu_run.json; commit it after a real run). Exit 1 if an item
# failed or the whole took over 480 s; 2 on bad arguments or, without --device cpu, no CUDA GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
WHEELS=""
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; PASS+=("--dry-run") ;;
    --wheels) [ $# -ge 2 ] || { echo "gpu_check.sh: --wheels needs a folder" >&2; exit 2; }; WHEELS="$2"; shift ;;
    --out|--device|--steps|--budget) [ $# -ge 2 ] || { echo "gpu_check.sh: $1 needs a value" >&2; exit 2; }
      PASS+=("$1" "$2"); shift ;;
    --tiny) PASS+=("--tiny") ;;
    --only) shift; PASS+=("--only" "$@"); break ;;  # the rest are item names (a rerun of some items)
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (use --dry-run, --wheels DIR, --device cpu --tiny, --out FILE)" >&2
       exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
BUDGET_S=480  # the issue's limit: 8 minutes on one H200, the install included
start=$(date +%s)

if [ "$DRY_RUN" = 1 ]; then
  exec "$PY" bench/gpu_check.py --wheels "${WHEELS:-.whl}" "${PASS[@]}"
fi
if [ -n "$WHEELS" ]; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "gpu_check.sh: no wheels in $WHEELS (run scripts/gpu_wheels.sh here)" >&2; exit 2; }
  SITE="${GPU_CHECK_SITE:-/tmp/gpu-check-site}"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_check.sh: installed $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE in $(( $(date +%s) - start )) s"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
status=0
left=$(( BUDGET_S - ($(date +%s) - start) ))
# the items' own guards stop Python code; timeout stops a hang inside a kernel (the summary so far stays written)
timeout -k 10 "$left" "$PY" bench/gpu_check.py --budget $(( left - 20 )) "${PASS[@]}" || status=$?
[ "$status" = 124 ] && echo "gpu_check.sh: stopped at the ${BUDGET_S} s budget; the summary holds the items done" >&2
total_s=$(( $(date +%s) - start ))
echo "gpu_check.sh: ${total_s} s in all (budget ${BUDGET_S} s), exit ${status}"
if [ "$total_s" -gt "$BUDGET_S" ]; then
  echo "gpu_check.sh: took ${total_s} s, over the ${BUDGET_S} s budget: lower an item's guard (bench/gpu_check.py)." >&2
  [ "$status" = 0 ] && status=1
fi
exit "$status"
