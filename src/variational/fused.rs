//! The per-weight terms of the additive parameterisation (Molchanov et al. 2017, §4.2) in one fused host pass,
//! spliced into the autodiff graph through first-order surrogates.
//!
//! For each weight with mean θ and log σ²:
//!
//! - `log α = clip(log σ² − log(θ² + ε), ±c)` (c = 8 by default), `α = e^{log α}`;
//! - the LRT weight variance `v = α·θ²` ([`LrtVariance::AlphaTheta2`]) or `v = σ²`
//!   ([`LrtVariance::Sigma2`]);
//! - the KL: log-uniform (Molchanov et al. 2017, eq. 14, stable form)
//!   `½·log(1 + 1/α) + k1·σ(−k2 − k3·log α)`, or ARD `½·log(1 + 1/α)`;
//!
//! with their derivatives in θ and log σ² (zero where the clip is active). Written as tensor
//! expressions these cost about ten passes of scalar `exp`/`log` over every weight, forward and
//! backward: ≈ 90% of a sparse-VD step on flex. Here they cost four vectorised transcendental
//! evaluations per weight in one pass (rayon over chunks).
//!
//! A host value `f` with Jacobian `J` (per element, in θ and log σ²) enters the graph as
//! `f + (J_θ⊙θ + J_s⊙s) − [J_θ⊙θ + J_s⊙s]`, the bracket a constant: the value is `f` exactly
//! and the gradient is `J`, so training is unchanged up to float rounding.

use burn::tensor::{Tensor, TensorData};
use multiversion::multiversion;
use rayon::prelude::*;

use super::LrtVariance;
use super::THETA2_EPS;
use super::kl::{K1, K2, K3};
use crate::elementary::{exp_f32, ln_f32};

/// Which KL the pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlKind {
    /// Log-uniform prior, Molchanov's approximation.
    LogUniform,
    /// Empirical-Bayes (ARD) prior: `½·softplus(−log α)`.
    Ard,
}

/// What the pass computes: the KL, the log α clip and the form of the weight variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pass {
    /// The KL.
    pub kl: KlKind,
    /// `log α` is clipped to `[−clip, clip]`.
    pub clip: f32,
    /// The weight variance of the local reparameterisation.
    pub variance: LrtVariance,
}

/// Host results of the fused pass for one layer.
#[derive(Debug, Clone, Default)]
pub struct Terms {
    /// Weight variance (`α·θ²` or `σ²`).
    pub var: Vec<f32>,
    /// `∂v/∂θ`.
    pub var_dtheta: Vec<f32>,
    /// `∂v/∂log σ²`.
    pub var_dls2: Vec<f32>,
    /// Σ KL over the layer's weights.
    pub kl: f64,
    /// `∂KL/∂θ` per weight.
    pub kl_dtheta: Vec<f32>,
    /// `∂KL/∂log σ²` per weight.
    pub kl_dls2: Vec<f32>,
}

/// The fused pass over one layer's `θ` and `log σ²`.
pub fn terms(theta: &[f32], ls2: &[f32], pass: Pass) -> Terms {
    let mut t = Terms::default();
    terms_into(theta, ls2, pass, &mut t);
    t
}

/// [`terms`] into `t`, reusing its buffers (a training step recycles the previous step's:
/// fresh megabyte-sized buffers cost a page fault per 4 KiB).
pub fn terms_into(theta: &[f32], ls2: &[f32], pass: Pass, t: &mut Terms) {
    assert_eq!(theta.len(), ls2.len(), "θ and log σ² of one layer");
    let n = theta.len();
    for v in [
        &mut t.var,
        &mut t.var_dtheta,
        &mut t.var_dls2,
        &mut t.kl_dtheta,
        &mut t.kl_dls2,
    ] {
        // Every element is overwritten below. A buffer kept from the last step (all but `var`,
        // which becomes a tensor each step) is already `n` long: no allocation, no fill.
        v.resize(n, 0.0);
    }
    let kl: f64 = t
        .var
        .par_chunks_mut(CHUNK)
        .zip(t.var_dtheta.par_chunks_mut(CHUNK))
        .zip(t.var_dls2.par_chunks_mut(CHUNK))
        .zip(t.kl_dtheta.par_chunks_mut(CHUNK))
        .zip(t.kl_dls2.par_chunks_mut(CHUNK))
        .zip(theta.par_chunks(CHUNK).zip(ls2.par_chunks(CHUNK)))
        .map(
            |(((((var, var_dt), var_ds), kl_dt), kl_ds), (theta, ls2))| {
                let out = Out {
                    var,
                    var_dt,
                    var_ds,
                    kl_dt,
                    kl_ds,
                };
                chunk(theta, ls2, out, pass)
            },
        )
        // Chunk sums collected in order and added sequentially: the total does not depend on
        // how rayon split the work (a parallel `sum` would, in the last bits).
        .collect::<Vec<f64>>()
        .into_iter()
        .sum();
    t.kl = kl;
}

