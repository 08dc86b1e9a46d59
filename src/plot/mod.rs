//! Figures drawn with plotters from saved result files only (never during training).
//!
//! Every figure is a value implementing [`Figure`]: one drawing routine, generic over the plotters
//! backend, rendered by [`render`] to a PNG (RGB, encoded in memory) and an SVG of the same size,
//! both written atomically. Text uses DejaVu Sans (embedded through the `dejavu` crate and
//! registered with plotters' `ab_glyph` font table), so no system fonts are needed; the SVG names
//! the generic `sans-serif` family.
//!
//! Figure kinds (see [`detect`] for what `modeconn plot` recognises):
//! - [`paths`]: loss and error along paths (`path.csv` of `modeconn path`);
//! - [`plane`]: the plane through two minima and a bend (`plane.json` of `modeconn plane`);
//! - [`kl`]: the KL approximation of Molchanov et al. (2017) vs the exact value, with the residual;
//! - [`vd`]: variational runs (`metrics.jsonl`, `variational.safetensors` of `modeconn vtrain`):
//!   log α histograms per layer, per-layer sparsity, mean log α and accuracy over epochs,
//!   mode / one-sample / ensemble accuracy over epochs.

pub mod contour;
pub mod detect;
pub mod kl;
pub mod paths;
pub mod plane;
pub mod vd;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters_backend::DrawingErrorKind;

use crate::error::{Error, Result};
use crate::params::io::write_atomic;

/// The error type of a drawing routine (any plotters error).
pub type DrawError = Box<dyn std::error::Error + Send + Sync>;
/// The result of a drawing routine.
pub type DrawResult = std::result::Result<(), DrawError>;

/// The font family every figure uses (registered as DejaVu Sans).
pub const FONT: &str = "sans-serif";

/// A figure: one drawing routine for any backend.
pub trait Figure {
    /// Draws onto `root` (already filled white) with `style`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, style: &Style) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// Size of a figure in pixels (PNG) and user units (SVG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Size {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Size {
    /// `width × height`.
    pub const fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }

    /// Errors unless both sides are in `[200, 8000]`.
    pub fn validate(&self) -> Result<()> {
        let ok = |v: u32| (200..=8000).contains(&v);
        if ok(self.width) && ok(self.height) {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "figure size {}x{}: both sides must be between 200 and 8000 pixels",
                self.width, self.height
            )))
        }
    }
}

/// Consistent text sizes and line widths, scaled with the figure size.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// The figure size.
    pub size: Size,
    /// Scale factor: `√(width·height) / 900`, clamped to `[0.6, 3]`.
    pub scale: f64,
    /// Drawing for a vector backend (SVG): figures may use coarser fills to stay small.
    pub vector: bool,
}

impl Style {
    /// The style for a figure of `size`.
    pub fn new(size: Size) -> Self {
        let s = ((size.width as f64 * size.height as f64).sqrt() / 900.0).clamp(0.6, 3.0);
        Self {
            size,
            scale: s,
            vector: false,
        }
    }

    /// `base` pixels scaled (at least 9).
    pub fn px(&self, base: f64) -> f64 {
        (base * self.scale).round().max(9.0)
    }

    /// Figure title.
    pub fn title(&self) -> TextStyle<'static> {
        (FONT, self.px(28.0)).into_font().into()
    }

    /// Panel caption.
    pub fn caption(&self) -> TextStyle<'static> {
        (FONT, self.px(23.0)).into_font().into()
    }

    /// Axis description.
    pub fn label(&self) -> TextStyle<'static> {
        (FONT, self.px(20.0)).into_font().into()
    }

    /// Tick labels.
    pub fn tick(&self) -> TextStyle<'static> {
        (FONT, self.px(17.0)).into_font().into()
    }

    /// Legend entries and annotations.
    pub fn legend(&self) -> TextStyle<'static> {
        (FONT, self.px(17.0)).into_font().into()
    }

    /// Height of the title strip.
    pub fn title_height(&self) -> u32 {
        (self.px(28.0) * 1.9) as u32
    }

    /// Width of the x label area (below a panel).
    pub fn x_label_area(&self) -> u32 {
        (self.px(20.0) * 3.2) as u32
    }

    /// Width of the y label area (left of a panel).
    pub fn y_label_area(&self) -> u32 {
        (self.px(20.0) * 3.7) as u32
    }

    /// Margin around panels.
    pub fn margin(&self) -> u32 {
        (12.0 * self.scale) as u32
    }

    /// Stroke width of data lines.
    pub fn line_width(&self) -> u32 {
        ((2.5 * self.scale).round() as u32).max(1)
    }

    /// Radius of point markers.
    pub fn marker(&self) -> i32 {
        ((5.5 * self.scale).round() as i32).max(3)
    }

    /// Length of a legend swatch.
    pub fn swatch(&self) -> i32 {
        (30.0 * self.scale) as i32
    }

    /// Width of the legend's swatch area (swatch plus a gap).
    pub fn legend_area(&self) -> u32 {
        (self.swatch() as f64 + 10.0 * self.scale) as u32
    }

    /// Dash length for dashed lines.
    pub fn dash(&self) -> u32 {
        ((9.0 * self.scale).round() as u32).max(3)
    }
}

