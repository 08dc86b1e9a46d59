//! `modeconn probe`: the permuted-minima experiment in one go (Ainsworth et al. 2022; Garipov et
//! al. 2018). For two trained networks w1, w2: the straight line and a fitted one-bend chain for
//! the pairs (w1, w2), (w1, π(w1)) for a random π, (w1, π(w2)), and (w1, align(w2)); a table of
//! barriers (B_max and B_lin, on test loss and error) in `summary.json`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::align::{AlignMethod, AlignOptions};
use super::connect::ConnectOptions;
use super::path::PathOptions;
use super::permute::PermuteOptions;
use crate::curve::CurveKind;
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::permute::{Correlation, MatchOptions};
use crate::report::{RunRecord, write_json};
use crate::train::{LoopConfig, RunControl};

/// Validated options of `modeconn probe`.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// w1.
    pub a: PathBuf,
    /// w2.
    pub b: PathBuf,
    /// How w2 is aligned to w1.
    pub align: AlignMethod,
    /// Seed of the random permutations.
    pub perm_seed: u64,
    /// Curve training loop.
    pub loop_cfg: LoopConfig,
    /// Weight decay on the sampled curve point.
    pub wd: f64,
    /// Path grid size.
    pub points: usize,
    /// Train subset for path metrics.
    pub train_subset: Option<usize>,
    /// The samples of the state recomputation (networks with batch normalisation).
    pub bn_sample: crate::eval::state::StateSample,
    /// Also evaluate each line with REPAIR (networks without normalisation).
    pub repair: bool,
    /// Data.
    pub data: DataConfig,
    /// Output directory.
    pub out: PathBuf,
    /// Quiet.
    pub quiet: bool,
}

/// The paths of each pair in the table (`line-repair` with `--repair`).
const PATHS: [&str; 3] = ["line", "line-repair", "chain"];

/// The model file a sub-step wrote into `dir` (`variational.safetensors` for variational
/// endpoints).
fn model(dir: &Path, variational: bool) -> PathBuf {
    dir.join(match variational {
        true => "variational.safetensors",
        false => "model.safetensors",
    })
}

/// The command line of a sub-step, recorded in its `run.json`: `modeconn COMMAND ARGS...`.
fn sub_argv(command: &str, args: &[&dyn std::fmt::Display], more: Vec<String>) -> Vec<String> {
    ["modeconn", command]
        .into_iter()
        .map(String::from)
        .chain(args.iter().map(|a| a.to_string()))
        .chain(more)
        .collect()
}

