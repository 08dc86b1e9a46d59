//! The gradient an objective hands to the optimiser: its values, or the chain rule through a
//! curve point, which the optimiser applies element by element inside its own update pass.

use std::ops::Range;
use std::sync::Arc;

use crate::backend::{with_host, with_hosts};
use crate::error::{Error, Result};
use crate::params::{Layout, ParamSet};

/// `∂L/∂params` as the optimiser reads it.
#[derive(Debug, Clone)]
pub enum Gradient {
    /// The values, in the parameters' layout.
    Values(ParamSet),
    /// The chain rule through a curve point `w = Σ_j c_j·θ_j` with the decay `½·λ·‖w‖²`: the
    /// `k`-th block of the packed parameters (one trained point θ_j) has the gradient
    /// `c_j·(g + λ·w)`, with `g = ∂CE/∂w` (`c_j·g` without a decay). The optimiser evaluates it
    /// element by element in its own pass ([`Source::at`]), so it is never written out.
    Point {
        /// Layout of the packed parameters (`scales.len()` copies of `g`'s layout).
        packed: Arc<Layout>,
        /// `∂CE/∂w`.
        g: ParamSet,
        /// `λ` and the point `w` (absent without a decay).
        decay: Option<(f32, ParamSet)>,
        /// `c_j` of each packed point, in packing order.
        scales: Vec<f32>,
    },
}

/// One parameter tensor's gradient: `scale·(g + λ·w)`, or `g` itself when `scale` is `None`.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    g: &'a [f32],
    scale: Option<f32>,
    decay: Option<(f32, &'a [f32])>,
}

impl Source<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.g.len()
    }

    /// Whether the tensor is empty.
    pub fn is_empty(&self) -> bool {
        self.g.is_empty()
    }

    /// The elements `r` (the same source restricted to them).
    pub fn slice(&self, r: Range<usize>) -> Source<'_> {
        Source {
            g: &self.g[r.clone()],
            scale: self.scale,
            decay: self.decay.map(|(l, w)| (l, &w[r])),
        }
    }

    /// Element `i`, for loops that read the gradient by index (the branches on the form are
    /// the same for every element, so a compiler hoists them out of such a loop).
    #[inline(always)]
    pub fn at(&self, i: usize) -> f32 {
        match (self.scale, self.decay) {
            (None, _) => self.g[i],
            (Some(c), None) => c * self.g[i],
            (Some(c), Some((l, w))) => c * (self.g[i] + l * w[i]),
        }
    }
}

impl Gradient {
    /// Layout of the parameters this is the gradient of.
    pub fn layout(&self) -> &Arc<Layout> {
        match self {
            Gradient::Values(g) => g.layout(),
            Gradient::Point { packed, .. } => packed,
        }
    }

    /// Checks that the parts agree with each other (one scale per packed point, `w` shaped
    /// like `g`).
    pub fn check(&self) -> Result<()> {
        if let Gradient::Point {
            packed,
            g,
            decay,
            scales,
        } = self
        {
            if let Some((_, w)) = decay {
                g.check_same_layout(w)?;
            }
            if packed.len() != scales.len() * g.layout().len() {
                return Err(Error::Config(format!(
                    "curve gradient: {} packed tensors for {} points of {}",
                    packed.len(),
                    scales.len(),
                    g.layout().len()
                )));
            }
        }
        Ok(())
    }

    /// Calls `f` with the gradient of parameter tensor `i` (read in place where the backend
    /// allows).
    pub fn with_source<R>(&self, i: usize, f: impl FnOnce(Source<'_>) -> R) -> R {
        match self {
            Gradient::Values(g) => with_host(&g.tensors()[i], |g| {
                f(Source {
                    g,
                    scale: None,
                    decay: None,
                })
            }),
            Gradient::Point {
                g, decay, scales, ..
            } => {
                let l = g.layout().len();
                let (k, j) = (i / l, i % l);
                let scale = Some(scales[k]);
                match decay {
                    None => with_host(&g.tensors()[j], |g| {
                        f(Source {
                            g,
                            scale,
                            decay: None,
                        })
                    }),
                    Some((lambda, w)) => with_hosts(&[&g.tensors()[j], &w.tensors()[j]], |gw| {
                        f(Source {
                            g: gw[0],
                            scale,
                            decay: Some((*lambda, gw[1])),
                        })
                    }),
                }
            }
        }
    }

    /// The values as a parameter set.
    pub fn into_values(self) -> Result<ParamSet> {
        self.check()?;
        let values = match self {
            Gradient::Values(g) => return Ok(g),
            Gradient::Point { ref g, .. } => g,
        };
        let device = values.tensors()[0].device();
        let vecs = (0..self.layout().len())
            .map(|i| self.with_source(i, |s| (0..s.len()).map(|j| s.at(j)).collect()))
            .collect();
        ParamSet::from_vecs(self.layout().clone(), vecs, &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;
    use crate::params::{Entry, Role};

    fn set(layout: &Arc<Layout>, values: Vec<Vec<f32>>) -> ParamSet {
        ParamSet::from_vecs(layout.clone(), values, &backend::device()).unwrap()
    }

    fn layout(prefix: &str, k: usize) -> Arc<Layout> {
        let entries = (0..k)
            .flat_map(|p| {
                [("w", vec![2, 2]), ("b", vec![3])].map(|(n, shape)| Entry {
                    name: format!("{prefix}{p}/{n}"),
                    shape,
                    role: Role::Weight,
                })
            })
            .collect();
        Arc::new(Layout::new(entries).unwrap())
    }

    /// A curve-point gradient holds `c_k·(g + λ·w)` for each packed point, whole or a slice at
    /// a time; values pass through unchanged.
    #[test]
    fn point_gradient_is_the_scaled_decayed_gradient() {
        let base = layout("", 1);
        let g = set(&base, vec![vec![1.0, -2.0, 3.0, 0.5], vec![4.0, 0.0, -1.0]]);
        let w = set(
            &base,
            vec![vec![10.0, 20.0, -30.0, 1.0], vec![2.0, 3.0, 4.0]],
        );
        let packed = layout("point", 2);
        let (l, cs) = (0.5f32, [0.25f32, -2.0]);
        let grad = Gradient::Point {
            packed: packed.clone(),
            g: g.clone(),
            decay: Some((l, w.clone())),
            scales: cs.to_vec(),
        };
        let got = grad.clone().into_values().unwrap().to_vecs();
        let (gv, wv) = (g.to_vecs(), w.to_vecs());
        for (i, v) in got.iter().enumerate() {
            let (c, j) = (cs[i / 2], i % 2);
            let want: Vec<f32> = gv[j]
                .iter()
                .zip(&wv[j])
                .map(|(g, w)| c * (g + l * w))
                .collect();
            assert_eq!(v, &want, "tensor {i}");
            assert_eq!(
                grad.with_source(i, |s| {
                    let s = s.slice(1..3);
                    vec![s.at(0), s.at(1)]
                }),
                want[1..3].to_vec()
            );
        }
        let plain = Gradient::Point {
            packed: packed.clone(),
            g: g.clone(),
            decay: None,
            scales: cs.to_vec(),
        };
        assert_eq!(
            plain.into_values().unwrap().to_vecs()[3],
            vec![-8.0, 0.0, 2.0]
        );
        assert_eq!(
            Gradient::Values(g.clone()).into_values().unwrap().to_vecs(),
            gv
        );
        let bad = Gradient::Point {
            packed,
            g,
            decay: None,
            scales: vec![1.0],
        };
        assert!(bad.into_values().is_err());
    }
}
