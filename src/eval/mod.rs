//! Evaluation: `evaluate(arch, weights, data) → Metrics` (mean NLL and accuracy), batched and
//! without autodiff. Path profiles, planes and ensembles are built on it.

pub mod family;
pub mod hessian;
pub mod landscape;
pub mod path;
pub mod plane;
pub mod repair;
pub mod state;

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use multiversion::multiversion;
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::backend::with_host;
use crate::data::Dataset;
use crate::elementary::{exp_f32, ln_f32};
use crate::weights::Weights;

/// Default evaluation batch size (large batches run near GEMM speed).
pub const EVAL_BATCH: usize = 1000;

/// Loss and accuracy of a network on a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean cross-entropy (negative log-likelihood).
    pub loss: f64,
    /// Fraction classified correctly.
    pub acc: f64,
    /// Number of samples.
    pub n: usize,
}

impl Metrics {
    /// From a loss summed over `n` samples and the number of them classified correctly.
    pub fn of_sums(nll: f64, correct: usize, n: usize) -> Self {
        Metrics {
            loss: nll / n.max(1) as f64,
            acc: correct as f64 / n.max(1) as f64,
            n,
        }
    }

    /// Error rate `1 − acc`.
    pub fn err(&self) -> f64 {
        1.0 - self.acc
    }
}

/// Samples `idx` of `data` as tensors: inputs `[b, dim]` and labels `[b]`.
pub fn batch_tensors(
    data: &Dataset,
    idx: &[usize],
    device: &Device,
) -> (Tensor<2>, Tensor<1, Int>) {
    let (x, y) = data.gather(idx);
    let b = idx.len();
    let x = Tensor::from_data(TensorData::new(x, [b, data.dim()]), device);
    let y = Tensor::from_data(TensorData::new(y, [b]), device);
    (x, y)
}

/// Mean cross-entropy of `logits: [b, k]` against labels `[b]`, as a `[1]` tensor.
pub fn cross_entropy(logits: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
    let b = y.dims()[0];
    let logp = log_softmax(logits, 1);
    let picked: Tensor<2> = logp.gather(1, y.reshape([b, 1]));
    picked.mean().neg()
}

/// Squared error of `logits: [b, k]` to the one-hot targets of labels `[b]`: `Σ_k (z_k −
/// [k = y])²` averaged over the batch, as a `[1]` tensor.
pub fn squared_error(logits: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
    let [b, k] = logits.dims();
    let target: Tensor<2> = y.one_hot::<2>(k).float();
    (logits - target).powi_scalar(2).sum().div_scalar(b as f32)
}

/// The negative log-likelihood of the mean of K predictive distributions, averaged over the
/// batch: `−mean_b log( (1/K)·Σ_k softmax(z_k)_{y_b} )` for `logits = [z_1, …, z_K]`, each
/// `[b, classes]` — the multi-sample objective of an ensemble of sampled networks (a tighter
/// bound on the marginal likelihood than the mean of the K cross-entropies; Neklyudov et al.
/// 2019 train variance networks with it). Computed as a log-sum-exp over k of the picked
/// log-probabilities, shifted by their (constant) maximum. One logit matrix gives
/// [`cross_entropy`].
pub fn ensemble_nll(logits: Vec<Tensor<2>>, y: Tensor<1, Int>) -> Tensor<1> {
    let k = logits.len();
    assert!(k > 0, "at least one logit matrix");
    let b = y.dims()[0];
    let idx = y.reshape([b, 1]);
    let picked: Vec<Tensor<2>> = logits
        .into_iter()
        .map(|z| log_softmax(z, 1).gather(1, idx.clone()))
        .collect();
    let picked = Tensor::cat(picked, 1); // [b, k]
    let m = picked.clone().max_dim(1).detach();
    let lse = (picked - m.clone()).exp().sum_dim(1).log() + m;
    (lse - (k as f32).ln()).mean().neg()
}

/// The NLL sum and the number correct of an ensemble's mean prediction for one batch: `sum` holds
/// the summed softmax outputs of `members` networks, row-major `[labels.len(), classes]`; each
/// row's mean probability of its label gives `−log p` (floored at 1e-30), and its first maximum
/// the prediction.
pub fn score_mean_probabilities(
    sum: &[f64],
    members: usize,
    labels: &[i64],
    classes: usize,
) -> (f64, usize) {
    let (mut nll, mut correct) = (0.0, 0);
    for (i, &yi) in labels.iter().enumerate() {
        let row = &sum[i * classes..(i + 1) * classes];
        let py = row[yi as usize] / members as f64;
        nll -= py.max(1e-30).ln();
        let arg = row
            .iter()
            .enumerate()
            .fold(0, |best, (j, v)| if *v > row[best] { j } else { best });
        correct += usize::from(arg == yi as usize);
    }
    (nll, correct)
}

