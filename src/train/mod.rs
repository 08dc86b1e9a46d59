//! The one training loop, generic over what is trained (any [`ParamSet`]: a network's weights, a
//! curve's bends, a variational pair) and an [`Objective`] that turns a batch into a loss.
//!
//! Determinism: epoch `e` visits the data in `epoch_order(n, seed, e)` and hands the objective a
//! ChaCha8 stream seeded by `(seed, e)`, so a run resumed from the checkpoint of epoch `k`
//! continues exactly as the uninterrupted run would.

pub mod gradient;
pub mod objective;
pub mod optim;
pub mod schedule;
pub mod subspace;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::{Int, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use gradient::{ChainRule, Gradient};
pub use objective::{Classification, Objective, Scalars};
pub use optim::{OptimConfig, OptimKind, Optimizer};
pub use schedule::Schedule;

use crate::backend;
use crate::data::{Dataset, epoch_order};
use crate::error::{Error, Result};
use crate::eval::batch_tensors;
use crate::params::io::{FileMeta, Loaded, save, write_atomic};
use crate::params::{Layout, ParamSet};

/// File name of the per-epoch checkpoint inside a run directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// File name of the per-epoch metrics log inside a run directory.
pub const METRICS_LOG: &str = "metrics.jsonl";

/// Settings of the loop that decide the result (part of the resume fingerprint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopConfig {
    /// Number of epochs.
    pub epochs: usize,
    /// Minibatch size.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Optimiser.
    pub optim: OptimConfig,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Seed for data order and the objective's randomness.
    pub seed: u64,
    /// A separate seed for the data order and the objective's randomness (`train --data-seed`;
    /// none: `seed`), so that runs from one initialisation can differ only in data order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_seed: Option<u64>,
}

impl LoopConfig {
    /// The command-line flags that give this loop, with `--wd wd`.
    pub fn to_args(&self, wd: f64) -> Vec<String> {
        let (kind, momentum) = match self.optim {
            OptimConfig::Sgd { momentum, .. } => ("sgd", momentum),
            OptimConfig::Adam { .. } => ("adam", 0.9),
        };
        [
            ("--epochs", self.epochs.to_string()),
            ("--batch-size", self.batch_size.to_string()),
            ("--lr", self.lr.to_string()),
            ("--optimizer", kind.to_string()),
            ("--momentum", momentum.to_string()),
            ("--wd", wd.to_string()),
            ("--schedule", self.schedule.to_string()),
            ("--seed", self.seed.to_string()),
        ]
        .into_iter()
        .chain(self.data_seed.map(|s| ("--data-seed", s.to_string())))
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect()
    }

    /// The seed of the data order and the objective's randomness.
    pub fn order_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }

    /// Checks the values once, naming the flag at fault.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::Config("--epochs must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(Error::Config("--batch-size must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!(
                "--lr must be a positive number, got {}",
                self.lr
            )));
        }
        self.optim.validate()
    }
}

/// How this invocation runs (not part of the result).
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// Continue from the run directory's checkpoint.
    pub resume: bool,
    /// Stop (with a checkpoint) after this epoch.
    pub stop_after: Option<usize>,
    /// No progress bar or per-epoch lines.
    pub quiet: bool,
    /// Begin at this step of the run (counted over all epochs from 0), the steps before it
    /// skipped: the continuation of a run stopped by `stop_at_step`, in the same schedule.
    pub start_step: usize,
    /// Stop before this step of the run, in the middle of an epoch if need be, without an epoch
    /// record or checkpoint; [`Fitted::optimizer`] carries the state on.
    pub stop_at_step: Option<usize>,
}

/// Randomness and position handed to the objective at each step.
pub struct StepCtx<'a> {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Step within the epoch.
    pub step: usize,
    /// The step's random stream (seeded by the run seed and epoch).
    pub rng: &'a mut ChaCha8Rng,
    /// Training-set size N (for ELBO scaling).
    pub n_train: usize,
}

