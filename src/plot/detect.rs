//! What `modeconn plot` draws from a result file or directory.
//!
//! Recognised files: `path.csv` (and any CSV with the `path,t,…` header) → the path figure;
//! `plane.json` → the plane figure; a KL table (`log_alpha,neg_kl_exact,…`) → the KL figure;
//! `metrics.jsonl` of a variational run → accuracy and per-layer figures;
//! `variational.safetensors` → log α histograms. A directory is searched for these files; when it
//! holds none, its subdirectories are searched (two levels deep, e.g. the step directories of
//! `modeconn run`) and each figure's name is prefixed with the subdirectory's.

use std::path::{Path, PathBuf};

use super::kl::{KlFigure, read_kl_csv};
use super::paths::{PathFigure, read_path_csv};
use super::plane::{PlaneFigure, read_plane_json};
use super::vd::{AccuracyFigure, EpochLog, HistogramFigure, LayersFigure};
use super::{Rendered, Size, render};
use crate::error::{Error, Result};

/// Default size of the path figure.
pub const PATH_SIZE: Size = Size::new(1400, 600);
/// Default size of the plane figure.
pub const PLANE_SIZE: Size = Size::new(1500, 640);
/// Default size of the KL figure.
pub const KL_SIZE: Size = Size::new(1100, 800);
/// Default size of the accuracy figure.
pub const ACCURACY_SIZE: Size = Size::new(1000, 650);
/// Default size of the per-layer figure.
pub const LAYERS_SIZE: Size = Size::new(1650, 560);

/// How figures are rendered.
#[derive(Debug, Clone, Default)]
pub struct PlotConfig {
    /// Size for every figure (default: per kind).
    pub size: Option<Size>,
    /// Title for every figure (default: per kind).
    pub title: Option<String>,
}

/// A figure that was written, with its kind.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    /// `path`, `plane`, `kl`, `accuracy`, `layers` or `log-alpha-hist`.
    pub kind: &'static str,
    /// The files.
    #[serde(flatten)]
    pub files: Rendered,
}

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `path.csv`.
    PathCsv,
    /// `plane.json`.
    PlaneJson,
    /// A KL table.
    KlCsv,
    /// `metrics.jsonl` of a variational run.
    Metrics,
    /// A variational model.
    Variational,
}

/// Classifies a file by name and content; `None` if it is nothing `plot` can draw.
pub fn classify(file: &Path) -> Option<Input> {
    let name = file.file_name()?.to_str()?;
    if name.ends_with(".csv") {
        let text = std::fs::read_to_string(file).ok()?;
        let header = text.lines().next()?;
        if header.starts_with("path,t,") {
            return Some(Input::PathCsv);
        }
        if header.starts_with("log_alpha,neg_kl_exact") {
            return Some(Input::KlCsv);
        }
        return None;
    }
    if name.ends_with(".json") {
        let text = std::fs::read_to_string(file).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        return (v.get("train_loss").is_some()
            && v.get("curve").is_some()
            && v.get("dy").is_some())
        .then_some(Input::PlaneJson);
    }
    if name.ends_with(".jsonl") {
        let log = EpochLog::read(file).ok()?;
        return log.is_variational().then_some(Input::Metrics);
    }
    if name.ends_with(".safetensors") {
        let f = crate::params::io::Loaded::open(file).ok()?;
        return (f.meta.kind == crate::variational::KIND).then_some(Input::Variational);
    }
    None
}

fn stem(prefix: &str, kind: &str) -> String {
    if prefix.is_empty() {
        kind.to_string()
    } else {
        format!("{prefix}-{kind}")
    }
}

