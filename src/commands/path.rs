//! `modeconn path`: loss and error along the straight line between two networks and, when given,
//! along a fitted curve, on the same `t` grid; writes `path.csv` and `summary.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::{eval_device, load_data};
use crate::curve::{Curve, CurveKind};
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::eval::hessian::{SharpnessConfig, sharpness};
use crate::eval::path::{PathRow, PathSpec, grid, profile, summarize_path};
use crate::eval::repair::Repair;
use crate::model::Model;
use crate::network_file::load_any_pair;
use crate::params::ParamSet;
use crate::params::io::write_atomic;
use crate::report::{RunRecord, write_json};
use crate::variational::VModel;
use crate::variational::path::{self as vpath, PathSampling};

/// Validated options of `modeconn path`.
#[derive(Debug, Clone)]
pub struct PathOptions {
    /// First endpoint.
    pub a: PathBuf,
    /// Second endpoint.
    pub b: PathBuf,
    /// Fitted curves to evaluate too, with their names (`curve` for a single one).
    pub curves: Vec<(String, PathBuf)>,
    /// Grid size.
    pub points: usize,
    /// Evaluate train metrics on the first N training samples only.
    pub train_subset: Option<usize>,
    /// The samples of the state recomputation (networks with batch normalisation).
    pub bn_sample: crate::eval::state::StateSample,
    /// Recompute the state at every point (false: interpolate it; networks with batch
    /// normalisation).
    pub bn_reset: bool,
    /// Also evaluate the line with REPAIR (networks without normalisation), as the path
    /// `line-repair`.
    pub repair: bool,
    /// Variational endpoints: the ensemble sizes and noise seed of every point.
    pub sampling: PathSampling,
    /// Sharpness along every path (`--hessian`).
    pub hessian: Option<HessianPlan>,
    /// Curve ensembles of these sizes along every path of plain networks (`--curve-ensemble`).
    pub curve_ensembles: Vec<usize>,
    /// Data.
    pub data: DataConfig,
    /// Output directory.
    pub out: PathBuf,
}

/// What `path --hessian` measures.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct HessianPlan {
    /// At each point: eigenvalues, trace, iterations, seed.
    pub sharpness: SharpnessConfig,
    /// Evenly spaced points per path (endpoints included).
    pub points: usize,
    /// Size of the evaluation subset (the same at every point).
    pub samples: usize,
    /// Seed of the subset.
    pub subset_seed: u64,
}

/// Writes rows as CSV (`path,t,train_loss,train_err,test_loss,test_err,dl`).
pub fn rows_csv(rows: &[PathRow]) -> String {
    let mut s = String::from("path,t,train_loss,train_err,test_loss,test_err,dl\n");
    for r in rows {
        writeln!(
            s,
            "{},{},{},{},{},{},{}",
            r.path, r.t, r.train_loss, r.train_err, r.test_loss, r.test_err, r.dl
        )
        .expect("write to string");
    }
    s
}

