//! Figures drawn with plotters from saved results only (never during training): line charts
//! with several panels, the plane of filled log-spaced level bands with contour edges, and
//! histograms. Every figure is written as PNG and SVG (atomically) with DejaVu Sans embedded, so
//! text renders without system fonts.

pub mod contour;
pub mod figures;
pub mod plane;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

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
    if p.kind == PanelKind::Bars {
        y0 = 0.0;
    }
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
                .light_line_style(RGBColor(235, 235, 235))
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
                drawn.label(s.label.as_str()).legend(move |(x, y)| {
                    PathElement::new(
                        vec![(x, y), (x + 22, y)],
                        ShapeStyle::from(&c).stroke_width(3),
                    )
                });
                if s.markers {
                    chart
                        .draw_series(s.points.iter().map(|&q| Circle::new(q, 4, c.filled())))
                        .map_err(err)?;
                }
            }
            if p.series.iter().any(|s| !s.label.is_empty()) {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(180, 180, 180))
                    .label_font((FONT, 14))
                    .position(SeriesLabelPosition::UpperRight)
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
        let cells = area.split_evenly((1, self.panels.len().max(1)));
        for (cell, p) in cells.iter().zip(&self.panels) {
            draw_panel(cell, p)?;
        }
        Ok(())
    }
}
