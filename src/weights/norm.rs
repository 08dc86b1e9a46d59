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

use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

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

/// Train-mode batch normalisation of `x: [batch, c]` composed of burn's ops (the portable form;
/// [`TrainMode`] runs the CPU backend's host op, [`crate::backend::batch_norm_train`]): the
/// output, and the batch mean and biased batch variance `[c]` (differentiable; callers detach
/// them for the state).
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

/// Layer normalisation (Ba et al. 2016) of `x: [batch, c]` over each sample's `c` features:
/// `y = γ·(x − μ_x)/√(σ²_x + ε) + β` with the sample's mean and biased variance; no state.
pub fn layer_norm(x: Tensor<2>, gamma: Tensor<1>, beta: Tensor<1>) -> Tensor<2> {
    let c = gamma.dims()[0];
    let mean = x.clone().mean_dim(1);
    let centred = x - mean;
    let var = centred.clone().powi_scalar(2).mean_dim(1);
    centred / (var + BN_EPS).sqrt() * gamma.reshape([1, c]) + beta.reshape([1, c])
}

/// Eval-mode batch normalisation of a convolution's output `x: [batch, c, h, w]` per channel.
pub fn batch_norm_eval_4d(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
) -> Tensor<4> {
    let scale = gamma / (var + BN_EPS).sqrt();
    crate::backend::channel_norm(x, mean, scale, beta)
}

/// Train-mode batch normalisation of `x: [batch, c, h, w]` over the batch and the positions,
/// composed of burn's ops (the portable form, as [`batch_norm_train`]): the output and the
/// per-channel mean and biased variance `[c]`.
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

/// A weights source (a parameter set, a variational source) computing normalisation layers in
/// train mode (batch statistics), recording each layer's statistics for the caller; every other
/// layer as the source itself.
pub struct TrainMode<'a, W: Weights + ?Sized = ParamSet> {
    params: &'a W,
    stats: RefCell<Vec<BatchStats>>,
}

impl<'a, W: Weights + ?Sized> TrainMode<'a, W> {
    /// Train-mode view of `params`.
    pub fn new(params: &'a W) -> Self {
        Self {
            params,
            stats: RefCell::new(Vec::new()),
        }
    }

    fn record(&self, layer: &str, n: usize, mean: Vec<f32>, var: Vec<f32>) {
        self.stats.borrow_mut().push(BatchStats {
            layer: layer.to_string(),
            n,
            mean,
            var,
        });
    }

    /// `γ`, `β` of a normalisation layer.
    fn affine(&self, layer: &str) -> (Tensor<1>, Tensor<1>) {
        (
            self.params.param(&super::weight_name(layer)),
            self.params.param(&super::bias_name(layer)),
        )
    }

    /// The statistics recorded so far, in forward order.
    pub fn into_stats(self) -> Vec<BatchStats> {
        self.stats.into_inner()
    }
}

impl<W: Weights + ?Sized> Weights for TrainMode<'_, W> {
    fn param(&self, name: &str) -> Tensor<1> {
        self.params.param(name)
    }

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
        let (g, b) = self.affine(layer);
        let (y, mean, var) = crate::backend::batch_norm_train(x.clone(), g.clone(), b.clone())
            .unwrap_or_else(|| {
                let (y, mean, var) = batch_norm_train(x, g, b);
                (y, host_vec(&mean.detach()), host_vec(&var.detach()))
            });
        self.record(layer, n, mean, var);
        y
    }

    fn layer_norm(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        self.params.layer_norm(layer, x)
    }

    fn batch_norm2d(&self, layer: &str, x: Tensor<4>) -> Tensor<4> {
        let [n, _, h, w] = x.dims();
        let (g, b) = self.affine(layer);
        let (y, mean, var) = crate::backend::batch_norm_train(x.clone(), g.clone(), b.clone())
            .unwrap_or_else(|| {
                let (y, mean, var) = batch_norm_train_4d(x, g, b);
                (y, host_vec(&mean.detach()), host_vec(&var.detach()))
            });
        self.record(layer, n * h * w, mean, var);
        y
    }
}

