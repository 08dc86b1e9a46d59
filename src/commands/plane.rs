//! `modeconn plane`: loss and error on the plane through w1, a curve's bend θ and w2
//! (Garipov et al. 2018, Fig. 1). Orthonormal basis `u = (w2 − w1)/‖w2 − w1‖`,
//! `v ∝ (θ − w1) − ⟨θ − w1, u⟩u`; grid `x, y ∈ linspace(−m, 1+m, G)` scaled by the lengths
//! `‖w2 − w1‖` and `⟨θ − w1, v⟩`; point `p = w1 + x·u + y·v`. Grid points are evaluated in
//! parallel and dropped after use (memory flat in the grid size). Between variational models the
//! plane lies in their stored parameters (θ, log σ²) and every cell is evaluated on its mode
//! (`train_loss`, `test_err`) and on one weight sample (`train_sample_loss`, `test_sample_err`).
//! Writes `plane.json` and `plane.csv` (the mode's values).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::{eval_device, load_data};
use crate::curve::Curve;
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::eval::EVAL_BATCH;
use crate::eval::family::Family;
use crate::eval::path::grid;
use crate::eval::plane::PlaneBasis;
use crate::eval::state::recompute_model;
use crate::model::Model;
use crate::network_file::load_any_pair;
use crate::params::ParamSet;
use crate::variational::eval::{Sampling, evaluate_variational};

/// One grid cell's (train loss, test error).
type Cell = (f64, f64);

/// Noise seed of the one-sample evaluation of a variational plane (the same at every cell).
const VARIATIONAL_SEED: u64 = 0;
use crate::params::io::write_atomic;
use crate::report::{RunRecord, write_json};

/// Validated options of `modeconn plane`.
#[derive(Debug, Clone)]
pub struct PlaneOptions {
    /// w1.
    pub a: PathBuf,
    /// w2.
    pub b: PathBuf,
    /// The fitted curve whose middle control point is the bend.
    pub curve: PathBuf,
    /// Grid points per axis.
    pub grid: usize,
    /// Margin around [0, 1] in units of the lengths.
    pub margin: f64,
    /// Train metrics on the first N training samples only.
    pub train_subset: Option<usize>,
    /// The samples of the state recomputation (networks with batch normalisation).
    pub bn_sample: crate::eval::state::StateSample,
    /// Data.
    pub data: DataConfig,
    /// Output directory.
    pub out: PathBuf,
}

