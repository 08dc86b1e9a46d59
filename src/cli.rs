//! Command-line interface: clap definitions and their conversion into validated options. The core
//! never sees clap types.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::arch::{Arch, Init};
use crate::commands::align::{AlignMethod, AlignOptions};
use crate::commands::connect::{ConnectOptions, MaskMode, PointObjective};
use crate::commands::path::PathOptions;
use crate::commands::permute::PermuteOptions;
use crate::commands::vtrain::VtrainOptions;
use crate::commands::{eval::EvalOptions, train::TrainOptions};
use crate::curve::CurveKind;
use crate::data::{DataConfig, Pixels, Source};
use crate::error::{Error, Result};
use crate::params::io::write_atomic;
use crate::permute::Correlation;
use crate::pipeline::runner::{self, RunOptions};
use crate::pipeline::{demo, spec::Analysis};
use crate::train::objective::Loss;
use crate::train::subspace::ProjectionKind;
use crate::train::{LoopConfig, OptimConfig, OptimKind, RunControl, Schedule};
use crate::variational::objective::{EvalConfig, Warmup};
use crate::variational::{InitConfig, LrtVariance, Method, VConfig, VarianceLayers};

/// modeconn: loss surfaces of neural networks — mode connectivity, permuted minima and
/// variational dropout.
#[derive(Debug, Parser)]
#[command(name = "modeconn", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// The device: cpu (default), or a GPU backend this binary was built with (wgpu with
    /// `--features wgpu`, cuda with `--features cuda`).
    #[arg(long, global = true, value_name = "DEVICE")]
    pub device: Option<DeviceArg>,
}

/// `--device` values (those compiled in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// The CPU (burn's flex backend with modeconn's host kernels).
    Cpu,
    /// The first GPU through wgpu.
    #[cfg(feature = "wgpu")]
    Wgpu,
    /// The first CUDA GPU.
    #[cfg(feature = "cuda")]
    Cuda,
}

impl DeviceArg {
    /// The backend's device choice.
    pub fn choice(self) -> crate::backend::DeviceChoice {
        use crate::backend::DeviceChoice;
        match self {
            DeviceArg::Cpu => DeviceChoice::Cpu,
            #[cfg(feature = "wgpu")]
            DeviceArg::Wgpu => DeviceChoice::Wgpu,
            #[cfg(feature = "cuda")]
            DeviceArg::Cuda => DeviceChoice::Cuda,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a network from a seeded initialisation; writes model.safetensors, metrics.jsonl,
    /// metrics.json and run.json into --out.
    Train(TrainArgs),
    /// Evaluate a saved network (loss and accuracy on train and test).
    Eval(EvalArgs),
    /// Fit a low-loss curve (polychain or Bezier) between two trained networks or two
    /// variational models; writes curve.safetensors, metrics.jsonl and run.json into --out.
    Connect(ConnectArgs),
    /// Evaluate loss and error along the straight line between two networks (or variational
    /// models: mode, one sample, ensembles) and along fitted curves; writes path.csv and
    /// summary.json (barriers, arc-length means) into --out.
    Path(PathArgs),
    /// Train a variational model (sparse VD, ARD, group ARD, Gaussian dropout, layer-wise α,
    /// variance layers); writes variational.safetensors, mode.safetensors, metrics.jsonl,
    /// summary.json and run.json into --out.
    Vtrain(VtrainArgs),
    /// Turn a sparse-VD, ARD or group-ARD model into the plain masked network of its mode
    /// (weights with log α > 3 removed); writes model.safetensors, mask.safetensors,
    /// summary.json and run.json into --out.
    Prune(PruneArgs),
    /// Read a PyTorch state dict (torch.save .pt/.pth or safetensors) as a network of --arch:
    /// wrapper prefixes stripped, names mapped as they are, by --rename rules or by an
    /// nn.Sequential's shape chain; writes model.safetensors and run.json into --out.
    Import(ImportArgs),
    /// Write a network as a PyTorch state dict (safetensors, float32, PyTorch's names) that
    /// `load_state_dict` loads strictly into the matching nn.Module; writes
    /// state_dict.safetensors and run.json into --out.
    Export(ExportArgs),
    /// One self-contained HTML page of a run directory (an analysis's or one command's): its
    /// SVG figures inlined, each step's command line, result tables and run.json provenance;
    /// writes DIR/report.html (or --out).
    Report(ReportArgs),
    /// Apply a seeded random, function-preserving permutation of the hidden units to a saved
    /// network or variational model; writes model.safetensors (variational.safetensors),
    /// permutation.json, summary.json and run.json into --out.
    Permute(PermuteArgs),
    /// Permute network --model's hidden units to match network --to (weight or activation
    /// matching; variational models by weight matching on their means); writes the aligned
    /// model.safetensors (variational.safetensors), permutation.json, summary.json (matching
    /// objective before/after) and run.json into --out.
    Align(AlignArgs),
    /// The permuted-minima probe: line and fitted chain for (w1, w2), (w1, π(w1)),
    /// (w1, π(w2)) and (w1, align(w2)), with a table of barriers in --out/summary.json.
    Probe(ProbeArgs),
    /// Evaluate train loss and test error on the plane through w1, a curve's bend and w2
    /// (variational models: the mode's and one sample's); writes plane.json and plane.csv into
    /// --out.
    Plane(PlaneArgs),
    /// The local dimension of the set of minima at an interpolating plain MLP (squared error on
    /// N one-hot points fitted to ‖r‖ ≤ 1e-6 in f64): the singular values of the residual
    /// Jacobian, its rank at the largest gap, and D − rank beside D − N·K; writes spectrum.csv,
    /// dimension.json, model.safetensors, spectrum.png/svg and run.json into --out.
    Dimension(DimensionArgs),
    /// Project the line between two interpolating minima (from `dimension` or `train --loss
    /// mse`), further lines from the first and fitted curves onto the set of minima on the same
    /// N points: residual before and after, distance moved and local dimension along t; writes
    /// project.csv, summary.json, project.png/svg and run.json into --out.
    Project(ProjectArgs),
    /// The intrinsic dimension of the objective (Li et al. 2018): train in random subspaces
    /// θ₀ + P·z of the dimensions --dims (--runs seeds each) and in all D directions; d_int90 is
    /// the smallest d whose mean test accuracy reaches 90% of the full network's; writes
    /// intrinsic.csv, summary.json, intrinsic.png/svg and run.json into --out.
    IntrinsicDim(IntrinsicArgs),
    /// A mode-connecting simplicial complex (Benton et al. 2021, SPRO): from two or more modes,
    /// add --connectors vertices one at a time (each from the centroid, older ones frozen),
    /// trained on the mean loss of --samples Dirichlet points per step minus a volume term;
    /// writes simplex.safetensors, simplex.csv, samples.csv, triangle.csv, summary.json,
    /// simplex.png/svg, triangle.png/svg and run.json into --out.
    Simplex(SimplexArgs),
    /// The sharpness of a trained network: the top eigenvalues (power iteration with deflation)
    /// and the trace (Hutchinson) of the Hessian of its mean cross-entropy on a fixed evaluation
    /// subset, from Hessian-vector products; writes hessian.json and run.json into --out.
    Hessian(HessianArgs),
    /// The loss surface around a network along filter-normalised random directions (Li et al.
    /// 2018), in 1-d or 2-d; writes landscape.csv, landscape.json, the figures and run.json into
    /// --out.
    Landscape(LandscapeArgs),
    /// Fast Geometric Ensembling (Garipov et al. 2018): from a training checkpoint and its
    /// optimiser state, SGD with a cyclic rate (α₁ → α₂ → α₁ every --cycle epochs) and a
    /// snapshot at every cycle's low point; the ensemble's test error as snapshots accumulate.
    /// Writes fge.csv, summary.json, fge.png/svg, snapshots/ and run.json into --out.
    Fge(FgeArgs),
    /// Instability analysis (Frankle et al. 2020): from one initialisation, copies spawned at
    /// step k that differ only in data order are trained to the end; the error barrier on the
    /// line between them, per k. Writes instability.csv, summary.json, instability.png/svg and
    /// run.json into --out.
    Instability(InstabilityArgs),
    /// Render figures (PNG and SVG) from a result directory or file (path.csv, plane.json,
    /// a vtrain run, a dimension, project, intrinsic-dim or simplex run), or `kl` for the KL
    /// approximation figure.
    Plot(PlotArgs),
    /// The main job on the embedded digits data (seconds on 2 cores): two MLPs, the line, a chain
    /// and a Bezier curve, a random permutation and an aligned network, sparse VD and a
    /// variance layer, the plane, and all figures; prints a summary table.
    Demo(DemoArgs),
    /// Execute an analysis spec (analyses/*.toml) step by step, skipping steps already done with
    /// the same resolved command line and resuming interrupted training.
    Run(RunArgs),
    /// Print a shell completion script, e.g. `modeconn completions bash >
    /// ~/.local/share/bash-completion/completions/modeconn`.
    Completions(CompletionsArgs),
    /// Write man pages (modeconn.1 and one modeconn-COMMAND.1 per command) into --out.
    Man(ManArgs),
}

/// `modeconn completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `modeconn man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Output directory.
    #[arg(long, value_name = "DIR", default_value = "man")]
    pub out: PathBuf,
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "modeconn", &mut buf);
    String::from_utf8(buf).expect("completion scripts are UTF-8")
}

