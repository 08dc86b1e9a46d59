//! `modeconn simplex`: a mode-connecting simplicial complex (Benton et al. 2021, SPRO;
//! [`crate::simplex`]). From `m` trained modes, `--connectors k` vertices are added one at a
//! time, each initialised at the centroid of the vertices so far and trained alone with the one
//! loop; after each, the complex is evaluated at `--eval-samples` seeded Dirichlet points and at
//! its vertices. Writes `simplex.safetensors` (every vertex), `simplex.csv` (one row per number
//! of connectors), `samples.csv` (every evaluated point), `triangle.csv` (a 2-simplex on a
//! barycentric grid), `summary.json`, `run.json`, the figures `simplex.{png,svg}` and
//! `triangle.{png,svg}`, and per connector its run directory (`connector<j>/`: checkpoint,
//! metrics.jsonl, vertex.safetensors).

use std::fmt::Write as _;
use std::path::PathBuf;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{eval_device, load_data};
use crate::arch::Arch;
use crate::data::{DataConfig, Split};
use crate::error::{Error, Result};
use crate::eval::family::Family;
use crate::network_file::{load_model, save_model};
use crate::params::ParamSet;
use crate::params::io::{FileMeta, write_atomic};
use crate::report::{RunRecord, write_json};
use crate::simplex::{Complex, SimplexObjective, log_volume, sample_point};
use crate::train::{LoopConfig, RunControl, fit};

/// Validated options of `modeconn simplex`.
#[derive(Debug, Clone)]
pub struct SimplexOptions {
    /// The fixed modes (model files, one architecture).
    pub modes: Vec<PathBuf>,
    /// Connectors to add.
    pub connectors: usize,
    /// Sampled points per step.
    pub samples: usize,
    /// λ before normalisation by the log-volume of a random-init complex.
    pub volume_weight: f64,
    /// Evaluated points of the complex after each connector.
    pub eval_samples: usize,
    /// Barycentric grid resolution of the 2-simplex figure.
    pub resolution: usize,
    /// Train on this many training samples drawn with the seed.
    pub train_subset: Option<usize>,
    /// Data.
    pub data: DataConfig,
    /// The loop of each connector.
    pub loop_cfg: LoopConfig,
    /// Output directory.
    pub out: PathBuf,
    /// Resume / quiet (`stop_after` applies to each connector's run).
    pub ctl: RunControl,
}

/// Seed of the random-init complex that normalises λ, apart from the loop's.
const RANDOM_COMPLEX_SEED: u64 = 0x51_3b1e;
/// Seed of the evaluated points, apart from the loop's.
const EVAL_SEED: u64 = 0xe7a1;

/// `λ / |log V₀|`, `V₀` the volume of a complex of random initialisations with `modes` modes
/// and `connectors` connectors (SPRO's normalisation: the volume term is on the scale of one
/// random simplex whatever the network's size).
fn normalised_weight(arch: &Arch, lambda: f64, modes: usize, connectors: usize, seed: u64) -> f64 {
    let device = eval_device();
    let inits: Vec<ParamSet> = (0..modes + connectors)
        .map(|v| arch.init(seed ^ RANDOM_COMPLEX_SEED ^ ((v as u64) << 32), &device))
        .collect();
    let refs: Vec<&ParamSet> = inits.iter().collect();
    match log_volume(&refs, modes) {
        Some(lv) if lv.abs() > 1e-12 => lambda / lv.abs(),
        _ => lambda,
    }
}

/// Metrics of one evaluated point: train loss and error, test loss and error.
type Point = [f64; 4];

fn point_of(m: &[crate::eval::Metrics]) -> Point {
    [m[0].loss, m[0].err(), m[1].loss, m[1].err()]
}

