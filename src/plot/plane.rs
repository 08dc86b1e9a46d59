//! The plane figure (Garipov et al. 2018, Fig. 1): a metric over a 2-d grid drawn as filled
//! bands between log-spaced levels with their edges as contour lines, the endpoints, the bend,
//! the projected curve and the dashed chord on top.

use std::path::PathBuf;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::contour::{Grid, area, band_polygons, chain_segments, contour_segments};
use super::{FONT, Figure, color};
use crate::error::{Error, Result};

/// A grid of values with overlays, in plane coordinates.
#[derive(Debug, Clone)]
pub struct PlaneFigure {
    /// Figure title.
    pub title: String,
    /// Colour-bar label.
    pub label: String,
    /// Axis labels (x, y).
    pub axes: (String, String),
    /// Grid x coordinates (ascending).
    pub xs: Vec<f64>,
    /// Grid y coordinates (ascending).
    pub ys: Vec<f64>,
    /// Values `z[iy][ix]` (positive).
    pub z: Vec<Vec<f64>>,
    /// Named points (endpoints, bend).
    pub points: Vec<(String, (f64, f64))>,
    /// The curve's projection.
    pub curve: Vec<(f64, f64)>,
    /// Number of level bands.
    pub levels: usize,
}

/// Grid refinement (per axis) before the bands are cut.
pub const UPSAMPLE: usize = 3;

pub(super) fn lerp_color(t: f64) -> RGBColor {
    // A perceptually ordered ramp (dark blue → teal → yellow).
    const S: [(f64, f64, f64); 5] = [
        (30.0, 40.0, 110.0),
        (40.0, 100.0, 160.0),
        (40.0, 160.0, 150.0),
        (130.0, 200.0, 90.0),
        (250.0, 230.0, 80.0),
    ];
    let t = t.clamp(0.0, 1.0) * (S.len() - 1) as f64;
    let i = (t.floor() as usize).min(S.len() - 2);
    let f = t - i as f64;
    let c = |a: f64, b: f64| (a + (b - a) * f) as u8;
    RGBColor(
        c(S[i].0, S[i + 1].0),
        c(S[i].1, S[i + 1].1),
        c(S[i].2, S[i + 1].2),
    )
}

