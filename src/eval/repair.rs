//! REPAIR (Jordan, Sedghi, Saukh, Entezari, Neyshabur, ICLR 2023, "REPAIR: REnormalizing
//! Permuted Activations for Interpolation Repair"): interpolating two aligned networks without
//! normalisation collapses the variance of hidden units layer by layer
//! (`Var(½X + ½Y) = σ²(1 + ρ)/2`). REPAIR measures every hidden channel's pre-activation mean
//! and standard deviation in both endpoints, `(μ₀, σ₀)` and `(μ₁, σ₁)`, and rescales each
//! channel of the interpolated network so that its own statistics `(μ̂, σ̂)` become
//! `μ_t = (1 − t)μ₀ + tμ₁`, `σ_t = (1 − t)σ₀ + tσ₁` (the standard deviation is interpolated,
//! not the variance), fusing the affine correction into the layer:
//! `W'_c = (σ_t/σ̂)·W_c`, `b'_c = (σ_t/σ̂)·(b_c − μ̂) + μ_t`.
//!
//! Layers are corrected in forward order, each measured after the layers before it are
//! corrected, so every channel meets its target exactly on the statistics data. For a member
//! `Σ_j c_j·θ_j` of a linear family the targets are `Σ_j c_j·(μ_j, σ_j)` (REPAIR's for the
//! line). The corrected layers are every dense and convolutional layer except the last (the
//! logits). Networks with normalisation layers use the BN reset ([`super::state`]) instead.

use std::cell::RefCell;

use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use super::batch_tensors;
use super::state::{STATE_BATCH, StateSample};
use crate::arch::Arch;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::params::{ParamSet, Role};
use crate::weights::{Weights, bias_name, weight_name};

/// A channel whose standard deviation on the statistics data is below this is constant there:
/// REPAIR moves its mean and leaves its scale.
pub const MIN_STD: f64 = 1e-6;

/// Pre-activation statistics of one layer's output channels.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    /// Layer name (`fc1`, `conv3`, ...).
    pub layer: String,
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel standard deviation (population variance).
    pub std: Vec<f64>,
}

/// Sums of a layer's outputs per channel: `Σy`, `Σy²` and the count.
struct Sums {
    layer: String,
    s1: Vec<f64>,
    s2: Vec<f64>,
    n: usize,
}

/// A weights source that answers like `params` and accumulates each dense and convolutional
/// layer's per-channel output sums, in forward order.
struct Recorder<'a> {
    params: &'a ParamSet,
    sums: RefCell<Vec<Sums>>,
}

impl Recorder<'_> {
    /// Adds `y` (`[batch, c]` or `[batch, c, h, w]`, as host values with `c` channels and
    /// `inner` values per channel and sample) to the layer's sums.
    fn record(&self, layer: &str, y: Vec<f32>, c: usize, inner: usize) {
        let mut sums = self.sums.borrow_mut();
        let k = match sums.iter().position(|s| s.layer == layer) {
            Some(k) => k,
            None => {
                sums.push(Sums {
                    layer: layer.to_string(),
                    s1: vec![0.0; c],
                    s2: vec![0.0; c],
                    n: 0,
                });
                sums.len() - 1
            }
        };
        let s = &mut sums[k];
        for sample in y.chunks_exact(c * inner) {
            for (ch, vals) in sample.chunks_exact(inner).enumerate() {
                for &v in vals {
                    let v = f64::from(v);
                    s.s1[ch] += v;
                    s.s2[ch] += v * v;
                }
            }
        }
        s.n += y.len() / c;
    }

    fn into_stats(self) -> Vec<ChannelStats> {
        self.sums
            .into_inner()
            .into_iter()
            .map(|s| {
                let n = s.n.max(1) as f64;
                let mean: Vec<f64> = s.s1.iter().map(|v| v / n).collect();
                let std =
                    s.s2.iter()
                        .zip(&mean)
                        .map(|(q, m)| (q / n - m * m).max(0.0).sqrt())
                        .collect();
                ChannelStats {
                    layer: s.layer,
                    mean,
                    std,
                }
            })
            .collect()
    }
}

