//! Figures built from result files: `path.csv` (loss/error along paths), `plane.json` (the
//! plane), vtrain's `metrics.jsonl` and `variational.safetensors` (accuracy, sparsity, log α),
//! and the KL approximation against its exact value (computed from the series of `variational::kl::kl_exact`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::plane::PlaneFigure;
use super::{Panel, PanelKind, Panels, SIZE, Series, save};
use crate::error::{Error, Result};
use crate::variational::kl::{kl_exact, kl_log_uniform};
use crate::variational::path::largest_ensemble;

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Loss and error along every path of a `path.csv`; writes `<out>/path.{png,svg}`. Every
/// figure function takes an optional size in pixels (default: per figure).
pub fn path_figure(csv: &Path, out: &Path, size: Option<(u32, u32)>) -> Result<Vec<PathBuf>> {
    if is_variational_path(csv)? {
        return variational_path_figure(csv, out, size);
    }
    paths_figure(&[(csv.to_path_buf(), None)], out, size)
}

/// Whether a `path.csv` holds variational paths (a `test_mode_err` column).
pub fn is_variational_path(csv: &Path) -> Result<bool> {
    Ok(read(csv)?
        .lines()
        .next()
        .is_some_and(|h| h.split(',').any(|c| c == "test_mode_err")))
}

/// The rows of a `path.csv` as `(path name, values)`, the values taken from the columns that
/// `wanted(header)` names, in that order; errors name a missing column or a bad number.
fn read_path_rows(
    csv: &Path,
    wanted: impl FnOnce(&[String]) -> Vec<String>,
) -> Result<Vec<(String, Vec<f64>)>> {
    let text = read(csv)?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(String::from)
        .collect();
    let col = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            Error::data(csv, format!("no `{name}` column (not a modeconn path.csv)"))
        })
    };
    let ip = col("path")?;
    let idx: Vec<usize> = wanted(&header)
        .iter()
        .map(|m| col(m))
        .collect::<Result<_>>()?;
    let rows = lines
        .enumerate()
        .map(|(n, line)| {
            let f: Vec<&str> = line.split(',').collect();
            let values = idx
                .iter()
                .map(|&i| {
                    f.get(i)
                        .and_then(|s| s.parse::<f64>().ok())
                        .ok_or_else(|| Error::data(csv, format!("line {}: bad number", n + 2)))
                })
                .collect::<Result<Vec<f64>>>()?;
            Ok((f.get(ip).unwrap_or(&"").to_string(), values))
        })
        .collect::<Result<_>>()?;
    Ok(rows)
}

/// The variational paths of a `path.csv` (`path` between variational models): test NLL and
/// test error of the mode (solid), one sample (dashed) and the largest ensemble (markers) for
/// every path, one colour a path, and the KL along each; writes `<out>/path.{png,svg}`.
pub fn variational_path_figure(
    csv: &Path,
    out: &Path,
    size: Option<(u32, u32)>,
) -> Result<Vec<PathBuf>> {
    // Mode, one sample and the largest ensemble, if any: (label, column prefix).
    let mut kinds: Vec<(String, String)> = vec![
        ("mode".into(), "test_mode".into()),
        ("sample".into(), "test_sample".into()),
    ];
    let table = read_path_rows(csv, |header| {
        if let Some(k) = largest_ensemble(header.iter().map(String::as_str)) {
            kinds.push((format!("ensemble of {k}"), format!("test_ens{k}")));
        }
        // Per row: [t, kl, (loss, err) per kind].
        let mut c = vec!["t".to_string(), "kl".into()];
        for (_, p) in &kinds {
            c.push(format!("{p}_loss"));
            c.push(format!("{p}_err"));
        }
        c
    })?;
    let mut order: Vec<String> = Vec::new();
    let mut rows: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    for (name, r) in table {
        if !order.contains(&name) {
            order.push(name.clone());
        }
        rows.entry(name).or_default().push(r);
    }
    let mut panels = Vec::new();
    for (m, title) in [(0usize, "Test loss (NLL)"), (1, "Test error (%)")] {
        let scale = if m == 1 { 100.0 } else { 1.0 };
        let mut series = Vec::new();
        for (c, name) in order.iter().enumerate() {
            for (k, (kind, _)) in kinds.iter().enumerate() {
                let pts = rows[name]
                    .iter()
                    .map(|r| (r[0], r[2 + 2 * k + m] * scale))
                    .collect();
                let mut s = Series::new(format!("{name}: {kind}"), pts, c);
                s.dashed = k == 1;
                s.markers = k == 2;
                series.push(s);
            }
        }
        let mut p = Panel::lines(title, "t", title, series);
        p.log_y = m == 0;
        panels.push(p);
    }
    // Methods without a KL term (variance networks) write KL = 0 everywhere: no panel for them.
    let has_kl = rows.values().flatten().any(|r| r[1] != 0.0);
    if has_kl {
        let kl = order
            .iter()
            .enumerate()
            .map(|(c, name)| {
                Series::new(
                    name.clone(),
                    rows[name].iter().map(|r| (r[0], r[1])).collect(),
                    c,
                )
            })
            .collect();
        panels.push(Panel::lines("KL(q_t || p)", "t", "KL", kl));
    }
    let width = if has_kl { 1500 } else { 1200 };
    let fig = Panels {
        title: "Along the line and the fitted curves: mode (solid), one sample (dashed), ensemble (markers)".into(),
        panels,
    };
    save(&fig, &out.join("path"), size.unwrap_or((width, 460)))
}

