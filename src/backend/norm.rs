//! Train-mode batch normalisation on the host, with its own backward pass, plugged into burn
//! through a backend extension (`HostBatchNorm`) for the flex backend and its autodiff wrapper.
//!
//! Per channel `c` over the `m` values of the batch and the positions, with `μ`, the biased
//! variance `σ²`, `r = 1/√(σ² + ε)` and `x̂ = (x − μ)·r` (Ioffe & Szegedy 2015):
//! - forward: `y = γ·x̂ + β`;
//! - backward: `∂L/∂β = Σ g`, `∂L/∂γ = Σ g·x̂`,
//!   `∂L/∂x = γ·r·(g − Σg/m − x̂·Σ(g·x̂)/m)`.
//!
//! Why: composed of burn's ops the layer is about ten element-wise passes forward and more
//! backward, each writing a tensor of the activation's size; here it is two reading passes and
//! one writing pass each way. Sums run in `f64`, each channel's in a fixed order on one thread
//! (eight interleaved partial sums per sample plane, which vectorise, then the planes in
//! sample order), so results do not depend on the number of threads.

use std::sync::Arc;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;
use multiversion::multiversion;
use rayon::prelude::*;

use super::host;
use super::layout::{self, Order};

/// `[n, c, plane]` of a tensor `[n, c, ...]`.
fn dims(x: &FlexTensor) -> [usize; 3] {
    let d = x.shape().to_vec();
    [d[0], d[1], d[2..].iter().product()]
}

/// Lanes of the `f64` partial sums of [`lane_sums`].
const LANES: usize = 8;

/// `(Σ f(aᵢ, bᵢ), Σ g(aᵢ, bᵢ))` over two slices of equal length, in `f64`: element `i` goes to
/// partial sum `i mod 8`, the partial sums are added pairwise in a fixed tree, then the tail.
/// A fixed order (the same bits every time) that the compiler vectorises, where one running
/// sum is bound by the latency of each addition.
#[inline(always)]
fn lane_sums(
    a: &[f32],
    b: &[f32],
    f: impl Fn(f64, f64) -> f64,
    g: impl Fn(f64, f64) -> f64,
) -> (f64, f64) {
    let (mut sf, mut sg) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for i in 0..LANES {
            let (u, v) = (f64::from(xa[i]), f64::from(xb[i]));
            sf[i] += f(u, v);
            sg[i] += g(u, v);
        }
    }
    let tree = |s: [f64; LANES]| ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    let (mut rf, mut rg) = (tree(sf), tree(sg));
    for (&u, &v) in ta.iter().zip(tb) {
        let (u, v) = (f64::from(u), f64::from(v));
        rf += f(u, v);
        rg += g(u, v);
    }
    (rf, rg)
}

/// Rows of a channels-last sample summed into one of [`ROW_LANES`] per-channel partial sums.
const ROW_LANES: usize = 4;

/// Per channel `ch` (one per entry of `k`), `(Σ f(aᵢ, bᵢ, k[ch]), Σ g(aᵢ, bᵢ, k[ch]))` over one
/// channels-last sample (`[plane][c]` in `a` and `b`), in `f64`: row `r` goes to partial sum
/// `r mod 4`, added as `(s0 + s1) + (s2 + s3)`; a fixed order whose inner loop runs over the
/// channels, in vectors.
#[inline(always)]
fn row_sums(
    a: &[f32],
    b: &[f32],
    k: &[f64],
    f: impl Fn(f64, f64, f64) -> f64,
    g: impl Fn(f64, f64, f64) -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let c = k.len();
    let mut sf = vec![0.0f64; ROW_LANES * c];
    let mut sg = vec![0.0f64; ROW_LANES * c];
    for (r, (ra, rb)) in a.chunks_exact(c).zip(b.chunks_exact(c)).enumerate() {
        let lane = (r % ROW_LANES) * c;
        let (pf, pg) = (&mut sf[lane..lane + c], &mut sg[lane..lane + c]);
        // Zipped, not indexed (an indexed per-channel constant kept this loop scalar).
        for ((((pf, pg), &u), &v), &k) in pf.iter_mut().zip(pg).zip(ra).zip(rb).zip(k) {
            let (u, v) = (f64::from(u), f64::from(v));
            *pf += f(u, v, k);
            *pg += g(u, v, k);
        }
    }
    let tree = |s: &[f64]| -> Vec<f64> {
        (0..c)
            .map(|ch| (s[ch] + s[c + ch]) + (s[2 * c + ch] + s[3 * c + ch]))
            .collect()
    };
    (tree(&sf), tree(&sg))
}