/// Ten distinguishable colours (Tableau 10), used in series order.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The `i`-th palette colour (cycling).
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Colour of a named path: `line` is dark grey, the rest take palette colours in order.
pub fn series_color(name: &str, index: usize) -> RGBColor {
    if name == "line" {
        RGBColor(60, 60, 60)
    } else {
        color(index)
    }
}

/// Registers DejaVu Sans (regular, bold, oblique) as the `sans-serif` family, once.
pub fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fonts: [(FontStyle, &'static [u8]); 3] = [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
            (FontStyle::Oblique, dejavu::sans::oblique()),
        ];
        for (style, bytes) in fonts {
            // The font ships with the binary; failing to parse it is a build defect.
            if plotters::style::register_font(FONT, style, bytes).is_err() {
                panic!("embedded DejaVu Sans font is invalid");
            }
        }
    });
}

/// Splits `root` into a title strip (drawn with `title`) and the remaining area.
pub fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    style: &Style,
    title: &str,
) -> std::result::Result<DrawingArea<DB, Shift>, DrawError>
where
    DB::ErrorType: 'static,
{
    let (top, rest) = root.split_vertically(style.title_height());
    let (w, h) = top.dim_in_pixel();
    top.draw(&Text::new(
        title.to_string(),
        (w as i32 / 2, h as i32 / 2),
        style.title().pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Center,
        )),
    ))?;
    Ok(rest)
}

/// The files written for one figure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rendered {
    /// The PNG file.
    pub png: PathBuf,
    /// The SVG file.
    pub svg: PathBuf,
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Draws `fig` into `dir/stem.png` and `dir/stem.svg` at `size` (both written atomically).
pub fn render<F: Figure>(fig: &F, dir: &Path, stem: &str, size: Size) -> Result<Rendered> {
    size.validate()?;
    register_fonts();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let style = Style::new(size);
    let (w, h) = (size.width, size.height);
    let png_path = dir.join(format!("{stem}.png"));
    let svg_path = dir.join(format!("{stem}.svg"));

    let mut buf = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(&png_path, e))?;
        fig.draw(&root, &style)
            .map_err(|e| plot_err(&png_path, e))?;
        root.present().map_err(|e| plot_err(&png_path, e))?;
    }
    let png = encode_png(&buf, w, h).map_err(|e| plot_err(&png_path, e))?;
    write_atomic(&png_path, &png)?;

    let mut svg = String::new();
    let style = Style {
        vector: true,
        ..style
    };
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(&svg_path, e))?;
        fig.draw(&root, &style)
            .map_err(|e| plot_err(&svg_path, e))?;
        root.present().map_err(|e| plot_err(&svg_path, e))?;
    }
    write_atomic(&svg_path, svg.as_bytes())?;
    Ok(Rendered {
        png: png_path,
        svg: svg_path,
    })
}

/// Encodes an RGB8 buffer as PNG.
pub fn encode_png(rgb: &[u8], w: u32, h: u32) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Best);
        enc.set_filter(png::FilterType::Paeth);
        let mut wr = enc.write_header()?;
        wr.write_image_data(rgb)?;
    }
    Ok(out)
}

/// Width and height of a PNG file's image, read from its header.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&bytes[16..20]), be(&bytes[20..24])))
}