/// Writes the man pages into `dir` (atomically, one file each); returns their paths.
pub fn man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let root = Cli::command();
    let mut pages = vec![("modeconn".to_string(), root.clone())];
    for sub in root.get_subcommands() {
        let name = format!("modeconn-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    let mut files = Vec::new();
    for (name, cmd) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut buf)
            .map_err(|e| Error::io(dir, e))?;
        let file = dir.join(format!("{name}.1"));
        write_atomic(&file, &buf)?;
        files.push(file);
    }
    Ok(files)
}

/// Which data to use.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Dataset: digits (8×8, embedded in the binary), mnist, fashion-mnist or cifar10
    /// (fetch MNIST / Fashion-MNIST with `bash scripts/fetch-data.sh`).
    #[arg(long, value_enum, default_value_t = Source::Digits, value_name = "NAME")]
    pub data: Source,
    /// Directory with the dataset's files [default: data/NAME].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Pixel scaling: unit (divide by the maximum value) or standard (training-set mean/std).
    #[arg(long, value_enum, default_value_t = Pixels::Unit, value_name = "SCALING")]
    pub pixels: Pixels,
}

impl DataArgs {
    /// Validated data configuration.
    pub fn resolve(&self) -> Result<DataConfig> {
        Ok(DataConfig {
            source: self.data,
            dir: self.data_dir.clone(),
            pixels: self.pixels,
        })
    }
}

/// The defaults of the loop flags, which differ between commands (a variational model's loss is
/// N·CE + rw·KL, so it wants Adam with a small rate).
#[derive(Debug, Clone, Copy)]
pub struct LoopDefaults {
    /// `--epochs`.
    pub epochs: usize,
    /// `--batch-size`.
    pub batch_size: usize,
    /// `--lr`.
    pub lr: f64,
    /// `--optimizer`.
    pub optimizer: OptimKind,
    /// `--wd`.
    pub wd: f64,
    /// `--schedule`.
    pub schedule: &'static str,
}

impl LoopDefaults {
    /// `train`: SGD 0.1, momentum 0.9, wd 5e-4, cosine, 30 epochs of 128.
    pub const TRAIN: Self = Self {
        epochs: 30,
        batch_size: 128,
        lr: 0.1,
        optimizer: OptimKind::Sgd,
        wd: 5e-4,
        schedule: "cosine",
    };
    /// `intrinsic-dim`: Adam 1e-2 without decay, constant rate, 10 epochs of 128 (the
    /// coordinates z start at 0 and move in weight units).
    pub const INTRINSIC: Self = Self {
        epochs: 10,
        batch_size: 128,
        lr: 1e-2,
        optimizer: OptimKind::Adam,
        wd: 0.0,
        schedule: "constant",
    };
    /// `simplex`: per connector, SGD 0.05, momentum 0.9, wd 5e-4, cosine, 20 epochs of 128
    /// (SPRO's recipe, with the rate and length for small data sets).
    pub const SIMPLEX: Self = Self {
        epochs: 20,
        lr: 0.05,
        ..Self::TRAIN
    };
    /// `connect` and `probe`: as `train`, with Garipov et al.'s (2018) schedule.
    pub const CURVE: Self = Self {
        schedule: "garipov",
        ..Self::TRAIN
    };
    /// `vtrain`: Adam 3e-3 (1e-2 for variance networks), no weight decay, constant rate, 30
    /// epochs of 100. (The MNIST recipes of Molchanov et al. 2017 use 1e-3 over 600 steps an
    /// epoch; the embedded digits have 14, and 1e-3 leaves their networks short of converged.)
    pub const VARIATIONAL: Self = Self {
        epochs: 30,
        batch_size: 100,
        lr: 3e-3,
        optimizer: OptimKind::Adam,
        wd: 0.0,
        schedule: "constant",
    };
}

/// `vtrain --method variance`'s default learning rate.
const VARIANCE_LR: f64 = 1e-2;

/// Settings shared by every training command (`train`, `connect`, `probe`, `vtrain`).
#[derive(Debug, Clone, Args)]
pub struct LoopArgs {
    /// Number of epochs [default: 30].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Minibatch size [default: 128; vtrain 100].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Base learning rate [default: 0.1; vtrain 3e-3, or 1e-2 for --method variance].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimiser [default: sgd; vtrain adam].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimKind>,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// L2 weight decay [default: 5e-4; vtrain 0, the KL being the regulariser]. `connect`
    /// applies it to the sampled point, ½·wd·‖w(t)‖², not through the optimiser.
    #[arg(long)]
    pub wd: Option<f64>,
    /// LR schedule: constant, step:EVERY:GAMMA, multistep:M1,M2:GAMMA, cosine, garipov,
    /// linear-to-0:START [default: cosine for train, garipov for connect and probe, constant
    /// for vtrain].
    #[arg(long)]
    pub schedule: Option<String>,
    /// Seed for initialisation, data order and all sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A separate seed for the data order and the step's sampling [default: --seed]: runs from
    /// one initialisation that differ only in data order.
    #[arg(long, value_name = "SEED")]
    pub data_seed: Option<u64>,
}

impl LoopArgs {
    /// The weight decay given or its default.
    pub fn wd(&self, d: &LoopDefaults) -> f64 {
        self.wd.unwrap_or(d.wd)
    }

    /// Validated loop configuration, with `d` for the flags not given.
    pub fn resolve(&self, d: &LoopDefaults) -> Result<LoopConfig> {
        let wd = self.wd(d);
        let cfg = LoopConfig {
            epochs: self.epochs.unwrap_or(d.epochs),
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            lr: self.lr.unwrap_or(d.lr),
            optim: OptimConfig::new(self.optimizer.unwrap_or(d.optimizer), self.momentum, wd),
            schedule: self
                .schedule
                .as_deref()
                .unwrap_or(d.schedule)
                .parse::<Schedule>()?,
            seed: self.seed,
            data_seed: self.data_seed,
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
            ..Default::default()
        }
    }
}

/// `modeconn train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Architecture: mlp:W0-W1-...-WL (e.g. mlp:784-300-100-10), with batch normalisation
    /// mlp:W0-...-WL:norm=bn (Linear without bias → BatchNorm → ReLU) or :norm=ln (LayerNorm);
    /// lenet5 or lenet5:CxHxW;
    /// vgg11 / vgg16 with :w=WIDTH, :norm=bn|none, :in=CxHxW (default 3x32x32); resnet20 with
    /// :w=N, :in=CxHxW [default: mlp:64-128-10 on digits, mlp:D-300-100-10 otherwise].
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<String>,
    /// Train on N training samples drawn with the seed `--seed` (evaluation still uses the
    /// whole test set) [default: all].
    #[arg(long, value_name = "N")]
    pub train_subset: Option<usize>,
    /// Initial weights: pytorch (PyTorch's default, U(±1/√fan_in)) or he (N(0, 2/fan_in),
    /// zero biases: for deep networks without normalisation, e.g. vgg11:norm=none).
    #[arg(long, value_enum, default_value_t = Init::Pytorch, value_name = "SCHEME")]
    pub init: Init,
    /// The data term: cross-entropy, or mse, the squared error to one-hot targets (with
    /// --wd 0 and a --train-subset small enough to fit exactly: the interpolating setting of
    /// `modeconn dimension`).
    #[arg(long, value_enum, default_value_t = Loss::CrossEntropy, value_name = "LOSS")]
    pub loss: Loss,
    /// Loop.
    #[command(flatten)]
    pub train: LoopArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Control.
    #[command(flatten)]
    pub control: ControlArgs,
    /// Stop before step K of the run (steps counted from 0 over all epochs; in the middle of an
    /// epoch if need be), leaving a checkpoint with the optimiser's state that --resume
    /// continues bit for bit (the instability analysis spawns copies from such a W_k).
    #[arg(long, value_name = "K", conflicts_with = "stop_after")]
    pub stop_at_step: Option<usize>,
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
            loop_cfg: self.train.resolve(&LoopDefaults::TRAIN)?,
            train_subset: self.train_subset,
            init: self.init,
            loss: self.loss,
            out: self.out.clone(),
            ctl: RunControl {
                stop_at_step: self.stop_at_step,
                ..self.control.resolve()
            },
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
    /// Variational models: ensemble sizes, e.g. 10,20 [default: as in training].
    #[arg(long, value_name = "K,K")]
    pub ensemble: Option<String>,
    /// Variational models: seed of the sampling noise [default: as in training].
    #[arg(long, value_name = "SEED")]
    pub eval_seed: Option<u64>,
    /// Variational models: the zero-mean ablation (Neklyudov et al. 2019) — evaluate with the
    /// weight means of these layers set to 0 and their variances kept, e.g. fc1 or conv1,fc2.
    /// A layer whose α has run to infinity keeps its information in the variances: its sampled
    /// predictions survive, its mode does not.
    #[arg(long, value_name = "LAYER,LAYER", value_delimiter = ',')]
    pub zero_mean: Vec<String>,
}

