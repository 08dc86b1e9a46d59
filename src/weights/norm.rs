//! Batch normalisation (Ioffe & Szegedy 2015) with PyTorch's semantics, per channel `c` of
//! `x: [batch, c]`:
//!
//! - train mode: `y = γ·(x − μ_B)/√(σ²_B + ε) + β` with the batch mean `μ_B` and the biased batch
//!   variance `σ²_B`; the running statistics move as `r ← (1 − m)·r + m·s` with momentum
//!   `m = 0.1` and the unbiased batch variance `σ²_B·n/(n − 1)`;
//! - eval mode: the same with the running mean and variance in place of the batch's; `ε = 1e-5`.
//!
//! The running statistics are **state** ([`crate::params::Role::is_state`]): a train-mode pass
//! ([`TrainMode`]) records the batch statistics of every normalisation layer, and the caller folds
//! them into the state, with the momentum during training or as an exact mean when the state is
//! recomputed at a new point in weight space ([`crate::eval::state::recompute`]).

use std::cell::RefCell;

use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;

use super::Weights;
use crate::params::{ParamSet, host_vec};

/// `ε` of batch normalisation.
pub const BN_EPS: f32 = 1e-5;
/// PyTorch's default momentum of the running statistics.
pub const BN_MOMENTUM: f64 = 0.1;

/// Name of a normalisation layer's running mean.
pub fn running_mean_name(layer: &str) -> String {
    format!("{layer}.running_mean")
}

/// Name of a normalisation layer's running variance.
pub fn running_var_name(layer: &str) -> String {
    format!("{layer}.running_var")
}

/// Eval-mode batch normalisation of `x: [batch, c]` with `γ, β, mean, var: [c]`.
pub fn batch_norm_eval(
    x: Tensor<2>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
) -> Tensor<2> {
    let c = gamma.dims()[0];
    let scale = gamma / (var + BN_EPS).sqrt();
    (x - mean.reshape([1, c])) * scale.reshape([1, c]) + beta.reshape([1, c])
}

/// Train-mode batch normalisation of `x: [batch, c]`: the output, and the batch mean and
/// biased batch variance `[c]` (differentiable; callers detach them for the state).
pub fn batch_norm_train(
    x: Tensor<2>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
) -> (Tensor<2>, Tensor<1>, Tensor<1>) {
    let c = gamma.dims()[0];
    let mean = x.clone().mean_dim(0);
    let centred = x - mean.clone();
    let var = centred.clone().powi_scalar(2).mean_dim(0);
    let y = centred / (var.clone() + BN_EPS).sqrt() * gamma.reshape([1, c]) + beta.reshape([1, c]);
    (y, mean.reshape([c]), var.reshape([c]))
}

/// Eval-mode batch normalisation of a convolution's output `x: [batch, c, h, w]` per channel.
pub fn batch_norm_eval_4d(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
) -> Tensor<4> {
    let c = gamma.dims()[0];
    let scale = gamma / (var + BN_EPS).sqrt();
    (x - mean.reshape([1, c, 1, 1])) * scale.reshape([1, c, 1, 1]) + beta.reshape([1, c, 1, 1])
}

/// Train-mode batch normalisation of `x: [batch, c, h, w]` over the batch and the positions:
/// the output and the per-channel mean and biased variance `[c]`.
pub fn batch_norm_train_4d(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let c = gamma.dims()[0];
    let mean = x.clone().mean_dim(0).mean_dim(2).mean_dim(3);
    let centred = x - mean.clone();
    let var = centred
        .clone()
        .powi_scalar(2)
        .mean_dim(0)
        .mean_dim(2)
        .mean_dim(3);
    let y = centred / (var.clone() + BN_EPS).sqrt() * gamma.reshape([1, c, 1, 1])
        + beta.reshape([1, c, 1, 1]);
    (y, mean.reshape([c]), var.reshape([c]))
}