/// Runs `path`; returns the summary (also `out/summary.json`).
pub fn run(opts: &PathOptions, argv: Vec<String>) -> Result<Value> {
    if opts.points < 2 {
        return Err(Error::Config("--points must be at least 2".into()));
    }
    if opts.train_subset == Some(0) {
        return Err(Error::Config("--train-subset must be at least 1".into()));
    }
    opts.bn_sample.validate()?;
    let record = RunRecord::start(
        argv,
        json!({"a": opts.a, "b": opts.b, "curves": opts.curves, "points": opts.points,
               "train_subset": opts.train_subset, "bn_sample": opts.bn_sample,
               "bn_reset": opts.bn_reset, "repair": opts.repair,
               "ensemble": opts.sampling.ensembles, "eval_seed": opts.sampling.seed,
               "data": opts.data}),
        None,
    );
    let device = eval_device();
    let (model, a, b) = load_any_pair(("--a", &opts.a), ("--b", &opts.b), &device)?;
    let arch = match model {
        Model::Plain(arch) => arch,
        Model::Variational(_) if !opts.curve_ensembles.is_empty() => {
            return Err(Error::Config(
                "--curve-ensemble: ensembles of points of paths between plain networks; variational endpoints take --ensemble".into(),
            ));
        }
        Model::Variational(_) if opts.hessian.is_some() => {
            return Err(Error::Config(
                "--hessian: the sharpness of plain networks; --a and --b are variational models"
                    .into(),
            ));
        }
        Model::Variational(m) => return run_variational(opts, record, &m, (a, b), &device),
    };
    if let Some(plan) = &opts.hessian {
        plan.sharpness.validate()?;
        if plan.points < 2 {
            return Err(Error::Config("--hessian-points must be at least 2".into()));
        }
    }
    // The geometry ignores state, recomputed at every point; without the reset the state is
    // interpolated with the rest.
    let flat = |p: &crate::params::ParamSet| match opts.bn_reset {
        true => p.to_flat_trained(),
        false => p.to_flat(),
    };
    let split = load_data(&opts.data)?;
    arch.check_data(&split.train)?;
    let train = match opts.train_subset {
        Some(n) => split.train.subset(n),
        None => split.train.clone(),
    };
    let repair = match opts.repair {
        true => Some(Repair::new(
            &arch,
            &[a.clone(), b.clone()],
            &train,
            opts.bn_sample,
            &device,
        )?),
        false => None,
    };
    let mut specs = vec![PathSpec {
        name: "line",
        kind: CurveKind::Polychain,
        points: vec![flat(&a), flat(&b)],
        repair: None,
    }];
    if let Some(r) = &repair {
        specs.push(PathSpec {
            name: "line-repair",
            kind: CurveKind::Polychain,
            points: vec![flat(&a), flat(&b)],
            repair: Some(r),
        });
    }
    for (name, file) in &opts.curves {
        let c = Curve::load(file, &device)?;
        if c.model != crate::model::Model::Plain(arch.clone()) {
            return Err(Error::Config(format!(
                "--curve {} is a {} curve but the endpoints are {arch}",
                file.display(),
                c.model
            )));
        }
        c.check_ends(&a, &b, &format!("--curve {}", file.display()))?;
        specs.push(PathSpec {
            name,
            kind: c.kind,
            points: c.points.iter().map(flat).collect(),
            repair: None,
        });
    }
    let ts = grid(opts.points);
    let layout = arch.layout();
    let mut rows = Vec::new();
    let mut summary = BTreeMap::new();
    for spec in &specs {
        let r = profile(
            &arch,
            &layout,
            spec,
            &ts,
            (&train, opts.bn_reset.then_some(opts.bn_sample)),
            &split.test,
            &device,
        );
        summary.insert(spec.name.to_string(), summarize_path(&r));
        rows.extend(r);
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    write_atomic(&opts.out.join("path.csv"), rows_csv(&rows).as_bytes())?;
    let v = serde_json::to_value(&summary).expect("serialisable summary");
    write_json(&opts.out.join("summary.json"), &v)?;
    let mut result = v.clone();
    if !opts.curve_ensembles.is_empty() {
        let csv = ensembles_along(&arch, &specs, opts, &train, &split.test, &device)?;
        write_atomic(&opts.out.join("ensemble.csv"), csv.as_bytes())?;
        crate::plot::figures::ensemble_figure(&opts.out.join("ensemble.csv"), &opts.out, None)?;
        result["curve_ensembles"] = json!(opts.curve_ensembles);
    }
    if let Some(plan) = &opts.hessian {
        let csv = sharpness_along(&arch, &specs, plan, &split.train, &train, opts, &device)?;
        write_atomic(&opts.out.join("hessian.csv"), csv.as_bytes())?;
        crate::plot::figures::hessian_path_figure(&opts.out.join("hessian.csv"), &opts.out, None)?;
        result["hessian"] = json!(plan);
    }
    if opts.repair {
        result["repair"] = opts.bn_sample.describe(&train);
    }
    if !opts.bn_reset && layout.has_state() {
        result["state_recomputed"] = json!(false);
    } else if let Some(s) = crate::eval::state::record(&layout, &train, &opts.bn_sample) {
        result["state_recomputed"] = s;
    }
    record.finish(&opts.out, result)?;
    Ok(v)
}

/// The point `w(t)` of a path as a flat vector (its control points combined).
fn flat_at(spec: &PathSpec<'_>, t: f64) -> Vec<f32> {
    let refs: Vec<&[f32]> = spec.points.iter().map(Vec::as_slice).collect();
    let c: Vec<f32> = spec
        .kind
        .coeffs(refs.len(), t)
        .into_iter()
        .map(|c| c as f32)
        .collect();
    let mut w = vec![0.0f32; refs[0].len()];
    crate::params::combine(&mut w, &refs, &c);
    w
}

/// The network at `t` of a path of plain networks, its state recomputed on `state_data` when
/// the path resets it.
fn network_at(
    arch: &crate::arch::Arch,
    spec: &PathSpec<'_>,
    t: f64,
    opts: &PathOptions,
    state_data: &crate::data::Dataset,
    device: &burn::tensor::Device,
) -> Result<ParamSet> {
    let layout = arch.layout();
    let p = ParamSet::from_flat(layout.clone(), &flat_at(spec, t), device)?;
    Ok(match layout.has_state() && opts.bn_reset {
        true => crate::eval::state::recompute(arch, &p, state_data, &opts.bn_sample, device),
        false => p,
    })
}

/// The length along a path as a function of t: the polyline through 201 evenly spaced points of
/// it, measured once per path.
struct ArcLength {
    /// The points' t.
    fine: Vec<f64>,
    /// The length from t = 0 to each of them.
    cum: Vec<f64>,
}

impl ArcLength {
    fn of(spec: &PathSpec<'_>) -> Self {
        let fine = grid(201);
        let mut cum = vec![0.0f64];
        let mut prev = flat_at(spec, fine[0]);
        for &t in &fine[1..] {
            let next = flat_at(spec, t);
            let d: f64 = prev
                .iter()
                .zip(&next)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            cum.push(cum.last().expect("non-empty") + d);
            prev = next;
        }
        Self { fine, cum }
    }

    /// The t at each fraction `f` of the length (interpolated between the polyline's points).
    fn t_at(&self, fractions: &[f64]) -> Vec<f64> {
        let (fine, cum) = (&self.fine, &self.cum);
        let total = *cum.last().expect("non-empty");
        fractions
            .iter()
            .map(|&f| {
                let target = f * total;
                let i = cum.partition_point(|&c| c < target).clamp(1, cum.len() - 1);
                let (c0, c1) = (cum[i - 1], cum[i]);
                let s = if c1 > c0 {
                    (target - c0) / (c1 - c0)
                } else {
                    0.0
                };
                fine[i - 1] + s * (fine[i] - fine[i - 1])
            })
            .collect()
    }
}

/// `K` values of t spaced evenly along a path: in t (`i/(K − 1)`; `K = 1` is t = 0, the first
/// network), or (`arc` given) in arc length, the same fractions of the path's length (the two
/// agree on the line).
fn ensemble_ts(k: usize, arc: Option<&ArcLength>) -> Vec<f64> {
    match arc {
        Some(arc) if k >= 2 => arc.t_at(&grid(k)),
        _ => grid(k),
    }
}

/// `path --curve-ensemble`: for every path but the repaired line, each size K and both spacings
/// (in t and in arc length), the test metrics of the ensemble of the K networks at
/// [`ensemble_ts`] (the mean of their softmax outputs; state recomputed per member when the path
/// resets it). K = 2 is the two endpoints' ensemble on every path. Returns `ensemble.csv`
/// (`path,spacing,k,test_loss,test_err`).
fn ensembles_along(
    arch: &crate::arch::Arch,
    specs: &[PathSpec<'_>],
    opts: &PathOptions,
    state_data: &crate::data::Dataset,
    test: &crate::data::Dataset,
    device: &burn::tensor::Device,
) -> Result<String> {
    let mut csv = String::from("path,spacing,k,test_loss,test_err\n");
    for spec in specs.iter().filter(|s| s.repair.is_none()) {
        let arc = ArcLength::of(spec);
        for (spacing, by_length) in [("t", None), ("length", Some(&arc))] {
            for &k in &opts.curve_ensembles {
                let members = ensemble_ts(k, by_length)
                    .into_iter()
                    .map(|t| network_at(arch, spec, t, opts, state_data, device))
                    .collect::<Result<Vec<_>>>()?;
                let m = crate::eval::evaluate_ensemble(
                    arch,
                    &members.iter().collect::<Vec<_>>(),
                    test,
                    crate::eval::EVAL_BATCH,
                    device,
                );
                writeln!(csv, "{},{spacing},{k},{},{}", spec.name, m.loss, m.err())
                    .expect("write to string");
            }
        }
    }
    Ok(csv)
}

/// `path --hessian`: at `plan.points` evenly spaced points of every path but the repaired line,
/// the network (its state recomputed on `state_data` when the path resets it) and the
/// sharpness of its loss on the fixed evaluation subset of `train`; returns `hessian.csv`
/// (`path,t,loss,top_eigenvalue,trace,trace_se,method`).
fn sharpness_along(
    arch: &crate::arch::Arch,
    specs: &[PathSpec<'_>],
    plan: &HessianPlan,
    train: &crate::data::Dataset,
    state_data: &crate::data::Dataset,
    opts: &PathOptions,
    device: &burn::tensor::Device,
) -> Result<String> {
    let subset = crate::commands::hessian::evaluation_subset(
        train,
        plan.samples,
        plan.subset_seed,
        "--hessian-samples",
    )?;
    let mut csv = String::from("path,t,loss,top_eigenvalue,trace,trace_se,method\n");
    for spec in specs.iter().filter(|s| s.repair.is_none()) {
        for t in grid(plan.points) {
            let p = network_at(arch, spec, t, opts, state_data, device)?;
            let s = sharpness(arch, &p, &subset, &plan.sharpness)?;
            let opt = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
            writeln!(
                csv,
                "{},{t},{},{},{},{},{}",
                spec.name,
                s.loss,
                s.eigenvalues[0],
                opt(s.trace),
                opt(s.trace_se),
                s.method
            )
            .expect("write to string");
        }
    }
    Ok(csv)
}

/// `path` between two variational models: mode, one sample and ensembles at every point of the
/// line and of each curve (fitted between the same two models).
fn run_variational(
    opts: &PathOptions,
    record: RunRecord,
    model: &VModel,
    (a, b): (ParamSet, ParamSet),
    device: &burn::tensor::Device,
) -> Result<Value> {
    if opts.repair {
        return Err(Error::Config(
            "--repair applies to plain networks; the endpoints are variational models".into(),
        ));
    }
    let split = load_data(&opts.data)?;
    model.arch.check_data(&split.train)?;
    let train = match opts.train_subset {
        Some(n) => split.train.subset(n),
        None => split.train.clone(),
    };
    let mut paths = vec![(
        "line".to_string(),
        CurveKind::Polychain,
        vec![a.clone(), b.clone()],
    )];
    for (name, file) in &opts.curves {
        let c = Curve::load(file, device)?;
        if c.model != Model::Variational(model.clone()) {
            return Err(Error::Config(format!(
                "--curve {} is a {} curve but the endpoints are {} variational models",
                file.display(),
                c.model,
                Model::Variational(model.clone())
            )));
        }
        c.check_ends(&a, &b, &format!("--curve {}", file.display()))?;
        paths.push((name.clone(), c.kind, c.points));
    }
    let ts = grid(opts.points);
    let ks = &opts.sampling.ensembles;
    let mut rows = Vec::new();
    let mut summary = serde_json::Map::new();
    for (name, kind, points) in &paths {
        let r = vpath::profile(
            model,
            name,
            *kind,
            points,
            &ts,
            (&train, &split.test),
            (&opts.sampling, &opts.bn_sample),
            device,
        );
        summary.insert(name.clone(), vpath::summarize_path(&r, ks));
        rows.extend(r);
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    write_atomic(
        &opts.out.join("path.csv"),
        vpath::rows_csv(&rows, ks).as_bytes(),
    )?;
    let v = Value::Object(summary);
    write_json(&opts.out.join("summary.json"), &v)?;
    let mut result = v.clone();
    if let Some(s) = crate::eval::state::record(model.layout(), &train, &opts.bn_sample) {
        result["state_recomputed"] = s;
    }
    record.finish(&opts.out, result)?;
    Ok(v)
}

/// A short human-readable table of a path summary: per path, length and the test-error and
/// test-loss profile (start, end, max, barriers).
pub fn summary_table(v: &Value) -> String {
    let variational = v
        .as_object()
        .and_then(|m| m.values().next())
        .is_some_and(|p| p.get("test_mode_err").is_some());
    if variational {
        return variational_table(v);
    }
    let mut s = format!(
        "{:<12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "path", "length", "err(0)", "err(1)", "max err", "B_lin err", "max loss", "B_lin loss"
    );
    if let Some(map) = v.as_object() {
        for (name, p) in map {
            let f = |m: &str, k: &str| p[m][k].as_f64().unwrap_or(f64::NAN);
            writeln!(
                s,
                "{name:<12} {:>8.2} {:>8.2}% {:>8.2}% {:>8.2}% {:>8.2}% {:>9.4} {:>9.4}",
                p["length"].as_f64().unwrap_or(f64::NAN),
                100.0 * f("test_err", "start"),
                100.0 * f("test_err", "end"),
                100.0 * f("test_err", "max"),
                100.0 * f("test_err", "b_lin"),
                f("test_loss", "max"),
                f("test_loss", "b_lin"),
            )
            .expect("write to string");
        }
    }
    s
}

/// [`summary_table`] for variational paths: per path, the test error of the mode at both ends
/// and its maximum, the maximum test error of one sample and of the largest ensemble, and the
/// marginalised barrier of the test NLL.
fn variational_table(v: &Value) -> String {
    let mut s = format!(
        "{:<12} {:>8} {:>9} {:>9} {:>9} {:>10} {:>9} {:>10}\n",
        "path", "length", "mode(0)", "mode(1)", "max mode", "max sample", "max ens", "B_marg nll"
    );
    if let Some(map) = v.as_object() {
        for (name, p) in map {
            let f = |m: &str, k: &str| p[m][k].as_f64().unwrap_or(f64::NAN);
            // The largest ensemble's column (`test_ens{K}_err` with the largest K).
            let keys = p.as_object().into_iter().flat_map(|o| o.keys());
            let ens = vpath::largest_ensemble(keys.map(String::as_str))
                .map_or(f64::NAN, |k| f(&format!("test_ens{k}_err"), "max"));
            writeln!(
                s,
                "{name:<12} {:>8.2} {:>8.2}% {:>8.2}% {:>8.2}% {:>9.2}% {:>8.2}% {:>10.4}",
                p["length"].as_f64().unwrap_or(f64::NAN),
                100.0 * f("test_mode_err", "start"),
                100.0 * f("test_mode_err", "end"),
                100.0 * f("test_mode_err", "max"),
                100.0 * f("test_sample_err", "max"),
                100.0 * ens,
                p["marginal_barrier_test"].as_f64().unwrap_or(f64::NAN),
            )
            .expect("write to string");
        }
    }
    s
}