/// The paths of several `path.csv` files on the same axes; a file given with a label has its
/// straight line (`line`) drawn under that label and its other paths as `label: name`.
pub fn paths_figure(
    inputs: &[(PathBuf, Option<String>)],
    out: &Path,
    size: Option<(u32, u32)>,
) -> Result<Vec<PathBuf>> {
    let mut paths: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (csv, label) in inputs {
        if is_variational_path(csv)? {
            return Err(Error::data(
                csv,
                "holds variational paths, drawn one file at a time (plot DIR)",
            ));
        }
        read_paths(csv, label.as_deref(), &mut paths, &mut order)?;
    }
    draw_paths(&paths, &order, out, size)
}

/// Appends the rows of `csv` to `paths` (`[t, test_loss, test_err, train_loss]` per row),
/// keyed by path name (relabelled by `label`), in first-seen `order`.
fn read_paths(
    csv: &Path,
    label: Option<&str>,
    paths: &mut BTreeMap<String, Vec<Vec<f64>>>,
    order: &mut Vec<String>,
) -> Result<()> {
    let wanted = ["t", "test_loss", "test_err", "train_loss"];
    let rows = read_path_rows(csv, |_| wanted.map(String::from).to_vec())?;
    for (name, row) in rows {
        let name = match label {
            Some(l) if name == "line" => l.to_string(),
            Some(l) => format!("{l}: {name}"),
            None => name,
        };
        if !order.contains(&name) {
            order.push(name.clone());
        }
        paths.entry(name).or_default().push(row);
    }
    Ok(())
}

fn draw_paths(
    paths: &BTreeMap<String, Vec<Vec<f64>>>,
    order: &[String],
    out: &Path,
    size: Option<(u32, u32)>,
) -> Result<Vec<PathBuf>> {
    let titles = ["Test loss (NLL)", "Test error (%)", "Train loss (NLL)"];
    let panels = (0..3)
        .map(|m| {
            let scale = if m == 1 { 100.0 } else { 1.0 };
            let mut series: Vec<Series> = order
                .iter()
                .enumerate()
                .map(|(k, name)| {
                    let pts = paths[name]
                        .iter()
                        .map(|r| (r[0], r[m + 1] * scale))
                        .collect();
                    let mut s = Series::new(name.clone(), pts, k);
                    s.dashed = name == "line";
                    s
                })
                .collect();
            if let Some(first) = order.first() {
                let rows = &paths[first];
                let (a, b) = (&rows[0], &rows[rows.len() - 1]);
                let mut ends = Series::new(
                    "endpoints",
                    vec![(a[0], a[m + 1] * scale), (b[0], b[m + 1] * scale)],
                    7,
                );
                ends.markers = true;
                ends.dashed = true;
                series.push(ends);
            }
            let mut p = Panel::lines(titles[m], "t", titles[m], series);
            p.log_y = m != 1;
            p
        })
        .collect();
    let fig = Panels {
        title: "Along the straight line and the fitted curves".into(),
        panels,
    };
    save(&fig, &out.join("path"), size.unwrap_or((1350, 430)))
}

