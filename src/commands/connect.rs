//! `modeconn connect`: fit a curve (PolyChain or Bezier) between two trained networks.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value, json};

use super::{eval_device, load_data};
use crate::curve::{Curve, CurveKind, CurveObjective};
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::network_file::load_any_pair;
use crate::params::io::FileMeta;
use crate::report::RunRecord;
use crate::train::objective::{Classification, Loss};
use crate::train::{LoopConfig, Objective, OptimConfig, RunControl, fit};
use crate::variational::objective::{Elbo, EvalConfig, Warmup};

/// Where the bends of a curve between two pruned networks may live (`--mask`; Evci et al.
/// 2019).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MaskMode {
    /// Inside the union of the endpoints' masks (a weight kept by either).
    Union,
    /// Inside their intersection (weights kept by both).
    Intersection,
    /// Anywhere (through the dense space).
    None,
}

impl MaskMode {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            MaskMode::Union => "union",
            MaskMode::Intersection => "intersection",
            MaskMode::None => "none",
        }
    }
}

/// What a variational curve's sampled point minimises (`--objective`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PointObjective {
    /// The negative ELBO of the point's posterior: `N·CE(f(x; w ~ q_t)) + KL(q_t ‖ p)`, the
    /// cross-entropy sampled through the local reparameterisation.
    #[default]
    Elbo,
    /// The likelihood term only: `N·CE(f(x; w ~ q_t))`.
    Nll,
}

impl PointObjective {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            PointObjective::Elbo => "elbo",
            PointObjective::Nll => "nll",
        }
    }
}

/// Validated options of `modeconn connect`.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// First endpoint (model file).
    pub a: PathBuf,
    /// Second endpoint (model file).
    pub b: PathBuf,
    /// Curve family.
    pub kind: CurveKind,
    /// Number of bends.
    pub bends: usize,
    /// Train the endpoints too.
    pub train_ends: bool,
    /// Fit on this many training samples drawn with the loop's seed.
    pub train_subset: Option<usize>,
    /// Weight decay on the sampled point `w(t)` (plain networks).
    pub wd: f64,
    /// A variational curve's per-point objective.
    pub objective: PointObjective,
    /// A plain curve's data term at the sampled point.
    pub loss: Loss,
    /// Sampled networks per step of a variational curve ([`Elbo::with_samples`]).
    pub train_samples: usize,
    /// Between pruned networks: where the bends may live.
    pub mask: Option<MaskMode>,
    /// Data.
    pub data: DataConfig,
    /// Loop settings (the optimiser's own decay must be 0).
    pub loop_cfg: LoopConfig,
    /// Output directory.
    pub out: PathBuf,
    /// Resume / stop / quiet.
    pub ctl: RunControl,
}

#[derive(Serialize)]
struct Resolved<'a> {
    a: &'a PathBuf,
    b: &'a PathBuf,
    curve: String,
    bends: usize,
    train_ends: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    train_subset: Option<usize>,
    wd: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    objective: Option<&'static str>,
    #[serde(skip_serializing_if = "super::vtrain::is_one")]
    train_samples: usize,
    #[serde(skip_serializing_if = "super::train::is_cross_entropy")]
    loss: Loss,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mask: Option<&'static str>,
    data: &'a DataConfig,
    arch: String,
    #[serde(flatten)]
    loop_cfg: &'a LoopConfig,
}

