//! Loss and error along a path `t ↦ w(t)` on a grid of `t` (Garipov et al. 2018): per point the
//! train loss/error, test loss/error and `dl_i = ‖w(t_i) − w(t_{i−1})‖`; per metric the start,
//! end, min, max, grid mean, arc-length mean `Σ ½(v_{i−1}+v_i)·dl_i / Σ dl_i`, and two barriers:
//! `B_max = max_t v(t) − ½(v(0) + v(1))` (Ainsworth et al. 2022) and
//! `B_lin = max_t [v(t) − ((1−t)v(0) + t·v(1))]` (Frankle et al. 2020).
//!
//! Points are evaluated in parallel (rayon) through a [`Family`] of the control points; each
//! point's weights are formed on the host and dropped after use, so memory stays flat in the
//! number of points. A network with BatchNorm would recompute its statistics inside
//! [`Family::metrics`] (Garipov et al. 2018), without the first-layer cache; the interface does not
//! change.

use std::sync::Arc;

use burn::tensor::Device;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::curve::CurveKind;
use crate::data::Dataset;
use crate::eval::family::Family;
use crate::eval::repair::Repair;
use crate::eval::state::StateSample;
use crate::params::Layout;

/// One evaluated point of a path (a row of `path.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathRow {
    /// Path name (`line`, `curve`, ...).
    pub path: String,
    /// Position in [0, 1].
    pub t: f64,
    /// Mean train NLL.
    pub train_loss: f64,
    /// Train error rate.
    pub train_err: f64,
    /// Mean test NLL.
    pub test_loss: f64,
    /// Test error rate.
    pub test_err: f64,
    /// Distance in weight space to the previous point (0 for the first).
    pub dl: f64,
}

/// Summary of one metric along a path.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Value at t = 0.
    pub start: f64,
    /// Value at t = 1.
    pub end: f64,
    /// Minimum over the grid.
    pub min: f64,
    /// Maximum over the grid.
    pub max: f64,
    /// Mean over the grid points.
    pub mean: f64,
    /// Arc-length weighted mean.
    pub arc_mean: f64,
    /// `max v − ½(v(0) + v(1))`.
    pub b_max: f64,
    /// `max [v(t) − ((1−t)v(0) + t v(1))]`.
    pub b_lin: f64,
}

/// Summary of a whole path: its length and each metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathSummary {
    /// `Σ dl_i`.
    pub length: f64,
    /// Train loss summary.
    pub train_loss: MetricSummary,
    /// Train error summary.
    pub train_err: MetricSummary,
    /// Test loss summary.
    pub test_loss: MetricSummary,
    /// Test error summary.
    pub test_err: MetricSummary,
}

/// `B_max = max v − ½(v_0 + v_last)`.
pub fn barrier_max(v: &[f64]) -> f64 {
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max - 0.5 * (v[0] + v[v.len() - 1])
}

/// `B_lin = max_i [v_i − ((1 − t_i) v_0 + t_i v_last)]`.
pub fn barrier_lin(t: &[f64], v: &[f64]) -> f64 {
    let (a, b) = (v[0], v[v.len() - 1]);
    t.iter()
        .zip(v)
        .map(|(&t, &v)| v - ((1.0 - t) * a + t * b))
        .fold(f64::NEG_INFINITY, f64::max)
}

/// Arc-length mean `Σ_{i≥1} ½(v_{i−1} + v_i)·dl_i / Σ dl_i` (the grid mean if the path has
/// zero length).
pub fn arc_mean(v: &[f64], dl: &[f64]) -> f64 {
    let total: f64 = dl[1..].iter().sum();
    if total <= 0.0 {
        return v.iter().sum::<f64>() / v.len() as f64;
    }
    (1..v.len())
        .map(|i| 0.5 * (v[i - 1] + v[i]) * dl[i])
        .sum::<f64>()
        / total
}

/// Summary of one metric series `v` at positions `t` with step lengths `dl`.
pub fn summarize(t: &[f64], v: &[f64], dl: &[f64]) -> MetricSummary {
    MetricSummary {
        start: v[0],
        end: v[v.len() - 1],
        min: v.iter().cloned().fold(f64::INFINITY, f64::min),
        max: v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        arc_mean: arc_mean(v, dl),
        b_max: barrier_max(v),
        b_lin: barrier_lin(t, v),
    }
}

/// Summary of the rows of one path.
pub fn summarize_path(rows: &[PathRow]) -> PathSummary {
    let t: Vec<f64> = rows.iter().map(|r| r.t).collect();
    let dl: Vec<f64> = rows.iter().map(|r| r.dl).collect();
    let col = |f: fn(&PathRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    PathSummary {
        length: dl.iter().sum(),
        train_loss: summarize(&t, &col(|r| r.train_loss), &dl),
        train_err: summarize(&t, &col(|r| r.train_err), &dl),
        test_loss: summarize(&t, &col(|r| r.test_loss), &dl),
        test_err: summarize(&t, &col(|r| r.test_err), &dl),
    }
}

/// `n` evenly spaced points in [0, 1].
pub fn grid(n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![0.0],
        _ => (0..n).map(|i| i as f64 / (n - 1) as f64).collect(),
    }
}