/// The plane of `plane.json`: train loss and test error; writes `<out>/plane_train_loss` and
/// `<out>/plane_test_err` (PNG and SVG).
pub fn plane_figures(json: &Path, out: &Path, size: Option<(u32, u32)>) -> Result<Vec<PathBuf>> {
    let v: Value = serde_json::from_str(&read(json)?)
        .map_err(|e| Error::data(json, format!("invalid JSON: {e}")))?;
    let bad = |k: &str| {
        Error::data(
            json,
            format!("missing or invalid `{k}` (not a modeconn plane.json)"),
        )
    };
    let vec1 = |k: &str| -> Result<Vec<f64>> {
        v[k].as_array()
            .ok_or_else(|| bad(k))?
            .iter()
            .map(|x| x.as_f64().ok_or_else(|| bad(k)))
            .collect()
    };
    let vec2 = |k: &str| -> Result<Vec<Vec<f64>>> {
        v[k].as_array()
            .ok_or_else(|| bad(k))?
            .iter()
            .map(|r| {
                r.as_array()
                    .ok_or_else(|| bad(k))?
                    .iter()
                    .map(|x| x.as_f64().ok_or_else(|| bad(k)))
                    .collect()
            })
            .collect()
    };
    let pt = |k: &str| -> Result<(f64, f64)> {
        let a = vec1(k)?;
        (a.len() == 2).then(|| (a[0], a[1])).ok_or_else(|| bad(k))
    };
    let (xs, ys) = (vec1("x")?, vec1("y")?);
    let curve: Vec<(f64, f64)> = vec2("curve")?.into_iter().map(|p| (p[0], p[1])).collect();
    let points = vec![
        ("w1".to_string(), pt("w1")?),
        ("w2".to_string(), pt("w2")?),
        ("bend".to_string(), pt("bend")?),
    ];
    let mut files = Vec::new();
    for (key, title, label, scale) in [
        (
            "train_loss",
            "Train loss in the plane of w1, bend, w2",
            "train loss",
            1.0,
        ),
        (
            "test_err",
            "Test error (%) in the plane of w1, bend, w2",
            "test error %",
            100.0,
        ),
    ] {
        let z: Vec<Vec<f64>> = vec2(key)?
            .into_iter()
            .map(|r| r.into_iter().map(|x| (x * scale).max(1e-3)).collect())
            .collect();
        if z.len() != ys.len()
            || z.iter().any(|r| r.len() != xs.len())
            || xs.len() < 2
            || ys.len() < 2
        {
            return Err(bad(key));
        }
        let fig = PlaneFigure {
            title: title.into(),
            label: label.into(),
            axes: ("u (along w1 → w2)".into(), "v (towards the bend)".into()),
            xs: xs.clone(),
            ys: ys.clone(),
            z,
            points: points.clone(),
            curve: curve.clone(),
            levels: 14,
        };
        files.extend(save(
            &fig,
            &out.join(format!("plane_{key}")),
            size.unwrap_or((820, 640)),
        )?);
    }
    Ok(files)
}

/// −KL of the log-uniform prior: exact series vs Molchanov's approximation over
/// log α ∈ [−10, 10], and the residual; writes `<out>/kl.{png,svg}`.
pub fn kl_figure(out: &Path, size: Option<(u32, u32)>) -> Result<Vec<PathBuf>> {
    let grid: Vec<f64> = (0..=400).map(|i| -10.0 + 20.0 * i as f64 / 400.0).collect();
    let exact: Vec<(f64, f64)> = grid.iter().map(|&a| (a, -kl_exact(a))).collect();
    let approx: Vec<(f64, f64)> = grid.iter().map(|&a| (a, -kl_log_uniform(a))).collect();
    let resid: Vec<(f64, f64)> = grid
        .iter()
        .map(|&a| (a, kl_log_uniform(a) - kl_exact(a)))
        .collect();
    let mut approx_s = Series::new("approximation (Molchanov et al. 2017)", approx, 1);
    approx_s.dashed = true;
    let fig = Panels {
        title: "KL of the log-uniform prior".into(),
        panels: vec![
            Panel::lines(
                "−KL(q ‖ p) against log α",
                "log α",
                "−KL",
                vec![Series::new("exact (series)", exact, 0), approx_s],
            ),
            Panel::lines(
                "Residual: approximation − exact (KL)",
                "log α",
                "KL difference",
                vec![Series::new("approx − exact", resid, 2)],
            ),
        ],
    };
    save(&fig, &out.join("kl"), size.unwrap_or(SIZE))
}

fn jsonl(path: &Path) -> Result<Vec<Value>> {
    read(path)?
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::data(path, format!("line {}: invalid JSON: {e}", i + 1)))
        })
        .collect()
}

/// Per-key series of an object-valued metric (e.g. `sparsity` keyed by layer).
fn keyed(records: &[Value], key: &str, scale: f64) -> Vec<Series> {
    let mut names: Vec<String> = Vec::new();
    for r in records {
        if let Some(m) = r[key].as_object() {
            for k in m.keys() {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
    }
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let pts = records
                .iter()
                .filter_map(|r| Some((r["epoch"].as_f64()?, r[key][n].as_f64()? * scale)))
                .collect();
            Series::new(n.clone(), pts, i)
        })
        .collect()
}

/// vtrain diagnostics from `metrics.jsonl`: test accuracy of the mode, one sample and the
/// ensembles; per-layer sparsity; per-layer mean log α. Writes `<out>/vtrain.{png,svg}`.
pub fn vtrain_figure(metrics: &Path, out: &Path, size: Option<(u32, u32)>) -> Result<Vec<PathBuf>> {
    let recs = jsonl(metrics)?;
    let scalar = |k: &str| -> Vec<(f64, f64)> {
        recs.iter()
            .filter_map(|r| Some((r["epoch"].as_f64()?, r[k].as_f64()? * 100.0)))
            .collect()
    };
    let mut acc = vec![
        Series::new("mode", scalar("test_mode_acc"), 0),
        Series::new("one sample", scalar("test_sample_acc"), 1),
    ];
    for (i, mut s) in keyed(&recs, "test_ensemble_acc", 100.0)
        .into_iter()
        .enumerate()
    {
        s.label = format!("ensemble of {}", s.label);
        s.color = 2 + i;
        acc.push(s);
    }
    acc.retain(|s| !s.points.is_empty());
    for s in acc.iter_mut() {
        s.markers = s.points.len() <= 30;
    }
    let fig = Panels {
        title: format!("Variational training ({})", metrics.display()),
        panels: vec![
            Panel::lines("Test accuracy", "epoch", "accuracy (%)", acc),
            Panel::lines(
                "Sparsity (log α > 3)",
                "epoch",
                "fraction pruned (%)",
                keyed(&recs, "sparsity", 100.0),
            ),
            Panel::lines(
                "Mean log α per layer",
                "epoch",
                "log α",
                keyed(&recs, "log_alpha_mean", 1.0),
            ),
        ],
    };
    save(&fig, &out.join("vtrain"), size.unwrap_or((1400, 430)))
}

