//! Sharpness: the Hessian `H = ∇²L(θ)` of the mean cross-entropy over one fixed evaluation
//! subset (normalisation layers in eval mode), probed through Hessian-vector products as
//! PyHessian does (Yao et al. 2020): the top eigenvalues by power iteration with Gram–Schmidt
//! deflation, the trace by Hutchinson's estimator with Rademacher vectors.
//!
//! For plain MLPs the products are exact, in f64 on the host ([`ReluMlp::cross_entropy_hvp`]:
//! Pearlmutter's R-operator, the almost-everywhere Hessian that double backpropagation gives).
//! For other networks — burn's autodiff has no second derivatives — `Hv` is a central difference
//! of gradients, `Hv ≈ (∇L(θ + h·v̂) − ∇L(θ − h·v̂))·‖v‖/(2h)` with `v̂ = v/‖v‖` and `h` =
//! [`HVP_STEP`]: its truncation error is `O(h²)` where the loss is smooth, its rounding error
//! about `ε_f32·‖∇L‖/h`, and where `θ ± h·v̂` straddles a ReLU kink the difference includes the
//! jump of the gradient (on a digits MLP at `h` = 1e-2 this adds about a third to the trace and 0.4%
//! to the top eigenvalue against the exact products). [`Hessian::step_error`] measures the
//! difference between the steps `h` and `2h` on a given direction, reported with every result.
//! Running statistics (state) are constants: their entries of `v` and of `Hv` are zero.

use burn::tensor::{Device, Int, Tensor};
use rand::Rng;

use super::{EVAL_BATCH, batch_tensors, cross_entropy};
use crate::arch::Arch;
use crate::backend;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::minima::ReluMlp;
use crate::params::ParamSet;
use crate::params::set::host_vec;

/// The difference step `h` of [`Hessian::hvp`], in weight units along the unit direction.
pub const HVP_STEP: f64 = 1e-2;

/// The Hessian of one network's loss on a fixed subset, as products.
pub struct Hessian {
    arch: Arch,
    /// θ as f64, state included (kept as it is).
    theta: Vec<f64>,
    /// Per flat index: whether it is a trained parameter (not state).
    trained: Vec<bool>,
    params: ParamSet,
    products: Products,
    /// The difference step (central differences only).
    pub step: f64,
}

/// How [`Hessian::hvp`] is computed.
enum Products {
    /// Exact, in f64 on the host (plain MLPs).
    Exact {
        net: ReluMlp,
        x: Vec<f64>,
        labels: Vec<usize>,
    },
    /// Central differences of f32 gradients from the graph.
    Differences {
        batches: Vec<(Tensor<2>, Tensor<1, Int>, usize)>,
        n: usize,
        device: Device,
    },
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

impl Hessian {
    /// The Hessian of `arch`'s mean cross-entropy on `data` at `params` (their state as it is:
    /// recompute it first for an interpolated network): exact products for a plain MLP, central
    /// differences otherwise.
    pub fn new(arch: &Arch, params: &ParamSet, data: &Dataset) -> Result<Self> {
        Self::build(arch, params, data, true)
    }

    /// [`Hessian::new`] with central differences whatever the architecture.
    pub fn by_differences(arch: &Arch, params: &ParamSet, data: &Dataset) -> Result<Self> {
        Self::build(arch, params, data, false)
    }

    fn build(arch: &Arch, params: &ParamSet, data: &Dataset, exact: bool) -> Result<Self> {
        if data.is_empty() {
            return Err(Error::Config(
                "the Hessian needs at least one evaluation sample".into(),
            ));
        }
        let trained = params
            .layout()
            .entries()
            .iter()
            .flat_map(|e| std::iter::repeat_n(!e.role.is_state(), e.numel()))
            .collect();
        let products = match ReluMlp::of(arch).ok().filter(|_| exact) {
            Some(net) => Products::Exact {
                net,
                x: data.x.iter().map(|&v| f64::from(v)).collect(),
                labels: data.y.iter().map(|&c| c as usize).collect(),
            },
            None => {
                let device = backend::train_device();
                let idx: Vec<usize> = (0..data.len()).collect();
                let batches = idx
                    .chunks(EVAL_BATCH)
                    .map(|c| {
                        let (x, y) = batch_tensors(data, c, &device);
                        (x, y, c.len())
                    })
                    .collect();
                Products::Differences {
                    batches,
                    n: data.len(),
                    device: backend::device(),
                }
            }
        };
        Ok(Self {
            arch: arch.clone(),
            theta: params.to_flat().into_iter().map(f64::from).collect(),
            trained,
            params: params.clone(),
            products,
            step: HVP_STEP,
        })
    }

