//! Recomputing a network's state (batch-normalisation running statistics) from data, wherever a
//! new point in weight space is evaluated (a curve point, a grid point of a plane, an
//! interpolated or permuted network): interpolated statistics are not the statistics of the
//! interpolated network (Garipov et al. 2018, §A; Jordan et al. 2023, "BN reset").
//!
//! One train-mode pass over the samples a [`StateSample`] picks, in batches of [`STATE_BATCH`]:
//! the state becomes the exact mean of the batch statistics weighted by batch size,
//! `r = Σ_k n_k·s_k / Σ_k n_k` (PyTorch's momentum `n_k/(n_seen + n_k)` after a reset), the
//! unbiased batch variance for the running variance.

use burn::tensor::Device;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::batch_tensors;
use crate::arch::Arch;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::params::ParamSet;
use crate::weights::norm::{BatchStats, TrainMode, fold_stats};

/// Batch size of the recomputing pass (the training batch size of the recipes).
pub const STATE_BATCH: usize = 128;

/// Which training samples a statistics pass reads: all of them, or `batches` batches of
/// [`STATE_BATCH`] samples drawn without replacement by a ChaCha8 shuffle seeded `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StateSample {
    /// Batches of the pass (`None`: the whole dataset, in order).
    pub batches: Option<usize>,
    /// Seed of the subset drawn when `batches` bounds the pass.
    pub seed: u64,
}

impl StateSample {
    /// The whole dataset.
    pub const ALL: StateSample = StateSample {
        batches: None,
        seed: 0,
    };

    /// `--bn-batches 0` is a one-line error.
    pub fn validate(&self) -> Result<()> {
        match self.batches {
            Some(0) => Err(Error::Config("--bn-batches must be at least 1".into())),
            _ => Ok(()),
        }
    }

    /// Indices of the samples read from a dataset of `n`, in the order they are batched: `0..n`
    /// when the bound covers the dataset, else the first `batches·STATE_BATCH` of a seeded
    /// shuffle of `0..n`.
    pub fn indices(&self, n: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        match self.batches {
            Some(b) if b.saturating_mul(STATE_BATCH) < n => {
                idx.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed));
                idx.truncate(b * STATE_BATCH);
                idx
            }
            _ => idx,
        }
    }

    /// What the results record of a pass over `data`: samples, batches, and how they were
    /// drawn.
    pub fn describe(&self, data: &Dataset) -> serde_json::Value {
        let samples = self.indices(data.len()).len();
        let subset = samples < data.len();
        serde_json::json!({
            "samples": samples,
            "batches": samples.div_ceil(STATE_BATCH),
            "data": "train",
            "subset": if subset { "seeded" } else { "all" },
            "seed": subset.then_some(self.seed),
        })
    }
}

/// What the results record of a recomputation on `data` for a network of `layout`: the
/// samples and batches of the pass, `None` without state.
pub fn record(
    layout: &crate::params::Layout,
    data: &Dataset,
    sample: &StateSample,
) -> Option<serde_json::Value> {
    layout.has_state().then(|| sample.describe(data))
}

/// `params` with its state recomputed on the samples of `data` that `sample` picks; a network
/// without state is returned as it is. `params` carry no autodiff.
pub fn recompute(
    arch: &Arch,
    params: &ParamSet,
    data: &Dataset,
    sample: &StateSample,
    device: &Device,
) -> ParamSet {
    fold_batches(params, data, sample, device, |_, x| {
        let tm = TrainMode::new(params);
        arch.forward(&tm, x);
        tm.into_stats()
    })
}

/// [`recompute`] for either kind of model: a variational model's normalisation layers see the
/// outputs of sampled weights (the local reparameterisation, noise from a ChaCha8 stream seeded
/// with the sample's seed, one stream per batch), as in its training; its state is stored under
/// `mu/`.
pub fn recompute_model(
    model: &crate::model::Model,
    params: &ParamSet,
    data: &Dataset,
    sample: &StateSample,
    device: &Device,
) -> ParamSet {
    use rand::SeedableRng;
    let m = match model {
        crate::model::Model::Plain(arch) => return recompute(arch, params, data, sample, device),
        crate::model::Model::Variational(m) => m,
    };
    fold_batches(params, data, sample, device, |bi, x| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(sample.seed);
        rng.set_stream(bi as u64);
        let w = crate::variational::weights::VarWeights::new(m, params, rng);
        let tm = TrainMode::new(&w);
        m.arch.forward(&tm, x);
        tm.into_stats()
            .into_iter()
            .map(|s| BatchStats {
                layer: crate::variational::mu_name(&s.layer),
                ..s
            })
            .collect()
    })
}

/// The state pass shared by [`recompute`] and [`recompute_model`]: `stats(batch index, x)` gives
/// one train-mode batch's statistics, folded into `params`' state after a reset (the first batch
/// replaces it, then momentum b/(seen + b): the exact mean over the samples).
fn fold_batches(
    params: &ParamSet,
    data: &Dataset,
    sample: &StateSample,
    device: &Device,
    stats: impl Fn(usize, burn::tensor::Tensor<2>) -> Vec<BatchStats>,
) -> ParamSet {
    if !params.layout().has_state() {
        return params.clone();
    }
    let mut seen = 0usize;
    let mut out = params.clone();
    for (bi, chunk) in sample.indices(data.len()).chunks(STATE_BATCH).enumerate() {
        let (x, _) = batch_tensors(data, chunk, device);
        let b = chunk.len();
        out = fold_stats(&out, &stats(bi, x), b as f64 / (seen + b) as f64);
        seen += b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_sample_is_a_seeded_subset_without_repeats() {
        let all = StateSample::ALL.indices(1000);
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        // A bound that covers the data reads it all, in order.
        let covers = StateSample {
            batches: Some(8),
            seed: 3,
        };
        assert_eq!(covers.indices(1000), all);
        let s = StateSample {
            batches: Some(2),
            seed: 3,
        };
        let a = s.indices(1000);
        assert_eq!(a.len(), 2 * STATE_BATCH);
        assert_eq!(a, s.indices(1000), "same seed, same subset");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), a.len(), "drawn without replacement");
        assert!(a.iter().all(|&i| i < 1000));
        assert_ne!(a, (0..256).collect::<Vec<_>>(), "not the first batches");
        let other = StateSample { seed: 4, ..s };
        assert_ne!(a, other.indices(1000), "another seed, another subset");
        assert!(
            StateSample {
                batches: Some(0),
                seed: 0
            }
            .validate()
            .is_err()
        );
    }
}
