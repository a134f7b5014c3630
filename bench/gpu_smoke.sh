#!/usr/bin/env bash
# The GPU path in one prepared run (no network, at most 8 minutes: the parts' limits add up to 480 s):
#   1. the unit tests marked `cuda` (on a machine without CUDA they report as skipped),
#   2. bench/train_overhead.py (SFT, adaptive cached, paper-style) on the default model on the
#      device -> bench/results/gpu_train_overhead_<device>.json,
#   3. bench/train_memory.py on the default model: bf16 weights and QLoRA (nf4), activation
#      checkpointing off and on, the planner's estimate against torch.cuda.max_memory_allocated,
#      and guardtune's SFT step against a plain PEFT loop -> bench/results/gpu_train_memory_<device>.json,
#   4. one job end to end on the embedded stack with GUARDTUNE_DEVICE=<device>
#      (tests/worker/test_device.py),
#   5. with 2 GPUs or more: the `cuda` tests named `multi_gpu` (data parallel over 2 GPUs);
#      skipped (and so recorded) on a machine with fewer,
# then bench/results/gpu_smoke_<device>.json: each part's exit code and seconds, tokens/s,
# step-time ratios to SFT and peak memory from the overhead bench, and the memory bench's
# planner errors and checks.
#
#   bench/gpu_smoke.sh                 # --device cuda: the benches at their small GPU sizes
#   bench/gpu_smoke.sh --device cpu    # tiny sizes: checks the script itself on a CPU host
set -euo pipefail
DEVICE=cuda
if [[ "${1:-}" == "--device" ]]; then DEVICE="${2:?--device cuda|cpu}"; fi
[[ "$DEVICE" == cuda || "$DEVICE" == cpu ]] || { echo "--device cuda|cpu" >&2; exit 2; }
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
CACHE_DIR="${GUARDTUNE_BENCH_CACHE_DIR:-var/models}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GUARDTUNE_TEST_DEVICE="$DEVICE"
if [[ "$DEVICE" == cuda ]]; then
  SIZES=(--variants a,e,d --steps 8 --max-seq-len 256 --n-examples 48)
  MEMORY=(--models default --weights bf16,nf4 --micro-batches 4 --speed-model default)
  GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
else
  SIZES=(--variants a,e --steps 1 --max-seq-len 96 --n-examples 8)
  MEMORY=(--quick --weights fp32 --micro-batches 1)
  GPUS=0
fi
LOG="$(mktemp -d)"
# The commit and cleanliness at the start: the parts below write result files themselves.
"$PY" -c 'import json; from bench.common import git_info; print(json.dumps(git_info()))' >"$LOG/git.json"
part() {  # part NAME SECONDS CMD...: run with a time limit, record exit code and duration
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc=0
  timeout "$limit" "$@" >"$LOG/$name.log" 2>&1 || rc=$?
  echo "$name $rc $((SECONDS - t0))" >>"$LOG/parts"
  echo "$name: exit $rc in $((SECONDS - t0)) s"; tail -3 "$LOG/$name.log"
}
skip() {  # skip NAME WHY: record a part this machine cannot run
  echo "$1 skip 0" >>"$LOG/parts"; echo "$1: skipped ($2)"
}
part cuda_tests 90 "$PY" -m pytest -q -m cuda -rs tests
part overhead_bench 120 "$PY" bench/train_overhead.py "${SIZES[@]}" --device "$DEVICE" \
  --cache-dir "$CACHE_DIR" --result-name "gpu_train_overhead_$DEVICE"
part memory_bench 120 "$PY" bench/train_memory.py "${MEMORY[@]}" --device "$DEVICE" --dirty-ok \
  --cache-dir "$CACHE_DIR" --out "bench/results/gpu_train_memory_$DEVICE.json"
part job_end_to_end 90 "$PY" -m pytest -q tests/worker/test_device.py -k "$DEVICE"
if (( GPUS >= 2 )); then
  part data_parallel 60 "$PY" -m pytest -q -m cuda -k multi_gpu -rs tests
else
  skip data_parallel "$GPUS GPU(s); 2 needed"
fi
"$PY" - "$DEVICE" "$LOG/parts" "$LOG/git.json" <<'PYEOF'
import json, sys
from pathlib import Path
sys.path.insert(0, ".")
from bench.common import write_result
device, parts_file, git_file = sys.argv[1], sys.argv[2], sys.argv[3]
parts = {
    n: {"skipped": True} if rc == "skip" else {"exit_code": int(rc), "seconds": int(s)}
    for n, rc, s in (l.split() for l in Path(parts_file).read_text().splitlines())
}
bench = Path(f"bench/results/gpu_train_overhead_{device}.json")
summary = {}
if bench.exists():
    data = json.loads(bench.read_text())
    summary = {
        "tokens_per_s": {v: r["tokens_per_s"] for v, r in data["variants"].items()},
        "peak_memory_mb": {v: r.get("peak_cuda_mb") or r["peak_rss_mb"] for v, r in data["variants"].items()},
        "ratios": data["ratios"],
    }
memory = Path(f"bench/results/gpu_train_memory_{device}.json")
if memory.exists():
    data = json.loads(memory.read_text())
    summary["memory"] = {
        r["name"]: {"measured_mb": r["measured_mb"], "estimate_mb": r["estimate_mb"], "error": r["error"]}
        for r in data["rows"]
    }
    summary["memory_checks"] = data["checks"]
write_result(
    f"gpu_smoke_{device}", {"device": device, "parts": parts, "bench": summary}, git=json.loads(Path(git_file).read_text())
)
print(json.dumps(parts))
PYEOF
! grep -v ' skip ' "$LOG/parts" | grep -qv ' 0 '
