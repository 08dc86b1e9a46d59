//! Loss-surface simplexes (Benton et al. 2021, "Loss Surface Simplexes for Mode Connecting
//! Volumes and Fast Ensembling", SPRO).
//!
//! A simplex of vertices `w_0 … w_k` is the linear family `w(α) = Σ_j α_j·w_j` over the
//! probability simplex. A *mode-connecting complex* joins `m` fixed modes by connectors
//! `c_1 … c_j` shared by the `m` simplexes `{mode_i, c_1, …, c_j}` (two modes and one connector
//! are a polygonal chain with one bend). Connectors are added one at a time, each initialised at
//! the centroid of the vertices so far and trained alone (older vertices frozen) on
//!
//! `L = (1/S)·Σ_s CE(w(α_s)) − λ·log Σ_i V_i`,
//!
//! each `α_s ~ Dirichlet(1, …, 1)` on a simplex `i` drawn uniformly, `V_i` the squared volume of
//! simplex `i` from the Cayley–Menger determinant ([`sq_volume`]). The `S` sampled losses are
//! averaged (SPRO's published code sums them, which scales the step with `S`). The weight decay
//! is the optimiser's, on the trained connector (SPRO's recipe).

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor};
use faer::Mat;
use faer::linalg::solvers::DenseSolveCore;
use rand::Rng;
use rand_distr::{Distribution, Exp1};
use serde_json::{Value, json};

use crate::arch::Arch;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::state::{StateSample, recompute};
use crate::params::io::{FileMeta, Loaded, save};
use crate::params::{Layout, ParamSet};
use crate::train::{Classification, Gradient, Objective, Scalars, StepCtx};

/// `α ~ Dirichlet(1, …, 1)` with `n` components (uniform on the probability simplex): `n`
/// Exp(1) draws divided by their sum.
pub fn dirichlet_ones(n: usize, rng: &mut impl Rng) -> Vec<f64> {
    let e: Vec<f64> = (0..n).map(|_| Exp1.sample(rng)).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// The Cayley–Menger matrix `[[0, 1ᵀ], [1, D]]` of the pairwise squared distances `D`.
fn cayley_menger(d2: &[Vec<f64>]) -> Mat<f64> {
    let n = d2.len();
    Mat::from_fn(n + 1, n + 1, |i, j| match (i, j) {
        (0, 0) => 0.0,
        (0, _) | (_, 0) => 1.0,
        _ => d2[i - 1][j - 1],
    })
}

/// `(k!)²·2^k`, the Cayley–Menger normalisation of a k-simplex.
fn cm_norm(k: usize) -> f64 {
    let fact: f64 = (1..=k).map(|i| i as f64).product();
    fact * fact * 2f64.powi(k as i32)
}

/// The squared k-volume `V = |det CM| / ((k!)²·2^k)` of the simplex whose `k + 1` vertices have
/// the pairwise squared distances `d2` (Cayley–Menger).
pub fn sq_volume(d2: &[Vec<f64>]) -> f64 {
    let k = d2.len().saturating_sub(1);
    cayley_menger(d2).as_ref().determinant().abs() / cm_norm(k)
}

/// `log V` ([`sq_volume`]) and `G_ij = ∂ log V / ∂D_ij` with the symmetric pair `D_ij = D_ji`
/// moved together, `G_ij = 2·(CM⁻¹)_{i+1, j+1}` (`∂ log|det A| = tr(A⁻¹ ∂A)`); `None` for a
/// degenerate simplex (`V = 0`).
pub fn log_sq_volume_grad(d2: &[Vec<f64>]) -> Option<(f64, Vec<Vec<f64>>)> {
    let v = sq_volume(d2);
    if !(v > 0.0 && v.is_finite()) {
        return None;
    }
    let inv = cayley_menger(d2).partial_piv_lu().inverse();
    let n = d2.len();
    let g = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    if i == j {
                        0.0
                    } else {
                        2.0 * inv[(i + 1, j + 1)]
                    }
                })
                .collect()
        })
        .collect();
    Some((v.ln(), g))
}

