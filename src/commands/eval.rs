//! `modeconn eval`: loss and accuracy of a saved network on train and test data.

use std::path::PathBuf;

use serde_json::Value;

use super::{eval_device, load_data};
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::eval::{EVAL_BATCH, evaluate};
use crate::network_file::load_model;
use crate::params::io::Loaded;
use crate::report::write_json;
use crate::variational::{
    self,
    eval::{Sampling, summary},
};

/// Validated options of `modeconn eval`.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The saved network.
    pub model: PathBuf,
    /// Data to evaluate on.
    pub data: DataConfig,
    /// Optional JSON output file.
    pub out: Option<PathBuf>,
    /// Variational models: ensemble sizes (default: those recorded at training).
    pub ensemble: Option<Vec<usize>>,
    /// Variational models: noise seed (default: the one recorded at training).
    pub eval_seed: Option<u64>,
    /// Variational models: layers evaluated with their means set to zero (the zero-mean
    /// ablation, [`crate::variational::VModel::with_zero_mean`]).
    pub zero_mean: Vec<String>,
}

/// Runs `eval`; returns the metrics (same keys as `train`'s `metrics.json`).
pub fn run(opts: &EvalOptions) -> Result<Value> {
    let device = eval_device();
    if let Ok(f) = Loaded::open(&opts.model)
        && variational::is_variational(&f.meta)
    {
        return run_variational(opts, &device);
    }
    if !opts.zero_mean.is_empty() {
        return Err(Error::Config(format!(
            "--zero-mean applies to variational models; {} is a network",
            opts.model.display()
        )));
    }
    let (arch, params) = load_model(&opts.model, &device)?;
    let split = load_data(&opts.data)?;
    arch.check_data(&split.train)?;
    let tr = evaluate(&arch, &params, &split.train, EVAL_BATCH, &device);
    let te = evaluate(&arch, &params, &split.test, EVAL_BATCH, &device);
    let m = super::train::metrics_json(&tr, &te);
    if let Some(out) = &opts.out {
        write_json(out, &m)?;
    }
    Ok(m)
}

/// `eval` of a variational model or `vtrain` checkpoint: the mode, one sample and ensembles on
/// the test set (the keys of `vtrain`'s `summary.json`), with the training run's noise seed and
/// ensemble sizes unless overridden.
fn run_variational(opts: &EvalOptions, device: &burn::tensor::Device) -> Result<Value> {
    let (model, params, meta) = variational::load_vmodel(&opts.model, device)?;
    let model = model.with_zero_mean(&opts.zero_mean)?;
    let split = load_data(&opts.data)?;
    model.arch.check_data(&split.test)?;
    let ks = match &opts.ensemble {
        Some(ks) => ks.clone(),
        None => serde_json::from_value(meta.extra["ensembles"].clone()).unwrap_or(vec![10, 20]),
    };
    let seed = opts
        .eval_seed
        .or(meta.extra["eval_seed"].as_u64())
        .unwrap_or(0);
    let sampling = Sampling {
        ensembles: &ks,
        seed,
    };
    let mut out = summary(&model, &params, &split.test, sampling, device);
    if !opts.zero_mean.is_empty() {
        out.insert("zero_mean".into(), serde_json::json!(opts.zero_mean));
    }
    let m = Value::Object(out);
    if let Some(out) = &opts.out {
        write_json(out, &m)?;
    }
    Ok(m)
}
