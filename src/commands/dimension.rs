//! `modeconn dimension`: the local dimension of the set of minima at an interpolating network
//! (Cooper 2018). A plain ReLU MLP is fitted by squared error to one-hot targets on
//! N seeded training points, without weight decay, until `‖r‖₂ ≤ tol` (full-batch Adam, then
//! minimum-norm Levenberg–Marquardt steps, all in f64); at the fitted θ the singular values of
//! the residual Jacobian `J` (`N·K × D`, formed in f64, or when it does not fit `--max-memory`
//! never formed: Lanczos on `JJᵀ` from the products `J·v` and `Jᵀu`) give the numerical rank at
//! their largest log-gap, and the dimension of the minima set there is `D − rank J`, reported beside
//! the generic prediction `D − N·K`, the `H` exact rescaling directions of the hidden ReLU units
//! and the units dead on every point. Writes `spectrum.csv`, `dimension.json`,
//! `model.safetensors` (θ rounded to f32), `run.json` and the figure `spectrum.{png,svg}`.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::{default_arch, eval_device, load_data};
use crate::arch::Arch;
use crate::data::{DataConfig, Split};
use crate::error::{Error, Result};
use crate::minima::{FitConfig, JacobianMode, ReluMlp, Spectrum, fit, lanczos_spectrum};
use crate::network_file::{load_model, save_model};
use crate::params::ParamSet;
use crate::params::io::write_atomic;
use crate::report::{RunRecord, write_json};

/// Validated options of `modeconn dimension`.
#[derive(Debug, Clone)]
pub struct DimensionOptions {
    /// The architecture (a plain MLP); ignored when `model` is given.
    pub arch: Option<Arch>,
    /// Start from this network instead of a seeded initialisation.
    pub model: Option<PathBuf>,
    /// Data.
    pub data: DataConfig,
    /// Number of training points N.
    pub points: usize,
    /// Seed of the choice of the N points.
    pub points_seed: u64,
    /// Seed of the initial weights.
    pub seed: u64,
    /// Full-batch Adam steps before the polish.
    pub adam_steps: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Target residual norm `‖r‖₂`.
    pub tol: f64,
    /// At most this many accepted Levenberg–Marquardt steps.
    pub max_lm: usize,
    /// Switch to the matrix-free path when the dense Jacobian (with its Gram matrix and the
    /// SVD's copy) needs more than this many bytes; refuse when that path does too.
    pub max_memory: u64,
    /// Take the matrix-free path whatever the memory.
    pub matrix_free: bool,
    /// No progress lines.
    pub quiet: bool,
    /// Output directory.
    pub out: PathBuf,
}

