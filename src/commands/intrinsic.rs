//! `modeconn intrinsic-dim`: the intrinsic dimension of an objective landscape (Li et al.
//! 2018). For every `d` of a sweep and each of `runs` seeds, a network is trained in the random
//! subspace `θ₀ + P·z` ([`crate::train::subspace`]) and evaluated on the test set; the
//! baseline is the same network trained in all D directions with the same loop. `d_int90` is the
//! smallest `d` whose mean test accuracy over the runs reaches 90% of the baseline's (Li et al.'s
//! threshold rule). Writes `intrinsic.csv`, `summary.json`, `run.json`, the figure
//! `intrinsic.{png,svg}`, and per run its directory (`d<d>_r<r>/model.safetensors` with the
//! network `θ₀ + P·z`).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::{default_arch, eval_device, load_data};
use crate::arch::Arch;
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::eval::{EVAL_BATCH, evaluate};
use crate::network_file::save_model;
use crate::params::ParamSet;
use crate::params::io::{FileMeta, write_atomic};
use crate::report::{RunRecord, write_json};
use crate::train::objective::Loss;
use crate::train::subspace::{Projection, ProjectionKind, Subspace, coordinates_layout};
use crate::train::{Classification, LoopConfig, RunControl, fit};

/// Validated options of `modeconn intrinsic-dim`.
#[derive(Debug, Clone)]
pub struct IntrinsicOptions {
    /// Data.
    pub data: DataConfig,
    /// Architecture (a network without normalisation state).
    pub arch: Option<Arch>,
    /// Subspace dimensions d.
    pub dims: Vec<usize>,
    /// Runs per d (seeds `seed`, `seed + 1`, …: initialisation, projection and data order).
    pub runs: usize,
    /// How P is drawn.
    pub projection: ProjectionKind,
    /// The loop (its seed is the first run's).
    pub loop_cfg: LoopConfig,
    /// Train on this many training samples drawn with the seed.
    pub train_subset: Option<usize>,
    /// The baseline's test accuracy, when known (otherwise trained).
    pub baseline_acc: Option<f64>,
    /// The data term (cross-entropy, or the squared error of the interpolating setting).
    pub loss: Loss,
    /// Refuse projections holding more than this many bytes.
    pub max_memory: u64,
    /// No progress lines.
    pub quiet: bool,
    /// Output directory.
    pub out: PathBuf,
}

/// Seed of run `r`'s projection, apart from its initialisation's.
fn projection_seed(seed: u64) -> u64 {
    seed ^ 0x05ee_d0f9_u64
}

