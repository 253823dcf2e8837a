#!/usr/bin/env bash
# The wheels the GPU check needs on a lent GPU machine, downloaded here into .whl/ (git-ignored).
#
#   bash scripts/gpu_wheels.sh            # download, print sizes, refuse if tree + wheels > 64 MiB
#   bash scripts/gpu_wheels.sh --list     # print the wheel list and the limit, download nothing
#
# That machine (Python 3.12, x86-64) reaches no package registry and takes at most 64 MiB per command: the
# working tree (tracked + untracked-not-ignored files) plus the carried wheels. It already holds torch 2.11,
# transformers 5.17, peft, accelerate, pyarrow, pandas, xxhash, fsspec and huggingface_hub; not trl, datasets,
# bitsandbytes or nbclient. Pure-python wheels at pyproject.toml's pins, in priority order:
#   needed     trl, datasets and datasets' two missing deps (dill, multiprocess)   ~1.8 MB
#   pins       transformers, peft (the machine's transformers is 5.17; the labs pin 5.23)  ~14 MB
#   optional   bitsandbytes (43 MB as published; ~7 MB here: its wheel is repacked with only the CPU and CUDA
#              13.x libraries, the machine's torch being cu130): lab 05's 4-bit and paged_adamw_8bit; added
#              only if it still fits, else the check reports them "skipped: bitsandbytes not available".
# pyarrow (~45 MB) is NOT carried: the machine has one (datasets 5.2 needs >= 24; the check says if it is older).
# Then on the GPU machine: bash scripts/gpu_check.sh --wheels .whl   (carry [".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."

LIMIT=$(( 64 * 1024 * 1024 ))
DEST=.whl
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
LIST=0
for arg in "$@"; do
  case "$arg" in
    --list) LIST=1 ;;
    -h|--help) sed -n "2,18p" "$0"; exit 0 ;;
    *) echo "gpu_wheels.sh: unknown argument '$arg' (use --list)" >&2; exit 2 ;;
  esac
done

pin() {  # the version pyproject.toml pins for $1
  local v
  v=$(sed -n "s/^ *\"$1==\([^\"]*\)\",*$/\1/p" pyproject.toml | head -1)
  [ -n "$v" ] || { echo "gpu_wheels.sh: no pin for $1 in pyproject.toml" >&2; exit 2; }
  echo "$v"
}
# datasets' own pins (datasets 5.2.0 METADATA: dill<0.4.2, multiprocess<0.70.20); the versions this venv resolved
NEEDED=("trl==$(pin trl)" "datasets==$(pin datasets)" "dill==0.4.1" "multiprocess==0.70.19")
PINS=("transformers==$(pin transformers)" "peft==$(pin peft)")
OPTIONAL=("bitsandbytes==$(pin bitsandbytes)")

if [ "$LIST" = 1 ]; then
  echo "needed: ${NEEDED[*]}"
  echo "pins: ${PINS[*]}"
  echo "optional (if it fits): ${OPTIONAL[*]}"
  echo "limit: $LIMIT bytes (64 MiB) for tree + wheels"
  exit 0
fi

tree_bytes() {  # what the device tool sends: tracked and untracked files git does not ignore
  git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
}
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
dir_bytes() { find "$1" -type f -name '*.whl' -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

get() {  # download one wheel (py3.12, x86-64 manylinux) into $1
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$1" "$2" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
  ls "$1"/*.whl >/dev/null 2>&1 || { echo "gpu_wheels.sh: pip found no wheel for $2" >&2; return 1; }
}

slim_bnb() {  # keep libbitsandbytes_cpu and _cuda13x (the machine's torch is cu130); drop the other 37 MB
  "$PY" - "$1" <<'PYEOF'
import re, sys, zipfile
from pathlib import Path

wheel = next(Path(sys.argv[1]).glob("bitsandbytes-*.whl"))
drop = re.compile(r"bitsandbytes/libbitsandbytes_(?!cpu\.so$|cuda13\d\.so$)[^/]+\.so$")
tmp = wheel.with_suffix(".tmp")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        if drop.search(info.filename):
            continue
        data = src.read(info)
        if info.filename.endswith(".dist-info/RECORD"):  # the list of files must match what the wheel holds
            data = b"".join(line for line in data.splitlines(keepends=True)
                            if not drop.search(line.split(b",")[0].decode()))
        dst.writestr(info, data)
tmp.replace(wheel)
PYEOF
}

rm -rf "$DEST" && mkdir -p "$DEST"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
tree=$(tree_bytes)
total=$tree
for spec in "${NEEDED[@]}" "${PINS[@]}" "${OPTIONAL[@]}"; do
  one="$stage/${spec%%==*}"
  mkdir -p "$one"
  get "$one" "$spec"
  if [ "${spec%%==*}" = bitsandbytes ]; then slim_bnb "$one"; fi
  size=$(dir_bytes "$one")
  if [ $(( total + size )) -le "$LIMIT" ]; then
    mv "$one"/*.whl "$DEST"/
    total=$(( total + size ))
    printf '  %-28s %6s MiB\n' "$spec" "$(mib "$size")"
  else
    case " ${OPTIONAL[*]} " in
      *" $spec "*) printf '  %-28s %6s MiB  left out: tree + wheels would be %s MiB > 64 MiB\n' "$spec" \
                     "$(mib "$size")" "$(mib $(( total + size )))" ;;
      *) echo "gpu_wheels.sh: $spec ($size bytes) does not fit: tree $tree + wheels $(( total - tree )) + it > $LIMIT" \
              "bytes; shrink the tree (git ls-files -co --exclude-standard)" >&2; exit 1 ;;
    esac
  fi
done
wheels=$(( total - tree ))
printf 'tree %s MiB + wheels %s MiB = %s MiB of 64 MiB (%s)\n' "$(mib "$tree")" "$(mib "$wheels")" \
  "$(mib "$total")" "$DEST"
if [ "$total" -gt "$LIMIT" ]; then
  echo "gpu_wheels.sh: tree + wheels = $total bytes > $LIMIT" >&2
  exit 1
fi