/// What [`fit`] returns.
#[derive(Debug)]
pub struct Fitted {
    /// The trained parameters (no autodiff).
    pub params: ParamSet,
    /// Epochs completed so far.
    pub epochs_done: usize,
    /// Whether all configured epochs are done (false after `--stop-after` or `stop_at_step`).
    pub finished: bool,
    /// The optimiser with its state at the end.
    pub optimizer: Optimizer,
    /// The step before which `stop_at_step` stopped the run.
    pub stopped_at_step: Option<usize>,
}

fn progress(total: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps ({per_sec}, eta {eta}) {msg}",
        )
        .expect("valid template"),
    );
    pb
}

/// Trains `params` on `train` with `obj`, checkpointing into `dir` every epoch.
///
/// `meta` describes what is trained (kind and architecture) and `fingerprint` the resolved
/// configuration; `--resume` refuses a checkpoint written with a different fingerprint.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    params: ParamSet,
    train: &Dataset,
    obj: &mut dyn Objective,
    cfg: &LoopConfig,
    ctl: &RunControl,
    dir: &Path,
    meta: &FileMeta,
    fingerprint: &str,
) -> Result<Fitted> {
    fit_with(params, None, train, obj, cfg, ctl, dir, meta, fingerprint)
}

/// [`fit`] continuing with the optimiser `opt` (its state, e.g. momentum, from another run's
/// checkpoint, [`read_checkpoint`]) instead of a fresh one.
#[allow(clippy::too_many_arguments)]
pub fn fit_with(
    params: ParamSet,
    opt: Option<Optimizer>,
    train: &Dataset,
    obj: &mut dyn Objective,
    cfg: &LoopConfig,
    ctl: &RunControl,
    dir: &Path,
    meta: &FileMeta,
    fingerprint: &str,
) -> Result<Fitted> {
    cfg.validate()?;
    let device = backend::train_device();
    let inner = backend::device();
    let ckpt_path = dir.join(CHECKPOINT);
    let log_path = dir.join(METRICS_LOG);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let mut params = params.to_device(&inner);
    let mut opt = opt.unwrap_or_else(|| Optimizer::new(cfg.optim.clone(), &params));
    let mut start_epoch = 0;
    let mut resumed_step = 0;
    if ctl.resume {
        if ckpt_path.exists() {
            let (p, o, e, k) = load_checkpoint(&ckpt_path, &params, cfg, meta, fingerprint)?;
            params = p;
            opt = o;
            start_epoch = e;
            resumed_step = k.unwrap_or(0);
            truncate_log(&log_path, start_epoch)?;
        } else if !ctl.quiet {
            eprintln!(
                "note: no checkpoint at {}, starting from scratch",
                ckpt_path.display()
            );
        }
    }
    if start_epoch == 0 && log_path.exists() {
        std::fs::remove_file(&log_path).map_err(|e| Error::io(&log_path, e))?;
    }

    let n = train.len();
    let steps_per_epoch = n.div_ceil(cfg.batch_size);
    let pb = progress((steps_per_epoch * cfg.epochs) as u64, ctl.quiet);
    pb.set_position((steps_per_epoch * start_epoch) as u64);
    let last = ctl.stop_after.unwrap_or(cfg.epochs).min(cfg.epochs);
    let start_step = ctl.start_step.max(resumed_step);
    let start_epoch = start_epoch.max(start_step / steps_per_epoch.max(1));
    let mut stopped_at = None;

    for epoch in start_epoch..last {
        let t0 = Instant::now();
        let lr = cfg.schedule.lr(cfg.lr, epoch, cfg.epochs);
        let order = epoch_order(n, cfg.order_seed(), epoch);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.order_seed() ^ 0x9e37_79b9_7f4a_7c15);
        rng.set_stream(epoch as u64);
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        let mut scalar_sums: Vec<(&'static str, f64)> = Vec::new();
        for (step, idx) in order.chunks(cfg.batch_size).enumerate() {
            let global = epoch * steps_per_epoch + step;
            if global < start_step {
                continue;
            }
            if ctl.stop_at_step.is_some_and(|k| global >= k) {
                stopped_at = Some(epoch);
                break;
            }
            let (x, y): (Tensor<2>, Tensor<1, Int>) = batch_tensors(train, idx, &device);
            let mut ctx = StepCtx {
                epoch,
                step,
                rng: &mut rng,
                n_train: n,
            };
            let lr = cfg
                .schedule
                .lr_at(cfg.lr, epoch, cfg.epochs, step, steps_per_epoch);
            let (next, value, scalars) = match train_step(params, &mut opt, obj, x, y, &mut ctx, lr)
            {
                Ok(r) => r,
                Err(e) => {
                    pb.abandon();
                    return Err(e);
                }
            };
            params = next;
            loss_sum += value * idx.len() as f64;
            seen += idx.len();
            for (k, v) in scalars {
                match scalar_sums.iter_mut().find(|(n, _)| *n == k) {
                    Some(s) => s.1 += v * idx.len() as f64,
                    None => scalar_sums.push((k, v * idx.len() as f64)),
                }
            }
            pb.inc(1);
            if step % 10 == 0 {
                pb.set_message(format!(
                    "epoch {}/{} loss {value:.4}",
                    epoch + 1,
                    cfg.epochs
                ));
            }
        }
        if stopped_at.is_some() {
            break;
        }
        let mut record = Map::new();
        record.insert("epoch".into(), json!(epoch + 1));
        record.insert("lr".into(), json!(lr));
        record.insert("train_loss".into(), json!(loss_sum / seen.max(1) as f64));
        for (k, v) in scalar_sums {
            record.insert(k.into(), json!(v / seen.max(1) as f64));
        }
        for (k, v) in obj.epoch_end(&params, epoch)? {
            record.insert(k, v);
        }
        record.insert("time_s".into(), json!(t0.elapsed().as_secs_f64()));
        save_checkpoint(
            &ckpt_path,
            &params,
            &opt,
            epoch + 1,
            None,
            meta,
            fingerprint,
        )?;
        append_log(&log_path, &Value::Object(record.clone()))?;
        let line = summary_line(&record, cfg.epochs);
        if !ctl.quiet {
            if pb.is_hidden() {
                eprintln!("{line}");
            } else {
                pb.println(line);
            }
        }
    }
    pb.finish_and_clear();
    if let Some(epoch) = stopped_at {
        let step = ctl.stop_at_step.expect("stopped by it");
        save_checkpoint(
            &ckpt_path,
            &params,
            &opt,
            epoch,
            Some(step),
            meta,
            fingerprint,
        )?;
        return Ok(Fitted {
            params,
            epochs_done: epoch,
            finished: false,
            optimizer: opt,
            stopped_at_step: Some(step),
        });
    }
    Ok(Fitted {
        params,
        epochs_done: last.max(start_epoch),
        finished: last.max(start_epoch) >= cfg.epochs,
        optimizer: opt,
        stopped_at_step: None,
    })
}