impl EvalArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<EvalOptions> {
        Ok(EvalOptions {
            model: self.model.clone(),
            data: self.data.resolve()?,
            out: self.out.clone(),
            ensemble: self
                .ensemble
                .as_deref()
                .map(|s| crate::variational::eval::parse_ensembles(s, "--ensemble"))
                .transpose()?,
            eval_seed: self.eval_seed,
            zero_mean: self.zero_mean.clone(),
        })
    }
}

/// `modeconn vtrain`.
#[derive(Debug, Args)]
pub struct VtrainArgs {
    /// Method: gaussian (Gaussian dropout, Kingma et al. 2015), layerwise-alpha (one learned α
    /// per layer), sparse-vd (Molchanov et al. 2017), ard and group-ard (Kharitonov et al. 2018)
    /// or variance (variance networks, Neklyudov et al. 2019).
    #[arg(long, value_enum, value_name = "METHOD")]
    pub method: Method,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Architecture: mlp:W0-W1-...-WL or lenet5 or lenet5:CxHxW
    /// [default: mlp:64-128-10 on digits, mlp:D-300-100-10 otherwise].
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<String>,
    /// Loop.
    #[command(flatten)]
    pub train: LoopArgs,
    /// KL weight warm-up: pytorch (= ramp:0.04:0.02, the deepbayes notebook: 0.04 in the first
    /// epoch, +0.02 per epoch, at most 1), theano (= linear:5:20), none, linear:START:END,
    /// slope:RATE (RATE·epoch, 1-based), ramp:FIRST:RATE, off (no KL: the likelihood only).
    #[arg(long, default_value = "pytorch", value_name = "SCHEDULE")]
    pub kl_warmup: String,
    /// Initial θ ~ N(0, S²) with zero biases [default: the architecture's PyTorch init].
    #[arg(long, value_name = "S")]
    pub init_std: Option<f64>,
    /// Initial log σ² (sparse-vd, ard, group-ard).
    #[arg(long, default_value_t = -10.0, allow_negative_numbers = true)]
    pub init_log_sigma2: f64,
    /// Initial per-layer log α (layerwise-alpha).
    #[arg(long, default_value_t = -10.0, allow_negative_numbers = true)]
    pub init_log_alpha: f64,
    /// Per-weight log α is clipped to [−C, C] (sparse-vd, ard, group-ard, variance). Default 8
    /// (Molchanov et al. 2017); the deepbayes notebook's PyTorch layer uses 10. Must exceed the pruning threshold 3.
    #[arg(long, default_value_t = 8.0, value_name = "C")]
    pub log_alpha_clip: f64,
    /// Weight variance of the local reparameterisation (sparse-vd, ard, group-ard):
    /// alpha-theta2 (α·θ² with the clipped α, Molchanov et al. 2017) or sigma2 (σ² itself, clipped only
    /// in the KL and pruning: the deepbayes notebook's LinearSVDO).
    #[arg(long, value_enum, default_value_t = LrtVariance::AlphaTheta2, value_name = "FORM")]
    pub lrt_variance: LrtVariance,
    /// gaussian: dropout rate p, α = p/(1−p) (initial value with --learn-alpha).
    #[arg(long, default_value_t = 0.5)]
    pub dropout_rate: f64,
    /// gaussian: learn one α ≤ 1 per layer (Kingma's KL).
    #[arg(long)]
    pub learn_alpha: bool,
    /// variance: the zero-mean layers: hidden (every layer but the output layer, which stays a
    /// point estimate), all (every layer; a zero-mean output layer gives the logits the same
    /// mean, its bias, for every input, so by Jensen's inequality the expected cross-entropy is
    /// no better than a constant prediction's: train it with --train-samples K > 1), or a list
    /// such as fc1,fc2 [default: hidden].
    #[arg(long, value_name = "LAYERS")]
    pub variance_layers: Option<String>,
    /// Sampled networks per training step. With K > 1 the data term is the multi-sample
    /// bound N·mean −log((1/K)·Σ_k p(y | x, w_k)), w_k ~ q drawn independently: it rewards the
    /// ensemble rather than each sample, which lets a zero-mean output layer learn (Neklyudov
    /// et al. 2019 train variance networks so). A step costs K forward and backward passes.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub train_samples: usize,
    /// Ensemble sizes evaluated on the test set, e.g. 10,20, or none.
    #[arg(long, default_value = "10,20", value_name = "K,K")]
    pub ensemble: String,
    /// Seed of the evaluation noise [default: --seed].
    #[arg(long, value_name = "SEED")]
    pub eval_seed: Option<u64>,
    /// Evaluate samples and ensembles every this many epochs (and after the last); the mode is
    /// evaluated every epoch.
    #[arg(long, default_value_t = 1, value_name = "EPOCHS")]
    pub eval_every: usize,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Control.
    #[command(flatten)]
    pub control: ControlArgs,
}

impl VtrainArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<VtrainOptions> {
        let method = self.method;
        let mut defaults = LoopDefaults::VARIATIONAL;
        if method == Method::Variance {
            defaults.lr = VARIANCE_LR;
        }
        let loop_cfg = self.train.resolve(&defaults)?;
        let variance_layers = match self.variance_layers.as_deref() {
            None => VarianceLayers::Hidden,
            Some(_) if method != Method::Variance => {
                return Err(Error::Config(
                    "--variance-layers applies only to --method variance".into(),
                ));
            }
            Some(s) => s.parse()?,
        };
        Ok(VtrainOptions {
            data: self.data.resolve()?,
            arch: self
                .arch
                .as_deref()
                .map(|a| a.parse::<Arch>())
                .transpose()?,
            config: VConfig {
                method,
                variance_layers,
                dropout_rate: self.dropout_rate,
                learn_alpha: self.learn_alpha,
                init: InitConfig {
                    std: self.init_std,
                    log_sigma2: self.init_log_sigma2,
                    log_alpha: self.init_log_alpha,
                },
                log_alpha_clip: self.log_alpha_clip,
                lrt_variance: self.lrt_variance,
            },
            warmup: self.kl_warmup.parse::<Warmup>()?,
            eval: EvalConfig {
                ensembles: crate::variational::eval::parse_ensembles(&self.ensemble, "--ensemble")?,
                seed: self.eval_seed.unwrap_or(self.train.seed),
                every: self.eval_every,
            },
            train_samples: self.train_samples,
            loop_cfg,
            out: self.out.clone(),
            ctl: self.control.resolve(),
        })
    }
}

/// `modeconn connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// First endpoint: a network (`train`'s model.safetensors) or a variational model
    /// (`vtrain`'s).
    #[arg(long, value_name = "FILE")]
    pub a: PathBuf,
    /// Second endpoint, of the same architecture and kind (for variational models, the same
    /// method and settings).
    #[arg(long, value_name = "FILE")]
    pub b: PathBuf,
    /// Curve family: polychain (the chain w1 → w0 → w2 of Garipov et al. 2018) or bezier.
    #[arg(long, value_enum, default_value_t = CurveKind::Polychain)]
    pub curve: CurveKind,
    /// Number of trainable bends.
    #[arg(long, default_value_t = 1)]
    pub bends: usize,
    /// Also train the endpoints (frozen by default).
    #[arg(long)]
    pub train_ends: bool,
    /// Fit the curve on N training samples drawn with the seed `--seed` (the midpoint's
    /// statistics are recomputed on them too) [default: all].
    #[arg(long, value_name = "N")]
    pub train_subset: Option<usize>,
    /// Between variational models: what the sampled point q_t minimises, the negative ELBO
    /// N·CE(f(x; w ~ q_t)) + KL(q_t ‖ p) (the cross-entropy sampled through the local
    /// reparameterisation) or its likelihood term only. The control points hold every
    /// variational parameter (θ, log σ², a layer's log α), so the curve interpolates in
    /// (θ, log σ²) space; the loop's defaults are vtrain's (Adam 3e-3, batch 100, constant
    /// rate, no weight decay).
    #[arg(long, value_enum, default_value_t = PointObjective::Elbo)]
    pub objective: PointObjective,
    /// Between variational models: sampled networks per step; with K > 1 the point's data
    /// term is the multi-sample bound −log((1/K)·Σ_k p(y | x, w_k)) (see vtrain
    /// --train-samples; needed for variance networks whose output layer is zero-mean).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub train_samples: usize,
    /// Between plain networks: the data term at the sampled point, cross-entropy or mse (the
    /// squared error to one-hot targets, for curves between interpolating minima; with
    /// --train-subset N --seed S the curve is fitted on the N points that `dimension --points N
    /// --points-seed S` uses).
    #[arg(long, value_enum, default_value_t = Loss::CrossEntropy, value_name = "LOSS")]
    pub loss: Loss,
    /// Between two pruned networks (modeconn prune; each directory holds mask.safetensors):
    /// keep the bends inside the union or the intersection of the endpoints' masks, or let them
    /// go anywhere (none, through the dense space; Evci et al. 2019). The masked-out entries of
    /// a bend take no part in the loss and are zero in the fitted curve.
    #[arg(long, value_enum, value_name = "MODE")]
    pub mask: Option<MaskMode>,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
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

