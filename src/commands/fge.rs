//! `modeconn fge`: Fast Geometric Ensembling (Garipov et al. 2018). From a training checkpoint and
//! its optimiser state (SGD's momentum), SGD continues with the cyclic rate of
//! [`crate::train::Schedule::Fge`] — from α₁ down to α₂ at the middle of every cycle of `c`
//! epochs (even) and back, changing at every step — and takes a snapshot at the end of each
//! epoch with `(epoch mod c) + 1 = c/2`, where the rate reaches α₂. After each snapshot the
//! ensemble of all snapshots so far (the mean of their softmax outputs) is evaluated on the test
//! set (state recomputed on the training set for networks with normalisation layers). Writes
//! `fge.csv`, `summary.json`, `run.json`, the figure `fge.{png,svg}`, `snapshots/snapshot<j>.safetensors`
//! and the loop's `metrics.jsonl` and checkpoint.

use std::fmt::Write as _;
use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor};
use serde_json::{Value, json};

use super::{eval_device, load_data};
use crate::arch::Arch;
use crate::data::{DataConfig, Dataset};
use crate::error::{Error, Result};
use crate::eval::state::{StateSample, recompute};
use crate::eval::{EVAL_BATCH, evaluate, evaluate_ensemble};
use crate::network_file::save_model;
use crate::params::ParamSet;
use crate::params::io::{FileMeta, Loaded, write_atomic};
use crate::report::{RunRecord, write_json};
use crate::train::objective::Scalars;
use crate::train::{
    Classification, LoopConfig, Objective, OptimConfig, RunControl, Schedule, StepCtx, fit_with,
    read_checkpoint,
};
use crate::weights::norm::BatchStats;

/// Validated options of `modeconn fge`.
#[derive(Debug, Clone)]
pub struct FgeOptions {
    /// The training checkpoint to start from (parameters and optimiser state).
    pub checkpoint: PathBuf,
    /// Data.
    pub data: DataConfig,
    /// Epochs of FGE.
    pub epochs: usize,
    /// Cycle length in epochs (even).
    pub cycle: usize,
    /// The rate at the start and end of every cycle.
    pub lr1: f64,
    /// The rate at the middle of every cycle (the snapshots).
    pub lr2: f64,
    /// Accept α₂ > α₁.
    pub rising: bool,
    /// SGD momentum (the checkpoint's buffers continue).
    pub momentum: f64,
    /// Weight decay.
    pub wd: f64,
    /// Minibatch size.
    pub batch_size: usize,
    /// Seed of the data order.
    pub seed: u64,
    /// No per-epoch lines.
    pub quiet: bool,
    /// Output directory.
    pub out: PathBuf,
}

/// The classification objective that also takes FGE's snapshots (after epochs with
/// `(epoch mod c) + 1 = c/2`) and evaluates their ensemble.
struct Snapshots<'a> {
    inner: Classification<'a>,
    arch: Arch,
    cycle: usize,
    train: &'a Dataset,
    test: &'a Dataset,
    device: Device,
    snapshots: Vec<(usize, ParamSet)>,
    /// Per snapshot: its epoch, its own test metrics and the ensemble's.
    rows: Vec<(usize, f64, f64, f64, f64)>,
}

impl Objective for Snapshots<'_> {
    fn loss(
        &mut self,
        params: &ParamSet,
        x: Tensor<2>,
        y: Tensor<1, Int>,
        ctx: &mut StepCtx<'_>,
    ) -> (Tensor<1>, Scalars) {
        self.inner.loss(params, x, y, ctx)
    }

    fn take_batch_stats(&mut self) -> Vec<BatchStats> {
        self.inner.take_batch_stats()
    }

    fn epoch_end(&mut self, params: &ParamSet, epoch: usize) -> Result<Vec<(String, Value)>> {
        let mut out = self.inner.epoch_end(params, epoch)?;
        if (epoch % self.cycle) + 1 != self.cycle / 2 {
            return Ok(out);
        }
        let snap = match params.layout().has_state() {
            true => recompute(
                &self.arch,
                params,
                self.train,
                &StateSample::ALL,
                &self.device,
            ),
            false => params.clone(),
        };
        let own = evaluate(&self.arch, &snap, self.test, EVAL_BATCH, &self.device);
        self.snapshots.push((epoch + 1, snap));
        let members: Vec<&ParamSet> = self.snapshots.iter().map(|(_, p)| p).collect();
        let ens = evaluate_ensemble(&self.arch, &members, self.test, EVAL_BATCH, &self.device);
        self.rows
            .push((epoch + 1, own.loss, own.err(), ens.loss, ens.err()));
        out.push(("snapshots".into(), json!(self.snapshots.len())));
        out.push(("ensemble_test_err".into(), json!(ens.err())));
        out.push(("ensemble_test_loss".into(), json!(ens.loss)));
        Ok(out)
    }
}

