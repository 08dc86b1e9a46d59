//! The set of minima of the interpolating problem and its local dimension (Cooper 2018).
//!
//! Setting: a ReLU MLP `f(x; θ)` with `D` parameters fitted by squared error to one-hot targets on
//! `N` points with `K` outputs, no weight decay. The minima set is
//! `M = {θ : f(x_i; θ) = y_i ∀i}`; with residuals `r(θ) ∈ ℝ^{N·K}` and Jacobian
//! `J = ∂r/∂θ` (`N·K × D`), `T_θM = ker J`, the Hessian of `½‖r‖²` at `θ ∈ M` is `JᵀJ`, and the
//! local dimension is `D − rank J`, generically `D − N·K`. Every hidden ReLU unit gives one exact
//! kernel direction (its incoming weights and bias scaled up, its outgoing weights down:
//! `d/ds (w_in·eˢ, b·eˢ, w_out·e⁻ˢ)`), so `rank J ≤ D − H`.
//!
//! Everything here is in `f64` on the host: [`ReluMlp`] evaluates the network of an
//! [`Arch::Mlp`] (the same layout and parameter order as the architecture's own forward, tested
//! against it), [`fit`] reaches `‖r‖ ≤ tol` (Adam, then minimum-norm Levenberg–Marquardt steps
//! `δ = −Jᵀ(JJᵀ + λI)⁻¹r`), [`Spectrum::of`] takes the singular values of `J` and places the
//! numerical rank at the largest gap between consecutive values on a log scale.
//!
//! When the dense `J` does not fit in memory, [`JacobianMode::MatrixFree`] never forms it: the
//! products `J·v` (forward mode, [`ReluMlp::jac_times`]) and `Jᵀu` (one backward pass,
//! [`ReluMlp::jac_t_times`]) drive conjugate gradients for the Levenberg–Marquardt steps and
//! Lanczos on `JJᵀ` for the spectrum ([`lanczos_spectrum`]).

use faer::Mat;
use faer::linalg::solvers::Solve;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::arch::{Arch, Norm};
use crate::error::{Error, Result};

/// A ReLU MLP evaluated in `f64` from a flat parameter vector in the layout order of
/// [`Arch::Mlp`] (`fc1.weight [d1, d0]`, `fc1.bias`, `fc2.weight`, … row-major).
#[derive(Debug, Clone)]
pub struct ReluMlp {
    widths: Vec<usize>,
}

/// Offsets of one layer's weight and bias in the flat vector.
#[derive(Debug, Clone, Copy)]
struct LayerAt {
    w: usize,
    b: usize,
    inputs: usize,
    outputs: usize,
}

impl ReluMlp {
    /// The network of `arch`, which must be a plain MLP (no normalisation layers).
    pub fn of(arch: &Arch) -> Result<Self> {
        match arch {
            Arch::Mlp {
                widths,
                norm: Norm::None,
            } => Ok(Self {
                widths: widths.clone(),
            }),
            _ => Err(Error::Config(format!(
                "--arch {arch}: the interpolating setting needs a plain MLP (mlp:D-H-…-K without normalisation)"
            ))),
        }
    }

    /// Number of parameters `D`.
    pub fn num_params(&self) -> usize {
        self.widths.windows(2).map(|w| w[1] * (w[0] + 1)).sum()
    }

    /// Number of outputs `K`.
    pub fn outputs(&self) -> usize {
        *self.widths.last().expect("at least two widths")
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.widths[0]
    }

    /// Number of hidden ReLU units `H`.
    pub fn hidden_units(&self) -> usize {
        self.widths[1..self.widths.len() - 1].iter().sum()
    }

    fn layers(&self) -> Vec<LayerAt> {
        let mut at = 0;
        self.widths
            .windows(2)
            .map(|w| {
                let l = LayerAt {
                    w: at,
                    b: at + w[0] * w[1],
                    inputs: w[0],
                    outputs: w[1],
                };
                at = l.b + w[1];
                l
            })
            .collect()
    }

