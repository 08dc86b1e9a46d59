//! `modeconn landscape`: the loss surface around a trained network along filter-normalised random
//! directions (Li et al. 2018; [`crate::eval::landscape`]): `L(θ + x·d₁)` on a 1-d grid, or
//! `L(θ + x·d₁ + y·d₂)` on a 2-d one, with `x, y` over `--range` (default −1 to 1, 51 points per
//! axis). Every grid point is a member of the linear family `{θ, d₁, d₂}` evaluated on the
//! training subset and the test set (state recomputed at every point for networks with
//! normalisation layers). Writes `landscape.csv`, `landscape.json`, `run.json` and the figures
//! (`landscape.{png,svg}` in 1-d; `landscape_train_loss` and `landscape_test_err` contour plots
//! in 2-d).

use std::fmt::Write as _;
use std::path::PathBuf;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{eval_device, load_data};
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::eval::family::Family;
use crate::eval::landscape::filter_normalised_direction;
use crate::network_file::load_model;
use crate::params::io::write_atomic;
use crate::report::{RunRecord, write_json};

/// Validated options of `modeconn landscape`.
#[derive(Debug, Clone)]
pub struct LandscapeOptions {
    /// The network.
    pub model: PathBuf,
    /// 1 or 2 directions.
    pub dims: usize,
    /// Grid points per axis.
    pub points: usize,
    /// The range of every axis, in units of the filter-normalised direction.
    pub range: (f64, f64),
    /// Keep biases and normalisation parameters in the directions (as the weights themselves).
    pub include_biasbn: bool,
    /// Train metrics on the first N training samples.
    pub train_subset: Option<usize>,
    /// Seed of the directions.
    pub seed: u64,
    /// Data.
    pub data: DataConfig,
    /// Output directory.
    pub out: PathBuf,
}

/// Runs `landscape`; returns the summary (also `landscape.json` without the grid).
pub fn run(opts: &LandscapeOptions, argv: Vec<String>) -> Result<Value> {
    if !(1..=2).contains(&opts.dims) {
        return Err(Error::Config(format!(
            "--dims {}: the landscape has 1 or 2 directions",
            opts.dims
        )));
    }
    if opts.points < 2 {
        return Err(Error::Config("--points must be at least 2".into()));
    }
    let (lo, hi) = opts.range;
    if !(lo < hi && lo.is_finite() && hi.is_finite()) {
        return Err(Error::Config(format!(
            "--range {lo}:{hi}: expected LOW:HIGH with LOW < HIGH"
        )));
    }
    if opts.train_subset == Some(0) {
        return Err(Error::Config("--train-subset must be at least 1".into()));
    }
    let record = RunRecord::start(
        argv,
        json!({"model": opts.model, "dims": opts.dims, "points": opts.points,
               "range": [lo, hi], "include_biasbn": opts.include_biasbn,
               "train_subset": opts.train_subset, "seed": opts.seed, "data": opts.data}),
        Some(opts.seed),
    );
    let device = eval_device();
    let (arch, params) = load_model(&opts.model, &device)?;
    let split = load_data(&opts.data)?;
    arch.check_data(&split.train)?;
    let train = match opts.train_subset {
        Some(n) => split.train.subset(n),
        None => split.train.clone(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let directions: Vec<Vec<f32>> = (0..opts.dims)
        .map(|_| filter_normalised_direction(&params, opts.include_biasbn, &mut rng))
        .collect();
    let mut basis = vec![params.to_flat()];
    basis.extend(directions.iter().cloned());
    let family = Family::new(&arch, arch.layout(), basis, &[&train, &split.test], &device);
    let axis: Vec<f64> = (0..opts.points)
        .map(|i| lo + (hi - lo) * i as f64 / (opts.points - 1) as f64)
        .collect();
    let cells: Vec<(f64, f64)> = match opts.dims {
        1 => axis.iter().map(|&x| (x, 0.0)).collect(),
        _ => axis
            .iter()
            .flat_map(|&y| axis.iter().map(move |&x| (x, y)))
            .collect(),
    };
    let cs: Vec<Vec<f64>> = cells
        .iter()
        .map(|&(x, y)| match opts.dims {
            1 => vec![1.0, x],
            _ => vec![1.0, x, y],
        })
        .collect();
    let metrics = family.metrics_all(&cs);
    let mut csv = String::from(match opts.dims {
        1 => "x,train_loss,train_err,test_loss,test_err\n",
        _ => "x,y,train_loss,train_err,test_loss,test_err\n",
    });
    for ((x, y), m) in cells.iter().zip(&metrics) {
        let at = match opts.dims {
            1 => format!("{x}"),
            _ => format!("{x},{y}"),
        };
        let _ = writeln!(
            csv,
            "{at},{},{},{},{}",
            m[0].loss,
            m[0].err(),
            m[1].loss,
            m[1].err()
        );
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    write_atomic(&opts.out.join("landscape.csv"), csv.as_bytes())?;
    let norm = |v: &[f32]| v.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
    let centre = cells
        .iter()
        .position(|&(x, y)| x == 0.0 && y == 0.0)
        .map(|i| json!({"train_loss": metrics[i][0].loss, "test_err": metrics[i][1].err()}));
    let summary = json!({
        "arch": arch.to_string(),
        "data": split.train.name,
        "dims": opts.dims,
        "points": opts.points,
        "range": [lo, hi],
        "include_biasbn": opts.include_biasbn,
        "weight_norm": norm(&params.to_flat_trained()),
        "direction_norms": directions.iter().map(|d| norm(d)).collect::<Vec<_>>(),
        "train_samples": train.len(),
        "train_loss_min": metrics.iter().map(|m| m[0].loss).fold(f64::INFINITY, f64::min),
        "train_loss_max": metrics.iter().map(|m| m[0].loss).fold(f64::NEG_INFINITY, f64::max),
        "centre": centre,
    });
    write_json(&opts.out.join("landscape.json"), &summary)?;
    crate::plot::figures::landscape_figures(&opts.out, &opts.out, None)?;
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}
