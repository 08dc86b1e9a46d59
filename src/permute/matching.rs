//! Aligning network B to network A by a function-preserving permutation of B's hidden units.
//!
//! - **Weight matching** (Ainsworth et al. 2022, "Git Re-Basin", Alg. 1): maximise
//!   `J(π) = Σ_params ⟨W_A, π(W_B)⟩_F` by coordinate ascent. Start from identities; each sweep
//!   visits the permutations in a seeded random order; for permutation `p` of size `n`,
//!   `C = Σ_{(param, axis) acted on by p} mat(W_A) · mat(W_B with all other permutations applied)ᵀ`
//!   (`mat` moves that axis — in units of its block — first and reshapes to `[n, −1]`), and
//!   `π_p = argmax_π Σ_i C[i, π[i]]` (a linear assignment problem). `J` is affine in `π_p` given
//!   the others, so no step decreases it; stop when a sweep improves `J` by ≤ `tol` (1e-12) or
//!   after `max_sweeps` (100) sweeps.
//! - **Activation matching** (Git Re-Basin §3.1; Tatro et al. 2020 with Pearson correlation): per
//!   hidden layer, with post-activations `z_A, z_B` of both networks on the same inputs (conv
//!   layers: every spatial position is a sample), `C = E[z_A z_Bᵀ]` (cross-correlation) or
//!   `C_ij = cov(z_A,i, z_B,j) / (σ_A,i σ_B,j)` (Pearson; 0 for a constant unit), and
//!   `π = argmax_π Σ_i C[i, π[i]]`, layer by layer.
//!
//! Both return a [`Permutation`] to apply to B: `apply(spec, π, B)` is the aligned B.

use burn::tensor::{Device, Tensor};
use ndarray::{Array2, ArrayD, IxDyn};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::apply::{Permutation, permute_param};
use super::assignment::{assignment_value, maximize};
use super::spec::PermSpec;
use crate::arch::Arch;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::batch_tensors;
use crate::params::ParamSet;

/// Settings of [`weight_matching`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MatchOptions {
    /// Seed of the order in which each sweep visits the permutations.
    pub seed: u64,
    /// At most this many sweeps (100 in Git Re-Basin).
    pub max_sweeps: usize,
    /// Stop when a sweep improves the objective by at most this much (1e-12).
    pub tol: f64,
}

impl Default for MatchOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            max_sweeps: 100,
            tol: 1e-12,
        }
    }
}

/// Result of [`weight_matching`].
#[derive(Debug, Clone)]
pub struct WeightMatching {
    /// The permutation to apply to B.
    pub perm: Permutation,
    /// `J` at the identity (`objective[0]`) and after each sweep.
    pub objective: Vec<f64>,
    /// Sweeps run.
    pub sweeps: usize,
    /// Whether the last sweep improved `J` by at most `tol` (false: stopped at `max_sweeps`).
    pub converged: bool,
}

/// Host copies (f64) of the spec's parameters of `w`, in spec order; checks names and shapes.
fn host_params(spec: &PermSpec, w: &ParamSet) -> Result<Vec<Vec<f64>>> {
    let vecs = w.to_vecs();
    spec.params()
        .iter()
        .map(|p| {
            let i = w.layout().index_of(&p.name)?;
            let e = &w.layout().entries()[i];
            if e.shape != p.shape {
                return Err(Error::ShapeMismatch {
                    name: e.name.clone(),
                    expected: p.shape.clone(),
                    found: e.shape.clone(),
                });
            }
            Ok(vecs[i].iter().map(|&v| f64::from(v)).collect())
        })
        .collect()
}

/// `mat_axis`: the tensor with axis `ax` split into `(n, block)`, the `n` part moved first, and
/// reshaped to `[n, numel / n]`.
fn unit_matrix(values: Vec<f64>, shape: &[usize], ax: usize, n: usize) -> Array2<f64> {
    let block = shape[ax] / n;
    let mut split: Vec<usize> = shape[..ax].to_vec();
    split.extend([n, block]);
    split.extend(&shape[ax + 1..]);
    let t = ArrayD::from_shape_vec(IxDyn(&split), values).expect("shape matches values");
    let mut order: Vec<usize> = vec![ax];
    order.extend((0..split.len()).filter(|&a| a != ax));
    let rest = t.len() / n;
    t.permuted_axes(IxDyn(&order))
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, rest))
        .expect("contiguous")
}