/// Loss and accuracy of the ensemble of `members` (weights of `arch`): the mean of their softmax
/// outputs per sample (Garipov et al. 2018's curve ensembles and FGE), on `data`.
pub fn evaluate_ensemble<W: Weights + ?Sized>(
    arch: &Arch,
    members: &[&W],
    data: &Dataset,
    batch: usize,
    device: &Device,
) -> Metrics {
    let classes = data.classes;
    let idx: Vec<usize> = (0..data.len()).collect();
    let (mut nll, mut correct) = (0.0, 0);
    for chunk in idx.chunks(batch.max(1)) {
        let (x, y) = batch_tensors(data, chunk, device);
        let labels: Vec<i64> = y.into_data().iter::<i64>().collect();
        let mut sum = vec![0.0f64; chunk.len() * classes];
        for w in members {
            let p = softmax(arch.forward(*w, x.clone()), 1);
            with_host(&p, |v| {
                for (a, b) in sum.iter_mut().zip(v) {
                    *a += f64::from(*b);
                }
            });
        }
        let (n, c) = score_mean_probabilities(&sum, members.len(), &labels, classes);
        nll += n;
        correct += c;
    }
    Metrics::of_sums(nll, correct, data.len())
}

/// Sum of cross-entropies and number of correct predictions for one batch of logits `[b, k]`
/// against labels `[b]`: per row `ln Σ_j e^{x_j − m} − (x_y − m)` with `m` the row's maximum
/// (in f32, summed over rows in f64), correct when the row's first maximum is at `y`. One host
/// pass with a vectorised `e^x` ([`crate::elementary`]); the values of [`cross_entropy`] up to
/// float rounding (tested). A NaN logit gives a NaN loss.
pub fn batch_stats(logits: Tensor<2>, y: Tensor<1, Int>) -> (f64, usize) {
    let [b, k] = logits.dims();
    let labels: Vec<i64> = y.into_data().iter::<i64>().collect();
    assert_eq!(labels.len(), b, "one label per row of logits");
    with_host(&logits, |x| row_stats(x, k, &labels))
}

/// [`batch_stats`] on host values, row-major `x: [labels.len(), k]`.
fn row_stats(x: &[f32], k: usize, labels: &[i64]) -> (f64, usize) {
    let mut max = Vec::with_capacity(labels.len());
    let mut correct = 0;
    for (row, &y) in x.chunks_exact(k).zip(labels) {
        let mut best = 0;
        for j in 1..k {
            if row[j] > row[best] {
                best = j;
            }
        }
        max.push(row[best]);
        correct += usize::from(usize::try_from(y) == Ok(best));
    }
    let sums = exp_row_sums(x, &max, k);
    let mut nll = 0.0f64;
    for (((row, &y), m), s) in x.chunks_exact(k).zip(labels).zip(&max).zip(&sums) {
        let picked = usize::try_from(y)
            .ok()
            .and_then(|y| row.get(y))
            .unwrap_or_else(|| panic!("label {y} outside 0..{k}"));
        // s ≥ 1 (the maximum contributes e⁰) unless a logit is NaN or infinite.
        let ln_s = if s.is_finite() { ln_f32(*s) } else { s.ln() };
        nll += f64::from(ln_s - (picked - m));
    }
    (nll, correct)
}

/// `Σ_j e^{x_j − m_r}` per row `r` of `x: [max.len(), k]`; compiled for AVX-512 and AVX2 as well
/// as the baseline (IEEE operations and explicit `mul_add` only: the same bits in every build).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn exp_row_sums(x: &[f32], max: &[f32], k: usize) -> Vec<f32> {
    let mut e: Vec<f32> = Vec::with_capacity(x.len());
    for (row, m) in x.chunks_exact(k).zip(max) {
        e.extend(row.iter().map(|v| v - m));
    }
    for v in e.iter_mut() {
        *v = exp_f32(*v);
    }
    e.chunks_exact(k).map(|r| r.iter().sum()).collect()
}