    /// How the products are computed, as recorded in results.
    pub fn method(&self) -> &'static str {
        match self.products {
            Products::Exact { .. } => "exact",
            Products::Differences { .. } => "central-difference",
        }
    }

    /// Number of entries of a direction (the layout's, state included).
    pub fn len(&self) -> usize {
        self.theta.len()
    }

    /// Always false: a network has parameters.
    pub fn is_empty(&self) -> bool {
        self.theta.is_empty()
    }

    /// Number of trained parameters (the dimension of the Hessian).
    pub fn dim(&self) -> usize {
        self.trained.iter().filter(|&&t| t).count()
    }

    /// The mean cross-entropy and its gradient (zero on state) at `θ + s·v`.
    pub fn gradient_at(&self, s: f64, v: Option<&[f64]>) -> (f64, Vec<f64>) {
        let moved = |t: &f64, d: &f64| t + s * d;
        let (batches, n, device) = match &self.products {
            Products::Exact { net, x, labels } => {
                let theta: Vec<f64> = match v {
                    Some(v) => self.theta.iter().zip(v).map(|(t, d)| moved(t, d)).collect(),
                    None => self.theta.clone(),
                };
                let (loss, grad, _) = net.cross_entropy_hvp(&theta, x, labels, None);
                return (loss, grad);
            }
            Products::Differences { batches, n, device } => (batches, *n, device),
        };
        let flat: Vec<f32> = match v {
            Some(v) => self
                .theta
                .iter()
                .zip(v)
                .map(|(t, d)| moved(t, d) as f32)
                .collect(),
            None => self.theta.iter().map(|&t| t as f32).collect(),
        };
        let p = ParamSet::from_flat(self.params.layout().clone(), &flat, device)
            .expect("the layout's length");
        let leaves = p.to_device(&backend::train_device()).leaves();
        let mut grad = vec![0.0f64; self.theta.len()];
        let mut loss = 0.0;
        for (x, y, count) in batches {
            let w = *count as f32 / n as f32;
            let l = cross_entropy(self.arch.forward(&leaves, x.clone()), y.clone()) * w;
            loss += f64::from(l.clone().into_scalar::<f32>());
            let grads = l.backward();
            let mut at = 0;
            for t in leaves.tensors() {
                let len = t.dims()[0];
                if let Some(g) = t.grad(&grads) {
                    for (o, v) in grad[at..at + len].iter_mut().zip(host_vec(&g)) {
                        *o += f64::from(v);
                    }
                }
                at += len;
            }
        }
        for (g, &t) in grad.iter_mut().zip(&self.trained) {
            if !t {
                *g = 0.0;
            }
        }
        (loss, grad)
    }

    /// `Hv`: exact for plain MLPs, otherwise the central difference of gradients with step
    /// [`Hessian::step`] along `v/‖v‖`.
    pub fn hvp(&self, v: &[f64]) -> Vec<f64> {
        match &self.products {
            Products::Exact { net, x, labels } => {
                net.cross_entropy_hvp(&self.theta, x, labels, Some(v)).2
            }
            Products::Differences { .. } => self.hvp_with(v, self.step),
        }
    }

    fn hvp_with(&self, v: &[f64], h: f64) -> Vec<f64> {
        let nv = norm(v);
        if nv == 0.0 {
            return vec![0.0; v.len()];
        }
        let unit: Vec<f64> = v.iter().map(|x| x / nv).collect();
        let (_, up) = self.gradient_at(h, Some(&unit));
        let (_, down) = self.gradient_at(-h, Some(&unit));
        up.iter()
            .zip(&down)
            .map(|(a, b)| (a - b) * nv / (2.0 * h))
            .collect()
    }

    /// `‖Hv(h) − Hv(2h)‖ / ‖Hv(h)‖` along `v`: how much the central difference moves when the
    /// step doubles (the scale of its error); 0 for exact products.
    pub fn step_error(&self, v: &[f64]) -> f64 {
        if let Products::Exact { .. } = self.products {
            return 0.0;
        }
        let a = self.hvp_with(v, self.step);
        let b = self.hvp_with(v, 2.0 * self.step);
        let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        norm(&d) / norm(&a).max(f64::MIN_POSITIVE)
    }