impl ConnectArgs {
    /// Validated options (the loop's defaults follow the endpoints' kind, read from --a).
    pub fn resolve(&self) -> Result<ConnectOptions> {
        let defaults = match crate::network_file::holds_variational(&self.a)? {
            true => LoopDefaults::VARIATIONAL,
            false => LoopDefaults::CURVE,
        };
        Ok(ConnectOptions {
            a: self.a.clone(),
            b: self.b.clone(),
            kind: self.curve,
            bends: self.bends,
            train_ends: self.train_ends,
            train_subset: self.train_subset,
            wd: self.train.wd(&defaults),
            objective: self.objective,
            train_samples: self.train_samples,
            loss: self.loss,
            mask: self.mask,
            data: self.data.resolve()?,
            loop_cfg: self.train.resolve(&defaults)?,
            out: self.out.clone(),
            ctl: self.control.resolve(),
        })
    }
}

/// The samples of the statistics pass at every evaluated point (`path`, `plane`, `probe`).
#[derive(Debug, Args)]
pub struct StateSampleArgs {
    /// Networks with batch normalisation (and `--repair`): compute each evaluated point's
    /// statistics on N batches of 128 training samples, drawn with --bn-seed [default: all
    /// training samples, in order].
    #[arg(long, value_name = "N")]
    pub bn_batches: Option<usize>,
    /// Seed of the samples --bn-batches draws.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub bn_seed: u64,
}

impl StateSampleArgs {
    /// The typed sample (checked where it is used).
    pub fn resolve(&self) -> crate::eval::state::StateSample {
        crate::eval::state::StateSample {
            batches: self.bn_batches,
            seed: self.bn_seed,
        }
    }
}

/// `modeconn path`.
#[derive(Debug, Args)]
pub struct PathArgs {
    /// First endpoint (t = 0): a network, or a variational model (then every point is
    /// evaluated on its mode, on one weight sample and on ensembles of K samples, with its KL
    /// and compression, and the summary adds the marginalised barrier of the one-sample NLL).
    #[arg(long, value_name = "FILE")]
    pub a: PathBuf,
    /// Second endpoint (t = 1), of the same architecture and kind.
    #[arg(long, value_name = "FILE")]
    pub b: PathBuf,
    /// A fitted curve (curve.safetensors) to evaluate too; repeat for several, optionally
    /// named as NAME=FILE [default names: curve, curve2, ...].
    #[arg(long, value_name = "[NAME=]FILE")]
    pub curve: Vec<String>,
    /// Number of evenly spaced t values in [0, 1].
    #[arg(long, default_value_t = 61)]
    pub points: usize,
    /// Evaluate train metrics on the first N training samples only (bounds the cost).
    #[arg(long, value_name = "N")]
    pub train_subset: Option<usize>,
    /// The statistics pass at every evaluated point.
    #[command(flatten)]
    pub bn: StateSampleArgs,
    /// Networks with batch normalisation: evaluate every point with the interpolated running
    /// statistics instead of recomputing them (for comparison with the default "BN reset").
    #[arg(long)]
    pub no_bn_reset: bool,
    /// Networks without normalisation: also evaluate the line with REPAIR (Jordan et al.
    /// 2023) as the path `line-repair`: at every point each hidden channel's pre-activation
    /// mean and standard deviation are rescaled to the endpoints' interpolated ones, measured
    /// on the samples --bn-batches/--bn-seed pick.
    #[arg(long)]
    pub repair: bool,
    /// Variational endpoints: ensemble sizes evaluated on the test set at every point, e.g.
    /// 10,20, or none.
    #[arg(long, default_value = "10", value_name = "K,K")]
    pub ensemble: String,
    /// Variational endpoints: seed of the sampling noise, the same at every point.
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub eval_seed: u64,
    /// Curve ensembles (plain networks): for each size K, the ensemble (mean softmax) of K
    /// points evenly spaced along every path, in t and in arc length (K = 2: the endpoints);
    /// test loss and error in ensemble.csv and ensemble.png/svg.
    #[arg(long, value_name = "K,K")]
    pub curve_ensemble: Option<String>,
    /// Also measure the sharpness along every path (plain networks): at --hessian-points evenly
    /// spaced points, the top eigenvalue and the trace of the loss Hessian on a fixed subset of
    /// the training set (the flags of `modeconn hessian`); writes hessian.csv and
    /// hessian.png/svg.
    #[arg(long)]
    pub hessian: bool,
    /// Points per path for --hessian (endpoints included).
    #[arg(long, default_value_t = 11, value_name = "N")]
    pub hessian_points: usize,
    /// The Hessian flags (with --hessian).
    #[command(flatten)]
    pub sharpness: SharpnessArgs,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `[NAME=]FILE` values of a repeatable flag: unnamed ones are called `prefix`, `prefix2`, …
/// (by position); names must be non-empty, without commas, not one of `reserved`, and unique
/// among these and `taken`.
fn named_files(
    flag: &str,
    values: &[String],
    prefix: &str,
    reserved: &[&str],
    taken: &[(String, PathBuf)],
) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for (i, c) in values.iter().enumerate() {
        let (name, file) = match c.split_once('=') {
            Some((n, f)) => (n.to_string(), f),
            None if i == 0 => (prefix.to_string(), c.as_str()),
            None => (format!("{prefix}{}", i + 1), c.as_str()),
        };
        if reserved.contains(&name.as_str()) || name.is_empty() || name.contains(',') {
            let names = reserved
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>();
            return Err(Error::Config(format!(
                "{flag} `{c}`: the name must be non-empty, not {}, without commas",
                names.join(" or ")
            )));
        }
        if out.iter().chain(taken).any(|(n, _)| *n == name) {
            return Err(Error::Config(format!("{flag} name `{name}` used twice")));
        }
        out.push((name, PathBuf::from(file)));
    }
    Ok(out)
}

impl PathArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<PathOptions> {
        let curves = named_files(
            "--curve",
            &self.curve,
            "curve",
            &["line", "line-repair"],
            &[],
        )?;
        Ok(PathOptions {
            a: self.a.clone(),
            b: self.b.clone(),
            curves,
            points: self.points,
            train_subset: self.train_subset,
            bn_sample: self.bn.resolve(),
            bn_reset: !self.no_bn_reset,
            repair: self.repair,
            sampling: crate::variational::path::PathSampling {
                ensembles: crate::variational::eval::parse_ensembles(&self.ensemble, "--ensemble")?,
                seed: self.eval_seed,
            },
            curve_ensembles: match &self.curve_ensemble {
                Some(k) => crate::variational::eval::parse_ensembles(k, "--curve-ensemble")?,
                None => Vec::new(),
            },
            hessian: match self.hessian {
                true => Some(crate::commands::path::HessianPlan {
                    sharpness: self.sharpness.resolve()?,
                    points: self.hessian_points,
                    samples: self.sharpness.samples,
                    subset_seed: self.sharpness.subset_seed,
                }),
                false => None,
            },
            data: self.data.resolve()?,
            out: self.out.clone(),
        })
    }
}

/// `modeconn permute`.
#[derive(Debug, Args)]
pub struct PermuteArgs {
    /// The saved network (model.safetensors) or variational model (variational.safetensors).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Seed of the random permutation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl PermuteArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<PermuteOptions> {
        Ok(PermuteOptions {
            model: self.model.clone(),
            seed: self.seed,
            out: self.out.clone(),
        })
    }
}

/// `modeconn prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The variational model (vtrain's variational.safetensors) of method sparse-vd, ard or
    /// group-ard.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Data (the pruned network's test metrics are recorded).
    #[command(flatten)]
    pub data: DataArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl PruneArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::prune::PruneOptions> {
        Ok(crate::commands::prune::PruneOptions {
            model: self.model.clone(),
            data: self.data.resolve()?,
            out: self.out.clone(),
        })
    }
}

/// Formats `import --from` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ForeignFormat {
    /// A PyTorch state dict.
    Torch,
}

/// `modeconn import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The state dict: `.safetensors`, else a `torch.save` file (.pt, .pth).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// What saved it.
    #[arg(long, value_name = "FORMAT", default_value = "torch")]
    pub from: ForeignFormat,
    /// The architecture it holds (as for train, e.g. mlp:784-300-100-10, lenet5,
    /// mlp:784-128-10:norm=bn).
    #[arg(long, value_name = "ARCH")]
    pub arch: String,
    /// Rename tensors before matching: a regular expression and its replacement (`$1` for a
    /// group), e.g. `--rename '^net\.=' --rename '^classifier\.=fc3.'`; repeatable, in order.
    #[arg(long, value_name = "REGEX=REPL")]
    pub rename: Vec<String>,
    /// Take the state dict from under this key of a torch.save checkpoint (e.g. state_dict).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl ImportArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::import::ImportOptions> {
        let ForeignFormat::Torch = self.from;
        Ok(crate::commands::import::ImportOptions {
            file: self.file.clone(),
            arch: self
                .arch
                .parse()
                .map_err(|e: Error| Error::Config(format!("--arch: {e}")))?,
            renames: self
                .rename
                .iter()
                .map(|r| crate::torch_io::parse_rename(r))
                .collect::<Result<_>>()?,
            key: self.key.clone(),
            out: self.out.clone(),
        })
    }
}

/// `modeconn export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The network file (train's model.safetensors, or an imported, aligned or permuted one).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// What to write.
    #[arg(long, value_name = "FORMAT", default_value = "torch")]
    pub to: ForeignFormat,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl ExportArgs {
    /// Validated options.
    pub fn resolve(&self) -> crate::commands::export::ExportOptions {
        let ForeignFormat::Torch = self.to;
        crate::commands::export::ExportOptions {
            model: self.model.clone(),
            out: self.out.clone(),
        }
    }
}

