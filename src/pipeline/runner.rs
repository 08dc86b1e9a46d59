//! The runner of analysis specs (`modeconn run analyses/X.toml [--out runs/X]`, and the demo).
//!
//! The spec's steps (sweeps expanded, [`Analysis::plan`]) run in order, one after another
//! ([`run`]), as several at once ([`run_parallel`], each step through a caller-given launcher,
//! e.g. a child process) or one alone ([`run_one`], what Snakemake and SLURM call). Each step's
//! cache key is the hash of its resolved command line, the crate version and the hashes of the
//! steps it reads, so a changed step also reruns everything downstream of it.
//!
//! Markers, in the step's directory: `started.json` (the hash) while a step runs; on success
//! only, `step.json` (the hash and the time taken), written atomically, and `started.json`
//! removed. A step whose `step.json` records its hash is skipped; an interrupted training step
//! (train, connect, vtrain) whose `started.json` records its hash resumes from its checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use super::spec::{Analysis, PlannedStep, fnv1a, placeholders, substitute};
use crate::error::{Error, Result};
use crate::report::write_json;

/// Runs one step: receives its full command line (`modeconn`, the subcommand, its arguments)
/// and returns the command's JSON result.
pub type Executor<'a> = &'a mut dyn FnMut(Vec<String>) -> Result<Value>;

/// Runs one step elsewhere (a child process) and returns once it has finished; the step's own
/// `run --step` writes its markers.
pub type Launcher<'a> = &'a (dyn Fn(&Prepared) -> Result<()> + Sync);

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

/// A step ready to run: its command line with every placeholder resolved, its directory and
/// its cache key.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The planned step (id, dependencies, resources).
    pub step: PlannedStep,
    /// The subcommand and its resolved arguments (with `--out` added where the step has none).
    pub args: Vec<String>,
    /// The step's directory, `OUT/ID`, where its markers live.
    pub dir: PathBuf,
    /// The cache key.
    pub hash: String,
}

impl Prepared {
    /// The success marker.
    pub fn marker(&self) -> PathBuf {
        self.dir.join("step.json")
    }

    fn started(&self) -> PathBuf {
        self.dir.join("started.json")
    }

    /// Whether the step's success marker records its current hash.
    pub fn is_done(&self) -> bool {
        read_hash(&self.marker()).as_deref() == Some(&self.hash)
    }
}

/// The `hash` of a marker file, when it is one (older markers with `"status": "started"` are
/// not finished steps).
fn read_hash(p: &Path) -> Option<String> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    if v["status"].as_str().unwrap_or("done") != "done" {
        return None;
    }
    v["hash"].as_str().map(String::from)
}

/// The analysis's steps, prepared for `opts` (variables, profile, output directory).
pub fn prepare(
    analysis: &Analysis,
    opts: &RunOptions,
) -> Result<(BTreeMap<String, String>, Vec<Prepared>)> {
    let vars = analysis.resolve_vars(opts.profile.as_deref(), &opts.set)?;
    let planned = analysis
        .plan(&vars)
        .map_err(|e| Error::Config(format!("{}: {e}", opts.spec.display())))?;
    let dir = &opts.out;
    let mut run_dir = BTreeMap::new();
    run_dir.insert("run".to_string(), dir.to_string_lossy().to_string());
    let mut out: Vec<Prepared> = Vec::new();
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    for step in planned {
        let sdir = dir.join(&step.id);
        let mut lookup = run_dir.clone();
        for a in &step.args {
            for p in placeholders(a) {
                if p != "run" {
                    lookup.insert(p.to_string(), dir.join(p).to_string_lossy().to_string());
                }
            }
        }
        let mut args: Vec<String> = vec![step.command.clone()];
        args.extend(step.args.iter().map(|a| substitute(a, &lookup)));
        if !args.iter().any(|a| a == "--out") && step.command != "eval" {
            args.push("--out".into());
            args.push(sdir.to_string_lossy().to_string());
        }
        let deps: BTreeMap<&str, &String> = step
            .deps
            .iter()
            .filter_map(|d| hashes.get(d).map(|h| (d.as_str(), h)))
            .collect();
        let key =
            json!({"args": args, "deps": deps, "version": env!("CARGO_PKG_VERSION")}).to_string();
        let hash = fnv1a(key.as_bytes());
        hashes.insert(step.id.clone(), hash.clone());
        out.push(Prepared {
            step,
            args,
            dir: sdir,
            hash,
        });
    }
    Ok((vars, out))
}