    /// Pre-activations of every layer for one input (the last is the output).
    fn pre_activations(&self, theta: &[f64], x: &[f64]) -> Vec<Vec<f64>> {
        let layers = self.layers();
        let mut out: Vec<Vec<f64>> = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            let h: Vec<f64> = match i {
                0 => x.to_vec(),
                _ => out[i - 1].iter().map(|&a| a.max(0.0)).collect(),
            };
            let a = (0..l.outputs)
                .map(|o| {
                    let row = &theta[l.w + o * l.inputs..l.w + (o + 1) * l.inputs];
                    theta[l.b + o] + row.iter().zip(&h).map(|(w, v)| w * v).sum::<f64>()
                })
                .collect();
            out.push(a);
        }
        out
    }

    /// Outputs `[n, K]` row-major for inputs `x` `[n, d0]`.
    pub fn forward(&self, theta: &[f64], x: &[f64]) -> Vec<f64> {
        x.chunks_exact(self.inputs())
            .flat_map(|xi| self.pre_activations(theta, xi).pop().expect("a layer"))
            .collect()
    }

    /// Residuals `r = f(x) − y` (`[n·K]`) and, when `jacobian`, `J = ∂r/∂θ` row-major
    /// `[n·K, D]` (row `i·K + k` is `∂f_k(x_i)/∂θ`; at a ReLU's kink the derivative 0 is taken).
    pub fn residuals(&self, theta: &[f64], x: &[f64], y: &[f64], jacobian: bool) -> Residuals {
        let (k, d) = (self.outputs(), self.num_params());
        let layers = self.layers();
        let n = x.len() / self.inputs();
        let mut r = Vec::with_capacity(n * k);
        let mut jac = if jacobian {
            vec![0.0; n * k * d]
        } else {
            Vec::new()
        };
        for (i, xi) in x.chunks_exact(self.inputs()).enumerate() {
            let pre = self.pre_activations(theta, xi);
            let out = pre.last().expect("a layer");
            r.extend(out.iter().zip(&y[i * k..(i + 1) * k]).map(|(f, t)| f - t));
            if !jacobian {
                continue;
            }
            // Δ (K × d_l): ∂f_k/∂a_l for every output k, from the top down.
            let mut delta: Vec<f64> = (0..k * k)
                .map(|j| if j / k == j % k { 1.0 } else { 0.0 })
                .collect();
            for (li, l) in layers.iter().enumerate().rev() {
                let h: Vec<f64> = match li {
                    0 => xi.to_vec(),
                    _ => pre[li - 1].iter().map(|&a| a.max(0.0)).collect(),
                };
                for kk in 0..k {
                    let row = &mut jac[(i * k + kk) * d..(i * k + kk + 1) * d];
                    let dk = &delta[kk * l.outputs..(kk + 1) * l.outputs];
                    for (o, &g) in dk.iter().enumerate() {
                        row[l.b + o] = g;
                        if g != 0.0 {
                            let dst = &mut row[l.w + o * l.inputs..l.w + (o + 1) * l.inputs];
                            for (dv, &hv) in dst.iter_mut().zip(&h) {
                                *dv = g * hv;
                            }
                        }
                    }
                }
                if li == 0 {
                    break;
                }
                let below = &pre[li - 1];
                let mut next = vec![0.0; k * l.inputs];
                for kk in 0..k {
                    let dk = &delta[kk * l.outputs..(kk + 1) * l.outputs];
                    let nk = &mut next[kk * l.inputs..(kk + 1) * l.inputs];
                    for (o, &g) in dk.iter().enumerate() {
                        if g == 0.0 {
                            continue;
                        }
                        let row = &theta[l.w + o * l.inputs..l.w + (o + 1) * l.inputs];
                        for (nv, &w) in nk.iter_mut().zip(row) {
                            *nv += g * w;
                        }
                    }
                    for (nv, &a) in nk.iter_mut().zip(below) {
                        if a <= 0.0 {
                            *nv = 0.0;
                        }
                    }
                }
                delta = next;
            }
        }
        Residuals { r, jac, d }
    }

    /// `½‖r‖²` and its gradient `Jᵀr`, by one backward pass per input.
    pub fn loss_and_gradient(&self, theta: &[f64], x: &[f64], y: &[f64]) -> (f64, Vec<f64>) {
        let k = self.outputs();
        let mut loss = 0.0;
        let grad = self.backward(theta, x, |i, out| {
            let r: Vec<f64> = out
                .iter()
                .zip(&y[i * k..(i + 1) * k])
                .map(|(f, t)| f - t)
                .collect();
            loss += 0.5 * r.iter().map(|v| v * v).sum::<f64>();
            r
        });
        (loss, grad)
    }

    /// `Jᵀu` for `u` in the residuals' space (`[n·K]`): one backward pass per input with the
    /// output cotangent `u_i` (matrix-free; `J` is never formed).
    pub fn jac_t_times(&self, theta: &[f64], x: &[f64], u: &[f64]) -> Vec<f64> {
        let k = self.outputs();
        self.backward(theta, x, |i, _| u[i * k..(i + 1) * k].to_vec())
    }

    /// `J·v` for a direction `v` in parameter space: the forward-mode derivative of every output
    /// along `v` (`[n·K]`; at a ReLU's kink the derivative 0 is taken, as in [`Self::residuals`]).
    pub fn jac_times(&self, theta: &[f64], x: &[f64], v: &[f64]) -> Vec<f64> {
        let layers = self.layers();
        let mut out = Vec::with_capacity(x.len() / self.inputs() * self.outputs());
        for xi in x.chunks_exact(self.inputs()) {
            let pre = self.pre_activations(theta, xi);
            // The tangent of the layer's input (zero for the data).
            let mut dh = vec![0.0; xi.len()];
            for (li, l) in layers.iter().enumerate() {
                let h: Vec<f64> = match li {
                    0 => xi.to_vec(),
                    _ => pre[li - 1].iter().map(|&a| a.max(0.0)).collect(),
                };
                let da: Vec<f64> = (0..l.outputs)
                    .map(|o| {
                        let w = &theta[l.w + o * l.inputs..l.w + (o + 1) * l.inputs];
                        let dw = &v[l.w + o * l.inputs..l.w + (o + 1) * l.inputs];
                        v[l.b + o]
                            + dw.iter().zip(&h).map(|(a, b)| a * b).sum::<f64>()
                            + w.iter().zip(&dh).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                dh = match li + 1 < layers.len() {
                    true => da
                        .iter()
                        .zip(&pre[li])
                        .map(|(&d, &a)| if a > 0.0 { d } else { 0.0 })
                        .collect(),
                    false => da,
                };
            }
            out.extend(dh);
        }
        out
    }

    /// `Σ_i (∂f(x_i)/∂θ)ᵀ·c_i` with the cotangent `c_i = cot(i, f(x_i))` of each input's outputs:
    /// one forward and one backward pass per input.
    fn backward(
        &self,
        theta: &[f64],
        x: &[f64],
        mut cot: impl FnMut(usize, &[f64]) -> Vec<f64>,
    ) -> Vec<f64> {
        let layers = self.layers();
        let mut grad = vec![0.0; self.num_params()];
        for (i, xi) in x.chunks_exact(self.inputs()).enumerate() {
            let pre = self.pre_activations(theta, xi);
            let mut delta = cot(i, pre.last().expect("a layer"));
            for (li, l) in layers.iter().enumerate().rev() {
                let h: Vec<f64> = match li {
                    0 => xi.to_vec(),
                    _ => pre[li - 1].iter().map(|&a| a.max(0.0)).collect(),
                };
                let mut next = vec![0.0; l.inputs];
                for (o, &g) in delta.iter().enumerate() {
                    grad[l.b + o] += g;
                    if g == 0.0 {
                        continue;
                    }
                    let w = &theta[l.w + o * l.inputs..l.w + (o + 1) * l.inputs];
                    let gw = &mut grad[l.w + o * l.inputs..l.w + (o + 1) * l.inputs];
                    for ((gv, &hv), (nv, &wv)) in gw.iter_mut().zip(&h).zip(next.iter_mut().zip(w))
                    {
                        *gv += g * hv;
                        *nv += g * wv;
                    }
                }
                if li == 0 {
                    break;
                }
                for (nv, &a) in next.iter_mut().zip(&pre[li - 1]) {
                    if a <= 0.0 {
                        *nv = 0.0;
                    }
                }
                delta = next;
            }
        }
        grad
    }

    /// The mean cross-entropy `(1/n)·Σ_i CE(f(x_i), y_i)` over inputs `x` with class labels
    /// `labels`, its gradient, and — for a direction `v` — the Hessian-vector product `Hv`, exact
    /// (Pearlmutter's R-operator: the forward-mode derivative of the backward pass; ReLU has no
    /// curvature, so `H` is the almost-everywhere Hessian, without kink terms).
    pub fn cross_entropy_hvp(
        &self,
        theta: &[f64],
        x: &[f64],
        labels: &[usize],
        v: Option<&[f64]>,
    ) -> (f64, Vec<f64>, Vec<f64>) {
        use rayon::prelude::*;
        // Blocks of inputs in parallel, their sums added in order: the same bits on any number
        // of threads.
        const BLOCK: usize = 64;
        let n = labels.len().max(1) as f64;
        let parts: Vec<(f64, Vec<f64>, Vec<f64>)> = x
            .par_chunks(BLOCK * self.inputs())
            .zip(labels.par_chunks(BLOCK))
            .map(|(xb, lb)| self.cross_entropy_hvp_block(theta, xb, lb, v, n))
            .collect();
        let d = self.num_params();
        let mut out = (
            0.0,
            vec![0.0; d],
            vec![0.0; if v.is_some() { d } else { 0 }],
        );
        for (l, g, h) in parts {
            out.0 += l;
            axpy(&mut out.1, 1.0, &g);
            axpy(&mut out.2, 1.0, &h);
        }
        out
    }

    /// [`Self::cross_entropy_hvp`]'s sums over one block of inputs (each term divided by `n`).
    fn cross_entropy_hvp_block(
        &self,
        theta: &[f64],
        x: &[f64],
        labels: &[usize],
        v: Option<&[f64]>,
        n: f64,
    ) -> (f64, Vec<f64>, Vec<f64>) {
        let layers = self.layers();
        let d = self.num_params();
        let (mut loss, mut grad) = (0.0, vec![0.0; d]);
        let mut hv = vec![0.0; if v.is_some() { d } else { 0 }];
        let zero = vec![0.0; d];
        let dv = v.unwrap_or(&zero);
        for (xi, &yi) in x.chunks_exact(self.inputs()).zip(labels) {
            let pre = self.pre_activations(theta, xi);
            let act = |li: usize| -> Vec<f64> {
                match li {
                    0 => xi.to_vec(),
                    _ => pre[li - 1].iter().map(|&a| a.max(0.0)).collect(),
                }
            };
            // R-forward: R(a_l) for every layer, R(h_0) = 0.
            let mut r_pre: Vec<Vec<f64>> = Vec::with_capacity(layers.len());
            let mut r_h = vec![0.0; xi.len()];
            for (li, l) in layers.iter().enumerate() {
                let h = act(li);
                let ra: Vec<f64> = (0..l.outputs)
                    .map(|o| {
                        let w = &theta[l.w + o * l.inputs..l.w + (o + 1) * l.inputs];
                        let dw = &dv[l.w + o * l.inputs..l.w + (o + 1) * l.inputs];
                        dv[l.b + o]
                            + dw.iter().zip(&h).map(|(a, b)| a * b).sum::<f64>()
                            + w.iter().zip(&r_h).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                r_h = ra
                    .iter()
                    .zip(&pre[li])
                    .map(|(&r, &a)| if a > 0.0 { r } else { 0.0 })
                    .collect();
                r_pre.push(ra);
            }
            // Softmax cross-entropy: δ_L = p − e_y, R(δ_L) = p⊙R(z) − p·(pᵀR(z)).
            let z = pre.last().expect("a layer");
            let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            let p: Vec<f64> = e.iter().map(|v| v / sum).collect();
            loss += (m + sum.ln() - z[yi]) / n;
            let rz = r_pre.last().expect("a layer");
            let prz: f64 = p.iter().zip(rz).map(|(a, b)| a * b).sum();
            let mut delta: Vec<f64> = p
                .iter()
                .enumerate()
                .map(|(k, &pk)| pk - f64::from(k == yi))
                .collect();
            let mut r_delta: Vec<f64> = p.iter().zip(rz).map(|(pk, r)| pk * r - pk * prz).collect();
            for (li, l) in layers.iter().enumerate().rev() {
                let h = act(li);
                let rh: Vec<f64> = match li {
                    0 => vec![0.0; l.inputs],
                    _ => r_pre[li - 1]
                        .iter()
                        .zip(&pre[li - 1])
                        .map(|(&r, &a)| if a > 0.0 { r } else { 0.0 })
                        .collect(),
                };
                let mut next = vec![0.0; l.inputs];
                let mut r_next = vec![0.0; l.inputs];
                for o in 0..l.outputs {
                    let (g, rg) = (delta[o] / n, r_delta[o] / n);
                    grad[l.b + o] += g;
                    let row = l.w + o * l.inputs..l.w + (o + 1) * l.inputs;
                    let w = &theta[row.clone()];
                    let dw = &dv[row.clone()];
                    for j in 0..l.inputs {
                        grad[row.start + j] += g * h[j];
                        next[j] += delta[o] * w[j];
                    }
                    if v.is_some() {
                        hv[l.b + o] += rg;
                        for j in 0..l.inputs {
                            hv[row.start + j] += rg * h[j] + g * rh[j];
                            r_next[j] += dw[j] * delta[o] + w[j] * r_delta[o];
                        }
                    }
                }
                if li == 0 {
                    break;
                }
                for j in 0..l.inputs {
                    if pre[li - 1][j] <= 0.0 {
                        next[j] = 0.0;
                        r_next[j] = 0.0;
                    }
                }
                delta = next;
                r_delta = r_next;
            }
        }
        (loss, grad, hv)
    }

    /// Hidden units whose pre-activation is `≤ 0` on every input of `x`: each adds exact
    /// kernel directions beyond the generic count (its incoming weights and bias move freely
    /// while it stays off, and its outgoing weights multiply zero).
    pub fn dead_units(&self, theta: &[f64], x: &[f64]) -> usize {
        let mut alive: Vec<Vec<bool>> = self.widths[1..self.widths.len() - 1]
            .iter()
            .map(|&w| vec![false; w])
            .collect();
        for xi in x.chunks_exact(self.inputs()) {
            let pre = self.pre_activations(theta, xi);
            for (l, a) in alive.iter_mut().enumerate() {
                for (u, v) in a.iter_mut().enumerate() {
                    *v |= pre[l][u] > 0.0;
                }
            }
        }
        alive.iter().flatten().filter(|&&v| !v).count()
    }

    /// The `H` rescaling directions at `theta`, one per hidden unit: its incoming weights and
    /// bias at `+θ`, its outgoing weights at `−θ`, zero elsewhere (`d/ds` of the rescaling by
    /// `eˢ`). Each lies in `ker J` exactly (ReLU is positively homogeneous).
    pub fn rescaling_directions(&self, theta: &[f64]) -> Vec<Vec<f64>> {
        let layers = self.layers();
        let mut out = Vec::with_capacity(self.hidden_units());
        for pair in layers.windows(2) {
            let (l, next) = (pair[0], pair[1]);
            for j in 0..l.outputs {
                let mut v = vec![0.0; self.num_params()];
                let rows = l.w + j * l.inputs..l.w + (j + 1) * l.inputs;
                v[rows.clone()].copy_from_slice(&theta[rows]);
                v[l.b + j] = theta[l.b + j];
                for o in 0..next.outputs {
                    let at = next.w + o * next.inputs + j;
                    v[at] = -theta[at];
                }
                out.push(v);
            }
        }
        out
    }
}

/// Residuals and (optionally) the Jacobian of [`ReluMlp::residuals`].
#[derive(Debug, Clone)]
pub struct Residuals {
    /// `r = f(x) − y`, `[n·K]`.
    pub r: Vec<f64>,
    /// `J` row-major `[n·K, D]` (empty when not asked for).
    pub jac: Vec<f64>,
    d: usize,
}

impl Residuals {
    /// `‖r‖₂`.
    pub fn norm(&self) -> f64 {
        self.r.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    /// `J·v`.
    pub fn jac_times(&self, v: &[f64]) -> Vec<f64> {
        self.jac
            .chunks_exact(self.d)
            .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
            .collect()
    }

    /// The Jacobian as a dense matrix.
    pub fn jac_matrix(&self) -> Mat<f64> {
        let m = self.r.len();
        Mat::from_fn(m, self.d, |i, j| self.jac[i * self.d + j])
    }

    /// The minimum-norm Levenberg–Marquardt step `δ = −Jᵀ(JJᵀ + λI)⁻¹ r` (the Gauss–Newton
    /// step `−J⁺r` as λ → 0); `None` if the damped system is not positive definite.
    pub fn min_norm_step(&self, lambda: f64) -> Option<Vec<f64>> {
        let m = self.r.len();
        let j = self.jac_matrix();
        let mut a = &j * j.transpose();
        for i in 0..m {
            a[(i, i)] += lambda;
        }
        let llt = a.llt(faer::Side::Lower).ok()?;
        let rhs = Mat::from_fn(m, 1, |i, _| self.r[i]);
        let u = llt.solve(&rhs);
        let step = j.transpose() * &u;
        Some((0..self.d).map(|i| -step[(i, 0)]).collect())
    }
}

/// Settings of [`fit`].
#[derive(Debug, Clone, Copy)]
pub struct FitConfig {
    /// Full-batch Adam steps on `½‖r‖²/N` before the polish.
    pub adam_steps: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Target `‖r‖₂`.
    pub tol: f64,
    /// At most this many accepted Levenberg–Marquardt steps.
    pub max_lm: usize,
    /// Dense `J` or matrix-free products for the Levenberg–Marquardt steps.
    pub mode: JacobianMode,
}

/// How `J` enters the polish and the spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JacobianMode {
    /// `J` formed in memory: Cholesky of `JJᵀ + λI` for the steps, the SVD of `J` for the
    /// spectrum.
    Dense,
    /// `J` never formed: conjugate gradients on `JJᵀ + λI` and Lanczos on `JJᵀ`, from the
    /// products `J·v` and `Jᵀu`.
    MatrixFree,
}

impl JacobianMode {
    /// Bytes this mode holds for an `m × d` Jacobian: dense, [`jacobian_bytes`]; matrix-free,
    /// the Lanczos basis and the tridiagonal matrix's dense copy (`2·m²` values) and a few
    /// vectors of each size.
    pub fn bytes(self, m: usize, d: usize) -> u64 {
        match self {
            JacobianMode::Dense => jacobian_bytes(m, d),
            JacobianMode::MatrixFree => 8 * (2 * m as u64 * m as u64 + 8 * (m + d) as u64),
        }
    }

    /// The name recorded in results.
    pub fn name(self) -> &'static str {
        match self {
            JacobianMode::Dense => "dense",
            JacobianMode::MatrixFree => "matrix-free",
        }
    }
}

/// What [`fit`] reached.
#[derive(Debug, Clone)]
pub struct Fit {
    /// The parameters.
    pub theta: Vec<f64>,
    /// `‖r‖₂` after Adam.
    pub residual_after_adam: f64,
    /// `‖r‖₂` at the end.
    pub residual: f64,
    /// Accepted Levenberg–Marquardt steps.
    pub lm_steps: usize,
}

/// Fits `net` from `theta` to the targets `y` on `x` until `‖r‖₂ ≤ tol`: full-batch Adam
/// (β = 0.9, 0.999), then minimum-norm Levenberg–Marquardt steps with the damping λ scaled to
/// the mean diagonal of `JJᵀ` (÷10 on success, ×10 on failure), stopping early when three
/// accepted steps in a row gain less than 0.1% each. `progress` sees
/// `(phase, step, ‖r‖)` now and then.
pub fn fit(
    net: &ReluMlp,
    mut theta: Vec<f64>,
    x: &[f64],
    y: &[f64],
    cfg: FitConfig,
    mut progress: impl FnMut(&str, usize, f64),
) -> Fit {
    let n = (x.len() / net.inputs()).max(1) as f64;
    let (mut m, mut v) = (vec![0.0; theta.len()], vec![0.0; theta.len()]);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-12);
    for t in 1..=cfg.adam_steps {
        let (loss, g) = net.loss_and_gradient(&theta, x, y);
        if (2.0 * loss).sqrt() <= cfg.tol {
            break;
        }
        if t % 500 == 0 {
            progress("adam", t, (2.0 * loss).sqrt());
        }
        let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
        for i in 0..theta.len() {
            let gi = g[i] / n;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            theta[i] -= cfg.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
        }
    }
    let dense = cfg.mode == JacobianMode::Dense;
    let mut res = net.residuals(&theta, x, y, dense);
    let residual_after_adam = res.norm();
    let mut mu = 1e-3;
    let mut lm_steps = 0;
    let mut tries = 0;
    let mut stalled = 0;
    while res.norm() > cfg.tol && lm_steps < cfg.max_lm && tries < 10 * cfg.max_lm.max(1) {
        tries += 1;
        // λ is scaled to the mean diagonal of JJᵀ (tr(JJᵀ)/m; estimated from four Rademacher
        // probes, ‖Jᵀz‖², without J).
        let m = res.r.len().max(1) as f64;
        let scale = match dense {
            true => res.jac.iter().map(|v| v * v).sum::<f64>() / m,
            false => gram_trace(net, &theta, x, res.r.len()) / m,
        };
        let lambda = mu * scale.max(f64::MIN_POSITIVE);
        let step = match dense {
            true => res.min_norm_step(lambda),
            false => Some(min_norm_step_matrix_free(net, &theta, x, &res.r, lambda)),
        };
        let Some(step) = step else {
            mu *= 10.0;
            continue;
        };
        let trial: Vec<f64> = theta.iter().zip(&step).map(|(a, b)| a + b).collect();
        let next = net.residuals(&trial, x, y, dense);
        if next.norm() < res.norm() {
            // A step that gains less than 0.1% counts towards a stall: three in a row end the
            // polish (the residual left lies outside the range of J, e.g. rank J < N·K).
            stalled = match next.norm() > 0.999 * res.norm() {
                true => stalled + 1,
                false => 0,
            };
            theta = trial;
            res = next;
            lm_steps += 1;
            mu = (mu / 10.0).max(1e-15);
            progress("lm", lm_steps, res.norm());
            if stalled >= 3 {
                break;
            }
        } else {
            mu *= 10.0;
            if mu > 1e12 {
                break;
            }
        }
    }
    Fit {
        residual: res.norm(),
        theta,
        residual_after_adam,
        lm_steps,
    }
}

/// The singular values of `J` and the numerical rank at their largest log-gap.
#[derive(Debug, Clone)]
pub struct Spectrum {
    /// Singular values, largest first (`min(N·K, D)` of them).
    pub values: Vec<f64>,
    /// The noise floor `σ₁·ε·max(N·K, D)`: values below it are zero to working precision (and
    /// are read as the floor when gaps are measured).
    pub floor: f64,
    /// Numerical rank: the number of values above the largest gap.
    pub rank: usize,
    /// `σ_rank / σ_{rank+1}` (with the floor standing for a missing or smaller `σ_{rank+1}`).
    pub gap_ratio: f64,
}

impl Spectrum {
    /// The spectrum of the `m × d` matrix `j`. The gap is searched between consecutive values and
    /// between the smallest value and the floor, so a full-rank matrix has rank `min(m, d)`.
    pub fn of(j: &Mat<f64>) -> Result<Self> {
        let values = j
            .singular_values()
            .map_err(|e| Error::Config(format!("singular values of the Jacobian: {e:?}")))?;
        let dim = j.nrows().max(j.ncols()) as f64;
        let floor = values.first().copied().unwrap_or(0.0) * f64::EPSILON * dim;
        Ok(Self::from_values(values, floor))
    }

    /// The rank rule on given values (largest first) and floor.
    pub fn from_values(values: Vec<f64>, floor: f64) -> Self {
        let floor = floor.max(f64::MIN_POSITIVE);
        let at = |i: usize| values.get(i).copied().unwrap_or(0.0).max(floor);
        let (mut rank, mut best) = (0, 1.0);
        for i in 0..values.len() {
            let ratio = at(i) / at(i + 1);
            if ratio > best {
                (rank, best) = (i + 1, ratio);
            }
        }
        Self {
            values,
            floor,
            rank,
            gap_ratio: best,
        }
    }
}

/// Bytes of a dense `m × d` Jacobian in `f64`, its `m × m` Gram matrix and the singular value
/// decomposition's copy (`≈ 2·m·d + m²` values).
pub fn jacobian_bytes(m: usize, d: usize) -> u64 {
    8 * (2 * m as u64 * d as u64 + m as u64 * m as u64)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

/// `tr(JJᵀ)` estimated by Hutchinson's estimator with four seeded Rademacher vectors
/// (`E‖Jᵀz‖² = tr(JJᵀ)`).
fn gram_trace(net: &ReluMlp, theta: &[f64], x: &[f64], m: usize) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7ace);
    let probes = 4;
    (0..probes)
        .map(|_| {
            let z: Vec<f64> = (0..m)
                .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                .collect();
            let g = net.jac_t_times(theta, x, &z);
            dot(&g, &g)
        })
        .sum::<f64>()
        / probes as f64
}