/// `modeconn report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run directory: `modeconn run`'s output (with analysis.json) or one command's --out.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The page (FILE.html) or a directory for report.html [default: DIR/report.html].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Also write every figure as PDF beside its SVG (vector, fonts embedded).
    #[arg(long)]
    pub pdf: bool,
}

/// `modeconn align`.
#[derive(Debug, Args)]
pub struct AlignArgs {
    /// Network B, the one whose hidden units are permuted (model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Network A, the reference (same architecture).
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// weights (Git Re-Basin weight matching) or activations (matching of hidden activations on
    /// the training data given by --data).
    #[arg(long, value_enum, default_value_t = AlignMethod::Weights, value_name = "METHOD")]
    pub method: AlignMethod,
    /// Activation matching: cross (E[z_A z_B^T]) or pearson (correlation coefficient).
    #[arg(long, value_enum, default_value_t = Correlation::Cross, value_name = "KIND")]
    pub correlation: Correlation,
    /// Activation matching: use only the first N training samples [default: all].
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Weight matching: seed of the order in which each sweep visits the permutations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weight matching: at most this many sweeps (stops earlier once a sweep improves the
    /// objective by at most 1e-12).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_sweeps: usize,
    /// Data (activation matching only).
    #[command(flatten)]
    pub data: DataArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl AlignArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<AlignOptions> {
        Ok(AlignOptions {
            model: self.model.clone(),
            to: self.to.clone(),
            method: self.method,
            matching: crate::permute::MatchOptions {
                seed: self.seed,
                max_sweeps: self.max_sweeps,
                ..Default::default()
            },
            data: self.data.resolve()?,
            correlation: self.correlation,
            samples: self.samples,
            out: self.out.clone(),
        })
    }
}

/// `modeconn probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// w1 (model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub a: PathBuf,
    /// w2 (model.safetensors), same architecture.
    #[arg(long, value_name = "FILE")]
    pub b: PathBuf,
    /// How w2 is aligned to w1: weights or activations.
    #[arg(long, value_enum, default_value_t = AlignMethod::Weights, value_name = "METHOD")]
    pub align: AlignMethod,
    /// Seed of the random permutations π (w1 gets SEED, w2 gets SEED+1).
    #[arg(long, default_value_t = 0)]
    pub perm_seed: u64,
    /// Path grid size.
    #[arg(long, default_value_t = 25)]
    pub points: usize,
    /// Evaluate train metrics on the first N training samples only.
    #[arg(long, value_name = "N")]
    pub train_subset: Option<usize>,
    /// The statistics pass at every evaluated point.
    #[command(flatten)]
    pub bn: StateSampleArgs,
    /// Networks without normalisation: also evaluate each line with REPAIR (`path --repair`).
    #[arg(long)]
    pub repair: bool,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Curve training loop (as `connect`).
    #[command(flatten)]
    pub train: LoopArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

impl ProbeArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::probe::ProbeOptions> {
        // The loop's defaults follow the endpoints' kind, as in `connect`.
        let defaults = match crate::network_file::holds_variational(&self.a)? {
            true => LoopDefaults::VARIATIONAL,
            false => LoopDefaults::CURVE,
        };
        Ok(crate::commands::probe::ProbeOptions {
            a: self.a.clone(),
            b: self.b.clone(),
            align: self.align,
            perm_seed: self.perm_seed,
            loop_cfg: self.train.resolve(&defaults)?,
            wd: self.train.wd(&defaults),
            points: self.points,
            train_subset: self.train_subset,
            bn_sample: self.bn.resolve(),
            repair: self.repair,
            data: self.data.resolve()?,
            out: self.out.clone(),
            quiet: self.quiet,
        })
    }
}

/// `modeconn dimension`.
#[derive(Debug, Args)]
pub struct DimensionArgs {
    /// A plain MLP, mlp:W0-W1-…-K (no normalisation) [default: mlp:64-128-10 on digits,
    /// mlp:D-300-100-10 otherwise].
    #[arg(long, value_name = "SPEC", conflicts_with = "model")]
    pub arch: Option<String>,
    /// Start the fit from this network (model.safetensors of a plain MLP) instead of a seeded
    /// initialisation; its architecture is used.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Number of training points N (drawn at random with --points-seed). The Jacobian is
    /// N·K × D in f64: memory ≈ 8·(2·N·K·D + (N·K)²) bytes (N = 200, K = 10 on mlp:64-128-10,
    /// D = 9610: 0.3 GiB).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub points: usize,
    /// Seed of the choice of the N points (keep it to compare minima on the same points).
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub points_seed: u64,
    /// Seed of the initial weights (PyTorch's default initialisation).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Full-batch Adam steps on the squared error before the Levenberg–Marquardt polish.
    #[arg(long, default_value_t = 20000, value_name = "STEPS")]
    pub adam_steps: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// The residual norm ‖r‖₂ a fit must reach; above it nothing is written.
    #[arg(long, default_value_t = 1e-6)]
    pub tol: f64,
    /// At most this many accepted Levenberg–Marquardt steps.
    #[arg(long, default_value_t = 100, value_name = "STEPS")]
    pub max_lm: usize,
    /// Memory limit: above it for the dense Jacobian (see --points), the matrix-free path
    /// (Lanczos on JJᵀ and conjugate-gradient steps from products J·v and Jᵀu; memory
    /// ≈ 8·(2·(N·K)² + 8·(N·K + D)) bytes) is taken; above it for that too, the run is refused.
    #[arg(long, default_value_t = 4.0, value_name = "GIB")]
    pub max_memory: f64,
    /// Take the matrix-free path whatever the memory (it resolves singular values down to
    /// σ₁·√(ε·N·K) instead of the dense SVD's σ₁·ε·max(N·K, D)).
    #[arg(long)]
    pub matrix_free: bool,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl DimensionArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::dimension::DimensionOptions> {
        if !(self.max_memory > 0.0 && self.max_memory.is_finite()) {
            return Err(Error::Config(
                "--max-memory must be a positive number of GiB".into(),
            ));
        }
        Ok(crate::commands::dimension::DimensionOptions {
            arch: self
                .arch
                .as_deref()
                .map(|a| a.parse::<Arch>())
                .transpose()?,
            model: self.model.clone(),
            data: self.data.resolve()?,
            points: self.points,
            points_seed: self.points_seed,
            seed: self.seed,
            adam_steps: self.adam_steps,
            lr: self.lr,
            tol: self.tol,
            max_lm: self.max_lm,
            max_memory: (self.max_memory * (1u64 << 30) as f64) as u64,
            matrix_free: self.matrix_free,
            quiet: self.quiet,
            out: self.out.clone(),
        })
    }
}

/// `modeconn project`.
#[derive(Debug, Args)]
pub struct ProjectArgs {
    /// w1: an interpolating minimum (model.safetensors of a plain MLP), t = 0 of every path.
    #[arg(long, value_name = "FILE")]
    pub a: PathBuf,
    /// w2: the other end of the line `line`.
    #[arg(long, value_name = "FILE")]
    pub b: PathBuf,
    /// Another line from w1 to this network (e.g. w2 weight-matched to w1 by `modeconn
    /// align`); repeat for several, optionally named as NAME=FILE [default names: to, to2, ...].
    #[arg(long = "line", value_name = "[NAME=]FILE")]
    pub lines: Vec<String>,
    /// A fitted curve (curve.safetensors, e.g. `connect --loss mse`); repeat for several,
    /// optionally named as NAME=FILE [default names: curve, curve2, ...].
    #[arg(long, value_name = "[NAME=]FILE")]
    pub curve: Vec<String>,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Number of training points N: the same as the minima were fitted on.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub points: usize,
    /// Seed of the choice of the N points (dimension's --points-seed, train's --seed).
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub points_seed: u64,
    /// Values of t per path, evenly spaced in [0, 1]. Each costs a projection and a singular
    /// value decomposition of the N·K × D Jacobian.
    #[arg(long, default_value_t = 21, value_name = "N")]
    pub t_points: usize,
    /// The residual norm ‖r‖₂ a projection aims at.
    #[arg(long, default_value_t = 1e-6)]
    pub tol: f64,
    /// At most this many accepted Gauss–Newton steps per point.
    #[arg(long, default_value_t = 50, value_name = "STEPS")]
    pub max_steps: usize,
    /// Refuse a Jacobian whose memory estimate exceeds this many GiB (see dimension --points).
    #[arg(long, default_value_t = 4.0, value_name = "GIB")]
    pub max_memory: f64,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl ProjectArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::project::ProjectOptions> {
        if !(self.max_memory > 0.0 && self.max_memory.is_finite()) {
            return Err(Error::Config(
                "--max-memory must be a positive number of GiB".into(),
            ));
        }
        let lines = named_files("--line", &self.lines, "to", &["line"], &[])?;
        let curves = named_files("--curve", &self.curve, "curve", &["line"], &lines)?;
        Ok(crate::commands::project::ProjectOptions {
            a: self.a.clone(),
            b: self.b.clone(),
            lines,
            curves,
            data: self.data.resolve()?,
            points: self.points,
            points_seed: self.points_seed,
            t_points: self.t_points,
            tol: self.tol,
            max_steps: self.max_steps,
            max_memory: (self.max_memory * (1u64 << 30) as f64) as u64,
            quiet: self.quiet,
            out: self.out.clone(),
        })
    }
}