/// Draws the figures of one recognised file into `out`, names prefixed with `prefix`.
pub fn plot_file(
    file: &Path,
    kind: Input,
    out: &Path,
    prefix: &str,
    cfg: &PlotConfig,
) -> Result<Vec<Written>> {
    let size = |d: Size| cfg.size.unwrap_or(d);
    let mut written = Vec::new();
    match kind {
        Input::PathCsv => {
            let mut fig = PathFigure::new(read_path_csv(file)?);
            if let Some(t) = &cfg.title {
                fig.title = t.clone();
            }
            let r = render(&fig, out, &stem(prefix, "path"), size(PATH_SIZE))?;
            written.push(Written {
                kind: "path",
                files: r,
            });
        }
        Input::PlaneJson => {
            let mut fig = PlaneFigure::new(read_plane_json(file)?);
            if let Some(t) = &cfg.title {
                fig.title = t.clone();
            }
            let r = render(&fig, out, &stem(prefix, "plane"), size(PLANE_SIZE))?;
            written.push(Written {
                kind: "plane",
                files: r,
            });
        }
        Input::KlCsv => {
            let mut fig = KlFigure::new(read_kl_csv(file)?);
            if let Some(t) = &cfg.title {
                fig.title = t.clone();
            }
            let r = render(&fig, out, &stem(prefix, "kl"), size(KL_SIZE))?;
            written.push(Written {
                kind: "kl",
                files: r,
            });
        }
        Input::Metrics => {
            let log = EpochLog::read(file)?;
            let what = run_label(file);
            let acc = AccuracyFigure {
                title: cfg
                    .title
                    .clone()
                    .unwrap_or_else(|| format!("Mode, one sample and ensembles{what}")),
                log: log.clone(),
            };
            let r = render(&acc, out, &stem(prefix, "accuracy"), size(ACCURACY_SIZE))?;
            written.push(Written {
                kind: "accuracy",
                files: r,
            });
            if !log.keys("sparsity").is_empty() || !log.keys("log_alpha_mean").is_empty() {
                let fig = LayersFigure {
                    title: cfg.title.clone().unwrap_or_else(|| {
                        format!("Per-layer sparsity and log α over epochs{what}")
                    }),
                    log,
                };
                let r = render(&fig, out, &stem(prefix, "layers"), size(LAYERS_SIZE))?;
                written.push(Written {
                    kind: "layers",
                    files: r,
                });
            }
        }
        Input::Variational => {
            let device = crate::backend::device();
            let (model, params, _) = crate::variational::load_vmodel(file, &device)?;
            let layers: Vec<(String, Vec<f32>)> = model
                .log_alpha(&params)
                .into_iter()
                .filter_map(|(n, v)| v.map(|v| (n, v)))
                .collect();
            if !layers.is_empty() {
                let cols = layers.len().min(3) as u32;
                let rows = layers.len().div_ceil(3) as u32;
                let fig = HistogramFigure {
                    title: cfg.title.clone().unwrap_or_else(|| {
                        format!(
                            "log α per layer after training ({}, {})",
                            model.config.method, model.arch
                        )
                    }),
                    layers,
                    bins: 64,
                };
                let d = Size::new(560 * cols.max(2), 470 * rows + 60);
                let r = render(&fig, out, &stem(prefix, "log-alpha-hist"), size(d))?;
                written.push(Written {
                    kind: "log-alpha-hist",
                    files: r,
                });
            }
        }
    }
    Ok(written)
}

/// ` (method, arch)` from the `run.json` next to a metrics file, when present.
fn run_label(file: &Path) -> String {
    let run = file.with_file_name("run.json");
    let Ok(text) = std::fs::read_to_string(run) else {
        return String::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return String::new();
    };
    let c = &v["config"];
    match (c["variational"]["method"].as_str(), c["arch"].as_str()) {
        (Some(m), Some(a)) => format!(" ({m}, {a})"),
        _ => String::new(),
    }
}

/// Files `plot` recognises directly inside `dir`, sorted by name.
pub fn recognised_in(dir: &Path) -> Vec<(PathBuf, Input)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|f| classify(&f).map(|k| (f, k)))
        .collect()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut d: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "figures"))
        .collect();
    d.sort();
    d
}

/// Draws everything `plot` recognises in `input` (a file or a directory) into `out`.
pub fn plot_path(input: &Path, out: &Path, cfg: &PlotConfig) -> Result<Vec<Written>> {
    if input.is_file() {
        let kind = classify(input).ok_or_else(|| {
            Error::data(
                input,
                "cannot plot this file: expected a path.csv, plane.json, KL table (kl.csv), \
                 metrics.jsonl of `vtrain` or variational.safetensors",
            )
        })?;
        return plot_file(input, kind, out, "", cfg);
    }
    if !input.is_dir() {
        return Err(Error::io(
            input,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    let mut written = plot_dir(input, out, "", cfg)?;
    if written.is_empty() {
        for sub in subdirs(input) {
            let name = sub.file_name().unwrap().to_string_lossy().to_string();
            let mut w = plot_dir(&sub, out, &name, cfg)?;
            if w.is_empty() {
                for sub2 in subdirs(&sub) {
                    let n2 = format!("{name}-{}", sub2.file_name().unwrap().to_string_lossy());
                    w.extend(plot_dir(&sub2, out, &n2, cfg)?);
                }
            }
            written.extend(w);
        }
    }
    if written.is_empty() {
        return Err(Error::data(
            input,
            "nothing to plot: no path.csv, plane.json, kl.csv, metrics.jsonl of `vtrain` or \
             variational.safetensors here or in the subdirectories",
        ));
    }
    Ok(written)
}

fn plot_dir(dir: &Path, out: &Path, prefix: &str, cfg: &PlotConfig) -> Result<Vec<Written>> {
    let mut w = Vec::new();
    for (f, k) in recognised_in(dir) {
        w.extend(plot_file(&f, k, out, prefix, cfg)?);
    }
    Ok(w)
}