/// Per-sample partial sums (from `part`) added per channel in sample order.
fn add_in_order(parts: Vec<(Vec<f64>, Vec<f64>)>, c: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut a, mut b) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (pa, pb) in parts {
        for ch in 0..c {
            a[ch] += pa[ch];
            b[ch] += pb[ch];
        }
    }
    (a, b)
}

/// Per-channel mean and biased variance of `x: [n, c, plane]` stored in `order` (`f64` sums:
/// per sample by [`lane_sums`] a plane at a time in two passes, or by [`row_sums`] in one when
/// channels are last; samples added in order).
pub fn channel_stats(x: &[f32], d: [usize; 3], order: Order) -> (Vec<f64>, Vec<f64>) {
    match order {
        Order::Nchw => channel_stats_nchw(x, d),
        Order::Nhwc => channel_stats_nhwc(x, d),
    }
}

/// [`channel_stats`] of a channels-last `x` in one pass: `Σx` and `Σx²` in `f64`, then
/// `σ² = Σx²/m − μ²` (exact to `f64` rounding unless `|μ|/σ` exceeds about 10⁶).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn channel_stats_nhwc(x: &[f32], [n, c, plane]: [usize; 3]) -> (Vec<f64>, Vec<f64>) {
    let m = (n * plane) as f64;
    let zeros = vec![0.0; c];
    let parts = x
        .par_chunks(c * plane)
        .map(|xs| row_sums(xs, xs, &zeros, |u, _, _| u, |u, _, _| u * u))
        .collect();
    let (sum, sq) = add_in_order(parts, c);
    let mean: Vec<f64> = sum.iter().map(|s| s / m).collect();
    let var = sq
        .iter()
        .zip(&mean)
        .map(|(q, mu)| (q / m - mu * mu).max(0.0))
        .collect();
    (mean, var)
}

#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn channel_stats_nchw(x: &[f32], [n, c, plane]: [usize; 3]) -> (Vec<f64>, Vec<f64>) {
    let m = (n * plane) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..n).map(move |s| &x[(s * c + ch) * plane..][..plane]);
            let sum = |f: &dyn Fn(&[f32]) -> f64| planes().map(f).sum::<f64>();
            let mean = sum(&|p| lane_sums(p, p, |u, _| u, |_, _| 0.0).0) / m;
            let var = sum(&|p| lane_sums(p, p, |u, _| (u - mean) * (u - mean), |_, _| 0.0).0) / m;
            (mean, var)
        })
        .unzip()
}

/// `1/√(σ² + ε)` per channel.
fn inv_std(var: &[f64]) -> Vec<f64> {
    let eps = f64::from(crate::weights::norm::BN_EPS);
    var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect()
}

/// Per-channel batch mean and biased variance, computed once per layer and step.
pub type Stats = Arc<(Vec<f64>, Vec<f64>)>;

