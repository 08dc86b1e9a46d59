//! Curve kinds as pure coefficient functions `t ↦ c(t)` over `n` control points
//! (Garipov et al. 2018, §3): `w(t) = Σ_j c_j(t) θ_j`, `θ_0 = w_A`, `θ_{n−1} = w_B`.
//!
//! - PolyChain: `c_j(t) = max(0, 1 − |(n−1)t − j|)` (piecewise-linear through the points). With one
//!   bend (n = 3) this is the one-bend chain of Garipov et al. 2018 (§3.2) written with `ε = 2t ∈ [0, 2]`:
//!   `w = (1−ε)w₁ + εw₀` for ε < 1 and `(2−ε)w₀ + (ε−1)w₂` for ε ≥ 1; ε ~ U(0,2) ⇔ t ~ U(0,1).
//! - Bezier: `c_j(t) = C(n−1, j) t^j (1−t)^{n−1−j}` (Bernstein polynomials).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The family of a curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CurveKind {
    /// Polygonal chain through the control points.
    #[value(alias = "chain")]
    Polychain,
    /// Bezier curve with the control points.
    Bezier,
}

impl fmt::Display for CurveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CurveKind::Polychain => "polychain",
            CurveKind::Bezier => "bezier",
        })
    }
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

impl CurveKind {
    /// Coefficients `c_0(t) … c_{n−1}(t)` for `n ≥ 2` control points, `t ∈ [0, 1]`.
    pub fn coeffs(&self, n: usize, t: f64) -> Vec<f64> {
        assert!(n >= 2, "a curve needs at least two control points");
        let t = t.clamp(0.0, 1.0);
        let m = (n - 1) as f64;
        match self {
            CurveKind::Polychain => (0..n)
                .map(|j| (1.0 - (m * t - j as f64).abs()).max(0.0))
                .collect(),
            CurveKind::Bezier => (0..n)
                .map(|j| binomial(n - 1, j) * t.powi(j as i32) * (1.0 - t).powi((n - 1 - j) as i32))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn coefficients_sum_to_one_and_are_nonnegative(t in 0.0f64..=1.0, bends in 0usize..6) {
            for kind in [CurveKind::Polychain, CurveKind::Bezier] {
                let c = kind.coeffs(bends + 2, t);
                prop_assert_eq!(c.len(), bends + 2);
                prop_assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                prop_assert!(c.iter().all(|&x| x >= 0.0));
            }
        }

        #[test]
        fn endpoints_select_the_end_points(bends in 0usize..6) {
            for kind in [CurveKind::Polychain, CurveKind::Bezier] {
                let n = bends + 2;
                let c0 = kind.coeffs(n, 0.0);
                let c1 = kind.coeffs(n, 1.0);
                prop_assert_eq!(c0[0], 1.0);
                prop_assert_eq!(c1[n - 1], 1.0);
                prop_assert!(c0[1..].iter().all(|&x| x == 0.0));
                prop_assert!(c1[..n - 1].iter().all(|&x| x == 0.0));
            }
        }
    }

    #[test]
    fn one_bend_chain_matches_the_epsilon_form() {
        // ε = 2t: w = (1−ε)w1 + εw0 for ε<1, (2−ε)w0 + (ε−1)w2 for ε≥1.
        for &eps in &[0.0, 0.3, 0.99, 1.0, 1.4, 2.0] {
            let c = CurveKind::Polychain.coeffs(3, eps / 2.0);
            let expect = if eps < 1.0 {
                [1.0 - eps, eps, 0.0]
            } else {
                [0.0, 2.0 - eps, eps - 1.0]
            };
            for j in 0..3 {
                assert!((c[j] - expect[j]).abs() < 1e-12, "ε={eps}: {c:?}");
            }
        }
    }

    #[test]
    fn quadratic_bezier() {
        let c = CurveKind::Bezier.coeffs(3, 0.25);
        assert!((c[0] - 0.5625).abs() < 1e-12);
        assert!((c[1] - 0.375).abs() < 1e-12);
        assert!((c[2] - 0.0625).abs() < 1e-12);
    }
}
