#!/usr/bin/env bash
# Side-by-side throughput of modeconn (burn flex) and PyTorch CPU on the same loops (MLP
# 784-300-100-10 and LeNet-5; train step at batch 128, eval at batch 1000; 2 threads). The two are
# run alternately ROUNDS times and the medians compared; ends with one line per case:
#   mlp_train ratio=1.62        (ours / PyTorch throughput)
#   bash scripts/compare-torch.sh [ROUNDS=5] [SECONDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
SECS="${2:-3}"
bash scripts/setup-torch.sh >/dev/null
cargo build --release --benches -q
BENCH=$(ls -t target/release/deps/throughput-* | grep -v '\.d$' | head -1)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  RAYON_NUM_THREADS=2 "$BENCH" --seconds "$SECS" --json "$TMP/ours-$r.json" >/dev/null
  .venv-torch/bin/python scripts/torch_reference.py --threads 2 --min-time "$SECS" \
    --json "$TMP/torch-$r.json" >/dev/null
done
python3 - "$TMP" "$ROUNDS" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def load(kind):
    out = {}
    for r in range(1, rounds + 1):
        for res in json.load(open(f"{tmp}/{kind}-{r}.json"))["results"]:
            out.setdefault(res["name"], []).append(res["samples_per_s"])
    return {k: statistics.median(v) for k, v in out.items()}
ours, torch = load("ours"), load("torch")
print(f"{'case':<14} {'ours samples/s':>15} {'torch samples/s':>16} {'ratio':>7}   (median of {rounds})")
lines = []
for name in ["mlp_train", "mlp_eval", "lenet5_train", "lenet5_eval"]:
    if name in ours and name in torch:
        ratio = ours[name] / torch[name]
        print(f"{name:<14} {ours[name]:>15.0f} {torch[name]:>16.0f} {ratio:>7.2f}")
        lines.append(f"{name} ratio={ratio:.2f}")
print("\n".join(lines))
PY
