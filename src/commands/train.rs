//! `modeconn train`: train one network from a seeded initialisation.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value, json};

use super::{default_arch, eval_device, load_data};
use crate::arch::memory::TRAIN_COPIES;
use crate::arch::{Arch, Init};
use crate::data::DataConfig;
use crate::error::Result;
use crate::eval::{EVAL_BATCH, Metrics, evaluate};
use crate::network_file::save_model;
use crate::params::io::FileMeta;
use crate::report::{RunRecord, write_json};
use crate::train::objective::Loss;
use crate::train::{Classification, LoopConfig, RunControl, fit};

/// Validated options of `modeconn train`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Data to train on.
    pub data: DataConfig,
    /// Architecture (default: see [`default_arch`]).
    pub arch: Option<Arch>,
    /// Loop settings.
    pub loop_cfg: LoopConfig,
    /// Train on this many training samples drawn with the loop's seed.
    pub train_subset: Option<usize>,
    /// How the initial weights are drawn.
    pub init: Init,
    /// The data term.
    pub loss: Loss,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    train_subset: Option<usize>,
    #[serde(skip_serializing_if = "Init::is_default")]
    init: Init,
    #[serde(skip_serializing_if = "is_cross_entropy")]
    loss: Loss,
    #[serde(flatten)]
    loop_cfg: &'a LoopConfig,
}

/// Whether `loss` is the default (left out of recorded configurations, so that they keep their
/// fingerprints).
pub fn is_cross_entropy(loss: &Loss) -> bool {
    *loss == Loss::CrossEntropy
}

/// Final metrics in the shape of `metrics.json`.
pub fn metrics_json(train: &Metrics, test: &Metrics) -> Value {
    json!({
        "train_loss": train.loss,
        "train_acc": train.acc,
        "train_err": train.err(),
        "test_loss": test.loss,
        "test_acc": test.acc,
        "test_err": test.err(),
    })
}

/// Runs `train`; returns the final metrics (also written to `out/metrics.json`).
pub fn run(opts: &TrainOptions, argv: Vec<String>) -> Result<Value> {
    if opts.train_subset == Some(0) {
        return Err(crate::error::Error::Config(
            "--train-subset must be at least 1".into(),
        ));
    }
    let mut split = load_data(&opts.data)?;
    if let Some(n) = opts.train_subset {
        split.train = split.train.random_subset(n, opts.loop_cfg.seed);
    }
    let arch = opts.arch.clone().unwrap_or_else(|| default_arch(&split));
    arch.check_data(&split.train)?;
    opts.loop_cfg.validate()?;
    let total = split.train.len().div_ceil(opts.loop_cfg.batch_size) * opts.loop_cfg.epochs;
    if let Some(k) = opts.ctl.stop_at_step.filter(|&k| k >= total) {
        return Err(crate::error::Error::Config(format!(
            "--stop-at-step {k} is beyond the run's {total} steps"
        )));
    }
    let resolved = Resolved {
        data: &opts.data,
        arch: arch.to_string(),
        train_subset: opts.train_subset,
        init: opts.init,
        loss: opts.loss,
        loop_cfg: &opts.loop_cfg,
    };
    let config = serde_json::to_value(&resolved).expect("serialisable config");
    let record = RunRecord::start(argv, config.clone(), Some(opts.loop_cfg.seed));
    let device = eval_device();
    arch.check_memory(
        TRAIN_COPIES + opts.loop_cfg.optim.slots(),
        opts.loop_cfg.batch_size,
    )?;
    let init = arch.init_with(opts.init, opts.loop_cfg.seed, &device);
    let mut obj =
        Classification::new(arch.clone(), &split.test, device.clone()).with_loss(opts.loss);
    let meta = FileMeta::new("model", &arch.to_string());
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
    save_model(&opts.out.join("model.safetensors"), &arch, &fitted.params)?;
    let tr = evaluate(&arch, &fitted.params, &split.train, EVAL_BATCH, &device);
    let te = evaluate(&arch, &fitted.params, &split.test, EVAL_BATCH, &device);
    let m = metrics_json(&tr, &te);
    write_json(&opts.out.join("metrics.json"), &m)?;
    record.finish(&opts.out, m.clone())?;
    Ok(m)
}