/// Histograms of log α per layer, `(layer, values)`; writes `<out>/log_alpha_hist`.
pub fn log_alpha_histograms(
    layers: &[(String, Vec<f32>)],
    out: &Path,
    size: Option<(u32, u32)>,
) -> Result<Vec<PathBuf>> {
    let panels = layers
        .iter()
        .enumerate()
        .map(|(i, (name, v))| {
            let bins = 40;
            let (lo, hi) = (-10.0f64, 10.0f64);
            let mut counts = vec![0f64; bins];
            for &x in v {
                let k = (((x as f64 - lo) / (hi - lo)) * bins as f64).floor();
                counts[(k.max(0.0) as usize).min(bins - 1)] += 1.0;
            }
            let pts = counts
                .iter()
                .enumerate()
                .map(|(k, &c)| (lo + (k as f64 + 0.5) * (hi - lo) / bins as f64, c))
                .collect();
            Panel {
                title: format!("{name}: {} weights", v.len()),
                xlabel: "log α (pruned above 3)".into(),
                ylabel: "count".into(),
                series: vec![Series::new("", pts, i)],
                log_y: false,
                kind: PanelKind::Bars,
                legend: false,
            }
        })
        .collect();
    let fig = Panels {
        title: "log α per layer".into(),
        panels,
    };
    save(
        &fig,
        &out.join("log_alpha_hist"),
        size.unwrap_or((420 * layers.len().max(1) as u32, 400)),
    )
}

/// The singular values of a `dimension` run (`spectrum.csv` with `dimension.json` beside it):
/// `σ_i/σ₁` against `i` on a log scale, with the measured rank (the largest log-gap) and the
/// generic rank `N·K` marked; writes `<out>/spectrum.{png,svg}`.
pub fn spectrum_figure(dir: &Path, out: &Path, size: Option<(u32, u32)>) -> Result<Vec<PathBuf>> {
    let csv = dir.join("spectrum.csv");
    let values: Vec<(f64, f64)> = read(&csv)?
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            match (
                f.first().and_then(|v| v.parse::<f64>().ok()),
                f.get(2).and_then(|v| v.parse::<f64>().ok()),
            ) {
                (Some(i), Some(s)) => Ok((i, s)),
                _ => Err(Error::Config(format!(
                    "{}: bad row `{l}` (expected index,sigma,relative)",
                    csv.display()
                ))),
            }
        })
        .collect::<Result<_>>()?;
    let json_path = dir.join("dimension.json");
    let meta: Value = serde_json::from_str(&read(&json_path)?)
        .map_err(|e| Error::Config(format!("{}: {e}", json_path.display())))?;
    let num = |k: &str| {
        meta[k]
            .as_f64()
            .ok_or_else(|| Error::Config(format!("{}: no number `{k}`", json_path.display())))
    };
    let (rank, gap, nk, floor, sigma1) = (
        num("rank")?,
        num("gap_ratio")?,
        num("constraints")?,
        num("floor")?,
        num("sigma_max")?,
    );
    let d = num("params")?;
    // Values at or below the noise floor are drawn at the floor (a log axis has no zero); the
    // D − min(N·K, D) singular directions that J does not have (its kernel) lie on the floor.
    let low = (floor / sigma1.max(f64::MIN_POSITIVE)).max(1e-300);
    let shown: Vec<(f64, f64)> = values.iter().map(|&(i, s)| (i, s.max(low))).collect();
    let mut series = vec![Series::new("σ_i / σ_1", shown, 0)];
    let mut floor_line = Series::new(
        match meta["jacobian"].as_str() {
            Some("matrix-free") => format!("floor σ_1·√(ε·N·K) = {:.1e}·σ_1", low),
            _ => format!("floor σ_1·ε·max(N·K, D) = {:.1e}·σ_1", low),
        },
        vec![(1.0, low), (d, low)],
        2,
    );
    floor_line.dashed = true;
    series.push(floor_line);
    let mut rank_line = Series::new(
        format!("rank {rank} (gap ×{gap:.1e}), N·K = {nk}"),
        vec![(rank + 0.5, low), (rank + 0.5, 1.0)],
        1,
    );
    rank_line.dashed = true;
    series.push(rank_line);
    let mut panel = Panel::lines(
        "Singular values of the residual Jacobian",
        "i",
        "σ_i / σ_1",
        series,
    );
    panel.log_y = true;
    let fig = Panels {
        title: format!(
            "{}: D − rank J = {} (generic D − N·K = {})",
            meta["arch"].as_str().unwrap_or_default(),
            meta["dimension"],
            meta["predicted_dimension"]
        ),
        panels: vec![panel],
    };
    save(&fig, &out.join("spectrum"), size.unwrap_or((900, 520)))
}