/// Runs `dimension`; returns the contents of `dimension.json`.
pub fn run(opts: &DimensionOptions, argv: Vec<String>) -> Result<Value> {
    if opts.points == 0 {
        return Err(Error::Config("--points must be at least 1".into()));
    }
    if !(opts.tol > 0.0 && opts.tol.is_finite()) {
        return Err(Error::Config("--tol must be a positive number".into()));
    }
    if !(opts.lr > 0.0 && opts.lr.is_finite()) {
        return Err(Error::Config("--lr must be a positive number".into()));
    }
    let record = RunRecord::start(
        argv,
        json!({"arch": opts.arch.as_ref().map(|a| a.to_string()), "model": opts.model,
               "data": opts.data, "points": opts.points, "points_seed": opts.points_seed,
               "adam_steps": opts.adam_steps, "lr": opts.lr, "tol": opts.tol,
               "max_lm": opts.max_lm}),
        Some(opts.seed),
    );
    let device = eval_device();
    let split = load_data(&opts.data)?;
    let (arch, start) = match &opts.model {
        Some(path) => {
            let (arch, p) = load_model(path, &device)?;
            (arch, Some(p))
        }
        None => (
            opts.arch.clone().unwrap_or_else(|| default_arch(&split)),
            None,
        ),
    };
    let modes: &[JacobianMode] = match opts.matrix_free {
        true => &[JacobianMode::MatrixFree],
        false => &[JacobianMode::Dense, JacobianMode::MatrixFree],
    };
    let (Problem { net, x, y, name }, mode) = problem(
        &arch,
        &split,
        opts.points,
        opts.points_seed,
        opts.max_memory,
        modes,
    )?;
    let (d, k, n) = (net.num_params(), net.outputs(), opts.points);
    let m = n * k;
    let bytes = mode.bytes(m, d);
    if mode == JacobianMode::MatrixFree && !opts.quiet {
        eprintln!(
            "dimension: matrix-free path (J = {m} × {d} is never formed; {:.2} GiB)",
            bytes as f64 / GIB
        );
    }
    let theta0: Vec<f64> = start
        .unwrap_or_else(|| arch.init(opts.seed, &device))
        .to_flat_trained()
        .into_iter()
        .map(f64::from)
        .collect();
    let cfg = FitConfig {
        adam_steps: opts.adam_steps,
        lr: opts.lr,
        tol: opts.tol,
        max_lm: opts.max_lm,
        mode,
    };
    let quiet = opts.quiet;
    let fitted = fit(&net, theta0, &x, &y, cfg, |phase, step, r| {
        if !quiet {
            eprintln!("dimension: {phase} step {step}: ‖r‖ = {r:.3e}");
        }
    });
    let dense = mode == JacobianMode::Dense;
    let res = net.residuals(&fitted.theta, &x, &y, dense);
    let spectrum = match mode {
        JacobianMode::Dense => Spectrum::of(&res.jac_matrix())?,
        JacobianMode::MatrixFree => lanczos_spectrum(
            m,
            |u| net.jac_times(&fitted.theta, &x, &net.jac_t_times(&fitted.theta, &x, u)),
            opts.seed,
        )?,
    };
    if fitted.residual > opts.tol {
        let why = match spectrum.rank < m {
            true => format!(
                "rank J = {} < N·K = {m} there, so the Gauss–Newton steps cannot reach the rest: widen --arch or use fewer --points",
                spectrum.rank
            ),
            false => "raise --adam-steps or --max-lm".to_string(),
        };
        return Err(Error::Config(format!(
            "no interpolating fit: ‖r‖ = {:.3e} > --tol {:.0e} after {} Adam steps (‖r‖ = {:.3e}) and {} Levenberg–Marquardt steps; {why}",
            fitted.residual, opts.tol, opts.adam_steps, fitted.residual_after_adam, fitted.lm_steps
        )));
    }
    let sigma1 = spectrum.values.first().copied().unwrap_or(0.0);
    let rescaling = net
        .rescaling_directions(&fitted.theta)
        .iter()
        .map(|v| {
            let jv = match dense {
                true => res.jac_times(v),
                false => net.jac_times(&fitted.theta, &x, v),
            };
            let norm = |u: &[f64]| u.iter().map(|a| a * a).sum::<f64>().sqrt();
            norm(&jv) / (sigma1 * norm(v)).max(f64::MIN_POSITIVE)
        })
        .fold(0.0f64, f64::max);
    let dead = net.dead_units(&fitted.theta, &x);
    let theta32: Vec<f32> = fitted.theta.iter().map(|&v| v as f32).collect();
    let rounded: Vec<f64> = theta32.iter().map(|&v| f64::from(v)).collect();
    let residual_f32 = net.residuals(&rounded, &x, &y, false).norm();

    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let mut csv = String::from("index,sigma,relative\n");
    for (i, s) in spectrum.values.iter().enumerate() {
        let _ = writeln!(
            csv,
            "{},{s:e},{:e}",
            i + 1,
            s / sigma1.max(f64::MIN_POSITIVE)
        );
    }
    write_atomic(&opts.out.join("spectrum.csv"), csv.as_bytes())?;
    let params = ParamSet::from_flat(arch.layout(), &theta32, &device)?;
    save_model(&opts.out.join("model.safetensors"), &arch, &params)?;
    let summary = json!({
        "arch": arch.to_string(),
        "data": name,
        "params": d,
        "points": n,
        "outputs": k,
        "constraints": m,
        "hidden_units": net.hidden_units(),
        "dead_units": dead,
        "residual_after_adam": fitted.residual_after_adam,
        "residual": fitted.residual,
        "residual_f32": residual_f32,
        "lm_steps": fitted.lm_steps,
        "sigma_max": sigma1,
        "sigma_min": spectrum.values.last().copied().unwrap_or(0.0),
        "floor": spectrum.floor,
        "rank": spectrum.rank,
        "gap_ratio": spectrum.gap_ratio,
        "dimension": d - spectrum.rank,
        "predicted_dimension": d as i64 - m as i64,
        "rescaling_max_relative": rescaling,
        "jacobian": mode.name(),
        "jacobian_bytes": bytes,
    });
    write_json(&opts.out.join("dimension.json"), &summary)?;
    crate::plot::figures::spectrum_figure(&opts.out, &opts.out, None)?;
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}