/// The simplexes of a complex of `modes` modes and `connectors` connectors, as indices into its
/// vertices (modes first, then connectors in the order they were added).
pub fn simplexes(modes: usize, connectors: usize) -> Vec<Vec<usize>> {
    (0..modes)
        .map(|i| {
            std::iter::once(i)
                .chain(modes..modes + connectors)
                .collect()
        })
        .collect()
}

/// One point of the complex: a simplex drawn uniformly, then `α ~ Dirichlet(1, …, 1)` on it;
/// returns the coefficients over all vertices.
pub fn sample_point(modes: usize, connectors: usize, rng: &mut impl Rng) -> Vec<f64> {
    let i = rng.random_range(0..modes);
    let a = dirichlet_ones(1 + connectors, rng);
    let mut c = vec![0.0; modes + connectors];
    c[i] = a[0];
    c[modes..].copy_from_slice(&a[1..]);
    c
}

/// `log Σ_i V_i` over `simplexes` (pairwise squared distances `d2` of all vertices) and its
/// gradient with respect to vertex `n` as coefficients `β` over the vertices:
/// `∂ log ΣV / ∂w_n = Σ_v β_v·w_v`, from `∂ log V_i / ∂w_n = Σ_j G^i_nj·2·(w_n − w_j)` weighted
/// by `V_i / ΣV`. Simplexes without vertex `n` add to the volume only. `None` when every simplex
/// is degenerate.
pub fn log_volume_grad(
    d2: &[Vec<f64>],
    simplexes: &[Vec<usize>],
    n: usize,
) -> Option<(f64, Vec<f64>)> {
    // Per non-degenerate simplex: log V_i, its vertices and G^i.
    type Part<'s> = (f64, &'s Vec<usize>, Vec<Vec<f64>>);
    let parts: Vec<Part<'_>> = simplexes
        .iter()
        .filter_map(|s| {
            let sub: Vec<Vec<f64>> = s
                .iter()
                .map(|&a| s.iter().map(|&b| d2[a][b]).collect())
                .collect();
            log_sq_volume_grad(&sub).map(|(lv, g)| (lv, s, g))
        })
        .collect();
    let top = parts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return None;
    }
    let total: f64 = parts.iter().map(|p| (p.0 - top).exp()).sum();
    let log_total = top + total.ln();
    let mut beta = vec![0.0; d2.len()];
    for (lv, s, g) in &parts {
        let Some(a) = s.iter().position(|&v| v == n) else {
            continue;
        };
        let weight = (lv - log_total).exp();
        for (b, &v) in s.iter().enumerate() {
            if v != n {
                beta[n] += weight * 2.0 * g[a][b];
                beta[v] -= weight * 2.0 * g[a][b];
            }
        }
    }
    Some((log_total, beta))
}

/// `Σ (a − b)²` in f64.
fn sq_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum()
}

/// Pairwise squared distances of host vectors.
pub fn sq_distances(flats: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let n = flats.len();
    let mut d2 = vec![vec![0.0; n]; n];
    for a in 0..n {
        for b in a + 1..n {
            let d = sq_distance(&flats[a], &flats[b]);
            d2[a][b] = d;
            d2[b][a] = d;
        }
    }
    d2
}

/// `log Σ_i V_i` of a complex of `modes` modes and the remaining vertices as connectors, over
/// the trained (non-state) entries; `None` when it has no connectors or every simplex is
/// degenerate.
pub fn log_volume(vertices: &[&ParamSet], modes: usize) -> Option<f64> {
    let connectors = vertices.len().checked_sub(modes).filter(|&c| c > 0)?;
    let flats: Vec<Vec<f32>> = vertices.iter().map(|v| v.to_flat_trained()).collect();
    let d2 = sq_distances(&flats);
    log_volume_grad(&d2, &simplexes(modes, connectors), vertices.len() - 1).map(|(lv, _)| lv)
}