/// Runs `fge`; returns the summary (also `summary.json`).
pub fn run(opts: &FgeOptions, argv: Vec<String>) -> Result<Value> {
    if opts.cycle < 2 || opts.cycle % 2 == 1 {
        return Err(Error::Config(format!(
            "--cycle {}: an even number of epochs (the snapshot falls at its middle)",
            opts.cycle
        )));
    }
    for (flag, v) in [("--lr1", opts.lr1), ("--lr2", opts.lr2)] {
        if !(v > 0.0 && v.is_finite()) {
            return Err(Error::Config(format!("{flag} must be a positive number")));
        }
    }
    if opts.lr2 > opts.lr1 && !opts.rising {
        return Err(Error::Config(format!(
            "--lr2 {} is above --lr1 {}: FGE's rate falls to α₂ at each snapshot (pass --lr2-above-lr1 if you mean it)",
            opts.lr2, opts.lr1
        )));
    }
    if opts.epochs < opts.cycle / 2 {
        return Err(Error::Config(format!(
            "--epochs {} takes no snapshot: the first comes after epoch {} (half of --cycle {})",
            opts.epochs,
            opts.cycle / 2,
            opts.cycle
        )));
    }
    let arch: Arch = {
        let f = Loaded::open(&opts.checkpoint)?;
        f.expect_kind(&["checkpoint"])?;
        f.meta.arch.parse().map_err(|e: Error| Error::Checkpoint {
            path: opts.checkpoint.clone(),
            msg: e.to_string(),
        })?
    };
    let optim = OptimConfig::Sgd {
        momentum: opts.momentum,
        wd: opts.wd,
    };
    let start = read_checkpoint(&opts.checkpoint, &arch.layout(), &optim)?;
    let split = load_data(&opts.data)?;
    arch.check_data(&split.train)?;
    let cfg = LoopConfig {
        epochs: opts.epochs,
        batch_size: opts.batch_size,
        lr: opts.lr1,
        optim,
        schedule: Schedule::Fge {
            cycle: opts.cycle,
            ratio: opts.lr2 / opts.lr1,
        },
        seed: opts.seed,
        data_seed: None,
    };
    let config = json!({"checkpoint": opts.checkpoint, "data": opts.data, "arch": arch.to_string(),
        "cycle": opts.cycle, "lr1": opts.lr1, "lr2": opts.lr2, "loop": cfg,
        "start_epoch": start.epoch});
    let record = RunRecord::start(argv, config.clone(), Some(opts.seed));
    let device = eval_device();
    let mut obj = Snapshots {
        inner: Classification::new(arch.clone(), &split.test, device.clone()),
        arch: arch.clone(),
        cycle: opts.cycle,
        train: &split.train,
        test: &split.test,
        device: device.clone(),
        snapshots: Vec::new(),
        rows: Vec::new(),
    };
    let ctl = RunControl {
        resume: false,
        stop_after: None,
        quiet: opts.quiet,
        ..Default::default()
    };
    fit_with(
        start.params,
        Some(start.optimizer),
        &split.train,
        &mut obj,
        &cfg,
        &ctl,
        &opts.out,
        &FileMeta::new("model", &arch.to_string()),
        &config.to_string(),
    )?;
    let mut csv =
        String::from("snapshot,epoch,test_loss,test_err,ensemble_test_loss,ensemble_test_err\n");
    let snaps = opts.out.join("snapshots");
    std::fs::create_dir_all(&snaps).map_err(|e| Error::io(&snaps, e))?;
    for (j, ((epoch, p), r)) in obj.snapshots.iter().zip(&obj.rows).enumerate() {
        save_model(
            &snaps.join(format!("snapshot{}.safetensors", j + 1)),
            &arch,
            p,
        )?;
        let _ = writeln!(csv, "{},{epoch},{},{},{},{}", j + 1, r.1, r.2, r.3, r.4);
    }
    write_atomic(&opts.out.join("fge.csv"), csv.as_bytes())?;
    let last = obj.rows.last().copied();
    let summary = json!({
        "arch": arch.to_string(),
        "data": split.train.name,
        "snapshots": obj.rows.len(),
        "cycle": opts.cycle,
        "lr1": opts.lr1,
        "lr2": opts.lr2,
        "epochs": opts.epochs,
        "start_epoch": start.epoch,
        "ensemble_test_err": last.map(|r| r.4),
        "ensemble_test_loss": last.map(|r| r.3),
        "best_snapshot_test_err": obj.rows.iter().map(|r| r.2).fold(f64::INFINITY, f64::min),
    });
    write_json(&opts.out.join("summary.json"), &summary)?;
    crate::plot::figures::fge_figure(&opts.out.join("fge.csv"), &opts.out, None)?;
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}
