//! `ParamSet`: one container for the weights of any network, curve control point, optimiser state
//! or variational parameter set, plus the weight-space algebra on it.
//!
//! Tensors are stored flat (`Tensor<1>`) in layout order; [`ParamSet::get`] reshapes one to its
//! layout shape, differentiably, so the same algebra (linear combinations for curves, lerp, norms)
//! works with and without autodiff.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use ndarray::Array1;

use super::layout::Layout;
use multiversion::multiversion;
use rayon::prelude::*;

use crate::backend::{PASS_BLOCK as BLOCK, with_host, with_hosts};
use crate::error::{Error, Result};

/// A tensor's values on the host as `f32`, row-major.
pub fn host_vec<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    with_host(t, <[f32]>::to_vec)
}

/// An ordered set of named tensors described by a [`Layout`].
#[derive(Debug, Clone)]
pub struct ParamSet {
    layout: Arc<Layout>,
    tensors: Vec<Tensor<1>>,
}

impl ParamSet {
    /// Builds a set from per-tensor values (row-major, lengths checked against the layout).
    pub fn from_vecs(layout: Arc<Layout>, values: Vec<Vec<f32>>, device: &Device) -> Result<Self> {
        if values.len() != layout.len() {
            return Err(Error::InvalidSpec(format!(
                "expected {} tensors, got {}",
                layout.len(),
                values.len()
            )));
        }
        let mut tensors = Vec::with_capacity(values.len());
        for (e, v) in layout.entries().iter().zip(values) {
            if v.len() != e.numel() {
                return Err(Error::ShapeMismatch {
                    name: e.name.clone(),
                    expected: e.shape.clone(),
                    found: vec![v.len()],
                });
            }
            let n = v.len();
            tensors.push(Tensor::from_data(TensorData::new(v, [n]), device));
        }
        Ok(Self { layout, tensors })
    }

    /// Builds a set from one flat vector of `layout.numel()` values.
    pub fn from_flat(layout: Arc<Layout>, flat: &[f32], device: &Device) -> Result<Self> {
        if flat.len() != layout.numel() {
            return Err(Error::InvalidSpec(format!(
                "flat vector has {} values, layout needs {}",
                flat.len(),
                layout.numel()
            )));
        }
        let off = layout.offsets();
        let values = (0..layout.len())
            .map(|i| flat[off[i]..off[i + 1]].to_vec())
            .collect();
        Self::from_vecs(layout, values, device)
    }

    /// All zeros.
    pub fn zeros(layout: Arc<Layout>, device: &Device) -> Self {
        let tensors = layout
            .entries()
            .iter()
            .map(|e| crate::backend::zeros(e.numel(), device))
            .collect();
        Self { layout, tensors }
    }

    /// Builds a set from flat tensors already in layout order (lengths checked).
    pub fn from_tensors(layout: Arc<Layout>, tensors: Vec<Tensor<1>>) -> Result<Self> {
        if tensors.len() != layout.len() {
            return Err(Error::InvalidSpec(format!(
                "expected {} tensors, got {}",
                layout.len(),
                tensors.len()
            )));
        }
        for (e, t) in layout.entries().iter().zip(&tensors) {
            if t.dims()[0] != e.numel() {
                return Err(Error::ShapeMismatch {
                    name: e.name.clone(),
                    expected: e.shape.clone(),
                    found: t.dims().to_vec(),
                });
            }
        }
        Ok(Self { layout, tensors })
    }

    /// The layout.
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// The flat tensors in layout order.
    pub fn tensors(&self) -> &[Tensor<1>] {
        &self.tensors
    }

    /// Consumes the set, returning its flat tensors.
    pub fn into_tensors(self) -> Vec<Tensor<1>> {
        self.tensors
    }

    /// The flat tensor of a named parameter.
    pub fn flat(&self, name: &str) -> Result<&Tensor<1>> {
        Ok(&self.tensors[self.layout.index_of(name)?])
    }

