//! The gradient an objective hands to the optimiser: its values, or a chain rule (through a
//! curve point, or through the variational models' host pass) that the optimiser applies
//! element by element inside its own update pass, so the gradient is never written out.

use std::ops::Range;
use std::sync::Arc;

use burn::tensor::Tensor;

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
    /// element by element in its own pass ([`TensorGradient::at`]), so it is never written out.
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
    /// The chain rule through a host pass (the fused variational layers): parameter `i`'s
    /// gradient is `g_i`, or [`ChainRule`]'s `g_i + u⊙v + r·k` (`u⊙v + r·k` without `g_i`).
    Chain {
        /// The graph's gradient, in the parameters' layout.
        g: ParamSet,
        /// Per parameter tensor, the chain rule that replaces or extends `g_i`.
        chained: Vec<Option<ChainRule>>,
    },
}

/// The chain rule through a host pass for one parameter tensor: its gradient is
/// `g_i + u⊙v + r·k` ([`ChainRule::with_graph`]) or `u⊙v + r·k`, with `u` the graph's gradient of
/// the host pass's output, `v` that output's derivative and `k` a penalty's (the KL's) derivative
/// with respect to the parameter, and `r` the penalty's weight.
#[derive(Debug, Clone)]
pub struct ChainRule {
    /// Whether the graph's own gradient `g_i` of the parameter is added.
    pub with_graph: bool,
    /// `u`: the graph's gradient of the host pass's output.
    pub upstream: Tensor<1>,
    /// `v`: the host pass's output differentiated by the parameter, per element.
    pub d_output: Arc<Vec<f32>>,
    /// `k`: the penalty differentiated by the parameter, per element.
    pub d_penalty: Arc<Vec<f32>>,
    /// `r`: the penalty's weight.
    pub penalty_weight: f32,
}

/// One parameter tensor's gradient, as [`TensorGradient::at`] evaluates it from `g`.
#[derive(Clone, Copy)]
pub struct TensorGradient<'a> {
    g: &'a [f32],
    form: Form<'a>,
}

/// The forms of a [`TensorGradient`].
#[derive(Clone, Copy)]
enum Form<'a> {
    /// `g`.
    Values,
    /// `scale·(g + λ·w)`, or `scale·g` without a decay.
    Point {
        scale: f32,
        decay: Option<(f32, &'a [f32])>,
    },
    /// `(base + g⊙v) + r·k`, or `g⊙v + r·k` without a base (`g` is [`ChainRule::upstream`]).
    Chain {
        base: Option<&'a [f32]>,
        v: &'a [f32],
        k: &'a [f32],
        r: f32,
    },
}

/// A loop over a block's elements, run by [`TensorGradient::run`] with the element getter of the
/// source's form.
pub trait ElementLoop {
    /// Runs the loop, reading element `i`'s gradient as `get(i)`.
    fn run(self, get: impl Fn(usize) -> f32);
}

impl TensorGradient<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.g.len()
    }

    /// Whether the tensor is empty.
    pub fn is_empty(&self) -> bool {
        self.g.is_empty()
    }

    /// The elements `r` (the same source restricted to them).
    pub fn slice(&self, r: Range<usize>) -> TensorGradient<'_> {
        let form = match self.form {
            Form::Values => Form::Values,
            Form::Point { scale, decay } => Form::Point {
                scale,
                decay: decay.map(|(l, w)| (l, &w[r.clone()])),
            },
            Form::Chain { base, v, k, r: rw } => Form::Chain {
                base: base.map(|b| &b[r.clone()]),
                v: &v[r.clone()],
                k: &k[r.clone()],
                r: rw,
            },
        };
        TensorGradient {
            g: &self.g[r],
            form,
        }
    }

    /// Element `i`.
    #[inline(always)]
    pub fn at(&self, i: usize) -> f32 {
        let g = self.g;
        match self.form {
            Form::Values => g[i],
            Form::Point { scale, decay: None } => scale * g[i],
            Form::Point {
                scale,
                decay: Some((l, w)),
            } => scale * (g[i] + l * w[i]),
            Form::Chain {
                base: Some(b),
                v,
                k,
                r,
            } => b[i] + g[i] * v[i] + r * k[i],
            Form::Chain {
                base: None,
                v,
                k,
                r,
            } => g[i] * v[i] + r * k[i],
        }
    }

    /// Runs `l` with a getter for one form only, so that its loop has no branch on the form
    /// per element (the same values as [`TensorGradient::at`]).
    #[inline(always)]
    pub fn run(&self, l: impl ElementLoop) {
        let n = self.g.len();
        let g = self.g;
        match self.form {
            Form::Values => l.run(|i| g[i]),
            Form::Point { scale, decay: None } => l.run(|i| scale * g[i]),
            Form::Point {
                scale,
                decay: Some((lambda, w)),
            } => {
                let w = &w[..n];
                l.run(|i| scale * (g[i] + lambda * w[i]))
            }
            Form::Chain {
                base: Some(b),
                v,
                k,
                r,
            } => {
                let (b, v, k) = (&b[..n], &v[..n], &k[..n]);
                l.run(|i| b[i] + g[i] * v[i] + r * k[i])
            }
            Form::Chain {
                base: None,
                v,
                k,
                r,
            } => {
                let (v, k) = (&v[..n], &k[..n]);
                l.run(|i| g[i] * v[i] + r * k[i])
            }
        }
    }
}

