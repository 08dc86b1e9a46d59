//! The plane through two minima and a bend (Garipov et al. 2018, Fig. 1 and their `plane.py`).
//!
//! For endpoints `w_A`, `w_B` and a bend `θ`:
//! `u = (w_B − w_A)/‖w_B − w_A‖`, `v = (θ − w_A) − ⟨θ − w_A, u⟩u` normalised (Gram–Schmidt);
//! `dx = ‖w_B − w_A‖`, `dy = ⟨θ − w_A, v⟩`. A grid point `(x, y)` is the network
//! `p = w_A + x·u + y·v`, with `x ∈ linspace(−m, 1+m, G)·dx` and `y ∈ linspace(−m, 1+m, G)·dy`
//! (margin `m`, default 0.2, `G` = 21), so `w_A = (0, 0)`, `w_B = (dx, 0)` and `θ = (⟨θ−w_A, u⟩, dy)`.
//! Every grid point is evaluated on train and test data; the curve (61 points) and the chord are
//! projected with `(⟨w − w_A, u⟩, ⟨w − w_A, v⟩)`. A curve with one bend lies in the plane; for
//! more control points the middle bend spans the plane and the largest distance of a projected
//! curve point from the plane is reported.
//!
//! Points are evaluated in parallel (rayon); each grid point's weights are formed on the host and
//! dropped after use, so memory stays flat in the grid size.

use std::sync::Arc;

use burn::tensor::Device;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::path::point_metrics;
use crate::arch::Arch;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::params::{Layout, ParamSet};

/// An orthonormal basis of the plane through `w_A`, `θ` and `w_B`.
#[derive(Debug, Clone)]
pub struct PlaneBasis {
    /// The origin `w_A` (flat, layout order).
    pub origin: Vec<f32>,
    /// Unit vector towards `w_B`.
    pub u: Vec<f64>,
    /// Unit vector towards the bend, orthogonal to `u`.
    pub v: Vec<f64>,
    /// `‖w_B − w_A‖`.
    pub dx: f64,
    /// `⟨θ − w_A, v⟩` (the bend's height above the chord).
    pub dy: f64,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl PlaneBasis {
    /// The basis for endpoints `a`, `b` and bend `bend` (flat vectors of one layout).
    pub fn new(a: &[f32], bend: &[f32], b: &[f32]) -> Result<Self> {
        if a.len() != b.len() || a.len() != bend.len() {
            return Err(Error::InvalidSpec(
                "plane: endpoints and bend have different sizes".into(),
            ));
        }
        let mut u: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(a, b)| *b as f64 - *a as f64)
            .collect();
        let dx = dot(&u, &u).sqrt();
        if dx <= 1e-12 {
            return Err(Error::Config(
                "plane: the two endpoints are the same network".into(),
            ));
        }
        u.iter_mut().for_each(|x| *x /= dx);
        let mut v: Vec<f64> = a
            .iter()
            .zip(bend)
            .map(|(a, t)| *t as f64 - *a as f64)
            .collect();
        let along = dot(&v, &u);
        v.iter_mut().zip(&u).for_each(|(x, u)| *x -= along * u);
        let dy = dot(&v, &v).sqrt();
        if dy <= 1e-9 * dx {
            return Err(Error::Config(
                "plane: the bend lies on the chord between the endpoints (an untrained curve?); \
                 fit the curve with `modeconn connect` first"
                    .into(),
            ));
        }
        v.iter_mut().for_each(|x| *x /= dy);
        Ok(Self {
            origin: a.to_vec(),
            u,
            v,
            dx,
            dy,
        })
    }

    /// Coordinates `(⟨w − w_A, u⟩, ⟨w − w_A, v⟩)` of `w` and its distance from the plane.
    pub fn project(&self, w: &[f32]) -> (f64, f64, f64) {
        let d: Vec<f64> = w
            .iter()
            .zip(&self.origin)
            .map(|(w, o)| *w as f64 - *o as f64)
            .collect();
        let (x, y) = (dot(&d, &self.u), dot(&d, &self.v));
        let rest = (dot(&d, &d) - x * x - y * y).max(0.0).sqrt();
        (x, y, rest)
    }

    /// The network `w_A + x·u + y·v` (flat).
    pub fn point(&self, x: f64, y: f64) -> Vec<f32> {
        self.origin
            .iter()
            .zip(self.u.iter().zip(&self.v))
            .map(|(o, (u, v))| (*o as f64 + x * u + y * v) as f32)
            .collect()
    }
}

/// `linspace(−margin, 1 + margin, n)·len`.
pub fn axis(n: usize, margin: f64, len: f64) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let s = if n == 1 {
                0.0
            } else {
                i as f64 / (n - 1) as f64
            };
            (-margin + s * (1.0 + 2.0 * margin)) * len
        })
        .collect()
}

/// One evaluated grid point (a row of `plane.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlanePoint {
    /// Coordinate along `u`.
    pub x: f64,
    /// Coordinate along `v`.
    pub y: f64,
    /// Mean train NLL.
    pub train_loss: f64,
    /// Train error rate.
    pub train_err: f64,
    /// Mean test NLL.
    pub test_loss: f64,
    /// Test error rate.
    pub test_err: f64,
}