/// Evaluates `cs` (coefficients over the complex's vertices) on the training and test sets.
fn evaluate(complex: &Complex, split: &Split, cs: &[Vec<f64>]) -> Vec<Point> {
    let device = eval_device();
    let vertices = complex.vertices();
    let layout = vertices[0].layout().clone();
    let basis = vertices.iter().map(|v| v.to_flat()).collect();
    let family = Family::new(
        &complex.arch,
        layout,
        basis,
        &[&split.train, &split.test],
        &device,
    );
    family.metrics_all(cs).iter().map(|m| point_of(m)).collect()
}

/// Mean and maximum of column `k`.
fn mean_max(points: &[Point], k: usize) -> (f64, f64) {
    let mean = points.iter().map(|p| p[k]).sum::<f64>() / points.len() as f64;
    let max = points
        .iter()
        .map(|p| p[k])
        .fold(f64::NEG_INFINITY, f64::max);
    (mean, max)
}

/// Runs `simplex`; returns the summary (also in `summary.json`).
pub fn run(opts: &SimplexOptions, argv: Vec<String>) -> Result<Value> {
    if opts.modes.len() < 2 {
        return Err(Error::Config(format!(
            "--modes: a simplex joins at least two modes, got {}",
            opts.modes.len()
        )));
    }
    if opts.connectors == 0 {
        return Err(Error::Config("--connectors must be at least 1".into()));
    }
    if opts.samples == 0 {
        return Err(Error::Config("--samples must be at least 1".into()));
    }
    if opts.eval_samples == 0 {
        return Err(Error::Config("--eval-samples must be at least 1".into()));
    }
    if opts.resolution == 0 {
        return Err(Error::Config("--resolution must be at least 1".into()));
    }
    if !(opts.volume_weight >= 0.0 && opts.volume_weight.is_finite()) {
        return Err(Error::Config(format!(
            "--volume-weight {}: a non-negative number",
            opts.volume_weight
        )));
    }
    if opts.train_subset == Some(0) {
        return Err(Error::Config("--train-subset must be at least 1".into()));
    }
    opts.loop_cfg.validate()?;
    let device = eval_device();
    let mut modes = Vec::new();
    let mut arch: Option<Arch> = None;
    for path in &opts.modes {
        let (a, p) = load_model(path, &device)?;
        if let Some(first) = &arch
            && first.to_string() != a.to_string()
        {
            return Err(Error::Config(format!(
                "--modes {}: architecture {a} differs from the first mode's {first}",
                path.display()
            )));
        }
        arch = Some(a);
        modes.push(p);
    }
    let arch = arch.expect("at least two modes");
    let mut split = load_data(&opts.data)?;
    if let Some(n) = opts.train_subset {
        split.train = split.train.random_subset(n, opts.loop_cfg.seed);
    }
    arch.check_data(&split.train)?;
    let m = modes.len();
    let vertices = m + opts.connectors;
    arch.check_memory(
        vertices + opts.samples + crate::arch::memory::TRAIN_COPIES + opts.loop_cfg.optim.slots(),
        opts.loop_cfg.batch_size,
    )?;
    let config = json!({"modes": opts.modes, "connectors": opts.connectors,
        "samples": opts.samples, "volume_weight": opts.volume_weight,
        "eval_samples": opts.eval_samples, "resolution": opts.resolution,
        "train_subset": opts.train_subset, "data": opts.data, "arch": arch.to_string(),
        "loop": opts.loop_cfg});
    let record = RunRecord::start(argv, config.clone(), Some(opts.loop_cfg.seed));
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let say = |msg: String| {
        if !opts.ctl.quiet {
            eprintln!("simplex: {msg}");
        }
    };

    let mut complex = Complex::new(arch.clone(), modes)?;
    let mut table = String::from(
        "connectors,vertices,log_volume,lambda,train_loss_mean,train_loss_max,test_loss_mean,test_loss_max,test_err_mean,test_err_max,newest_test_loss,newest_test_err\n",
    );
    let mut samples_csv =
        String::from("connectors,point,kind,train_loss,train_err,test_loss,test_err\n");
    let mut stages = Vec::new();
    for j in 0..=opts.connectors {
        let lambda = if j == 0 {
            0.0
        } else {
            normalised_weight(&arch, opts.volume_weight, m, j, opts.loop_cfg.seed)
        };
        if j > 0 {
            let dir = opts.out.join(format!("connector{j}"));
            let vertex_file = dir.join("vertex.safetensors");
            let connector = if opts.ctl.resume && vertex_file.exists() {
                say(format!("connector {j}: reusing {}", vertex_file.display()));
                load_model(&vertex_file, &device)?.1
            } else {
                say(format!(
                    "training connector {j}/{} (λ = {lambda:.3e})",
                    opts.connectors
                ));
                let init = complex.centroid();
                let mut obj = SimplexObjective::new(
                    complex.clone(),
                    opts.samples,
                    lambda,
                    &split.test,
                    &split.train,
                    device.clone(),
                )?;
                let mut cfg = opts.loop_cfg.clone();
                cfg.seed = opts.loop_cfg.seed + j as u64;
                let fitted = fit(
                    init,
                    &split.train,
                    &mut obj,
                    &cfg,
                    &opts.ctl,
                    &dir,
                    &FileMeta::new("simplex-connector", &arch.to_string()),
                    &format!("{config}/connector{j}"),
                )?;
                if !fitted.finished {
                    say(format!(
                        "stopped after epoch {} of connector {j}; rerun with --resume",
                        fitted.epochs_done
                    ));
                    complex.save(&opts.out.join("simplex.safetensors"))?;
                    return Ok(
                        json!({"stopped_at_connector": j, "epochs_done": fitted.epochs_done}),
                    );
                }
                save_model(&vertex_file, &arch, &fitted.params)?;
                fitted.params
            };
            complex.connectors.push(connector);
        }
        // Seeded points of the complex, then its vertices.
        let mut rng = ChaCha8Rng::seed_from_u64(opts.loop_cfg.seed ^ EVAL_SEED);
        rng.set_stream(j as u64);
        let n = complex.modes.len() + complex.connectors.len();
        let mut cs: Vec<Vec<f64>> = (0..opts.eval_samples)
            .map(|_| sample_point(m, j, &mut rng))
            .collect();
        cs.extend((0..n).map(|v| (0..n).map(|u| f64::from(u == v)).collect()));
        let pts = evaluate(&complex, &split, &cs);
        let (sampled, verts) = pts.split_at(opts.eval_samples);
        for (i, p) in pts.iter().enumerate() {
            let kind = if i < opts.eval_samples {
                "sample".to_string()
            } else if i - opts.eval_samples < m {
                format!("mode{}", i - opts.eval_samples)
            } else {
                format!("connector{}", i - opts.eval_samples - m + 1)
            };
            let _ = writeln!(
                samples_csv,
                "{j},{i},{kind},{},{},{},{}",
                p[0], p[1], p[2], p[3]
            );
        }
        let newest = verts[n - 1];
        let (trl, trl_max) = mean_max(sampled, 0);
        let (tel, tel_max) = mean_max(sampled, 2);
        let (tee, tee_max) = mean_max(sampled, 3);
        let log_v = complex.log_volume();
        let _ = writeln!(
            table,
            "{j},{n},{},{lambda},{trl},{trl_max},{tel},{tel_max},{tee},{tee_max},{},{}",
            log_v.map_or("".into(), |v| v.to_string()),
            newest[2],
            newest[3]
        );
        say(format!(
            "{j} connector(s): sampled test error mean {:.2}% max {:.2}%, train loss mean {trl:.4}",
            100.0 * tee,
            100.0 * tee_max
        ));
        stages.push(json!({
            "connectors": j,
            "vertices": n,
            "log_volume": log_v,
            "lambda": lambda,
            "train_loss_mean": trl, "train_loss_max": trl_max,
            "test_loss_mean": tel, "test_loss_max": tel_max,
            "test_err_mean": tee, "test_err_max": tee_max,
            "vertex_test_err": verts.iter().map(|p| p[3]).collect::<Vec<_>>(),
        }));
    }
    complex.save(&opts.out.join("simplex.safetensors"))?;
    write_atomic(&opts.out.join("simplex.csv"), table.as_bytes())?;
    write_atomic(&opts.out.join("samples.csv"), samples_csv.as_bytes())?;
    let triangle = triangle(&complex, &split, opts.resolution, &opts.out)?;
    let summary = json!({
        "arch": arch.to_string(),
        "data": split.train.name,
        "params": arch.layout().numel(),
        "modes": m,
        "connectors": opts.connectors,
        "samples": opts.samples,
        "volume_weight": opts.volume_weight,
        "eval_samples": opts.eval_samples,
        "stages": stages,
        "triangle": triangle,
    });
    write_json(&opts.out.join("summary.json"), &summary)?;
    crate::plot::figures::simplex_figures(&opts.out, &opts.out, None)?;
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}