const GIB: f64 = (1u64 << 30) as f64;

/// The interpolating problem: a plain ReLU MLP and N training points with one-hot targets.
pub struct Problem {
    /// The network in f64.
    pub net: ReluMlp,
    /// Inputs `[N, d0]` row-major.
    pub x: Vec<f64>,
    /// One-hot targets `[N, K]` row-major.
    pub y: Vec<f64>,
    /// The dataset's name.
    pub name: String,
}

/// The N points drawn with `points_seed` from `split`'s training set (the subset
/// `train --train-subset N --seed S` and `connect` use) for the plain MLP `arch`, after checking
/// the architecture and the data; the first of `modes` whose memory fits `max_memory` bytes is
/// returned with it (none: a one-line error with every estimate).
pub fn problem(
    arch: &Arch,
    split: &Split,
    points: usize,
    points_seed: u64,
    max_memory: u64,
    modes: &[JacobianMode],
) -> Result<(Problem, JacobianMode)> {
    let net = ReluMlp::of(arch)?;
    arch.check_data(&split.train)?;
    if net.outputs() != split.train.classes {
        return Err(Error::Config(format!(
            "--arch {arch} has {} outputs but the data has {} classes",
            net.outputs(),
            split.train.classes
        )));
    }
    if points > split.train.len() {
        return Err(Error::Config(format!(
            "--points {points} exceeds the {} training samples of {}",
            split.train.len(),
            split.train.name
        )));
    }
    let (d, k) = (net.num_params(), net.outputs());
    let m = points * k;
    let Some(mode) = modes
        .iter()
        .copied()
        .find(|md| md.bytes(m, d) <= max_memory)
    else {
        let estimates: Vec<String> = modes
            .iter()
            .map(|md| {
                let what = match md {
                    JacobianMode::Dense => "in f64 with its Gram matrix and the SVD's copy",
                    JacobianMode::MatrixFree => "matrix-free (the Lanczos basis)",
                };
                format!("{:.1} GiB {what}", md.bytes(m, d) as f64 / GIB)
            })
            .collect();
        return Err(Error::Config(format!(
            "the Jacobian is N·K × D = {m} × {d}: {}, above --max-memory {:.1} GiB; use fewer --points or a narrower --arch",
            estimates.join(", or "),
            max_memory as f64 / GIB
        )));
    };
    let data = split.train.random_subset(points, points_seed);
    let x = data.x.iter().map(|&v| f64::from(v)).collect();
    let y = data
        .y
        .iter()
        .flat_map(|&c| (0..k).map(move |j| if j == c as usize { 1.0 } else { 0.0 }))
        .collect();
    Ok((
        Problem {
            net,
            x,
            y,
            name: data.name,
        },
        mode,
    ))
}

/// A one-screen report of `dimension.json`.
pub fn table(v: &Value) -> String {
    let g = |k: &str| v[k].to_string();
    format!(
        "{arch} on {n} points of {data}: D = {d}, N·K = {m}, H = {h} hidden units ({dead} dead)\n\
         residual ‖r‖ = {r} after {lm} Levenberg–Marquardt steps\n\
         rank J = {rank} (gap ratio {gap:.3e}), dimension D − rank = {dim} (generic: D − N·K = {pred})\n\
         rescaling directions: max ‖Jv‖/(σ₁‖v‖) = {resc:.2e}\n",
        arch = v["arch"].as_str().unwrap_or_default(),
        n = g("points"),
        data = v["data"].as_str().unwrap_or_default(),
        d = g("params"),
        m = g("constraints"),
        h = g("hidden_units"),
        dead = g("dead_units"),
        r = g("residual"),
        lm = g("lm_steps"),
        rank = g("rank"),
        gap = v["gap_ratio"].as_f64().unwrap_or(f64::NAN),
        dim = g("dimension"),
        pred = g("predicted_dimension"),
        resc = v["rescaling_max_relative"].as_f64().unwrap_or(f64::NAN),
    )
}