impl Gradient {
    /// Layout of the parameters this is the gradient of.
    pub fn layout(&self) -> &Arc<Layout> {
        match self {
            Gradient::Values(g) => g.layout(),
            Gradient::Point { packed, .. } => packed,
            Gradient::Chain { g, .. } => g.layout(),
        }
    }

    /// Checks that the parts agree with each other (one scale per packed point, `w` shaped
    /// like `g`; one chain rule slot per tensor, its parts as long as the tensor).
    pub fn check(&self) -> Result<()> {
        if let Gradient::Chain { g, chained } = self {
            if chained.len() != g.layout().len() {
                return Err(Error::Config(format!(
                    "chained gradient: {} slots for {} tensors",
                    chained.len(),
                    g.layout().len()
                )));
            }
            for (i, c) in chained.iter().enumerate() {
                let Some(c) = c else { continue };
                let n = g.layout().entries()[i].numel();
                if c.upstream.dims()[0] != n || c.d_output.len() != n || c.d_penalty.len() != n {
                    return Err(Error::Config(format!(
                        "chained gradient: tensor {i} has {n} elements, its chain rule \
                         {}/{}/{}",
                        c.upstream.dims()[0],
                        c.d_output.len(),
                        c.d_penalty.len()
                    )));
                }
            }
        }
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
    pub fn with_tensor<R>(&self, i: usize, f: impl FnOnce(TensorGradient<'_>) -> R) -> R {
        match self {
            Gradient::Values(g) => with_host(&g.tensors()[i], |g| {
                f(TensorGradient {
                    g,
                    form: Form::Values,
                })
            }),
            Gradient::Chain { g, chained } => match &chained[i] {
                None => with_host(&g.tensors()[i], |g| {
                    f(TensorGradient {
                        g,
                        form: Form::Values,
                    })
                }),
                Some(c) => with_hosts(&[&c.upstream, &g.tensors()[i]], |ug| {
                    f(TensorGradient {
                        g: ug[0],
                        form: Form::Chain {
                            base: c.with_graph.then_some(ug[1]),
                            v: &c.d_output,
                            k: &c.d_penalty,
                            r: c.penalty_weight,
                        },
                    })
                }),
            },
            Gradient::Point {
                g, decay, scales, ..
            } => {
                let l = g.layout().len();
                let (k, j) = (i / l, i % l);
                let scale = scales[k];
                match decay {
                    None => with_host(&g.tensors()[j], |g| {
                        f(TensorGradient {
                            g,
                            form: Form::Point { scale, decay: None },
                        })
                    }),
                    Some((lambda, w)) => with_hosts(&[&g.tensors()[j], &w.tensors()[j]], |gw| {
                        f(TensorGradient {
                            g: gw[0],
                            form: Form::Point {
                                scale,
                                decay: Some((*lambda, gw[1])),
                            },
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
            Gradient::Point { ref g, .. } | Gradient::Chain { ref g, .. } => g,
        };
        let device = values.tensors()[0].device();
        let vecs = (0..self.layout().len())
            .map(|i| self.with_tensor(i, |s| (0..s.len()).map(|j| s.at(j)).collect()))
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
                grad.with_tensor(i, |s| {
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
