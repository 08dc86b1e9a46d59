//! Result files: JSON summaries written atomically, and `run.json` (command, resolved config,
//! seed, version, git revision, wall time) in every run directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::Result;
use crate::params::io::write_atomic;

/// The files under `dir` (recursively) whose extension is one of `exts`, sorted by path; none
/// when `dir` cannot be read.
pub fn files_with_extension(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(files_with_extension(&p, exts));
        } else if p.extension().is_some_and(|e| exts.iter().any(|x| e == *x)) {
            out.push(p);
        }
    }
    out
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value).expect("serialisable value");
    s.push('\n');
    write_atomic(path, s.as_bytes())
}

/// The git revision of the source tree this binary was built from (recorded by `build.rs` at
/// build time), when it was built inside a git checkout.
pub fn git_rev() -> Option<String> {
    let rev = env!("MODECONN_GIT_REV");
    (!rev.is_empty()).then(|| rev.to_string())
}

/// Records a run: call [`RunRecord::finish`] when done to write `run.json`.
pub struct RunRecord {
    command: Vec<String>,
    config: Value,
    seed: Option<u64>,
    started: Instant,
}

impl RunRecord {
    /// Starts timing a run of `command` with a resolved configuration.
    pub fn start(command: Vec<String>, config: Value, seed: Option<u64>) -> Self {
        Self {
            command,
            config,
            seed,
            started: Instant::now(),
        }
    }

    /// Writes `dir/run.json`.
    pub fn finish(&self, dir: &Path, extra: Value) -> Result<()> {
        let v = json!({
            "command": self.command,
            "config": self.config,
            "seed": self.seed,
            "version": env!("CARGO_PKG_VERSION"),
            "git_rev": git_rev(),
            "wall_time_s": self.started.elapsed().as_secs_f64(),
            "result": extra,
        });
        write_json(&dir.join("run.json"), &v)
    }
}