/// The minimum-norm Levenberg–Marquardt step `δ = −Jᵀ(JJᵀ + λI)⁻¹r` without `J`: conjugate
/// gradients on `(JJᵀ + λI)u = r` with the products `J(Jᵀu)`, to a relative residual of 1e-12
/// or `2m` iterations.
pub fn min_norm_step_matrix_free(
    net: &ReluMlp,
    theta: &[f64],
    x: &[f64],
    r: &[f64],
    lambda: f64,
) -> Vec<f64> {
    let apply = |u: &[f64]| {
        let mut a = net.jac_times(theta, x, &net.jac_t_times(theta, x, u));
        axpy(&mut a, lambda, u);
        a
    };
    let m = r.len();
    let mut u = vec![0.0; m];
    let mut res = r.to_vec();
    let mut p = res.clone();
    let mut rr = dot(&res, &res);
    let target = 1e-24 * rr;
    for _ in 0..2 * m {
        if rr <= target || rr == 0.0 {
            break;
        }
        let ap = apply(&p);
        let alpha = rr / dot(&p, &ap);
        axpy(&mut u, alpha, &p);
        axpy(&mut res, -alpha, &ap);
        let next = dot(&res, &res);
        let beta = next / rr;
        rr = next;
        for (pv, rv) in p.iter_mut().zip(&res) {
            *pv = rv + beta * *pv;
        }
    }
    net.jac_t_times(theta, x, &u)
        .into_iter()
        .map(|v| -v)
        .collect()
}

