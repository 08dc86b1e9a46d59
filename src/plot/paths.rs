//! Loss and error along paths between two minima (Garipov et al. 2018, Fig. 2): the straight
//! line vs fitted chains and Bezier curves vs paths to permuted or aligned networks, from the
//! `path.csv` files of `modeconn path` (`path,t,train_loss,train_err,test_loss,test_err,dl`).
//!
//! Two panels share the `t` axis: loss (left) and error in % (right); test values are solid,
//! train values dashed, the endpoints are marked.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{DrawResult, Figure, Style, Swatch, draw_legend, padded_range, series_color, titled};
use crate::error::{Error, Result};

/// One path's profile.
#[derive(Debug, Clone, PartialEq)]
pub struct PathSeries {
    /// Legend label.
    pub label: String,
    /// Positions in `[0, 1]`.
    pub t: Vec<f64>,
    /// Train loss per point.
    pub train_loss: Vec<f64>,
    /// Train error (fraction) per point.
    pub train_err: Vec<f64>,
    /// Test loss per point.
    pub test_loss: Vec<f64>,
    /// Test error (fraction) per point.
    pub test_err: Vec<f64>,
}

/// Parses a `path.csv`: one [`PathSeries`] per value of the `path` column, in order of first
/// appearance, labelled with the path name.
pub fn read_path_csv(file: &Path) -> Result<Vec<PathSeries>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    parse_path_csv(&text).map_err(|msg| Error::data(file, msg))
}

/// [`read_path_csv`] on text.
pub fn parse_path_csv(text: &str) -> std::result::Result<Vec<PathSeries>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty file")?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("no `{name}` column (expected the path.csv of `modeconn path`)"))
    };
    let (cp, ct) = (col("path")?, col("t")?);
    let (ctl, cte, cvl, cve) = (
        col("train_loss")?,
        col("train_err")?,
        col("test_loss")?,
        col("test_err")?,
    );
    let mut out: Vec<PathSeries> = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != header.len() {
            return Err(format!(
                "line {}: {} fields, the header has {}",
                n + 2,
                f.len(),
                header.len()
            ));
        }
        let num = |c: usize| {
            f[c].parse::<f64>()
                .map_err(|_| format!("line {}: `{}` is not a number", n + 2, f[c]))
        };
        let name = f[cp].to_string();
        let idx = match out.iter().position(|s| s.label == name) {
            Some(i) => i,
            None => {
                out.push(PathSeries {
                    label: name,
                    t: vec![],
                    train_loss: vec![],
                    train_err: vec![],
                    test_loss: vec![],
                    test_err: vec![],
                });
                out.len() - 1
            }
        };
        let s = &mut out[idx];
        s.t.push(num(ct)?);
        s.train_loss.push(num(ctl)?);
        s.train_err.push(num(cte)?);
        s.test_loss.push(num(cvl)?);
        s.test_err.push(num(cve)?);
    }
    if out.is_empty() {
        return Err("no rows".into());
    }
    Ok(out)
}

/// The path figure.
#[derive(Debug, Clone)]
pub struct PathFigure {
    /// Title.
    pub title: String,
    /// The paths, drawn in order.
    pub series: Vec<PathSeries>,
    /// Also draw the train metrics (dashed).
    pub show_train: bool,
}

impl PathFigure {
    /// A figure of `series` with a default title.
    pub fn new(series: Vec<PathSeries>) -> Self {
        Self {
            title: "Loss and error along paths between two minima".into(),
            series,
            show_train: true,
        }
    }
}