/// `[lo, hi]` of the finite values, widened by `pad` (a fraction of the range) on both sides;
/// a degenerate range becomes `[v − 1, v + 1]` (or `[0, 1]` without finite values).
pub fn padded_range(values: impl IntoIterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 1.0, hi + 1.0);
    }
    let d = (hi - lo) * pad;
    (lo - d, hi + d)
}

/// A legend entry: a short horizontal line (solid or dashed) starting at its anchor point.
#[derive(Debug, Clone, Copy)]
pub struct LegendLine {
    at: (i32, i32),
    color: RGBColor,
    width: u32,
    dashed: bool,
    len: i32,
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
        let style = self.color.stroke_width(self.width);
        if self.dashed {
            let third = self.len / 3;
            backend.draw_line((x, y), (x + third, y), &style)?;
            backend.draw_line((x + 2 * third, y), (x + self.len, y), &style)
        } else {
            backend.draw_line((x, y), (x + self.len, y), &style)
        }
    }
}

/// A legend callback drawing a [`LegendLine`] in `color`.
pub fn legend_line(
    color: RGBColor,
    width: u32,
    dashed: bool,
    len: i32,
) -> impl Fn((i32, i32)) -> LegendLine {
    move |at| LegendLine {
        at,
        color,
        width,
        dashed,
        len,
    }
}

/// What a legend entry shows.
#[derive(Debug, Clone, Copy)]
pub enum Swatch {
    /// A line, solid or dashed.
    Line {
        /// Colour.
        color: RGBColor,
        /// Dashed.
        dashed: bool,
    },
    /// A filled circle.
    Marker {
        /// Colour.
        color: RGBColor,
    },
}

/// Draws a legend box into `area` (a strip beside the panels), entries from the top, starting
/// at `top` pixels.
pub fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    style: &Style,
    top: i32,
    entries: &[(String, Swatch)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let font = style.legend();
    let row = (style.px(17.0) * 1.7) as i32;
    let pad = (8.0 * style.scale) as i32;
    let sw = style.swatch();
    let (w, _) = area.dim_in_pixel();
    let height = row * entries.len() as i32 + 2 * pad;
    area.draw(&Rectangle::new(
        [(pad / 2, top), (w as i32 - pad, top + height)],
        RGBColor(180, 180, 180).stroke_width(1),
    ))?;
    for (k, (label, swatch)) in entries.iter().enumerate() {
        let y = top + pad + row * k as i32 + row / 2;
        let x = pad / 2 + pad;
        match *swatch {
            Swatch::Line { color, dashed } => {
                let l = LegendLine {
                    at: (x, y),
                    color,
                    width: self::Style::line_width(style),
                    dashed,
                    len: sw,
                };
                area.draw(&l)?;
            }
            Swatch::Marker { color } => {
                area.draw(&Circle::new(
                    (x + sw / 2, y),
                    style.marker(),
                    color.filled(),
                ))?;
            }
        }
        area.draw(&Text::new(
            label.clone(),
            (x + sw + pad, y),
            font.clone().pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Left,
                plotters::style::text_anchor::VPos::Center,
            )),
        ))?;
    }
    Ok(())
}

/// Formats a tick value compactly (`0.01`, `2.5`, `1e-4`).
pub fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.0e}");
    }
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_header_size() {
        let png = encode_png(&vec![255u8; 30 * 20 * 3], 30, 20).unwrap();
        assert_eq!(png_size(&png), Some((30, 20)));
        assert_eq!(png_size(b"not a png"), None);
    }

    #[test]
    fn tick_format() {
        assert_eq!(fmt_tick(0.0), "0");
        assert_eq!(fmt_tick(0.25), "0.25");
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(fmt_tick(150.0), "150");
        assert_eq!(fmt_tick(1e-4), "1e-4");
    }

    #[test]
    fn ranges() {
        assert_eq!(padded_range([1.0, 3.0], 0.0), (1.0, 3.0));
        assert_eq!(padded_range([2.0], 0.1), (1.0, 3.0));
        assert_eq!(padded_range([f64::NAN], 0.1), (0.0, 1.0));
    }

    #[test]
    fn sizes_validated() {
        assert!(Size::new(800, 600).validate().is_ok());
        assert!(Size::new(10, 600).validate().is_err());
    }
}