impl Weights for Recorder<'_> {
    fn param(&self, name: &str) -> Tensor<1> {
        self.params.param(name)
    }

    fn dense(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        let y = self.params.dense(layer, x);
        let [_, c] = y.dims();
        self.record(layer, crate::backend::into_host_vec(y.clone()), c, 1);
        y
    }

    fn conv2d(&self, layer: &str, x: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
        let y = self.params.conv2d(layer, x, options);
        let [_, c, h, w] = y.dims();
        self.record(layer, crate::backend::into_host_vec(y.clone()), c, h * w);
        y
    }

    fn batch_norm(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        self.params.batch_norm(layer, x)
    }

    fn batch_norm2d(&self, layer: &str, x: Tensor<4>) -> Tensor<4> {
        self.params.batch_norm2d(layer, x)
    }

    fn layer_norm(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        self.params.layer_norm(layer, x)
    }
}

/// `--repair` needs a network without normalisation layers (one with them has the BN reset).
pub fn check(arch: &Arch) -> Result<()> {
    let normalised = arch
        .layout()
        .entries()
        .iter()
        .any(|e| e.role == Role::NormScale);
    match normalised {
        true => Err(Error::Config(format!(
            "--repair is for networks without normalisation; {arch} has normalisation layers, \
             whose statistics are recomputed at every point by default (the BN reset)"
        ))),
        false => Ok(()),
    }
}

/// Pre-activation statistics of every hidden dense and convolutional layer of `params` (all
/// but the last, the logits), in forward order, on the samples of `data` that `sample` picks.
pub fn hidden_stats(
    arch: &Arch,
    params: &ParamSet,
    data: &Dataset,
    sample: &StateSample,
    device: &Device,
) -> Vec<ChannelStats> {
    let rec = Recorder {
        params,
        sums: RefCell::new(Vec::new()),
    };
    for chunk in sample.indices(data.len()).chunks(STATE_BATCH) {
        let (x, _) = batch_tensors(data, chunk, device);
        arch.forward(&rec, x);
    }
    let mut stats = rec.into_stats();
    stats.pop();
    stats
}

/// The targets `Σ_j c_j·(μ_j, σ_j)` of a family member from its control points' statistics
/// (standard deviations floored at 0).
pub fn targets(stats: &[Vec<ChannelStats>], c: &[f64]) -> Vec<ChannelStats> {
    let mix = |f: &dyn Fn(&ChannelStats) -> &Vec<f64>, l: usize| -> Vec<f64> {
        let n = f(&stats[0][l]).len();
        (0..n)
            .map(|i| stats.iter().zip(c).map(|(s, c)| c * f(&s[l])[i]).sum())
            .collect()
    };
    (0..stats[0].len())
        .map(|l| ChannelStats {
            layer: stats[0][l].layer.clone(),
            mean: mix(&|s| &s.mean, l),
            std: mix(&|s| &s.std, l)
                .into_iter()
                .map(|s| s.max(0.0))
                .collect(),
        })
        .collect()
}

/// `params` with every hidden layer rescaled, in forward order, so that its channels'
/// statistics on the picked samples of `data` are `targets` (REPAIR). Errors when a corrected
/// layer has no bias.
pub fn repair(
    arch: &Arch,
    params: &ParamSet,
    targets: &[ChannelStats],
    data: &Dataset,
    sample: &StateSample,
    device: &Device,
) -> Result<ParamSet> {
    let layout = params.layout().clone();
    let offsets = layout.offsets();
    let mut flat = params.to_flat();
    let mut current = params.clone();
    for (l, target) in targets.iter().enumerate() {
        let actual = &hidden_stats(arch, &current, data, sample, device)[l];
        let w = layout.index_of(&weight_name(&target.layer))?;
        let b = layout.index_of(&bias_name(&target.layer)).map_err(|_| {
            Error::Config(format!(
                "--repair: layer {} of {arch} has no bias to carry the correction",
                target.layer
            ))
        })?;
        let channels = target.mean.len();
        let per = layout.entries()[w].numel() / channels;
        for ch in 0..channels {
            let s = match actual.std[ch] < MIN_STD {
                true => 1.0,
                false => target.std[ch] / actual.std[ch],
            };
            for v in &mut flat[offsets[w] + ch * per..offsets[w] + (ch + 1) * per] {
                *v = (f64::from(*v) * s) as f32;
            }
            let bias = &mut flat[offsets[b] + ch];
            *bias = ((f64::from(*bias) - actual.mean[ch]) * s + target.mean[ch]) as f32;
        }
        current = ParamSet::from_flat(layout.clone(), &flat, device)?;
    }
    Ok(current)
}