impl Figure for PathFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, style: &Style) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let body = titled(root, style, &self.title)?;
        let (w, _) = body.dim_in_pixel();
        let (plots, legend) = body.split_horizontally(w - (w as f64 * 0.16).max(150.0) as u32);
        let panels = plots.split_evenly((1, 2));
        let loss = |s: &PathSeries| (s.test_loss.clone(), s.train_loss.clone());
        let err = |s: &PathSeries| {
            let pct = |v: &[f64]| v.iter().map(|e| 100.0 * e).collect::<Vec<_>>();
            (pct(&s.test_err), pct(&s.train_err))
        };
        self.panel(&panels[0], style, "Loss (cross-entropy)", "loss", &loss)?;
        self.panel(&panels[1], style, "Error", "error (%)", &err)?;
        let mut entries: Vec<(String, Swatch)> = self
            .series
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let color = series_color(&s.label, k);
                (
                    s.label.clone(),
                    Swatch::Line {
                        color,
                        dashed: false,
                    },
                )
            })
            .collect();
        let grey = RGBColor(150, 150, 150);
        if self.show_train {
            entries.push((
                "test".into(),
                Swatch::Line {
                    color: grey,
                    dashed: false,
                },
            ));
            entries.push((
                "train".into(),
                Swatch::Line {
                    color: grey,
                    dashed: true,
                },
            ));
        }
        entries.push(("minima".into(), Swatch::Marker { color: BLACK }));
        let top = (style.px(23.0) * 2.0) as i32 + style.margin() as i32;
        draw_legend(&legend, style, top, &entries)?;
        Ok(())
    }
}

type Metric<'a> = dyn Fn(&PathSeries) -> (Vec<f64>, Vec<f64>) + 'a;

impl PathFigure {
    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        style: &Style,
        caption: &str,
        ylabel: &str,
        metric: &Metric<'_>,
    ) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let values: Vec<(Vec<f64>, Vec<f64>)> = self.series.iter().map(metric).collect();
        let all = values.iter().flat_map(|(te, tr)| {
            te.iter()
                .chain(if self.show_train {
                    tr.iter()
                } else {
                    [].iter()
                })
                .cloned()
        });
        let (lo, hi) = padded_range(all, 0.06);
        let lo = lo.max(0.0).min(hi - 1e-9);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, style.caption())
            .margin(style.margin())
            .x_label_area_size(style.x_label_area())
            .y_label_area_size(style.y_label_area())
            .build_cartesian_2d(-0.02f64..1.02f64, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("t (position along the path)")
            .y_desc(ylabel)
            .axis_desc_style(style.label())
            .label_style(style.tick())
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .x_labels(6)
            .y_labels(6)
            .y_label_formatter(&|v| super::fmt_tick(*v))
            .draw()?;
        let lw = style.line_width();
        for (k, (s, (te, tr))) in self.series.iter().zip(&values).enumerate() {
            let c = series_color(&s.label, k);
            if self.show_train {
                chart.draw_series(DashedLineSeries::new(
                    s.t.iter().cloned().zip(tr.iter().cloned()),
                    style.dash(),
                    style.dash() / 2 + 1,
                    c.mix(0.75).stroke_width((lw / 2).max(1) + 1),
                ))?;
            }
            chart.draw_series(LineSeries::new(
                s.t.iter().cloned().zip(te.iter().cloned()),
                c.stroke_width(lw),
            ))?;
        }
        // Endpoints (t = 0 and t = 1 of every path: the two minima).
        let r = style.marker();
        let mut ends = Vec::new();
        for (s, (te, _)) in self.series.iter().zip(&values) {
            if let (Some(&t0), Some(&t1)) = (s.t.first(), s.t.last()) {
                ends.push((t0, te[0]));
                ends.push((t1, te[te.len() - 1]));
            }
        }
        chart.draw_series(ends.into_iter().map(|p| Circle::new(p, r, BLACK.filled())))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_groups_paths_in_order() {
        let csv = "path,t,train_loss,train_err,test_loss,test_err,dl\n\
                   line,0,1,0.1,2,0.2,0\nline,1,1.5,0.15,2.5,0.25,3\n\
                   chain,0,1,0.1,2,0.2,0\nchain,1,1.5,0.15,2.5,0.25,1\n";
        let s = parse_path_csv(csv).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label, "line");
        assert_eq!(s[1].t, vec![0.0, 1.0]);
        assert_eq!(s[1].test_err, vec![0.2, 0.25]);
        assert!(parse_path_csv("a,b\n1,2\n").unwrap_err().contains("`path`"));
        assert!(
            parse_path_csv("path,t,train_loss,train_err,test_loss,test_err\nl,x,1,1,1,1\n")
                .unwrap_err()
                .contains("line 2")
        );
    }
}
