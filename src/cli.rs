//! Command-line interface: clap definitions and their conversion into validated options. The core
//! never sees clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::arch::Arch;
use crate::commands::{eval::EvalOptions, train::TrainOptions};
use crate::data::{DataConfig, Pixels, Source};
use crate::error::{Error, Result};
use crate::train::{LoopConfig, OptimConfig, OptimKind, RunControl, Schedule};

/// modeconn: loss surfaces of neural networks — mode connectivity, permuted minima and
/// variational dropout.
#[derive(Debug, Parser)]
#[command(name = "modeconn", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a network from a seeded initialisation; writes model.safetensors, metrics.jsonl,
    /// metrics.json and run.json into --out.
    Train(TrainArgs),
    /// Evaluate a saved network (loss and accuracy on train and test).
    Eval(EvalArgs),
}

/// Which data to use.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Dataset: digits (8×8, embedded in the binary), mnist, fashion-mnist or cifar10
    /// (fetch MNIST / Fashion-MNIST with `bash scripts/fetch-data.sh`).
    #[arg(long, default_value = "digits", value_name = "NAME")]
    pub data: String,
    /// Directory with the dataset's files [default: data/<name>].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Pixel scaling: unit (divide by the maximum value) or standard (training-set mean/std).
    #[arg(long, default_value = "unit", value_name = "SCALING")]
    pub pixels: String,
}

impl DataArgs {
    /// Validated data configuration.
    pub fn resolve(&self) -> Result<DataConfig> {
        let source: Source = self.data.parse()?;
        let pixels = match self.pixels.as_str() {
            "unit" => Pixels::Unit,
            "standard" => Pixels::Standard,
            p => {
                return Err(Error::Config(format!(
                    "--pixels `{p}`: expected `unit` or `standard`"
                )));
            }
        };
        Ok(DataConfig {
            source,
            dir: self.data_dir.clone(),
            pixels,
        })
    }
}

/// Settings shared by every training command.
#[derive(Debug, Clone, Args)]
pub struct LoopArgs {
    /// Number of epochs.
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Optimiser: sgd (momentum) or adam.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// L2 weight decay.
    #[arg(long, default_value_t = 5e-4)]
    pub wd: f64,
    /// LR schedule: constant, step:EVERY:GAMMA, multistep:M1,M2:GAMMA, cosine, garipov,
    /// linear-to-0:START.
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Seed for initialisation, data order and all sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl LoopArgs {
    /// Validated loop configuration.
    pub fn resolve(&self) -> Result<LoopConfig> {
        let kind: OptimKind = self.optimizer.parse()?;
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::Config(format!(
                "--momentum must be in [0, 1), got {}",
                self.momentum
            )));
        }
        if !(self.wd >= 0.0 && self.wd.is_finite()) {
            return Err(Error::Config(format!(
                "--wd must be a non-negative number, got {}",
                self.wd
            )));
        }
        let cfg = LoopConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            optim: OptimConfig::new(kind, self.momentum, self.wd),
            schedule: self.schedule.parse::<Schedule>()?,
            seed: self.seed,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// How a training command runs.
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    /// Continue from the checkpoint in --out (same flags required); finishes with the same
    /// weights as an uninterrupted run.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this epoch, leaving a checkpoint to --resume from.
    #[arg(long, value_name = "EPOCH")]
    pub stop_after: Option<usize>,
    /// No progress bar and no per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
}

impl ControlArgs {
    /// The run control.
    pub fn resolve(&self) -> RunControl {
        RunControl {
            resume: self.resume,
            stop_after: self.stop_after,
            quiet: self.quiet,
        }
    }
}

/// `modeconn train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Architecture: mlp:W0-W1-...-WL (e.g. mlp:784-300-100-10) or lenet5[:CxHxW]
    /// [default: mlp:64-128-10 on digits, mlp:D-300-100-10 otherwise].
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<String>,
    /// Loop.
    #[command(flatten)]
    pub train: LoopArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Control.
    #[command(flatten)]
    pub control: ControlArgs,
}

impl TrainArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<TrainOptions> {
        Ok(TrainOptions {
            data: self.data.resolve()?,
            arch: self
                .arch
                .as_deref()
                .map(|a| a.parse::<Arch>())
                .transpose()?,
            loop_cfg: self.train.resolve()?,
            out: self.out.clone(),
            ctl: self.control.resolve(),
        })
    }
}

/// `modeconn eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The saved network (model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Also write the metrics to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl EvalArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<EvalOptions> {
        Ok(EvalOptions {
            model: self.model.clone(),
            data: self.data.resolve()?,
            out: self.out.clone(),
        })
    }
}
