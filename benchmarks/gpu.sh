#!/usr/bin/env bash
# One prepared run of every benchmark on a CUDA machine (issue 12), in at most 8.5 minutes:
#
#   bash benchmarks/gpu.sh                    # writes benchmarks/results/gpu/
#   bash benchmarks/gpu.sh --out "$OUT/gpu"   # on the lent device machine (docs/performance.md, "GPU")
#   bash benchmarks/gpu.sh --cpu-smoke        # the same stages at tiny sizes on the CPU, into a temporary folder
#
# Stages, most important first (one that fails does not stop the next):
#   cuda-tests           python -m pytest -m cuda, on the test files that hold CUDA tests
#   pdd-op               benchmarks/pdd_op.py on CUDA, with its host-synchronisation check
#   steps-batch64        benchmarks/train_step.py: K = 3 and 5 ResNet-18 (CIFAR stem, full width),
#                        every method (the peers trs and dverge too), bf16, vmap, and the members'
#                        forward under torch.compile
#   user-steps-batch64   benchmarks/train_step.py --torchvision: the steps a user writes, K = 3 and 5
#                        (trs and dverge through the library's public functions too)
#   user-steps-batch128, steps-batch128: the same at batch 128
# Each benchmark writes its JSON (with the machine record) to the output folder; stages.json
# holds the machine record, the commit and every stage's outcome and time; gpu.log everything
# printed. The Markdown tables (benchmarks/gpu_tables.py) are printed last.
#
# Options:
#   --out DIR         output folder (default: benchmarks/results/gpu; with --cpu-smoke a new temporary folder)
#   --budget SECONDS  total time (default: 480; 400 with --cpu-smoke). A stage that would not fit in
#                     what is left is skipped with a note; a running stage is stopped at the budget.
#   --only A,B        run only these stages, e.g. to rerun the ones that failed
#   --cpu-smoke       tiny sizes on the CPU, one thread (what tests/test_benchmarks.py runs)
# Exit status: 0 when every stage that ran passed (skipped ones are listed), 1 when one failed,
# 2 when it cannot run here (bad arguments, no CUDA device without --cpu-smoke, no torch to be had).
#
# It installs only what is missing: torch and torchvision (pip, only when they are not installed),
# pytest and hypothesis (the tests need them); the library runs from src/, the harness from examples/ (PYTHONPATH).

set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)

log() { printf '[gpu.sh %4ds] %s\n' $(($(date +%s) - START)) "$*"; }
die() { log "STOPPED: $*"; exit 2; }

SMOKE=0 OUT_DIR="" BUDGET="" ONLY=""
while (($#)); do
    case $1 in
        --cpu-smoke) SMOKE=1 ;;
        --out) OUT_DIR=${2:?--out needs a folder}; shift ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
        --only) ONLY=${2:?--only needs stage names}; shift ;;
        -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (expected --cpu-smoke, --out DIR, --budget SECONDS, --only A,B)" ;;
    esac
    shift
done
[[ -z $BUDGET || $BUDGET =~ ^[0-9]+$ ]] || die "--budget expects whole seconds, but got '$BUDGET'"

# Each mode's sizes. NEED_*: about how many seconds a stage takes there; a stage is skipped when
# less than that is left of the budget.
if ((SMOKE)); then
    DEVICE=cpu BUDGET=${BUDGET:-400} OUT_DIR=${OUT_DIR:-$(mktemp -d)}
    BATCHES=(8 16) MEMBERS=2 COMPILE=aot_eager  # aot_eager: graph capture without inductor's minute of code generation
    OP_ARGS=(--repeats 1 --calls 1)
    STEP_ARGS=(--width 2 --rounds 1 --warmup 0 --threads 1)
    USER_ARGS=(--rounds 1 --warmup 0 --threads 1 --profile 3)
    NEED_TESTS=5 NEED_OP=5 NEED_STEPS=5 NEED_USER=5
    export OMP_NUM_THREADS=1
