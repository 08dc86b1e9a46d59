//! `modeconn run analyses/X.toml [--out runs/X]`: execute an analysis spec step by step. A step
//! whose `step.json` records the same hash of its resolved command line, the crate version and
//! the hashes of the steps it reads (`{id}` placeholders) is skipped, so a changed step also
//! reruns everything downstream of it; an interrupted training step (train, connect, vtrain) of
//! the same configuration resumes from its checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use serde_json::{Value, json};

use crate::cli::{Cli, execute};
use crate::error::{Error, Result};
use crate::report::write_json;
use crate::spec::{Analysis, fnv1a, placeholders};

/// Validated options of `modeconn run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The spec file.
    pub spec: PathBuf,
    /// Output directory (default: `runs/<spec file stem>`).
    pub out: Option<PathBuf>,
    /// Run every step afresh, ignoring cached results and checkpoints (the cache key is the
    /// resolved command line and the crate version, not the code: after a change of the code
    /// or of a default, cached steps are stale).
    pub rerun: bool,
}

fn resolve(arg: &str, dir: &Path) -> String {
    let mut s = arg.to_string();
    while let Some(i) = s.find('{') {
        let Some(j) = s[i..].find('}') else { break };
        let name = s[i + 1..i + j].to_string();
        let to = if name == "run" {
            dir.to_path_buf()
        } else {
            dir.join(&name)
        };
        s.replace_range(i..i + j + 1, &to.to_string_lossy());
    }
    s
}

/// Runs the analysis; returns the per-step report (also `out/analysis.json`).
pub fn run(opts: &RunOptions) -> Result<Value> {
    let analysis = Analysis::load(&opts.spec)?;
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(opts.spec.file_stem().unwrap_or_default()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let started = Instant::now();
    let mut report = Vec::new();
    let mut hashes: std::collections::BTreeMap<String, String> = Default::default();
    for step in &analysis.steps {
        let sdir = dir.join(&step.id);
        let mut args: Vec<String> = vec![step.command.clone()];
        args.extend(step.args.iter().map(|a| resolve(a, &dir)));
        if !args.iter().any(|a| a == "--out") && step.command != "eval" {
            args.push("--out".into());
            args.push(sdir.to_string_lossy().to_string());
        }
        // Upstream steps' hashes (validated to exist: placeholders name earlier steps).
        let deps: std::collections::BTreeMap<&str, &String> = step
            .args
            .iter()
            .flat_map(|a| placeholders(a))
            .filter_map(|p| hashes.get(p).map(|h| (p, h)))
            .collect();
        let key =
            json!({"args": args, "deps": deps, "version": env!("CARGO_PKG_VERSION")}).to_string();
        let hash = fnv1a(key.as_bytes());
        hashes.insert(step.id.clone(), hash.clone());
        let marker = sdir.join("step.json");
        // `step.json` says `started` while a step runs and `done` after it (older markers
        // without a status are `done`).
        let prev = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        let same = prev.as_ref().is_some_and(|v| v["hash"] == hash);
        let done = prev
            .as_ref()
            .is_some_and(|v| v["status"].as_str().unwrap_or("done") == "done");
        if same && done && !opts.rerun {
            eprintln!("run: {} cached ({})", step.id, hash);
            report.push(json!({"id": step.id, "status": "cached", "hash": hash}));
            continue;
        }
        let resumable = ["train", "connect", "vtrain"].contains(&step.command.as_str());
        // Resume only a run of this very configuration that was interrupted; a checkpoint
        // left by other flags is overwritten by a fresh run.
        if resumable && same && !opts.rerun && sdir.join(crate::train::CHECKPOINT).exists() {
            args.push("--resume".into());
        }
        eprintln!("run: {}: modeconn {}", step.id, args.join(" "));
        let t0 = Instant::now();
        let argv: Vec<String> = std::iter::once("modeconn".to_string())
            .chain(args.clone())
            .collect();
        let cli = Cli::try_parse_from(&argv).map_err(|e| {
            Error::Config(format!(
                "{}: step `{}`: {}",
                opts.spec.display(),
                step.id,
                e.to_string().lines().next().unwrap_or_default()
            ))
        })?;
        std::fs::create_dir_all(&sdir).map_err(|e| Error::io(&sdir, e))?;
        write_json(
            &marker,
            &json!({"hash": hash, "status": "started", "args": args}),
        )?;
        execute(cli.command, argv)?;
        let secs = t0.elapsed().as_secs_f64();
        write_json(
            &marker,
            &json!({"hash": hash, "status": "done", "args": args, "time_s": secs}),
        )?;
        report.push(json!({"id": step.id, "status": "ran", "hash": hash, "time_s": secs}));
    }
    let v = json!({
        "analysis": analysis.name,
        "spec": opts.spec,
        "steps": report,
        "wall_time_s": started.elapsed().as_secs_f64(),
    });
    write_json(&dir.join("analysis.json"), &v)?;
    Ok(v)
}
