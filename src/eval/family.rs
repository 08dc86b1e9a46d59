//! Evaluation of many members of one linear family of networks, `w(c) = Σ_j c_j·w_j` (the
//! points of a curve through its control points, the cells of a plane through `w1 + x·u + y·v`),
//! on fixed datasets, at GEMM speed.
//!
//! - Inputs are batched once ([`EVAL_BATCH`] samples) and shared by every member.
//! - An MLP's first layer is linear in its weights: `x·W₁(c)ᵀ = Σ_j c_j·(x·W₁,ⱼᵀ)`. The products
//!   `Z_j = X·W₁,ⱼᵀ` are computed once per basis vector and dataset; a member then costs
//!   `Σ_j c_j·Z_j` plus the layers after the first (784-300-100-10: ≈ 8.5× fewer FLOPs than a
//!   full forward pass). Used when the products fit [`CACHE_BUDGET_BYTES`]; otherwise (and for
//!   convolutional first layers) every member runs the full forward pass on the shared batches.
//!
//! Results equal [`evaluate`](super::evaluate) on the combined weights up to float rounding.

use std::mem::MaybeUninit;
use std::sync::Arc;

use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use multiversion::multiversion;
use rayon::prelude::*;

use super::repair::Repair;
use super::state::StateSample;
use super::{EVAL_BATCH, Metrics, batch_stats, batch_tensors};
use crate::arch::Arch;
use crate::backend::{with_host, with_hosts};
use crate::data::Dataset;
use crate::params::{Layout, ParamSet, combine, combine_slices};
use crate::weights::{Weights, bias_name, dense, weight_name};

/// Members evaluated together by [`Family::metrics_all`].
pub const GROUP: usize = 32;

/// Largest total size of the cached first-layer products (all datasets and basis vectors).
pub const CACHE_BUDGET_BYTES: usize = 1 << 30;

struct Batch {
    x: Tensor<2>,
    y: Tensor<1, Int>,
    /// `x·W₁,ⱼᵀ` (no bias) per basis vector `j`; empty when the first layer is not cached.
    z: Vec<Tensor<2>>,
}

/// A linear family of networks on one layout, prepared for evaluation on fixed datasets.
pub struct Family {
    arch: Arch,
    layout: Arc<Layout>,
    basis: Vec<Vec<f32>>,
    first: Option<String>,
    /// With a cached first layer: its weight's index in the layout and a zero tensor of its
    /// size, the placeholder of [`Family::eval_member`].
    skipped: Option<(usize, Tensor<1>)>,
    data: Vec<(usize, Vec<Batch>)>,
    /// For a layout with state: the data (the first dataset) on which every member's state is
    /// recomputed before it is evaluated ([`crate::eval::state::recompute`]).
    state_data: Option<Dataset>,
    /// The samples of that recomputation.
    state_sample: StateSample,
    /// REPAIR of every member ([`Family::with_repair`]).
    repair: Option<Repair>,
    device: Device,
}

/// A weights source that answers the first dense layer from precomputed products.
struct CachedFirst<'a> {
    params: &'a ParamSet,
    layer: &'a str,
    /// `x·W₁,ⱼᵀ` for the basis vectors with a non-zero coefficient, and those coefficients.
    z: Vec<&'a Tensor<2>>,
    c: Vec<f32>,
    /// Rows of the batch.
    rows: usize,
}

impl CachedFirst<'_> {
    /// `act(Σ_j c_j·Z_j + b)` in one host pass over the products (summed in basis order, then
    /// the bias: the operations of composing burn's ops, without a buffer per op).
    fn first(&self, relu: bool) -> Tensor<2> {
        let b: Tensor<1> = self.params.get(&bias_name(self.layer));
        let device = b.device();
        let [units] = b.dims();
        let rows = self.rows;
        let out = with_host(&b, |b| {
            with_hosts(&self.z, |zs| {
                let n = rows * units;
                let c = &self.c;
                if (1..=3).contains(&zs.len()) {
                    let mut out = Vec::with_capacity(n);
                    let dst = &mut out.spare_capacity_mut()[..n];
                    match zs.len() {
                        1 => combine1([zs[0]], [c[0]], b, relu, dst),
                        2 => combine2([zs[0], zs[1]], [c[0], c[1]], b, relu, dst),
                        _ => combine3([zs[0], zs[1], zs[2]], [c[0], c[1], c[2]], b, relu, dst),
                    }
                    // SAFETY: `combine_products` wrote every one of the `n` elements.
                    unsafe { out.set_len(n) };
                    return out;
                }
                let mut out = vec![0.0f32; n];
                for (k, (z, &c)) in zs.iter().zip(c).enumerate() {
                    let z = out.iter_mut().zip(*z);
                    if k == 0 {
                        z.for_each(|(o, z)| *o = z * c);
                    } else {
                        z.for_each(|(o, z)| *o += z * c);
                    }
                }
                for row in out.chunks_exact_mut(units) {
                    for (o, b) in row.iter_mut().zip(b) {
                        *o = act(*o + b, relu);
                    }
                }
                out
            })
        });
        Tensor::from_data(TensorData::new(out, [rows, units]), &device)
    }
}

