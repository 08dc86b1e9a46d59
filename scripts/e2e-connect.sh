#!/usr/bin/env bash
# The end-to-end MNIST connectivity experiment with modeconn, stage by stage the same as
# scripts/torch_connect_e2e.py: two MLP 784-300-100-10 endpoints (SGD, 20 epochs), a one-bend
# chain and a Bezier curve (20 epochs each), weight matching of w2 to w1, and 61-point paths for
# the line, both curves and the matched line on the 10k test set and a 10k training subset.
# Prints each stage's time and the total (the binary is built first, and not timed).
#   bash scripts/e2e-connect.sh [OUT_DIR=runs/e2e-connect] [EPOCHS=20]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/e2e-connect}"
EPOCHS="${2:-20}"
bash scripts/fetch-data.sh mnist >/dev/null
cargo build --release -q
M="${CARGO_TARGET_DIR:-target}/release/modeconn"
rm -rf "$OUT"
mkdir -p "$OUT"
TOTAL=0
t() {
  local name=$1; shift
  local s e
  s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N)
  local d; d=$(echo "$e - $s" | bc)
  TOTAL=$(echo "$TOTAL + $d" | bc)
  printf '%-14s %7.1f s\n' "$name" "$d"
}
COMMON=(--data mnist --arch mlp:784-300-100-10 --epochs "$EPOCHS" --lr 0.05 -q)
t train_w1 $M train "${COMMON[@]}" --seed 1 --out "$OUT/w1"
t train_w2 $M train "${COMMON[@]}" --seed 2 --out "$OUT/w2"
A="$OUT/w1/model.safetensors"; B="$OUT/w2/model.safetensors"
t connect_chain $M connect --data mnist --a "$A" --b "$B" --curve polychain --epochs "$EPOCHS" --lr 0.05 -q --out "$OUT/chain"
t connect_bezier $M connect --data mnist --a "$A" --b "$B" --curve bezier --epochs "$EPOCHS" --lr 0.05 -q --out "$OUT/bezier"
t align $M align --model "$B" --to "$A" --method weights --out "$OUT/align"
t paths $M path --data mnist --a "$A" --b "$B" --curve "chain=$OUT/chain/curve.safetensors" \
  --curve "bezier=$OUT/bezier/curve.safetensors" --points 61 --train-subset 10000 --out "$OUT/path"
t path_matched $M path --data mnist --a "$A" --b "$OUT/align/model.safetensors" --points 61 \
  --train-subset 10000 --out "$OUT/path_matched"
printf '%-14s %7.1f s\n' total "$TOTAL"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
s = json.load(open(f"{out}/path/summary.json"))
m = json.load(open(f"{out}/path_matched/summary.json"))
def mx(p): return 100 * p["test_err"]["max"]
rows = {p: mx(v) for p, v in s.items()}
rows["matched_line"] = mx(m["line"])
print("max test error along: " + ", ".join(f"{k} {v:.2f}%" for k, v in rows.items()))
PY