    /// A random direction of unit norm on the trained entries.
    pub fn random_direction(&self, rng: &mut impl Rng) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .trained
            .iter()
            .map(|&t| if t { rng.random_range(-1.0..1.0) } else { 0.0 })
            .collect();
        let n = norm(&v);
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    /// A Rademacher vector (±1) on the trained entries.
    pub fn rademacher(&self, rng: &mut impl Rng) -> Vec<f64> {
        self.trained
            .iter()
            .map(|&t| match (t, rng.random::<bool>()) {
                (false, _) => 0.0,
                (true, true) => 1.0,
                (true, false) => -1.0,
            })
            .collect()
    }
}

/// One eigenpair found by [`top_eigenvalues`].
#[derive(Debug, Clone)]
pub struct Eigenpair {
    /// The eigenvalue (the largest in magnitude left after deflation: negative at a saddle).
    pub value: f64,
    /// The unit eigenvector.
    pub vector: Vec<f64>,
    /// Power iterations taken.
    pub iterations: usize,
    /// Whether the relative change fell below the tolerance within the iteration limit.
    pub converged: bool,
}

/// The `k` largest-magnitude eigenvalues of `hvp` on vectors of length `n` by power iteration
/// with Gram–Schmidt deflation against the pairs already found (PyHessian): at most
/// `max_iter` iterations each, stopping when `|λ − λ_prev| < tol·(|λ_prev| + 1e-6)`.
pub fn top_eigenvalues(
    hvp: impl Fn(&[f64]) -> Vec<f64>,
    start: impl Fn(&mut rand_chacha::ChaCha8Rng) -> Vec<f64>,
    k: usize,
    max_iter: usize,
    tol: f64,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<Eigenpair> {
    let mut found: Vec<Eigenpair> = Vec::with_capacity(k);
    let deflate = |v: &mut Vec<f64>, found: &[Eigenpair]| {
        for e in found {
            let c = dot(v, &e.vector);
            for (x, y) in v.iter_mut().zip(&e.vector) {
                *x -= c * y;
            }
        }
        let n = norm(v);
        if n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
        }
    };
    for _ in 0..k {
        let mut v = start(rng);
        deflate(&mut v, &found);
        let (mut value, mut iterations, mut converged) = (0.0f64, 0, false);
        for it in 1..=max_iter.max(1) {
            iterations = it;
            let w = hvp(&v);
            let next = dot(&w, &v);
            let mut w = w;
            deflate(&mut w, &found);
            let done = it > 1 && (next - value).abs() < tol * (value.abs() + 1e-6);
            value = next;
            v = w;
            if done {
                converged = true;
                break;
            }
        }
        found.push(Eigenpair {
            value,
            vector: v,
            iterations,
            converged,
        });
    }
    found
}

/// Hutchinson's estimate of `tr(H)` from `samples` Rademacher vectors `z` (`E zᵀHz = tr H`): the
/// mean and its standard error (sample standard deviation / √samples).
pub fn hutchinson_trace(
    hvp: impl Fn(&[f64]) -> Vec<f64>,
    rademacher: impl Fn(&mut rand_chacha::ChaCha8Rng) -> Vec<f64>,
    samples: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> (f64, f64) {
    let values: Vec<f64> = (0..samples)
        .map(|_| {
            let z = rademacher(rng);
            dot(&z, &hvp(&z))
        })
        .collect();
    let m = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / m;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1.0).max(1.0);
    (mean, (var / m).sqrt())
}

/// Settings of [`sharpness`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SharpnessConfig {
    /// Eigenvalues to find (`--top`).
    pub top: usize,
    /// Power iterations per eigenvalue at most.
    pub max_iter: usize,
    /// Relative tolerance of the power iteration.
    pub tol: f64,
    /// Rademacher vectors of the trace estimate (0: no trace).
    pub trace_samples: usize,
    /// Seed of the start vectors and the Rademacher vectors.
    pub seed: u64,
}