else
    command -v nvidia-smi >/dev/null || die "no CUDA device here (no nvidia-smi); bash benchmarks/gpu.sh --cpu-smoke runs the stages on a CPU"
    DEVICE=cuda BUDGET=${BUDGET:-480} OUT_DIR=${OUT_DIR:-benchmarks/results/gpu}
    BATCHES=(64 128) MEMBERS=3,5 COMPILE=inductor
    OP_ARGS=()
    STEP_ARGS=()  # full width, 15 rounds after 2 warm-up rounds (compilation happens in these)
    USER_ARGS=(--profile 10)
    # Measured on an H200 (docs/performance.md, "GPU") since the TRS and DVERGE rows: 8, 29, 188 s and
    # over 256 s (stopped there); the batch-128 stages not yet. The whole run no longer fits one call.
    NEED_TESTS=15 NEED_OP=35 NEED_STEPS=200 NEED_USER=360
fi
NAMES=(cuda-tests pdd-op "steps-batch${BATCHES[0]}" "user-steps-batch${BATCHES[0]}" "user-steps-batch${BATCHES[1]}" "steps-batch${BATCHES[1]}")
for name in ${ONLY//,/ }; do
    [[ " ${NAMES[*]} " == *" $name "* ]] || die "--only: expected stage names from: ${NAMES[*]}; but got '$name'"
done

mkdir -p "$OUT_DIR" || die "cannot make the output folder $OUT_DIR"
exec > >(tee -a "$OUT_DIR/gpu.log") 2>&1
TEE=$!
trap 'exec >&- 2>&-; wait "$TEE"' EXIT  # the log and the output complete when the script ends
# src: the library; examples: the harness (huang2021) that train_step.py times; benchmarks: machine.py.
export PYTHONPATH="$PWD/src:$PWD/examples:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-$(command -v python3 || command -v python)}  # the device machine's python3 holds its torch
[[ -n $PY ]] || die "no python3 on PATH"

# Install only what is missing (found without importing, which takes seconds).
missing() { "$PY" -c 'import importlib.util, sys; print(*(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' "$@"; }
if [[ -n $(missing torch torchvision) ]]; then
    log "torch or torchvision missing: pip install torch==2.14.1 torchvision==0.29.1"
    "$PY" -m pip install --quiet torch==2.14.1 torchvision==0.29.1 || die "could not install torch and torchvision"
fi
if [[ -n $(missing pytest hypothesis) ]]; then
    log "$(missing pytest hypothesis) missing (the CUDA tests need them): pip install pytest hypothesis"
    "$PY" -m pip install --quiet pytest hypothesis || log "could not install them: the cuda-tests stage will fail"
fi

# stages.json: the machine record (benchmarks/machine.py) and the commit now, each stage as it
# ends. This also checks that torch sees the CUDA device and that the library imports from src/.
# The device machine's copy of the working tree may lack .git: there, give the commit as COMMIT=<hash>.
COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
DIRTY=$(git status --porcelain 2>/dev/null | wc -l) || DIRTY=unknown  # pipefail: git's own failure
COMMIT=$COMMIT DIRTY=$DIRTY "$PY" - "$OUT_DIR/stages.json" "$DEVICE" "$BUDGET" <<'EOF' || die "this machine cannot run the stages (see above)"
import json, os, sys

import torch
import torchvision

import ensemble_diversity
from machine import machine

path, device, budget = sys.argv[1], torch.device(sys.argv[2]), int(sys.argv[3])
if device.type == "cuda" and not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device; bash benchmarks/gpu.sh --cpu-smoke runs the stages on a CPU")
dirty = os.environ["DIRTY"]
record = {"benchmark": "gpu.sh", **machine(device), "torchvision": torchvision.__version__, "ensemble_diversity": ensemble_diversity.__version__}
record |= {"commit": os.environ["COMMIT"], "uncommitted_files": int(dirty) if dirty.isdigit() else None, "budget_seconds": budget}
record["stages"] = []
with open(path, "w") as file:
    file.write(json.dumps(record, indent=2) + "\n")
print(f"{record['device']}: torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision {torchvision.__version__}")
EOF
log "device $DEVICE; budget $BUDGET s; output $OUT_DIR"
((SMOKE)) || nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader

# record NAME STATUS SECONDS NOTE COMMAND...: add the stage to stages.json.
record() {
    "$PY" -c 'import json, sys
path, name, status, seconds, note, *command = sys.argv[1:]
record = json.load(open(path))
record["stages"].append({"stage": name, "status": status, "seconds": int(seconds), "note": note, "command": " ".join(command)})
open(path, "w").write(json.dumps(record, indent=2) + "\n")' "$OUT_DIR/stages.json" "$@" || { log "stage $1: could not record it in stages.json"; FAILED=1; }
}

# stage NAME NEED COMMAND...: run COMMAND unless --only leaves it out or less than NEED seconds are left.
FAILED=0 SKIPPED=0
stage() {
    local name=$1 need=$2
    shift 2
    [[ -z $ONLY || ",$ONLY," == *",$name,"* ]] || return 0
    local left=$((START + BUDGET - $(date +%s)))
    if ((left < need)); then
        log "stage $name: SKIPPED, $left s left of the budget and it needs about $need s"
        record "$name" skipped 0 "budget: $left s left, it needs about $need s" "$@"
        SKIPPED=$((SKIPPED + 1))
        return 0
    fi
    log "stage $name: $*"
    local began rc=0 status=passed note=""
    began=$(date +%s)
    timeout --kill-after=10 "$left" "$@" || rc=$?
    if ((rc == 124 || rc == 137)); then
        status=failed note="stopped at the budget, after $left s" FAILED=1
    elif ((rc != 0)); then
        status=failed note="exit status $rc" FAILED=1
    fi
    local took=$(($(date +%s) - began))
    log "stage $name: ${status^^} in $took s${note:+ ($note)}"
    record "$name" "$status" "$took" "$note" "$@"
}

# The test files that hold CUDA tests: pytest -m cuda over the whole suite would also import the
# modules that need extras the machine may not have (ART).
# A file marks its tests one by one (@pytest.mark.cuda) or all at once (pytestmark = [pytest.mark.cuda, ...]).
mapfile -t CUDA_TESTS < <(grep -lE '^@pytest\.mark\.cuda|^pytestmark = .*pytest\.mark\.cuda' tests/test_*.py)
if ((${#CUDA_TESTS[@]})); then
    stage cuda-tests "$NEED_TESTS" "$PY" -m pytest -m cuda -ra -q -p no:cacheprovider "${CUDA_TESTS[@]}"
else
    log "stage cuda-tests: FAILED, no file tests/test_*.py holds a line '@pytest.mark.cuda' or 'pytestmark = [pytest.mark.cuda, ...]'" && FAILED=1
fi
stage pdd-op "$NEED_OP" "$PY" benchmarks/pdd_op.py --device "$DEVICE" "${OP_ARGS[@]}" --out "$OUT_DIR/pdd_op.json"
steps() {  # the harness's members at batch $1
    stage "steps-batch$1" "$NEED_STEPS" "$PY" benchmarks/train_step.py --device "$DEVICE" --members "$MEMBERS" \
        --batch-size "$1" --compile "$COMPILE" "${STEP_ARGS[@]}" --out "$OUT_DIR/train_step-batch$1.json"
}
user_steps() {  # torchvision's resnet18 through the public API at batch $1
    stage "user-steps-batch$1" "$NEED_USER" "$PY" benchmarks/train_step.py --torchvision --device "$DEVICE" --members "$MEMBERS" \
        --batch-size "$1" "${USER_ARGS[@]}" --out "$OUT_DIR/train_step-torchvision-batch$1.json"
}
steps "${BATCHES[0]}"
user_steps "${BATCHES[0]}"
user_steps "${BATCHES[1]}"
steps "${BATCHES[1]}"  # the longest last: the first to be skipped when time runs short

log "tables (python benchmarks/gpu_tables.py $OUT_DIR):"
"$PY" benchmarks/gpu_tables.py "$OUT_DIR" || FAILED=1
if ((FAILED)); then
    log "done in $(($(date +%s) - START)) s: SOME STAGES FAILED (see above); output $OUT_DIR"
else
    log "done in $(($(date +%s) - START)) s: every stage that ran passed, $SKIPPED skipped for the budget; output $OUT_DIR"
fi
exit "$FAILED"
