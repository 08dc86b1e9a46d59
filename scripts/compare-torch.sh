#!/usr/bin/env bash
# Side-by-side speed of modeconn (burn flex) and PyTorch CPU on the same loops, 2 threads each,
# run alternately ROUNDS times and compared by medians:
#   - train steps at batch 128 (MLP 784-300-100-10, LeNet-5, and on 3x32x32 inputs with
#     BatchNorm in train mode vgg16:w=0.25 and resnet20) and eval at batch 1000;
#   - our variational (sparse VD; variational dropout with one alpha per layer; Gaussian dropout
#     with a fixed alpha, the bare local reparameterisation) and curve train steps against our
#     plain step (cost ratios);
#   - our 61-point path and 21x21 plane evaluation (seconds, GFLOP/s against the GEMM peak
#     measured by the bench: one 2048^3 matmul through our backend);
#   - with `e2e` as third argument: the end-to-end MNIST connectivity experiment,
#     scripts/e2e-connect.sh against scripts/torch_connect_e2e.py (once each, several minutes).
# Ends with one line per target, `name ratio=R`: ours/PyTorch throughput for the *_train/*_eval
# lines and e2e_connect (PyTorch time / our time), our step-time ratios for the *_cost lines.
#   bash scripts/compare-torch.sh [ROUNDS=5] [SECONDS=3] [e2e]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
SECS="${2:-3}"
E2E="${3:-}"
bash scripts/setup-torch.sh >/dev/null
cargo build --release --benches -q
BENCH=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/throughput-* | grep -v '\.d$' | head -1)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  RAYON_NUM_THREADS=2 "$BENCH" --seconds "$SECS" --json "$TMP/ours-$r.json" >/dev/null
  .venv-torch/bin/python scripts/torch_reference.py --threads 2 --min-time "$SECS" \
    --json "$TMP/torch-$r.json" >/dev/null
done
if [ "$E2E" = "e2e" ]; then
  echo "end-to-end: modeconn" >&2
  RAYON_NUM_THREADS=2 bash scripts/e2e-connect.sh "$TMP/e2e" | tee "$TMP/e2e-ours.txt" >&2
  echo "end-to-end: PyTorch" >&2
  .venv-torch/bin/python scripts/torch_connect_e2e.py --threads 2 --json "$TMP/e2e-torch.json" >&2
fi
python3 - "$TMP" "$ROUNDS" <<'PY'
import json, os, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def load(kind):
    out = {}
    for r in range(1, rounds + 1):
        for res in json.load(open(f"{tmp}/{kind}-{r}.json"))["results"]:
            out.setdefault(res["name"], []).append(res)
    return out
ours, torch = load("ours"), load("torch")
med = lambda rs, k: statistics.median(r[k] for r in rs)
lines = []
print(f"{'case':<16} {'ours samples/s':>15} {'torch samples/s':>16} {'ratio':>7}   (median of {rounds})")
for name in ["mlp_train", "mlp_eval", "lenet5_train", "lenet5_eval",
             "vgg16bn_train", "vgg16bn_eval", "resnet20_train", "resnet20_eval"]:
    if name in ours and name in torch:
        o, t = med(ours[name], "samples_per_s"), med(torch[name], "samples_per_s")
        print(f"{name:<16} {o:>15.0f} {t:>16.0f} {o / t:>7.2f}")
        lines.append(f"{name} ratio={o / t:.2f}")
for name in ["mlp_curve_train", "mlp_vd_train", "mlp_vdl_train", "mlp_gd_train"]:
    if name in ours:
        print(f"{name:<16} {med(ours[name], 'samples_per_s'):>15.0f} {'-':>16}")
for name in ["curve_step_cost", "vd_step_cost", "vd_layerwise_step_cost", "gd_step_cost"]:
    if name in ours:
        r = med(ours[name], "cost_ratio")
        print(f"{name:<16} ours: step time / plain MLP step time = {r:.2f}")
        lines.append(f"{name} ratio={r:.2f}")
if "gemm_peak" in ours:
    peak = med(ours["gemm_peak"], "gflops")
    print(f"{'gemm_peak':<16} {peak:.0f} GFLOP/s (2048^3 matmul through our backend; nominal 2-core Zen3 peak 157)")
for name in ["mlp_path", "mlp_plane"]:
    if name in ours:
        s = med(ours[name], "seconds")
        ex, full = ours[name][0]["gflop_executed"], ours[name][0]["gflop_full"]
        print(f"{name:<16} {s:.2f} s, executed {ex / s:.0f} GFLOP/s ({100 * ex / s / peak:.0f}% of the GEMM peak),"
              f" full-forward equivalent {full / s:.0f} GFLOP/s")
        lines.append(f"{name} seconds={s:.2f} gflops={ex / s:.0f} peak_fraction={ex / s / peak:.2f}")
if os.path.exists(f"{tmp}/e2e-torch.json"):
    t = json.load(open(f"{tmp}/e2e-torch.json"))["total"]
    o = float([l for l in open(f"{tmp}/e2e-ours.txt") if l.startswith("total")][0].split()[1])
    print(f"{'e2e_connect':<16} ours {o:.1f} s, PyTorch {t:.1f} s")
    lines.append(f"e2e_connect ratio={t / o:.2f}")
print("\n".join(lines))
PY