/// The projections of a `project` run (`project.csv`): along t for every path, the residual
/// before projection, the distance moved onto the minima set, and the local dimension
/// `D − rank J` at the projected point; writes `<out>/project.{png,svg}`.
pub fn projection_figure(csv: &Path, out: &Path, size: Option<(u32, u32)>) -> Result<Vec<PathBuf>> {
    let rows = read_path_rows(csv, |_| {
        ["t", "residual_before", "distance", "dimension"]
            .map(String::from)
            .to_vec()
    })?;
    let mut order: Vec<String> = Vec::new();
    for (name, _) in &rows {
        if !order.contains(name) {
            order.push(name.clone());
        }
    }
    // A log axis has no zero: the exact minima at the ends are drawn at 1e-12.
    let panel = |col: usize, title: &str, ylabel: &str, log: bool| {
        let series = order
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let pts = rows
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, r)| (r[0], if log { r[col].max(1e-12) } else { r[col] }))
                    .collect();
                Series::new(name.clone(), pts, c)
            })
            .collect();
        let mut p = Panel::lines(title, "t", ylabel, series);
        p.log_y = log;
        p
    };
    let fig = Panels {
        title: "Projection of each path onto the set of minima (minimum-norm Gauss–Newton)".into(),
        panels: vec![
            panel(1, "Residual ‖r‖ before projection", "‖r‖", true),
            panel(2, "Distance moved to the minima set", "‖θ* − θ(t)‖", true),
            panel(3, "Local dimension D − rank J at θ*", "dimension", false),
        ],
    };
    save(&fig, &out.join("project"), size.unwrap_or((1500, 460)))
}

/// The sweep of an `intrinsic-dim` run (`intrinsic.csv` with `summary.json` beside it): test
/// accuracy of every run against d, the mean over runs, the baseline and its 90% threshold,
/// and `d_int90` marked; writes `<out>/intrinsic.{png,svg}`.
pub fn intrinsic_figure(dir: &Path, out: &Path, size: Option<(u32, u32)>) -> Result<Vec<PathBuf>> {
    let csv = dir.join("intrinsic.csv");
    let runs: Vec<(f64, f64, f64)> = read(&csv)?
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            match (
                f.first().and_then(|v| v.parse::<f64>().ok()),
                f.get(1).and_then(|v| v.parse::<f64>().ok()),
                f.get(3).and_then(|v| v.parse::<f64>().ok()),
            ) {
                (Some(d), Some(r), Some(a)) => Ok((d, r, 100.0 * a)),
                _ => Err(Error::data(
                    &csv,
                    format!("bad row `{l}` (expected d,run,seed,test_acc,…)"),
                )),
            }
        })
        .collect::<Result<_>>()?;
    let json_path = dir.join("summary.json");
    let meta: Value = serde_json::from_str(&read(&json_path)?)
        .map_err(|e| Error::data(&json_path, e.to_string()))?;
    let mean: Vec<(f64, f64)> = meta["mean_acc"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["d"].as_f64()?, 100.0 * m["mean"].as_f64()?)))
        .collect();
    let (lo, hi) = runs.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| {
        (a.min(p.0), b.max(p.0))
    });
    let mut mean = mean;
    mean.sort_by(|a, b| a.0.total_cmp(&b.0));
    let baseline = 100.0 * meta["baseline_acc"].as_f64().unwrap_or(f64::NAN);
    let mut series = vec![Series::new("mean over runs", mean, 0)];
    let last = runs.iter().map(|p| p.1 as usize).max().unwrap_or(0);
    for r in 0..=last {
        let pts = runs
            .iter()
            .filter(|p| p.1 as usize == r)
            .map(|p| (p.0, p.2))
            .collect();
        let mut s = Series::new(format!("run {}", r + 1), pts, 3 + r);
        s.markers = true;
        s.dashed = true;
        series.push(s);
    }
    let mut base = Series::new(
        format!("baseline (all D): {baseline:.2}%"),
        vec![(lo, baseline), (hi, baseline)],
        1,
    );
    base.dashed = true;
    series.push(base);
    let mut thr = Series::new(
        format!("90% of baseline: {:.2}%", 0.9 * baseline),
        vec![(lo, 0.9 * baseline), (hi, 0.9 * baseline)],
        2,
    );
    thr.dashed = true;
    series.push(thr);
    let title = match meta["d_int90"].as_u64() {
        Some(d) => format!(
            "{}: d_int90 = {d}",
            meta["arch"].as_str().unwrap_or_default()
        ),
        None => format!(
            "{}: d_int90 not reached",
            meta["arch"].as_str().unwrap_or_default()
        ),
    };
    let fig = Panels {
        title,
        panels: vec![Panel::lines(
            "Test accuracy of training in a random d-dimensional subspace",
            "subspace dimension d",
            "test accuracy (%)",
            series,
        )],
    };
    save(&fig, &out.join("intrinsic"), size.unwrap_or((900, 520)))
}