/// Loss and accuracy of `arch` with weights `w` on `data`, in batches of `batch` samples.
pub fn evaluate<W: Weights + ?Sized>(
    arch: &Arch,
    w: &W,
    data: &Dataset,
    batch: usize,
    device: &Device,
) -> Metrics {
    let n = data.len();
    let idx: Vec<usize> = (0..n).collect();
    let (mut nll, mut correct) = (0.0, 0usize);
    for chunk in idx.chunks(batch.max(1)) {
        let (x, y) = batch_tensors(data, chunk, device);
        let (l, c) = batch_stats(arch.forward(w, x), y);
        nll += l;
        correct += c;
    }
    Metrics::of_sums(nll, correct, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::device;

    fn stats_of(x: Vec<f32>, k: usize, y: Vec<i64>) -> (f64, usize) {
        let b = y.len();
        let logits = Tensor::<2>::from_data(TensorData::new(x, [b, k]), &device());
        let y = Tensor::<1, Int>::from_data(TensorData::new(y, [b]), &device());
        batch_stats(logits, y)
    }

    /// The host pass gives burn's `log_softmax` cross-entropy (summed) and the argmax count, on
    /// logits of small and large magnitude.
    #[test]
    fn batch_stats_match_burns_cross_entropy_and_argmax() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (b, k, scale) in [
            (37, 10, 1.0f32),
            (200, 10, 30.0),
            (5, 3, 0.01),
            (64, 100, 5.0),
        ] {
            let x: Vec<f32> = (0..b * k)
                .map(|_| scale * rng.random_range(-1.0..1.0))
                .collect();
            let y: Vec<i64> = (0..b).map(|_| rng.random_range(0..k as i64)).collect();
            let (nll, correct) = stats_of(x.clone(), k, y.clone());
            let logits = Tensor::<2>::from_data(TensorData::new(x.clone(), [b, k]), &device());
            let labels = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [b]), &device());
            let want = f64::from(cross_entropy(logits, labels).into_scalar::<f32>()) * b as f64;
            assert!(
                (nll - want).abs() <= 1e-5 * want.abs().max(1.0),
                "b {b}, k {k}: {nll} vs {want}"
            );
            let argmax = x
                .chunks_exact(k)
                .zip(&y)
                .filter(|(row, y)| {
                    let best = (0..k).fold(0, |m, j| if row[j] > row[m] { j } else { m });
                    best as i64 == **y
                })
                .count();
            assert_eq!(correct, argmax);
        }
    }

    /// The squared error against the one-hot target, by hand: `((1−1)² + 2² + 0²) +
    /// (3² + 0² + (−1−1)²)` over two samples.
    #[test]
    fn squared_error_is_to_the_one_hot_target() {
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 0.0, 3.0, 0.0, -1.0], [2, 3]),
            &device(),
        );
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &device());
        let got = squared_error(logits, y).into_scalar::<f32>();
        assert!((got - (4.0 + 13.0) / 2.0).abs() < 1e-6, "{got}");
    }

    /// Ties go to the first maximum; a NaN logit makes the loss NaN.
    #[test]
    fn batch_stats_ties_and_nan() {
        let (nll, correct) = stats_of(vec![1.0, 1.0, 0.0, 2.0, 2.0, 2.0], 3, vec![0, 1]);
        assert_eq!(correct, 1);
        let want = (2.0 * 1.0f64.exp() + 1.0).ln() - 1.0 + 3.0f64.ln();
        assert!((nll - want).abs() < 1e-5, "{nll} vs {want}");
        let (nll, _) = stats_of(vec![0.0, f32::NAN, 1.0], 3, vec![2]);
        assert!(nll.is_nan());
    }

    /// The multi-sample NLL is `−log` of the mean predicted probability of the label, computed
    /// in f64 from the softmaxes directly, on logits whose scales make the log-sum-exp shift
    /// matter; one matrix gives the cross-entropy, and K copies of one matrix give it too.
    #[test]
    fn ensemble_nll_is_the_log_of_the_mean_probability() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (b, c) = (7usize, 4usize);
        let y: Vec<i64> = (0..b).map(|_| rng.random_range(0..c as i64)).collect();
        let labels = || Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [b]), &device());
        let tensor =
            |x: &[f32]| Tensor::<2>::from_data(TensorData::new(x.to_vec(), [b, c]), &device());
        for scale in [0.5f32, 20.0] {
            let zs: Vec<Vec<f32>> = (0..3)
                .map(|_| {
                    (0..b * c)
                        .map(|_| scale * rng.random_range(-1.0..1.0))
                        .collect()
                })
                .collect();
            let got = ensemble_nll(zs.iter().map(|z| tensor(z)).collect(), labels())
                .into_scalar::<f32>() as f64;
            let mut want = 0.0;
            for (r, &label) in y.iter().enumerate() {
                let mean_p: f64 = zs
                    .iter()
                    .map(|z| {
                        let row = &z[r * c..(r + 1) * c];
                        let m = row.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
                        let den: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                        (row[label as usize] as f64 - m).exp() / den
                    })
                    .sum::<f64>()
                    / zs.len() as f64;
                want -= mean_p.ln() / b as f64;
            }
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "scale {scale}: {got} vs {want}"
            );
            let ce = cross_entropy(tensor(&zs[0]), labels()).into_scalar::<f32>() as f64;
            for k in [1, 3] {
                let same =
                    ensemble_nll(vec![tensor(&zs[0]); k], labels()).into_scalar::<f32>() as f64;
                assert!(
                    (same - ce).abs() <= 1e-5 * ce.max(1.0),
                    "{k} copies: {same} vs {ce}"
                );
            }
        }
    }
}
