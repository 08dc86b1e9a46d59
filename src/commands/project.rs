//! `modeconn project`: is a path between interpolating minima inside the set of minima? Each
//! point `θ(t)` of the line between two minima, of other lines from the first (e.g. to a
//! weight-matched second minimum) and of fitted curves is projected onto
//! `M = {θ : f(x_i; θ) = y_i ∀i}` (the interpolating setting of `modeconn dimension`, on the
//! same N points) by minimum-norm Gauss–Newton / Levenberg–Marquardt steps
//! `δ = −Jᵀ(JJᵀ + λI)⁻¹r`, whose first step is the closest point of the linearised set. Reported
//! along t: `‖r‖` before and after, the distance moved `‖θ* − θ(t)‖` (and over `‖w2 − w1‖`),
//! the steps taken, `rank J(θ*)` (at the largest log-gap, with the gap ratio) and the local
//! dimension `D − rank` there, and the hidden
//! units off on every point at θ*; and, between consecutive values of t, the step along the
//! path beside the step between the projected points (`projected_length` over `length` per
//! path, and the largest ratio of the two steps: a projection that jumps to another part of the
//! set shows as a spike). Writes
//! `project.csv`, `summary.json`, `run.json` and the figure `project.{png,svg}`.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::dimension::{Problem, problem};
use super::{eval_device, load_data};
use crate::curve::Curve;
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::minima::{FitConfig, JacobianMode, Spectrum, fit};
use crate::network_file::load_model;
use crate::params::ParamSet;
use crate::params::io::write_atomic;
use crate::report::{RunRecord, write_json};

/// Validated options of `modeconn project`.
#[derive(Debug, Clone)]
pub struct ProjectOptions {
    /// w1 (t = 0 of every path).
    pub a: PathBuf,
    /// w2 (t = 1 of the line `line`).
    pub b: PathBuf,
    /// Further lines from w1, named.
    pub lines: Vec<(String, PathBuf)>,
    /// Fitted curves, named.
    pub curves: Vec<(String, PathBuf)>,
    /// Data.
    pub data: DataConfig,
    /// Number of training points N.
    pub points: usize,
    /// Seed of the choice of the N points.
    pub points_seed: u64,
    /// Evaluated values of t per path.
    pub t_points: usize,
    /// Target residual norm of a projection.
    pub tol: f64,
    /// At most this many accepted steps per projection.
    pub max_steps: usize,
    /// Refuse a dense Jacobian above this many bytes.
    pub max_memory: u64,
    /// No progress lines.
    pub quiet: bool,
    /// Output directory.
    pub out: PathBuf,
}

/// A path's point at t.
type PointAt = Box<dyn Fn(f64) -> ParamSet>;

/// One projected point.
struct Projected {
    t: f64,
    before: f64,
    after: f64,
    distance: f64,
    steps: usize,
    rank: usize,
    gap: f64,
    dead: usize,
    /// `‖θ(t_i) − θ(t_{i−1})‖` and `‖θ*(t_i) − θ*(t_{i−1})‖` (0 at the first point).
    segment: f64,
    projected_segment: f64,
}