/// Runs `connect`; writes `out/curve.safetensors`, `metrics.jsonl`, `run.json`.
pub fn run(opts: &ConnectOptions, argv: Vec<String>) -> Result<Value> {
    let device = eval_device();
    let (model, a, b) = load_any_pair(("--a", &opts.a), ("--b", &opts.b), &device)?;
    let arch = model.arch().clone();
    if model.variational().is_some() && opts.wd != 0.0 {
        return Err(Error::Config(format!(
            "--wd {}: a curve between variational models is regularised by the KL of its points; weight decay applies to plain networks",
            opts.wd
        )));
    }
    if opts.train_samples == 0 {
        return Err(Error::Config("--train-samples must be at least 1".into()));
    }
    if model.variational().is_none() && opts.train_samples > 1 {
        return Err(Error::Config(format!(
            "--train-samples {}: sampling applies to variational endpoints; --a and --b are plain networks",
            opts.train_samples
        )));
    }
    if model.variational().is_some() && opts.loss != Loss::CrossEntropy {
        return Err(Error::Config(
            "--loss mse: a curve between variational models minimises its --objective; --loss applies to plain networks".into(),
        ));
    }
    if opts.bends == 0 && !opts.train_ends {
        return Err(Error::Config(
            "--bends 0 leaves nothing to train (add bends or --train-ends)".into(),
        ));
    }
    if opts.train_subset == Some(0) {
        return Err(Error::Config("--train-subset must be at least 1".into()));
    }
    let mut split = load_data(&opts.data)?;
    if let Some(n) = opts.train_subset {
        split.train = split.train.random_subset(n, opts.loop_cfg.seed);
    }
    arch.check_data(&split.train)?;
    // The decay acts on the sampled point w(t) through the objective, never on the control
    // points through the optimiser; record the optimiser as it really runs.
    let mut loop_cfg = opts.loop_cfg.clone();
    loop_cfg.optim = match loop_cfg.optim {
        OptimConfig::Sgd { momentum, .. } => OptimConfig::Sgd { momentum, wd: 0.0 },
        OptimConfig::Adam {
            beta1, beta2, eps, ..
        } => OptimConfig::Adam {
            beta1,
            beta2,
            eps,
            wd: 0.0,
        },
    };
    let resolved = Resolved {
        a: &opts.a,
        b: &opts.b,
        curve: opts.kind.to_string(),
        bends: opts.bends,
        train_ends: opts.train_ends,
        train_subset: opts.train_subset,
        wd: opts.wd,
        objective: model.variational().map(|_| opts.objective.name()),
        train_samples: opts.train_samples,
        loss: opts.loss,
        method: model.variational().map(|m| m.config.method.to_string()),
        mask: opts.mask.map(MaskMode::name),
        data: &opts.data,
        arch: arch.to_string(),
        loop_cfg: &loop_cfg,
    };
    let config = serde_json::to_value(&resolved).expect("serialisable config");
    let record = RunRecord::start(argv, config.clone(), Some(opts.loop_cfg.seed));
    arch.check_memory(
        opts.bends + 2 + crate::arch::memory::TRAIN_COPIES + opts.loop_cfg.optim.slots(),
        opts.loop_cfg.batch_size,
    )?;
    let bend_mask = match opts.mask {
        None | Some(MaskMode::None) => None,
        Some(mode) => Some(masks(opts, mode, &model, &device)?),
    };
    let mut curve = Curve::init_linear(opts.kind, opts.bends, model.clone(), &a, &b)?;
    if let Some(m) = &bend_mask {
        crate::curve::mask_bends(&mut curve.points, m);
    }
    let idx = curve.trainable(opts.train_ends);
    let packed = curve.pack(&idx);
    let mut obj: Box<dyn Objective + '_> = match &model {
        Model::Plain(_) => Box::new(
            CurveObjective::with_point(
                curve.clone(),
                idx.clone(),
                opts.wd,
                Classification::new(arch.clone(), &split.test, device.clone()).with_loss(opts.loss),
                &split.test,
                device.clone(),
            )
            .with_state_data(&split.train)
            .with_bend_mask_opt(bend_mask.clone()),
        ),
        Model::Variational(m) => {
            let warmup = match opts.objective {
                PointObjective::Elbo => Warmup::None,
                PointObjective::Nll => Warmup::Off,
            };
            // The midpoint's mode after every epoch, one sample after the last.
            let eval = EvalConfig {
                ensembles: Vec::new(),
                seed: loop_cfg.seed,
                every: usize::MAX,
            };
            let elbo = Elbo::new(
                m.clone(),
                warmup,
                &split.test,
                eval,
                loop_cfg.epochs,
                device.clone(),
            )
            .with_samples(opts.train_samples);
            Box::new(CurveObjective::with_point(
                curve.clone(),
                idx.clone(),
                0.0,
                elbo,
                &split.test,
                device.clone(),
            ))
        }
    };
    let meta = FileMeta::new("curve", &arch.to_string());
    let fitted = fit(
        packed,
        &split.train,
        obj.as_mut(),
        &loop_cfg,
        &opts.ctl,
        &opts.out,
        &meta,
        &config.to_string(),
    )?;
    if let Some(v) = super::early_stop(&fitted, &record, &opts.out)? {
        return Ok(v);
    }
    curve.unpack(&idx, &fitted.params);
    if let Some(m) = &bend_mask {
        crate::curve::mask_bends(&mut curve.points, m);
    }
    curve.ends_trained = opts.train_ends;
    let path = opts.out.join("curve.safetensors");
    curve.save(&path)?;
    let v = json!({"curve": path, "points": curve.len(), "kind": opts.kind.to_string()});
    record.finish(&opts.out, v.clone())?;
    Ok(v)
}

/// The bends' mask of `mode` from the pruned endpoints' masks (`mask.safetensors` beside each
/// model file, written by `modeconn prune`), one 0/1 vector per parameter.
fn masks(
    opts: &ConnectOptions,
    mode: MaskMode,
    model: &Model,
    device: &burn::tensor::Device,
) -> Result<Vec<Vec<f32>>> {
    let Model::Plain(arch) = model else {
        return Err(Error::Config(format!(
            "--mask {}: the endpoints are variational models; prune them first (modeconn prune)",
            mode.name()
        )));
    };
    if opts.train_ends {
        return Err(Error::Config(format!(
            "--mask {} restricts the bends; --train-ends would move the endpoints off their masks",
            mode.name()
        )));
    }
    let beside = |flag: &str, file: &std::path::Path| -> Result<Vec<Vec<f32>>> {
        let path = file
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(super::prune::MASK_FILE);
        if !path.exists() {
            return Err(Error::Config(format!(
                "--mask {}: no {} beside {flag} {} (write one with modeconn prune)",
                mode.name(),
                super::prune::MASK_FILE,
                file.display()
            )));
        }
        Ok(super::prune::load_mask(&path, arch, flag, device)?.to_vecs())
    };
    let (ma, mb) = (beside("--a", &opts.a)?, beside("--b", &opts.b)?);
    Ok(ma
        .iter()
        .zip(&mb)
        .map(|(x, y)| {
            x.iter()
                .zip(y)
                .map(|(p, q)| match mode {
                    MaskMode::Union => p.max(*q),
                    _ => p.min(*q),
                })
                .collect()
        })
        .collect())
}