/// A path through control points (host flats on one layout) with a curve kind; the straight
/// line is `Polychain` through two points.
pub struct PathSpec<'a> {
    /// Name written in the `path` column.
    pub name: &'a str,
    /// Curve kind.
    pub kind: CurveKind,
    /// Control points as flat vectors in layout order.
    pub points: Vec<Vec<f32>>,
    /// REPAIR every point before it is evaluated ([`Family::with_repair`]).
    pub repair: Option<&'a Repair>,
}

/// Evaluates `spec` at every `t` (in parallel, [`Family::metrics_all`]) and returns the rows in
/// `t` order.
/// The control points form a [`Family`]: inputs are batched once and an MLP's first layer is
/// combined from products cached per control point. `train` comes with the samples on which a
/// network with state recomputes it at every point (`None`: no recomputation, the state is
/// interpolated).
pub fn profile(
    arch: &Arch,
    layout: &Arc<Layout>,
    spec: &PathSpec<'_>,
    ts: &[f64],
    (train, state): (&Dataset, Option<StateSample>),
    test: &Dataset,
    device: &Device,
) -> Vec<PathRow> {
    let n = spec.points.len();
    let family = Family::new(
        arch,
        layout.clone(),
        spec.points.clone(),
        &[train, test],
        device,
    )
    .with_state_mode(state);
    let family = match spec.repair {
        Some(r) => family.with_repair(r.clone()),
        None => family,
    };
    let coeffs: Vec<Vec<f64>> = ts.iter().map(|&t| spec.kind.coeffs(n, t)).collect();
    let metrics = family.metrics_all(&coeffs);
    // Step lengths ‖w(tᵢ) − w(tᵢ₋₁)‖ = ‖Σ_j (c_j(tᵢ) − c_j(tᵢ₋₁))·w_j‖ (the family is linear),
    // one combination each, in parallel over t.
    let dl: Vec<f64> = (0..ts.len())
        .into_par_iter()
        .map(|i| {
            if i == 0 {
                return 0.0;
            }
            let step: Vec<f64> = coeffs[i]
                .iter()
                .zip(&coeffs[i - 1])
                .map(|(a, b)| a - b)
                .collect();
            family
                .member(&step)
                .iter()
                .map(|&d| f64::from(d).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    (0..ts.len())
        .map(|i| {
            let (tr, te) = (metrics[i][0], metrics[i][1]);
            PathRow {
                path: spec.name.to_string(),
                t: ts[i],
                train_loss: tr.loss,
                train_err: tr.err(),
                test_loss: te.loss,
                test_err: te.err(),
                dl: dl[i],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barriers_on_hand_made_series() {
        let t = grid(5); // 0, .25, .5, .75, 1
        let v = [1.0, 2.0, 4.0, 2.5, 3.0];
        assert!((barrier_max(&v) - (4.0 - 2.0)).abs() < 1e-12);
        // Linear reference: 1, 1.5, 2, 2.5, 3 → excess 0, .5, 2, 0, 0.
        assert!((barrier_lin(&t, &v) - 2.0).abs() < 1e-12);
        // Paths below their chord have zero barriers (the endpoints attain the maximum).
        let w = [1.0, 0.5, 0.25, 0.5, 1.0];
        assert!((barrier_max(&w) - 0.0).abs() < 1e-12);
        assert!((barrier_lin(&t, &[1.0, 0.5, 0.25, 0.1, 0.0]) - 0.0).abs() < 1e-12);
        // B_lin looks at the chord, B_max at the mean of the ends: they differ here.
        assert!((barrier_lin(&t, &[1.0, 0.5, 0.25, 0.5, 0.0]) - 0.25).abs() < 1e-12);
        let u = [2.0, 1.0, 0.0];
        assert!((barrier_max(&u) - 1.0).abs() < 1e-12);
        assert!((barrier_lin(&grid(3), &u) - 0.0).abs() < 1e-12);
    }

    #[test]
    fn arc_length_mean_weights_by_step_length() {
        let v = [0.0, 1.0, 3.0];
        let dl = [0.0, 1.0, 3.0];
        // segments: (0+1)/2·1 + (1+3)/2·3 = 0.5 + 6 = 6.5, over length 4.
        assert!((arc_mean(&v, &dl) - 6.5 / 4.0).abs() < 1e-12);
        assert!((arc_mean(&v, &[0.0, 0.0, 0.0]) - 4.0 / 3.0).abs() < 1e-12);
        let s = summarize(&grid(3), &v, &dl);
        assert_eq!((s.start, s.end, s.min, s.max), (0.0, 3.0, 0.0, 3.0));
        assert!((s.mean - 4.0 / 3.0).abs() < 1e-12);
    }
}
