#!/usr/bin/env bash
# Regenerate figures/ from real MNIST runs of the committed code.
#   bash scripts/figures.sh [connectivity|variational|all]      (default: all)
# connectivity (~5 min on 2 cores): scripts/repro-mnist-connect.sh (two LeNet-300-100, chain,
#   Bezier, 61-point paths), weight matching of w2 to w1 and a random permutation of w1 with
#   their lines, the plane through w1, the chain's bend and w2 (21×21, 5k train subset).
# variational (~25 min): sparse VD (deepbayes recipe, 20 epochs), a variance layer (fc1,
#   10 epochs) and layer-wise α (40 epochs) on LeNet-300-100, and the KL figure.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-all}"
R=runs/mnist-connect
M=./target/release/modeconn
cargo build --release -q
bash scripts/fetch-data.sh mnist >/dev/null
mkdir -p figures
if [[ "$WHAT" == all || "$WHAT" == connectivity ]]; then
  [[ -f $R/path/path.csv ]] || bash scripts/repro-mnist-connect.sh "$R"
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
  V=runs/mnist-vd
  RECIPE="--arch mlp:784-300-100-10 --data mnist --batch-size 100 --lr 1e-3 --optimizer adam --schedule multistep:50,60,70,80:0.2 --kl-warmup pytorch --init-std 0.02 --init-log-sigma2 -10"
  [[ -f $V/svd20/summary.json ]] || $M vtrain --method sparse-vd $RECIPE --epochs 20 --seed 0 --out $V/svd20 -q
  [[ -f $V/var-fc1/summary.json ]] || $M vtrain --method variance --variance-layers fc1 --arch mlp:784-300-100-10 --data mnist --batch-size 100 --lr 1e-2 --epochs 10 --seed 0 --out $V/var-fc1 -q
  [[ -f $V/lwa40/summary.json ]] || $M vtrain --method layerwise-alpha --arch mlp:784-300-100-10 --data mnist --batch-size 100 --lr 1e-3 --kl-warmup theano --init-std 0.02 --init-log-alpha -10 --epochs 40 --seed 0 --out $V/lwa40 -q
  $M plot $V/svd20 --out figures/sparse_vd
  $M plot $V/var-fc1 --out figures/variance
  $M plot $V/lwa40 --out figures/layerwise_alpha
  $M plot kl --out figures/kl
fi
ls figures/*/