/// `[batch, c, h, w]` as `[batch·h·w, c]` (every spatial position a sample of its channel).
pub fn channels_last(x: Tensor<4>) -> Tensor<2> {
    let [b, c, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([b * h * w, c])
}

/// The inverse of [`channels_last`] for a batch of `b` maps of `h × w`.
pub fn channels_first(x: Tensor<2>, b: usize, h: usize, w: usize) -> Tensor<4> {
    let c = x.dims()[1];
    x.reshape([b, h, w, c]).permute([0, 3, 1, 2])
}

/// One normalisation layer's statistics of one train-mode batch.
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// Layer name (`bn1`, ...).
    pub layer: String,
    /// Number of samples per channel in the batch (batch × spatial positions).
    pub n: usize,
    /// Batch mean per channel.
    pub mean: Vec<f32>,
    /// Biased batch variance per channel.
    pub var: Vec<f32>,
}

impl BatchStats {
    /// The unbiased variance `σ²_B·n/(n − 1)` that PyTorch folds into the running variance.
    pub fn unbiased_var(&self) -> Vec<f32> {
        let f = if self.n > 1 {
            self.n as f32 / (self.n - 1) as f32
        } else {
            1.0
        };
        self.var.iter().map(|v| v * f).collect()
    }
}

/// A parameter set computing normalisation layers in train mode (batch statistics), recording
/// each layer's statistics for the caller; every other layer as the set itself.
pub struct TrainMode<'a> {
    params: &'a ParamSet,
    stats: RefCell<Vec<BatchStats>>,
}

impl<'a> TrainMode<'a> {
    /// Train-mode view of `params`.
    pub fn new(params: &'a ParamSet) -> Self {
        Self {
            params,
            stats: RefCell::new(Vec::new()),
        }
    }

    fn record(&self, layer: &str, n: usize, mean: Tensor<1>, var: Tensor<1>) {
        self.stats.borrow_mut().push(BatchStats {
            layer: layer.to_string(),
            n,
            mean: host_vec(&mean.detach()),
            var: host_vec(&var.detach()),
        });
    }

    /// The statistics recorded so far, in forward order.
    pub fn into_stats(self) -> Vec<BatchStats> {
        self.stats.into_inner()
    }
}

impl Weights for TrainMode<'_> {
    fn dense(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        self.params.dense(layer, x)
    }

    fn dense_relu(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        self.params.dense_relu(layer, x)
    }

    fn conv2d(&self, layer: &str, x: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
        self.params.conv2d(layer, x, options)
    }

    fn batch_norm(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        let n = x.dims()[0];
        let (y, mean, var) = batch_norm_train(
            x,
            self.params.get(&super::weight_name(layer)),
            self.params.get(&super::bias_name(layer)),
        );
        self.record(layer, n, mean, var);
        y
    }

    fn batch_norm2d(&self, layer: &str, x: Tensor<4>) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let (y, mean, var) = batch_norm_train_4d(
            x,
            self.params.get(&super::weight_name(layer)),
            self.params.get(&super::bias_name(layer)),
        );
        self.record(layer, b * h * w, mean, var);
        y
    }
}

/// Folds one batch's statistics into the state of `params` with momentum `m`:
/// `r ← (1 − m)·r + m·s` (the unbiased variance for the running variance); returns the new set.
pub fn fold_stats(params: &ParamSet, stats: &[BatchStats], m: f64) -> ParamSet {
    if stats.is_empty() {
        return params.clone();
    }
    let layout = params.layout().clone();
    let mut values = params.to_vecs();
    let m = m as f32;
    for s in stats {
        for (name, batch) in [
            (running_mean_name(&s.layer), s.mean.clone()),
            (running_var_name(&s.layer), s.unbiased_var()),
        ] {
            let i = layout
                .index_of(&name)
                .expect("normalisation layers have running statistics");
            for (r, b) in values[i].iter_mut().zip(batch) {
                *r = (1.0 - m) * *r + m * b;
            }
        }
    }
    let device = params.tensors()[0].device();
    ParamSet::from_vecs(layout, values, &device).expect("same layout")
}