impl Figure for PlaneFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| Error::Plot {
            path: PathBuf::from(&self.title),
            msg: format!("{e:?}"),
        };
        let (x0, x1) = (self.xs[0], *self.xs.last().unwrap());
        let (y0, y1) = (self.ys[0], *self.ys.last().unwrap());
        let flat: Vec<f64> = self
            .z
            .iter()
            .flatten()
            .cloned()
            .filter(|v| *v > 0.0)
            .collect();
        let lo = flat
            .iter()
            .cloned()
            .fold(f64::INFINITY, f64::min)
            .max(1e-12);
        let hi = flat
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max)
            .max(lo * 1.0001);
        let (main, bar) = root.split_horizontally(root.dim_in_pixel().0 as i32 - 110);
        let mut chart = ChartBuilder::on(&main)
            .caption(&self.title, (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        // Filled level bands: the grid of ln z, refined bilinearly, cut into bands between
        // log-spaced levels (exact polygons, see `contour`); their edges are the contour lines
        // (marching squares), chained into polylines. Polygons that vanish on the pixel grid are
        // skipped, which keeps the SVG small.
        let ln = Grid::new(
            self.xs.clone(),
            self.ys.clone(),
            self.z.iter().flatten().map(|v| v.max(lo).ln()).collect(),
        )
        .ok_or_else(|| Error::Plot {
            path: PathBuf::from(&self.title),
            msg: "the grid does not match its axes".into(),
        })?
        .upsample(UPSAMPLE);
        let n = self.levels.max(1);
        let levels: Vec<f64> = (0..=n)
            .map(|k| lo.ln() + (hi.ln() - lo.ln()) * k as f64 / n as f64)
            .collect();
        let denom = (n - 1).max(1) as f64;
        let coord = chart.as_coord_spec().clone();
        let visible = |poly: &[(f64, f64)]| {
            let px: Vec<(f64, f64)> = poly
                .iter()
                .map(|p| {
                    let (x, y) = coord.translate(p);
                    (x as f64, y as f64)
                })
                .collect();
            area(&px) >= 0.5
        };
        let polys: Vec<(usize, Vec<(f64, f64)>)> = band_polygons(&ln, &levels)
            .into_iter()
            .filter(|(_, p)| visible(p))
            .collect();
        chart
            .draw_series(
                polys
                    .iter()
                    .map(|(b, p)| Polygon::new(p.clone(), lerp_color(*b as f64 / denom).filled())),
            )
            .map_err(err)?;
        let edge = ShapeStyle::from(&BLACK.mix(0.35)).stroke_width(1);
        for level in &levels[1..n] {
            chart
                .draw_series(
                    chain_segments(&contour_segments(&ln, *level))
                        .into_iter()
                        .map(|line| PathElement::new(line, edge)),
                )
                .map_err(err)?;
        }
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(self.axes.0.as_str())
            .y_desc(self.axes.1.as_str())
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .x_label_formatter(&|v| super::tick(*v))
            .y_label_formatter(&|v| super::tick(*v))
            .draw()
            .map_err(err)?;
        let ends: Vec<(f64, f64)> = self
            .points
            .iter()
            .filter(|(n, _)| n != "bend")
            .map(|p| p.1)
            .collect();
        if ends.len() == 2 {
            chart
                .draw_series(DashedLineSeries::new(
                    ends.clone(),
                    10,
                    6,
                    ShapeStyle::from(&WHITE).stroke_width(2),
                ))
                .map_err(err)?
                .label("chord (line)")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], WHITE.stroke_width(3))
                });
        }
        if !self.curve.is_empty() {
            let c = color(1);
            chart
                .draw_series(LineSeries::new(self.curve.clone(), c.stroke_width(3)))
                .map_err(err)?
                .label("curve")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3))
                });
        }
        for (name, p) in &self.points {
            let fill = if name == "bend" { color(3) } else { WHITE };
            chart
                .draw_series(std::iter::once(Circle::new(*p, 7, fill.filled())))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Circle::new(*p, 7, BLACK.stroke_width(2))))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    name.clone(),
                    (p.0 + 0.02 * (x1 - x0), p.1 + 0.03 * (y1 - y0)),
                    (FONT, 18).into_font().color(&WHITE),
                )))
                .map_err(err)?;
        }
        if ends.len() == 2 || !self.curve.is_empty() {
            chart
                .configure_series_labels()
                .background_style(BLACK.mix(0.35))
                .label_font((FONT, 14).into_font().color(&WHITE))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(err)?;
        }
        colour_bar(root, bar, (lo, hi), n, &self.label).map_err(err)?;
        Ok(())
    }
}

/// The colour bar beside a banded figure: `n` bands of [`lerp_color`] between the log-spaced
/// levels of `lo..hi`, every other level labelled, and `label` above it.
pub(super) fn colour_bar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    bar: DrawingArea<DB, Shift>,
    (lo, hi): (f64, f64),
    n: usize,
    label: &str,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let bar = bar.margin(70, 50, 10, 40);
    let (_, h) = bar.dim_in_pixel();
    let denom = (n - 1).max(1) as f64;
    for k in 0..n {
        let top = h as i32 - ((k + 1) as f64 / n as f64 * h as f64) as i32;
        let bottom = h as i32 - (k as f64 / n as f64 * h as f64) as i32;
        bar.draw(&Rectangle::new(
            [(0, top), (22, bottom)],
            lerp_color(k as f64 / denom).filled(),
        ))?;
    }
    for k in 0..=n {
        if k % 2 == 1 && k != n {
            continue;
        }
        let v = (lo.ln() + (hi.ln() - lo.ln()) * k as f64 / n as f64).exp();
        let y = h as i32 - (k as f64 / n as f64 * h as f64) as i32;
        bar.draw(&Text::new(super::tick(v), (26, y - 7), (FONT, 13)))?;
    }
    let w = root.dim_in_pixel().0 as i32;
    root.draw(&Text::new(label.to_string(), (w - 108, 40), (FONT, 14)))?;
    Ok(())
}