/// `modeconn intrinsic-dim`.
#[derive(Debug, Args)]
pub struct IntrinsicArgs {
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Architecture, without normalisation state (mlp:…, lenet5, vgg11:norm=none)
    /// [default: mlp:64-128-10 on digits, mlp:D-300-100-10 otherwise].
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<String>,
    /// Subspace dimensions d to sweep, comma-separated.
    #[arg(long, value_name = "D,D", default_value = "10,20,50,100,200,500")]
    pub dims: String,
    /// Runs per d, with seeds --seed, --seed + 1, … (initialisation θ₀, projection and data
    /// order).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// dense (Gaussian columns, normalised; memory 4·D·d bytes) or sparse (⌈√D⌉ entries
    /// ±1/√nnz per column, Li, Hastie & Church 2006).
    #[arg(long, value_enum, default_value_t = ProjectionKind::Dense)]
    pub projection: ProjectionKind,
    /// Train on N training samples drawn with --seed [default: all].
    #[arg(long, value_name = "N")]
    pub train_subset: Option<usize>,
    /// The full network's test accuracy, when already known (skips training the baseline).
    #[arg(long, value_name = "ACC")]
    pub baseline_acc: Option<f64>,
    /// The data term: cross-entropy, or mse (the squared error to one-hot targets: with
    /// --train-subset N and --wd 0, the interpolating setting of `dimension`, where the mean
    /// train residual falls to 0 once d reaches N·K).
    #[arg(long, value_enum, default_value_t = Loss::CrossEntropy, value_name = "LOSS")]
    pub loss: Loss,
    /// Refuse a projection holding more than this many GiB.
    #[arg(long, default_value_t = 4.0, value_name = "GIB")]
    pub max_memory: f64,
    /// Loop (for the subspaces and the baseline alike).
    #[command(flatten)]
    pub train: LoopArgs,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl IntrinsicArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::intrinsic::IntrinsicOptions> {
        if !(self.max_memory > 0.0 && self.max_memory.is_finite()) {
            return Err(Error::Config(
                "--max-memory must be a positive number of GiB".into(),
            ));
        }
        let dims = self
            .dims
            .split(',')
            .map(|d| {
                d.trim().parse::<usize>().map_err(|_| {
                    Error::Config(format!(
                        "--dims `{}`: `{d}` is not a whole number",
                        self.dims
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::commands::intrinsic::IntrinsicOptions {
            data: self.data.resolve()?,
            arch: self
                .arch
                .as_deref()
                .map(|a| a.parse::<Arch>())
                .transpose()?,
            dims,
            runs: self.runs,
            projection: self.projection,
            loop_cfg: self.train.resolve(&LoopDefaults::INTRINSIC)?,
            train_subset: self.train_subset,
            baseline_acc: self.baseline_acc,
            loss: self.loss,
            max_memory: (self.max_memory * (1u64 << 30) as f64) as u64,
            quiet: self.quiet,
            out: self.out.clone(),
        })
    }
}

/// `modeconn simplex`.
#[derive(Debug, Args)]
pub struct SimplexArgs {
    /// The fixed modes: two or more trained networks of one architecture (model.safetensors).
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    pub modes: Vec<PathBuf>,
    /// Connecting vertices to add, one at a time.
    #[arg(long, default_value_t = 2)]
    pub connectors: usize,
    /// Dirichlet points sampled per training step; their losses are averaged.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// λ of the volume term −λ·log ΣV, divided by |log V| of a complex of random
    /// initialisations of the same size (0: no volume term).
    #[arg(long, default_value_t = 0.05, value_name = "LAMBDA")]
    pub volume_weight: f64,
    /// Points of the complex evaluated after each connector (seeded).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub eval_samples: usize,
    /// Steps per edge of the barycentric grid over the 2-simplex figure.
    #[arg(long, default_value_t = 20, value_name = "R")]
    pub resolution: usize,
    /// Train on N training samples drawn with --seed [default: all].
    #[arg(long, value_name = "N")]
    pub train_subset: Option<usize>,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// The loop of each connector [default: SGD 0.05, momentum 0.9, wd 5e-4 on the connector,
    /// cosine, 20 epochs of 128].
    #[command(flatten)]
    pub train: LoopArgs,
    /// Run control (--stop-after applies to the connector being trained).
    #[command(flatten)]
    pub ctl: ControlArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl SimplexArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::simplex::SimplexOptions> {
        Ok(crate::commands::simplex::SimplexOptions {
            modes: self.modes.clone(),
            connectors: self.connectors,
            samples: self.samples,
            volume_weight: self.volume_weight,
            eval_samples: self.eval_samples,
            resolution: self.resolution,
            train_subset: self.train_subset,
            data: self.data.resolve()?,
            loop_cfg: self.train.resolve(&LoopDefaults::SIMPLEX)?,
            out: self.out.clone(),
            ctl: self.ctl.resolve(),
        })
    }
}

/// The Hessian flags shared by `hessian` and `path --hessian`.
#[derive(Debug, Clone, Args)]
pub struct SharpnessArgs {
    /// Top eigenvalues to find (power iteration with Gram–Schmidt deflation; the largest in
    /// magnitude, negative at a saddle).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub top: usize,
    /// Power iterations per eigenvalue at most.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_iter: usize,
    /// Relative tolerance of the power iteration: stop when |λ − λ_prev| < tol·(|λ_prev| + 1e-6).
    #[arg(long = "eig-tol", default_value_t = 1e-3, value_name = "TOL")]
    pub tol: f64,
    /// Rademacher vectors of Hutchinson's trace estimate (0: no trace).
    #[arg(long, default_value_t = 50, value_name = "M")]
    pub trace_samples: usize,
    /// The evaluation subset: this many training samples, drawn with --subset-seed (the same
    /// at every point). Hessian-vector products are central differences of its gradients.
    #[arg(long = "hessian-samples", default_value_t = 1000, value_name = "N")]
    pub samples: usize,
    /// Seed of the evaluation subset.
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub subset_seed: u64,
    /// Seed of the power iterations' start vectors and the Rademacher vectors.
    #[arg(long = "hessian-seed", default_value_t = 0, value_name = "SEED")]
    pub seed: u64,
}

impl SharpnessArgs {
    /// The validated settings.
    pub fn resolve(&self) -> Result<crate::eval::hessian::SharpnessConfig> {
        let c = crate::eval::hessian::SharpnessConfig {
            top: self.top,
            max_iter: self.max_iter,
            tol: self.tol,
            trace_samples: self.trace_samples,
            seed: self.seed,
        };
        c.validate()?;
        Ok(c)
    }
}

/// `modeconn hessian`.
#[derive(Debug, Args)]
pub struct HessianArgs {
    /// The network (model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// What to measure.
    #[command(flatten)]
    pub sharpness: SharpnessArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl HessianArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::hessian::HessianOptions> {
        Ok(crate::commands::hessian::HessianOptions {
            model: self.model.clone(),
            data: self.data.resolve()?,
            samples: self.sharpness.samples,
            subset_seed: self.sharpness.subset_seed,
            sharpness: self.sharpness.resolve()?,
            out: self.out.clone(),
        })
    }
}

/// `modeconn landscape`.
#[derive(Debug, Args)]
pub struct LandscapeArgs {
    /// The network (model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Number of random directions: 1 (a line plot) or 2 (a contour plot).
    #[arg(long, default_value_t = 2, value_name = "1|2")]
    pub dims: usize,
    /// Grid points per axis.
    #[arg(long, default_value_t = 51, value_name = "N")]
    pub points: usize,
    /// The range of every axis, LOW:HIGH, in units of the filter-normalised direction.
    #[arg(
        long,
        default_value = "-1:1",
        value_name = "LOW:HIGH",
        allow_hyphen_values = true
    )]
    pub range: String,
    /// Keep biases and normalisation parameters in the directions (as the weights themselves);
    /// by default they are zero (Li et al.'s `ignore=biasbn`).
    #[arg(long)]
    pub include_biasbn: bool,
    /// Train metrics on the first N training samples [default: all].
    #[arg(long, value_name = "N")]
    pub train_subset: Option<usize>,
    /// Seed of the directions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl LandscapeArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::landscape::LandscapeOptions> {
        let bad = || {
            Error::Config(format!(
                "--range `{}`: expected LOW:HIGH, e.g. -1:1",
                self.range
            ))
        };
        let (lo, hi) = self.range.split_once(':').ok_or_else(bad)?;
        let range = (
            lo.trim().parse::<f64>().map_err(|_| bad())?,
            hi.trim().parse::<f64>().map_err(|_| bad())?,
        );
        Ok(crate::commands::landscape::LandscapeOptions {
            model: self.model.clone(),
            dims: self.dims,
            points: self.points,
            range,
            include_biasbn: self.include_biasbn,
            train_subset: self.train_subset,
            seed: self.seed,
            data: self.data.resolve()?,
            out: self.out.clone(),
        })
    }
}

/// `modeconn fge`.
#[derive(Debug, Args)]
pub struct FgeArgs {
    /// A training checkpoint with its SGD state (checkpoint.safetensors of `train`; Garipov et
    /// al. start from 80% of the training run, e.g. `train --stop-after`).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs of FGE.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Cycle length in epochs (even): a snapshot after epochs with (epoch mod c) + 1 = c/2.
    #[arg(long, default_value_t = 4, value_name = "C")]
    pub cycle: usize,
    /// α₁: the rate at the start and end of every cycle.
    #[arg(long, default_value_t = 0.05, value_name = "LR")]
    pub lr1: f64,
    /// α₂: the rate at the middle of every cycle (the snapshots).
    #[arg(long, default_value_t = 1e-4, value_name = "LR")]
    pub lr2: f64,
    /// Accept --lr2 above --lr1.
    #[arg(long = "lr2-above-lr1")]
    pub rising: bool,
    /// SGD momentum (the checkpoint's buffers continue).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub wd: f64,
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Seed of the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No per-epoch lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl FgeArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::fge::FgeOptions> {
        Ok(crate::commands::fge::FgeOptions {
            checkpoint: self.checkpoint.clone(),
            data: self.data.resolve()?,
            epochs: self.epochs,
            cycle: self.cycle,
            lr1: self.lr1,
            lr2: self.lr2,
            rising: self.rising,
            momentum: self.momentum,
            wd: self.wd,
            batch_size: self.batch_size,
            seed: self.seed,
            quiet: self.quiet,
            out: self.out.clone(),
        })
    }
}

/// `modeconn instability`.
#[derive(Debug, Args)]
pub struct InstabilityArgs {
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Architecture [default: mlp:64-128-10 on digits, mlp:D-300-100-10 otherwise].
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<String>,
    /// Spawn steps k, comma-separated (steps counted from 0 over the whole run; 0 spawns from
    /// the initialisation).
    #[arg(long = "k", value_name = "K,K", default_value = "0")]
    pub ks: String,
    /// The two data seeds of the copies, A,B (the trunk W₀ → W_k uses A).
    #[arg(long, value_name = "A,B", default_value = "1,2")]
    pub data_seeds: String,
    /// Evenly spaced α on the line between the copies.
    #[arg(long, default_value_t = 30)]
    pub points: usize,
    /// The loop (its --seed initialises W₀) [default: as `train`].
    #[command(flatten)]
    pub train: LoopArgs,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl InstabilityArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::instability::InstabilityOptions> {
        if self.train.data_seed.is_some() {
            return Err(Error::Config(
                "--data-seed: the copies' data orders are --data-seeds A,B".into(),
            ));
        }
        let list = |flag: &str, v: &str| -> Result<Vec<u64>> {
            v.split(',')
                .map(|x| {
                    x.trim().parse::<u64>().map_err(|_| {
                        Error::Config(format!("{flag} `{v}`: `{x}` is not a whole number"))
                    })
                })
                .collect()
        };
        let seeds = list("--data-seeds", &self.data_seeds)?;
        let [a, b] = seeds[..] else {
            return Err(Error::Config(format!(
                "--data-seeds `{}`: two seeds A,B",
                self.data_seeds
            )));
        };
        Ok(crate::commands::instability::InstabilityOptions {
            arch: self
                .arch
                .as_deref()
                .map(|a| a.parse::<Arch>())
                .transpose()?,
            data: self.data.resolve()?,
            loop_cfg: self.train.resolve(&LoopDefaults::TRAIN)?,
            ks: list("--k", &self.ks)?
                .into_iter()
                .map(|k| k as usize)
                .collect(),
            data_seeds: [a, b],
            points: self.points,
            quiet: self.quiet,
            out: self.out.clone(),
        })
    }
}

/// `modeconn plane`.
#[derive(Debug, Args)]
pub struct PlaneArgs {
    /// w1 (model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub a: PathBuf,
    /// w2 (model.safetensors).
    #[arg(long, value_name = "FILE")]
    pub b: PathBuf,
    /// The fitted curve (curve.safetensors); its middle control point is the bend.
    #[arg(long, value_name = "FILE")]
    pub curve: PathBuf,
    /// Grid points per axis.
    #[arg(long, default_value_t = 21)]
    pub grid: usize,
    /// Margin around the triangle, in units of the lengths.
    #[arg(long, default_value_t = 0.2)]
    pub margin: f64,
    /// Evaluate train loss on the first N training samples only.
    #[arg(long, value_name = "N")]
    pub train_subset: Option<usize>,
    /// The statistics pass at every evaluated point.
    #[command(flatten)]
    pub bn: StateSampleArgs,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl PlaneArgs {
    /// Validated options.
    pub fn resolve(&self) -> Result<crate::commands::plane::PlaneOptions> {
        Ok(crate::commands::plane::PlaneOptions {
            a: self.a.clone(),
            b: self.b.clone(),
            curve: self.curve.clone(),
            grid: self.grid,
            margin: self.margin,
            train_subset: self.train_subset,
            bn_sample: self.bn.resolve(),
            data: self.data.resolve()?,
            out: self.out.clone(),
        })
    }
}

/// `modeconn plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A result directory or file (path.csv, plane.json, metrics.jsonl of vtrain, spectrum.csv of
    /// dimension), or `kl`.
    /// Several path results (`path` output directories or path.csv files) are drawn on the
    /// same axes; `LABEL=DIR` draws that result's straight line under LABEL.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
    /// Output directory for the figures [default: next to the input].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Size of every figure in pixels, WIDTHxHEIGHT (PNG pixels, SVG units) [default: per
    /// figure].
    #[arg(long, value_name = "WxH")]
    pub size: Option<String>,
}

/// Runs one analysis step: parses its command line and executes it (the runner's executor).
fn run_step(argv: Vec<String>) -> Result<serde_json::Value> {
    let cli = Cli::try_parse_from(&argv).map_err(|e| {
        Error::Config(
            e.to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_string(),
        )
    })?;
    // A step runs on the device of the run; naming another one is refused.
    if let Some(d) = cli.device {
        crate::backend::choose_device(d.choice())?;
    }
    Ok(execute(cli.command, argv)?.0)
}

/// A command's result with its one-screen table.
fn tabled(
    v: serde_json::Value,
    table: fn(&serde_json::Value) -> String,
) -> (serde_json::Value, String) {
    let t = table(&v);
    (v, t)
}

/// Runs a parsed command; returns its result as JSON and the text to print on stdout.
pub fn execute(command: Command, argv: Vec<String>) -> Result<(serde_json::Value, String)> {
    use crate::commands;
    let pretty = |v: &serde_json::Value| {
        serde_json::to_string_pretty(v).expect("serialisable result") + "\n"
    };
    let v = match command {
        Command::Train(a) => commands::train::run(&a.resolve()?, argv)?,
        Command::Eval(a) => commands::eval::run(&a.resolve()?)?,
        Command::Connect(a) => commands::connect::run(&a.resolve()?, argv)?,
        Command::Path(a) => {
            return Ok(tabled(
                commands::path::run(&a.resolve()?, argv)?,
                commands::path::summary_table,
            ));
        }
        Command::Probe(a) => {
            return Ok(tabled(
                commands::probe::run(&a.resolve()?, argv)?,
                commands::probe::table,
            ));
        }
        Command::Plane(a) => commands::plane::run(&a.resolve()?, argv)?,
        Command::Project(a) => {
            return Ok(tabled(
                commands::project::run(&a.resolve()?, argv)?,
                commands::project::table,
            ));
        }
        Command::IntrinsicDim(a) => {
            return Ok(tabled(
                commands::intrinsic::run(&a.resolve()?, argv)?,
                commands::intrinsic::table,
            ));
        }
        Command::Simplex(a) => {
            return Ok(tabled(
                commands::simplex::run(&a.resolve()?, argv)?,
                commands::simplex::table,
            ));
        }
        Command::Hessian(a) => {
            return Ok(tabled(
                commands::hessian::run(&a.resolve()?, argv)?,
                commands::hessian::table,
            ));
        }
        Command::Landscape(a) => commands::landscape::run(&a.resolve()?, argv)?,
        Command::Fge(a) => commands::fge::run(&a.resolve()?, argv)?,
        Command::Instability(a) => commands::instability::run(&a.resolve()?, argv)?,
        Command::Dimension(a) => {
            return Ok(tabled(
                commands::dimension::run(&a.resolve()?, argv)?,
                commands::dimension::table,
            ));
        }
        Command::Plot(a) => {
            let inputs = a
                .inputs
                .iter()
                .map(|s| match s.split_once('=') {
                    Some((label, p)) if !Path::new(s).exists() && !label.is_empty() => {
                        (Some(label.to_string()), PathBuf::from(p))
                    }
                    _ => (None, PathBuf::from(s)),
                })
                .collect();
            let opts = commands::plot::PlotOptions {
                size: a
                    .size
                    .as_deref()
                    .map(|s| commands::plot::parse_size(s, "--size"))
                    .transpose()?,
                inputs,
                out: a.out,
            };
            let v = commands::plot::run(&opts)?;
            let t: String = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("{}\n", f.as_str().unwrap_or_default()))
                .collect();
            return Ok((v, t));
        }
        Command::Vtrain(a) => commands::vtrain::run(&a.resolve()?, argv)?,
        Command::Permute(a) => commands::permute::run(&a.resolve()?, argv)?,
        Command::Prune(a) => commands::prune::run(&a.resolve()?, argv)?,
        Command::Import(a) => {
            let v = commands::import::run(&a.resolve()?, argv)?;
            return Ok(tabled(v, commands::import::table));
        }
        Command::Export(a) => commands::export::run(&a.resolve(), argv)?,
        Command::Report(a) => {
            let v = commands::report::run(&commands::report::ReportOptions {
                dir: a.dir,
                out: a.out,
                pdf: a.pdf,
            })?;
            let t = format!("{}\n", v["report"].as_str().unwrap_or_default());
            return Ok((v, t));
        }
        Command::Align(a) => commands::align::run(&a.resolve()?, argv)?,
        Command::Run(a) => return run_spec(a),
        Command::Completions(a) => return Ok((serde_json::Value::Null, completions(a.shell))),
        Command::Man(a) => {
            let files = man_pages(&a.out)?;
            let t = files.iter().map(|f| format!("{}\n", f.display())).collect();
            return Ok((serde_json::json!(files), t));
        }
        Command::Demo(a) => {
            let opts = RunOptions {
                spec: PathBuf::from("analyses/demo.toml"),
                out: a.out.clone(),
                profile: a.quick.then(|| "quick".to_string()),
                set: Vec::new(),
                quiet: false,
                rerun: a.rerun,
            };
            runner::run(&demo::analysis(), &opts, &mut run_step)?;
            let v = demo::summarise(&a.out, a.quick)?;
            let t = demo::table(&v);
            return Ok((v, t));
        }
    };
    let t = pretty(&v);
    Ok((v, t))
}

/// `modeconn demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output directory (results, figures and summary.json).
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    pub out: PathBuf,
    /// A reduced version (fewer epochs, coarser grids) for tests: the spec's `quick` profile.
    #[arg(long)]
    pub quick: bool,
    /// Run every step afresh (by default steps already done with the same command line are
    /// reused, as by `modeconn run`).
    #[arg(long)]
    pub rerun: bool,
}