/// The columns `names` of every row of a CSV with a header, as numbers; errors name a missing
/// column or a bad number.
fn read_columns(csv: &Path, names: &[&str]) -> Result<Vec<Vec<f64>>> {
    let text = read(csv)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let idx: Vec<usize> = names
        .iter()
        .map(|n| {
            header
                .iter()
                .position(|h| h == n)
                .ok_or_else(|| Error::data(csv, format!("no `{n}` column")))
        })
        .collect::<Result<_>>()?;
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            idx.iter()
                .map(|&i| {
                    f.get(i)
                        .and_then(|v| v.parse::<f64>().ok())
                        .ok_or_else(|| Error::data(csv, format!("bad row `{l}`")))
                })
                .collect()
        })
        .collect()
}

/// The figures of a `simplex` run (`simplex.csv`, `triangle.csv` and `summary.json`):
/// `simplex.{png,svg}`, the test error and the train loss over the sampled points of the complex
/// (mean and maximum) and at the newest connector as connectors are added, and
/// `triangle.{png,svg}`, the test loss over one 2-simplex.
pub fn simplex_figures(dir: &Path, out: &Path, size: Option<(u32, u32)>) -> Result<Vec<PathBuf>> {
    let csv = dir.join("simplex.csv");
    let rows = read_columns(
        &csv,
        &[
            "connectors",
            "test_err_mean",
            "test_err_max",
            "newest_test_err",
            "train_loss_mean",
            "train_loss_max",
        ],
    )?;
    let col = |k: usize, scale: f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (r[0], scale * r[k])).collect()
    };
    let json_path = dir.join("summary.json");
    let meta: Value = serde_json::from_str(&read(&json_path)?)
        .map_err(|e| Error::data(&json_path, e.to_string()))?;
    let marked = |mut s: Series| {
        s.markers = true;
        s
    };
    let mut newest = marked(Series::new("newest vertex", col(3, 100.0), 2));
    newest.dashed = true;
    let fig = Panels {
        title: format!(
            "{}: a complex of {} modes and its connectors ({} sampled points per stage)",
            meta["arch"].as_str().unwrap_or_default(),
            meta["modes"],
            meta["eval_samples"]
        ),
        panels: vec![
            Panel::lines(
                "Test error over the complex",
                "connectors",
                "test error (%)",
                vec![
                    marked(Series::new("samples: mean", col(1, 100.0), 0)),
                    marked(Series::new("samples: max", col(2, 100.0), 1)),
                    newest,
                ],
            ),
            {
                let mut p = Panel::lines(
                    "Train loss over the complex",
                    "connectors",
                    "train loss",
                    vec![
                        marked(Series::new("samples: mean", col(4, 1.0), 0)),
                        marked(Series::new("samples: max", col(5, 1.0), 1)),
                    ],
                );
                p.log_y = true;
                p
            },
        ],
    };
    let mut files = save(&fig, &out.join("simplex"), size.unwrap_or((1300, 480)))?;

    let tri = dir.join("triangle.csv");
    let pts = read_columns(&tri, &["b", "c", "test_loss"])?;
    let r = meta["triangle"]["resolution"]
        .as_u64()
        .filter(|&r| r >= 1 && (r as usize + 1) * (r as usize + 2) / 2 == pts.len())
        .ok_or_else(|| Error::data(&tri, "the grid does not match summary.json's resolution"))?
        as usize;
    let mut z = vec![vec![f64::NAN; r + 1]; r + 1];
    for p in &pts {
        let (i, k) = (
            (p[0] * r as f64).round() as usize,
            (p[1] * r as f64).round() as usize,
        );
        if i + k <= r {
            z[i][k] = p[2];
        }
    }
    let names: Vec<String> = meta["triangle"]["vertices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let names: [String; 3] = names
        .try_into()
        .map_err(|_| Error::data(&json_path, "the triangle needs three vertex names"))?;
    let fig = super::triangle::TriangleFigure {
        title: format!(
            "Test loss over the 2-simplex {{{}, {}, {}}}",
            names[0], names[1], names[2]
        ),
        label: "test loss".into(),
        r,
        z,
        names,
        levels: 12,
    };
    files.extend(save(
        &fig,
        &out.join("triangle"),
        size.unwrap_or((820, 680)),
    )?);
    Ok(files)
}