/// `act(x)`: a ReLU (NaN stays NaN, as in burn's relu) or the identity.
#[inline(always)]
fn act(x: f32, relu: bool) -> f32 {
    if relu && x < 0.0 { 0.0 } else { x }
}

/// [`CachedFirst::first`] for `K` products `[rows, units]` (`units = b.len()`) into `out`, every
/// element written: `act(((z₀c₀ + z₁c₁) + …) + b)` per element in one pass (the operations, in
/// order, of the general case).
#[inline(always)]
fn combine_products<const K: usize>(
    z: [&[f32]; K],
    c: [f32; K],
    b: &[f32],
    relu: bool,
    out: &mut [MaybeUninit<f32>],
) {
    let units = b.len();
    for (r, row) in out.chunks_exact_mut(units).enumerate() {
        let z = z.map(|z| &z[r * units..(r + 1) * units]);
        for i in 0..units {
            let mut v = z[0][i] * c[0];
            for k in 1..K {
                v += z[k][i] * c[k];
            }
            row[i].write(act(v + b[i], relu));
        }
    }
}

/// [`combine_products`] for one, two and three products, compiled for AVX-512 and AVX2 as well as the
/// baseline (the crate builds for baseline x86-64, 4 lanes); IEEE operations only, so the same
/// bits in every build.
macro_rules! combine_k {
    ($($name:ident = $k:literal),*) => {$(
        #[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
        fn $name(
            z: [&[f32]; $k],
            c: [f32; $k],
            b: &[f32],
            relu: bool,
            out: &mut [MaybeUninit<f32>],
        ) {
            combine_products::<$k>(z, c, b, relu, out)
        }
    )*};
}
combine_k!(combine1 = 1, combine2 = 2, combine3 = 3);

