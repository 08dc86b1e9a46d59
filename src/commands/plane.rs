//! `modeconn plane`: train loss and test error on the plane through two minima and a curve's
//! bend (see [`crate::eval::plane`]); writes `plane.json`, `plane.csv` and `run.json`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};

use super::{eval_device, load_data};
use crate::curve::Curve;
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::eval::path::grid as t_grid;
use crate::eval::plane::{PlaneBasis, PlanePoint, PlaneResult, axis, evaluate_grid};
use crate::model::load_model;
use crate::params::io::write_atomic;
use crate::report::{RunRecord, write_json};

/// Validated options of `modeconn plane`.
#[derive(Debug, Clone)]
pub struct PlaneOptions {
    /// First endpoint (the origin).
    pub a: PathBuf,
    /// Second endpoint.
    pub b: PathBuf,
    /// The fitted curve whose (middle) bend spans the plane.
    pub curve: PathBuf,
    /// Grid points per axis.
    pub grid: usize,
    /// Margin around `[0, 1]` (fraction of the lengths).
    pub margin: f64,
    /// Points of the projected curve.
    pub curve_points: usize,
    /// Evaluate train metrics on the first N training samples only.
    pub train_subset: Option<usize>,
    /// Data.
    pub data: DataConfig,
    /// Output directory.
    pub out: PathBuf,
}

/// Number of projected curve points (REFERENCE §1).
pub const CURVE_POINTS: usize = 61;

/// `plane.csv`: one row per grid point.
pub fn plane_csv(points: &[PlanePoint]) -> String {
    let mut s = String::from("x,y,train_loss,train_err,test_loss,test_err\n");
    for p in points {
        writeln!(
            s,
            "{},{},{},{},{},{}",
            p.x, p.y, p.train_loss, p.train_err, p.test_loss, p.test_err
        )
        .expect("write to string");
    }
    s
}

fn close(a: &[f32], b: &[f32]) -> bool {
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        d += ((x - y) as f64).powi(2);
        n += (*x as f64).powi(2);
    }
    d.sqrt() <= 1e-5 * n.sqrt().max(1.0)
}

/// Runs `plane`; returns a short summary (also in `run.json`).
pub fn run(opts: &PlaneOptions, argv: Vec<String>) -> Result<Value> {
    if opts.grid < 2 {
        return Err(Error::Config("--grid must be at least 2".into()));
    }
    if !(opts.margin.is_finite() && (0.0..=5.0).contains(&opts.margin)) {
        return Err(Error::Config(format!(
            "--margin must be in [0, 5], got {}",
            opts.margin
        )));
    }
    if opts.curve_points < 2 {
        return Err(Error::Config("--curve-points must be at least 2".into()));
    }
    let record = RunRecord::start(
        argv,
        json!({"a": opts.a, "b": opts.b, "curve": opts.curve, "grid": opts.grid,
               "margin": opts.margin, "curve_points": opts.curve_points,
               "train_subset": opts.train_subset, "data": opts.data}),
        None,
    );
    let started = Instant::now();
    let device = eval_device();
    let (arch, a) = load_model(&opts.a, &device)?;
    let (arch_b, b) = load_model(&opts.b, &device)?;
    if arch != arch_b {
        return Err(Error::Config(format!(
            "--a is a {arch} but --b is a {arch_b}: endpoints must share one architecture"
        )));
    }
    let curve = Curve::load(&opts.curve, &device)?;
    if curve.arch != arch {
        return Err(Error::Config(format!(
            "--curve {} is a {} curve but the endpoints are {arch}",
            opts.curve.display(),
            curve.arch
        )));
    }
    if curve.len() < 3 {
        return Err(Error::Config(format!(
            "--curve {} has no bend: the plane needs a curve with at least one bend",
            opts.curve.display()
        )));
    }
    let (fa, fb) = (a.to_flat(), b.to_flat());
    let ends = (
        curve.points[0].to_flat(),
        curve.points[curve.len() - 1].to_flat(),
    );
    if !close(&ends.0, &fa) || !close(&ends.1, &fb) {
        return Err(Error::Config(format!(
            "--curve {} was fitted between other endpoints than --a {} and --b {}",
            opts.curve.display(),
            opts.a.display(),
            opts.b.display()
        )));
    }
    let split = load_data(&opts.data)?;
    arch.check_data(&split.train)?;
    let train = match opts.train_subset {
        Some(n) => split.train.subset(n),
        None => split.train.clone(),
    };
    let bend = curve.points[curve.len() / 2].to_flat();
    let basis = PlaneBasis::new(&fa, &bend, &fb)?;
    let xs = axis(opts.grid, opts.margin, basis.dx);
    let ys = axis(opts.grid, opts.margin, basis.dy);
    let layout = arch.layout();
    let points = evaluate_grid(
        &arch,
        &layout,
        &basis,
        &xs,
        &ys,
        &train,
        &split.test,
        &device,
    );

    let ts = t_grid(opts.curve_points);
    let mut projected = Vec::with_capacity(ts.len());
    let mut off = 0.0f64;
    for &t in &ts {
        let (x, y, d) = basis.project(&curve.point(t).to_flat());
        projected.push([x, y]);
        off = off.max(d);
    }
    let (bx, by, _) = basis.project(&bend);
    let [train_loss, train_err, test_loss, test_err] = PlaneResult::grids(&points, xs.len());
    let result = PlaneResult {
        arch: arch.to_string(),
        curve_kind: curve.kind.to_string(),
        grid: opts.grid,
        margin: opts.margin,
        dx: basis.dx,
        dy: basis.dy,
        x: xs,
        y: ys,
        train_loss,
        train_err,
        test_loss,
        test_err,
        a: [0.0, 0.0],
        b: [basis.dx, 0.0],
        bend: [bx, by],
        curve: projected,
        curve_t: ts,
        curve_off_plane: off,
        train_samples: train.len(),
        test_samples: split.test.len(),
    };
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    write_json(&opts.out.join("plane.json"), &result)?;
    write_atomic(&opts.out.join("plane.csv"), plane_csv(&points).as_bytes())?;
    let fold = |f: fn(&PlanePoint) -> f64| {
        points
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let (tl, te) = (fold(|p| p.train_loss), fold(|p| p.test_err));
    let summary = json!({
        "grid": opts.grid,
        "points": points.len(),
        "dx": basis.dx,
        "dy": basis.dy,
        "bend": [bx, by],
        "train_loss_min": tl.0,
        "train_loss_max": tl.1,
        "test_err_min": te.0,
        "test_err_max": te.1,
        "curve_off_plane": off,
        "eval_time_s": started.elapsed().as_secs_f64(),
    });
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}