/// A mode-connecting complex of plain networks.
#[derive(Debug, Clone)]
pub struct Complex {
    /// The architecture of every vertex.
    pub arch: Arch,
    /// The fixed modes.
    pub modes: Vec<ParamSet>,
    /// The connectors, in the order they were added.
    pub connectors: Vec<ParamSet>,
}

impl Complex {
    /// A complex of `modes` (at least two, one layout) without connectors.
    pub fn new(arch: Arch, modes: Vec<ParamSet>) -> Result<Self> {
        if modes.len() < 2 {
            return Err(Error::Config(format!(
                "a simplex needs at least two modes, got {}",
                modes.len()
            )));
        }
        for m in &modes[1..] {
            modes[0].check_same_layout(m)?;
        }
        Ok(Self {
            arch,
            modes,
            connectors: Vec::new(),
        })
    }

    /// Modes, then connectors.
    pub fn vertices(&self) -> Vec<&ParamSet> {
        self.modes.iter().chain(&self.connectors).collect()
    }

    /// The simplexes as indices into [`Complex::vertices`].
    pub fn simplexes(&self) -> Vec<Vec<usize>> {
        simplexes(self.modes.len(), self.connectors.len())
    }

    /// The mean of all vertices: where the next connector starts.
    pub fn centroid(&self) -> ParamSet {
        let v = self.vertices();
        let c = vec![1.0 / v.len() as f32; v.len()];
        ParamSet::combination(&v, &c).expect("vertices share one layout")
    }

    /// `log Σ_i V_i`; `None` without connectors.
    pub fn log_volume(&self) -> Option<f64> {
        log_volume(&self.vertices(), self.modes.len())
    }

    /// Saves the vertices (`vertex{v}/…`, modes first) with the mode count (atomically).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let mut meta = FileMeta::new("simplex", &self.arch.to_string());
        meta.extra = json!({"modes": self.modes.len(), "connectors": self.connectors.len()});
        let names: Vec<String> = (0..self.modes.len() + self.connectors.len())
            .map(|v| format!("vertex{v}/"))
            .collect();
        let sets: Vec<(&str, &ParamSet)> = names
            .iter()
            .map(String::as_str)
            .zip(self.vertices())
            .collect();
        save(path, &meta, &sets)
    }

    /// Loads a complex saved by [`Complex::save`], checking every name and shape.
    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self> {
        let mut f = Loaded::open(path)?;
        f.expect_kind(&["simplex"])?;
        let bad = |msg: String| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        let arch: Arch = f.meta.arch.parse().map_err(|e: Error| bad(e.to_string()))?;
        let count = |k: &str| {
            f.meta.extra[k]
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("no `{k}` count in metadata")))
        };
        let (m, c) = (count("modes")?, count("connectors")?);
        let layout = arch.layout();
        let mut vertices = (0..m + c)
            .map(|v| f.take_set(&format!("vertex{v}/"), &layout, device))
            .collect::<Result<Vec<_>>>()?;
        f.finish()?;
        let connectors = vertices.split_off(m);
        let mut complex = Self::new(arch, vertices).map_err(|e| bad(e.to_string()))?;
        complex.connectors = connectors;
        Ok(complex)
    }
}

/// What [`Objective::weights`] drew for the current step.
struct Drawn {
    /// The trained connector's coefficient in each sampled point.
    coeffs: Vec<f32>,
    /// `log Σ_i V_i` and its gradient in the trained connector as coefficients over the
    /// vertices (the connector last).
    log_volume: f64,
    beta: Vec<f64>,
    /// The trained connector (released at the end of the step).
    newest: ParamSet,
}

