//! The plane through two minima and a bend (Garipov et al. 2018, Fig. 1), from `plane.json` of
//! `modeconn plane`: train loss and test error as filled contours on log-spaced levels (the
//! bilinear-interpolated grid quantised into bands, see [`super::contour`]) with contour lines,
//! a colour bar, the endpoints `w₁`, `w₂`, the bend `θ`, the projected curve and the dashed chord.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::contour::{
    Grid, area as poly_area, band_polygons, chain_segments, contour_segments, log_levels, viridis,
};
use super::{DrawResult, Figure, Style, fmt_tick, titled};
use crate::error::{Error, Result};
use crate::eval::plane::PlaneResult;

/// Reads and checks a `plane.json`.
pub fn read_plane_json(file: &Path) -> Result<PlaneResult> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let p: PlaneResult = serde_json::from_str(&text)
        .map_err(|e| Error::data(file, format!("not the plane.json of `modeconn plane`: {e}")))?;
    p.validate().map_err(|m| Error::data(file, m))?;
    Ok(p)
}

/// Number of colour bands.
pub const BANDS: usize = 14;
/// Grid refinement before contouring (half of it for vector output).
pub const UPSAMPLE: usize = 4;

/// The plane figure.
#[derive(Debug, Clone)]
pub struct PlaneFigure {
    /// Title.
    pub title: String,
    /// The data.
    pub plane: PlaneResult,
}

impl PlaneFigure {
    /// A figure with a default title.
    pub fn new(plane: PlaneResult) -> Self {
        Self {
            title: format!(
                "Plane through two minima and the {} bend ({})",
                plane.curve_kind, plane.arch
            ),
            plane,
        }
    }
}

impl Figure for PlaneFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, style: &Style) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let body = titled(root, style, &self.title)?;
        let panels = body.split_evenly((1, 2));
        let p = &self.plane;
        let pct = |g: &Vec<Vec<f64>>| -> Vec<Vec<f64>> {
            g.iter()
                .map(|r| r.iter().map(|v| 100.0 * v).collect())
                .collect()
        };
        self.panel(&panels[0], style, "Train loss", &p.train_loss)?;
        self.panel(&panels[1], style, "Test error (%)", &pct(&p.test_err))?;
        Ok(())
    }
}