/// Weights per parallel task of [`terms`]; chunk boundaries are fixed multiples of it, so the
/// KL sum has one order whatever the thread count.
const CHUNK: usize = 4096;
/// Independent f64 accumulators of a chunk's KL sum (a single running sum is one dependent add
/// per weight, as slow as the rest of the pass).
const LANES: usize = 16;

/// One chunk's output slices (all as long as its `θ`).
struct Out<'a> {
    var: &'a mut [f32],
    var_dt: &'a mut [f32],
    var_ds: &'a mut [f32],
    kl_dt: &'a mut [f32],
    kl_ds: &'a mut [f32],
}

/// One chunk (at most [`CHUNK`] weights), returning its KL sum; through an AVX-512 or
/// AVX2 + FMA build of the same code where the CPU has it. Every build rounds identically:
/// the code uses only IEEE operations and explicit `mul_add` (fused in every build), never
/// contracted or reassociated by the compiler.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn chunk(theta: &[f32], ls2: &[f32], out: Out<'_>, pass: Pass) -> f64 {
    chunk_body(theta, ls2, out, pass)
}

#[inline(always)]
fn chunk_body(theta: &[f32], ls2: &[f32], out: Out<'_>, pass: Pass) -> f64 {
    let n = theta.len();
    // Slices re-cut to one length, so that the loop runs without bounds checks (and vectorises).
    let ls2 = &ls2[..n];
    let (var, var_dt, var_ds) = (
        &mut out.var[..n],
        &mut out.var_dt[..n],
        &mut out.var_ds[..n],
    );
    let (kl_dt, kl_ds) = (&mut out.kl_dt[..n], &mut out.kl_ds[..n]);
    let mut kl_buf = [0.0f32; CHUNK];
    let kl = &mut kl_buf[..n];
    let consts = Consts {
        clip: pass.clip,
        k1: K1 as f32,
        k2: K2 as f32,
        k3: K3 as f32,
        sig: if pass.kl == KlKind::LogUniform {
            1.0
        } else {
            0.0
        },
    };
    // One loop per variance form, each without a branch in its body.
    macro_rules! run {
        ($direct:literal) => {
            for i in 0..n {
                let e = element::<$direct>(theta[i], ls2[i], &consts);
                (var[i], var_dt[i], var_ds[i]) = (e.var, e.var_dt, e.var_ds);
                (kl_dt[i], kl_ds[i]) = (e.kl_dt, e.kl_ds);
                kl[i] = e.kl;
            }
        };
    }
    if pass.variance == LrtVariance::Sigma2 {
        run!(true)
    } else {
        run!(false)
    }
    // The chunk's sum in LANES interleaved f64 partial sums, then those in order.
    let mut acc = [0.0f64; LANES];
    let lanes = kl.chunks_exact(LANES);
    let tail = lanes.remainder().iter().map(|&k| f64::from(k)).sum::<f64>();
    for l in lanes {
        for j in 0..LANES {
            acc[j] += f64::from(l[j]);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The pass's constants.
struct Consts {
    clip: f32,
    k1: f32,
    k2: f32,
    k3: f32,
    /// 1 for the log-uniform KL's sigmoid term, 0 for ARD.
    sig: f32,
}

/// One weight's outputs.
struct Element {
    var: f32,
    var_dt: f32,
    var_ds: f32,
    kl: f32,
    kl_dt: f32,
    kl_ds: f32,
}

/// The terms of one weight with mean `th` and log σ² `ls2` (formulas in the module docs);
/// `DIRECT`: `v = σ²` ([`LrtVariance::Sigma2`]) rather than `α·θ²`.
#[inline(always)]
fn element<const DIRECT: bool>(th: f32, ls2: f32, k: &Consts) -> Element {
    let c = k.clip;
    let t2 = th * th;
    let t2e = t2 + THETA2_EPS;
    let inv_t2e = 1.0 / t2e;
    let raw = ls2 - ln_f32(t2e);
    let la = raw.clamp(-c, c);
    let inside = if raw > -c && raw < c { 1.0f32 } else { 0.0 };
    // ∂log α/∂θ and ∂log α/∂log σ² (zero under the clip).
    let dla_dt = inside * (-2.0 * th * inv_t2e);
    let dla_ds = inside;
    let alpha = exp_f32(la);
    let (var, var_dt, var_ds) = if DIRECT {
        // v = σ² = e^{log σ²}: ∂v/∂θ = 0, ∂v/∂log σ² = v.
        let s2 = exp_f32(ls2);
        (s2, 0.0, s2)
    } else {
        // ∂(α·θ²)/∂θ = 2αθ + αθ²·∂log α/∂θ = 2αθ·ε/(θ² + ε) inside the clip (written so, the
        // two terms do not cancel in f32), 2αθ under it.
        let keep = inside * (THETA2_EPS * inv_t2e) + (1.0 - inside);
        (alpha * t2, 2.0 * alpha * th * keep, alpha * t2 * dla_ds)
    };
    // ½·log(1 + 1/α), derivative −½/(1 + α); log-uniform adds k1·σ(−k2 − k3·log α),
    // σ' = σ(1 − σ).
    let s = 1.0 / (1.0 + exp_f32(k.k3.mul_add(la, k.k2)));
    let kl = 0.5 * ln_f32(1.0 + 1.0 / alpha) + k.sig * k.k1 * s;
    let dk = -0.5 / (1.0 + alpha) - k.sig * k.k1 * k.k3 * s * (1.0 - s);
    Element {
        var,
        var_dt,
        var_ds,
        kl,
        kl_dt: dk * dla_dt,
        kl_ds: dk * dla_ds,
    }
}

/// `J_θ⊙θ + J_s⊙s` in the graph, the Jacobians as constants.
fn linear_term(theta: &Tensor<1>, ls2: &Tensor<1>, j_theta: &[f32], j_ls2: &[f32]) -> Tensor<1> {
    let device = theta.device();
    let n = j_theta.len();
    let jt = Tensor::<1>::from_data(TensorData::new(j_theta.to_vec(), [n]), &device);
    let js = Tensor::<1>::from_data(TensorData::new(j_ls2.to_vec(), [n]), &device);
    theta.clone() * jt + ls2.clone() * js
}

/// `f + (J_θ⊙θ + J_s⊙s) − [same, constant]`: value `f`, gradient `J` (see the module docs).
/// With untracked `θ` and `log σ²` (evaluation) it is just `f`.
pub fn splice(
    value: Tensor<1>,
    theta: &Tensor<1>,
    ls2: &Tensor<1>,
    j_theta: &[f32],
    j_ls2: &[f32],
) -> Tensor<1> {
    if !theta.is_tracked() && !ls2.is_tracked() {
        return value;
    }
    let lin = linear_term(theta, ls2, j_theta, j_ls2);
    let constant = lin.clone().without_autodiff();
    value + (lin - constant)
}

/// [`splice`] for a scalar: `f + Σ(J_θ⊙θ + J_s⊙s) − [same, constant]` as a `[1]` tensor.
pub fn splice_sum(
    value: f64,
    theta: &Tensor<1>,
    ls2: &Tensor<1>,
    j_theta: &[f32],
    j_ls2: &[f32],
) -> Tensor<1> {
    let f = Tensor::<1>::from_data(TensorData::new(vec![value as f32], [1]), &theta.device());
    if !theta.is_tracked() && !ls2.is_tracked() {
        return f;
    }
    let lin = linear_term(theta, ls2, j_theta, j_ls2).sum();
    let constant = lin.clone().without_autodiff();
    f + (lin - constant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;
    use crate::variational::LOG_ALPHA_CLIP;
    use crate::variational::kl::{kl_ard_t, kl_log_uniform_t};

    /// The fused values and derivatives equal the tensor formulas (values) and central
    /// differences of them (derivatives), inside and under the clip, for both KLs, both clips
    /// (±8, the ports' ±10) and both variance forms.
    #[test]
    fn terms_match_tensor_formulas_and_finite_differences() {
        let device = backend::device();
        let theta: Vec<f32> = (0..400).map(|i| ((i as f32 * 0.37).sin()) * 0.3).collect();
        let ls2: Vec<f32> = (0..400).map(|i| -14.0 + (i as f32 * 0.11) % 16.0).collect();
        let reference = |th: &[f32], s: &[f32], pass: Pass| -> (Vec<f32>, Vec<f32>) {
            let n = th.len();
            let t = Tensor::<1>::from_data(TensorData::new(th.to_vec(), [n]), &device);
            let s = Tensor::<1>::from_data(TensorData::new(s.to_vec(), [n]), &device);
            let la = (s.clone() - (t.clone().powi_scalar(2) + THETA2_EPS).log())
                .clamp(-pass.clip, pass.clip);
            let var = match pass.variance {
                LrtVariance::AlphaTheta2 => la.clone().exp() * t.powi_scalar(2),
                LrtVariance::Sigma2 => s.exp(),
            };
            let kl = match pass.kl {
                KlKind::LogUniform => kl_log_uniform_t(la),
                KlKind::Ard => kl_ard_t(la),
            };
            let v = |x: Tensor<1>| x.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            (v(var), v(kl))
        };
        let mut passes = Vec::new();
        for kl in [KlKind::LogUniform, KlKind::Ard] {
            for clip in [LOG_ALPHA_CLIP, 10.0] {
                for variance in [LrtVariance::AlphaTheta2, LrtVariance::Sigma2] {
                    passes.push(Pass { kl, clip, variance });
                }
            }
        }
        for pass in passes {
            let (kind, clip) = (pass.kl, f64::from(pass.clip));
            let t = terms(&theta, &ls2, pass);
            let (var, kl) = reference(&theta, &ls2, pass);
            let kl_sum: f64 = kl.iter().map(|&k| f64::from(k)).sum();
            assert!((t.kl - kl_sum).abs() < 1e-4 * kl_sum.abs().max(1.0));
            for i in 0..theta.len() {
                assert!(
                    (t.var[i] - var[i]).abs() <= 1e-5 * var[i].abs() + 1e-12,
                    "var {i}"
                );
                // Derivatives by central differences in f64 of the exact formulas.
                let f = |th: f64, s: f64| -> (f64, f64) {
                    let la = (s - (th * th + f64::from(THETA2_EPS)).ln()).clamp(-clip, clip);
                    let a = la.exp();
                    let mut kl = 0.5 * (1.0 + 1.0 / a).ln();
                    if kind == KlKind::LogUniform {
                        kl += K1 / (1.0 + (K2 + K3 * la).exp());
                    }
                    let v = match pass.variance {
                        LrtVariance::AlphaTheta2 => a * th * th,
                        LrtVariance::Sigma2 => s.exp(),
                    };
                    (v, kl)
                };
                let (th, s) = (f64::from(theta[i]), f64::from(ls2[i]));
                let (h, hs) = (1e-6 * th.abs().max(1e-3), 1e-5);
                let dt = |k: usize| {
                    let (a, b) = (f(th + h, s), f(th - h, s));
                    ([a.0, a.1][k] - [b.0, b.1][k]) / (2.0 * h)
                };
                let ds = |k: usize| {
                    let (a, b) = (f(th, s + hs), f(th, s - hs));
                    ([a.0, a.1][k] - [b.0, b.1][k]) / (2.0 * hs)
                };
                let raw = s - (th * th + f64::from(THETA2_EPS)).ln();
                if (raw.abs() - clip).abs() < 1e-3 {
                    continue; // at the kink of the clip
                }
                let close =
                    |got: f32, want: f64| (f64::from(got) - want).abs() <= 2e-3 * want.abs() + 1e-6;
                assert!(
                    close(t.var_dtheta[i], dt(0)),
                    "dv/dθ {i}: {} vs {} (θ {th}, s {s})",
                    t.var_dtheta[i],
                    dt(0)
                );
                assert!(close(t.var_dls2[i], ds(0)), "dv/ds {i}");
                assert!(
                    close(t.kl_dtheta[i], dt(1)),
                    "dKL/dθ {i}: {} vs {}",
                    t.kl_dtheta[i],
                    dt(1)
                );
                assert!(close(t.kl_dls2[i], ds(1)), "dKL/ds {i}");
            }
        }
    }

    /// Spliced into the graph, the value is the host value and the gradient is the Jacobian.
    #[test]
    fn splice_has_the_host_value_and_the_given_gradient() {
        let device = backend::train_device();
        let th = Tensor::<1>::from_data(TensorData::new(vec![0.5f32, -1.0, 2.0], [3]), &device)
            .require_grad();
        let s = Tensor::<1>::from_data(TensorData::new(vec![-3.0f32, 1.0, 0.0], [3]), &device)
            .require_grad();
        let value = Tensor::<1>::from_data(TensorData::new(vec![7.0f32, 8.0, 9.0], [3]), &device);
        let y = splice(value, &th, &s, &[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        let k = splice_sum(10.0, &th, &s, &[1.0, 1.0, 1.0], &[0.5, 0.5, 0.5]);
        let got = y.clone().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(got, vec![7.0, 8.0, 9.0]);
        assert_eq!(k.clone().into_scalar::<f32>(), 10.0);
        let w = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 10.0, 100.0], [3]), &device);
        let loss = (y * w).sum() + k * 2.0;
        let g = loss.backward();
        let gt = th
            .grad(&g)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let gs = s.grad(&g).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(gt, vec![1.0 + 2.0, 20.0 + 2.0, 300.0 + 2.0]);
        assert_eq!(gs, vec![4.0 + 1.0, 50.0 + 1.0, 600.0 + 1.0]);
    }
}