/// The SPRO objective of the newest connector of a complex (module docs): the mean sampled
/// loss minus `λ·log Σ_i V_i`. The sampled points are formed on the host and handed to the
/// point objective as leaves (normalisation layers in train mode at each sampled point, as for
/// a curve); [`Objective::pull_back`] forms
/// `∂L/∂c = Σ_s α_s·∂L/∂w_s − λ·Σ_v β_v·w_v` (`∂L/∂w_s = (1/S)·∂CE/∂w_s`).
pub struct SimplexObjective<'a> {
    /// The frozen vertices (modes, then the older connectors).
    frozen: Complex,
    /// Their trained entries as host vectors, and their pairwise squared distances.
    flats: Vec<Vec<f32>>,
    d2: Vec<Vec<f64>>,
    /// Sampled points per step.
    samples: usize,
    /// The volume term's weight λ.
    lambda: f64,
    point: Classification<'a>,
    /// Data on which an evaluated point's state is recomputed (networks with normalisation).
    state_data: &'a Dataset,
    device: Device,
    drawn: Option<Drawn>,
}

impl<'a> SimplexObjective<'a> {
    /// The objective of a new connector joined to `frozen`, with `samples` points per step and
    /// volume weight `lambda`; `test` is evaluated after each epoch at the centre of the first
    /// simplex, its state recomputed on `state_data`.
    pub fn new(
        frozen: Complex,
        samples: usize,
        lambda: f64,
        test: &'a Dataset,
        state_data: &'a Dataset,
        device: Device,
    ) -> Result<Self> {
        if samples == 0 {
            return Err(Error::Config("--samples must be at least 1".into()));
        }
        if !(lambda >= 0.0 && lambda.is_finite()) {
            return Err(Error::Config(format!(
                "--volume-weight {lambda}: a non-negative number"
            )));
        }
        let flats: Vec<Vec<f32>> = frozen
            .vertices()
            .iter()
            .map(|v| v.to_flat_trained())
            .collect();
        let d2 = sq_distances(&flats);
        let point = Classification::new(frozen.arch.clone(), test, device.clone());
        Ok(Self {
            frozen,
            flats,
            d2,
            samples,
            lambda,
            point,
            state_data,
            device,
            drawn: None,
        })
    }

    fn layout(&self) -> &Arc<Layout> {
        self.frozen.modes[0].layout()
    }

    /// The frozen vertices and `newest`.
    fn vertices<'b>(&'b self, newest: &'b ParamSet) -> Vec<&'b ParamSet> {
        let mut v = self.frozen.vertices();
        v.push(newest);
        v
    }
}