/// Several `simplex` runs on one set of axes (e.g. a width sweep): the mean over the sampled
/// points of the train loss and of the test error against the number of connectors, one line
/// per run (labelled, or by its architecture); writes `<out>/simplexes.{png,svg}`.
pub fn simplexes_figure(
    dirs: &[(PathBuf, Option<String>)],
    out: &Path,
    size: Option<(u32, u32)>,
) -> Result<Vec<PathBuf>> {
    let mut loss = Vec::new();
    let mut err = Vec::new();
    for (i, (dir, label)) in dirs.iter().enumerate() {
        let rows = read_columns(
            &dir.join("simplex.csv"),
            &["connectors", "train_loss_mean", "test_err_mean"],
        )?;
        let label = match label {
            Some(l) => l.clone(),
            None => {
                let p = dir.join("summary.json");
                let meta: Value =
                    serde_json::from_str(&read(&p)?).map_err(|e| Error::data(&p, e.to_string()))?;
                meta["arch"].as_str().unwrap_or_default().to_string()
            }
        };
        let mut l = Series::new(
            label.clone(),
            rows.iter().map(|r| (r[0], r[1])).collect(),
            i,
        );
        l.markers = true;
        let mut e = Series::new(
            label,
            rows.iter().map(|r| (r[0], 100.0 * r[2])).collect(),
            i,
        );
        e.markers = true;
        loss.push(l);
        err.push(e);
    }
    let mut lp = Panel::lines(
        "Train loss over the complex (mean over sampled points)",
        "connectors",
        "train loss",
        loss,
    );
    lp.log_y = true;
    let fig = Panels {
        title: "Mode-connecting complexes as connectors are added".into(),
        panels: vec![
            lp,
            Panel::lines(
                "Test error over the complex (mean over sampled points)",
                "connectors",
                "test error (%)",
                err,
            ),
        ],
    };
    save(&fig, &out.join("simplexes"), size.unwrap_or((1300, 480)))
}

/// Sharpness along paths (`hessian.csv` of `path --hessian`): the loss on the evaluation subset,
/// the top eigenvalue and Hutchinson's trace of the Hessian against t, one line per path;
/// writes `<out>/hessian.{png,svg}`.
pub fn hessian_path_figure(
    csv: &Path,
    out: &Path,
    size: Option<(u32, u32)>,
) -> Result<Vec<PathBuf>> {
    let rows = read_path_rows(csv, |_| {
        ["t", "loss", "top_eigenvalue", "trace"]
            .map(String::from)
            .to_vec()
    })?;
    let mut names: Vec<String> = Vec::new();
    for (n, _) in &rows {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let panel = |k: usize, title: &str, ylabel: &str| {
        let series = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let pts = rows
                    .iter()
                    .filter(|(p, v)| p == n && v[k].is_finite())
                    .map(|(_, v)| (v[0], v[k]))
                    .collect();
                let mut s = Series::new(n.clone(), pts, i);
                s.markers = true;
                s
            })
            .collect();
        Panel::lines(title, "t", ylabel, series)
    };
    let fig = Panels {
        title: "Sharpness along the paths (Hessian of the loss on a fixed subset)".into(),
        panels: vec![
            panel(1, "Loss", "cross-entropy"),
            panel(2, "Top eigenvalue", "λ_max"),
            panel(3, "Trace (Hutchinson)", "tr H"),
        ],
    };
    save(&fig, &out.join("hessian"), size.unwrap_or((1500, 460)))
}

/// The figures of a `landscape` run (`landscape.csv`): in 1-d, `landscape.{png,svg}` (train and
/// test loss, and test error, along the direction); in 2-d, the train loss and the test error as
/// contour plots (`landscape_train_loss`, `landscape_test_err`) with the network at the origin.
pub fn landscape_figures(dir: &Path, out: &Path, size: Option<(u32, u32)>) -> Result<Vec<PathBuf>> {
    let csv = dir.join("landscape.csv");
    let header = read(&csv)?.lines().next().unwrap_or_default().to_string();
    if !header.starts_with("x,y,") {
        let rows = read_columns(&csv, &["x", "train_loss", "test_loss", "test_err"])?;
        let col = |k: usize, s: f64| rows.iter().map(|r| (r[0], s * r[k])).collect::<Vec<_>>();
        let mut loss = Panel::lines(
            "Loss along a filter-normalised direction",
            "x",
            "loss",
            vec![
                Series::new("train", col(1, 1.0), 0),
                Series::new("test", col(2, 1.0), 1),
            ],
        );
        loss.log_y = true;
        let fig = Panels {
            title: "Loss landscape around the network (Li et al. 2018)".into(),
            panels: vec![
                loss,
                Panel::lines(
                    "Test error",
                    "x",
                    "test error (%)",
                    vec![Series::new("test", col(3, 100.0), 1)],
                ),
            ],
        };
        return save(&fig, &out.join("landscape"), size.unwrap_or((1300, 480)));
    }
    let rows = read_columns(&csv, &["x", "y", "train_loss", "test_err"])?;
    let mut xs: Vec<f64> = rows.iter().map(|r| r[0]).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let ys = xs.clone();
    let n = xs.len();
    if rows.len() != n * n {
        return Err(Error::data(&csv, "not a square grid"));
    }
    let mut files = Vec::new();
    for (k, key, title, label, scale) in [
        (
            2,
            "train_loss",
            "Train loss around the network",
            "train loss",
            1.0,
        ),
        (
            3,
            "test_err",
            "Test error (%) around the network",
            "test error %",
            100.0,
        ),
    ] {
        // Rows run over x fastest, then y.
        let z: Vec<Vec<f64>> = rows
            .chunks(n)
            .map(|r| r.iter().map(|c| (c[k] * scale).max(1e-3)).collect())
            .collect();
        let fig = PlaneFigure {
            title: title.into(),
            label: label.into(),
            axes: (
                "x (filter-normalised direction 1)".into(),
                "y (direction 2)".into(),
            ),
            xs: xs.clone(),
            ys: ys.clone(),
            z,
            points: vec![("θ".into(), (0.0, 0.0))],
            curve: Vec::new(),
            levels: 14,
        };
        files.extend(save(
            &fig,
            &out.join(format!("landscape_{key}")),
            size.unwrap_or((820, 640)),
        )?);
    }
    Ok(files)
}