/// The singular values of an `m × D` matrix `J` from the products `apply(u) = J(Jᵀu)` alone:
/// Lanczos on `JJᵀ` in `ℝ^m` with full reorthogonalisation (two Gram–Schmidt passes per step),
/// `m` steps from a seeded random start; when the Krylov space closes (an invariant subspace,
/// e.g. a zero eigenvalue of multiplicity above one) the basis goes on from a fresh random
/// direction orthogonal to it. The eigenvalues `λ_i` of the tridiagonal matrix are those of
/// `JJᵀ` to about `ε·m·σ₁²`, so `σ_i = √λ_i` is resolved down to `σ₁·√(ε·m)`: the floor of the
/// returned [`Spectrum`] (the dense SVD resolves `σ₁·ε·max(m, D)`).
pub fn lanczos_spectrum(
    m: usize,
    apply: impl Fn(&[f64]) -> Vec<f64>,
    seed: u64,
) -> Result<Spectrum> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(m);
    let mut alpha = Vec::with_capacity(m);
    let mut beta = Vec::with_capacity(m);
    let orthogonalise = |w: &mut Vec<f64>, basis: &[Vec<f64>]| {
        for _ in 0..2 {
            for q in basis {
                let c = dot(w, q);
                axpy(w, -c, q);
            }
        }
    };
    let fresh = |basis: &[Vec<f64>], rng: &mut ChaCha8Rng| {
        let mut v: Vec<f64> = (0..m).map(|_| rng.random_range(-1.0..1.0)).collect();
        orthogonalise(&mut v, basis);
        let n = dot(&v, &v).sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    };
    let mut v = fresh(&basis, &mut rng);
    let mut norm_estimate = 0.0f64;
    for j in 0..m {
        let mut w = apply(&v);
        let a = dot(&w, &v);
        alpha.push(a);
        basis.push(v);
        orthogonalise(&mut w, &basis);
        let b = dot(&w, &w).sqrt();
        norm_estimate = norm_estimate.max(a.abs() + b);
        if j + 1 == m {
            break;
        }
        if b > 1e-10 * norm_estimate {
            beta.push(b);
            v = w.into_iter().map(|x| x / b).collect();
        } else {
            beta.push(0.0);
            v = fresh(&basis, &mut rng);
        }
    }
    let t = Mat::from_fn(m, m, |i, j| match i.abs_diff(j) {
        0 => alpha[i],
        1 => beta[i.min(j)],
        _ => 0.0,
    });
    let mut values: Vec<f64> = t
        .self_adjoint_eigenvalues(faer::Side::Lower)
        .map_err(|e| Error::Config(format!("eigenvalues of the Lanczos matrix: {e:?}")))?
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .collect();
    values.sort_by(|a, b| b.total_cmp(a));
    let floor = values.first().copied().unwrap_or(0.0) * (f64::EPSILON * m as f64).sqrt();
    Ok(Spectrum::from_values(values, floor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, seed: u64, scale: f64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| scale * rng.random_range(-1.0..1.0))
            .collect()
    }

    fn one_hot(n: usize, k: usize) -> Vec<f64> {
        (0..n * k)
            .map(|i| if (i / k) % k == i % k { 1.0 } else { 0.0 })
            .collect()
    }

    /// The f64 network is the architecture's own: its outputs equal `Arch::forward` on the same
    /// weights (to f32 rounding), so a fitted θ saved as a model means what it meant here.
    #[test]
    fn forward_is_the_architectures() {
        use burn::tensor::{Tensor, TensorData};
        let arch: Arch = "mlp:5-7-4-3".parse().unwrap();
        let device = crate::backend::device();
        let p = arch.init(3, &device);
        let theta: Vec<f64> = p.to_flat_trained().into_iter().map(f64::from).collect();
        let net = ReluMlp::of(&arch).unwrap();
        assert_eq!(net.num_params(), theta.len());
        let x = random(9 * 5, 4, 2.0);
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let x64: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
        let xt = Tensor::<2>::from_data(TensorData::new(x32, [9, 5]), &device);
        let theirs = crate::params::set::host_vec(&arch.forward(&p, xt));
        let ours = net.forward(&theta, &x64);
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a - f64::from(*b)).abs() < 1e-5 * (1.0 + a.abs()),
                "{a} vs {b}"
            );
        }
        assert!(
            "mlp:5-7-3:norm=bn"
                .parse::<Arch>()
                .map(|a| ReluMlp::of(&a).is_err())
                .unwrap()
        );
    }

    /// The analytic Jacobian against central differences of the residuals, and the gradient
    /// `Jᵀr` against the Jacobian.
    #[test]
    fn jacobian_and_gradient_match_finite_differences() {
        let net = ReluMlp::of(&"mlp:4-5-3-2".parse().unwrap()).unwrap();
        let d = net.num_params();
        let theta = random(d, 1, 0.8);
        let (x, y) = (random(6 * 4, 2, 1.0), one_hot(6, 2));
        let res = net.residuals(&theta, &x, &y, true);
        let h = 1e-6;
        for p in 0..d {
            let mut a = theta.clone();
            let mut b = theta.clone();
            a[p] += h;
            b[p] -= h;
            let (ra, rb) = (
                net.residuals(&a, &x, &y, false),
                net.residuals(&b, &x, &y, false),
            );
            for row in 0..res.r.len() {
                let fd = (ra.r[row] - rb.r[row]) / (2.0 * h);
                let an = res.jac[row * d + p];
                assert!((fd - an).abs() < 1e-7, "J[{row},{p}] {an} vs {fd}");
            }
        }
        let (_, g) = net.loss_and_gradient(&theta, &x, &y);
        for (p, gp) in g.iter().enumerate() {
            let jtr: f64 = (0..res.r.len())
                .map(|row| res.jac[row * d + p] * res.r[row])
                .sum();
            assert!((gp - jtr).abs() < 1e-10, "grad {p}");
        }
    }

    /// A linear model `f = Wx + b` on N < d + 1 generic points: J has rank exactly N·K (its rows
    /// are `e_k ⊗ [x_i, 1]`), so the minima set has dimension `D − N·K`; the fit reaches it.
    #[test]
    fn linear_model_dimension_is_exact() {
        let net = ReluMlp::of(&"mlp:6-3".parse().unwrap()).unwrap();
        let (n, k, d) = (4, 3, net.num_params());
        let (x, y) = (random(n * 6, 3, 1.0), one_hot(n, k));
        let cfg = FitConfig {
            adam_steps: 0,
            lr: 0.0,
            tol: 1e-10,
            max_lm: 50,
            mode: JacobianMode::Dense,
        };
        let f = fit(&net, random(d, 4, 0.1), &x, &y, cfg, |_, _, _| {});
        assert!(f.residual <= 1e-10, "{}", f.residual);
        let s = Spectrum::of(&net.residuals(&f.theta, &x, &y, true).jac_matrix()).unwrap();
        assert_eq!(s.rank, n * k);
        assert_eq!(d - s.rank, 21 - 12);
        assert!(s.gap_ratio > 1e8, "{}", s.gap_ratio);

        // On an affine solution set the polish is the orthogonal projection: every step lies in
        // the row space of the constant J, so the fit from θ0 lands on θ0 − J⁺r(θ0), the closest
        // exact fit (computed here in closed form, J⁺r = Jᵀ(JJᵀ)⁻¹r).
        let theta0 = random(d, 5, 1.0);
        let res = net.residuals(&theta0, &x, &y, true);
        let closest: Vec<f64> = theta0
            .iter()
            .zip(res.min_norm_step(0.0).unwrap())
            .map(|(a, b)| a + b)
            .collect();
        let f = fit(&net, theta0.clone(), &x, &y, cfg, |_, _, _| {});
        let gap: f64 = f
            .theta
            .iter()
            .zip(&closest)
            .map(|(a, b)| (a - b).powi(2))
            .sum();
        let moved: f64 = f
            .theta
            .iter()
            .zip(&theta0)
            .map(|(a, b)| (a - b).powi(2))
            .sum();
        assert!(
            gap.sqrt() < 1e-9 * moved.sqrt(),
            "{} vs {}",
            gap.sqrt(),
            moved.sqrt()
        );
    }

    /// At an interpolating point of a ReLU MLP: the rescaling directions lie in ker J to 1e-8,
    /// the Hessian of ½‖r‖² (central differences of the gradient) equals JᵀJ, and a
    /// Gauss–Newton step from the point moves it by less than 1e-8.
    #[test]
    fn at_a_minimum_kernel_hessian_and_projection_hold() {
        let net = ReluMlp::of(&"mlp:5-8-3".parse().unwrap()).unwrap();
        let (n, k, d) = (6, 3, net.num_params());
        let (x, y) = (random(n * 5, 5, 1.0), one_hot(n, k));
        let cfg = FitConfig {
            adam_steps: 2000,
            lr: 1e-2,
            tol: 1e-12,
            max_lm: 100,
            mode: JacobianMode::Dense,
        };
        let f = fit(&net, random(d, 6, 0.5), &x, &y, cfg, |_, _, _| {});
        assert!(f.residual <= 1e-12, "{}", f.residual);
        let res = net.residuals(&f.theta, &x, &y, true);
        let jnorm = res.jac.iter().map(|v| v * v).sum::<f64>().sqrt();
        for v in net.rescaling_directions(&f.theta) {
            let vn = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            let jv = res.jac_times(&v);
            let r = jv.iter().map(|a| a * a).sum::<f64>().sqrt() / (jnorm * vn);
            assert!(r < 1e-8, "rescaling direction: ‖Jv‖/(‖J‖‖v‖) = {r}");
        }
        // Hessian-vector products along random directions.
        for seed in 0..3 {
            let v = random(d, 10 + seed, 1.0);
            let h = 1e-5;
            let shifted = |s: f64| {
                let t: Vec<f64> = f.theta.iter().zip(&v).map(|(a, b)| a + s * b).collect();
                net.loss_and_gradient(&t, &x, &y).1
            };
            let (gp, gm) = (shifted(h), shifted(-h));
            let jv = res.jac_times(&v);
            for p in 0..d {
                let fd = (gp[p] - gm[p]) / (2.0 * h);
                let jtjv: f64 = (0..jv.len())
                    .map(|row| res.jac[row * d + p] * jv[row])
                    .sum();
                assert!(
                    (fd - jtjv).abs() < 1e-5 * (1.0 + jtjv.abs()),
                    "H v [{p}]: {fd} vs {jtjv}"
                );
            }
        }
        let step = res.min_norm_step(1e-14).unwrap();
        let moved = step.iter().map(|a| a * a).sum::<f64>().sqrt();
        assert!(moved < 1e-8, "moved {moved}");
        let s = Spectrum::of(&res.jac_matrix()).unwrap();
        assert!(s.rank <= d - net.hidden_units());
        // The matrix-free polish from the same Adam point reaches the tolerance too, and its
        // minimum-norm step at the minimum does not move it.
        let free = fit(
            &net,
            random(d, 6, 0.5),
            &x,
            &y,
            FitConfig {
                mode: JacobianMode::MatrixFree,
                ..cfg
            },
            |_, _, _| {},
        );
        assert!(free.residual <= 1e-12, "{}", free.residual);
        let r = net.residuals(&free.theta, &x, &y, false).r;
        let step = min_norm_step_matrix_free(&net, &free.theta, &x, &r, 1e-14);
        assert!(dot(&step, &step).sqrt() < 1e-8);
    }

    /// The rank rule on made-up spectra: a clear gap, full rank (gap to the floor), all zero.
    #[test]
    fn rank_sits_at_the_largest_log_gap() {
        let s = Spectrum::from_values(vec![3.0, 1.0, 0.5, 1e-13, 1e-14], 1e-15);
        assert_eq!(s.rank, 3);
        assert!((s.gap_ratio - 0.5e13).abs() < 1e-3 * 0.5e13);
        let s = Spectrum::from_values(vec![3.0, 2.0, 1.0], 1e-15);
        assert_eq!(s.rank, 3);
        let s = Spectrum::from_values(vec![0.0, 0.0], 1e-15);
        assert_eq!(s.rank, 0);
    }

    /// The matrix-free products are the dense Jacobian's: `J·v` and `Jᵀu` against `J` formed
    /// row by row, and the adjoint identity `uᵀ(Jv) = (Jᵀu)ᵀv`.
    #[test]
    fn matrix_free_products_are_the_jacobians() {
        let net = ReluMlp {
            widths: vec![6, 7, 5, 3],
        };
        let d = net.num_params();
        let (x, theta) = (random(9 * 6, 1, 1.0), random(d, 2, 0.7));
        let y = one_hot(9, 3);
        let res = net.residuals(&theta, &x, &y, true);
        let (v, u) = (random(d, 3, 1.0), random(27, 4, 1.0));
        let jv = net.jac_times(&theta, &x, &v);
        for (a, b) in jv.iter().zip(res.jac_times(&v)) {
            assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let jtu = net.jac_t_times(&theta, &x, &u);
        let jm = res.jac_matrix();
        for (c, g) in jtu.iter().enumerate() {
            let want: f64 = (0..27).map(|r| jm[(r, c)] * u[r]).sum();
            assert!(
                (g - want).abs() <= 1e-12 * (1.0 + want.abs()),
                "{g} vs {want}"
            );
        }
        let (l, r) = (dot(&u, &jv), dot(&jtu, &v));
        assert!((l - r).abs() <= 1e-12 * l.abs().max(1.0));
        // The gradient of ½‖r‖² is Jᵀr.
        let (_, g) = net.loss_and_gradient(&theta, &x, &y);
        for (a, b) in g.iter().zip(net.jac_t_times(&theta, &x, &res.r)) {
            assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()));
        }
    }

    /// Lanczos on JJᵀ reproduces the dense SVD: every singular value above its floor to 1e-7
    /// relative, and the rank — on a wide J (full row rank) and on a tall one whose rank is at
    /// most D − H (zero eigenvalues of JJᵀ of high multiplicity, reached through restarts).
    #[test]
    fn lanczos_spectrum_matches_the_dense_svd() {
        for (widths, n) in [(vec![6, 9, 4], 5), (vec![4, 3, 3], 12)] {
            let net = ReluMlp { widths };
            let d = net.num_params();
            let k = net.outputs();
            let (x, theta) = (random(n * net.inputs(), 5, 1.0), random(d, 6, 0.8));
            let y = one_hot(n, k);
            let res = net.residuals(&theta, &x, &y, true);
            let dense = Spectrum::of(&res.jac_matrix()).unwrap();
            let lanczos = lanczos_spectrum(
                n * k,
                |u| net.jac_times(&theta, &x, &net.jac_t_times(&theta, &x, u)),
                0,
            )
            .unwrap();
            assert_eq!(lanczos.rank, dense.rank, "D = {d}, N·K = {}", n * k);
            assert!(dense.rank <= d - net.hidden_units());
            let s1 = dense.values[0];
            for (a, b) in lanczos.values.iter().zip(&dense.values) {
                if *b > 1e-3 * s1 {
                    assert!((a - b).abs() <= 1e-7 * s1, "{a} vs {b}");
                } else {
                    assert!(*a <= 1e-3 * s1 + 1e-7 * s1, "{a} vs {b}");
                }
            }
            assert!(lanczos.gap_ratio > 1e3, "{}", lanczos.gap_ratio);
        }
    }

    /// The conjugate-gradient Levenberg–Marquardt step equals the dense Cholesky one.
    #[test]
    fn matrix_free_step_is_the_dense_step() {
        let net = ReluMlp {
            widths: vec![5, 8, 3],
        };
        let d = net.num_params();
        let (x, theta) = (random(6 * 5, 7, 1.0), random(d, 8, 0.6));
        let y = one_hot(6, 3);
        let res = net.residuals(&theta, &x, &y, true);
        for lambda in [1e-6, 1e-2, 1.0] {
            let dense = res.min_norm_step(lambda).unwrap();
            let free = min_norm_step_matrix_free(&net, &theta, &x, &res.r, lambda);
            let scale = dot(&dense, &dense).sqrt();
            let diff: f64 = dense
                .iter()
                .zip(&free)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(diff <= 1e-8 * scale, "λ = {lambda}: {diff} vs {scale}");
        }
    }

    /// The exact cross-entropy gradient and Hessian-vector product against central differences
    /// in f64 (of the loss and of the gradient).
    #[test]
    fn cross_entropy_gradient_and_hvp_match_finite_differences() {
        let net = ReluMlp {
            widths: vec![5, 7, 6, 3],
        };
        let d = net.num_params();
        let (x, theta) = (random(8 * 5, 11, 1.0), random(d, 12, 0.8));
        let labels: Vec<usize> = (0..8).map(|i| i % 3).collect();
        let v = random(d, 13, 1.0);
        let (_, g, hv) = net.cross_entropy_hvp(&theta, &x, &labels, Some(&v));
        let h = 1e-6;
        let at = |s: f64| {
            let t: Vec<f64> = theta.iter().zip(&v).map(|(a, b)| a + s * b).collect();
            net.cross_entropy_hvp(&t, &x, &labels, None)
        };
        let (lp, gp, _) = at(h);
        let (lm, gm, _) = at(-h);
        let dir = (lp - lm) / (2.0 * h);
        assert!((dir - dot(&g, &v)).abs() < 1e-6 * (1.0 + dir.abs()));
        for i in 0..d {
            let fd = (gp[i] - gm[i]) / (2.0 * h);
            assert!(
                (fd - hv[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "Hv[{i}]: {fd} vs {}",
                hv[i]
            );
        }
    }
}
