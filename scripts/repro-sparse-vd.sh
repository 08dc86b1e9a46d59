#!/usr/bin/env bash
# Sparse VD on MNIST LeNet-300-100 with the deepbayes recipe (Adam 1e-3, batch 100,
# θ ~ N(0, 0.02²), log σ² = −10, rw = 0.04, 0.06, … (`--kl-warmup pytorch`, the notebook's loop),
# inputs standardised with the training set's mean/std as the notebook's torchvision
# Normalize((0.1307,), (0.3081,)), and the notebook's LinearSVDO: log α clipped to ±10 and the
# LRT variance σ² itself (`--log-alpha-clip 10 --lrt-variance sigma2`; the default is
# ±8 and α·θ²) for SEEDS, EPOCHS epochs each; prints test accuracy (mode),
# per-layer sparsity and compression of the last epoch.
#   bash scripts/repro-sparse-vd.sh [OUT_DIR=runs/sparse-vd] [EPOCHS=10] [SEEDS="0 1 2"]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/sparse-vd}"
EPOCHS="${2:-10}"
SEEDS="${3:-0 1 2}"
bash scripts/fetch-data.sh mnist >/dev/null
cargo build --release -q
for s in $SEEDS; do
  "${CARGO_TARGET_DIR:-target}/release/modeconn" vtrain --method sparse-vd --arch mlp:784-300-100-10 --data mnist \
    --pixels standard --batch-size 100 --lr 1e-3 --optimizer adam \
    --schedule multistep:50,60,70,80:0.2 --kl-warmup pytorch --init-std 0.02 \
    --init-log-sigma2 -10 --log-alpha-clip 10 --lrt-variance sigma2 --epochs "$EPOCHS" --seed "$s" -q --out "$OUT/seed$s" >/dev/null
done
python3 - "$OUT" "$SEEDS" <<'PY'
import json, sys
out, seeds = sys.argv[1], sys.argv[2].split()
print(f"{'seed':>4} {'epoch':>5} {'mode acc':>9} {'fc1':>6} {'fc2':>6} {'fc3':>6} {'compr.':>7} {'time':>7}")
accs = []
for s in seeds:
    rows = [json.loads(l) for l in open(f"{out}/seed{s}/metrics.jsonl")]
    r, t = rows[-1], sum(x["time_s"] for x in rows)
    sp = r["sparsity"]
    accs.append(r["test_mode_acc"])
    print(f"{s:>4} {r['epoch']:>5} {100 * r['test_mode_acc']:>8.2f}% {sp['fc1']:>6.3f} {sp['fc2']:>6.3f}"
          f" {sp['fc3']:>6.3f} {r['compression']:>6.1f}x {t:>6.0f}s")
print(f"mean mode accuracy {100 * sum(accs) / len(accs):.2f}%")
PY
