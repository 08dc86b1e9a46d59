//! `modeconn report RUN_DIR`: one self-contained HTML page of a run, rendered with a minijinja
//! template (`templates/report.html`): every SVG figure under the directory inlined, each
//! step's command line, its results (`summary.json`, `metrics.json`, ... flattened into
//! tables) and its `run.json` provenance. The page references nothing outside itself.
//! `--pdf` also writes every figure as PDF beside its SVG ([`crate::plot::pdf`]).
//!
//! RUN_DIR is an analysis's output (`analysis.json`: its steps in order; without it, as a
//! cluster engine leaves it, the step directories with success markers) or one command's
//! `--out` (one step).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::params::io::write_atomic;

/// The page template.
const TEMPLATE: &str = include_str!("templates/report.html");

/// Result files shown as tables, in this order, when a step's directory has them.
const RESULTS: [&str; 6] = [
    "summary.json",
    "metrics.json",
    "dimension.json",
    "hessian.json",
    "landscape.json",
    "plane.json",
];

/// Rows shown per table at most.
const MAX_ROWS: usize = 80;

/// Validated options of `report`.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The run directory.
    pub dir: PathBuf,
    /// The page (a path ending in .html), or the directory to write `report.html` into
    /// [default: DIR/report.html].
    pub out: Option<PathBuf>,
    /// Also write every figure as PDF beside its SVG.
    pub pdf: bool,
}

#[derive(Serialize)]
struct Figure {
    name: String,
    svg: String,
}

#[derive(Serialize)]
struct Table {
    name: String,
    rows: Vec<(String, String, &'static str)>,
}

#[derive(Serialize)]
struct Step {
    id: String,
    status: String,
    time: String,
    command: String,
    tables: Vec<Table>,
    provenance: Vec<(String, String, &'static str)>,
}

fn read_json(p: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

/// A value as table cells: text and its CSS class.
fn cell(v: &Value) -> (String, &'static str) {
    match v {
        Value::Number(n) => {
            let text = match n.as_f64() {
                Some(x) if n.is_f64() => format!("{x:.6}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string(),
                _ => n.to_string(),
            };
            (text, "num")
        }
        Value::String(s) => (s.clone(), ""),
        other => (other.to_string(), ""),
    }
}

/// `v` flattened into (dotted key, value) rows; arrays of numbers are shown whole when short.
fn flatten(prefix: &str, v: &Value, rows: &mut Vec<(String, String, &'static str)>) {
    if rows.len() >= MAX_ROWS {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, rows);
            }
        }
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            let cells: Vec<String> = a.iter().take(12).map(|x| cell(x).0).collect();
            let more = if a.len() > 12 {
                format!(" … ({} values)", a.len())
            } else {
                String::new()
            };
            rows.push((
                prefix.to_string(),
                format!("[{}]{more}", cells.join(", ")),
                "",
            ));
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, rows);
            }
        }
        Value::Null => {}
        x => {
            let (text, class) = cell(x);
            rows.push((prefix.to_string(), text, class));
        }
    }
}