impl PlaneFigure {
    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        style: &Style,
        caption: &str,
        values: &[Vec<f64>],
    ) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let p = &self.plane;
        let z: Vec<f64> = values.iter().flatten().cloned().collect();
        let grid = Grid::new(p.x.clone(), p.y.clone(), z).ok_or("plane grid has a wrong shape")?;
        // Log-spaced levels between the smallest positive and the largest value.
        let pos_min = grid
            .z
            .iter()
            .filter(|v| v.is_finite() && **v > 0.0)
            .fold(f64::INFINITY, |a, &b| a.min(b));
        let (_, max) = grid.range();
        let lo = if pos_min.is_finite() { pos_min } else { 1e-3 };
        let hi = if max.is_finite() && max > lo {
            max
        } else {
            lo * 10.0
        };
        let levels = log_levels(lo, hi, BANDS);
        let ln_levels: Vec<f64> = levels.iter().map(|l| l.ln()).collect();
        let up = if style.vector { UPSAMPLE / 2 } else { UPSAMPLE };
        let fine = grid.map(|v| v.max(lo).ln()).upsample(up);
        let band_color = |b: usize| {
            let (r, g, bl) = viridis((b as f64 + 0.5) / BANDS as f64);
            RGBColor(r, g, bl)
        };

        let (w, _) = area.dim_in_pixel();
        let cbar_w = ((w as f64) * 0.16).max(60.0 * style.scale) as u32;
        let (main, cbar) = area.split_horizontally(w - cbar_w);

        let (x0, x1) = (p.x[0], *p.x.last().unwrap());
        let (y0, y1) = (p.y[0], *p.y.last().unwrap());
        let mut chart = ChartBuilder::on(&main)
            .caption(caption, style.caption())
            .margin(style.margin())
            .x_label_area_size(style.x_label_area())
            .y_label_area_size(style.y_label_area())
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("along w₂ − w₁")
            .y_desc("towards the bend θ")
            .axis_desc_style(style.label())
            .label_style(style.tick())
            .x_labels(5)
            .y_labels(5)
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_tick(*v))
            .draw()?;

        // Filled bands. Polygons that collapse to nothing on the pixel grid are skipped; on
        // rasters each is also stroked in its own colour to hide seams.
        let polys = band_polygons(&fine, &ln_levels);
        let coord = chart.as_coord_spec().clone();
        let visible = |poly: &Vec<(f64, f64)>| {
            let px: Vec<(f64, f64)> = poly
                .iter()
                .map(|p| {
                    let (x, y) = coord.translate(p);
                    (x as f64, y as f64)
                })
                .collect();
            poly_area(&px) >= 0.5
        };
        let polys: Vec<_> = polys.into_iter().filter(|(_, p)| visible(p)).collect();
        chart.draw_series(
            polys
                .iter()
                .map(|(b, poly)| Polygon::new(poly.clone(), band_color(*b).filled())),
        )?;
        if !style.vector {
            chart.draw_series(polys.iter().map(|(b, poly)| {
                let mut ring = poly.clone();
                ring.push(poly[0]);
                PathElement::new(ring, band_color(*b).stroke_width(1))
            }))?;
        }
        // Contour lines at the interior levels.
        let line_style = RGBColor(20, 20, 20).mix(0.35).stroke_width(1);
        for l in &ln_levels[1..BANDS] {
            chart.draw_series(
                chain_segments(&contour_segments(&fine, *l))
                    .into_iter()
                    .map(|line| PathElement::new(line, line_style)),
            )?;
        }

        // Chord (dashed), projected curve, endpoints and bend.
        let lw = style.line_width();
        let white = WHITE.stroke_width(lw);
        chart.draw_series(DashedLineSeries::new(
            vec![(p.a[0], p.a[1]), (p.b[0], p.b[1])],
            style.dash(),
            style.dash() / 2 + 2,
            white,
        ))?;
        chart.draw_series(LineSeries::new(p.curve.iter().map(|c| (c[0], c[1])), white))?;
        let r = style.marker() + 1;
        let text = style.legend().color(&WHITE);
        let label_at = |pt: [f64; 2], name: &str, dy: i32| {
            EmptyElement::at((pt[0], pt[1]))
                + Circle::new((0, 0), r, BLACK.filled())
                + Circle::new((0, 0), r, WHITE.stroke_width(2))
                + Text::new(name.to_string(), (r + 3, dy), text.clone())
        };
        let off = -(2 * r + 6);
        chart.draw_series([label_at(p.a, "w₁", off), label_at(p.b, "w₂", off)])?;
        chart.draw_series([EmptyElement::at((p.bend[0], p.bend[1]))
            + TriangleMarker::new((0, 0), r + 2, WHITE.filled())
            + Text::new("θ (bend)".to_string(), (r + 4, -(r + 2)), text.clone())])?;

        // Colour bar: one box per band, its edges labelled (log-spaced values).
        let (cw, _) = cbar.dim_in_pixel();
        let mut bar = ChartBuilder::on(&cbar)
            .margin_top(style.margin() + (style.px(23.0) * 1.6) as u32)
            .margin_bottom(style.margin() + style.x_label_area())
            .margin_left((cw as f64 * 0.08) as u32)
            .build_cartesian_2d(0f64..1f64, ln_levels[0]..ln_levels[BANDS])?;
        let bar_w = 0.28;
        bar.draw_series((0..BANDS).map(|b| {
            Rectangle::new(
                [(0.0, ln_levels[b]), (bar_w, ln_levels[b + 1])],
                band_color(b).filled(),
            )
        }))?;
        bar.draw_series([Rectangle::new(
            [(0.0, ln_levels[0]), (bar_w, ln_levels[BANDS])],
            RGBColor(60, 60, 60).stroke_width(1),
        )])?;
        let tick = style.tick().pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Left,
            plotters::style::text_anchor::VPos::Center,
        ));
        let step = if BANDS > 8 { 2 } else { 1 };
        bar.draw_series((0..=BANDS).step_by(step).map(|k| {
            EmptyElement::at((bar_w, ln_levels[k]))
                + PathElement::new(vec![(0, 0), (5, 0)], RGBColor(60, 60, 60).stroke_width(1))
                + Text::new(sig2(levels[k]), (8, 0), tick.clone())
        }))?;
        Ok(())
    }
}

/// Two significant digits (`0.12`, `4.7`, `130`).
pub fn sig2(v: f64) -> String {
    if !(v.is_finite()) || v == 0.0 {
        return fmt_tick(v);
    }
    let e = v.abs().log10().floor() as i32;
    let decimals = (1 - e).max(0) as usize;
    if e >= 5 || e <= -4 {
        return format!("{v:.1e}");
    }
    format!("{v:.decimals$}")
}
