//! Training in a random subspace (Li et al. 2018, "Measuring the intrinsic dimension of
//! objective landscapes"): `θ = θ₀ + P·z` with `θ₀` the frozen initialisation, `P` a seeded
//! random `D × d` matrix whose columns have unit norm (across all layers), and only `z ∈ ℝ^d`
//! trained, from `z = 0`. Dense: entries `N(0, 1)`, each column normalised. Sparse: `⌈√D⌉`
//! entries `±1/√nnz` per column at random rows (the very sparse projection of Li, Hastie &
//! Church 2006). The loop trains `z` like any parameter set: [`Subspace`] forms `θ` on the host
//! before the step ([`Objective::weights`]) and maps `∂L/∂θ` to `∂L/∂z = Pᵀ·∂L/∂θ`
//! ([`Objective::pull_back`]) — a linear family like a curve, no loop of its own.

use std::sync::Arc;

use burn::tensor::{Int, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::Value;

use super::objective::{Classification, Objective, Scalars};
use super::{Gradient, StepCtx};
use crate::error::{Error, Result};
use crate::params::ParamSet;
use crate::params::layout::{Entry, Layout, Role};
use crate::params::set::host_vec;

/// How the columns of `P` are drawn.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum ProjectionKind {
    /// Gaussian entries, columns normalised.
    Dense,
    /// `⌈√D⌉` entries `±1/√nnz` per column.
    Sparse,
}

/// Rows per parallel chunk of `P·z` and `Pᵀ·g`.
const CHUNK: usize = 4096;

/// A seeded `D × d` projection with unit-norm columns, stored by rows (`P·z` and `Pᵀ·g` each
/// read it once).
#[derive(Debug, Clone)]
pub struct Projection {
    full: usize,
    d: usize,
    /// Row-major dense values (`Dense`), or per row its `(column, value)` pairs (`Sparse`).
    dense: Vec<f32>,
    sparse: Vec<Vec<(u32, f32)>>,
}

impl Projection {
    /// Bytes a projection of this kind and size holds.
    pub fn bytes(kind: ProjectionKind, full: usize, d: usize) -> u64 {
        match kind {
            ProjectionKind::Dense => 4 * full as u64 * d as u64,
            ProjectionKind::Sparse => {
                8 * d as u64 * (full as f64).sqrt().ceil() as u64 + 24 * full as u64
            }
        }
    }

    /// The projection from `ℝ^d` into `ℝ^full` drawn with `seed`.
    pub fn new(kind: ProjectionKind, full: usize, d: usize, seed: u64) -> Result<Self> {
        if d == 0 || full == 0 {
            return Err(Error::Config("a subspace needs d ≥ 1 and D ≥ 1".into()));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        match kind {
            ProjectionKind::Dense => {
                let mut dense = vec![0f32; full * d];
                let mut norms = vec![0f64; d];
                for row in dense.chunks_exact_mut(d) {
                    for (j, v) in row.iter_mut().enumerate() {
                        let g = gaussian(&mut rng);
                        norms[j] += g * g;
                        *v = g as f32;
                    }
                }
                let inv: Vec<f32> = norms.iter().map(|n| (1.0 / n.sqrt()) as f32).collect();
                for row in dense.chunks_exact_mut(d) {
                    for (v, s) in row.iter_mut().zip(&inv) {
                        *v *= s;
                    }
                }
                Ok(Self {
                    full,
                    d,
                    dense,
                    sparse: Vec::new(),
                })
            }
            ProjectionKind::Sparse => {
                let nnz = ((full as f64).sqrt().ceil() as usize).clamp(1, full);
                let value = 1.0 / (nnz as f32).sqrt();
                let mut sparse = vec![Vec::new(); full];
                let mut rows: Vec<usize> = Vec::with_capacity(nnz);
                for j in 0..d {
                    rows.clear();
                    while rows.len() < nnz {
                        let r = rng.random_range(0..full);
                        if !rows.contains(&r) {
                            rows.push(r);
                        }
                    }
                    for &r in &rows {
                        let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
                        sparse[r].push((j as u32, sign * value));
                    }
                }
                Ok(Self {
                    full,
                    d,
                    dense: Vec::new(),
                    sparse,
                })
            }
        }
    }

    /// The identity `P = I` (`d = D`): training `z` from 0 is training `θ` from `θ₀`.
    pub fn identity(full: usize) -> Self {
        Self {
            full,
            d: full,
            dense: Vec::new(),
            sparse: (0..full).map(|i| vec![(i as u32, 1.0)]).collect(),
        }
    }

    /// `d`.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// `θ₀ + P·z`.
    pub fn point(&self, theta0: &[f32], z: &[f32]) -> Vec<f32> {
        assert_eq!(theta0.len(), self.full);
        assert_eq!(z.len(), self.d);
        let mut w = theta0.to_vec();
        w.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
            for (k, wi) in out.iter_mut().enumerate() {
                let i = c * CHUNK + k;
                *wi += match self.sparse.is_empty() {
                    true => dot(&self.dense[i * self.d..(i + 1) * self.d], z),
                    false => self.sparse[i].iter().map(|&(j, v)| v * z[j as usize]).sum(),
                };
            }
        });
        w
    }

    /// `Pᵀ·g`.
    pub fn transpose_times(&self, g: &[f32]) -> Vec<f32> {
        assert_eq!(g.len(), self.full);
        let d = self.d;
        g.par_chunks(CHUNK)
            .enumerate()
            .fold(
                || vec![0f64; d],
                |mut acc, (c, gs)| {
                    for (k, &gi) in gs.iter().enumerate() {
                        let i = c * CHUNK + k;
                        match self.sparse.is_empty() {
                            true => {
                                for (a, &p) in acc.iter_mut().zip(&self.dense[i * d..(i + 1) * d]) {
                                    *a += f64::from(p * gi);
                                }
                            }
                            false => {
                                for &(j, v) in &self.sparse[i] {
                                    acc[j as usize] += f64::from(v * gi);
                                }
                            }
                        }
                    }
                    acc
                },
            )
            .reduce(
                || vec![0f64; d],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x += y;
                    }
                    a
                },
            )
            .into_iter()
            .map(|v| v as f32)
            .collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A standard normal draw (Box–Muller).
fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// The layout of the trained coordinates `z` (one tensor `z [d]`).
pub fn coordinates_layout(d: usize) -> Arc<Layout> {
    Arc::new(
        Layout::new(vec![Entry {
            name: "z".into(),
            shape: vec![d],
            role: Role::Bias,
        }])
        .expect("one entry"),
    )
}

/// The objective of a network trained in the subspace `θ₀ + P·z`: the plain network's
/// objective at `θ`, with `z` the trained parameters.
pub struct Subspace<'a> {
    theta0: Vec<f32>,
    proj: Projection,
    layout: Arc<Layout>,
    inner: Classification<'a>,
}

impl<'a> Subspace<'a> {
    /// The subspace through `theta0` (a network without state) spanned by `proj`, trained on
    /// `inner`'s loss.
    pub fn new(theta0: &ParamSet, proj: Projection, inner: Classification<'a>) -> Result<Self> {
        if theta0.layout().has_state() {
            return Err(Error::Config(
                "random-subspace training needs a network without normalisation state".into(),
            ));
        }
        let flat = theta0.to_flat();
        if flat.len() != proj.full {
            return Err(Error::Config(format!(
                "the projection maps into ℝ^{} but the network has {} parameters",
                proj.full,
                flat.len()
            )));
        }
        Ok(Self {
            theta0: flat,
            proj,
            layout: theta0.layout().clone(),
            inner,
        })
    }

    /// The network `θ₀ + P·z` of trained coordinates `z`.
    pub fn network(&self, z: &ParamSet) -> ParamSet {
        let zs = host_vec(&z.tensors()[0]);
        let device = z.tensors()[0].device();
        ParamSet::from_flat(
            self.layout.clone(),
            &self.proj.point(&self.theta0, &zs),
            &device,
        )
        .expect("shaped like θ₀")
    }
}

impl Objective for Subspace<'_> {
    fn weights(&mut self, params: &ParamSet, _ctx: &mut StepCtx<'_>) -> Option<ParamSet> {
        Some(self.network(params))
    }

    fn loss(
        &mut self,
        weights: &ParamSet,
        x: Tensor<2>,
        y: Tensor<1, Int>,
        ctx: &mut StepCtx<'_>,
    ) -> (Tensor<1>, Scalars) {
        self.inner.loss(weights, x, y, ctx)
    }

    fn pull_back(&mut self, _weights: ParamSet, grad: ParamSet) -> Result<Gradient> {
        let device = grad.tensors()[0].device();
        let gz = self.proj.transpose_times(&grad.to_flat());
        Ok(Gradient::Values(ParamSet::from_flat(
            coordinates_layout(self.proj.d),
            &gz,
            &device,
        )?))
    }

    fn epoch_end(&mut self, params: &ParamSet, epoch: usize) -> Result<Vec<(String, Value)>> {
        let w = self.network(params);
        self.inner.epoch_end(&w, epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit-norm columns, `Pᵀ` the adjoint of `P` (`⟨P·z, g⟩ = ⟨z, Pᵀ·g⟩`), `z = 0` is `θ₀`,
    /// the same seed the same matrix; sparse columns have `⌈√D⌉` entries.
    #[test]
    fn projections_have_unit_columns_and_an_adjoint() {
        let (full, d) = (300, 7);
        for kind in [ProjectionKind::Dense, ProjectionKind::Sparse] {
            let p = Projection::new(kind, full, d, 3).unwrap();
            let theta0: Vec<f32> = (0..full).map(|i| i as f32 * 0.01).collect();
            for j in 0..d {
                let mut e = vec![0f32; d];
                e[j] = 1.0;
                let col: Vec<f32> = p.point(&vec![0.0; full], &e).into_iter().collect();
                let norm: f32 = col.iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-5, "{kind:?} column {j}: {norm}");
                if kind == ProjectionKind::Sparse {
                    assert_eq!(col.iter().filter(|v| **v != 0.0).count(), 18);
                }
            }
            assert_eq!(p.point(&theta0, &vec![0.0; d]), theta0);
            let z: Vec<f32> = (0..d).map(|j| (j as f32 - 3.0) * 0.3).collect();
            let g: Vec<f32> = (0..full)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let pz = p.point(&vec![0.0; full], &z);
            let lhs: f32 = pz.iter().zip(&g).map(|(a, b)| a * b).sum();
            let rhs: f32 = z
                .iter()
                .zip(p.transpose_times(&g))
                .map(|(a, b)| a * b)
                .sum();
            assert!(
                (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
            let again = Projection::new(kind, full, d, 3).unwrap();
            assert_eq!(again.point(&theta0, &z), p.point(&theta0, &z));
        }
    }
}