impl SharpnessConfig {
    /// One-line errors naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.top == 0 {
            return Err(Error::Config("--top must be at least 1".into()));
        }
        if self.max_iter == 0 {
            return Err(Error::Config("--max-iter must be at least 1".into()));
        }
        if !(self.tol > 0.0 && self.tol.is_finite()) {
            return Err(Error::Config("--tol must be a positive number".into()));
        }
        if self.trace_samples == 1 {
            return Err(Error::Config(
                "--trace-samples must be 0 (no trace) or at least 2 (for a standard error)".into(),
            ));
        }
        Ok(())
    }
}

/// What [`sharpness`] measures at one network.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sharpness {
    /// The mean cross-entropy on the evaluation subset.
    pub loss: f64,
    /// The top eigenvalues, largest magnitude first.
    pub eigenvalues: Vec<f64>,
    /// Power iterations of each.
    pub iterations: Vec<usize>,
    /// Whether each converged within the limit.
    pub converged: Vec<bool>,
    /// Hutchinson's trace and its standard error (absent with no trace samples).
    pub trace: Option<f64>,
    /// The standard error of `trace`.
    pub trace_se: Option<f64>,
    /// How the products were computed: `exact` or `central-difference`.
    pub method: &'static str,
    /// The difference step `h` (central differences).
    pub step: f64,
    /// [`Hessian::step_error`] along the top eigenvector (0 for exact products).
    pub step_error: f64,
}

/// The top eigenvalues and the trace of the Hessian of `arch`'s mean cross-entropy on `data` at
/// `params` (state as it is).
pub fn sharpness(
    arch: &Arch,
    params: &ParamSet,
    data: &Dataset,
    cfg: &SharpnessConfig,
) -> Result<Sharpness> {
    use rand::SeedableRng;
    cfg.validate()?;
    let h = Hessian::new(arch, params, data)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let pairs = top_eigenvalues(
        |v| h.hvp(v),
        |r| h.random_direction(r),
        cfg.top,
        cfg.max_iter,
        cfg.tol,
        &mut rng,
    );
    let (trace, trace_se) = match cfg.trace_samples {
        0 => (None, None),
        m => {
            let (t, se) = hutchinson_trace(|v| h.hvp(v), |r| h.rademacher(r), m, &mut rng);
            (Some(t), Some(se))
        }
    };
    Ok(Sharpness {
        loss: h.gradient_at(0.0, None).0,
        eigenvalues: pairs.iter().map(|p| p.value).collect(),
        iterations: pairs.iter().map(|p| p.iterations).collect(),
        converged: pairs.iter().map(|p| p.converged).collect(),
        trace,
        trace_se,
        method: h.method(),
        step: h.step,
        step_error: h.step_error(&pairs[0].vector),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A quadratic with a known spectrum: power iteration finds its top eigenvalues in order
    /// (deflation), and Hutchinson's trace is within three standard errors of the exact one.
    #[test]
    fn power_iteration_and_hutchinson_on_a_known_quadratic() {
        let n = 40;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // H = Q diag(λ) Qᵀ with a random orthogonal Q.
        let a = Mat::from_fn(n, n, |_, _| rng.random_range(-1.0..1.0));
        let q = a.qr().compute_Q();
        let lambdas: Vec<f64> = (0..n).map(|i| 10.0 * 0.8f64.powi(i as i32)).collect();
        let h = Mat::from_fn(n, n, |i, j| {
            (0..n)
                .map(|k| q[(i, k)] * lambdas[k] * q[(j, k)])
                .sum::<f64>()
        });
        let hvp = |v: &[f64]| {
            (0..n)
                .map(|i| (0..n).map(|j| h[(i, j)] * v[j]).sum())
                .collect()
        };
        let start = |r: &mut ChaCha8Rng| (0..n).map(|_| r.random_range(-1.0..1.0)).collect();
        let pairs = top_eigenvalues(hvp, start, 3, 1000, 1e-10, &mut rng);
        for (p, want) in pairs.iter().zip(&lambdas) {
            assert!(p.converged);
            assert!(
                (p.value - want).abs() < 1e-4 * want,
                "{} vs {want}",
                p.value
            );
        }
        let rad = |r: &mut ChaCha8Rng| {
            (0..n)
                .map(|_| if r.random::<bool>() { 1.0 } else { -1.0 })
                .collect()
        };
        let (tr, se) = hutchinson_trace(hvp, rad, 400, &mut rng);
        let exact: f64 = lambdas.iter().sum();
        assert!(
            se > 0.0 && (tr - exact).abs() < 3.0 * se,
            "{tr} ± {se} vs {exact}"
        );
    }
}