/// `J(π) = Σ_params ⟨A, π(B)⟩` on host copies.
fn objective(spec: &PermSpec, perm: &Permutation, a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    (0..spec.params().len())
        .map(|k| {
            let pb = permute_param(spec, perm, k, &b[k], None);
            a[k].iter().zip(&pb).map(|(x, y)| x * y).sum::<f64>()
        })
        .sum()
}

/// Weight matching of `b` to `a` (see the module docs). `a` and `b` must share a layout that
/// `spec` fits.
pub fn weight_matching(
    spec: &PermSpec,
    a: &ParamSet,
    b: &ParamSet,
    opts: &MatchOptions,
) -> Result<WeightMatching> {
    a.check_same_layout(b)?;
    let (ha, hb) = (host_params(spec, a)?, host_params(spec, b)?);
    let np = spec.perms().len();
    // mat_axis(W_A) for every (param, axis) each permutation acts on; A never changes.
    let a_mats: Vec<Vec<Array2<f64>>> = (0..np)
        .map(|p| {
            let n = spec.perms()[p].size;
            spec.acted_on(p)
                .into_iter()
                .map(|(k, ax)| unit_matrix(ha[k].clone(), &spec.params()[k].shape, ax, n))
                .collect()
        })
        .collect();
    let mut perm = Permutation::identity(spec);
    let mut history = vec![objective(spec, &perm, &ha, &hb)];
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = (0..np).collect();
    let (mut sweeps, mut converged) = (0, np == 0);
    while !converged && sweeps < opts.max_sweeps {
        order.shuffle(&mut rng);
        let mut gain = 0.0;
        for &p in &order {
            let n = spec.perms()[p].size;
            let mut c = Array2::<f64>::zeros((n, n));
            for ((k, ax), am) in spec.acted_on(p).into_iter().zip(&a_mats[p]) {
                let pb = permute_param(spec, &perm, k, &hb[k], Some(p));
                let bm = unit_matrix(pb, &spec.params()[k].shape, ax, n);
                ndarray::linalg::general_mat_mul(1.0, am, &bm.t(), 1.0, &mut c);
            }
            let new = maximize(&c)?;
            gain += assignment_value(&c, &new) - assignment_value(&c, &perm.maps[p]);
            perm.maps[p] = new;
        }
        sweeps += 1;
        history.push(objective(spec, &perm, &ha, &hb));
        converged = gain <= opts.tol;
    }
    Ok(WeightMatching {
        perm,
        objective: history,
        sweeps,
        converged,
    })
}

/// Which similarity activation matching maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Correlation {
    /// `E[z_A z_Bᵀ]` (Git Re-Basin).
    Cross,
    /// Pearson correlation (Tatro et al. 2020).
    Pearson,
}

/// Sums over samples of one hidden layer's post-activations in two networks.
#[derive(Debug, Clone)]
pub struct LayerStats {
    /// Layer name (as passed to `observe` by [`Arch::forward_observed`]).
    pub name: String,
    /// Number of samples (inputs × spatial positions).
    pub samples: usize,
    /// `Σ z_A`, `[n]`.
    pub sum_a: Vec<f64>,
    /// `Σ z_B`, `[n]`.
    pub sum_b: Vec<f64>,
    /// `Σ z_A²`, `[n]`.
    pub sq_a: Vec<f64>,
    /// `Σ z_B²`, `[n]`.
    pub sq_b: Vec<f64>,
    /// `Σ z_A z_Bᵀ`, `[n, n]`.
    pub cross: Array2<f64>,
}

impl LayerStats {
    /// The similarity matrix `C[i, j]` between unit `i` of A and unit `j` of B.
    pub fn similarity(&self, kind: Correlation) -> Array2<f64> {
        let s = self.samples.max(1) as f64;
        let cross = &self.cross / s;
        match kind {
            Correlation::Cross => cross,
            Correlation::Pearson => {
                let mean = |v: &[f64]| v.iter().map(|x| x / s).collect::<Vec<_>>();
                let (ma, mb) = (mean(&self.sum_a), mean(&self.sum_b));
                let sd = |sq: &[f64], m: &[f64]| {
                    sq.iter()
                        .zip(m)
                        .map(|(q, m)| (q / s - m * m).max(0.0).sqrt())
                        .collect::<Vec<_>>()
                };
                let (sa, sb) = (sd(&self.sq_a, &ma), sd(&self.sq_b, &mb));
                Array2::from_shape_fn(cross.dim(), |(i, j)| {
                    let d = sa[i] * sb[j];
                    if d <= 1e-12 {
                        0.0
                    } else {
                        (cross[[i, j]] - ma[i] * mb[j]) / d
                    }
                })
            }
        }
    }
}