/// Runs `plane`; returns a short summary (the grid goes to the files).
pub fn run(opts: &PlaneOptions, argv: Vec<String>) -> Result<Value> {
    if opts.grid < 2 {
        return Err(Error::Config("--grid must be at least 2".into()));
    }
    opts.bn_sample.validate()?;
    if !(opts.margin >= 0.0 && opts.margin.is_finite()) {
        return Err(Error::Config(
            "--margin must be a non-negative number".into(),
        ));
    }
    let record = RunRecord::start(
        argv,
        json!({"a": opts.a, "b": opts.b, "curve": opts.curve, "grid": opts.grid,
               "margin": opts.margin, "train_subset": opts.train_subset,
               "bn_sample": opts.bn_sample, "data": opts.data}),
        None,
    );
    let device = eval_device();
    let (model, a, b) = load_any_pair(("--a", &opts.a), ("--b", &opts.b), &device)?;
    let arch = model.arch().clone();
    let curve = Curve::load(&opts.curve, &device)?;
    if curve.model != model {
        return Err(Error::Config(format!(
            "--curve {} is a {} curve but --a and --b are {model}: the curve must join models of one architecture and kind",
            opts.curve.display(),
            curve.model
        )));
    }
    let split = load_data(&opts.data)?;
    arch.check_data(&split.train)?;
    let train = match opts.train_subset {
        Some(n) => split.train.subset(n),
        None => split.train.clone(),
    };
    let f64s = |p: &ParamSet| {
        p.to_flat_trained()
            .into_iter()
            .map(f64::from)
            .collect::<Vec<f64>>()
    };
    let (wa, wb) = (f64s(&a), f64s(&b));
    let theta = f64s(&curve.points[curve.len() / 2]);
    let basis = PlaneBasis::new(&wa, &wb, &theta)?;
    let (len, height) = (basis.len, basis.height);
    let axis = |scale: f64| -> Vec<f64> {
        (0..opts.grid)
            .map(|i| {
                (-opts.margin + (1.0 + 2.0 * opts.margin) * i as f64 / (opts.grid - 1) as f64)
                    * scale
            })
            .collect()
    };
    let (xs, ys) = (axis(len), axis(height));
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let cells: Vec<(usize, usize)> = (0..ys.len())
        .flat_map(|j| (0..xs.len()).map(move |i| (j, i)))
        .collect();
    let coeffs: Vec<Vec<f64>> = cells
        .iter()
        .map(|&(j, i)| vec![1.0, xs[i], ys[j]])
        .collect();
    // Per cell (train loss, test error); for variational models of the mode, with one
    // sample's beside them.
    let (values, sampled): (Vec<Cell>, Option<Vec<Cell>>) = match &model {
        Model::Plain(_) => {
            let family = Family::new(
                &arch,
                arch.layout(),
                vec![to32(&wa), to32(&basis.u), to32(&basis.v)],
                &[&train, &split.test],
                &device,
            )
            .with_state_mode(Some(opts.bn_sample));
            let v = family
                .metrics_all(&coeffs)
                .iter()
                .map(|m| (m[0].loss, m[1].err()))
                .collect();
            (v, None)
        }
        Model::Variational(m) => {
            let sampling = Sampling {
                ensembles: &[],
                seed: VARIATIONAL_SEED,
            };
            let (mode, sample): (Vec<_>, Vec<_>) = coeffs
                .iter()
                .map(|c| {
                    let w: Vec<f32> = (0..wa.len())
                        .map(|k| (c[0] * wa[k] + c[1] * basis.u[k] + c[2] * basis.v[k]) as f32)
                        .collect();
                    let p = ParamSet::from_flat(m.layout().clone(), &w, &device)
                        .expect("the models' layout");
                    let p = recompute_model(&model, &p, &train, &opts.bn_sample, &device);
                    let tr =
                        evaluate_variational(m, &p, &train, Some(sampling), EVAL_BATCH, &device);
                    let te = evaluate_variational(
                        m,
                        &p,
                        &split.test,
                        Some(sampling),
                        EVAL_BATCH,
                        &device,
                    );
                    let (ts, es) = (tr.sample.expect("sampled"), te.sample.expect("sampled"));
                    ((tr.mode.loss, te.mode.err()), (ts.loss, es.err()))
                })
                .unzip();
            (mode, Some(sample))
        }
    };
    let g = opts.grid;
    let train_loss: Vec<Vec<f64>> = (0..g)
        .map(|j| (0..g).map(|i| values[j * g + i].0).collect())
        .collect();
    let test_err: Vec<Vec<f64>> = (0..g)
        .map(|j| (0..g).map(|i| values[j * g + i].1).collect())
        .collect();
    let proj = |w: &[f64]| basis.project(w);
    let curve_pts: Vec<[f64; 2]> = grid(61)
        .into_iter()
        .map(|t| proj(&f64s(&curve.point(t))))
        .collect();
    let mut plane = json!({
        "x": xs, "y": ys, "train_loss": train_loss, "test_err": test_err,
        "w1": [0.0, 0.0], "w2": [len, 0.0], "bend": proj(&theta), "curve": curve_pts,
        "train_samples": train.len(), "test_samples": split.test.len(),
        "state_recomputed": crate::eval::state::record(&arch.layout(), &train, &opts.bn_sample),
    });
    if let Some(sampled) = &sampled {
        let grid_of = |f: fn(&(f64, f64)) -> f64| -> Vec<Vec<f64>> {
            (0..g)
                .map(|j| (0..g).map(|i| f(&sampled[j * g + i])).collect())
                .collect()
        };
        plane["evaluated"] = json!("mode (train_loss, test_err) and one sample");
        plane["train_sample_loss"] = json!(grid_of(|v| v.0));
        plane["test_sample_err"] = json!(grid_of(|v| v.1));
        plane["eval_seed"] = json!(VARIATIONAL_SEED);
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    write_json(&opts.out.join("plane.json"), &plane)?;
    let mut csv = String::from("x,y,train_loss,test_err\n");
    for (k, &(j, i)) in cells.iter().enumerate() {
        writeln!(csv, "{},{},{},{}", xs[i], ys[j], values[k].0, values[k].1).expect("string");
    }
    write_atomic(&opts.out.join("plane.csv"), csv.as_bytes())?;
    let min = |z: &Vec<Vec<f64>>| z.iter().flatten().cloned().fold(f64::INFINITY, f64::min);
    let summary = json!({
        "grid": g, "length": len, "bend_height": height,
        "train_loss_min": min(&train_loss), "test_err_min": min(&test_err),
    });
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}