/// REPAIR prepared for the members of a linear family: its control points' statistics and the
/// samples on which members are measured.
#[derive(Clone)]
pub struct Repair {
    stats: Vec<Vec<ChannelStats>>,
    data: Dataset,
    sample: StateSample,
}

impl Repair {
    /// Measures the control points (`ParamSet`s of `arch`) on the picked samples of `data`;
    /// errors for a normalised network or a hidden layer without bias.
    pub fn new(
        arch: &Arch,
        points: &[ParamSet],
        data: &Dataset,
        sample: StateSample,
        device: &Device,
    ) -> Result<Self> {
        check(arch)?;
        sample.validate()?;
        let stats: Vec<Vec<ChannelStats>> = points
            .iter()
            .map(|p| hidden_stats(arch, p, data, &sample, device))
            .collect();
        let layout = arch.layout();
        for s in &stats[0] {
            if layout.index_of(&bias_name(&s.layer)).is_err() {
                return Err(Error::Config(format!(
                    "--repair: layer {} of {arch} has no bias to carry the correction",
                    s.layer
                )));
            }
        }
        Ok(Self {
            stats,
            data: data.clone(),
            sample,
        })
    }

    /// The member `params = Σ_j c_j·θ_j` repaired towards `Σ_j c_j·(μ_j, σ_j)`.
    pub fn apply(&self, arch: &Arch, params: &ParamSet, c: &[f64], device: &Device) -> ParamSet {
        let t = targets(&self.stats, c);
        repair(arch, params, &t, &self.data, &self.sample, device)
            .expect("layers checked by Repair::new")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::device as eval_device;
    use crate::data::{DataConfig, load};

    /// After REPAIR, every hidden channel of the midpoint has its target statistics, on the
    /// data they were measured on; the endpoints, repaired towards their own statistics, are
    /// unchanged.
    #[test]
    fn repaired_channels_meet_their_targets_and_endpoints_are_fixed_points() {
        let device = eval_device();
        let arch: Arch = "mlp:64-32-16-10".parse().unwrap();
        let data = load(&DataConfig::default()).unwrap().train.subset(300);
        let a = arch.init(1, &device);
        let b = arch.init(2, &device);
        let sample = StateSample::ALL;
        let stats = [
            hidden_stats(&arch, &a, &data, &sample, &device),
            hidden_stats(&arch, &b, &data, &sample, &device),
        ];
        assert_eq!(stats[0].len(), 2, "fc1 and fc2 are hidden, fc3 the logits");
        let mid = a.lerp(&b, 0.5).unwrap();
        let t = targets(&stats, &[0.5, 0.5]);
        let fixed = repair(&arch, &mid, &t, &data, &sample, &device).unwrap();
        let after = hidden_stats(&arch, &fixed, &data, &sample, &device);
        for (got, want) in after.iter().zip(&t) {
            for i in 0..want.mean.len() {
                assert!((got.mean[i] - want.mean[i]).abs() < 1e-3 * (1.0 + want.std[i]));
                assert!((got.std[i] - want.std[i]).abs() < 1e-3 * want.std[i]);
            }
        }
        let same = repair(&arch, &a, &stats[0], &data, &sample, &device).unwrap();
        let (x, y) = (a.to_flat(), same.to_flat());
        let max = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(max < 1e-4, "an endpoint moved by {max}");
    }

    #[test]
    fn normalised_networks_are_refused() {
        let bn: Arch = "mlp:64-32-10:norm=bn".parse().unwrap();
        let msg = check(&bn).unwrap_err().to_string();
        assert!(
            msg.contains("--repair") && msg.contains("BN reset"),
            "{msg}"
        );
        assert!(check(&"lenet5:1x16x16".parse().unwrap()).is_ok());
    }
}