/// `modeconn run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The analysis spec (TOML).
    pub spec: PathBuf,
    /// Output directory [default: runs/NAME, NAME the spec file name without .toml].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run every step afresh. Steps are cached by their resolved command line and the crate
    /// version, not by the code: use this after changing the code or a default.
    #[arg(long)]
    pub rerun: bool,
    /// Use the variable values of this profile of the spec (`[profile.NAME]`).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Set a variable of the spec (`[vars]`), e.g. `--set epochs=5`; repeatable.
    #[arg(long, value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// No per-step lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Run up to N independent steps at once, each a child process with its share of the
    /// cores (see --threads).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    /// Threads of each step with --jobs and in exports [default: the cores divided by --jobs;
    /// the cores are RAYON_NUM_THREADS, else SLURM_CPUS_PER_TASK, else the machine's].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Run only this step (what a cluster engine calls): the steps it reads must have
    /// finished; on success it writes OUT/ID/step.json, on failure nothing, and exits 1.
    #[arg(long, value_name = "ID", conflicts_with_all = ["jobs", "export", "list"])]
    pub step: Option<String>,
    /// Write a Snakefile (OUT/Snakefile) or a SLURM submission script (OUT/submit-slurm.sh)
    /// whose jobs call `modeconn run SPEC --step ID`, instead of running.
    #[arg(long, value_name = "ENGINE")]
    pub export: Option<ExportEngine>,
    /// Print the steps (sweeps expanded) with what each reads, instead of running.
    #[arg(long, conflicts_with = "export")]
    pub list: bool,
}

