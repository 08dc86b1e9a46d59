//! The plane through three networks (Garipov et al. 2018, §4, Fig. 1): w1 at the origin, the
//! first axis `u = (w2 − w1)/‖w2 − w1‖` and the second axis `v` the unit component of
//! `θ − w1` orthogonal to `u` (Gram–Schmidt, in f64), θ a curve's bend. A grid point `(x, y)` is
//! the network `w1 + x·u + y·v`.

use crate::error::{Error, Result};

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// An orthonormal basis of the plane through `w1`, `w2` and a bend, on flattened weights.
#[derive(Debug, Clone)]
pub struct PlaneBasis {
    /// w1, the origin.
    pub origin: Vec<f64>,
    /// First unit axis, towards w2.
    pub u: Vec<f64>,
    /// Second unit axis, towards the bend.
    pub v: Vec<f64>,
    /// `‖w2 − w1‖`: w2 sits at `(len, 0)`.
    pub len: f64,
    /// The bend's distance from the line through w1 and w2.
    pub height: f64,
}

impl PlaneBasis {
    /// The basis for `w1`, `w2` and `bend` (flattened in one layout); errors when w1 = w2 or the
    /// bend lies on their line (relative height below 1e-6).
    pub fn new(w1: &[f64], w2: &[f64], bend: &[f64]) -> Result<Self> {
        let mut u: Vec<f64> = w2.iter().zip(w1).map(|(b, a)| b - a).collect();
        let len = dot(&u, &u).sqrt();
        if len == 0.0 {
            return Err(Error::Config("--a and --b are the same network".into()));
        }
        u.iter_mut().for_each(|x| *x /= len);
        let d: Vec<f64> = bend.iter().zip(w1).map(|(t, a)| t - a).collect();
        let du = dot(&d, &u);
        let mut v: Vec<f64> = d.iter().zip(&u).map(|(d, u)| d - du * u).collect();
        let height = dot(&v, &v).sqrt();
        if height < 1e-6 * len {
            return Err(Error::Config(
                "the bend of --curve lies on the line between --a and --b (train the curve first)"
                    .into(),
            ));
        }
        v.iter_mut().for_each(|x| *x /= height);
        Ok(Self {
            origin: w1.to_vec(),
            u,
            v,
            len,
            height,
        })
    }

    /// Coordinates `(⟨w − w1, u⟩, ⟨w − w1, v⟩)` of `w`'s projection onto the plane.
    pub fn project(&self, w: &[f64]) -> [f64; 2] {
        let d: Vec<f64> = w.iter().zip(&self.origin).map(|(w, a)| w - a).collect();
        [dot(&d, &self.u), dot(&d, &self.v)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn basis_is_orthonormal_and_places_the_three_networks(
            w1 in prop::collection::vec(-3.0f64..3.0, 6),
            d2 in prop::collection::vec(-3.0f64..3.0, 6),
            d3 in prop::collection::vec(-3.0f64..3.0, 6),
        ) {
            let w2: Vec<f64> = w1.iter().zip(&d2).map(|(a, d)| a + d).collect();
            let bend: Vec<f64> = w1.iter().zip(&d3).map(|(a, d)| a + d).collect();
            let Ok(b) = PlaneBasis::new(&w1, &w2, &bend) else { return Ok(()) };
            prop_assert!((dot(&b.u, &b.u) - 1.0).abs() < 1e-9);
            prop_assert!((dot(&b.v, &b.v) - 1.0).abs() < 1e-9);
            prop_assert!(dot(&b.u, &b.v).abs() < 1e-9);
            let [x, y] = b.project(&w2);
            prop_assert!((x - b.len).abs() < 1e-9 && y.abs() < 1e-9);
            let [x, y] = b.project(&w1);
            prop_assert!(x.abs() < 1e-12 && y.abs() < 1e-12);
            // The bend lies in the plane: its projection has its distance from w1.
            let [x, y] = b.project(&bend);
            let r = dot(&d3, &d3).sqrt();
            prop_assert!(((x * x + y * y).sqrt() - r).abs() < 1e-9 * r.max(1.0));
            prop_assert!((y - b.height).abs() < 1e-9 * r.max(1.0));
        }
    }

    #[test]
    fn degenerate_planes_are_errors() {
        let w = [1.0, 2.0];
        assert!(PlaneBasis::new(&w, &w, &[0.0, 0.0]).is_err());
        let e = PlaneBasis::new(&[0.0, 0.0], &[1.0, 0.0], &[0.5, 0.0]).unwrap_err();
        assert!(e.to_string().contains("on the line"), "{e}");
    }
}
