//! Figures of variational runs (`modeconn vtrain`):
//!
//! - [`AccuracyFigure`]: test accuracy of the mode (pruned means), of one sample and of ensembles
//!   of K samples over epochs (variance networks: the mode is at chance, samples are not);
//! - [`LayersFigure`]: per layer, the sparsity (fraction of weights with log α > 3) and the mean
//!   log α over epochs, next to the mode and one-sample accuracy (sparse VD; the layer-wise α
//!   experiment, where some layers' α → ∞);
//! - [`HistogramFigure`]: the distribution of log α per layer at the end of training, with the
//!   pruning threshold log α = 3.
//!
//! Epoch series come from `metrics.jsonl` (one JSON object per epoch with `epoch`,
//! `test_mode_acc`, `test_sample_acc`, `test_ensemble_acc: {K: acc}`, `sparsity: {layer: s}`,
//! `log_alpha_mean: {layer: m}`, `compression`); entries missing in an epoch (sampled
//! evaluations every few epochs) are skipped.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use super::{DrawResult, Figure, Style, color, legend_line, padded_range, titled};
use crate::error::{Error, Result};
use crate::variational::PRUNE_LOG_ALPHA;

/// Per-epoch records of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLog {
    /// One JSON object per epoch, in order.
    pub records: Vec<Value>,
}

impl EpochLog {
    /// Reads a `metrics.jsonl`.
    pub fn read(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        Self::parse(&text).map_err(|m| Error::data(file, m))
    }

    /// Parses JSON lines; every record needs an `epoch`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let records = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let v: Value =
                    serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1))?;
                if v["epoch"].as_f64().is_none() {
                    return Err(format!("line {}: no `epoch`", i + 1));
                }
                Ok(v)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if records.is_empty() {
            return Err("no epochs".into());
        }
        Ok(Self { records })
    }

    /// `(epoch, value)` of a numeric entry addressed by a path of keys.
    pub fn series(&self, path: &[&str]) -> Vec<(f64, f64)> {
        self.records
            .iter()
            .filter_map(|r| {
                let v = path.iter().try_fold(r, |v, k| v.get(*k))?;
                Some((r["epoch"].as_f64()?, v.as_f64()?))
            })
            .collect()
    }

    /// Keys of an object entry (layer names, ensemble sizes) over all epochs, in first-seen
    /// order; ensemble sizes sort numerically.
    pub fn keys(&self, key: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.records {
            if let Some(m) = r.get(key).and_then(Value::as_object) {
                for k in m.keys() {
                    if !out.contains(k) {
                        out.push(k.clone());
                    }
                }
            }
        }
        if out.iter().all(|k| k.parse::<u64>().is_ok()) {
            out.sort_by_key(|k| k.parse::<u64>().unwrap_or(0));
        }
        out
    }

    /// Whether the log is from a variational run (has `test_mode_acc`).
    pub fn is_variational(&self) -> bool {
        self.records
            .iter()
            .any(|r| r.get("test_mode_acc").is_some())
    }

    /// The last epoch's value of a numeric entry.
    pub fn last(&self, path: &[&str]) -> Option<f64> {
        self.series(path).last().map(|p| p.1)
    }
}

struct Line {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    dashed: bool,
}