    /// A named parameter reshaped to its layout shape (differentiable).
    ///
    /// Panics if the name is unknown or the rank is not `D`: architectures only ask for names their
    /// own layout declares, and layouts are checked when files are loaded.
    pub fn get<const D: usize>(&self, name: &str) -> Tensor<D> {
        let i = self
            .layout
            .index_of(name)
            .unwrap_or_else(|_| panic!("parameter `{name}` is not in the layout"));
        let shape: [usize; D] = self.layout.entries()[i]
            .shape
            .clone()
            .try_into()
            .unwrap_or_else(|_| panic!("parameter `{name}` does not have rank {D}"));
        self.tensors[i].clone().reshape(shape)
    }

    /// Applies `f` to every tensor.
    pub fn map(&self, mut f: impl FnMut(&Tensor<1>) -> Tensor<1>) -> ParamSet {
        ParamSet {
            layout: self.layout.clone(),
            tensors: self.tensors.iter().map(&mut f).collect(),
        }
    }

    /// Applies `f` to matching tensors of two sets with the same layout.
    pub fn zip_map(
        &self,
        other: &ParamSet,
        mut f: impl FnMut(&Tensor<1>, &Tensor<1>) -> Tensor<1>,
    ) -> Result<ParamSet> {
        self.check_same_layout(other)?;
        Ok(ParamSet {
            layout: self.layout.clone(),
            tensors: self
                .tensors
                .iter()
                .zip(&other.tensors)
                .map(|(a, b)| f(a, b))
                .collect(),
        })
    }

    /// Errors unless `other` has the same names and shapes in the same order.
    pub fn check_same_layout(&self, other: &ParamSet) -> Result<()> {
        if Arc::ptr_eq(&self.layout, &other.layout) || self.layout == other.layout {
            return Ok(());
        }
        for e in self.layout.entries() {
            let o = other.layout.entry(&e.name)?;
            if o.shape != e.shape {
                return Err(Error::ShapeMismatch {
                    name: e.name.clone(),
                    expected: e.shape.clone(),
                    found: o.shape.clone(),
                });
            }
        }
        for o in other.layout.entries() {
            self.layout
                .entry(&o.name)
                .map_err(|_| Error::UnexpectedParam {
                    name: o.name.clone(),
                })?;
        }
        Err(Error::InvalidSpec(
            "parameter sets list the same tensors in a different order".into(),
        ))
    }

    /// `self + other`.
    pub fn add(&self, other: &ParamSet) -> Result<ParamSet> {
        self.zip_map(other, |a, b| a.clone() + b.clone())
    }

    /// `self − other`.
    pub fn sub(&self, other: &ParamSet) -> Result<ParamSet> {
        self.zip_map(other, |a, b| a.clone() - b.clone())
    }

    /// `s · self`.
    pub fn scale(&self, s: f32) -> ParamSet {
        self.map(|a| a.clone() * s)
    }

    /// `self + a · x`.
    pub fn axpy(&self, a: f32, x: &ParamSet) -> Result<ParamSet> {
        self.zip_map(x, |s, x| s.clone() + x.clone() * a)
    }

    /// `(1 − t) · self + t · other`.
    pub fn lerp(&self, other: &ParamSet, t: f32) -> Result<ParamSet> {
        self.zip_map(other, |a, b| a.clone() * (1.0 - t) + b.clone() * t)
    }