/// Curve ensembles (`ensemble.csv` of `path --curve-ensemble`): the test error of the ensemble of
/// K points of every path against K, spaced in t (solid) and in arc length (dashed); writes
/// `<out>/ensemble.{png,svg}`.
pub fn ensemble_figure(csv: &Path, out: &Path, size: Option<(u32, u32)>) -> Result<Vec<PathBuf>> {
    let text = read(csv)?;
    let mut series: Vec<Series> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for l in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.split(',').collect();
        let (Some(path), Some(spacing), Some(k), Some(err)) = (
            f.first(),
            f.get(1),
            f.get(2).and_then(|v| v.parse::<f64>().ok()),
            f.get(4).and_then(|v| v.parse::<f64>().ok()),
        ) else {
            return Err(Error::data(
                csv,
                format!("bad row `{l}` (expected path,spacing,k,test_loss,test_err)"),
            ));
        };
        if !names.contains(&path.to_string()) {
            names.push(path.to_string());
        }
        let colour = names.iter().position(|n| n == path).expect("pushed");
        let label = format!("{path} (in {spacing})");
        match series.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push((k, 100.0 * err)),
            None => {
                let mut s = Series::new(label, vec![(k, 100.0 * err)], colour);
                s.markers = true;
                s.dashed = *spacing == "length";
                series.push(s);
            }
        }
    }
    let fig = Panels {
        title: "Curve ensembles: K networks evenly spaced along each path".into(),
        panels: vec![Panel::lines(
            "Test error of the ensemble (mean softmax)",
            "ensemble size K",
            "test error (%)",
            series,
        )],
    };
    save(&fig, &out.join("ensemble"), size.unwrap_or((900, 520)))
}

/// An `fge` run (`fge.csv`): the test error of each snapshot and of the ensemble of the
/// snapshots so far; writes `<out>/fge.{png,svg}`.
pub fn fge_figure(csv: &Path, out: &Path, size: Option<(u32, u32)>) -> Result<Vec<PathBuf>> {
    let rows = read_columns(csv, &["snapshot", "test_err", "ensemble_test_err"])?;
    let col = |k: usize| {
        rows.iter()
            .map(|r| (r[0], 100.0 * r[k]))
            .collect::<Vec<_>>()
    };
    let mut own = Series::new("snapshot", col(1), 0);
    own.markers = true;
    let mut ens = Series::new("ensemble of the snapshots so far", col(2), 1);
    ens.markers = true;
    let fig = Panels {
        title: "Fast geometric ensembling".into(),
        panels: vec![Panel::lines(
            "Test error",
            "snapshots",
            "test error (%)",
            vec![own, ens],
        )],
    };
    save(&fig, &out.join("fge"), size.unwrap_or((900, 520)))
}

/// An `instability` run (`summary.json`): the test and train instability against the spawn step
/// k, with the 2% threshold of stability; writes `<out>/instability.{png,svg}`.
pub fn instability_figure(
    json_path: &Path,
    out: &Path,
    size: Option<(u32, u32)>,
) -> Result<Vec<PathBuf>> {
    let meta: Value = serde_json::from_str(&read(json_path)?)
        .map_err(|e| Error::data(json_path, e.to_string()))?;
    let rows = meta["ks"]
        .as_array()
        .ok_or_else(|| Error::data(json_path, "no `ks` (not an instability summary)"))?;
    let col = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r["k"].as_f64()?, 100.0 * r[key].as_f64()?)))
            .collect()
    };
    let test = col("test_instability");
    let (lo, hi) = test
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let mut a = Series::new("test", test, 0);
    a.markers = true;
    let mut b = Series::new("train", col("train_instability"), 1);
    b.markers = true;
    let mut thr = Series::new(
        "stable below 2%",
        vec![(lo, 2.0), (hi.max(lo + 1.0), 2.0)],
        2,
    );
    thr.dashed = true;
    let fig = Panels {
        title: format!(
            "{}: instability of the copies spawned at step k",
            meta["arch"].as_str().unwrap_or_default()
        ),
        panels: vec![Panel::lines(
            "Error barrier between two copies that differ only in data order",
            "spawn step k",
            "instability (%)",
            vec![a, b, thr],
        )],
    };
    save(&fig, &out.join("instability"), size.unwrap_or((900, 520)))
}