/// Runs `project`; returns the summary (also in `summary.json`).
pub fn run(opts: &ProjectOptions, argv: Vec<String>) -> Result<Value> {
    if opts.t_points < 2 {
        return Err(Error::Config("--t-points must be at least 2".into()));
    }
    if opts.points == 0 {
        return Err(Error::Config("--points must be at least 1".into()));
    }
    if !(opts.tol > 0.0 && opts.tol.is_finite()) {
        return Err(Error::Config("--tol must be a positive number".into()));
    }
    let record = RunRecord::start(
        argv,
        json!({"a": opts.a, "b": opts.b, "lines": opts.lines, "curves": opts.curves,
               "data": opts.data, "points": opts.points, "points_seed": opts.points_seed,
               "t_points": opts.t_points, "tol": opts.tol, "max_steps": opts.max_steps}),
        None,
    );
    let device = eval_device();
    let (arch, a) = load_model(&opts.a, &device)?;
    let same_arch = |flag: &str, path: &PathBuf, other: &crate::arch::Arch| -> Result<()> {
        match other == &arch {
            true => Ok(()),
            false => Err(Error::Config(format!(
                "{flag} {} is {other} but --a is {arch}",
                path.display()
            ))),
        }
    };
    let mut paths: Vec<(String, PointAt)> = Vec::new();
    let mut ends = vec![("line".to_string(), opts.b.clone())];
    ends.extend(opts.lines.iter().cloned());
    for (i, (name, file)) in ends.into_iter().enumerate() {
        let flag = if i == 0 { "--b" } else { "--line" };
        let (other_arch, b) = load_model(&file, &device)?;
        same_arch(flag, &file, &other_arch)?;
        let a = a.clone();
        paths.push((
            name,
            Box::new(move |t| a.lerp(&b, t as f32).expect("one layout")),
        ));
    }
    for (name, file) in &opts.curves {
        let curve = Curve::load(file, &device)?;
        if curve.model.variational().is_some() {
            return Err(Error::Config(format!(
                "--curve {}: a curve between variational models; project works on plain networks",
                file.display()
            )));
        }
        same_arch("--curve", file, curve.arch())?;
        paths.push((name.clone(), Box::new(move |t| curve.point(t))));
    }
    let split = load_data(&opts.data)?;
    let (Problem { net, x, y, name }, mode) = problem(
        &arch,
        &split,
        opts.points,
        opts.points_seed,
        opts.max_memory,
        &[JacobianMode::Dense],
    )?;
    let flat =
        |p: &ParamSet| -> Vec<f64> { p.to_flat_trained().into_iter().map(f64::from).collect() };
    let w2 = flat(&paths[0].1(1.0));
    let w1 = flat(&a);
    let length = dist(&w1, &w2);
    let cfg = FitConfig {
        adam_steps: 0,
        lr: 1e-3,
        tol: opts.tol,
        max_lm: opts.max_steps,
        mode,
    };
    let ts: Vec<f64> = (0..opts.t_points)
        .map(|i| i as f64 / (opts.t_points - 1) as f64)
        .collect();
    let mut rows: Vec<(String, Projected)> = Vec::new();
    for (pname, point) in &paths {
        let mut prev: Option<(Vec<f64>, Vec<f64>)> = None;
        for (i, &t) in ts.iter().enumerate() {
            let theta = flat(&point(t));
            let before = net.residuals(&theta, &x, &y, false).norm();
            let p = fit(&net, theta.clone(), &x, &y, cfg, |_, _, _| {});
            let res = net.residuals(&p.theta, &x, &y, true);
            let spectrum = Spectrum::of(&res.jac_matrix())?;
            let (rank, gap) = (spectrum.rank, spectrum.gap_ratio);
            let row = Projected {
                t,
                before,
                after: p.residual,
                distance: dist(&p.theta, &theta),
                steps: p.lm_steps,
                rank,
                gap,
                dead: net.dead_units(&p.theta, &x),
                segment: prev.as_ref().map_or(0.0, |q| dist(&theta, &q.0)),
                projected_segment: prev.as_ref().map_or(0.0, |q| dist(&p.theta, &q.1)),
            };
            prev = Some((theta, p.theta));
            if !opts.quiet {
                eprintln!(
                    "project: {pname} {}/{}: t = {t:.3}, ‖r‖ {:.2e} → {:.2e}, moved {:.3e}, rank {rank}",
                    i + 1,
                    ts.len(),
                    row.before,
                    row.after,
                    row.distance
                );
            }
            rows.push((pname.clone(), row));
        }
    }

    let d = net.num_params();
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let mut csv = String::from(
        "path,t,residual_before,residual_after,distance,relative_distance,steps,converged,rank,gap_ratio,dimension,dead_units,segment,projected_segment\n",
    );
    for (p, r) in &rows {
        let _ = writeln!(
            csv,
            "{p},{},{:e},{:e},{:e},{:e},{},{},{},{:e},{},{},{:e},{:e}",
            r.t,
            r.before,
            r.after,
            r.distance,
            r.distance / length.max(f64::MIN_POSITIVE),
            r.steps,
            r.after <= opts.tol,
            r.rank,
            r.gap,
            d - r.rank,
            r.dead,
            r.segment,
            r.projected_segment
        );
    }
    write_atomic(&opts.out.join("project.csv"), csv.as_bytes())?;
    let mut per_path = serde_json::Map::new();
    for (pname, _) in &paths {
        let mine: Vec<&Projected> = rows
            .iter()
            .filter(|(p, _)| p == pname)
            .map(|(_, r)| r)
            .collect();
        let max = |f: &dyn Fn(&Projected) -> f64| mine.iter().map(|r| f(r)).fold(0.0, f64::max);
        let ranks = mine.iter().map(|r| r.rank);
        per_path.insert(
            pname.clone(),
            json!({
                "max_residual_before": max(&|r| r.before),
                "max_residual_after": max(&|r| r.after),
                "max_distance": max(&|r| r.distance),
                "max_relative_distance": max(&|r| r.distance) / length.max(f64::MIN_POSITIVE),
                "all_converged": mine.iter().all(|r| r.after <= opts.tol),
                "length": mine.iter().map(|r| r.segment).sum::<f64>(),
                "projected_length": mine.iter().map(|r| r.projected_segment).sum::<f64>(),
                "max_segment_ratio": mine
                    .iter()
                    .filter(|r| r.segment > 0.0)
                    .map(|r| r.projected_segment / r.segment)
                    .fold(0.0, f64::max),
                "min_dimension": d - ranks.clone().max().unwrap_or(0),
                "max_dimension": d - ranks.min().unwrap_or(0),
            }),
        );
    }
    let summary = json!({
        "arch": arch.to_string(),
        "data": name,
        "params": d,
        "points": opts.points,
        "constraints": opts.points * net.outputs(),
        "predicted_dimension": d as i64 - (opts.points * net.outputs()) as i64,
        "length": length,
        "paths": per_path,
    });
    write_json(&opts.out.join("summary.json"), &summary)?;
    crate::plot::figures::projection_figure(&opts.out.join("project.csv"), &opts.out, None)?;
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}

fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(u, v)| (u - v) * (u - v))
        .sum::<f64>()
        .sqrt()
}

/// A one-screen table of the summary.
pub fn table(v: &Value) -> String {
    let mut t = format!(
        "{} on {} points: D = {}, generic dimension D − N·K = {}, ‖w2 − w1‖ = {:.3}\n{:<12} {:>14} {:>14} {:>12} {:>10} {:>14}\n",
        v["arch"].as_str().unwrap_or_default(),
        v["points"],
        v["params"],
        v["predicted_dimension"],
        v["length"].as_f64().unwrap_or(f64::NAN),
        "path",
        "max ‖r‖ before",
        "max ‖r‖ after",
        "max moved",
        "converged",
        "dimension",
    );
    for (name, p) in v["paths"].as_object().into_iter().flatten() {
        let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            t,
            "{name:<12} {:>14.3e} {:>14.3e} {:>12.3e} {:>10} {:>14}",
            f("max_residual_before"),
            f("max_residual_after"),
            f("max_distance"),
            p["all_converged"],
            format!("{}–{}", p["min_dimension"], p["max_dimension"]),
        );
    }
    t
}
