#!/usr/bin/env bash
# Device check of the `cuda` feature: on a machine with an NVIDIA GPU
#   1. builds the workspace's device paths with `--features cuda`,
#   2. runs the backend conformance tests on the GPU (NTK_TEST_CUDA=1),
#   3. times the matrix-free log marginal likelihood of the 803,601-parameter scaling MLP
#      (5-200-2000-200-1) at n = 1k, 10k, 100k on the GPU,
# and prints a short table. Target: under 8 minutes on a 16-core machine with a warm cargo
# registry (no network needed: cudarc loads libcuda/libnvrtc at run time).
#
# Usage: scripts/device-check.sh [--device cpu|cuda[:i]] [--n 1000,10000,100000] [--budget SECONDS]
#   --device cpu   a dry run of the same steps without a GPU (no cuda feature, small n by default)
#   --budget       total seconds for all steps (default 470); each step gets what is left
# Environment: CUDARC_CUDA_VERSION (e.g. 12080) overrides the CUDA version the bindings target;
# by default it is taken from `nvidia-smi` (the driver's CUDA version).
set -uo pipefail

DEVICE="cuda:0"
SIZES=""
BUDGET=470
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --n) SIZES="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "device-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.." || exit 2
START=$(date +%s)
declare -a ROWS=()
FAILED=0

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME COMMAND...: runs under the remaining budget, records status and seconds.
step() {
    local name="$1"; shift
    local budget; budget=$(left)
    if (( budget <= 5 )); then
        ROWS+=("$(printf '%-28s %-8s %8s' "$name" "SKIPPED" "-")")
        FAILED=1
        return 1
    fi
    echo "== $name: $*" >&2
    local t0 rc; t0=$(date +%s)
    timeout --signal=INT --kill-after=10 "$budget" "$@"
    rc=$?
    local dt=$(( $(date +%s) - t0 ))
    local status="ok"
    if (( rc == 124 || rc == 137 )); then status="TIMEOUT"; FAILED=1
    elif (( rc != 0 )); then status="FAILED($rc)"; FAILED=1; fi
    ROWS+=("$(printf '%-28s %-8s %7ss' "$name" "$status" "$dt")")
    return $rc
}

case "$DEVICE" in
    cpu)
        FEATURES=()
        export NTK_TEST_CUDA=0
        SIZES="${SIZES:-200,500}"
        ;;
    cuda|cuda:*)
        FEATURES=(--features cuda)
        export NTK_TEST_CUDA=1
        SIZES="${SIZES:-1000,10000,100000}"
        if command -v nvidia-smi >/dev/null; then
            nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
            if [[ -z "${CUDARC_CUDA_VERSION:-}" ]]; then
                # The driver's CUDA version, mapped to the newest version cudarc 0.19 supports
                # that is not newer than it (cudarc's build script rejects other values).
                drv=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n1)
                if [[ -n "$drv" ]]; then
                    read -r major minor <<<"$drv"
                    want=$(( major * 100 + minor ))
                    for v in 1304 1303 1302 1301 1300 1209 1208 1206 1205 1204 1203 1202 1201 1200 1108 1107 1106 1105 1104; do
                        if (( v <= want )); then
                            export CUDARC_CUDA_VERSION="$(( v / 100 ))0$(( v % 100 ))0"
                            break
                        fi
                    done
                    echo "device-check: driver CUDA $major.$minor -> CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-unset}" >&2
                fi
            fi
        else
            echo "device-check: nvidia-smi not found; the CUDA probe will say why the device is unusable" >&2
        fi
        ;;
    *) echo "device-check: --device must be cpu or cuda[:i], got '$DEVICE'" >&2; exit 2 ;;
esac

# One profile (dev: dependencies at opt-level 2) for the tests and the benchmark, so burn and
# cubecl compile once. --lib: the unit tests only (the conformance tests live there).
step "build (${DEVICE%%:*})" \
    cargo build -p ntk-bench --bins "${FEATURES[@]}" \
&& step "build tests" \
    cargo test -p ntk-ops -p ntk-gp --lib "${FEATURES[@]}" --no-run
# The same package set as the build above: another set unifies features differently and
# recompiles.
step "probe + device tests" \
    cargo test -p ntk-ops -p ntk-gp --lib "${FEATURES[@]}" device -- --nocapture
step "conformance tests" \
    cargo test -p ntk-ops -p ntk-gp --lib "${FEATURES[@]}" conformance -- --nocapture --test-threads=1
BENCH_OUT=$(mktemp)
step "scaling bench n=$SIZES" \
    bash -c 'set -o pipefail; cargo run -q -p ntk-bench "$@" | tee '"$BENCH_OUT" _ \
        "${FEATURES[@]}" -- device-bench --device "$DEVICE" --n "$SIZES"

echo
echo "device-check on $DEVICE ($(( $(date +%s) - START )) s of a ${BUDGET} s budget)"
printf '%-28s %-8s %8s\n' "step" "status" "time"
printf '%s\n' "${ROWS[@]}"
echo
cat "$BENCH_OUT"
rm -f "$BENCH_OUT"
exit $FAILED