/// Runs the probe; returns (and writes) the barrier table.
pub fn run(opts: &ProbeOptions, argv: Vec<String>) -> Result<Value> {
    opts.bn_sample.validate()?;
    let variational = crate::network_file::holds_variational(&opts.a)?;
    if variational && opts.repair {
        return Err(Error::Config(
            "--repair applies to plain networks; the endpoints are variational models".into(),
        ));
    }
    if variational && opts.align == AlignMethod::Activations {
        return Err(Error::Config(
            "--align activations: variational models are aligned by weight matching (--align weights)".into(),
        ));
    }
    if opts.repair {
        crate::eval::repair::check(
            &crate::network_file::load_model(&opts.a, &crate::backend::device())?.0,
        )?;
    }
    let record = RunRecord::start(
        argv.clone(),
        json!({"a": opts.a, "b": opts.b, "align": opts.align, "perm_seed": opts.perm_seed,
               "loop": opts.loop_cfg, "wd": opts.wd, "points": opts.points,
               "train_subset": opts.train_subset, "bn_sample": opts.bn_sample,
               "repair": opts.repair,
               "data": opts.data}),
        Some(opts.loop_cfg.seed),
    );
    let out = &opts.out;
    let say = |s: &str| {
        if !opts.quiet {
            eprintln!("probe: {s}");
        }
    };
    say("random permutations of w1 and w2");
    for (src, dir, seed) in [
        (&opts.a, "pi_w1", opts.perm_seed),
        (&opts.b, "pi_w2", opts.perm_seed + 1),
    ] {
        let out = out.join(dir);
        let seed_s = seed.to_string();
        let cmd = sub_argv(
            "permute",
            &[
                &"--model",
                &src.display(),
                &"--seed",
                &seed_s,
                &"--out",
                &out.display(),
            ],
            vec![],
        );
        super::permute::run(
            &PermuteOptions {
                model: src.clone(),
                seed,
                out,
            },
            cmd,
        )?;
    }
    say("aligning w2 to w1");
    let align_out = out.join("align_w2");
    let method = match opts.align {
        AlignMethod::Weights => "weights",
        AlignMethod::Activations => "activations",
    };
    let cmd = sub_argv(
        "align",
        &[
            &"--model",
            &opts.b.display(),
            &"--to",
            &opts.a.display(),
            &"--method",
            &method,
            &"--out",
            &align_out.display(),
        ],
        opts.data.to_args(),
    );
    super::align::run(
        &AlignOptions {
            model: opts.b.clone(),
            to: opts.a.clone(),
            method: opts.align,
            matching: MatchOptions::default(),
            data: opts.data.clone(),
            correlation: Correlation::Cross,
            samples: None,
            out: align_out,
        },
        cmd,
    )?;
    let pairs: [(&str, PathBuf); 4] = [
        ("w1-w2", opts.b.clone()),
        ("w1-pi_w1", model(&out.join("pi_w1"), variational)),
        ("w1-pi_w2", model(&out.join("pi_w2"), variational)),
        ("w1-align_w2", model(&out.join("align_w2"), variational)),
    ];
    let mut table = Map::new();
    for (name, b) in pairs {
        say(&format!("{name}: fitting a chain"));
        let dir = out.join(name);
        let chain = dir.join("chain");
        let mut more = opts.data.to_args();
        more.extend(opts.loop_cfg.to_args(opts.wd));
        if opts.quiet {
            more.push("-q".into());
        }
        let cmd = sub_argv(
            "connect",
            &[
                &"--a",
                &opts.a.display(),
                &"--b",
                &b.display(),
                &"--curve",
                &"polychain",
                &"--out",
                &chain.display(),
            ],
            more,
        );
        super::connect::run(
            &ConnectOptions {
                a: opts.a.clone(),
                b: b.clone(),
                kind: CurveKind::Polychain,
                bends: 1,
                train_ends: false,
                train_subset: None,
                wd: opts.wd,
                objective: Default::default(),
                train_samples: 1,
                loss: Default::default(),
                mask: None,
                data: opts.data.clone(),
                loop_cfg: opts.loop_cfg.clone(),
                out: chain,
                ctl: RunControl {
                    resume: false,
                    stop_after: None,
                    quiet: opts.quiet,
                    ..Default::default()
                },
            },
            cmd,
        )?;
        say(&format!("{name}: evaluating line and chain"));
        let path_out = dir.join("path");
        let curve = format!("chain={}", dir.join("chain/curve.safetensors").display());
        let points = opts.points.to_string();
        let mut more = opts.data.to_args();
        if let Some(n) = opts.train_subset {
            more.extend(["--train-subset".to_string(), n.to_string()]);
        }
        if let Some(n) = opts.bn_sample.batches {
            more.extend(["--bn-batches".to_string(), n.to_string()]);
            more.extend(["--bn-seed".to_string(), opts.bn_sample.seed.to_string()]);
        }
        if opts.repair {
            more.push("--repair".into());
        }
        let cmd = sub_argv(
            "path",
            &[
                &"--a",
                &opts.a.display(),
                &"--b",
                &b.display(),
                &"--curve",
                &curve,
                &"--points",
                &points,
                &"--out",
                &path_out.display(),
            ],
            more,
        );
        let s = super::path::run(
            &PathOptions {
                a: opts.a.clone(),
                b,
                curves: vec![("chain".into(), dir.join("chain/curve.safetensors"))],
                points: opts.points,
                train_subset: opts.train_subset,
                bn_sample: opts.bn_sample,
                bn_reset: true,
                repair: opts.repair,
                sampling: Default::default(),
                hessian: None,
                curve_ensembles: Vec::new(),
                data: opts.data.clone(),
                out: path_out,
            },
            cmd,
        )?;
        let mut row = Map::new();
        // Variational paths: the mode's and one sample's metrics, and the marginalised barrier.
        let metrics: &[&str] = match variational {
            false => &["test_loss", "test_err"],
            true => &[
                "test_mode_loss",
                "test_mode_err",
                "test_sample_loss",
                "test_sample_err",
            ],
        };
        for path in PATHS {
            let p = &s[path];
            if p.is_null() {
                continue;
            }
            let mut r = Map::new();
            for m in metrics {
                r.insert(
                    m.to_string(),
                    json!({"b_max": p[m]["b_max"], "b_lin": p[m]["b_lin"], "max": p[m]["max"]}),
                );
            }
            r.insert("length".into(), p["length"].clone());
            if variational {
                r.insert(
                    "marginal_barrier_test".into(),
                    p["marginal_barrier_test"].clone(),
                );
            }
            row.insert(path.into(), Value::Object(r));
        }
        table.insert(name.into(), Value::Object(row));
    }
    let v = Value::Object(table);
    write_json(&out.join("summary.json"), &v)?;
    record.finish(out, v.clone())?;
    Ok(v)
}

/// The barrier table as text: one row per pair and path (for variational pairs, of the mode,
/// with the marginalised barrier of the one-sample NLL).
pub fn table(v: &Value) -> String {
    let variational = v
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|row| row.as_object()?.values().next().cloned())
        .is_some_and(|p| p.get("test_mode_err").is_some());
    let (loss, err) = match variational {
        true => ("test_mode_loss", "test_mode_err"),
        false => ("test_loss", "test_err"),
    };
    let mut s = format!(
        "{:<12} {:<11} {:>10} {:>10} {:>11} {:>11}{}\n",
        "pair",
        "path",
        "B_max loss",
        "B_lin loss",
        "B_max err%",
        "B_lin err%",
        if variational { "  B_marg nll" } else { "" }
    );
    if let Some(m) = v.as_object() {
        for (pair, row) in m {
            for path in PATHS {
                let p = &row[path];
                if p.is_null() {
                    continue;
                }
                let f = |m: &str, k: &str| p[m][k].as_f64().unwrap_or(f64::NAN);
                s.push_str(&format!(
                    "{pair:<12} {path:<11} {:>10.4} {:>10.4} {:>11.2} {:>11.2}",
                    f(loss, "b_max"),
                    f(loss, "b_lin"),
                    100.0 * f(err, "b_max"),
                    100.0 * f(err, "b_lin"),
                ));
                if variational {
                    let b = p["marginal_barrier_test"].as_f64().unwrap_or(f64::NAN);
                    s.push_str(&format!(" {b:>12.4}"));
                }
                s.push('\n');
            }
        }
    }
    s
}