    /// The first of `sets` after checking that they share one layout and have one coefficient
    /// each.
    fn combination_first<'s>(sets: &[&'s ParamSet], coeffs: &[f32]) -> Result<&'s ParamSet> {
        assert_eq!(sets.len(), coeffs.len(), "one coefficient per set");
        let first = sets
            .first()
            .ok_or_else(|| Error::InvalidSpec("empty combination".into()))?;
        for s in &sets[1..] {
            first.check_same_layout(s)?;
        }
        Ok(first)
    }

    /// `Σ_j c_j · sets_j` for sets sharing one layout (curve points). Terms with `c_j = 0` are
    /// skipped, so no gradient reaches control points that do not contribute.
    ///
    /// This is the portable form, in burn tensor operations: differentiable, and the path for
    /// tensors on any device. On the CPU the curve step and the evaluation of linear families
    /// form points on the host with [`combine_slices`] instead, which the tests hold
    /// bit-identical to this form (its oracle).
    pub fn combination(sets: &[&ParamSet], coeffs: &[f32]) -> Result<ParamSet> {
        let first = Self::combination_first(sets, coeffs)?;
        let tensors = (0..first.tensors.len())
            .map(|i| {
                let mut acc: Option<Tensor<1>> = None;
                for (s, &c) in sets.iter().zip(coeffs) {
                    if c == 0.0 {
                        continue;
                    }
                    let term = if c == 1.0 {
                        s.tensors[i].clone()
                    } else {
                        s.tensors[i].clone() * c
                    };
                    acc = Some(match acc {
                        None => term,
                        Some(a) => a + term,
                    });
                }
                acc.unwrap_or_else(|| first.tensors[i].zeros_like())
            })
            .collect();
        Ok(ParamSet {
            layout: first.layout.clone(),
            tensors,
        })
    }

    /// [`ParamSet::combination`] computed on the host, as values per tensor: the same f32
    /// operations in the same order (zero coefficients skipped, unit ones not multiplied), so
    /// the values are bit-identical; the tensors are read in place where the backend allows.
    pub fn combination_vecs(sets: &[&ParamSet], coeffs: &[f32]) -> Result<Vec<Vec<f32>>> {
        Ok(Self::combination_vecs_sq(sets, coeffs)?.0)
    }

    /// [`ParamSet::combination_vecs`] and the combination's `Σ w²` (f64), in parallel blocks
    /// of [`crate::backend::PASS_BLOCK`]: block sums added in order, so the same bits on any number of threads
    /// (the curve step's point and its weight decay).
    pub fn combination_vecs_sq(sets: &[&ParamSet], coeffs: &[f32]) -> Result<(Vec<Vec<f32>>, f64)> {
        Self::combination_into(sets, coeffs, Vec::new())
    }

    /// [`ParamSet::combination_vecs_sq`] written into `buffers` (one per tensor, e.g. the last
    /// step's point; missing or short ones are grown): a buffer of the right length is
    /// overwritten without being cleared or faulted in first.
    pub fn combination_into(
        sets: &[&ParamSet],
        coeffs: &[f32],
        buffers: Vec<Vec<f32>>,
    ) -> Result<(Vec<Vec<f32>>, f64)> {
        let first = Self::combination_first(sets, coeffs)?;
        let (used, cs): (Vec<&ParamSet>, Vec<f32>) = sets
            .iter()
            .zip(coeffs)
            .filter(|(_, c)| **c != 0.0)
            .map(|(s, c)| (*s, *c))
            .unzip();
        let mut buffers = buffers.into_iter();
        let mut total = 0.0;
        let vecs = (0..first.tensors.len())
            .map(|i| {
                let mut w = buffers.next().unwrap_or_default();
                w.resize(first.layout.entries()[i].numel(), 0.0);
                if used.is_empty() {
                    w.fill(0.0);
                    return w;
                }
                let ts: Vec<&Tensor<1>> = used.iter().map(|s| &s.tensors[i]).collect();
                total += with_hosts(&ts, |vs| combine(&mut w, vs, &cs));
                w
            })
            .collect();
        Ok((vecs, total))
    }

    /// Several sets on one layout packed into one set, the `k`-th set's names prefixed by
    /// `prefix(k)` (a curve's trained points, a simplex step's sampled points); the tensors are
    /// shared, autodiff included. [`ParamSet::unpack`] is its inverse.
    pub fn pack(sets: &[&ParamSet], prefix: impl Fn(usize) -> String) -> ParamSet {
        let mut entries = Vec::new();
        let mut tensors = Vec::new();
        for (k, s) in sets.iter().enumerate() {
            entries.extend(s.layout.prefixed(&prefix(k)).entries().iter().cloned());
            tensors.extend(s.tensors.iter().cloned());
        }
        let layout = Arc::new(Layout::new(entries).expect("distinct prefixes give unique names"));
        ParamSet::from_tensors(layout, tensors).expect("shapes from the sets' layouts")
    }

    /// The sets of a [`ParamSet::pack`]ed set, on their common layout `base` (the tensors are
    /// shared, autodiff included).
    pub fn unpack(&self, base: &Arc<Layout>) -> Vec<ParamSet> {
        let l = base.len();
        self.tensors
            .chunks(l)
            .map(|ts| {
                ParamSet::from_tensors(base.clone(), ts.to_vec()).expect("packed on this layout")
            })
            .collect()
    }

    /// `Σ w²` as a differentiable scalar tensor of shape `[1]`.
    pub fn sq_norm_tensor(&self) -> Tensor<1> {
        self.tensors
            .iter()
            .map(|t| (t.clone() * t.clone()).sum())
            .reduce(|a, b| a + b)
            .expect("non-empty layout")
    }

    /// `⟨self, other⟩`, computed in f64 on the host.
    pub fn dot(&self, other: &ParamSet) -> Result<f64> {
        self.check_same_layout(other)?;
        let a = self.to_flat();
        let b = other.to_flat();
        Ok(a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum())
    }

    /// `‖self‖₂`, computed in f64 on the host.
    pub fn norm(&self) -> f64 {
        self.to_flat()
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// Per-tensor values in layout order.
    pub fn to_vecs(&self) -> Vec<Vec<f32>> {
        self.tensors.iter().map(host_vec).collect()
    }

    /// All values as one flat vector (layout order).
    pub fn to_flat(&self) -> Vec<f32> {
        self.to_vecs().concat()
    }

    /// [`ParamSet::to_flat`] with the state entries ([`crate::params::Role::is_state`]) zeroed:
    /// the point as weight-space geometry sees it (lengths, planes and families ignore state,
    /// which is recomputed wherever a point is evaluated).
    pub fn to_flat_trained(&self) -> Vec<f32> {
        let mut v = self.to_vecs();
        for (e, x) in self.layout.entries().iter().zip(&mut v) {
            if e.role.is_state() {
                x.fill(0.0);
            }
        }
        v.concat()
    }

    /// All values as an ndarray vector (for host-side weight-space linear algebra).
    pub fn to_array(&self) -> Array1<f32> {
        Array1::from_vec(self.to_flat())
    }

    /// The same values on `device` (without any autodiff graph).
    pub fn to_device(&self, device: &Device) -> ParamSet {
        self.map(|t| Tensor::from_data(t.to_data(), device))
    }

    /// Drops the autodiff association (values unchanged).
    pub fn without_autodiff(&self) -> ParamSet {
        self.map(|t| t.clone().without_autodiff())
    }

    /// Fresh autodiff leaves that require gradients (for training).
    pub fn leaves(&self) -> ParamSet {
        self.map(|t| t.clone().without_autodiff().autodiff().require_grad())
    }

    /// Autodiff constants: take part in a differentiable expression, receive no gradient.
    pub fn constants(&self) -> ParamSet {
        self.map(|t| t.clone().without_autodiff().autodiff())
    }
}