impl Objective for SimplexObjective<'_> {
    fn weights(&mut self, params: &ParamSet, ctx: &mut StepCtx<'_>) -> Option<ParamSet> {
        let (m, j) = (self.frozen.modes.len(), self.frozen.connectors.len() + 1);
        let device = params.tensors()[0].device();
        let vertices = self.vertices(params);
        let mut coeffs = Vec::with_capacity(self.samples);
        let points: Vec<ParamSet> = (0..self.samples)
            .map(|_| {
                let c: Vec<f32> = sample_point(m, j, ctx.rng)
                    .into_iter()
                    .map(|c| c as f32)
                    .collect();
                coeffs.push(c[m + j - 1]);
                let w = ParamSet::combination_vecs(&vertices, &c).expect("one layout");
                ParamSet::from_vecs(self.layout().clone(), w, &device).expect("one layout")
            })
            .collect();
        // The volume term: the newest vertex's distances to the frozen ones, then log ΣV.
        let (log_volume, beta) = if self.lambda > 0.0 {
            let newest = params.to_flat_trained();
            let n = self.flats.len();
            let mut d2 = self.d2.clone();
            d2.push(vec![0.0; n + 1]);
            for (a, f) in self.flats.iter().enumerate() {
                let d = sq_distance(f, &newest);
                d2[a].push(d);
                d2[n][a] = d;
            }
            log_volume_grad(&d2, &simplexes(m, j), n)
                .unwrap_or((f64::NEG_INFINITY, vec![0.0; n + 1]))
        } else {
            (0.0, Vec::new())
        };
        self.drawn = Some(Drawn {
            coeffs,
            log_volume,
            beta,
            newest: params.clone(),
        });
        Some(match points.len() {
            1 => points.into_iter().next().expect("one point"),
            _ => ParamSet::pack(&points.iter().collect::<Vec<_>>(), |s| {
                format!("sample{s}/")
            }),
        })
    }

    fn loss(
        &mut self,
        weights: &ParamSet,
        x: Tensor<2>,
        y: Tensor<1, Int>,
        ctx: &mut StepCtx<'_>,
    ) -> (Tensor<1>, Scalars) {
        let log_volume = self
            .drawn
            .as_ref()
            .expect("SimplexObjective::weights runs before loss")
            .log_volume;
        let points = weights.unpack(&self.layout().clone());
        let mut total: Option<Tensor<1>> = None;
        for w in &points {
            let (l, _) = self.point.loss(w, x.clone(), y.clone(), ctx);
            total = Some(match total {
                None => l,
                Some(t) => t + l,
            });
        }
        let mean = total.expect("at least one sample") / points.len() as f32;
        let data = mean.clone().into_scalar::<f32>() as f64;
        let mut scalars: Scalars = vec![("sample_loss", data)];
        if self.lambda > 0.0 {
            scalars.push(("log_volume", log_volume));
        }
        ((mean - (self.lambda * log_volume) as f32), scalars)
    }

    fn pull_back(&mut self, _weights: ParamSet, grad: ParamSet) -> Result<Gradient> {
        let drawn = self
            .drawn
            .take()
            .expect("SimplexObjective::weights runs before pull_back");
        // The graph's gradients in the sampled points already carry the mean's 1/S.
        let grads = grad.unpack(&self.layout().clone());
        let mut sets: Vec<&ParamSet> = grads.iter().collect();
        let mut c: Vec<f32> = drawn.coeffs.clone();
        if self.lambda > 0.0 {
            sets.extend(self.vertices(&drawn.newest));
            c.extend(drawn.beta.iter().map(|b| (-self.lambda * b) as f32));
        }
        let mut g = ParamSet::combination_vecs(&sets, &c)?;
        for (e, v) in self.layout().entries().iter().zip(&mut g) {
            if e.role.is_state() {
                v.fill(0.0);
            }
        }
        let device = drawn.newest.tensors()[0].device();
        Ok(Gradient::Values(ParamSet::from_vecs(
            self.layout().clone(),
            g,
            &device,
        )?))
    }

    /// The test metrics at the centre of the first simplex (its state recomputed), suffixed
    /// `_centre`.
    fn epoch_end(&mut self, params: &ParamSet, epoch: usize) -> Result<Vec<(String, Value)>> {
        let mut v = vec![&self.frozen.modes[0]];
        v.extend(&self.frozen.connectors);
        v.push(params);
        let c = vec![1.0 / v.len() as f32; v.len()];
        let mut centre = ParamSet::combination(&v, &c)?;
        if centre.layout().has_state() {
            centre = recompute(
                &self.frozen.arch,
                &centre,
                self.state_data,
                &StateSample::ALL,
                &self.device,
            );
        }
        Ok(self
            .point
            .epoch_end(&centre, epoch)?
            .into_iter()
            .map(|(k, v)| (format!("{k}_centre"), v))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn d2_of(points: &[Vec<f64>]) -> Vec<Vec<f64>> {
        points
            .iter()
            .map(|a| {
                points
                    .iter()
                    .map(|b| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn unit_right_simplexes_have_their_exact_squared_volumes() {
        // Length 1, area 1/2, volume 1/6 (squared: 1, 1/4, 1/36).
        let unit = |k: usize| {
            let mut p = vec![vec![0.0; k]];
            p.extend((0..k).map(|i| (0..k).map(|j| f64::from(i == j)).collect()));
            p
        };
        for (k, want) in [(1, 1.0), (2, 0.25), (3, 1.0 / 36.0), (4, 1.0 / 576.0)] {
            let v = sq_volume(&d2_of(&unit(k)));
            assert!((v - want).abs() < 1e-12 * want.max(1.0), "k = {k}: {v}");
        }
        // Scaling every edge by s scales the squared k-volume by s^(2k).
        let scaled: Vec<Vec<f64>> = unit(3)
            .into_iter()
            .map(|p| p.iter().map(|x| 3.0 * x).collect())
            .collect();
        let v = sq_volume(&d2_of(&scaled));
        assert!((v / (1.0 / 36.0) - 3f64.powi(6)).abs() < 1e-8);
        // A degenerate (collinear) triangle has no volume.
        let line = vec![vec![0.0, 0.0], vec![1.0, 1.0], vec![2.0, 2.0]];
        assert!(sq_volume(&d2_of(&line)) < 1e-12);
        assert!(log_sq_volume_grad(&d2_of(&line)).is_none());
    }

    #[test]
    fn the_volume_gradient_matches_finite_differences() {
        // Two modes and two connectors in R^5: two triangles sharing an edge; the gradient of
        // log(V_1 + V_2) in the newest connector, against central differences.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let pts: Vec<Vec<f64>> = (0..4)
            .map(|_| (0..5).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let s = simplexes(2, 2);
        let (lv, beta) = log_volume_grad(&d2_of(&pts), &s, 3).unwrap();
        let grad: Vec<f64> = (0..5)
            .map(|d| beta.iter().zip(&pts).map(|(b, p)| b * p[d]).sum())
            .collect();
        let h = 1e-6;
        for d in 0..5 {
            let at = |delta: f64| {
                let mut q = pts.clone();
                q[3][d] += delta;
                log_volume_grad(&d2_of(&q), &s, 3).unwrap().0
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - grad[d]).abs() < 1e-6 * (1.0 + fd.abs()),
                "coordinate {d}: {fd} vs {}",
                grad[d]
            );
        }
        let direct: f64 = s
            .iter()
            .map(|t| {
                let sub: Vec<Vec<f64>> = t.iter().map(|&i| pts[i].clone()).collect();
                sq_volume(&d2_of(&sub))
            })
            .sum();
        assert!((lv - direct.ln()).abs() < 1e-10);
    }

    #[test]
    fn dirichlet_ones_has_the_uniform_simplex_moments() {
        // Dirichlet(1, …, 1) in n components: mean 1/n, variance (n − 1)/(n²(n + 1)).
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (n, draws) = (4usize, 100_000);
        let mut sum = vec![0.0; n];
        let mut sq = vec![0.0; n];
        for _ in 0..draws {
            let a = dirichlet_ones(n, &mut rng);
            assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(a.iter().all(|&x| x >= 0.0));
            for i in 0..n {
                sum[i] += a[i];
                sq[i] += a[i] * a[i];
            }
        }
        let nf = n as f64;
        let var = (nf - 1.0) / (nf * nf * (nf + 1.0));
        for i in 0..n {
            let mean = sum[i] / draws as f64;
            let v = sq[i] / draws as f64 - mean * mean;
            assert!((mean - 1.0 / nf).abs() < 3e-3, "mean {mean}");
            assert!((v - var).abs() < 0.05 * var, "variance {v} vs {var}");
        }
    }

    #[test]
    fn sampled_points_lie_on_one_simplex_of_the_complex() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let c = sample_point(3, 2, &mut rng);
            assert_eq!(c.len(), 5);
            assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            // Exactly one mode takes part.
            assert_eq!(c[..3].iter().filter(|&&x| x > 0.0).count(), 1);
        }
        assert_eq!(simplexes(2, 3), vec![vec![0, 2, 3, 4], vec![1, 2, 3, 4]]);
    }
}
