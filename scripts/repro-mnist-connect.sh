#!/usr/bin/env bash
# Reproduce the MNIST mode-connectivity numbers of the README: two LeNet-300-100 endpoints
# (20 epochs each), a one-bend PolyChain and a quadratic Bezier curve (20 epochs each), and the
# 61-point path evaluation (full 10k test set, 10k-sample train subset). Prints the timings.
#   bash scripts/repro-mnist-connect.sh [OUT_DIR] [ARCH]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/mnist-connect}"
ARCH="${2:-mlp:784-300-100-10}"
bash scripts/fetch-data.sh mnist >/dev/null
cargo build --release -q
M="${CARGO_TARGET_DIR:-target}/release/modeconn"
mkdir -p "$OUT"
t() { local s=$(date +%s.%N); "$@"; echo "time $(echo "$(date +%s.%N) - $s" | bc) s: ${*:1:2}" >&2; }
for s in 1 2; do
  t $M train --data mnist --arch "$ARCH" --epochs 20 --lr 0.05 --seed $s --out "$OUT/w$s" -q >/dev/null
done
A="$OUT/w1/model.safetensors"; B="$OUT/w2/model.safetensors"
t $M connect --data mnist --a "$A" --b "$B" --curve polychain --epochs 20 --lr 0.05 --seed 0 --out "$OUT/chain" -q >/dev/null
t $M connect --data mnist --a "$A" --b "$B" --curve bezier --epochs 20 --lr 0.05 --seed 0 --out "$OUT/bezier" -q >/dev/null
t $M path --data mnist --a "$A" --b "$B" --curve "chain=$OUT/chain/curve.safetensors" \
  --curve "bezier=$OUT/bezier/curve.safetensors" --points 61 --train-subset 10000 --out "$OUT/path"