/// Runs one prepared step through `exec`, writing its markers; returns the seconds taken.
fn execute(p: &Prepared, opts: &RunOptions, exec: Executor<'_>) -> Result<f64> {
    let mut args = p.args.clone();
    let resumable = ["train", "connect", "vtrain"].contains(&p.step.command.as_str());
    // Resume only a run of this very configuration that was interrupted; a checkpoint left by
    // other flags is overwritten by a fresh run.
    let interrupted = std::fs::read_to_string(p.started())
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| v["hash"] == p.hash.as_str());
    if resumable && interrupted && !opts.rerun && p.dir.join(crate::train::CHECKPOINT).exists() {
        args.push("--resume".into());
    }
    if !opts.quiet {
        eprintln!("run: {}: modeconn {}", p.step.id, args.join(" "));
    }
    let t0 = Instant::now();
    std::fs::create_dir_all(&p.dir).map_err(|e| Error::io(&p.dir, e))?;
    let marker = p.marker();
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))?;
    }
    write_json(&p.started(), &json!({"hash": p.hash, "args": args}))?;
    let argv: Vec<String> = std::iter::once("modeconn".to_string())
        .chain(args.clone())
        .collect();
    exec(argv).map_err(|e| {
        Error::Config(format!(
            "{}: step `{}`: {e}",
            opts.spec.display(),
            p.step.id
        ))
    })?;
    let secs = t0.elapsed().as_secs_f64();
    write_json(
        &marker,
        &json!({"hash": p.hash, "status": "done", "args": args, "time_s": secs}),
    )?;
    let started = p.started();
    std::fs::remove_file(&started).map_err(|e| Error::io(&started, e))?;
    Ok(secs)
}

fn cached(p: &Prepared, opts: &RunOptions) -> bool {
    let yes = !opts.rerun && p.is_done();
    if yes && !opts.quiet {
        eprintln!("run: {} cached ({})", p.step.id, p.hash);
    }
    yes
}

fn finish(
    analysis: &Analysis,
    opts: &RunOptions,
    vars: BTreeMap<String, String>,
    report: Vec<Value>,
    started: Instant,
) -> Result<Value> {
    let v = json!({
        "analysis": analysis.name,
        "spec": opts.spec,
        "vars": vars,
        "steps": report,
        "wall_time_s": started.elapsed().as_secs_f64(),
    });
    write_json(&opts.out.join("analysis.json"), &v)?;
    Ok(v)
}

/// Runs every step of `analysis` in order through `exec`; returns the per-step report (also
/// `out/analysis.json`).
pub fn run(analysis: &Analysis, opts: &RunOptions, exec: Executor<'_>) -> Result<Value> {
    let (vars, steps) = prepare(analysis, opts)?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let started = Instant::now();
    let mut report = Vec::new();
    for (i, p) in steps.iter().enumerate() {
        if cached(p, opts) {
            report.push(json!({"id": p.step.id, "status": "cached", "hash": p.hash}));
        } else {
            let secs = execute(p, opts, exec)?;
            report.push(json!({"id": p.step.id, "status": "ran", "hash": p.hash, "time_s": secs}));
        }
        // The steps so far, for a later step that reads the run (a report).
        if i + 1 < steps.len() {
            finish(analysis, opts, vars.clone(), report.clone(), started)?;
        }
    }
    finish(analysis, opts, vars, report, started)
}

