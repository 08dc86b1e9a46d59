//! Variational models along a path `t ↦ q_t` (a line or a fitted curve whose control points are
//! variational parameter sets, interpolated in (θ, log σ²)): per point the mode, one weight
//! sample and ensembles of K samples on the test set (mode and one sample on the training
//! set), the KL and the mode's compression; per column the summaries and barriers of
//! [`crate::eval::path`], plus the marginalised barrier of Rossi et al. (2023),
//! `B = max_t E_{q_t}[L] − ((1−t)·E_{q_0}[L] + t·E_{q_1}[L])`, with `E_q[L]` estimated by the
//! one-sample NLL (a fresh local-reparameterisation sample per example).
//!
//! Every point is evaluated with the same noise stream (the seed and the batch index), so
//! differences along `t` are not sampling noise between points.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use burn::tensor::Device;
use serde_json::{Value, json};

use super::VModel;
use super::eval::{Sampling, VarMetrics, evaluate_variational};
use crate::curve::{CurveKind, point_of};
use crate::data::Dataset;
use crate::eval::EVAL_BATCH;
use crate::eval::path::summarize;
use crate::eval::state::{StateSample, recompute_model};
use crate::model::Model;
use crate::params::ParamSet;

/// One evaluated point of a variational path.
#[derive(Debug, Clone, PartialEq)]
pub struct VPathRow {
    /// Path name (`line`, `curve`, ...).
    pub path: String,
    /// Position in [0, 1].
    pub t: f64,
    /// Mode and one sample on the training data.
    pub train: VarMetrics,
    /// Mode, one sample and the ensembles on the test data.
    pub test: VarMetrics,
    /// `KL(q_t ‖ p)` (0 for methods without a KL term).
    pub kl: f64,
    /// The mode's `|W| / |W ≠ 0|`.
    pub compression: f64,
    /// Distance to the previous point in the stored parameters (θ, log σ², log α; with their
    /// running statistics, which are recomputed rather than interpolated).
    pub dl: f64,
}

/// How a path's points are sampled: ensemble sizes and the noise seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSampling {
    /// Ensemble sizes K on the test data.
    pub ensembles: Vec<usize>,
    /// Noise seed (the same for every point).
    pub seed: u64,
}

impl Default for PathSampling {
    /// `path`'s defaults: ensembles of 10, seed 0.
    fn default() -> Self {
        Self {
            ensembles: vec![10],
            seed: 0,
        }
    }
}

/// Evaluates the path through `points` (a curve of kind `kind`; the line is a polychain through
/// two points) at every `t` of `ts`. A model with normalisation layers gets every point's
/// running statistics recomputed on the samples of `train` that `state` picks
/// ([`recompute_model`], sampled weights).
#[allow(clippy::too_many_arguments)]
pub fn profile(
    model: &VModel,
    name: &str,
    kind: CurveKind,
    points: &[ParamSet],
    ts: &[f64],
    (train, test): (&Dataset, &Dataset),
    (sampling, state): (&PathSampling, &StateSample),
    device: &Device,
) -> Vec<VPathRow> {
    let refs: Vec<&ParamSet> = points.iter().collect();
    let whole = Model::Variational(model.clone());
    let mut prev: Option<Vec<f32>> = None;
    ts.iter()
        .map(|&t| {
            let p = point_of(kind, &refs, t);
            let flat = p.to_flat_trained();
            let dl = prev.as_ref().map_or(0.0, |q| {
                q.iter()
                    .zip(&flat)
                    .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                    .sum::<f64>()
                    .sqrt()
            });
            prev = Some(flat);
            let p = recompute_model(&whole, &p, train, state, device);
            let one = Sampling {
                ensembles: &[],
                seed: sampling.seed,
            };
            let all = Sampling {
                ensembles: &sampling.ensembles,
                seed: sampling.seed,
            };
            VPathRow {
                path: name.to_string(),
                t,
                train: evaluate_variational(model, &p, train, Some(one), EVAL_BATCH, device),
                test: evaluate_variational(model, &p, test, Some(all), EVAL_BATCH, device),
                kl: model.kl(&p).into_scalar::<f32>() as f64,
                compression: model.stats(&p).compression,
                dl,
            }
        })
        .collect()
}

/// The metric columns of a variational `path.csv` for ensemble sizes `ks`: train mode and
/// sample, test mode, sample and each ensemble, each as `_loss` (NLL) and `_err`; then `kl` and
/// `compression`.
pub fn columns(ks: &[usize]) -> Vec<String> {
    let mut c = Vec::new();
    for (split, kinds) in [
        ("train", vec!["mode".to_string(), "sample".into()]),
        (
            "test",
            ["mode".to_string(), "sample".into()]
                .into_iter()
                .chain(ks.iter().map(|k| format!("ens{k}")))
                .collect(),
        ),
    ] {
        for kind in kinds {
            c.push(format!("{split}_{kind}_loss"));
            c.push(format!("{split}_{kind}_err"));
        }
    }
    c.push("kl".into());
    c.push("compression".into());
    c
}

/// The largest K among column names of the form `test_ens{K}_err` ([`columns`]).
pub fn largest_ensemble<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<usize> {
    names
        .into_iter()
        .filter_map(|h| {
            h.strip_prefix("test_ens")?
                .strip_suffix("_err")?
                .parse::<usize>()
                .ok()
        })
        .max()
}

/// The row's values in [`columns`] order.
fn values(r: &VPathRow) -> Vec<f64> {
    let pair = |m: &crate::eval::Metrics| [m.loss, 1.0 - m.acc];
    let sample = |v: &VarMetrics| *v.sample.as_ref().expect("sampled");
    let mut v = Vec::new();
    v.extend(pair(&r.train.mode));
    v.extend(pair(&sample(&r.train)));
    v.extend(pair(&r.test.mode));
    v.extend(pair(&sample(&r.test)));
    for (_, m) in &r.test.ensembles {
        v.extend(pair(m));
    }
    v.push(r.kl);
    v.push(r.compression);
    v
}

/// The rows as CSV: `path,t,` the [`columns`], `,dl`.
pub fn rows_csv(rows: &[VPathRow], ks: &[usize]) -> String {
    let mut s = format!("path,t,{},dl\n", columns(ks).join(","));
    for r in rows {
        let v: Vec<String> = values(r).iter().map(f64::to_string).collect();
        writeln!(s, "{},{},{},{}", r.path, r.t, v.join(","), r.dl).expect("write to string");
    }
    s
}

/// Summary of one path's rows: its length, every column's [`summarize`], and the marginalised
/// barriers `marginal_barrier_train` / `_test` (the `b_lin` of the one-sample NLL).
pub fn summarize_path(rows: &[VPathRow], ks: &[usize]) -> Value {
    let t: Vec<f64> = rows.iter().map(|r| r.t).collect();
    let dl: Vec<f64> = rows.iter().map(|r| r.dl).collect();
    let vals: Vec<Vec<f64>> = rows.iter().map(values).collect();
    let mut out = BTreeMap::new();
    out.insert("length".to_string(), json!(dl.iter().sum::<f64>()));
    let mut sums = BTreeMap::new();
    for (i, name) in columns(ks).into_iter().enumerate() {
        let v: Vec<f64> = vals.iter().map(|r| r[i]).collect();
        sums.insert(name, summarize(&t, &v, &dl));
    }
    for split in ["train", "test"] {
        out.insert(
            format!("marginal_barrier_{split}"),
            json!(sums[&format!("{split}_sample_loss")].b_lin),
        );
    }
    for (k, s) in sums {
        out.insert(k, json!(s));
    }
    json!(out)
}
