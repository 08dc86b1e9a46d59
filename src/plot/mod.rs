//! Figures drawn with plotters from saved results only (never during training): line charts
//! with several panels, the plane of filled log-spaced level bands with contour edges, and
//! histograms. Every figure is written as PNG and SVG (atomically) with DejaVu Sans embedded, so
//! text renders without system fonts; [`pdf`] converts an SVG to PDF.

pub mod contour;
pub mod figures;
pub mod pdf;
pub mod plane;
pub mod triangle;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters_backend::DrawingErrorKind;

use crate::error::{Error, Result};
use crate::params::io::write_atomic;

/// Default figure size in pixels.
pub const SIZE: (u32, u32) = (1000, 420);

const FONT: &str = "sans-serif";

fn init_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Oblique,
            FontStyle::Italic,
        ] {
            let bytes = match style {
                FontStyle::Bold => dejavu::sans::bold(),
                _ => dejavu::sans::regular(),
            };
            plotters::style::register_font(FONT, style, bytes)
                .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font is valid"));
        }
    });
}

/// The colour of series `i`.
pub fn color(i: usize) -> RGBColor {
    const C: [(u8, u8, u8); 8] = [
        (31, 119, 180),
        (214, 39, 40),
        (44, 160, 44),
        (255, 127, 14),
        (148, 103, 189),
        (23, 190, 207),
        (140, 86, 75),
        (127, 127, 127),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points `(x, y)`.
    pub points: Vec<(f64, f64)>,
    /// Palette index.
    pub color: usize,
    /// Dashed line.
    pub dashed: bool,
    /// Draw a marker at every point.
    pub markers: bool,
}

impl Series {
    /// A solid line.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>, color: usize) -> Self {
        Self {
            label: label.into(),
            points,
            color,
            dashed: false,
            markers: false,
        }
    }
}

/// How a panel draws its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanelKind {
    /// Lines.
    Lines,
    /// Histogram bars: each series' points are `(bin centre, count)`.
    Bars,
}

/// One chart of a figure.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Panel title.
    pub title: String,
    /// X axis label.
    pub xlabel: String,
    /// Y axis label.
    pub ylabel: String,
    /// The series.
    pub series: Vec<Series>,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// Lines or bars.
    pub kind: PanelKind,
    /// Draw the legend (placed in the corner that hides the least data).
    pub legend: bool,
}

impl Panel {
    /// A line panel.
    pub fn lines(title: &str, xlabel: &str, ylabel: &str, series: Vec<Series>) -> Self {
        Self {
            title: title.into(),
            xlabel: xlabel.into(),
            ylabel: ylabel.into(),
            series,
            log_y: false,
            kind: PanelKind::Lines,
            legend: true,
        }
    }
}

fn plot_err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Plot {
        path: path.to_path_buf(),
        msg: format!("{e:?}"),
    }
}

/// A figure: a title and a row of panels or a custom drawing.
pub trait Figure {
    /// Draws the figure on a drawing area.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Writes `fig` as `base.png` and `base.svg` of `size` pixels (atomically).
pub fn save<F: Figure>(fig: &F, base: &Path, size: (u32, u32)) -> Result<Vec<PathBuf>> {
    init_fonts();
    if let Some(d) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let png = base.with_extension("png");
    let svg = base.with_extension("svg");
    let tmp = base.with_extension(format!("tmp{}.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err(&png))?;
        fig.draw(&root)?;
        root.present().map_err(plot_err(&png))?;
    }
    std::fs::rename(&tmp, &png).map_err(|e| Error::io(&png, e))?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err(&svg))?;
        fig.draw(&root)?;
        root.present().map_err(plot_err(&svg))?;
    }
    write_atomic(&svg, text.as_bytes())?;
    Ok(vec![png, svg])
}

