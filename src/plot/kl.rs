//! The KL divergence of the log-uniform prior as a function of log α: Molchanov et al.'s (2017,
//! eq. 14) approximation against the exact value (REFERENCE §3), with the residual
//! `approx − exact` in a second panel (max |residual| ≈ 0.0094, near log α ≈ −3.5).
//!
//! The data is a CSV `log_alpha,neg_kl_exact,neg_kl_approx,residual` (values of −KL, the form
//! the paper plots), which [`kl_table`] computes from [`crate::variational::kl`].

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{DrawResult, Figure, Style, color, legend_line, padded_range, titled};
use crate::error::{Error, Result};
use crate::variational::kl::{kl_exact, kl_log_uniform};

/// Header of the KL table.
pub const KL_HEADER: &str = "log_alpha,neg_kl_exact,neg_kl_approx,residual";

/// One row of the KL table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlRow {
    /// log α.
    pub log_alpha: f64,
    /// Exact −KL.
    pub exact: f64,
    /// Approximate −KL (Molchanov et al. eq. 14).
    pub approx: f64,
}

/// `n` rows for log α evenly spaced in `[lo, hi]`.
pub fn kl_rows(lo: f64, hi: f64, n: usize) -> Vec<KlRow> {
    let n = n.max(2);
    (0..n)
        .map(|i| {
            let la = lo + (hi - lo) * i as f64 / (n - 1) as f64;
            KlRow {
                log_alpha: la,
                exact: -kl_exact(la),
                approx: -kl_log_uniform(la),
            }
        })
        .collect()
}

/// The KL table as CSV (log α from −10 to 10, 401 rows).
pub fn kl_table() -> String {
    let mut s = format!("{KL_HEADER}\n");
    for r in kl_rows(-10.0, 10.0, 401) {
        writeln!(
            s,
            "{},{},{},{}",
            r.log_alpha,
            r.exact,
            r.approx,
            r.approx - r.exact
        )
        .expect("write to string");
    }
    s
}

/// Parses a KL table.
pub fn parse_kl_csv(text: &str) -> std::result::Result<Vec<KlRow>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or("empty file")?;
    if !header.starts_with("log_alpha,neg_kl_exact,neg_kl_approx") {
        return Err(format!("expected the header `{KL_HEADER}`"));
    }
    let rows = lines
        .enumerate()
        .map(|(i, l)| {
            let f: Vec<f64> = l
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| format!("line {}: not numbers", i + 2))?;
            if f.len() < 3 {
                return Err(format!("line {}: expected at least 3 fields", i + 2));
            }
            Ok(KlRow {
                log_alpha: f[0],
                exact: f[1],
                approx: f[2],
            })
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if rows.len() < 2 {
        return Err("fewer than two rows".into());
    }
    Ok(rows)
}

/// Reads a KL table file.
pub fn read_kl_csv(file: &Path) -> Result<Vec<KlRow>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    parse_kl_csv(&text).map_err(|m| Error::data(file, m))
}

/// The KL figure.
#[derive(Debug, Clone)]
pub struct KlFigure {
    /// Title.
    pub title: String,
    /// The table.
    pub rows: Vec<KlRow>,
}

impl KlFigure {
    /// A figure with the default title.
    pub fn new(rows: Vec<KlRow>) -> Self {
        Self {
            title: "Log-uniform prior: −KL(q ‖ p) vs log α (Molchanov et al. 2017, eq. 14)".into(),
            rows,
        }
    }
}

impl Figure for KlFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, style: &Style) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let body = titled(root, style, &self.title)?;
        let (_, h) = body.dim_in_pixel();
        let (top, bottom) = body.split_vertically((h as f64 * 0.6) as u32);
        let xs = (
            self.rows[0].log_alpha,
            self.rows[self.rows.len() - 1].log_alpha,
        );
        let lw = style.line_width();
        let (lo, hi) = padded_range(self.rows.iter().flat_map(|r| [r.exact, r.approx]), 0.05);
        let mut chart = ChartBuilder::on(&top)
            .margin(style.margin())
            .x_label_area_size(style.x_label_area())
            .y_label_area_size(style.y_label_area())
            .build_cartesian_2d(xs.0..xs.1, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("log α")
            .y_desc("−KL")
            .axis_desc_style(style.label())
            .label_style(style.tick())
            .x_label_formatter(&|v| super::fmt_tick(*v))
            .y_label_formatter(&|v| super::fmt_tick(*v))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()?;
        let black = RGBColor(30, 30, 30);
        chart
            .draw_series(LineSeries::new(
                self.rows.iter().map(|r| (r.log_alpha, r.exact)),
                black.stroke_width(lw + 1),
            ))?
            .label("exact (Poisson series)")
            .legend(legend_line(black, lw + 1, false, style.swatch()));
        let c = color(1);
        chart
            .draw_series(DashedLineSeries::new(
                self.rows.iter().map(|r| (r.log_alpha, r.approx)),
                style.dash(),
                style.dash() / 2 + 1,
                c.stroke_width(lw),
            ))?
            .label("approximation k₁σ(k₂ + k₃ log α) − ½ log(1 + 1/α) − k₁")
            .legend(legend_line(c, lw, true, style.swatch()));
        chart
            .configure_series_labels()
            .legend_area_size(style.legend_area())
            .position(SeriesLabelPosition::LowerRight)
            .label_font(style.legend())
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .margin(style.margin())
            .draw()?;

        let res: Vec<(f64, f64)> = self
            .rows
            .iter()
            .map(|r| (r.log_alpha, r.approx - r.exact))
            .collect();
        let worst =
            res.iter().cloned().fold(
                (0.0f64, 0.0f64),
                |a, b| if b.1.abs() > a.1.abs() { b } else { a },
            );
        let (rlo, rhi) = padded_range(res.iter().map(|r| r.1).chain([0.0]), 0.1);
        let mut chart = ChartBuilder::on(&bottom)
            .caption(
                format!(
                    "residual approx − exact (max |·| = {:.4} at log α = {:.2})",
                    worst.1.abs(),
                    worst.0
                ),
                style.caption(),
            )
            .margin(style.margin())
            .x_label_area_size(style.x_label_area())
            .y_label_area_size(style.y_label_area())
            .build_cartesian_2d(xs.0..xs.1, rlo..rhi)?;
        chart
            .configure_mesh()
            .x_desc("log α")
            .y_desc("residual")
            .axis_desc_style(style.label())
            .label_style(style.tick())
            .x_label_formatter(&|v| super::fmt_tick(*v))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .y_label_formatter(&|v| format!("{v:.3}"))
            .draw()?;
        chart.draw_series(LineSeries::new(
            [(xs.0, 0.0), (xs.1, 0.0)],
            RGBColor(150, 150, 150).stroke_width(1),
        ))?;
        chart.draw_series(LineSeries::new(
            res.iter().cloned(),
            color(3).stroke_width(lw),
        ))?;
        chart.draw_series([Circle::new(worst, style.marker(), color(3).filled())])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips_and_matches_the_reference_residual() {
        let rows = parse_kl_csv(&kl_table()).unwrap();
        assert_eq!(rows.len(), 401);
        let worst = rows
            .iter()
            .map(|r| (r.approx - r.exact).abs())
            .fold(0.0, f64::max);
        // REFERENCE §3: max |exact − approx| over log α ∈ [−10, 10] is 0.0094.
        assert!((worst - 0.0094).abs() < 5e-4, "max residual {worst}");
        assert!(parse_kl_csv("x,y\n1,2\n").is_err());
    }
}
