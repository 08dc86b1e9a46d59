//! `modeconn align`: permute network B's hidden units to match network A, by weight matching or
//! activation matching (see [`crate::permute::matching`]); variational models by weight matching
//! on their means (on σ for zero-mean layers), every variational tensor of a unit moved with
//! it. Writes the aligned B as `model.safetensors` (an ordinary model file;
//! `variational.safetensors` for a variational model), `permutation.json`, `summary.json` (the
//! matching objective before and after) and `run.json` into `--out`.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};

use super::permute::{distance, max_logit_diff_of, write_permutation};
use super::{eval_device, load_data};
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::eval::EVAL_BATCH;
use crate::network_file::{file_name, load_any_pair, save_any};
use crate::permute::{
    Correlation, MatchOptions, activation_matching, activation_stats, apply, weight_matching,
};
use crate::report::{RunRecord, write_json};

/// How B is matched to A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AlignMethod {
    /// Weight matching: maximise `Σ_params ⟨W_A, π(W_B)⟩_F`.
    Weights,
    /// Activation matching on the training data.
    Activations,
}

/// Validated options of `modeconn align`.
#[derive(Debug, Clone)]
pub struct AlignOptions {
    /// Network B, the one permuted.
    pub model: PathBuf,
    /// Network A, the reference.
    pub to: PathBuf,
    /// Matching method.
    pub method: AlignMethod,
    /// Weight matching: visiting-order seed, sweep limit, tolerance.
    pub matching: MatchOptions,
    /// Activation matching: the data (its training split is used).
    pub data: DataConfig,
    /// Activation matching: similarity.
    pub correlation: Correlation,
    /// Activation matching: use the first N training samples (all when `None`).
    pub samples: Option<usize>,
    /// Output directory.
    pub out: PathBuf,
}

/// Runs `align`; returns the summary (`summary.json` plus the matching time).
pub fn run(opts: &AlignOptions, argv: Vec<String>) -> Result<Value> {
    if opts.samples == Some(0) {
        return Err(Error::Config("--samples must be at least 1".into()));
    }
    if opts.matching.max_sweeps == 0 {
        return Err(Error::Config("--max-sweeps must be at least 1".into()));
    }
    let config = json!({
        "model": opts.model,
        "to": opts.to,
        "method": opts.method,
        "matching": opts.matching,
        "data": opts.data,
        "correlation": opts.correlation,
        "samples": opts.samples,
        "out": opts.out,
    });
    let record = RunRecord::start(argv, config, Some(opts.matching.seed));
    let device = eval_device();
    let (kind, b, a) = load_any_pair(("--model", &opts.model), ("--to", &opts.to), &device)?;
    let arch = kind.arch().clone();
    if kind.variational().is_some() && opts.method == AlignMethod::Activations {
        return Err(Error::Config(
            "--method activations: variational models are aligned by weight matching (--method weights, on the means, and on σ where a layer is zero-mean)".into(),
        ));
    }
    // Matched on the architecture's parameters (a variational model's means, or σ), applied to
    // every tensor of the parameter set.
    let spec = arch.perm_spec();
    let started = Instant::now();
    let (perm, details) = match opts.method {
        AlignMethod::Weights => {
            let (va, vb) = (kind.matching_view(&a)?, kind.matching_view(&b)?);
            let m = weight_matching(&spec, &va, &vb, &opts.matching)?;
            let details = json!({
                "objective": "sum over parameters of <W_A, pi(W_B)>_F",
                "objective_before": m.objective[0],
                "objective_after": m.objective.last(),
                "objective_per_sweep": m.objective,
                "sweeps": m.sweeps,
                "converged": m.converged,
            });
            (m.perm, details)
        }
        AlignMethod::Activations => {
            let split = load_data(&opts.data)?;
            arch.check_data(&split.train)?;
            let train = match opts.samples {
                Some(n) => split.train.subset(n),
                None => split.train,
            };
            let stats = activation_stats(&arch, &a, &b, &train, EVAL_BATCH, &device)?;
            let m = activation_matching(&spec, &stats, opts.correlation)?;
            let details = json!({
                "objective": match opts.correlation {
                    Correlation::Cross => "sum over hidden units of E[z_A,i z_B,pi(i)]",
                    Correlation::Pearson => "sum over hidden units of corr(z_A,i, z_B,pi(i))",
                },
                "objective_before": m.objective_before(),
                "objective_after": m.objective_after(),
                "layers": m.layers,
                "samples": train.len(),
            });
            (m.perm, details)
        }
    };
    let match_time = started.elapsed().as_secs_f64();
    let aligned = apply(&kind.perm_spec()?, &perm, &b)?;
    let model = opts.out.join(file_name(&kind));
    save_any(&model, &kind, &aligned)?;
    write_permutation(
        &opts.out.join("permutation.json"),
        &arch,
        &perm,
        json!({"kind": "align", "method": opts.method, "model": opts.model, "to": opts.to}),
    )?;
    let mut summary = json!({
        "arch": arch.to_string(),
        "model": opts.model,
        "to": opts.to,
        "aligned": model,
        "method": opts.method,
        "identity": perm.is_identity(),
        "inner_product_before": kind.matching_view(&a)?.dot(&kind.matching_view(&b)?)?,
        "inner_product_after": kind.matching_view(&a)?.dot(&kind.matching_view(&aligned)?)?,
        "distance_before": distance(&a, &b)?,
        "distance_after": distance(&a, &aligned)?,
        "max_logit_diff": max_logit_diff_of(&kind, &b, &aligned, 0, &device),
    });
    if let (Some(s), Some(d)) = (summary.as_object_mut(), details.as_object()) {
        s.extend(d.clone());
    }
    write_json(&opts.out.join("summary.json"), &summary)?;
    summary["match_time_s"] = json!(match_time);
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}
