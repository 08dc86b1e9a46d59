//! The loss over a 2-simplex: values on a barycentric grid of `r` steps per edge drawn as the
//! grid's small triangles, each filled with the band (between log-spaced levels, as in the plane
//! figure) of the mean of its corners' logarithms; the three vertices are labelled.

use std::path::PathBuf;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::plane::{colour_bar, lerp_color};
use super::{FONT, Figure};
use crate::error::{Error, Result};

/// Values on the barycentric grid of a triangle.
#[derive(Debug, Clone)]
pub struct TriangleFigure {
    /// Figure title.
    pub title: String,
    /// Colour-bar label.
    pub label: String,
    /// Steps per edge.
    pub r: usize,
    /// `z[i][k]` (positive) at the point `((r − i − k)/r, i/r, k/r)` on the vertices.
    pub z: Vec<Vec<f64>>,
    /// Names of the vertices `a`, `b`, `c`.
    pub names: [String; 3],
    /// Number of level bands.
    pub levels: usize,
}

/// Plane coordinates of the barycentric point `(a, b, c)`: `a` at the origin, `b` at `(1, 0)`,
/// `c` at `(½, √3/2)`.
fn plane((b, c): (f64, f64)) -> (f64, f64) {
    (b + 0.5 * c, c * 3f64.sqrt() / 2.0)
}

impl Figure for TriangleFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| Error::Plot {
            path: PathBuf::from(&self.title),
            msg: format!("{e:?}"),
        };
        let r = self.r.max(1);
        let flat: Vec<f64> = self
            .z
            .iter()
            .flatten()
            .copied()
            .filter(|v| *v > 0.0)
            .collect();
        let lo = flat
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .max(1e-12);
        let hi = flat
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            .max(lo * 1.0001);
        let n = self.levels.max(1);
        let band = |v: f64| {
            let s = (v.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln());
            ((s * n as f64).floor() as usize).min(n - 1)
        };
        let (main, bar) = root.split_horizontally(root.dim_in_pixel().0 as i32 - 110);
        let h = 3f64.sqrt() / 2.0;
        let mut chart = ChartBuilder::on(&main)
            .caption(&self.title, (FONT, 22))
            .margin(20)
            .build_cartesian_2d(-0.08..1.08, -0.1..h + 0.1)
            .map_err(err)?;
        let at = |i: usize, k: usize| plane((i as f64 / r as f64, k as f64 / r as f64));
        let z = |i: usize, k: usize| self.z[i][k].max(lo).ln();
        let denom = (n - 1).max(1) as f64;
        let mut cells = Vec::new();
        for i in 0..r {
            for k in 0..r - i {
                cells.push([(i, k), (i + 1, k), (i, k + 1)]);
                if i + k + 2 <= r {
                    cells.push([(i + 1, k), (i + 1, k + 1), (i, k + 1)]);
                }
            }
        }
        chart
            .draw_series(cells.iter().map(|c| {
                let mean = c.iter().map(|&(i, k)| z(i, k)).sum::<f64>() / 3.0;
                let colour = lerp_color(band(mean.exp()) as f64 / denom);
                Polygon::new(
                    c.iter().map(|&(i, k)| at(i, k)).collect::<Vec<_>>(),
                    colour.filled(),
                )
            }))
            .map_err(err)?;
        let corners = [(0.0, 0.0), (1.0, 0.0), (0.5, h)];
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![corners[0], corners[1], corners[2], corners[0]],
                BLACK.stroke_width(2),
            )))
            .map_err(err)?;
        let offsets = [(-0.07, -0.06), (0.0, -0.06), (-0.05, 0.04)];
        for ((p, name), o) in corners.iter().zip(&self.names).zip(offsets) {
            chart
                .draw_series(std::iter::once(Text::new(
                    name.clone(),
                    (p.0 + o.0, p.1 + o.1),
                    (FONT, 16),
                )))
                .map_err(err)?;
        }
        colour_bar(root, bar, (lo, hi), n, &self.label).map_err(err)?;
        Ok(())
    }
}