/// The loss over one 2-simplex on a barycentric grid of `r` steps per edge: the face
/// `{mode 0, connector 1, connector 2}` of the complex, or with one connector the triangle
/// `{mode 0, connector 1, mode 1}` whose two edges at the connector are the complex and whose
/// third is the straight line. Writes `triangle.csv` (`a,b,c` on the named vertices, then the
/// train and test metrics); returns the vertex names.
fn triangle(complex: &Complex, split: &Split, r: usize, out: &std::path::Path) -> Result<Value> {
    let m = complex.modes.len();
    let (names, idx) = if complex.connectors.len() >= 2 {
        (["mode 0", "connector 1", "connector 2"], [0, m, m + 1])
    } else {
        (["mode 0", "connector 1", "mode 1"], [0, m, 1])
    };
    let n = m + complex.connectors.len();
    let mut abc = Vec::new();
    let mut cs = Vec::new();
    for i in 0..=r {
        for k in 0..=r - i {
            let (b, c) = (i as f64 / r as f64, k as f64 / r as f64);
            let a = (r - i - k) as f64 / r as f64;
            let mut coeffs = vec![0.0; n];
            coeffs[idx[0]] += a;
            coeffs[idx[1]] += b;
            coeffs[idx[2]] += c;
            abc.push((a, b, c));
            cs.push(coeffs);
        }
    }
    let pts = evaluate(complex, split, &cs);
    let mut csv = String::from("a,b,c,train_loss,train_err,test_loss,test_err\n");
    for ((a, b, c), p) in abc.iter().zip(&pts) {
        let _ = writeln!(csv, "{a},{b},{c},{},{},{},{}", p[0], p[1], p[2], p[3]);
    }
    write_atomic(&out.join("triangle.csv"), csv.as_bytes())?;
    Ok(json!({"vertices": names, "resolution": r}))
}

/// A one-screen table of the summary.
pub fn table(v: &Value) -> String {
    if let Some(j) = v["stopped_at_connector"].as_u64() {
        return format!(
            "stopped after epoch {} of connector {j}; rerun with --resume to go on\n",
            v["epochs_done"]
        );
    }
    let mut t = format!(
        "{} ({} parameters), {} modes: the complex over {} sampled points per stage\n{:>10} {:>12} {:>14} {:>14} {:>14}\n",
        v["arch"].as_str().unwrap_or_default(),
        v["params"],
        v["modes"],
        v["eval_samples"],
        "connectors",
        "log volume",
        "train loss",
        "test err mean",
        "test err max"
    );
    for s in v["stages"].as_array().into_iter().flatten() {
        let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            t,
            "{:>10} {:>12} {:>14.4} {:>13.2}% {:>13.2}%",
            s["connectors"],
            s["log_volume"]
                .as_f64()
                .map_or("-".to_string(), |x| format!("{x:.1}")),
            f("train_loss_mean"),
            100.0 * f("test_err_mean"),
            100.0 * f("test_err_max")
        );
    }
    t
}
