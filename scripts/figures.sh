#!/usr/bin/env bash
# Regenerate figures/ from real MNIST runs of the committed code.
#   bash scripts/figures.sh [connectivity|variational|conv|vconnect|phase|vnets|minima|simplex|sharpness|all]   (default: all)
# connectivity (~5 min on 2 cores): `modeconn run analyses/mnist-connectivity.toml --rerun` (two
#   LeNet-300-100, chain, Bezier, 61-point paths, weight matching of w2 to w1 and a random
#   permutation of w1 with their lines, the plane through w1, the chain's bend and w2).
# variational (~4 min): `modeconn run analyses/mnist-variational.toml --rerun` (sparse VD with the
#   deepbayes recipe, 20 epochs; a variance layer on fc1, 10 epochs; layer-wise α, 40 epochs;
#   the KL figure), copied into figures/.
# conv (~20 min): `modeconn run analyses/conv-connectivity.toml --profile vgg --set
#   data=fashion-mnist` (two VGG16-BN of width 1/8, chain, Bezier, weight-matched line with and
#   without the BN reset) into figures/conv, and `modeconn run analyses/mnist-repair.toml` (the
#   weight-matched line of two VGG11 without normalisation, with and without REPAIR) into
#   figures/repair.
# vconnect (~15 min): `modeconn run analyses/mnist-variational-connectivity.toml --rerun`
#   (sparse-VD and variance-network pairs: line vs ELBO and likelihood chains, before and after
#   alignment; the pruned pair with masked chains) into figures/variational_connectivity.
# phase (~15 min): `modeconn run analyses/mnist-phase-transition.toml --rerun` (layer-wise α on
#   LeNet-5 and the zero-mean ablation of each layer) into figures/phase_transition.
# vnets (~95 min): `modeconn run analyses/mnist-variance-networks.toml --rerun` (LeNet-5-BN with
#   its hidden layers, and with every layer, zero-mean, one and four samples per step; the line and
#   the chain between two hidden-layer variance nets) into figures/variance_networks, and
#   `modeconn run analyses/mnist-vgg-variational.toml --rerun` (VGG11-BN: variance networks with
#   the hidden layers and with every layer zero-mean, and layer-wise α, ~55 min) into figures/vgg_variational.
# minima (~45 min): `modeconn run analyses/digits-dimension.toml --rerun` (the dimension of the
#   minima set of digits MLPs, projections of the line, the aligned line and squared-error chains
#   onto it) and `modeconn run analyses/mnist-intrinsic-dim.toml --rerun` (d_int90 of the MLP
#   784-200-200-10 and LeNet-5) into figures/minima.
# simplex (~10 s): `modeconn run analyses/digits-simplex-width.toml --rerun` (mode-connecting
#   complexes of six connectors for digits MLPs of widths 4 to 256; the 2-simplex of width 64)
#   into figures/minima.
# sharpness (~9 min): `modeconn run analyses/digits-sharpness.toml --rerun` (the top eigenvalue
#   and the trace of the Hessian along the line, a chain, a Bezier curve and the weight-matched
#   line between two digits MLPs), and `modeconn run analyses/mnist-sharpness-ensembles.toml
#   --rerun` (~7 min: LeNet-300-100 on MNIST, the Hessian and curve ensembles along the line and a
#   chain, FGE, instability) into figures/sharpness; with runs/conv-fashion-mnist-vgg from the conv
#   part, `modeconn run analyses/fashion-vgg-sharpness.toml --rerun` (~5 min) too.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-all}"
M="${CARGO_TARGET_DIR:-target}/release/modeconn"
cargo build --release -q
bash scripts/fetch-data.sh mnist >/dev/null
mkdir -p figures
if [[ "$WHAT" == all || "$WHAT" == connectivity ]]; then
  # Always afresh (`--rerun`): results kept from an older build would not be the committed code's.
  $M run analyses/mnist-connectivity.toml --rerun
  for f in connectivity plane; do
    rm -rf "figures/$f" && cp -r "runs/mnist-connectivity/figures/$f" "figures/$f"
  done
fi
if [[ "$WHAT" == all || "$WHAT" == variational ]]; then
  # The analysis spec runs the three trainings afresh (`--rerun`: cached runs may come from an
  # older build) and renders the four figures.
  $M run analyses/mnist-variational.toml --rerun
  for f in sparse_vd variance layerwise_alpha kl; do
    rm -rf "figures/$f" && cp -r "runs/mnist-variational/figures/$f" "figures/$f"
  done
fi
if [[ "$WHAT" == all || "$WHAT" == conv ]]; then
  bash scripts/fetch-data.sh fashion-mnist >/dev/null
  $M run analyses/conv-connectivity.toml --profile vgg --set data=fashion-mnist \
    --out runs/conv-fashion-mnist-vgg --rerun
  rm -rf figures/conv && cp -r runs/conv-fashion-mnist-vgg/figures figures/conv
  $M run analyses/mnist-repair.toml --rerun
  rm -rf figures/repair && cp -r runs/mnist-repair/figures figures/repair
