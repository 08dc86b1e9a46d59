//! `modeconn hessian`: the sharpness of a trained network — the top eigenvalues of the Hessian of
//! its mean cross-entropy on a fixed, seeded evaluation subset of the training set (power
//! iteration with deflation) and its trace (Hutchinson), from Hessian-vector products
//! ([`crate::eval::hessian`]). Writes `hessian.json` and `run.json`.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::{eval_device, load_data};
use crate::data::{DataConfig, Dataset};
use crate::error::{Error, Result};
use crate::eval::hessian::{SharpnessConfig, sharpness};
use crate::network_file::load_model;
use crate::report::{RunRecord, write_json};

/// Validated options of `modeconn hessian`.
#[derive(Debug, Clone)]
pub struct HessianOptions {
    /// The network.
    pub model: PathBuf,
    /// Data.
    pub data: DataConfig,
    /// The evaluation subset: this many training samples drawn with `subset_seed`.
    pub samples: usize,
    /// Seed of the subset.
    pub subset_seed: u64,
    /// What to measure.
    pub sharpness: SharpnessConfig,
    /// Output directory.
    pub out: PathBuf,
}

/// `samples` training samples drawn with `seed` (all of them when there are fewer): the fixed
/// evaluation subset of every Hessian.
/// `flag` names the option in the error for 0.
pub fn evaluation_subset(
    train: &Dataset,
    samples: usize,
    seed: u64,
    flag: &str,
) -> Result<Dataset> {
    if samples == 0 {
        return Err(Error::Config(format!("{flag} must be at least 1")));
    }
    Ok(match samples >= train.len() {
        true => train.clone(),
        false => train.random_subset(samples, seed),
    })
}

/// Runs `hessian`; returns the contents of `hessian.json`.
pub fn run(opts: &HessianOptions, argv: Vec<String>) -> Result<Value> {
    opts.sharpness.validate()?;
    let record = RunRecord::start(
        argv,
        json!({"model": opts.model, "data": opts.data, "samples": opts.samples,
               "subset_seed": opts.subset_seed, "sharpness": opts.sharpness}),
        Some(opts.sharpness.seed),
    );
    let device = eval_device();
    let (arch, params) = load_model(&opts.model, &device)?;
    let split = load_data(&opts.data)?;
    arch.check_data(&split.train)?;
    let data = evaluation_subset(
        &split.train,
        opts.samples,
        opts.subset_seed,
        "--hessian-samples",
    )?;
    let s = sharpness(&arch, &params, &data, &opts.sharpness)?;
    let mut v = serde_json::to_value(&s).expect("serialisable");
    v["arch"] = json!(arch.to_string());
    v["params"] = json!(arch.layout().trained_numel());
    v["samples"] = json!(data.len());
    v["data"] = json!(split.train.name);
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    write_json(&opts.out.join("hessian.json"), &v)?;
    record.finish(&opts.out, v.clone())?;
    Ok(v)
}

/// A one-screen report of `hessian.json`.
pub fn table(v: &Value) -> String {
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let mut t = format!(
        "{} ({} parameters) on {} samples of {}: loss {:.4}\n",
        v["arch"].as_str().unwrap_or_default(),
        v["params"],
        v["samples"],
        v["data"].as_str().unwrap_or_default(),
        f("loss")
    );
    let eig = v["eigenvalues"].as_array().cloned().unwrap_or_default();
    for (i, e) in eig.iter().enumerate() {
        let _ = writeln!(
            t,
            "λ{} = {:.4} ({} iterations{})",
            i + 1,
            e.as_f64().unwrap_or(f64::NAN),
            v["iterations"][i],
            if v["converged"][i].as_bool() == Some(true) {
                ""
            } else {
                ", not converged"
            }
        );
    }
    if let Some(tr) = v["trace"].as_f64() {
        let _ = writeln!(t, "trace = {tr:.4} ± {:.4} (standard error)", f("trace_se"));
    }
    let _ = match v["method"].as_str() {
        Some("exact") => writeln!(t, "Hessian-vector products: exact (R-operator, f64)"),
        _ => writeln!(
            t,
            "Hessian-vector products: central differences of gradients, step {}; doubling it changes Hv along the top eigenvector by {:.1e} (relative)",
            f("step"),
            f("step_error")
        ),
    };
    t
}