/// A short tick label: no floating-point noise such as `0.30000000000000004`.
pub fn tick(v: f64) -> String {
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.1e}")
    };
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn range(vals: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if log {
        return (lo / 1.5, hi * 1.5);
    }
    if hi - lo < 1e-9 {
        // A constant series: centre it in a readable range.
        let pad = (hi.abs() * 0.1).max(1.0);
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.06;
    (lo - pad, hi + pad)
}

/// A legend swatch: a short horizontal line, solid or dashed, starting at its anchor.
#[derive(Debug, Clone, Copy)]
pub struct LegendLine {
    at: (i32, i32),
    color: RGBColor,
    dashed: bool,
}

impl<'a> PointCollection<'a, (i32, i32)> for &'a LegendLine {
    type Point = &'a (i32, i32);
    type IntoIter = std::iter::Once<&'a (i32, i32)>;
    fn point_iter(self) -> std::iter::Once<&'a (i32, i32)> {
        std::iter::once(&self.at)
    }
}

impl<DB: DrawingBackend> Drawable<DB> for LegendLine {
    fn draw<I: Iterator<Item = (i32, i32)>>(
        &self,
        mut pos: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> std::result::Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = pos.next() else {
            return Ok(());
        };
        let style = ShapeStyle::from(&self.color).stroke_width(3);
        if self.dashed {
            backend.draw_line((x, y), (x + 8, y), &style)?;
            backend.draw_line((x + 14, y), (x + 22, y), &style)
        } else {
            backend.draw_line((x, y), (x + 22, y), &style)
        }
    }
}

/// The legend corner of a panel that covers the fewest data: each series is sampled densely
/// along its segments in axis-normalised coordinates (log y when `log`), and the corner boxes
/// (the legend's estimated size within a plotting area of `plot_px` pixels) are scored by the samples
/// they contain; ties prefer upper right, upper left, lower right, lower left, then the middle
/// of the right and left edges.
pub fn legend_corner(
    series: &[Series],
    x: (f64, f64),
    y: (f64, f64),
    log: bool,
    plot_px: (u32, u32),
) -> SeriesLabelPosition {
    let labelled: Vec<&Series> = series.iter().filter(|s| !s.label.is_empty()).collect();
    let chars = labelled
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0);
    // The legend box in pixels (14 px font: ~7.5 px per character, 18 px per entry) as a
    // fraction of the plotting area.
    let (pw, ph) = (plot_px.0.max(1) as f64, plot_px.1.max(1) as f64);
    let w = ((60.0 + 7.5 * chars as f64) / pw).clamp(0.1, 0.95);
    let h = ((18.0 * labelled.len() as f64 + 24.0) / ph).clamp(0.05, 0.95);
    let ty = |v: f64| if log { v.max(1e-300).ln() } else { v };
    let (ya, yb) = (ty(y.0), ty(y.1));
    let norm = |(px, py): (f64, f64)| {
        (
            (px - x.0) / (x.1 - x.0).max(1e-300),
            (ty(py) - ya) / (yb - ya).max(1e-300),
        )
    };
    let mut samples = Vec::new();
    for s in series {
        let pts: Vec<(f64, f64)> = s.points.iter().map(|&p| norm(p)).collect();
        if let [p] = pts[..] {
            samples.push(p);
        }
        for seg in pts.windows(2) {
            for k in 0..=16 {
                let f = k as f64 / 16.0;
                samples.push((
                    seg[0].0 + f * (seg[1].0 - seg[0].0),
                    seg[0].1 + f * (seg[1].1 - seg[0].1),
                ));
            }
        }
    }
    let corners = [
        (
            SeriesLabelPosition::UpperRight,
            (1.0 - w, 1.0),
            (1.0 - h, 1.0),
        ),
        (SeriesLabelPosition::UpperLeft, (0.0, w), (1.0 - h, 1.0)),
        (SeriesLabelPosition::LowerRight, (1.0 - w, 1.0), (0.0, h)),
        (SeriesLabelPosition::LowerLeft, (0.0, w), (0.0, h)),
        (
            SeriesLabelPosition::MiddleRight,
            (1.0 - w, 1.0),
            (0.5 - h / 2.0, 0.5 + h / 2.0),
        ),
        (
            SeriesLabelPosition::MiddleLeft,
            (0.0, w),
            (0.5 - h / 2.0, 0.5 + h / 2.0),
        ),
    ];
    let score = |(xr, yr): ((f64, f64), (f64, f64))| {
        samples
            .iter()
            .filter(|(px, py)| (xr.0..=xr.1).contains(px) && (yr.0..=yr.1).contains(py))
            .count()
    };
    corners
        .iter()
        .min_by_key(|(_, xr, yr)| score((*xr, *yr)))
        .map(|c| c.0.clone())
        .unwrap_or(SeriesLabelPosition::UpperRight)
}