fi
if [[ "$WHAT" == all || "$WHAT" == vconnect ]]; then
  $M run analyses/mnist-variational-connectivity.toml --rerun
  rm -rf figures/variational_connectivity
  cp -r runs/mnist-variational-connectivity/figures figures/variational_connectivity
fi
if [[ "$WHAT" == all || "$WHAT" == phase ]]; then
  $M run analyses/mnist-phase-transition.toml --rerun
  rm -rf figures/phase_transition
  cp -r runs/mnist-phase-transition/figures/lwa figures/phase_transition
fi
if [[ "$WHAT" == all || "$WHAT" == vnets ]]; then
  $M run analyses/mnist-variance-networks.toml --rerun
  rm -rf figures/variance_networks && mkdir -p figures/variance_networks
  cp runs/mnist-variance-networks/figures/lenet5_bn_hidden/vtrain.* figures/variance_networks/
  for e in png svg; do
    cp runs/mnist-variance-networks/figures/lenet5_bn_k4/vtrain.$e figures/variance_networks/vtrain_k4.$e
    cp runs/mnist-variance-networks/figures/hidden_path/path.$e figures/variance_networks/hidden_path.$e
  done
fi
if [[ "$WHAT" == all || "$WHAT" == vnets ]]; then
  $M run analyses/mnist-vgg-variational.toml --rerun
  rm -rf figures/vgg_variational && mkdir -p figures/vgg_variational
  for e in png svg; do
    cp runs/mnist-vgg-variational/figures/variance/vtrain.$e figures/vgg_variational/variance.$e
    cp runs/mnist-vgg-variational/figures/variance_all/vtrain.$e figures/vgg_variational/variance_all.$e
    cp runs/mnist-vgg-variational/figures/lwa/vtrain.$e figures/vgg_variational/lwa.$e
  done
fi
if [[ "$WHAT" == all || "$WHAT" == minima ]]; then
  $M run analyses/digits-dimension.toml --rerun
  rm -rf figures/minima && mkdir -p figures/minima
  for e in png svg; do
    cp runs/digits-dimension/figures/project/project.$e figures/minima/
    for n in 100 200; do
      cp runs/digits-dimension/figures/spectrum_64_64_10_n$n/spectrum.$e \
        figures/minima/spectrum_64_64_10_n$n.$e
    done
  done
  bash scripts/fetch-data.sh mnist >/dev/null
  $M run analyses/mnist-intrinsic-dim.toml --rerun
  for m in mlp lenet5; do
    for e in png svg; do
      cp runs/mnist-intrinsic-dim/figures/$m/intrinsic.$e figures/minima/intrinsic_$m.$e
    done
  done
fi
if [[ "$WHAT" == all || "$WHAT" == simplex ]]; then
  $M run analyses/digits-simplex-width.toml --rerun
  mkdir -p figures/minima
  for e in png svg; do
    cp runs/digits-simplex-width/figures/simplexes.$e figures/minima/simplexes.$e
    cp runs/digits-simplex-width/simplex_w64/triangle.$e figures/minima/simplex_triangle_w64.$e
    cp runs/digits-simplex-width/simplex_w64/simplex.$e figures/minima/simplex_w64.$e
  done
fi
if [[ "$WHAT" == all || "$WHAT" == sharpness ]]; then
  $M run analyses/digits-sharpness.toml --rerun
  rm -rf figures/sharpness && mkdir -p figures/sharpness
  for e in png svg; do
    cp runs/digits-sharpness/path/hessian.$e figures/sharpness/hessian_paths.$e
    cp runs/digits-sharpness/path_aligned/hessian.$e figures/sharpness/hessian_aligned.$e
  done
  $M run analyses/mnist-sharpness-ensembles.toml --rerun
  R=runs/mnist-sharpness-ensembles
  for e in png svg; do
    cp $R/path/hessian.$e figures/sharpness/mnist_hessian_paths.$e
    cp $R/path/ensemble.$e figures/sharpness/mnist_curve_ensembles.$e
    cp $R/fge/fge.$e figures/sharpness/mnist_fge.$e
    cp $R/instability/instability.$e figures/sharpness/mnist_instability.$e
  done
  if [[ -d runs/conv-fashion-mnist-vgg ]]; then
    $M run analyses/fashion-vgg-sharpness.toml --rerun
    for e in png svg; do
      cp runs/fashion-vgg-sharpness/path/hessian.$e figures/sharpness/fashion_vgg_hessian_paths.$e
    done
  fi
fi
ls figures/*/
