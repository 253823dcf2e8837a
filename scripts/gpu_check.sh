#!/usr/bin/env bash
# The GPU check: the full profile's schedules and self-checks, on a CUDA machine, in under 8 minutes.
#
#   bash scripts/gpu_check.sh            # on a CUDA machine (no network needed)
#   bash scripts/gpu_check.sh --dry-run  # print what it would run; works anywhere (tests/test_gpu_check.py)
#
# 1. all 11 labs with LABS_PROFILE=full LABS_MODEL=embedded: the full profile's epochs, batch, max_length,
#    learning rates and self-checks, on the real small model (SmolLM2-135M), with CUDA, bf16 and
#    bitsandbytes 4-bit on the GPU (lab 05). Llama itself needs the hub and a Spark: this is the next best.
# 2. bench/gpu_throughput.py: LoRA and QLoRA tokens/s, MFU and peak memory vs plan on a Llama-3.1-8B-shaped
#    model (random weights), trimmed to 5 timed steps per method.
# Writes outputs/full/run_summary.json (the runner's, plus the bench and each part's wall time) and
# outputs/full/gpu_throughput.json; copy the summary to docs/gpu_run.json to commit it.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (use --dry-run)" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT="${LABS_OUTPUT_DIR:-outputs}/full"
BUDGET_S=480          # the issue's limit: 8 minutes on one H200
LAB_TIMEOUT_S=300     # per notebook cell (the runner's --timeout)
LABS_CMD=(env LABS_PROFILE=full LABS_MODEL=embedded HF_HUB_OFFLINE=1 "$PY" -m labhelpers.runner --timeout "$LAB_TIMEOUT_S")
BENCH_CMD=("$PY" bench/gpu_throughput.py --steps 5 --warmup 1 --json "$OUT/gpu_throughput.json")

if [ "$DRY_RUN" = 1 ]; then
  echo "gpu_check.sh --dry-run: would run, within ${BUDGET_S} s in all:"
  echo "  1. ${LABS_CMD[*]}"
  echo "  2. ${BENCH_CMD[*]}"
  echo "  3. merge $OUT/gpu_throughput.json and the part times into $OUT/run_summary.json"
  exit 0
fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check.sh: no CUDA GPU visible to $PY; this check is for a GPU machine (try --dry-run)." >&2
  exit 2
fi
mkdir -p "$OUT"

start=$(date +%s)
status=0
"${LABS_CMD[@]}" || status=$?
labs_s=$(( $(date +%s) - start ))
"${BENCH_CMD[@]}" || status=$?
total_s=$(( $(date +%s) - start ))
bench_s=$(( total_s - labs_s ))

"$PY" - "$OUT" "$labs_s" "$bench_s" "$total_s" "$BUDGET_S" <<'EOF'
import json, sys
from pathlib import Path

out, labs_s, bench_s, total_s, budget = Path(sys.argv[1]), *map(int, sys.argv[2:])
summary_path = out / "run_summary.json"
summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
bench = out / "gpu_throughput.json"
summary["gpu_check"] = {"labs_s": labs_s, "bench_s": bench_s, "total_s": total_s, "budget_s": budget,
                        "within_budget": total_s <= budget}
summary["bench"] = json.loads(bench.read_text()) if bench.is_file() else None
summary_path.write_text(json.dumps(summary, indent=2) + "\n")
print(f"gpu_check: labs {labs_s} s, bench {bench_s} s, total {total_s} s (budget {budget} s) -> {summary_path}")
EOF
if [ "$total_s" -gt "$BUDGET_S" ]; then
  echo "gpu_check.sh: took ${total_s} s, over the ${BUDGET_S} s budget: trim the slowest part (see the summary)." >&2
  status=1
fi
exit "$status"
