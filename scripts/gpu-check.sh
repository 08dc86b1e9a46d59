#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in one short run (under 5 minutes once the build cache is
# warm): the device subset of the tests (tests/device.rs: train, eval and a variational model on
# the GPU against the CPU), then the train (batch 128) and eval (batch 1000) throughput of the
# MLP, LeNet-5 and VGG16-BN (w = 1/4) on the GPU, beside PyTorch on the same GPU when the
# PyTorch of .venv-torch/ sees one.
#
#   bash scripts/gpu-check.sh [cuda|wgpu]      (default cuda; wgpu: Vulkan/Metal through wgpu)
# Env: SECONDS_PER_CASE (default 2), TORCH_PYTHON (default .venv-torch/bin/python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEV="${1:-cuda}"
SECS="${SECONDS_PER_CASE:-2}"
PY="${TORCH_PYTHON:-$ROOT/.venv-torch/bin/python}"
CASES="mlp_train,mlp_eval,lenet5_train,lenet5_eval,vgg16bn_train,vgg16bn_eval"
T0=$(date +%s)
say() { printf 'gpu-check [%3ss]: %s\n' "$(($(date +%s) - T0))" "$*"; }

cargo build --release --features "$DEV" -q
cargo test --release --features "$DEV" --test device --no-run -q 2>/dev/null
say "built with --features $DEV"
MODECONN_TEST_DEVICE="$DEV" cargo test --release --features "$DEV" --test device -q -- --test-threads 1
say "device tests passed on $DEV"

cargo bench --features "$DEV" --bench throughput -- --device "$DEV" --only "$CASES" \
    --seconds "$SECS" --json "$ROOT/target/gpu-check-modeconn.json"
say "modeconn benchmark done"
if [ "$DEV" = cuda ] && "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    "$PY" scripts/torch_reference.py --device cuda --min-time "$SECS" --warmup 5 \
        $(printf -- '--only %s ' ${CASES//,/ })
    say "PyTorch benchmark done"
else
    say "PyTorch on $DEV not run: the PyTorch of $PY sees no CUDA device"
fi