/// Runs the sweep; returns the summary (also in `summary.json`).
pub fn run(opts: &IntrinsicOptions, argv: Vec<String>) -> Result<Value> {
    if opts.dims.is_empty() || opts.dims.contains(&0) {
        return Err(Error::Config(
            "--dims must list subspace dimensions ≥ 1, e.g. 10,50,100".into(),
        ));
    }
    if opts.runs == 0 {
        return Err(Error::Config("--runs must be at least 1".into()));
    }
    if opts.train_subset == Some(0) {
        return Err(Error::Config("--train-subset must be at least 1".into()));
    }
    if let Some(a) = opts.baseline_acc
        && !(a > 0.0 && a <= 1.0)
    {
        return Err(Error::Config(format!(
            "--baseline-acc {a}: an accuracy in (0, 1]"
        )));
    }
    opts.loop_cfg.validate()?;
    let mut split = load_data(&opts.data)?;
    if let Some(n) = opts.train_subset {
        split.train = split.train.random_subset(n, opts.loop_cfg.seed);
    }
    let arch = opts.arch.clone().unwrap_or_else(|| default_arch(&split));
    arch.check_data(&split.train)?;
    if arch.layout().has_state() {
        return Err(Error::Config(format!(
            "--arch {arch}: random-subspace training needs a network without normalisation state (norm=none)"
        )));
    }
    let full = arch.layout().numel();
    if let Some(&d) = opts.dims.iter().find(|&&d| d > full) {
        return Err(Error::Config(format!(
            "--dims {d} exceeds the network's D = {full} parameters"
        )));
    }
    let biggest = opts.dims.iter().copied().max().unwrap_or(1);
    let bytes = Projection::bytes(opts.projection, full, biggest);
    if bytes > opts.max_memory {
        let kind = match opts.projection {
            ProjectionKind::Dense => "dense",
            ProjectionKind::Sparse => "sparse",
        };
        return Err(Error::Config(format!(
            "a {kind} projection of D = {full} × d = {biggest} holds {:.1} GiB, above --max-memory {:.1} GiB; use --projection sparse or smaller --dims",
            bytes as f64 / GIB,
            opts.max_memory as f64 / GIB
        )));
    }
    let config = json!({"data": opts.data, "arch": arch.to_string(), "dims": opts.dims,
        "runs": opts.runs, "projection": opts.projection, "train_subset": opts.train_subset,
        "loss": opts.loss,
        "baseline_acc": opts.baseline_acc, "loop": opts.loop_cfg});
    let record = RunRecord::start(argv, config.clone(), Some(opts.loop_cfg.seed));
    let device = eval_device();
    let ctl = RunControl {
        resume: false,
        stop_after: None,
        quiet: true,
        ..Default::default()
    };
    let say = |m: String| {
        if !opts.quiet {
            eprintln!("intrinsic-dim: {m}");
        }
    };

    let baseline = match opts.baseline_acc {
        Some(a) => a,
        None => {
            let dir = opts.out.join("baseline");
            let init = arch.init(opts.loop_cfg.seed, &device);
            let mut obj =
                Classification::new(arch.clone(), &split.test, device.clone()).with_loss(opts.loss);
            let fitted = fit(
                init,
                &split.train,
                &mut obj,
                &opts.loop_cfg,
                &ctl,
                &dir,
                &FileMeta::new("model", &arch.to_string()),
                &format!("{config}/baseline"),
            )?;
            save_model(&dir.join("model.safetensors"), &arch, &fitted.params)?;
            let acc = evaluate(&arch, &fitted.params, &split.test, EVAL_BATCH, &device).acc;
            say(format!("baseline (D = {full}): test accuracy {acc:.4}"));
            acc
        }
    };

    let mut csv = String::from("d,run,seed,test_acc,test_loss,train_acc,train_residual\n");
    let mut means: Vec<(usize, f64, f64, f64)> = Vec::new();
    for &d in &opts.dims {
        let mut accs = Vec::new();
        let mut residuals = Vec::new();
        for r in 0..opts.runs {
            let seed = opts.loop_cfg.seed + r as u64;
            let dir = opts.out.join(format!("d{d}_r{r}"));
            let theta0 = arch.init(seed, &device);
            let proj = Projection::new(opts.projection, full, d, projection_seed(seed))?;
            let inner =
                Classification::new(arch.clone(), &split.test, device.clone()).with_loss(opts.loss);
            let mut obj = Subspace::new(&theta0, proj, inner)?;
            let mut cfg = opts.loop_cfg.clone();
            cfg.seed = seed;
            let z0 = ParamSet::zeros(coordinates_layout(d), &device);
            let fitted = fit(
                z0,
                &split.train,
                &mut obj,
                &cfg,
                &ctl,
                &dir,
                &FileMeta::new("subspace", &arch.to_string()),
                &format!("{config}/d{d}/r{r}"),
            )?;
            let w = obj.network(&fitted.params);
            save_model(&dir.join("model.safetensors"), &arch, &w)?;
            let te = evaluate(&arch, &w, &split.test, EVAL_BATCH, &device);
            let tr = evaluate(&arch, &w, &split.train, EVAL_BATCH, &device);
            say(format!(
                "d = {d}, run {}/{}: test accuracy {:.4}",
                r + 1,
                opts.runs,
                te.acc
            ));
            let residual = train_residual(&arch, &w, &split.train, &device);
            let _ = writeln!(
                csv,
                "{d},{r},{seed},{},{},{},{residual:e}",
                te.acc, te.loss, tr.acc
            );
            residuals.push(residual);
            accs.push(te.acc);
        }
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        let sd = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>()
            / (accs.len().max(2) - 1) as f64)
            .sqrt();
        let residual = residuals.iter().sum::<f64>() / residuals.len() as f64;
        means.push((d, mean, sd, residual));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    write_atomic(&opts.out.join("intrinsic.csv"), csv.as_bytes())?;
    let threshold = 0.9 * baseline;
    let mut sorted = means.clone();
    sorted.sort_by_key(|m| m.0);
    let d_int90 = sorted.iter().find(|m| m.1 >= threshold).map(|m| m.0);
    let summary = json!({
        "arch": arch.to_string(),
        "data": split.train.name,
        "params": full,
        "projection": opts.projection,
        "runs": opts.runs,
        "baseline_acc": baseline,
        "threshold": threshold,
        "rule": "d_int90: the smallest d whose mean test accuracy over the runs is at least 90% of the baseline's",
        "d_int90": d_int90,
        "mean_acc": sorted.iter().map(|m| json!({"d": m.0, "mean": m.1, "sd": m.2, "train_residual": m.3})).collect::<Vec<_>>(),
        "loss": opts.loss,
    });
    write_json(&opts.out.join("summary.json"), &summary)?;
    crate::plot::figures::intrinsic_figure(&opts.out, &opts.out, None)?;
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}