#[allow(clippy::too_many_arguments)]
fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    style: &Style,
    caption: &str,
    ylabel: &str,
    lines: &[Line],
    y_range: Option<(f64, f64)>,
    legend: SeriesLabelPosition,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let xs = padded_range(
        lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)),
        0.02,
    );
    let ys = y_range.unwrap_or_else(|| {
        padded_range(
            lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)),
            0.08,
        )
    });
    let mut chart = ChartBuilder::on(area)
        .caption(caption, style.caption())
        .margin(style.margin())
        .x_label_area_size(style.x_label_area())
        .y_label_area_size(style.y_label_area())
        .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(ylabel)
        .axis_desc_style(style.label())
        .label_style(style.tick())
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| super::fmt_tick(*v))
        .draw()?;
    let lw = style.line_width();
    let r = (style.marker() - 2).max(2);
    for l in lines {
        let c = l.color;
        if l.dashed {
            chart
                .draw_series(DashedLineSeries::new(
                    l.points.iter().cloned(),
                    style.dash(),
                    style.dash() / 2 + 1,
                    c.stroke_width(lw),
                ))?
                .label(l.label.clone())
                .legend(legend_line(c, lw, true, style.swatch()));
        } else {
            chart
                .draw_series(LineSeries::new(
                    l.points.iter().cloned(),
                    c.stroke_width(lw),
                ))?
                .label(l.label.clone())
                .legend(legend_line(c, lw, false, style.swatch()));
        }
        if l.points.len() <= 40 {
            chart.draw_series(l.points.iter().map(|p| Circle::new(*p, r, c.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .legend_area_size(style.legend_area())
        .position(legend)
        .label_font(style.legend())
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .margin(style.margin())
        .draw()?;
    Ok(())
}

fn pct(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    points.into_iter().map(|(e, v)| (e, 100.0 * v)).collect()
}

/// Test accuracy of the mode, one sample and ensembles over epochs.
#[derive(Debug, Clone)]
pub struct AccuracyFigure {
    /// Title.
    pub title: String,
    /// The epochs.
    pub log: EpochLog,
}

impl AccuracyFigure {
    /// Lines of the figure: mode, one sample, each ensemble size.
    fn lines(&self) -> Vec<Line> {
        let mut lines = vec![
            Line {
                label: "mode (pruned means)".into(),
                points: pct(self.log.series(&["test_mode_acc"])),
                color: RGBColor(40, 40, 40),
                dashed: false,
            },
            Line {
                label: "one sample".into(),
                points: pct(self.log.series(&["test_sample_acc"])),
                color: color(0),
                dashed: true,
            },
        ];
        for (i, k) in self.log.keys("test_ensemble_acc").iter().enumerate() {
            lines.push(Line {
                label: format!("ensemble of {k}"),
                points: pct(self.log.series(&["test_ensemble_acc", k])),
                color: color(i + 1),
                dashed: false,
            });
        }
        lines.retain(|l| !l.points.is_empty());
        lines
    }
}

impl Figure for AccuracyFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, style: &Style) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let body = titled(root, style, &self.title)?;
        let lines = self.lines();
        let (lo, hi) = padded_range(
            lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)),
            0.08,
        );
        line_panel(
            &body,
            style,
            "Test accuracy: mode vs one sample vs ensembles",
            "test accuracy (%)",
            &lines,
            Some((lo.max(0.0), hi.min(100.5))),
            SeriesLabelPosition::LowerRight,
        )
    }
}

/// Per-layer sparsity and mean log α over epochs, and the accuracy of the mode and one sample.
#[derive(Debug, Clone)]
pub struct LayersFigure {
    /// Title.
    pub title: String,
    /// The epochs.
    pub log: EpochLog,
}

impl Figure for LayersFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, style: &Style) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let body = titled(root, style, &self.title)?;
        let panels = body.split_evenly((1, 3));
        let layer_lines = |key: &str, scale: f64| -> Vec<Line> {
            self.log
                .keys(key)
                .iter()
                .enumerate()
                .map(|(i, l)| Line {
                    label: l.clone(),
                    points: self
                        .log
                        .series(&[key, l])
                        .into_iter()
                        .map(|(e, v)| (e, scale * v))
                        .collect(),
                    color: color(i),
                    dashed: false,
                })
                .filter(|l| !l.points.is_empty())
                .collect()
        };
        let sparsity = layer_lines("sparsity", 100.0);
        let caption = match self.log.last(&["compression"]) {
            Some(c) => format!("Sparsity (log α > 3), compression {c:.1}×"),
            None => "Sparsity (log α > 3)".into(),
        };
        line_panel(
            &panels[0],
            style,
            &caption,
            "weights pruned (%)",
            &sparsity,
            Some((-2.0, 102.0)),
            SeriesLabelPosition::LowerRight,
        )?;
        let la = layer_lines("log_alpha_mean", 1.0);
        line_panel(
            &panels[1],
            style,
            "Mean log α per layer",
            "mean log α",
            &la,
            None,
            SeriesLabelPosition::LowerRight,
        )?;
        let acc = vec![
            Line {
                label: "mode".into(),
                points: pct(self.log.series(&["test_mode_acc"])),
                color: RGBColor(40, 40, 40),
                dashed: false,
            },
            Line {
                label: "one sample".into(),
                points: pct(self.log.series(&["test_sample_acc"])),
                color: color(0),
                dashed: true,
            },
        ]
        .into_iter()
        .filter(|l| !l.points.is_empty())
        .collect::<Vec<_>>();
        let (lo, hi) = padded_range(acc.iter().flat_map(|l| l.points.iter().map(|p| p.1)), 0.08);
        line_panel(
            &panels[2],
            style,
            "Test accuracy",
            "test accuracy (%)",
            &acc,
            Some((lo.max(0.0), hi.min(100.5))),
            SeriesLabelPosition::LowerRight,
        )
    }
}

/// Histograms of log α per layer.
#[derive(Debug, Clone)]
pub struct HistogramFigure {
    /// Title.
    pub title: String,
    /// `(layer, log α of each weight)`.
    pub layers: Vec<(String, Vec<f32>)>,
    /// Number of bins over the range.
    pub bins: usize,
}