/// The host form of a linear combination of flat weight vectors: elements
/// `start..start + out.len()` of `Σ_j c_j·p_j` written into `out`, in point order (the first
/// term copied or scaled, then `+= x` for unit coefficients, `+= x·c` otherwise: the operations
/// of [`ParamSet::combination`], so the same bits), on the calling thread; returns their `Σ w²`.
/// Every coefficient is non-zero (an empty `points` leaves `out` as it is); every point holds
/// the range. Used by the curve step ([`ParamSet::combination_into`]) and by the evaluation of
/// linear families of networks (`eval::family`).
pub fn combine_slices(out: &mut [f32], start: usize, points: &[&[f32]], coeffs: &[f32]) -> f64 {
    combine_block(out, start, points, coeffs)
}

/// `w = Σ_j c_j·p_j` ([`combine_slices`]) over the whole of `w`, in parallel blocks, returning
/// `Σ w²` (block sums of `sum_of_squares` added in order). `points` is not empty, every
/// coefficient is non-zero and `w` is as long as a point.
pub fn combine(w: &mut [f32], points: &[&[f32]], coeffs: &[f32]) -> f64 {
    debug_assert!(
        points.iter().all(|p| p.len() == w.len()),
        "points of one layout"
    );
    let sums: Vec<f64> = w
        .par_chunks_mut(BLOCK)
        .enumerate()
        .map(|(b, out)| combine_block(out, b * BLOCK, points, coeffs))
        .collect();
    sums.into_iter().sum()
}