/// A row of panels under a title.
pub struct Panels {
    /// Figure title.
    pub title: String,
    /// The panels, left to right.
    pub panels: Vec<Panel>,
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| Error::Plot {
        path: PathBuf::from(&p.title),
        msg: format!("{e:?}"),
    };
    let xs = p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0));
    let (x0, x1) = range(xs, false);
    let ys = p.series.iter().flat_map(|s| s.points.iter().map(|q| q.1));
    let (mut y0, y1) = range(ys, p.log_y);
    let nonnegative = p
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .all(|q| q.1 >= 0.0);
    if p.kind == PanelKind::Bars || (nonnegative && y0 < 0.0) {
        // Counts, errors, sparsities: no negative axis below data that cannot be negative.
        y0 = 0.0;
    }
    let (aw, ah) = area.dim_in_pixel();
    let plot_px = (aw.saturating_sub(64 + 24), ah.saturating_sub(42 + 60));
    let corner = legend_corner(&p.series, (x0, x1), (y0, y1), p.log_y, plot_px);
    let mut b = ChartBuilder::on(area);
    b.caption(&p.title, (FONT, 20))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(p.xlabel.as_str())
                .y_desc(p.ylabel.as_str())
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 16))
                .light_line_style(RGBColor(244, 244, 244))
                .bold_line_style(RGBColor(215, 215, 215))
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .draw()
                .map_err(err)?;
            for s in &p.series {
                let c = color(s.color);
                let style = ShapeStyle::from(&c).stroke_width(2);
                let drawn = match (p.kind, s.dashed) {
                    (PanelKind::Bars, _) => {
                        let w = if s.points.len() > 1 {
                            (s.points[1].0 - s.points[0].0) * 0.45
                        } else {
                            0.5
                        };
                        chart
                            .draw_series(s.points.iter().map(|&(x, y)| {
                                Rectangle::new([(x - w, 0.0), (x + w, y)], c.mix(0.55).filled())
                            }))
                            .map_err(err)?
                    }
                    (_, true) => chart
                        .draw_series(DashedLineSeries::new(s.points.iter().cloned(), 8, 5, style))
                        .map_err(err)?,
                    (_, false) => chart
                        .draw_series(LineSeries::new(s.points.iter().cloned(), style))
                        .map_err(err)?,
                };
                let dashed = s.dashed;
                drawn.label(s.label.as_str()).legend(move |at| LegendLine {
                    at,
                    color: c,
                    dashed,
                });
                if s.markers {
                    chart
                        .draw_series(s.points.iter().map(|&q| Circle::new(q, 4, c.filled())))
                        .map_err(err)?;
                }
            }
            if p.legend && p.series.iter().any(|s| !s.label.is_empty()) {
                chart
                    .configure_series_labels()
                    .legend_area_size(30)
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(180, 180, 180))
                    .label_font((FONT, 14))
                    .position(corner.clone())
                    .draw()
                    .map_err(err)?;
            }
        }};
    }
    if p.log_y {
        body!(
            b.build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(err)?
        );
    } else {
        body!(b.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?);
    }
    Ok(())
}