/// Loss value, gradient with respect to `params` (no autodiff) and the objective's scalars for
/// the batch `(x, y)`; a non-finite loss is an [`Error::Diverged`]. When the objective forms its
/// network weights outside the graph ([`Objective::weights`]), the graph differentiates with
/// respect to those weights and [`Objective::pull_back`] maps the gradient to `params`.
pub fn loss_and_grad(
    params: &ParamSet,
    obj: &mut dyn Objective,
    x: Tensor<2>,
    y: Tensor<1, Int>,
    ctx: &mut StepCtx<'_>,
) -> Result<(f64, ParamSet, Scalars)> {
    let (value, g, scalars) = loss_and_gradient(params, obj, x, y, ctx)?;
    Ok((value, g.into_values()?, scalars))
}

/// [`loss_and_grad`] with the gradient as the optimiser reads it (a curve point's chain rule
/// not yet applied).
fn loss_and_gradient(
    params: &ParamSet,
    obj: &mut dyn Objective,
    x: Tensor<2>,
    y: Tensor<1, Int>,
    ctx: &mut StepCtx<'_>,
) -> Result<(f64, Gradient, Scalars)> {
    let weights = obj.weights(params, ctx);
    let leaves = weights.as_ref().unwrap_or(params).leaves();
    let (loss, scalars) = obj.loss(&leaves, x, y, ctx);
    let value = loss.clone().into_scalar::<f32>() as f64;
    if !value.is_finite() {
        return Err(Error::Diverged {
            epoch: ctx.epoch + 1,
            step: ctx.step,
            loss: value,
        });
    }
    let grads = loss.backward();
    let g = leaves.map(|t| {
        t.grad(&grads)
            .unwrap_or_else(|| backend::zeros(t.dims()[0], &t.device()).without_autodiff())
    });
    // The graph (and with it every reference to the parameters' buffers) goes before the
    // update, so that the optimiser can write the parameters in place.
    drop((grads, leaves));
    let g = match weights {
        Some(w) => obj.pull_back(w, g)?,
        None => Gradient::Values(g),
    };
    Ok((value, g, scalars))
}

