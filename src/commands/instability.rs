//! `modeconn instability`: linear mode connectivity and the instability analysis of Frankle et
//! al. (2020). From one initialisation `W₀` (seed `--seed`) a trunk run with the first data seed
//! trains to step `k` (`W_k`, with its optimiser state); two copies spawned from `W_k` finish the
//! run with the two `--data-seeds`, so they differ only in the order of the data after step `k`
//! (the copy with the trunk's seed is the uninterrupted run). The instability at `k` is the
//! largest error along the line between the two finished networks (30 evenly spaced α by
//! default) minus the mean of their errors, on the test and the training set; a network is
//! *stable* at `k` when it is below 2% (their threshold). Writes `instability.csv` (every α of
//! every k), `summary.json`, `run.json`, the figure `instability.{png,svg}` and the copies
//! (`k<K>/copy<1|2>.safetensors`).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::{default_arch, eval_device, load_data};
use crate::arch::Arch;
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::eval::family::Family;
use crate::eval::path::grid;
use crate::network_file::save_model;
use crate::params::io::{FileMeta, write_atomic};
use crate::report::{RunRecord, write_json};
use crate::train::{Classification, LoopConfig, RunControl, fit_with};

/// Validated options of `modeconn instability` (the spawn steps are taken in increasing order).
#[derive(Debug, Clone)]
pub struct InstabilityOptions {
    /// Architecture.
    pub arch: Option<Arch>,
    /// Data.
    pub data: DataConfig,
    /// The loop (its seed initialises `W₀`; its data seed is ignored).
    pub loop_cfg: LoopConfig,
    /// Spawn steps.
    pub ks: Vec<usize>,
    /// The two data seeds (the first also drives the trunk).
    pub data_seeds: [u64; 2],
    /// α points along the line between the copies.
    pub points: usize,
    /// No progress lines.
    pub quiet: bool,
    /// Output directory.
    pub out: PathBuf,
}