/// Histogram counts of `v` in `bins` equal bins over `[lo, hi]` (values outside are clamped
/// into the end bins).
pub fn histogram(v: &[f32], lo: f64, hi: f64, bins: usize) -> Vec<usize> {
    let mut h = vec![0usize; bins.max(1)];
    let w = (hi - lo) / h.len() as f64;
    for &x in v {
        let x = x as f64;
        if !x.is_finite() {
            continue;
        }
        let k = (((x - lo) / w).floor().max(0.0) as usize).min(h.len() - 1);
        h[k] += 1;
    }
    h
}

impl Figure for HistogramFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, style: &Style) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let body = titled(root, style, &self.title)?;
        let n = self.layers.len().max(1);
        let cols = n.min(3);
        let rows = n.div_ceil(cols);
        let panels = body.split_evenly((rows, cols));
        let (lo, hi) = padded_range(
            self.layers
                .iter()
                .flat_map(|(_, v)| v.iter().map(|x| *x as f64))
                .chain([PRUNE_LOG_ALPHA as f64 + 1.0, -4.0]),
            0.02,
        );
        for (i, ((name, v), area)) in self.layers.iter().zip(panels.iter()).enumerate() {
            let h = histogram(v, lo, hi, self.bins);
            let total = v.len().max(1) as f64;
            let frac: Vec<f64> = h.iter().map(|&c| 100.0 * c as f64 / total).collect();
            let top = frac.iter().cloned().fold(0.0, f64::max).max(1e-9) * 1.1;
            let pruned = v.iter().filter(|x| **x > PRUNE_LOG_ALPHA).count() as f64 / total;
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{name}: {:.1}% pruned, {} weights", 100.0 * pruned, v.len()),
                    style.caption(),
                )
                .margin(style.margin())
                .x_label_area_size(style.x_label_area())
                .y_label_area_size(style.y_label_area())
                .build_cartesian_2d(lo..hi, 0.0..top)?;
            chart
                .configure_mesh()
                .x_desc("log α")
                .y_desc("weights (%)")
                .axis_desc_style(style.label())
                .label_style(style.tick())
                .light_line_style(TRANSPARENT)
                .bold_line_style(RGBColor(225, 225, 225))
                .x_labels(6)
                .y_labels(5)
                .x_label_formatter(&|v| super::fmt_tick(*v))
                .y_label_formatter(&|v| super::fmt_tick(*v))
                .draw()?;
            let w = (hi - lo) / self.bins as f64;
            let c = color(i);
            chart.draw_series(frac.iter().enumerate().filter(|(_, f)| **f > 0.0).map(
                |(k, f)| {
                    let x0 = lo + k as f64 * w;
                    Rectangle::new([(x0, 0.0), (x0 + w, *f)], c.mix(0.85).filled())
                },
            ))?;
            let t = PRUNE_LOG_ALPHA as f64;
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(t, 0.0), (t, top)],
                    style.dash(),
                    style.dash() / 2 + 1,
                    RGBColor(200, 30, 30).stroke_width(style.line_width()),
                ))?
                .label("pruning threshold log α = 3")
                .legend(legend_line(
                    RGBColor(200, 30, 30),
                    style.line_width(),
                    true,
                    28,
                ));
            if i == 0 {
                chart
                    .configure_series_labels()
                    .legend_area_size(style.legend_area())
                    .position(SeriesLabelPosition::UpperLeft)
                    .label_font(style.legend())
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(180, 180, 180))
                    .margin(style.margin())
                    .draw()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_log_series_and_keys() {
        let text = r#"{"epoch":1,"test_mode_acc":0.5,"sparsity":{"fc1":0.1,"fc2":0.0},"test_ensemble_acc":{"20":0.6,"10":0.55}}
{"epoch":2,"test_mode_acc":0.7,"sparsity":{"fc1":0.3,"fc2":0.1}}
"#;
        let log = EpochLog::parse(text).unwrap();
        assert!(log.is_variational());
        assert_eq!(log.series(&["test_mode_acc"]), vec![(1.0, 0.5), (2.0, 0.7)]);
        assert_eq!(
            log.series(&["sparsity", "fc2"]),
            vec![(1.0, 0.0), (2.0, 0.1)]
        );
        assert_eq!(log.keys("test_ensemble_acc"), vec!["10", "20"]);
        assert_eq!(log.series(&["test_ensemble_acc", "10"]), vec![(1.0, 0.55)]);
        assert_eq!(log.keys("sparsity"), vec!["fc1", "fc2"]);
        assert!(EpochLog::parse("{\"x\":1}\n").is_err());
    }

    #[test]
    fn histogram_counts_every_value() {
        let v = [-10.0f32, -1.0, 0.0, 0.5, 2.9, 3.1, 99.0];
        let h = histogram(&v, -8.0, 8.0, 16);
        assert_eq!(h.iter().sum::<usize>(), v.len());
        assert_eq!(h[0], 1);
        assert_eq!(h[15], 1);
        assert_eq!(h[8], 2); // 0.0 and 0.5 fall in [0, 1)
    }
}
