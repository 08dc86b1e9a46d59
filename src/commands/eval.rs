//! `modeconn eval`: loss and accuracy of a saved network on train and test data.

use std::path::PathBuf;

use serde_json::Value;

use super::{eval_device, load_data};
use crate::data::DataConfig;
use crate::error::Result;
use crate::eval::{EVAL_BATCH, evaluate};
use crate::model::load_model;
use crate::report::write_json;

/// Validated options of `modeconn eval`.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The saved network.
    pub model: PathBuf,
    /// Data to evaluate on.
    pub data: DataConfig,
    /// Optional JSON output file.
    pub out: Option<PathBuf>,
}

/// Runs `eval`; returns the metrics (same keys as `train`'s `metrics.json`).
pub fn run(opts: &EvalOptions) -> Result<Value> {
    let device = eval_device();
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