fn step_of(dir: &Path, id: &str, status: &str, time: Option<f64>) -> Step {
    let mut tables = Vec::new();
    for name in RESULTS {
        if let Some(v) = read_json(&dir.join(name)) {
            let mut rows = Vec::new();
            flatten("", &v, &mut rows);
            if !rows.is_empty() {
                tables.push(Table {
                    name: name.to_string(),
                    rows,
                });
            }
        }
    }
    let run = read_json(&dir.join("run.json"));
    let mut provenance = Vec::new();
    if let Some(r) = &run {
        for k in [
            "version",
            "git_rev",
            "seed",
            "wall_time_s",
            "started",
            "host",
        ] {
            if let Some(v) = r.get(k).filter(|v| !v.is_null()) {
                let (text, class) = cell(v);
                provenance.push((k.to_string(), text, class));
            }
        }
    }
    let command = run
        .as_ref()
        .and_then(|r| r["command"].as_array().cloned())
        .or_else(|| read_json(&dir.join("step.json")).and_then(|s| s["args"].as_array().cloned()))
        .map(|a| {
            a.iter()
                .map(|x| crate::pipeline::export::shell_quote(x.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Step {
        id: id.to_string(),
        status: status.to_string(),
        time: time.map(|t| format!("{t:.2}")).unwrap_or_default(),
        command,
        tables,
        provenance,
    }
}

/// Whether `dir` holds step directories with success markers.
fn has_step_dirs(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join("step.json").is_file())
    })
}

/// Writes the report; returns what it holds.
pub fn run(opts: &ReportOptions) -> Result<Value> {
    let dir = &opts.dir;
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "{}: not a directory (give a run's output directory)",
            dir.display()
        )));
    }
    let analysis = read_json(&dir.join("analysis.json"));
    let (title, spec, steps) = match &analysis {
        Some(a) => {
            let steps: Vec<Step> = a["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let id = s["id"].as_str().unwrap_or_default();
                    step_of(
                        &dir.join(id),
                        id,
                        s["status"].as_str().unwrap_or_default(),
                        s["time_s"].as_f64(),
                    )
                })
                .collect();
            (
                a["analysis"].as_str().unwrap_or("analysis").to_string(),
                a["spec"].as_str().unwrap_or_default().to_string(),
                steps,
            )
        }
        None if has_step_dirs(dir) => {
            // Steps run one at a time by a cluster engine (`run --step`): their markers.
            let mut ids: Vec<(String, Option<f64>)> = Vec::new();
            for e in std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .flatten()
            {
                if let Some(m) = read_json(&e.path().join("step.json")) {
                    ids.push((
                        e.file_name().to_string_lossy().to_string(),
                        m["time_s"].as_f64(),
                    ));
                }
            }
            ids.sort_by(|a, b| a.0.cmp(&b.0));
            let steps = ids
                .iter()
                .map(|(id, t)| step_of(&dir.join(id), id, "done", *t))
                .collect();
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            (name, String::new(), steps)
        }
        None => {
            if !dir.join("run.json").exists() {
                return Err(Error::Config(format!(
                    "{}: neither analysis.json (modeconn run) nor run.json (a command's --out) is there",
                    dir.display()
                )));
            }
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let step = step_of(dir, &name, "done", None);
            (name, String::new(), vec![step])
        }
    };
    let description = crate::pipeline::spec::Analysis::load(Path::new(&spec))
        .map(|a| a.description)
        .unwrap_or_default();
    let files = crate::report::files_with_extension(dir, &["svg"]);
    let mut figures = Vec::new();
    let mut pdfs = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        // Inline: drop an XML prolog, keep the <svg> element.
        let svg = text
            .find("<svg")
            .map(|i| text[i..].to_string())
            .ok_or_else(|| Error::data(f, "no <svg> element"))?;
        if opts.pdf {
            pdfs.push(crate::plot::pdf::write_pdf_beside(f)?);
        }
        figures.push(Figure {
            name: f
                .strip_prefix(dir)
                .unwrap_or(f)
                .to_string_lossy()
                .to_string(),
            svg,
        });
    }
    let mut env = minijinja::Environment::new();
    env.add_template("report.html", TEMPLATE)
        .expect("the report template parses");
    let html = env
        .get_template("report.html")
        .expect("added above")
        .render(minijinja::value::Serde(json!({
            "title": title,
            "description": description,
            "dir": dir,
            "spec": spec,
            "version": env!("CARGO_PKG_VERSION"),
            "git_rev": crate::report::git_rev(),
            "figures": figures,
            "steps": steps,
        })))
        .map_err(|e| Error::Config(format!("report template: {e}")))?;
    let out = match &opts.out {
        Some(p) if p.extension().is_some_and(|e| e == "html") => p.clone(),
        Some(p) => p.join("report.html"),
        None => dir.join("report.html"),
    };
    write_atomic(&out, html.as_bytes())?;
    Ok(json!({"report": out, "figures": figures.len(), "steps": steps.len(), "pdf": pdfs}))
}
