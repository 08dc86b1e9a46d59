//! `modeconn vtrain`: train a variational model (sparse VD, ARD, group ARD, Gaussian dropout,
//! layer-wise α, variance layers) with the one training loop and the ELBO objective.
//!
//! Writes into `--out`: `checkpoint.safetensors` (every epoch, both parameter sets under one
//! prefixed layout, plus the optimiser state; `--resume` continues exactly), `metrics.jsonl` (per
//! epoch: lr, train loss/nll/kl/rw, test accuracy and NLL of the mode, one sample and the
//! ensembles, per-layer sparsity, compression, per-layer mean log α, units removed),
//! `variational.safetensors` (the trained model; `modeconn eval` reads it), `mode.safetensors`
//! (the pruned mean network as a plain model), `summary.json` and `run.json`.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value, json};

use super::{default_arch, eval_device, load_data};
use crate::arch::Arch;
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::network_file::save_model;
use crate::report::{RunRecord, write_json};
use crate::train::{LoopConfig, RunControl, fit};
use crate::variational::eval::{Sampling, summary};
use crate::variational::objective::{Elbo, EvalConfig, Warmup};
use crate::variational::{VConfig, VModel, save_vmodel};

/// File name of the trained variational model inside the run directory.
pub const VMODEL_FILE: &str = "variational.safetensors";
/// File name of the mode (pruned means) as a plain model.
pub const MODE_FILE: &str = "mode.safetensors";
/// File name of the final summary.
pub const SUMMARY_FILE: &str = "summary.json";

/// Validated options of `modeconn vtrain`.
#[derive(Debug, Clone)]
pub struct VtrainOptions {
    /// Data to train on.
    pub data: DataConfig,
    /// Architecture (default: see [`default_arch`]).
    pub arch: Option<Arch>,
    /// Method and its settings.
    pub config: VConfig,
    /// KL warm-up.
    pub warmup: Warmup,
    /// Evaluation settings.
    pub eval: EvalConfig,
    /// Sampled networks per step ([`Elbo::with_samples`]).
    pub train_samples: usize,
    /// Loop settings.
    pub loop_cfg: LoopConfig,
    /// Output directory.
    pub out: PathBuf,
    /// Resume / stop / quiet.
    pub ctl: RunControl,
}

/// The resolved configuration recorded in `run.json` and used as the resume fingerprint.
#[derive(Debug, Serialize)]
struct Resolved<'a> {
    data: &'a DataConfig,
    arch: String,
    variational: &'a VConfig,
    kl_warmup: String,
    eval: &'a EvalConfig,
    #[serde(skip_serializing_if = "is_one")]
    train_samples: usize,
    #[serde(flatten)]
    loop_cfg: &'a LoopConfig,
}

/// One sample per step, the default, is left out of the recorded configuration.
pub(crate) fn is_one(k: &usize) -> bool {
    *k == 1
}

/// Runs `vtrain`; returns the summary (also written to `out/summary.json`).
pub fn run(opts: &VtrainOptions, argv: Vec<String>) -> Result<Value> {
    let split = load_data(&opts.data)?;
    let arch = opts.arch.clone().unwrap_or_else(|| default_arch(&split));
    arch.check_data(&split.train)?;
    opts.loop_cfg.validate()?;
    if opts.train_samples == 0 {
        return Err(Error::Config("--train-samples must be at least 1".into()));
    }
    if opts.eval.every == 0 {
        return Err(Error::Config("--eval-every must be at least 1".into()));
    }
    // Means and log-variances: about twice the plain network's buffers.
    arch.check_memory(
        2 * (crate::arch::memory::TRAIN_COPIES + opts.loop_cfg.optim.slots()),
        opts.loop_cfg.batch_size,
    )?;
    let model = VModel::new(arch.clone(), opts.config.clone())?;
    let resolved = Resolved {
        data: &opts.data,
        arch: arch.to_string(),
        variational: &opts.config,
        kl_warmup: opts.warmup.to_string(),
        eval: &opts.eval,
        train_samples: opts.train_samples,
        loop_cfg: &opts.loop_cfg,
    };
    let config = serde_json::to_value(&resolved).expect("serialisable config");
    let record = RunRecord::start(argv, config.clone(), Some(opts.loop_cfg.seed));
    let device = eval_device();
    let init = model.init(opts.loop_cfg.seed, &device);
    let mut obj = Elbo::new(
        model.clone(),
        opts.warmup.clone(),
        &split.test,
        opts.eval.clone(),
        opts.loop_cfg.epochs,
        device.clone(),
    )
    .with_samples(opts.train_samples);
    // The evaluation settings travel with the model so that `eval` reproduces the summary.
    let eval_extra = json!({"eval_seed": opts.eval.seed, "ensembles": opts.eval.ensembles});
    let mut meta = model.meta();
    if let (Value::Object(m), Value::Object(x)) = (&mut meta.extra, eval_extra.clone()) {
        m.extend(x);
    }
    let fitted = fit(
        init,
        &split.train,
        &mut obj,
        &opts.loop_cfg,
        &opts.ctl,
        &opts.out,
        &meta,
        &config.to_string(),
    )?;
    if let Some(v) = super::early_stop(&fitted, &record, &opts.out)? {
        return Ok(v);
    }
    let params = fitted.params;
    save_vmodel(&opts.out.join(VMODEL_FILE), &model, &params, eval_extra)?;
    save_model(&opts.out.join(MODE_FILE), &arch, &model.mode(&params))?;
    let mut s = summary(
        &model,
        &params,
        &split.test,
        Sampling {
            ensembles: &opts.eval.ensembles,
            seed: opts.eval.seed,
        },
        &device,
    );
    s.insert("arch".into(), json!(arch.to_string()));
    s.insert("epochs".into(), json!(opts.loop_cfg.epochs));
    let summary = Value::Object(s);
    write_json(&opts.out.join(SUMMARY_FILE), &summary)?;
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}