impl Weights for CachedFirst<'_> {
    fn param(&self, name: &str) -> Tensor<1> {
        self.params.param(name)
    }

    fn dense(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        if layer == self.layer {
            self.first(false)
        } else {
            self.params.dense(layer, x)
        }
    }

    fn dense_relu(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        if layer == self.layer {
            self.first(true)
        } else {
            self.params.dense_relu(layer, x)
        }
    }

    fn conv2d(&self, layer: &str, x: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
        self.params.conv2d(layer, x, options)
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

impl Family {
    /// Prepares `basis` (host flats in `layout` order) for evaluation on `datasets`; computes
    /// the first-layer products in parallel when the architecture and the budget allow.
    pub fn new(
        arch: &Arch,
        layout: Arc<Layout>,
        basis: Vec<Vec<f32>>,
        datasets: &[&Dataset],
        device: &Device,
    ) -> Self {
        let first = arch
            .first_dense_layer()
            .filter(|_| {
                let units = arch.first_layer_units();
                let rows: usize = datasets.iter().map(|d| d.len()).sum();
                rows * units * basis.len() * 4 <= CACHE_BUDGET_BYTES
            })
            .map(str::to_string);
        let skipped = first.as_ref().map(|layer| {
            let index = layout
                .index_of(&weight_name(layer))
                .expect("the first layer's weight is in the layout");
            let n = layout.entries()[index].numel();
            (index, Tensor::<1>::zeros([n], device))
        });
        let weights: Vec<Tensor<2>> = match &first {
            Some(layer) => basis
                .iter()
                .map(|flat| {
                    ParamSet::from_flat(layout.clone(), flat, device)
                        .expect("layout-sized basis vector")
                        .get::<2>(&weight_name(layer))
                })
                .collect(),
            None => Vec::new(),
        };
        let data = datasets
            .iter()
            .map(|d| {
                let idx: Vec<usize> = (0..d.len()).collect();
                let batches = idx
                    .par_chunks(EVAL_BATCH)
                    .map(|chunk| {
                        let (x, y) = batch_tensors(d, chunk, device);
                        let z = weights
                            .iter()
                            .map(|w| dense(x.clone(), w.clone(), None))
                            .collect();
                        Batch { x, y, z }
                    })
                    .collect();
                (d.len(), batches)
            })
            .collect();
        let state_data = layout
            .has_state()
            .then(|| datasets.first().map(|d| (*d).clone()))
            .flatten();
        Self {
            arch: arch.clone(),
            layout,
            basis,
            skipped,
            first,
            data,
            state_data,
            state_sample: StateSample::ALL,
            repair: None,
            device: device.clone(),
        }
    }

    /// How members' state is treated: `Some(sample)` recomputes it on those samples of the
    /// first dataset (the whole of it by default); `None` evaluates members with their
    /// interpolated state (for comparison with the recomputed one).
    pub fn with_state_mode(mut self, recompute: Option<StateSample>) -> Self {
        match recompute {
            Some(sample) => self.state_sample = sample,
            None => self.state_data = None,
        }
        self
    }

    /// Every member repaired ([`super::repair`]) before it is evaluated: its hidden channels
    /// rescaled to the statistics of its control points mixed with its coefficients. The
    /// first layer is then evaluated from the member's own (rescaled) weights, not from cached
    /// products.
    pub fn with_repair(mut self, repair: Repair) -> Self {
        self.repair = Some(repair);
        self.first = None;
        self.skipped = None;
        for (_, batches) in &mut self.data {
            for b in batches.iter_mut() {
                b.z.clear();
            }
        }
        self
    }

    /// The member `c` (weights `params`) as it is evaluated: its state recomputed on the
    /// family's state data (when it has state), and repaired when the family repairs.
    fn prepare(&self, c: &[f64], params: ParamSet) -> ParamSet {
        let params = match &self.state_data {
            Some(d) => {
                super::state::recompute(&self.arch, &params, d, &self.state_sample, &self.device)
            }
            None => params,
        };
        match &self.repair {
            Some(r) => r.apply(&self.arch, &params, c, &self.device),
            None => params,
        }
    }

    /// Whether the first layer is answered from cached products.
    pub fn cached(&self) -> bool {
        self.first.is_some()
    }

    /// The member with coefficients `c` (one per basis vector) as host flats.
    pub fn member(&self, c: &[f64]) -> Vec<f32> {
        assert_eq!(
            c.len(),
            self.basis.len(),
            "one coefficient per basis vector"
        );
        let (points, cs) = self.terms(c);
        let mut out = vec![0.0f32; self.basis[0].len()];
        if !points.is_empty() {
            combine(&mut out, &points, &cs);
        }
        out
    }

    /// The basis vectors with non-zero coefficients in `c`, and those coefficients as f32.
    fn terms(&self, c: &[f64]) -> (Vec<&[f32]>, Vec<f32>) {
        self.basis
            .iter()
            .zip(c)
            .filter(|(_, c)| **c != 0.0)
            .map(|(p, &c)| (&p[..], c as f32))
            .unzip()
    }

    /// Metrics of the member with coefficients `c` on every dataset, in the order given to
    /// [`Family::new`].
    pub fn metrics(&self, c: &[f64]) -> Vec<Metrics> {
        self.metrics_of(c, &self.member(c))
    }

    /// [`Family::metrics`] given the member's weights `w = self.member(c)` already formed.
    pub fn metrics_of(&self, c: &[f64], w: &[f32]) -> Vec<Metrics> {
        let params =
            ParamSet::from_flat(self.layout.clone(), w, &self.device).expect("layout-sized member");
        let params = self.prepare(c, params);
        self.data
            .iter()
            .map(|(n, batches)| {
                let (mut nll, mut correct) = (0.0, 0usize);
                for b in batches {
                    let (l, k) = self.batch(c, &params, b);
                    nll += l;
                    correct += k;
                }
                Metrics::of_sums(nll, correct, *n)
            })
            .collect()
    }

    /// The member `c` as the parameters [`Family::batch`] reads: each entry `Σ_j c_j·w_j` in
    /// one pass (the sums of [`Family::member`], in its order), except the cached first layer's
    /// weight, which the batches never read (answered from the products): it is left as zeros
    /// shared by every member, sparing the largest matrix's combination and copy.
    fn eval_member(&self, c: &[f64]) -> ParamSet {
        assert_eq!(
            c.len(),
            self.basis.len(),
            "one coefficient per basis vector"
        );
        let (points, cs) = self.terms(c);
        let off = self.layout.offsets();
        let skipped = self.skipped.as_ref();
        let tensors = (0..self.layout.len())
            .map(|i| {
                if let Some((index, zeros)) = skipped
                    && *index == i
                {
                    return zeros.clone();
                }
                let range = off[i]..off[i + 1];
                let len = range.len();
                let mut v = vec![0.0f32; len];
                combine_slices(&mut v, range.start, &points, &cs);
                Tensor::from_data(TensorData::new(v, [len]), &self.device)
            })
            .collect();
        ParamSet::from_tensors(self.layout.clone(), tensors).expect("layout-shaped member")
    }

    /// [`Family::metrics`] of every member in `cs`, in order, in parallel. Members go in groups
    /// of [`GROUP`], each batch's cached first-layer products shared by the whole group while
    /// they are in cache (per member they are read from memory: a 21×21 plane on 15k samples
    /// streams 54 MB of them per member). The same results as [`Family::metrics`] per member.
    pub fn metrics_all(&self, cs: &[Vec<f64>]) -> Vec<Vec<Metrics>> {
        let mut out = Vec::with_capacity(cs.len());
        for group in cs.chunks(GROUP) {
            let members: Vec<ParamSet> = group
                .par_iter()
                .map(|c| self.prepare(c, self.eval_member(c)))
                .collect();
            let per_dataset: Vec<Vec<Metrics>> = self
                .data
                .iter()
                .map(|(n, batches)| {
                    let mut sums = vec![(0.0f64, 0usize); group.len()];
                    for b in batches {
                        let stats: Vec<(f64, usize)> = group
                            .par_iter()
                            .zip(&members)
                            .map(|(c, params)| self.batch(c, params, b))
                            .collect();
                        for (s, (l, k)) in sums.iter_mut().zip(stats) {
                            s.0 += l;
                            s.1 += k;
                        }
                    }
                    sums.into_iter()
                        .map(|(nll, correct)| Metrics::of_sums(nll, correct, *n))
                        .collect()
                })
                .collect();
            for m in 0..group.len() {
                out.push(per_dataset.iter().map(|d| d[m]).collect());
            }
        }
        out
    }

    /// Summed loss and number correct of the member `c` (weights `params`) on one batch.
    fn batch(&self, c: &[f64], params: &ParamSet, b: &Batch) -> (f64, usize) {
        let logits = match &self.first {
            Some(layer) => {
                let (z, c) =
                    b.z.iter()
                        .zip(c)
                        .filter(|(_, c)| **c != 0.0)
                        .map(|(z, &c)| (z, c as f32))
                        .unzip();
                let w = CachedFirst {
                    params,
                    layer,
                    z,
                    c,
                    rows: b.x.dims()[0],
                };
                self.arch.forward(&w, b.x.clone())
            }
            None => self.arch.forward(params, b.x.clone()),
        };
        batch_stats(logits, b.y.clone())
    }

    /// Multiply-adds ×2 per member over all datasets: `(executed, full)`, where `full` counts a
    /// whole forward pass and `executed` what [`Family::metrics`] runs (the first layer replaced
    /// by combining the cached products when [`Family::cached`]).
    pub fn flops_per_member(&self, nonzero_coeffs: usize) -> (f64, f64) {
        let rows: usize = self.data.iter().map(|(n, _)| n).sum();
        let full = 2.0 * self.arch.macs_per_sample() as f64 * rows as f64;
        let executed = match &self.first {
            Some(_) => {
                let first = self.arch.first_layer_macs() as f64;
                let units = self.arch.first_layer_units() as f64;
                full - 2.0 * first * rows as f64 + 2.0 * units * nonzero_coeffs as f64 * rows as f64
            }
            None => full,
        };
        (executed, full)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::backend;
    use crate::eval::evaluate;

    fn data(n: usize, shape: [usize; 3], seed: u64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dim = shape.iter().product::<usize>();
        Dataset {
            name: "random".into(),
            x: (0..n * dim).map(|_| rng.random::<f32>()).collect(),
            y: (0..n).map(|_| rng.random_range(0..10u8)).collect(),
            shape,
            classes: 10,
        }
    }

    /// Every member's metrics equal `evaluate` on the combined weights (cached first layer for
    /// the MLP, full forward for LeNet-5), over more than one batch and zero coefficients.
    #[test]
    fn members_match_direct_evaluation() {
        let device = backend::device();
        for (arch, shape) in [
            ("mlp:64-32-16-10", [1, 8, 8]),
            ("lenet5:1x16x16", [1, 16, 16]),
        ] {
            let arch: Arch = arch.parse().unwrap();
            let (a, b) = (data(EVAL_BATCH + 37, shape, 1), data(250, shape, 2));
            let basis: Vec<Vec<f32>> = (0..3).map(|s| arch.init(s, &device).to_flat()).collect();
            let fam = Family::new(&arch, arch.layout(), basis, &[&a, &b], &device);
            assert_eq!(fam.cached(), arch.first_dense_layer().is_some());
            for c in [[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.3, -1.2, 2.5]] {
                let w = ParamSet::from_flat(arch.layout(), &fam.member(&c), &device).unwrap();
                let got = fam.metrics(&c);
                for (m, d) in got.iter().zip([&a, &b]) {
                    let want = evaluate(&arch, &w, d, EVAL_BATCH, &device);
                    assert_eq!(m.n, want.n);
                    assert!(
                        (m.loss - want.loss).abs() < 1e-4 * want.loss.max(1.0),
                        "{arch}"
                    );
                    assert!((m.acc - want.acc).abs() <= 1.0 / want.n as f64, "{arch}");
                }
            }
        }
    }

    /// `metrics_all` gives every member the results of `metrics`, over more than one group.
    #[test]
    fn metrics_all_matches_metrics_per_member() {
        let device = backend::device();
        let arch: Arch = "mlp:64-32-16-10".parse().unwrap();
        let (a, b) = (data(EVAL_BATCH + 37, [1, 8, 8], 3), data(120, [1, 8, 8], 4));
        let basis: Vec<Vec<f32>> = (0..3).map(|s| arch.init(s, &device).to_flat()).collect();
        let fam = Family::new(&arch, arch.layout(), basis, &[&a, &b], &device);
        let cs: Vec<Vec<f64>> = (0..GROUP + 5)
            .map(|i| {
                let t = i as f64 / 10.0;
                vec![1.0 - t, t, if i % 3 == 0 { 0.0 } else { 0.5 - t }]
            })
            .chain([vec![0.0, 0.0, 0.0]])
            .collect();
        let all = fam.metrics_all(&cs);
        assert_eq!(all.len(), cs.len());
        for (c, m) in cs.iter().zip(&all) {
            assert_eq!(m, &fam.metrics(c), "coefficients {c:?}");
        }
    }

    /// FLOP counts: 784-300-100-10 is 266,200 MACs a sample; caching drops the 235,200 of the
    /// first layer for 300 per non-zero coefficient.
    #[test]
    fn flop_counts() {
        let arch: Arch = "mlp:784-300-100-10".parse().unwrap();
        assert_eq!(arch.macs_per_sample(), 266_200);
        let device = backend::device();
        let d = data(10, [1, 28, 28], 0);
        let basis = vec![arch.init(0, &device).to_flat(); 2];
        let fam = Family::new(&arch, arch.layout(), basis, &[&d], &device);
        let (exec, full) = fam.flops_per_member(2);
        assert_eq!(full, 2.0 * 266_200.0 * 10.0);
        assert_eq!(exec, 2.0 * (266_200.0 - 235_200.0 + 600.0) * 10.0);
        let lenet: Arch = "lenet5".parse().unwrap();
        // conv1 288k, conv2 1.6M, fc1 400k, fc2 5k multiply-adds (LeNet-5-Caffe on 28×28).
        assert_eq!(
            lenet.macs_per_sample(),
            288_000 + 1_600_000 + 400_000 + 5_000
        );
    }
}
