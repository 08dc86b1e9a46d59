//! Evaluation: `evaluate(arch, weights, data) → Metrics` (mean NLL and accuracy), batched and
//! without autodiff. Path profiles, planes and ensembles are built on it.

pub mod family;
pub mod path;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::data::Dataset;
use crate::layers::Weights;

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

/// Sum of cross-entropies and number of correct predictions for one batch of logits.
pub fn batch_stats(logits: Tensor<2>, y: Tensor<1, Int>) -> (f64, usize) {
    let b = y.dims()[0];
    let correct = logits
        .clone()
        .argmax(1)
        .reshape([b])
        .equal(y.clone())
        .int()
        .sum()
        .into_scalar::<i64>() as usize;
    let nll = cross_entropy(logits, y).into_scalar::<f32>() as f64 * b as f64;
    (nll, correct)
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
    Metrics {
        loss: nll / n.max(1) as f64,
        acc: correct as f64 / n.max(1) as f64,
        n,
    }
}