/// Evaluates every `(x, y)` of `xs × ys` (row-major by `y`) in parallel.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_grid(
    arch: &Arch,
    layout: &Arc<Layout>,
    basis: &PlaneBasis,
    xs: &[f64],
    ys: &[f64],
    train: &Dataset,
    test: &Dataset,
    device: &Device,
) -> Vec<PlanePoint> {
    let nx = xs.len();
    (0..xs.len() * ys.len())
        .into_par_iter()
        .map(|k| {
            let (x, y) = (xs[k % nx], ys[k / nx]);
            let w = ParamSet::from_flat(layout.clone(), &basis.point(x, y), device)
                .expect("layout-sized point");
            let (tr, te) = point_metrics(arch, &w, train, test, device);
            PlanePoint {
                x,
                y,
                train_loss: tr.loss,
                train_err: tr.err(),
                test_loss: te.loss,
                test_err: te.err(),
            }
        })
        .collect()
}

/// The content of `plane.json`: grids are `[y][x]` (rows by `y`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaneResult {
    /// Architecture of the networks.
    pub arch: String,
    /// Curve kind of the projected curve.
    pub curve_kind: String,
    /// Grid points per axis.
    pub grid: usize,
    /// Margin around `[0, 1]` in units of `dx`, `dy`.
    pub margin: f64,
    /// `‖w_B − w_A‖`.
    pub dx: f64,
    /// The bend's height above the chord.
    pub dy: f64,
    /// x coordinates of the grid.
    pub x: Vec<f64>,
    /// y coordinates of the grid.
    pub y: Vec<f64>,
    /// Train loss, `[y][x]`.
    pub train_loss: Vec<Vec<f64>>,
    /// Train error, `[y][x]`.
    pub train_err: Vec<Vec<f64>>,
    /// Test loss, `[y][x]`.
    pub test_loss: Vec<Vec<f64>>,
    /// Test error, `[y][x]`.
    pub test_err: Vec<Vec<f64>>,
    /// `w_A` in plane coordinates (the origin).
    pub a: [f64; 2],
    /// `w_B` in plane coordinates.
    pub b: [f64; 2],
    /// The bend spanning the plane.
    pub bend: [f64; 2],
    /// The curve at `curve_t`, projected.
    pub curve: Vec<[f64; 2]>,
    /// Positions of the projected curve points.
    pub curve_t: Vec<f64>,
    /// Largest distance of a curve point from the plane (0 for one-bend curves).
    pub curve_off_plane: f64,
    /// Train samples used for the train metrics.
    pub train_samples: usize,
    /// Test samples.
    pub test_samples: usize,
}

impl PlaneResult {
    /// Assembles the grids from points in row-major order.
    pub fn grids(points: &[PlanePoint], nx: usize) -> [Vec<Vec<f64>>; 4] {
        let rows = |f: fn(&PlanePoint) -> f64| {
            points
                .chunks(nx)
                .map(|r| r.iter().map(f).collect())
                .collect::<Vec<Vec<f64>>>()
        };
        [
            rows(|p| p.train_loss),
            rows(|p| p.train_err),
            rows(|p| p.test_loss),
            rows(|p| p.test_err),
        ]
    }

    /// Checks that the grids match the axes.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let (nx, ny) = (self.x.len(), self.y.len());
        if nx < 2 || ny < 2 {
            return Err("the grid needs at least 2×2 points".into());
        }
        for (name, g) in [
            ("train_loss", &self.train_loss),
            ("train_err", &self.train_err),
            ("test_loss", &self.test_loss),
            ("test_err", &self.test_err),
        ] {
            if g.len() != ny || g.iter().any(|r| r.len() != nx) {
                return Err(format!("`{name}` is not a {ny}×{nx} grid"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_is_orthonormal_and_places_the_points() {
        let a = [1.0f32, 0.0, 0.0, 2.0];
        let b = [1.0f32, 3.0, 0.0, 2.0];
        let t = [2.0f32, 1.0, 2.0, 2.0];
        let p = PlaneBasis::new(&a, &t, &b).unwrap();
        assert!((dot(&p.u, &p.u) - 1.0).abs() < 1e-12);
        assert!((dot(&p.v, &p.v) - 1.0).abs() < 1e-12);
        assert!(dot(&p.u, &p.v).abs() < 1e-12);
        assert!((p.dx - 3.0).abs() < 1e-12);
        assert!((p.dy - 5f64.sqrt()).abs() < 1e-6);
        let (x, y, off) = p.project(&b);
        assert!((x - 3.0).abs() < 1e-9 && y.abs() < 1e-9 && off < 1e-6);
        let (x, y, off) = p.project(&t);
        assert!((x - 1.0).abs() < 1e-6 && (y - p.dy).abs() < 1e-6 && off < 1e-3);
        let back = p.point(x, y);
        for (q, r) in back.iter().zip(&t) {
            assert!((q - r).abs() < 1e-5);
        }
        // A point off the plane reports its distance.
        let (_, _, off) = p.project(&[1.0, 0.0, 0.0, 3.0]);
        assert!((off - 1.0).abs() < 1e-6);
    }

    #[test]
    fn degenerate_planes_are_errors() {
        let a = [0.0f32, 0.0];
        let b = [2.0f32, 0.0];
        assert!(PlaneBasis::new(&a, &[1.0, 0.0], &b).is_err());
        assert!(PlaneBasis::new(&a, &[1.0, 1.0], &a).is_err());
    }

    #[test]
    fn axis_spans_the_margin() {
        let v = axis(21, 0.2, 10.0);
        assert_eq!(v.len(), 21);
        assert!((v[0] + 2.0).abs() < 1e-12 && (v[20] - 12.0).abs() < 1e-12);
        assert!((v[10] - 5.0).abs() < 1e-9);
    }
}
