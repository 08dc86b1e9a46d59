//! The runner of analysis specs (`modeconn run analyses/X.toml [--out runs/X]`, and the demo):
//! executes the steps in order through a caller-given executor (the command line's). A step
//! whose `step.json` records the same hash of its resolved command line, the crate version and
//! the hashes of the steps it reads (`{id}` placeholders) is skipped, so a changed step also
//! reruns everything downstream of it; an interrupted training step (train, connect, vtrain) of
//! the same configuration resumes from its checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use super::spec::{Analysis, fnv1a, placeholders};
use crate::error::{Error, Result};
use crate::report::write_json;

/// Runs one step: receives its full command line (`modeconn`, the subcommand, its arguments)
/// and returns the command's JSON result.
pub type Executor<'a> = &'a mut dyn FnMut(Vec<String>) -> Result<Value>;

/// Validated options of the runner.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the spec came from, for messages and `analysis.json`.
    pub spec: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// The profile whose variable values apply.
    pub profile: Option<String>,
    /// `NAME=VALUE` variable overrides.
    pub set: Vec<(String, String)>,
    /// No per-step lines on stderr.
    pub quiet: bool,
    /// Run every step afresh, ignoring cached results and checkpoints (the cache key is the
    /// resolved command line and the crate version, not the code: after a change of the code
    /// or of a default, cached steps are stale).
    pub rerun: bool,
}

/// `arg` with `{run}`, `{var}` and `{step}` placeholders replaced.
fn resolve(arg: &str, dir: &Path, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        out.push_str(&rest[..i]);
        let name = &rest[i + 1..i + j];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None if name == "run" => out.push_str(&dir.to_string_lossy()),
            None => out.push_str(&dir.join(name).to_string_lossy()),
        }
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    out
}

/// Runs `analysis`, each step through `exec`; returns the per-step report (also
/// `out/analysis.json`).
pub fn run(analysis: &Analysis, opts: &RunOptions, exec: Executor<'_>) -> Result<Value> {
    let vars = analysis.resolve_vars(opts.profile.as_deref(), &opts.set)?;
    let dir = opts.out.clone();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let started = Instant::now();
    let mut report = Vec::new();
    let mut hashes: BTreeMap<String, String> = Default::default();
    for step in &analysis.steps {
        let sdir = dir.join(&step.id);
        let mut args: Vec<String> = vec![step.command.clone()];
        args.extend(step.args.iter().map(|a| resolve(a, &dir, &vars)));
        if !args.iter().any(|a| a == "--out") && step.command != "eval" {
            args.push("--out".into());
            args.push(sdir.to_string_lossy().to_string());
        }
        // Upstream steps' hashes (validated to exist: placeholders name earlier steps).
        let deps: BTreeMap<&str, &String> = step
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
            if !opts.quiet {
                eprintln!("run: {} cached ({})", step.id, hash);
            }
            report.push(json!({"id": step.id, "status": "cached", "hash": hash}));
            continue;
        }
        let resumable = ["train", "connect", "vtrain"].contains(&step.command.as_str());
        // Resume only a run of this very configuration that was interrupted; a checkpoint
        // left by other flags is overwritten by a fresh run.
        if resumable && same && !opts.rerun && sdir.join(crate::train::CHECKPOINT).exists() {
            args.push("--resume".into());
        }
        if !opts.quiet {
            eprintln!("run: {}: modeconn {}", step.id, args.join(" "));
        }
        let t0 = Instant::now();
        let argv: Vec<String> = std::iter::once("modeconn".to_string())
            .chain(args.clone())
            .collect();
        std::fs::create_dir_all(&sdir).map_err(|e| Error::io(&sdir, e))?;
        write_json(
            &marker,
            &json!({"hash": hash, "status": "started", "args": args}),
        )?;
        exec(argv).map_err(|e| {
            Error::Config(format!("{}: step `{}`: {e}", opts.spec.display(), step.id))
        })?;
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
        "vars": vars,
        "steps": report,
        "wall_time_s": started.elapsed().as_secs_f64(),
    });
    write_json(&dir.join("analysis.json"), &v)?;
    Ok(v)
}