/// Runs `instability`; returns the summary (also `summary.json`).
pub fn run(opts: &InstabilityOptions, argv: Vec<String>) -> Result<Value> {
    opts.loop_cfg.validate()?;
    if opts.ks.is_empty() {
        return Err(Error::Config(
            "--k must list spawn steps, e.g. 0,100,500".into(),
        ));
    }
    if opts.points < 2 {
        return Err(Error::Config("--points must be at least 2".into()));
    }
    let split = load_data(&opts.data)?;
    let arch = opts.arch.clone().unwrap_or_else(|| default_arch(&split));
    arch.check_data(&split.train)?;
    let steps_per_epoch = split.train.len().div_ceil(opts.loop_cfg.batch_size);
    let total = steps_per_epoch * opts.loop_cfg.epochs;
    if let Some(&k) = opts.ks.iter().find(|&&k| k > total) {
        return Err(Error::Config(format!(
            "--k {k} is beyond the run's {total} steps ({} epochs of {steps_per_epoch})",
            opts.loop_cfg.epochs
        )));
    }
    let config = json!({"arch": arch.to_string(), "data": opts.data, "loop": opts.loop_cfg,
        "k": opts.ks, "data_seeds": opts.data_seeds, "points": opts.points});
    let record = RunRecord::start(argv, config.clone(), Some(opts.loop_cfg.seed));
    let device = eval_device();
    let say = |m: String| {
        if !opts.quiet {
            eprintln!("instability: {m}");
        }
    };
    let meta = FileMeta::new("model", &arch.to_string());
    let quiet = RunControl {
        quiet: true,
        ..Default::default()
    };
    let alphas = grid(opts.points);
    let mut csv = String::from("k,alpha,train_err,test_err,train_loss,test_loss\n");
    let mut rows = Vec::new();
    // The trunk runs once, from W₀ through the spawn steps in increasing order, each stretch
    // continuing the last (the same steps as training from W₀ to each k anew).
    let mut ks = opts.ks.clone();
    ks.sort_unstable();
    ks.dedup();
    let mut trunk_cfg = opts.loop_cfg.clone();
    trunk_cfg.data_seed = Some(opts.data_seeds[0]);
    let (mut at, mut params, mut optimizer) = (0, arch.init(opts.loop_cfg.seed, &device), None);
    for &k in &ks {
        let dir = opts.out.join(format!("k{k}"));
        // The trunk: W₀ → W_k with the first data seed.
        let mut obj = Classification::new(arch.clone(), &split.test, device.clone());
        let trunk = fit_with(
            params,
            optimizer,
            &split.train,
            &mut obj,
            &trunk_cfg,
            &RunControl {
                start_step: at,
                stop_at_step: Some(k),
                ..quiet.clone()
            },
            &dir.join("trunk"),
            &meta,
            &format!("{config}/k{k}/trunk"),
        )?;
        (at, params, optimizer) = (k, trunk.params.clone(), Some(trunk.optimizer.clone()));
        let mut copies = Vec::new();
        for (c, &seed) in opts.data_seeds.iter().enumerate() {
            let mut cfg = opts.loop_cfg.clone();
            cfg.data_seed = Some(seed);
            let mut obj = Classification::new(arch.clone(), &split.test, device.clone());
            let fitted = fit_with(
                trunk.params.clone(),
                Some(trunk.optimizer.clone()),
                &split.train,
                &mut obj,
                &cfg,
                &RunControl {
                    start_step: k,
                    ..quiet.clone()
                },
                &dir.join(format!("copy{}", c + 1)),
                &meta,
                &format!("{config}/k{k}/copy{c}"),
            )?;
            save_model(
                &dir.join(format!("copy{}.safetensors", c + 1)),
                &arch,
                &fitted.params,
            )?;
            copies.push(fitted.params);
        }
        let family = Family::new(
            &arch,
            arch.layout(),
            copies.iter().map(|p| p.to_flat()).collect(),
            &[&split.train, &split.test],
            &device,
        );
        let cs: Vec<Vec<f64>> = alphas.iter().map(|&a| vec![1.0 - a, a]).collect();
        let metrics = family.metrics_all(&cs);
        for (a, m) in alphas.iter().zip(&metrics) {
            let _ = writeln!(
                csv,
                "{k},{a},{},{},{},{}",
                m[0].err(),
                m[1].err(),
                m[0].loss,
                m[1].loss
            );
        }
        let barrier = |d: usize| {
            let ends = 0.5 * (metrics[0][d].err() + metrics[metrics.len() - 1][d].err());
            let max = metrics.iter().map(|m| m[d].err()).fold(0.0f64, f64::max);
            (max - ends, max, ends)
        };
        let (test, test_max, test_ends) = barrier(1);
        let (train, _, _) = barrier(0);
        say(format!(
            "k = {k}: test instability {:.2}% (max {:.2}%, ends {:.2}%), train {:.2}%",
            100.0 * test,
            100.0 * test_max,
            100.0 * test_ends,
            100.0 * train
        ));
        rows.push(
            json!({"k": k, "test_instability": test, "train_instability": train,
            "test_err_max": test_max, "test_err_ends": test_ends, "stable": test < 0.02}),
        );
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    write_atomic(&opts.out.join("instability.csv"), csv.as_bytes())?;
    let summary = json!({
        "arch": arch.to_string(),
        "data": split.train.name,
        "steps": total,
        "steps_per_epoch": steps_per_epoch,
        "data_seeds": opts.data_seeds,
        "rule": "instability: the largest error along the line between the two copies minus the mean of theirs; stable below 2% (Frankle et al. 2020)",
        "ks": rows,
    });
    write_json(&opts.out.join("summary.json"), &summary)?;
    crate::plot::figures::instability_figure(&opts.out.join("summary.json"), &opts.out, None)?;
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}