/// Runs the one step `id` through `exec` (`run --step`): its upstream steps must have finished
/// (their markers record their current hashes); a finished step is skipped.
pub fn run_one(
    analysis: &Analysis,
    opts: &RunOptions,
    id: &str,
    exec: Executor<'_>,
) -> Result<Value> {
    let (_, steps) = prepare(analysis, opts)?;
    let Some(p) = steps.iter().find(|p| p.step.id == id) else {
        let ids: Vec<&str> = steps.iter().map(|p| p.step.id.as_str()).collect();
        return Err(Error::Config(format!(
            "--step {id}: {} has no such step (steps: {})",
            opts.spec.display(),
            ids.join(", ")
        )));
    };
    for d in &p.step.deps {
        let up = steps
            .iter()
            .find(|q| &q.step.id == d)
            .expect("planned dependency");
        if !up.is_done() {
            return Err(Error::Config(format!(
                "--step {id}: it reads step `{d}`, which has not finished with its current configuration (no {} with hash {})",
                up.marker().display(),
                up.hash
            )));
        }
    }
    if cached(p, opts) {
        return Ok(json!({"id": id, "status": "cached", "hash": p.hash}));
    }
    let secs = execute(p, opts, exec)?;
    Ok(json!({"id": id, "status": "ran", "hash": p.hash, "time_s": secs}))
}

/// Runs the steps of `analysis` with up to `jobs` at once, each through `launch` as soon as the
/// steps it reads have finished; after a failure no new step starts, the running ones finish,
/// and the first failure is returned. Returns the per-step report (also `out/analysis.json`).
pub fn run_parallel(
    analysis: &Analysis,
    opts: &RunOptions,
    jobs: usize,
    launch: Launcher<'_>,
) -> Result<Value> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Waiting,
        Running,
        Finished,
    }
    let (vars, steps) = prepare(analysis, opts)?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let started = Instant::now();
    let n = steps.len();
    let mut state = vec![State::Waiting; n];
    let mut report: Vec<Option<Value>> = vec![None; n];
    for (i, p) in steps.iter().enumerate() {
        if cached(p, opts) {
            state[i] = State::Finished;
            report[i] = Some(json!({"id": p.step.id, "status": "cached", "hash": p.hash}));
        }
    }
    let index: BTreeMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, p)| (p.step.id.as_str(), i))
        .collect();
    let mut failure: Option<Error> = None;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<()>, f64)>();
        let mut running = 0usize;
        loop {
            if failure.is_none() {
                for i in 0..n {
                    if running >= jobs.max(1) {
                        break;
                    }
                    let ready = state[i] == State::Waiting
                        && steps[i]
                            .step
                            .deps
                            .iter()
                            .all(|d| state[index[d.as_str()]] == State::Finished);
                    if ready {
                        state[i] = State::Running;
                        running += 1;
                        if !opts.quiet {
                            eprintln!("run: {} started", steps[i].step.id);
                        }
                        let tx = tx.clone();
                        let p = &steps[i];
                        scope.spawn(move || {
                            let t0 = Instant::now();
                            let r = launch(p);
                            let _ = tx.send((i, r, t0.elapsed().as_secs_f64()));
                        });
                    }
                }
            }
            if running == 0 {
                break;
            }
            let (i, r, secs) = rx.recv().expect("a running step reports");
            running -= 1;
            let p = &steps[i];
            match r {
                Ok(()) => {
                    state[i] = State::Finished;
                    if !opts.quiet {
                        eprintln!("run: {} done in {secs:.1} s", p.step.id);
                    }
                    report[i] = Some(
                        json!({"id": p.step.id, "status": "ran", "hash": p.hash, "time_s": secs}),
                    );
                }
                Err(e) => {
                    failure.get_or_insert(Error::Config(format!(
                        "{}: step `{}`: {e}",
                        opts.spec.display(),
                        p.step.id
                    )));
                }
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let report: Vec<Value> = report.into_iter().flatten().collect();
    finish(analysis, opts, vars, report, started)
}