const GIB: f64 = (1u64 << 30) as f64;

/// `‖f(x) − e_y‖₂` over the whole training set: how far the network is from fitting it exactly
/// (with `--loss mse` on a few points, the interpolating setting of `dimension`, it falls to 0
/// once d reaches the codimension N·K of the set of exact fits).
fn train_residual(
    arch: &Arch,
    w: &ParamSet,
    data: &crate::data::Dataset,
    device: &burn::tensor::Device,
) -> f64 {
    let k = data.classes;
    let mut sum = 0.0f64;
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(EVAL_BATCH) {
        let (x, y) = crate::eval::batch_tensors(data, chunk, device);
        let z = crate::params::set::host_vec(&arch.forward(w, x));
        let labels = crate::params::set::host_vec(&y.float());
        for (row, &c) in z.chunks_exact(k).zip(&labels) {
            for (j, &v) in row.iter().enumerate() {
                let t = if j == c as usize { 1.0 } else { 0.0 };
                sum += (f64::from(v) - t).powi(2);
            }
        }
    }
    sum.sqrt()
}

/// A one-screen table of the summary.
pub fn table(v: &Value) -> String {
    let mut t = format!(
        "{} ({} parameters, {} projection): baseline test accuracy {:.4}, 90% threshold {:.4}\n{:>8} {:>10} {:>8}\n",
        v["arch"].as_str().unwrap_or_default(),
        v["params"],
        v["projection"].as_str().unwrap_or_default(),
        v["baseline_acc"].as_f64().unwrap_or(f64::NAN),
        v["threshold"].as_f64().unwrap_or(f64::NAN),
        "d",
        "mean acc",
        "sd"
    );
    for m in v["mean_acc"].as_array().into_iter().flatten() {
        let _ = writeln!(
            t,
            "{:>8} {:>10.4} {:>8.4}",
            m["d"].as_u64().unwrap_or(0),
            m["mean"].as_f64().unwrap_or(f64::NAN),
            m["sd"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let _ = writeln!(
        t,
        "d_int90 = {}",
        match &v["d_int90"] {
            Value::Null => "not reached (raise --dims)".to_string(),
            d => d.to_string(),
        }
    );
    t
}
