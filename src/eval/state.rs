//! Recomputing a network's state (batch-normalisation running statistics) from data, wherever a
//! new point in weight space is evaluated (a curve point, a grid point of a plane, an
//! interpolated or permuted network): interpolated statistics are not the statistics of the
//! interpolated network (Garipov et al. 2018, §A; Jordan et al. 2023, "BN reset").
//!
//! One train-mode pass over `data` in order, in batches of [`STATE_BATCH`]: the state becomes
//! the exact mean of the batch statistics weighted by batch size, `r = Σ_k n_k·s_k / Σ_k n_k`
//! (PyTorch's momentum `n_k/(n_seen + n_k)` after a reset), the unbiased batch variance for the
//! running variance.

use burn::tensor::Device;

use super::batch_tensors;
use crate::arch::Arch;
use crate::data::Dataset;
use crate::params::ParamSet;
use crate::weights::norm::{BatchStats, TrainMode, fold_stats};

/// Batch size of the recomputing pass (the training batch size of the recipes).
pub const STATE_BATCH: usize = 128;

/// What the results record of a recomputation on (at most `max_batches` batches of) `data`
/// for a network of `layout`: the samples and batches of the pass, `None` without state.
pub fn record(
    layout: &crate::params::Layout,
    data: &Dataset,
    max_batches: Option<usize>,
) -> Option<serde_json::Value> {
    layout.has_state().then(|| {
        let batches = data
            .len()
            .div_ceil(STATE_BATCH)
            .min(max_batches.unwrap_or(usize::MAX));
        serde_json::json!({
            "samples": data.len().min(batches * STATE_BATCH),
            "batches": batches,
            "data": "train",
        })
    })
}

/// `params` with its state recomputed on the first `max_batches` batches of `data` (all when
/// `None`); a network without state is returned as it is. `params` carry no autodiff.
pub fn recompute(
    arch: &Arch,
    params: &ParamSet,
    data: &Dataset,
    max_batches: Option<usize>,
    device: &Device,
) -> ParamSet {
    if !params.layout().has_state() {
        return params.clone();
    }
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut seen = 0usize;
    let mut out = params.clone();
    for chunk in idx
        .chunks(STATE_BATCH)
        .take(max_batches.unwrap_or(usize::MAX))
    {
        let (x, _) = batch_tensors(data, chunk, device);
        let tm = TrainMode::new(params);
        arch.forward(&tm, x);
        let stats: Vec<BatchStats> = tm.into_stats();
        let b = chunk.len();
        // After a reset (the first batch replaces the state), momentum b/(seen + b).
        out = fold_stats(&out, &stats, b as f64 / (seen + b) as f64);
        seen += b;
    }
    out
}
