#!/usr/bin/env bash
# Benchmark of the `ntk` command, release build:
#   1. start-up: `ntk --version`;
#   2. a 1000-point dense adaptation of a 1-40-40-1 tanh network (1000 training points; 100 and
#      1000 test points), with fixed noise, and with the noise fitted (the default `--noise fit`);
#   3. reading the 8×8 CNN's ONNX graph (`ntk inspect`, start-up included) and a
#      1000-point dense adaptation of it from the ONNX file (tests/fixtures/pytorch/cnn.onnx:
#      conv–relu–maxpool–linear–tanh–linear, 1097 parameters), 100 test points, σ² and s² given.
# Prints the minimum and the median wall time of RUNS runs (default 10) of each, in ms, and the
# fit/predict split that `--json` reports. Usage: scripts/bench_cli.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
cargo build --release -q -p ntk-cli
ntk=target/release/ntk
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# y = sin(2x) + 0.1 cos(13x) on [-3, 3] (train) and [-3.3, 3.3] (test).
awk 'BEGIN { print "x,y"; for (i = 0; i < 1000; i++) { x = -3 + 6 * i / 999;
  printf "%.17g,%.17g\n", x, sin(2 * x) + 0.1 * cos(13 * x) } }' > "$dir/train.csv"
awk 'BEGIN { print "x,y"; for (i = 0; i < 1000; i++) { x = -3.3 + 6.6 * i / 999;
  printf "%.17g,%.17g\n", x, sin(2 * x) + 0.1 * cos(13 * x) } }' > "$dir/test.csv"
awk 'NR == 1 || NR % 10 == 2' "$dir/test.csv" > "$dir/test100.csv"
# 8×8 images of a Gaussian blob (width 1.2) centred at random (u, v) in [0, 7]², 64 columns in
# C, H, W order, target sin(u/2 + 0.6) + cos(v/2)/2: the CNN fixture's new task.
blobs() {
  awk -v n="$1" -v seed="$2" 'BEGIN { srand(seed); printf "x0"; for (k = 1; k < 64; k++) printf ",x%d", k;
    print ",y"; for (i = 0; i < n; i++) { u = 7 * rand(); v = 7 * rand();
      for (r = 0; r < 8; r++) for (c = 0; c < 8; c++)
        printf "%.6g,", exp(-((r - v) ^ 2 + (c - u) ^ 2) / (2 * 1.44));
      printf "%.6g\n", sin(u / 2 + 0.6) + cos(v / 2) / 2 } }'
}
blobs 1000 1 > "$dir/cnn.train.csv"
blobs 100 2 > "$dir/cnn.test.csv"
cnn=tests/fixtures/pytorch/cnn.onnx
"$ntk" train --arch 1-40-40-1:tanh --data "$dir/train.csv" --epochs 20 --lr 0.01 \
  --out "$dir/net.safetensors" 2>/dev/null

# Min and median of $runs wall times (ms) of the command "$@".
bench() {
  local name=$1; shift
  local times=()
  for _ in $(seq "$runs"); do
    local s e
    s=$(date +%s%N)
    "$@" > /dev/null 2>&1
    e=$(date +%s%N)
    times+=($(( (e - s) / 1000000 )))
  done
  sorted=($(printf '%s\n' "${times[@]}" | sort -n))
  printf '%-48s min %5d ms   median %5d ms   (%d runs)\n' "$name" "${sorted[0]}" \
    "${sorted[$(( runs / 2 ))]}" "$runs"
}

adapt=("$ntk" adapt --model "$dir/net.safetensors" --arch 1-40-40-1:tanh \
  --train "$dir/train.csv" --strategy dense --output "$dir/pred.csv")
echo "ntk: $("$ntk" --version); $(nproc) CPUs; $(date -u +%Y-%m-%dT%H:%MZ); load average $(cut -d' ' -f1-3 /proc/loadavg)"
bench "start-up (ntk --version)" "$ntk" --version
bench "adapt, dense, n = 1000, m = 100, --noise 0.01" "${adapt[@]}" --test "$dir/test100.csv" --noise 0.01
bench "adapt, dense, n = 1000, m = 1000, --noise 0.01" "${adapt[@]}" --test "$dir/test.csv" --noise 0.01
bench "adapt, dense, n = 1000, m = 1000, --noise fit" "${adapt[@]}" --test "$dir/test.csv" --noise fit
bench "inspect cnn.onnx (start-up + ONNX load)" "$ntk" inspect "$cnn"
cnn_adapt=("$ntk" adapt --model "$cnn" --train "$dir/cnn.train.csv" --test "$dir/cnn.test.csv"
  --strategy dense --noise 0.01 --prior-scale 0.5 --output "$dir/cnn.pred.csv")
bench "CNN from ONNX, dense, n = 1000, m = 100" "${cnn_adapt[@]}"
echo "--json timings, CNN, n = 1000, m = 100: $("${cnn_adapt[@]}" --json | grep -o '"timings":{[^}]*}')"
echo "--json timings, m = 100, --noise 0.01: $("${adapt[@]}" --test "$dir/test100.csv" --noise 0.01 --json | grep -o '"timings":{[^}]*}')"
echo "--json timings, m = 1000, --noise 0.01: $("${adapt[@]}" --test "$dir/test.csv" --noise 0.01 --json | grep -o '"timings":{[^}]*}')"
echo "--json timings, m = 1000, --noise fit:  $("${adapt[@]}" --test "$dir/test.csv" --noise fit --json | grep -o '"timings":{[^}]*}')"
