//! Evaluation of a variational model on the **mode** (the pruned means, [`VModel::mode`]), on
//! **one sample** and on **ensembles** of K samples (mean of the K softmax outputs; NLL is
//! `−log` of the averaged probability of the true class).
//!
//! Samples use the local reparameterisation trick, so every test example gets its own weight
//! draw (the same predictive distribution per example as sampling whole networks). The noise
//! of batch `i` comes from a ChaCha8 stream seeded by `seed` with stream number `i`, so an
//! evaluation is reproducible and independent of anything that ran before. The ensembles share
//! their samples: the first sample is the "one sample", and the ensemble of K = 10 is the first
//! 10 of the ensemble of 20.

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

use super::VModel;
use super::weights::VarWeights;
use crate::data::Dataset;
use crate::eval::{Metrics, batch_tensors, evaluate};
use crate::params::ParamSet;

/// Results of [`evaluate_variational`].
#[derive(Debug, Clone, PartialEq)]
pub struct VarMetrics {
    /// The mode (masked means, no noise).
    pub mode: Metrics,
    /// One sample.
    pub sample: Option<Metrics>,
    /// Ensembles, by K.
    pub ensembles: Vec<(usize, Metrics)>,
}

impl VarMetrics {
    /// `mode_acc`, `mode_nll`, `sample_acc`, `sample_nll`, `ensemble_acc` and `ensemble_nll`
    /// (objects keyed by K), with `prefix` before each key.
    pub fn json_entries(&self, prefix: &str) -> Vec<(String, Value)> {
        let mut out = vec![
            (format!("{prefix}mode_acc"), json!(self.mode.acc)),
            (format!("{prefix}mode_nll"), json!(self.mode.loss)),
        ];
        if let Some(s) = &self.sample {
            out.push((format!("{prefix}sample_acc"), json!(s.acc)));
            out.push((format!("{prefix}sample_nll"), json!(s.loss)));
        }
        if !self.ensembles.is_empty() {
            let by_k = |f: &dyn Fn(&Metrics) -> f64| {
                let m: Map<String, Value> = self
                    .ensembles
                    .iter()
                    .map(|(k, m)| (k.to_string(), json!(f(m))))
                    .collect();
                Value::Object(m)
            };
            out.push((format!("{prefix}ensemble_acc"), by_k(&|m| m.acc)));
            out.push((format!("{prefix}ensemble_nll"), by_k(&|m| m.loss)));
        }
        out
    }
}

/// Settings of the sampled evaluations.
#[derive(Debug, Clone, Copy)]
pub struct Sampling<'a> {
    /// Ensemble sizes K.
    pub ensembles: &'a [usize],
    /// Noise seed.
    pub seed: u64,
}

/// The summary of a variational model on `data` (what `vtrain` writes to `summary.json` and
/// `eval` prints): the method, the mode / one-sample / ensemble metrics of
/// [`evaluate_variational`] in batches of [`crate::eval::EVAL_BATCH`], the sparsity and
/// compression statistics, the KL and the evaluation seed.
pub fn summary(
    model: &VModel,
    params: &ParamSet,
    data: &Dataset,
    sampling: Sampling<'_>,
    device: &Device,
) -> Map<String, Value> {
    let seed = sampling.seed;
    let m = evaluate_variational(
        model,
        params,
        data,
        Some(sampling),
        crate::eval::EVAL_BATCH,
        device,
    );
    let mut s = Map::new();
    s.insert("method".into(), json!(model.config.method.name()));
    for (k, v) in m.json_entries("") {
        s.insert(k, v);
    }
    for (k, v) in model.stats(params).json_entries() {
        s.insert(k, v);
    }
    s.insert(
        "kl".into(),
        json!(model.kl(params).into_scalar::<f32>() as f64),
    );
    s.insert("eval_seed".into(), json!(seed));
    s
}

/// Evaluates the mode, and with `sampling` one sample and ensembles of each K, in batches of
/// `batch`.
pub fn evaluate_variational(
    model: &VModel,
    params: &ParamSet,
    data: &Dataset,
    sampling: Option<Sampling<'_>>,
    batch: usize,
    device: &Device,
) -> VarMetrics {
    let params = params.to_device(device);
    let mode = evaluate(&model.arch, &model.mode(&params), data, batch, device);
    let Some(Sampling {
        ensembles: ks,
        seed,
    }) = sampling
    else {
        return VarMetrics {
            mode,
            sample: None,
            ensembles: Vec::new(),
        };
    };
    let kmax = ks.iter().copied().max().unwrap_or(1).max(1);
    let n = data.len();
    let classes = data.classes;
    // Per K in {1} ∪ ks: (nll sum, correct).
    let mut wanted: Vec<usize> = std::iter::once(1).chain(ks.iter().copied()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut acc: Vec<(f64, usize)> = vec![(0.0, 0); wanted.len()];
    let idx: Vec<usize> = (0..n).collect();
    for (bi, chunk) in idx.chunks(batch.max(1)).enumerate() {
        let (x, y) = batch_tensors(data, chunk, device);
        let labels: Vec<i64> = y
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .expect("int");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(bi as u64);
        let w = VarWeights::new(model, &params, rng);
        let b = chunk.len();
        let mut sum = vec![0.0f64; b * classes];
        let mut next = 0;
        for s in 1..=kmax {
            let logits: Tensor<2> = model.arch.forward(&w, x.clone());
            let p = softmax(logits, 1)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32");
            for (a, v) in sum.iter_mut().zip(&p) {
                *a += *v as f64;
            }
            while next < wanted.len() && wanted[next] == s {
                let (nll, correct) =
                    crate::eval::score_mean_probabilities(&sum, s, &labels, classes);
                acc[next].0 += nll;
                acc[next].1 += correct;
                next += 1;
            }
        }
    }
    let metrics = |(nll, correct): (f64, usize)| Metrics::of_sums(nll, correct, n);
    let by_k: Vec<(usize, Metrics)> = wanted
        .iter()
        .zip(&acc)
        .map(|(&k, &a)| (k, metrics(a)))
        .collect();
    VarMetrics {
        mode,
        sample: by_k.iter().find(|(k, _)| *k == 1).map(|(_, m)| *m),
        ensembles: by_k.into_iter().filter(|(k, _)| ks.contains(k)).collect(),
    }
}

/// Parses ensemble sizes such as `10,20` (each at least 1; `none` for no ensembles), naming
/// `flag` in errors.
pub fn parse_ensembles(s: &str, flag: &str) -> crate::error::Result<Vec<usize>> {
    if s == "none" {
        return Ok(Vec::new());
    }
    let ks: Vec<usize> = s
        .split(',')
        .map(|k| k.trim().parse::<usize>().ok().filter(|&k| k >= 1))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            crate::error::Error::Config(format!(
                "{flag} `{s}`: expected ensemble sizes such as 10,20 (each at least 1) or none"
            ))
        })?;
    Ok(ks)
}