/// Folds one batch's statistics into the state of `params` with momentum `m`:
/// `r ← (1 − m)·r + m·s` (the unbiased variance for the running variance); returns the new set,
/// which shares every other tensor with `params`.
pub fn fold_stats(params: &ParamSet, stats: &[BatchStats], m: f64) -> ParamSet {
    let layout = params.layout().clone();
    let mut tensors = params.tensors().to_vec();
    let m = m as f32;
    for s in stats {
        for (name, batch) in [
            (running_mean_name(&s.layer), s.mean.clone()),
            (running_var_name(&s.layer), s.unbiased_var()),
        ] {
            let i = layout
                .index_of(&name)
                .expect("normalisation layers have running statistics");
            let r: Vec<f32> = host_vec(&tensors[i])
                .iter()
                .zip(batch)
                .map(|(r, b)| (1.0 - m) * r + m * b)
                .collect();
            let n = r.len();
            tensors[i] = Tensor::from_data(TensorData::new(r, [n]), &tensors[i].device());
        }
    }
    ParamSet::from_tensors(layout, tensors).expect("same layout")
}

/// Folds every batch normalisation of a network in eval mode into the layer before it
/// (`fc_i` or `conv_i` before `bn_i`): per output channel with `s = γ/√(σ² + ε)`,
/// `W' = s·W` and `b' = β + s·(b − μ)` (`b = 0` for a layer without bias). Returns the plain
/// architecture (`:norm=none`) and its parameters, which compute the same eval-mode logits;
/// `None` for an architecture without a normalisation-free form.
pub fn fuse(arch: &crate::arch::Arch, params: &ParamSet) -> Option<(crate::arch::Arch, ParamSet)> {
    use crate::arch::{Arch, Norm};
    // The plain architecture, and the prefix of the layers that a normalisation follows.
    let (plain, prefix) = match arch {
        Arch::Mlp {
            widths,
            norm: Norm::Bn,
        } => (
            Arch::Mlp {
                widths: widths.clone(),
                norm: Norm::None,
            },
            "fc",
        ),
        Arch::Vgg(v) if v.norm == Norm::Bn => (
            Arch::Vgg(crate::arch::vgg::Vgg {
                norm: Norm::None,
                ..v.clone()
            }),
            "conv",
        ),
        _ => return None,
    };
    let layout = plain.layout();
    let src = params.layout();
    let vals = params.to_vecs();
    let get = |name: &str| src.index_of(name).ok().map(|i| vals[i].clone());
    let mut out = Vec::with_capacity(layout.len());
    for e in layout.entries() {
        let layer = e
            .name
            .rsplit_once('.')
            .map(|(l, _)| l.to_string())
            .unwrap_or_default();
        let bn = layer
            .strip_prefix(prefix)
            .map(|i| format!("bn{i}"))
            .unwrap_or_default();
        let stats = (|| {
            Some((
                get(&format!("{bn}.weight"))?,
                get(&format!("{bn}.bias"))?,
                get(&running_mean_name(&bn))?,
                get(&running_var_name(&bn))?,
            ))
        })();
        let v = match (stats, e.name.ends_with(".weight")) {
            (None, _) => get(&e.name).expect("the plain layout's tensors exist in the BN one"),
            (Some((g, _, _, var)), true) => {
                let w = get(&e.name).expect("the layer's weight");
                let per = w.len() / g.len();
                w.iter()
                    .enumerate()
                    .map(|(k, x)| x * g[k / per] / (var[k / per] + BN_EPS).sqrt())
                    .collect()
            }
            (Some((g, beta, mean, var)), false) => {
                let b = get(&e.name).unwrap_or_else(|| vec![0.0; g.len()]);
                (0..g.len())
                    .map(|c| beta[c] + g[c] / (var[c] + BN_EPS).sqrt() * (b[c] - mean[c]))
                    .collect()
            }
        };
        out.push(v);
    }
    let device = params.tensors()[0].device();
    let fused = ParamSet::from_vecs(layout, out, &device).expect("plain layout");
    Some((plain, fused))
}
