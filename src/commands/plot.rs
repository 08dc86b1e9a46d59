//! `modeconn plot`: render figures (PNG + SVG) from saved results. Given a directory or file it
//! draws what it finds: `path.csv` → loss/error along the paths; `plane.json` → the plane;
//! vtrain's `metrics.jsonl` → accuracy/sparsity/log α over epochs (plus log α histograms from
//! `variational.safetensors`); the word `kl` → the KL approximation figure. Several path
//! results, or several simplex runs, go on one set of axes.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::eval_device;
use crate::error::{Error, Result};
use crate::plot::figures::{
    ensemble_figure, fge_figure, hessian_path_figure, instability_figure, intrinsic_figure,
    kl_figure, landscape_figures, log_alpha_histograms, path_figure, paths_figure, plane_figures,
    projection_figure, simplex_figures, simplexes_figure, spectrum_figure, vtrain_figure,
};
use crate::variational::load_vmodel;

/// Validated options of `modeconn plot`.
#[derive(Debug, Clone)]
pub struct PlotOptions {
    /// Result directories or files (optionally labelled), or `kl`; several inputs must all be
    /// path results, drawn on the same axes.
    pub inputs: Vec<(Option<String>, PathBuf)>,
    /// Output directory [default: the input's directory].
    pub out: Option<PathBuf>,
    /// Size of every figure in pixels [default: per figure].
    pub size: Option<(u32, u32)>,
}

/// Parses `WIDTHxHEIGHT` (each side 200 to 8000 pixels); `flag` names the option in errors.
pub fn parse_size(s: &str, flag: &str) -> Result<(u32, u32)> {
    let bad = || {
        Error::Config(format!(
            "{flag} `{s}`: expected WIDTHxHEIGHT with sides of 200 to 8000 pixels, e.g. 1200x800"
        ))
    };
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if !(200..=8000).contains(&w) || !(200..=8000).contains(&h) {
        return Err(bad());
    }
    Ok((w, h))
}

fn is_vtrain(metrics: &Path) -> bool {
    std::fs::read_to_string(metrics)
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.contains("test_mode_acc")))
        .unwrap_or(false)
}

/// `input`'s `path.csv`, when it is a path result (the file or a directory holding it).
fn path_csv(input: &Path) -> Option<PathBuf> {
    let csv = if input.is_dir() {
        input.join("path.csv")
    } else {
        input.to_path_buf()
    };
    (csv.file_name().is_some_and(|f| f == "path.csv") && csv.exists()).then_some(csv)
}

/// Renders every figure the inputs hold; returns the written files.
pub fn run(opts: &PlotOptions) -> Result<Value> {
    let several = opts.inputs.len() > 1 || opts.inputs.first().is_some_and(|(l, _)| l.is_some());
    if several
        && opts
            .inputs
            .iter()
            .all(|(_, p)| p.join("simplex.csv").exists())
    {
        let dirs: Vec<(PathBuf, Option<String>)> = opts
            .inputs
            .iter()
            .map(|(l, p)| (p.clone(), l.clone()))
            .collect();
        let out = opts.out.clone().unwrap_or_else(|| dirs[0].0.clone());
        return Ok(json!(simplexes_figure(&dirs, &out, opts.size)?));
    }
    if several {
        let mut csvs = Vec::new();
        for (label, input) in &opts.inputs {
            let csv = path_csv(input).ok_or_else(|| {
                Error::Config(format!(
                    "{}: not a path result (several inputs, or a LABEL=, combine path.csv files, or simplex run directories, only)",
                    input.display()
                ))
            })?;
            csvs.push((csv, label.clone()));
        }
        let first = &opts.inputs[0].1;
        let out = opts.out.clone().unwrap_or_else(|| {
            if first.is_dir() {
                first.clone()
            } else {
                first.parent().map(Path::to_path_buf).unwrap_or_default()
            }
        });
        return Ok(json!(paths_figure(&csvs, &out, opts.size)?));
    }
    let input = &opts.inputs[0].1;
    if input.as_os_str() == "kl" {
        let out = opts.out.clone().unwrap_or_else(|| PathBuf::from("."));
        return Ok(json!(kl_figure(&out, opts.size)?));
    }
    if !input.exists() {
        return Err(Error::io(
            input,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    let (dir, file) = if input.is_dir() {
        (input.clone(), None)
    } else {
        (
            input.parent().map(Path::to_path_buf).unwrap_or_default(),
            input.file_name().map(|f| f.to_string_lossy().to_string()),
        )
    };
    let out = opts.out.clone().unwrap_or_else(|| dir.clone());
    let wants = |name: &str| file.as_deref().is_none_or(|f| f == name) && dir.join(name).exists();
    let mut files = Vec::new();
    if wants("path.csv") {
        files.extend(path_figure(&dir.join("path.csv"), &out, opts.size)?);
    }
    if wants("plane.json") {
        files.extend(plane_figures(&dir.join("plane.json"), &out, opts.size)?);
    }
    if wants("metrics.jsonl") && is_vtrain(&dir.join("metrics.jsonl")) {
        files.extend(vtrain_figure(&dir.join("metrics.jsonl"), &out, opts.size)?);
        let vm = dir.join("variational.safetensors");
        if vm.exists() {
            let (model, params, _) = load_vmodel(&vm, &eval_device())?;
            let layers: Vec<(String, Vec<f32>)> = model
                .log_alpha(&params)
                .into_iter()
                .filter_map(|(n, v)| v.map(|v| (n, v)))
                .collect();
            if !layers.is_empty() {
                files.extend(log_alpha_histograms(&layers, &out, opts.size)?);
            }
        }
    }
    if wants("project.csv") {
        files.extend(projection_figure(
            &dir.join("project.csv"),
            &out,
            opts.size,
        )?);
    }
    if wants("intrinsic.csv") {
        files.extend(intrinsic_figure(&dir, &out, opts.size)?);
    }
    if wants("instability.csv") {
        files.extend(instability_figure(
            &dir.join("summary.json"),
            &out,
            opts.size,
        )?);
    }
    if wants("fge.csv") {
        files.extend(fge_figure(&dir.join("fge.csv"), &out, opts.size)?);
    }
    if wants("ensemble.csv") {
        files.extend(ensemble_figure(&dir.join("ensemble.csv"), &out, opts.size)?);
    }
    if wants("landscape.csv") {
        files.extend(landscape_figures(&dir, &out, opts.size)?);
    }
    if wants("hessian.csv") {
        files.extend(hessian_path_figure(
            &dir.join("hessian.csv"),
            &out,
            opts.size,
        )?);
    }
    if wants("simplex.csv") {
        files.extend(simplex_figures(&dir, &out, opts.size)?);
    }
    if wants("spectrum.csv") {
        files.extend(spectrum_figure(&dir, &out, opts.size)?);
    }
    if files.is_empty() {
        return Err(Error::Config(format!(
            "{}: nothing to plot (expected path.csv, plane.json, a vtrain metrics.jsonl, a dimension run's spectrum.csv, a project.csv, an intrinsic-dim run's intrinsic.csv, a simplex run's simplex.csv, a path --hessian run's hessian.csv, a landscape run's landscape.csv, a path --curve-ensemble run's ensemble.csv, an fge run's fge.csv, an instability run's instability.csv, or `kl`)",
            input.display()
        )));
    }
    Ok(json!(files))
}