/// One optimisation step: [`loss_and_grad`] of `obj` at `params` on the batch `(x, y)`, then an
/// optimiser update. Returns the new parameters, the loss value and the objective's scalars.
pub fn train_step(
    params: ParamSet,
    opt: &mut Optimizer,
    obj: &mut dyn Objective,
    x: Tensor<2>,
    y: Tensor<1, Int>,
    ctx: &mut StepCtx<'_>,
    lr: f64,
) -> Result<(ParamSet, f64, Scalars)> {
    crate::backend::keep_warm();
    let (value, g, scalars) = loss_and_gradient(&params, obj, x, y, ctx)?;
    let next = opt.step(params, &g, lr)?;
    let stats = obj.take_batch_stats();
    let next = if stats.is_empty() {
        next
    } else {
        crate::weights::norm::fold_stats(&next, &stats, crate::weights::norm::BN_MOMENTUM)
    };
    Ok((next, value, scalars))
}

fn summary_line(r: &Map<String, Value>, epochs: usize) -> String {
    let mut s = format!("epoch {}/{epochs}", r["epoch"]);
    for (k, v) in r {
        if k == "epoch" {
            continue;
        }
        if let Some(x) = v.as_f64() {
            s.push_str(&format!(" {k}={x:.4}"));
        }
    }
    s
}

/// Writes the run's checkpoint after `epoch` whole epochs, or (`next_step`) in the middle of the
/// next one, before that step of the run.
fn save_checkpoint(
    path: &Path,
    params: &ParamSet,
    opt: &Optimizer,
    epoch: usize,
    next_step: Option<usize>,
    meta: &FileMeta,
    fingerprint: &str,
) -> Result<()> {
    let mut m = FileMeta::new("checkpoint", &meta.arch);
    m.extra = json!({
        "epoch": epoch,
        "steps": opt.steps,
        "optimizer": optimizer_name(opt.config()),
        "fingerprint": fingerprint,
        "of": meta,
    });
    if let Some(k) = next_step {
        m.extra["next_step"] = json!(k);
    }
    let names: Vec<String> = (0..opt.state().len()).map(|i| format!("opt{i}/")).collect();
    let mut sets: Vec<(&str, &ParamSet)> = vec![("params/", params)];
    let state = opt.state();
    for (n, s) in names.iter().zip(&state) {
        sets.push((n.as_str(), s));
    }
    save(path, &m, &sets)
}

fn load_checkpoint(
    path: &Path,
    like: &ParamSet,
    cfg: &LoopConfig,
    meta: &FileMeta,
    fingerprint: &str,
) -> Result<(ParamSet, Optimizer, usize, Option<usize>)> {
    let c = open_checkpoint(
        path,
        like.layout(),
        &cfg.optim,
        Some((fingerprint, &meta.arch)),
    )?;
    Ok((c.params, c.optimizer, c.epoch, c.next_step))
}