/// One block of [`combine`], starting at element `start`; compiled for AVX-512 and AVX2 as
/// well as the baseline (the same IEEE operations in each: no build contracts them into FMAs).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn combine_block(out: &mut [f32], start: usize, points: &[&[f32]], coeffs: &[f32]) -> f64 {
    let r = start..start + out.len();
    if let ([a, b], &[ca, cb]) = (points, coeffs) {
        // Two points (a chain's segment, a line): one pass, the same operations.
        let (a, b) = (&a[r.clone()], &b[r]);
        for (o, (&x, &y)) in out.iter_mut().zip(a.iter().zip(b)) {
            let first = if ca == 1.0 { x } else { x * ca };
            *o = if cb == 1.0 { first + y } else { first + y * cb };
        }
        return sum_of_squares(out);
    }
    for (k, (p, &c)) in points.iter().zip(coeffs).enumerate() {
        let p = &p[r.clone()];
        let z = out.iter_mut().zip(p);
        match (k, c == 1.0) {
            (0, true) => out.copy_from_slice(p),
            (0, false) => z.for_each(|(o, x)| *o = x * c),
            (_, true) => z.for_each(|(o, x)| *o += x),
            (_, false) => z.for_each(|(o, x)| *o += x * c),
        }
    }
    sum_of_squares(out)
}

/// Interleaved f64 accumulators of [`sum_of_squares`]: four AVX-512 registers' worth, so that
/// the adds of one register do not wait on the last ones (eight, one register, kept the curve
/// step's point pass waiting on add latency).
const SQ_LANES: usize = 32;

/// `Σ v²` in f64 over [`SQ_LANES`] interleaved accumulators, combined in a fixed order: a
/// single accumulator is one serial chain of dependent adds (≈ 0.3 ms for an MLP's 266k
/// weights).
#[inline(always)]
fn sum_of_squares(v: &[f32]) -> f64 {
    let mut acc = [0.0f64; SQ_LANES];
    let chunks = v.chunks_exact(SQ_LANES);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f64::from(x) * f64::from(x);
        }
    }
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::{ParamSet, sum_of_squares};
    use crate::arch::Arch;
    use crate::backend::{self, PASS_BLOCK};

    /// The blocked host combination has the bits of the tensor combination and the squared
    /// norm of the result, on one thread and on three (a tensor over two blocks long).
    #[test]
    fn host_combination_matches_the_tensor_one_on_any_thread_count() {
        let arch: Arch = "mlp:784-64-10".parse().unwrap();
        let device = backend::device();
        let points: Vec<ParamSet> = (0..3).map(|s| arch.init(s, &device)).collect();
        let refs: Vec<&ParamSet> = points.iter().collect();
        const { assert!(784 * 64 > 2 * PASS_BLOCK) };
        for coeffs in [
            [0.3f32, 0.7, 0.0],
            [0.0, 1.0, 0.0],
            [0.25, 0.5, 0.25],
            [1.0, 0.0, 2.0],
        ] {
            let want = ParamSet::combination(&refs, &coeffs).unwrap().to_vecs();
            let want_sq: f64 = want.concat().iter().map(|&x| f64::from(x).powi(2)).sum();
            let on = |threads: usize| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| ParamSet::combination_vecs_sq(&refs, &coeffs).unwrap())
            };
            let (w1, sq1) = on(1);
            assert_eq!(w1, want, "coefficients {coeffs:?}");
            assert!((sq1 - want_sq).abs() <= 1e-9 * want_sq);
            assert_eq!(on(3), (w1, sq1));
        }
    }

    /// The interleaved sum equals the plain sum (lengths with and without a remainder).
    #[test]
    fn sum_of_squares_matches_the_plain_sum() {
        for n in [0usize, 5, 8, 32, 1003] {
            let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
            let want: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            let got = sum_of_squares(&v);
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1.0),
                "{n}: {got} vs {want}"
            );
        }
    }
}
