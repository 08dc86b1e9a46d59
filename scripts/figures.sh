#!/usr/bin/env bash
# Regenerate figures/ from real MNIST runs of the committed code.
#   bash scripts/figures.sh [connectivity|variational|all]      (default: all)
# connectivity (~5 min on 2 cores): scripts/repro-mnist-connect.sh (two LeNet-300-100, chain,
#   Bezier, 61-point paths), weight matching of w2 to w1 and a random permutation of w1 with
#   their lines, the plane through w1, the chain's bend and w2 (21×21, 5k train subset).
# variational (~4 min): `modeconn run analyses/mnist-variational.toml --rerun` (sparse VD with the
#   deepbayes recipe, 20 epochs; a variance layer on fc1, 10 epochs; layer-wise α, 40 epochs;
#   the KL figure), copied into figures/.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-all}"
R=runs/mnist-connect
M=./target/release/modeconn
cargo build --release -q
bash scripts/fetch-data.sh mnist >/dev/null
mkdir -p figures
if [[ "$WHAT" == all || "$WHAT" == connectivity ]]; then
  # Always afresh: results kept from an older build would not be the committed code's.
  bash scripts/repro-mnist-connect.sh "$R"
  A=$R/w1/model.safetensors; B=$R/w2/model.safetensors
  $M align --model "$B" --to "$A" --method weights --out $R/align_w2 >/dev/null
  $M permute --model "$A" --seed 7 --out $R/pi_w1 >/dev/null
  $M path --data mnist --a "$A" --b $R/align_w2/model.safetensors --points 61 --train-subset 10000 --out $R/path_aligned
  $M path --data mnist --a "$A" --b $R/pi_w1/model.safetensors --points 61 --train-subset 10000 --out $R/path_permuted
  mkdir -p $R/paths
  { cat $R/path/path.csv
    tail -n +2 $R/path_aligned/path.csv | sed 's/^line,/aligned line,/'
    tail -n +2 $R/path_permuted/path.csv | sed 's/^line,/line to π(w1),/'; } > $R/paths/path.csv
  $M plot $R/paths --out figures/connectivity
  $M plane --data mnist --a "$A" --b "$B" --curve $R/chain/curve.safetensors --grid 21 --train-subset 5000 --out $R/plane
  $M plot $R/plane --out figures/plane
fi
if [[ "$WHAT" == all || "$WHAT" == variational ]]; then
  # The analysis spec runs the three trainings afresh (`--rerun`: cached runs may come from an
  # older build) and renders the four figures.
  $M run analyses/mnist-variational.toml --rerun
  for f in sparse_vd variance layerwise_alpha kl; do
    rm -rf "figures/$f" && cp -r "runs/mnist-variational/figures/$f" "figures/$f"
  done
fi
ls figures/*/