/// The optimiser's name as checkpoints record it.
fn optimizer_name(optim: &OptimConfig) -> &'static str {
    match optim {
        OptimConfig::Sgd { .. } => "sgd",
        OptimConfig::Adam { .. } => "adam",
    }
}

/// A training checkpoint as [`read_checkpoint`] reads it.
pub struct Checkpoint {
    /// The architecture it was written for.
    pub arch: String,
    /// The parameters.
    pub params: ParamSet,
    /// The optimiser with its state.
    pub optimizer: Optimizer,
    /// Epochs completed.
    pub epoch: usize,
    /// The configuration fingerprint of the run that wrote it.
    pub fingerprint: String,
    /// For a checkpoint written in the middle of an epoch: the step of the run it continues at.
    pub next_step: Option<usize>,
}

/// Reads a training checkpoint (`checkpoint.safetensors` of any training run) for parameters of
/// `layout` and an optimiser of `optim`'s kind: the parameters, the optimiser's state (e.g. SGD's
/// momentum buffers) and the epochs done. A file without that optimiser's state is an error.
pub fn read_checkpoint(
    path: &Path,
    layout: &Arc<Layout>,
    optim: &OptimConfig,
) -> Result<Checkpoint> {
    open_checkpoint(path, layout, optim, None)
}

/// [`read_checkpoint`], first checking (for `--resume`) that the file was written by a run with
/// the configuration fingerprint and the architecture of `expect`.
fn open_checkpoint(
    path: &Path,
    layout: &Arc<Layout>,
    optim: &OptimConfig,
    expect: Option<(&str, &str)>,
) -> Result<Checkpoint> {
    let mut f = Loaded::open(path)?;
    f.expect_kind(&["checkpoint"])?;
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    if let Some((fingerprint, arch)) = expect {
        if f.meta.extra["fingerprint"].as_str() != Some(fingerprint) {
            return Err(bad(format!(
                "was written by a run with a different configuration; rerun with the same flags, or without --resume to start over (checkpoint: {}, now: {fingerprint})",
                f.meta.extra["fingerprint"]
            )));
        }
        if f.meta.arch != arch {
            return Err(bad(format!(
                "is for architecture {}, not {arch}",
                f.meta.arch
            )));
        }
    }
    let epoch = f.meta.extra["epoch"]
        .as_u64()
        .ok_or_else(|| bad("no epoch in metadata".into()))? as usize;
    let steps = f.meta.extra["steps"].as_u64().unwrap_or(0);
    let slots = Optimizer::slots(optim);
    let written = f.meta.extra["optimizer"].as_str();
    if written.is_some_and(|w| w != optimizer_name(optim))
        || (0..slots).any(|i| !f.has_prefix(&format!("opt{i}/")))
    {
        return Err(bad(format!(
            "holds no {} optimiser state (written by {})",
            optimizer_name(optim),
            written.unwrap_or("a run without one")
        )));
    }
    let device = backend::device();
    let params = f.take_set("params/", layout, &device)?;
    let state = (0..slots)
        .map(|i| f.take_set(&format!("opt{i}/"), layout, &device))
        .collect::<Result<Vec<_>>>()?;
    // Further optimiser slots (another optimiser's) are not read.
    let arch = f.meta.arch.clone();
    let fingerprint = f.meta.extra["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(Checkpoint {
        arch,
        params,
        optimizer: Optimizer::with_state(optim.clone(), steps, state)?,
        epoch,
        fingerprint,
        next_step: f.meta.extra["next_step"].as_u64().map(|k| k as usize),
    })
}

fn append_log(path: &Path, record: &Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{record}").map_err(|e| Error::io(path, e))
}

/// Keeps only the first `epochs` lines of a metrics log (after a resume).
fn truncate_log(path: &Path, epochs: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let kept: String = text
        .lines()
        .take(epochs)
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes())
}

/// The run directory's file for `name`.
pub fn run_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