/// Cluster engines `run --export` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportEngine {
    /// A Snakefile: one rule per step.
    Snakemake,
    /// A bash script of `sbatch` job arrays chained with --dependency=afterok.
    Slurm,
}

/// `modeconn run`: the whole spec, one step, several at once, or an export.
fn run_spec(a: RunArgs) -> Result<(serde_json::Value, String)> {
    use crate::pipeline::export::{self, Invocation};
    use serde_json::json;
    let analysis = Analysis::load(&a.spec)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(a.spec.file_stem().unwrap_or_default()));
    let set = a
        .set
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| Error::Config(format!("--set `{s}`: expected NAME=VALUE")))
        })
        .collect::<Result<Vec<_>>>()?;
    if a.jobs == 0 {
        return Err(Error::Config("--jobs 0: give at least 1".into()));
    }
    if a.threads == Some(0) {
        return Err(Error::Config("--threads 0: give at least 1".into()));
    }
    let threads = a
        .threads
        .unwrap_or_else(|| (crate::backend::threads_available() / a.jobs).max(1));
    let mut flags: Vec<String> = Vec::new();
    if let Some(p) = &a.profile {
        flags.extend(["--profile".into(), p.clone()]);
    }
    for s in &a.set {
        flags.extend(["--set".into(), s.clone()]);
    }
    // Children and cluster jobs run on this run's device.
    let device = crate::backend::chosen_device();
    if device != crate::backend::DeviceChoice::Cpu {
        flags.extend(["--device".into(), device.name().into()]);
    }
    let opts = RunOptions {
        spec: a.spec.clone(),
        out: out.clone(),
        profile: a.profile,
        set,
        quiet: a.quiet,
        rerun: a.rerun,
    };
    let status_table = |v: &serde_json::Value| -> String {
        v["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{:<14} {}\n", s["id"].as_str().unwrap_or(""), s["status"]))
            .collect()
    };
    if a.list {
        let (_, steps) = runner::prepare(&analysis, &opts)?;
        let v: Vec<serde_json::Value> = steps
            .iter()
            .map(|p| json!({"id": p.step.id, "command": p.step.command, "reads": p.step.deps}))
            .collect();
        let t = steps
            .iter()
            .map(|p| {
                format!(
                    "{:<20} {:<14} {}\n",
                    p.step.id,
                    p.step.command,
                    p.step.deps.join(" ")
                )
            })
            .collect();
        return Ok((json!(v), t));
    }
    if let Some(engine) = a.export {
        let abs = |p: &Path| std::path::absolute(p).map_err(|e| Error::io(p, e));
        let inv = Invocation {
            exe: std::env::current_exe().map_err(|e| Error::io(Path::new("modeconn"), e))?,
            spec: abs(&a.spec)?,
            out: abs(&out)?,
            flags,
            threads,
        };
        // Paths inside the export are absolute, as the markers that `--step` writes there.
        let opts = RunOptions {
            out: inv.out.clone(),
            ..opts
        };
        let (_, steps) = runner::prepare(&analysis, &opts)?;
        let (file, text) = match engine {
            ExportEngine::Snakemake => (
                inv.out.join("Snakefile"),
                export::snakefile(&analysis.name, &steps, &inv),
            ),
            ExportEngine::Slurm => (
                inv.out.join("submit-slurm.sh"),
                export::slurm_script(&analysis.name, &steps, &inv),
            ),
        };
        write_atomic(&file, text.as_bytes())?;
        return Ok((
            json!({"written": file, "steps": steps.len()}),
            format!("{}\n", file.display()),
        ));
    }
    if let Some(id) = &a.step {
        let v = runner::run_one(&analysis, &opts, id, &mut run_step)?;
        let t = format!("{:<14} {}\n", id, v["status"]);
        return Ok((v, t));
    }
    if a.jobs == 1 {
        let v = runner::run(&analysis, &opts, &mut run_step)?;
        let t = status_table(&v);
        return Ok((v, t));
    }
    // The children run the spec as given (relative paths stay relative: the cache keys of
    // their steps are those of this run's).
    let inv = Invocation {
        exe: std::env::current_exe().map_err(|e| Error::io(Path::new("modeconn"), e))?,
        spec: opts.spec.clone(),
        out: opts.out.clone(),
        flags,
        threads,
    };
    let launch = |p: &runner::Prepared| -> Result<()> {
        std::fs::create_dir_all(&p.dir).map_err(|e| Error::io(&p.dir, e))?;
        let log = p.dir.join("step.log");
        let file = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
        let words = inv.words(&p.step.id);
        let mut cmd = std::process::Command::new(&words[0]);
        cmd.args(&words[1..])
            .env("RAYON_NUM_THREADS", threads.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(file);
        if opts.rerun {
            cmd.arg("--rerun");
        }
        let status = cmd.status().map_err(|e| Error::io(&inv.exe, e))?;
        if status.success() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err(Error::Config(format!(
            "{} ({}; log {})",
            last.trim_start_matches("error: "),
            status,
            log.display()
        )))
    };
    let v = runner::run_parallel(&analysis, &opts, a.jobs, &launch)?;
    let t = status_table(&v);
    Ok((v, t))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand that does one piece of work can be a step of an analysis spec.
    #[test]
    fn spec_steps_cover_the_working_subcommands() {
        let names: Vec<String> = super::Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|n| !["run", "demo", "completions", "man"].contains(&n.as_str()))
            .collect();
        let mut steps: Vec<String> = crate::pipeline::spec::COMMANDS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut names = names;
        names.sort();
        steps.sort();
        assert_eq!(names, steps);
    }
}