/// `y = γ·(x − μ)·r + β` per channel, with the batch statistics `(μ, σ²)` of `x`; `y` is stored
/// in the order of `x`.
fn forward_host(
    (x, order): (&[f32], Order),
    d: [usize; 3],
    stats: &Stats,
    gamma: &[f32],
    beta: &[f32],
) -> Vec<f32> {
    let [_, c, plane] = d;
    let (mean, var) = &**stats;
    let r = inv_std(var);
    let scale: Vec<f32> = (0..c)
        .map(|ch| (f64::from(gamma[ch]) * r[ch]) as f32)
        .collect();
    let shift: Vec<f32> = (0..c)
        .map(|ch| (f64::from(beta[ch]) - mean[ch] * f64::from(gamma[ch]) * r[ch]) as f32)
        .collect();
    let sample = (c * plane).max(1);
    // SAFETY: a block is one sample, `c·plane` elements, all written: channels last as `plane`
    // runs of `c`, row-major as `c` runs of `plane`, each zipped with the input's.
    unsafe {
        super::par_new(x.len(), sample, |i, y| {
            let x = &x[i * sample..][..y.len()];
            if order == Order::Nhwc {
                for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    for (((y, &x), &s), &t) in y.iter_mut().zip(x).zip(&scale).zip(&shift) {
                        y.write(x * s + t);
                    }
                }
                return;
            }
            for ch in 0..c {
                let (s, t) = (scale[ch], shift[ch]);
                let range = ch * plane..(ch + 1) * plane;
                for (y, &x) in y[range.clone()].iter_mut().zip(&x[range]) {
                    y.write(x * s + t);
                }
            }
        })
    }
}

/// `(∂L/∂γ, ∂L/∂β)` from the input, its batch statistics, `γ` and the output gradient `g`,
/// and `∂L/∂x` written over `g` (`x` and `g` stored in the same order).
fn backward_host(
    (x, order): (&[f32], Order),
    d: [usize; 3],
    stats: &Stats,
    gamma: &[f32],
    gy: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let [n, c, plane] = d;
    let m = (n * plane) as f64;
    let (mean, var) = &**stats;
    let r = inv_std(var);
    let (sum_g, sum_gx) = match order {
        Order::Nchw => gradient_sums(x, gy, d, mean, &r),
        Order::Nhwc => gradient_sums_nhwc(x, gy, d, mean, &r),
    };
    // ∂L/∂x = a·g + b·x + k per channel, with a = γr, b = −γr²·Σgx̂/m,
    // k = −γr·Σg/m + γr²·μ·Σgx̂/m.
    let coef: Vec<[f32; 3]> = (0..c)
        .map(|ch| {
            let gr = f64::from(gamma[ch]) * r[ch];
            let b = -gr * r[ch] * sum_gx[ch] / m;
            let k = -gr * sum_g[ch] / m - b * mean[ch];
            [gr as f32, b as f32, k as f32]
        })
        .collect();
    gy.par_chunks_mut(c * plane)
        .zip(x.par_chunks(c * plane))
        .for_each(|(gy, x)| {
            if order == Order::Nhwc {
                for (gy, x) in gy.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    for ((g, &x), [a, b, k]) in gy.iter_mut().zip(x).zip(&coef) {
                        *g = a * *g + b * x + k;
                    }
                }
                return;
            }
            for (ch, [a, b, k]) in coef.iter().enumerate() {
                let range = ch * plane..(ch + 1) * plane;
                for (g, &x) in gy[range.clone()].iter_mut().zip(&x[range]) {
                    *g = a * *g + b * x + k;
                }
            }
        });
    let to32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (to32(sum_gx), to32(sum_g))
}

/// Per channel `Σg` and `Σg·x̂ = r·Σg·(x − μ)` (`f64`, per sample plane by [`lane_sums`],
/// planes added in sample order).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn gradient_sums(
    x: &[f32],
    gy: &[f32],
    [n, c, plane]: [usize; 3],
    mean: &[f64],
    r: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            for s in 0..n {
                let at = (s * c + ch) * plane;
                let mu = mean[ch];
                let (a, b) = lane_sums(
                    &gy[at..at + plane],
                    &x[at..at + plane],
                    |g, _| g,
                    |g, x| g * (x - mu),
                );
                sg += a;
                sgx += b;
            }
            (sg, sgx * r[ch])
        })
        .unzip()
}