impl Figure for Panels {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| Error::Plot {
            path: PathBuf::from(&self.title),
            msg: format!("{e:?}"),
        };
        let area = root.titled(&self.title, (FONT, 24)).map_err(err)?;
        // Several panels with the same legend entries share one legend, in a strip on the right.
        let labels = |p: &Panel| -> Vec<(String, usize, bool)> {
            p.series
                .iter()
                .filter(|s| !s.label.is_empty())
                .map(|s| (s.label.clone(), s.color, s.dashed))
                .collect()
        };
        let first = self.panels.first().map(labels).unwrap_or_default();
        let shared = self.panels.len() > 1
            && !first.is_empty()
            && self.panels.iter().all(|p| p.legend && labels(p) == first);
        let area = if shared {
            let longest = first.iter().map(|l| l.0.chars().count()).max().unwrap_or(0);
            let strip = (longest as u32 * 9 + 60).clamp(120, 320);
            let (w, _) = area.dim_in_pixel();
            let (panels, legend) = area.split_horizontally(w.saturating_sub(strip));
            let row = 24;
            let top = 48;
            legend
                .draw(&Rectangle::new(
                    [
                        (4, top - 10),
                        (strip as i32 - 10, top + row * first.len() as i32),
                    ],
                    RGBColor(180, 180, 180).stroke_width(1),
                ))
                .map_err(err)?;
            for (k, (label, c, dashed)) in first.iter().enumerate() {
                let y = top + row * k as i32 + 4;
                legend
                    .draw(&LegendLine {
                        at: (12, y),
                        color: color(*c),
                        dashed: *dashed,
                    })
                    .map_err(err)?;
                legend
                    .draw(&Text::new(
                        label.clone(),
                        (42, y),
                        TextStyle::from((FONT, 14).into_font()).pos(
                            plotters::style::text_anchor::Pos::new(
                                plotters::style::text_anchor::HPos::Left,
                                plotters::style::text_anchor::VPos::Center,
                            ),
                        ),
                    ))
                    .map_err(err)?;
            }
            panels
        } else {
            area
        };
        let cells = area.split_evenly((1, self.panels.len().max(1)));
        for (cell, p) in cells.iter().zip(&self.panels) {
            if shared {
                let mut p = p.clone();
                p.legend = false;
                draw_panel(cell, &p)?;
            } else {
                draw_panel(cell, p)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legend_goes_where_the_data_is_not() {
        let rising = vec![Series::new("a", vec![(0.0, 0.0), (1.0, 1.0)], 0)];
        let pos = legend_corner(&rising, (0.0, 1.0), (0.0, 1.0), false, (400, 300));
        assert!(matches!(pos, SeriesLabelPosition::UpperLeft), "{pos:?}");
        let high = vec![Series::new("a", vec![(0.0, 0.9), (1.0, 0.95)], 0)];
        let pos = legend_corner(&high, (0.0, 1.0), (0.0, 1.0), false, (400, 300));
        assert!(matches!(pos, SeriesLabelPosition::LowerRight), "{pos:?}");
        // 0.6 of [0.01, 1] is near the top of a log axis, in the middle of a linear one.
        let mid = vec![Series::new("a", vec![(0.0, 0.6), (1.0, 0.6)], 0)];
        let pos = legend_corner(&mid, (0.0, 1.0), (0.01, 1.0), true, (400, 300));
        assert!(matches!(pos, SeriesLabelPosition::LowerRight), "{pos:?}");
        let pos = legend_corner(&mid, (0.0, 1.0), (0.01, 1.0), false, (400, 300));
        assert!(matches!(pos, SeriesLabelPosition::UpperRight), "{pos:?}");
        // Lines along the top and the bottom leave the middle of the right edge.
        let both = vec![
            Series::new("a", vec![(0.0, 0.02), (1.0, 0.02)], 0),
            Series::new("b", vec![(0.0, 0.97), (1.0, 0.97)], 1),
        ];
        let pos = legend_corner(&both, (0.0, 1.0), (0.0, 1.0), false, (400, 300));
        assert!(matches!(pos, SeriesLabelPosition::MiddleRight), "{pos:?}");
    }
}