fn host(t: Tensor<2>) -> Vec<f64> {
    t.to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor data")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Post-activation statistics of every hidden layer of `a` and `b` (same architecture) over
/// `data`, in batches of `batch` inputs.
pub fn activation_stats(
    arch: &Arch,
    a: &ParamSet,
    b: &ParamSet,
    data: &Dataset,
    batch: usize,
    device: &Device,
) -> Result<Vec<LayerStats>> {
    a.check_same_layout(b)?;
    arch.check_data(data)?;
    let mut stats: Vec<LayerStats> = Vec::new();
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let (x, _) = batch_tensors(data, chunk, device);
        let mut za: Vec<(String, Tensor<2>)> = Vec::new();
        let mut zb: Vec<Tensor<2>> = Vec::new();
        arch.forward_observed(a, x.clone(), &mut |name, z| za.push((name.to_string(), z)));
        arch.forward_observed(b, x, &mut |_, z| zb.push(z));
        for (l, ((name, za), zb)) in za.into_iter().zip(zb).enumerate() {
            let [rows, n] = za.dims();
            if stats.len() == l {
                stats.push(LayerStats {
                    name,
                    samples: 0,
                    sum_a: vec![0.0; n],
                    sum_b: vec![0.0; n],
                    sq_a: vec![0.0; n],
                    sq_b: vec![0.0; n],
                    cross: Array2::zeros((n, n)),
                });
            }
            let st = &mut stats[l];
            st.samples += rows;
            let cross = host(za.clone().transpose().matmul(zb.clone()));
            st.cross
                .iter_mut()
                .zip(cross)
                .for_each(|(acc, v)| *acc += v);
            let add = |acc: &mut Vec<f64>, t: Tensor<2>| {
                acc.iter_mut().zip(host(t)).for_each(|(s, v)| *s += v)
            };
            add(&mut st.sum_a, za.clone().sum_dim(0));
            add(&mut st.sum_b, zb.clone().sum_dim(0));
            add(&mut st.sq_a, za.powi_scalar(2).sum_dim(0));
            add(&mut st.sq_b, zb.powi_scalar(2).sum_dim(0));
        }
    }
    Ok(stats)
}

/// One layer's matching: mean similarity of paired units before (identity) and after.
#[derive(Debug, Clone, Serialize)]
pub struct LayerMatch {
    /// Layer (= permutation) name.
    pub name: String,
    /// `(1/n) Σ_i C[i, i]`.
    pub mean_before: f64,
    /// `(1/n) Σ_i C[i, π[i]]`.
    pub mean_after: f64,
}

/// Result of [`activation_matching`].
#[derive(Debug, Clone)]
pub struct ActivationMatching {
    /// The permutation to apply to B.
    pub perm: Permutation,
    /// Per permutation of the spec, in spec order.
    pub layers: Vec<LayerMatch>,
}

impl ActivationMatching {
    /// `Σ_layers Σ_i C[i, i]`: the objective at the identity.
    pub fn objective_before(&self) -> f64 {
        self.sum(|l| l.mean_before)
    }

    /// `Σ_layers Σ_i C[i, π[i]]`: the objective at the matched permutation.
    pub fn objective_after(&self) -> f64 {
        self.sum(|l| l.mean_after)
    }

    fn sum(&self, f: impl Fn(&LayerMatch) -> f64) -> f64 {
        self.layers
            .iter()
            .zip(&self.perm.maps)
            .map(|(l, m)| f(l) * m.len() as f64)
            .sum()
    }
}

/// Activation matching: one assignment per permutation of `spec`, on the similarity of the
/// observed layer of the same name. Errors name a permutation with no observed layer of its size.
pub fn activation_matching(
    spec: &PermSpec,
    stats: &[LayerStats],
    kind: Correlation,
) -> Result<ActivationMatching> {
    let mut perm = Permutation::identity(spec);
    let mut layers = Vec::with_capacity(spec.perms().len());
    for (p, def) in spec.perms().iter().enumerate() {
        let st = stats
            .iter()
            .find(|s| s.name == def.name && s.cross.nrows() == def.size)
            .ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "permutation `{}` ({} units) has no observed hidden layer of that name and size",
                    def.name, def.size
                ))
            })?;
        let c = st.similarity(kind);
        let m = maximize(&c)?;
        let n = def.size as f64;
        layers.push(LayerMatch {
            name: def.name.clone(),
            mean_before: assignment_value(&c, &perm.maps[p]) / n,
            mean_after: assignment_value(&c, &m) / n,
        });
        perm.maps[p] = m;
    }
    Ok(ActivationMatching { perm, layers })
}