/// [`gradient_sums`] of channels-last `x` and `gy` (per sample by [`row_sums`], samples added
/// in order).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn gradient_sums_nhwc(
    x: &[f32],
    gy: &[f32],
    [_, c, plane]: [usize; 3],
    mean: &[f64],
    r: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let parts = gy
        .par_chunks(c * plane)
        .zip(x.par_chunks(c * plane))
        .map(|(gs, xs)| row_sums(gs, xs, &mean[..c], |g, _, _| g, |g, x, mu| g * (x - mu)))
        .collect();
    let (sg, sgx) = add_in_order(parts, c);
    (sg, sgx.iter().zip(r).map(|(s, r)| s * r).collect())
}

fn flex(v: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// Train-mode batch normalisation on the host (see the module docs). Only the flex backend
/// and its autodiff wrapper implement it; [`batch_norm_train`] decides when it is used.
#[backend_extension(Flex, Autodiff)]
pub trait HostBatchNorm: Backend {
    /// `γ·(x − μ_B)/√(σ²_B + ε) + β` per channel (axis 1) of `x: [n, c, ...]`, given the
    /// batch statistics `(μ_B, σ²_B)` of `x` ([`channel_stats`]).
    fn host_batch_norm_train(
        x: FloatTensor<Self>,
        stats: Stats,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl HostBatchNorm for Flex {
    fn host_batch_norm_train(
        x: FloatTensor<Self>,
        stats: Stats,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (v, order) = layout::stored(&x);
        let y = forward_host((&v, order), dims(&x), &stats, &host(&gamma), &host(&beta));
        layout::like(&x, order, y)
    }
}

/// The backward step keeps the input, its statistics and `γ`.
#[derive(Debug)]
struct HostBatchNormBackward;

impl Backward<Flex, 3> for HostBatchNormBackward {
    type State = (FlexTensor, Stats, Arc<Vec<f32>>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_g, node_b] = ops.parents;
        let gy = grads.consume::<Flex>(&ops.node);
        let (x, stats, gamma) = ops.state;
        let c = gamma.len();
        let (v, order) = layout::stored(&x);
        // `∂L/∂x` over the output gradient: in its buffer when it is the only owner, else in a
        // copy.
        let mut dx = layout::writable(gy, order).unwrap_or_else(|gy| {
            layout::like(&x, order, layout::stored_as(&gy, order).into_owned())
        });
        let (dg, db) = backward_host(
            (&v, order),
            dims(&x),
            &stats,
            &gamma,
            dx.storage_mut::<f32>(),
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_g {
            grads.register::<Flex>(node.id, flex(dg, vec![c]));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, flex(db, vec![c]));
        }
    }
}

impl<C: CheckpointStrategy> HostBatchNorm for Autodiff<Flex, C> {
    fn host_batch_norm_train(
        x: FloatTensor<Self>,
        stats: Stats,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let g = host(gamma.primitive()).to_vec();
        let (v, order) = layout::stored(x.primitive());
        let y = forward_host(
            (&v, order),
            dims(x.primitive()),
            &stats,
            &g,
            &host(beta.primitive()),
        );
        let y = layout::like(x.primitive(), order, y);
        match HostBatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x.into_primitive(), stats, Arc::new(g)), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// Train-mode batch normalisation of `x: [n, c, ...]` per channel through [`HostBatchNorm`]
/// (`f32` tensors): the output and the batch statistics; `None` for another dtype, which the
/// caller composes from burn's ops.
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
) -> Option<(Tensor<D>, Stats)> {
    if [x.dtype(), gamma.dtype(), beta.dtype()] != [DType::F32; 3] {
        return None;
    }
    let d = x.dims();
    let dims = [d[0], d[1], d[2..].iter().product()];
    let stats: Stats = Arc::new(super::with_stored(&x, |v, order| {
        channel_stats(v, dims, order)
    }));
    let y = <Dispatch as HostBatchNorm>::host_batch_norm_train(
        x.into_dispatch(),
        stats.clone(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
    );
    Some((Tensor::from_dispatch(y), stats))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor};

    use super::*;
    use crate::backend::conv::tests::normal;
    use crate::backend::{train_device, with_host};
    use crate::weights::norm::{batch_norm_train as composed2, batch_norm_train_4d as composed4};

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            worst <= 2e-5 * scale,
            "{what}: off by {worst} (scale {scale})"
        );
    }

    /// `(y, ∂/∂x, ∂/∂γ, ∂/∂β)` of `Σ y·r` for a fixed `r`, `x` a leaf of the given shape and
    /// `c` channels.
    fn run<const D: usize>(
        f: &dyn Fn(Tensor<D>, Tensor<1>, Tensor<1>) -> Tensor<D>,
        shape: [usize; D],
        c: usize,
        dev: &Device,
    ) -> [Vec<f32>; 4] {
        // Shifted and scaled inputs: the statistics are far from 0 and 1.
        let x = (normal(shape, 1, dev) * 3.0 + 2.0).require_grad();
        let g = (normal([c], 2, dev) + 1.0).require_grad();
        let b = normal([c], 3, dev).require_grad();
        let y = f(x.clone(), g.clone(), b.clone());
        let r = normal(y.dims(), 4, dev);
        let grads = (y.clone() * r).sum().backward();
        let v = |t: &Tensor<1>| with_host(t, <[f32]>::to_vec);
        [
            with_host(&y, <[f32]>::to_vec),
            with_host(&x.grad(&grads).unwrap(), <[f32]>::to_vec),
            v(&g.grad(&grads).unwrap()),
            v(&b.grad(&grads).unwrap()),
        ]
    }

    #[test]
    fn values_and_gradients_equal_the_composed_layer() {
        let dev = train_device();
        let host4 = run(
            &|x, g, b| batch_norm_train(x, g, b).unwrap().0,
            [5, 3, 4, 6],
            3,
            &dev,
        );
        let burn4 = run(&|x, g, b| composed4(x, g, b).0, [5, 3, 4, 6], 3, &dev);
        let host2 = run(
            &|x, g, b| batch_norm_train(x, g, b).unwrap().0,
            [7, 4],
            4,
            &dev,
        );
        let burn2 = run(&|x, g, b| composed2(x, g, b).0, [7, 4], 4, &dev);
        for (host, burn) in [(host4, burn4), (host2, burn2)] {
            for (what, (h, b)) in ["y", "dx", "dgamma", "dbeta"]
                .iter()
                .zip(host.iter().zip(&burn))
            {
                close(h, b, what);
            }
        }
    }

    /// A channels-last input (a leaf `[n, h, w, c]` viewed as `[n, c, h, w]`, as the 3×3
    /// convolutions write it): the values and gradients of the composed layer on the view.
    #[test]
    fn channels_last_input_equals_the_composed_layer() {
        let dev = train_device();
        let view = |t: Tensor<4>| t.permute([0, 3, 1, 2]);
        let leaf = [5, 4, 6, 3];
        let ours = run(
            &|x, g, b| batch_norm_train(view(x), g, b).unwrap().0,
            leaf,
            3,
            &dev,
        );
        let theirs = run(&|x, g, b| composed4(view(x), g, b).0, leaf, 3, &dev);
        for (what, (h, b)) in ["y", "dx", "dgamma", "dbeta"]
            .iter()
            .zip(ours.iter().zip(&theirs))
        {
            close(h, b, what);
        }
    }

    #[test]
    fn statistics_are_the_batch_mean_and_biased_variance() {
        // Channel 0: samples (1, 2) and (3, 4) → mean 2.5, variance 1.25; channel 1: all 7.
        let x = [1.0f32, 2.0, 7.0, 7.0, 3.0, 4.0, 7.0, 7.0];
        let (mean, var) = channel_stats(&x, [2, 2, 2], Order::Nchw);
        assert_eq!(mean, vec![2.5, 7.0]);
        assert_eq!(var, vec![1.25, 0.0]);
    }
}
