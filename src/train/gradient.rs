//! The gradient an objective hands to the optimiser: its values, or a chain rule (through a
//! curve point, or through the variational models' host pass) that the optimiser applies
//! element by element inside its own update pass, so the gradient is never written out.

use std::ops::Range;
use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};

use crate::backend::{with_host, with_hosts};
use crate::error::{Error, Result};
use crate::params::{Layout, ParamSet};

/// `∂L/∂params` as the optimiser reads it.
#[derive(Debug, Clone)]
pub enum Gradient {
    /// The values, in the parameters' layout.
    Values(ParamSet),
    /// The chain rule through a family's point `w = Σ_j c_j·θ_j` (a curve point) with the decay
    /// `½·λ·‖w‖²`: the `k`-th block of the packed parameters (one trained point θ_j) has the
    /// gradient `c_j·(g + λ·w)`, with `g` the point objective's gradient in `w`'s layout
    /// (`c_j·g` without a decay). `g` is any other form, so the chain rule composes: through
    /// a variational point, `g` is itself [`Gradient::Chain`]. The optimiser evaluates it element
    /// by element in its own pass ([`TensorGradient::at`]), so it is never written out.
    Point {
        /// Layout of the packed parameters (`scales.len()` copies of `inner`'s layout).
        packed: Arc<Layout>,
        /// `g = ∂L/∂w`, in any form but this one.
        inner: Box<Gradient>,
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

/// One parameter tensor's gradient, as [`TensorGradient::at`] evaluates it from `g`: the
/// inner form's value, then the family point's scale and decay (`Outer`) if any.
#[derive(Clone, Copy)]
pub struct TensorGradient<'a> {
    g: &'a [f32],
    form: Form<'a>,
    outer: Outer<'a>,
}

/// The inner forms of a [`TensorGradient`].
#[derive(Clone, Copy)]
enum Form<'a> {
    /// `g`.
    Values,
    /// `(base + g⊙v) + r·k`, or `g⊙v + r·k` without a base (`g` is [`ChainRule::upstream`]).
    Chain {
        base: Option<&'a [f32]>,
        v: &'a [f32],
        k: &'a [f32],
        r: f32,
    },
}

/// What a family point's chain rule does to the inner value `x` of element `i`.
#[derive(Clone, Copy)]
enum Outer<'a> {
    /// `x`.
    None,
    /// `c·x`.
    Scale(f32),
    /// `c·(x + λ·w_i)`.
    Decay {
        scale: f32,
        lambda: f32,
        w: &'a [f32],
    },
}

/// A loop over a block's elements, run by [`TensorGradient::run`] with the element getter of the
/// source's form.
pub trait ElementLoop {
    /// Runs the loop, reading element `i`'s gradient as `get(i)`.
    fn run(self, get: impl Fn(usize) -> f32);
}

impl<'a> TensorGradient<'a> {
    /// The same inner gradient under a family point's `outer` transform.
    fn within(self, outer: Outer<'a>) -> Self {
        Self { outer, ..self }
    }

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
            Form::Chain { base, v, k, r: rw } => Form::Chain {
                base: base.map(|b| &b[r.clone()]),
                v: &v[r.clone()],
                k: &k[r.clone()],
                r: rw,
            },
        };
        let outer = match self.outer {
            Outer::Decay { scale, lambda, w } => Outer::Decay {
                scale,
                lambda,
                w: &w[r.clone()],
            },
            o => o,
        };
        TensorGradient {
            g: &self.g[r],
            form,
            outer,
        }
    }

    /// Element `i`.
    #[inline(always)]
    pub fn at(&self, i: usize) -> f32 {
        let g = self.g;
        let x = match self.form {
            Form::Values => g[i],
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
        };
        match self.outer {
            Outer::None => x,
            Outer::Scale(c) => c * x,
            Outer::Decay { scale, lambda, w } => scale * (x + lambda * w[i]),
        }
    }

    /// Runs `l` with a getter for one combination of forms only, so that its loop has no
    /// branch on the form per element (the same values as [`TensorGradient::at`]).
    #[inline(always)]
    pub fn run(&self, l: impl ElementLoop) {
        match self.outer {
            Outer::None => self.run_inner(l, |x, _| x),
            Outer::Scale(c) => self.run_inner(l, move |x, _| c * x),
            Outer::Decay { scale, lambda, w } => {
                let w = &w[..self.g.len()];
                self.run_inner(l, move |x, i| scale * (x + lambda * w[i]))
            }
        }
    }

    /// [`TensorGradient::run`] for one outer transform.
    #[inline(always)]
    fn run_inner(&self, l: impl ElementLoop, outer: impl Fn(f32, usize) -> f32) {
        let n = self.g.len();
        let g = self.g;
        match self.form {
            Form::Values => l.run(|i| outer(g[i], i)),
            Form::Chain {
                base: Some(b),
                v,
                k,
                r,
            } => {
                let (b, v, k) = (&b[..n], &v[..n], &k[..n]);
                l.run(|i| outer(b[i] + g[i] * v[i] + r * k[i], i))
            }
            Form::Chain {
                base: None,
                v,
                k,
                r,
            } => {
                let (v, k) = (&v[..n], &k[..n]);
                l.run(|i| outer(g[i] * v[i] + r * k[i], i))
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

    /// The graph's gradient underneath (its device and layout are the gradient's own, or, for a
    /// family point, its point's).
    fn graph(&self) -> &ParamSet {
        match self {
            Gradient::Values(g) | Gradient::Chain { g, .. } => g,
            Gradient::Point { inner, .. } => inner.graph(),
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
            inner,
            decay,
            scales,
        } = self
        {
            if matches!(**inner, Gradient::Point { .. }) {
                return Err(Error::Config(
                    "curve gradient: a family point's gradient inside another".into(),
                ));
            }
            inner.check()?;
            if let Some((_, w)) = decay {
                inner.graph().check_same_layout(w)?;
            }
            if packed.len() != scales.len() * inner.layout().len() {
                return Err(Error::Config(format!(
                    "curve gradient: {} packed tensors for {} points of {}",
                    packed.len(),
                    scales.len(),
                    inner.layout().len()
                )));
            }
        }
        Ok(())
    }

    /// Calls `f` with the gradient of parameter tensor `i` (read in place where the backend
    /// allows).
    pub fn with_tensor<R>(&self, i: usize, f: impl FnOnce(TensorGradient<'_>) -> R) -> R {
        let Gradient::Point {
            inner,
            decay,
            scales,
            ..
        } = self
        else {
            return self.with_inner(i, f);
        };
        let l = inner.layout().len();
        let (k, j) = (i / l, i % l);
        let scale = scales[k];
        match decay {
            None => inner.with_inner(j, |t| f(t.within(Outer::Scale(scale)))),
            Some((lambda, w)) => with_host(&w.tensors()[j], |w| {
                inner.with_inner(j, |t| {
                    f(t.within(Outer::Decay {
                        scale,
                        lambda: *lambda,
                        w,
                    }))
                })
            }),
        }
    }

    /// The gradient of parameter tensor `i` as a tensor expression on the gradient's device
    /// (flat): the values of [`TensorGradient::at`] in the same order of operations, composed
    /// of burn's tensor ops, for the optimiser's update on a GPU. A chain rule's host factors
    /// `v` and `k` are uploaded to the device.
    pub fn tensor(&self, i: usize) -> Tensor<1> {
        match self {
            Gradient::Values(g) => g.tensors()[i].clone(),
            Gradient::Chain { g, chained } => match &chained[i] {
                None => g.tensors()[i].clone(),
                Some(c) => {
                    let device = c.upstream.device();
                    let host = |v: &Arc<Vec<f32>>| {
                        Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device)
                    };
                    let uv = c.upstream.clone() * host(&c.d_output);
                    let x = if c.with_graph {
                        g.tensors()[i].clone() + uv
                    } else {
                        uv
                    };
                    x + host(&c.d_penalty) * c.penalty_weight
                }
            },
            Gradient::Point {
                inner,
                decay,
                scales,
                ..
            } => {
                let l = inner.layout().len();
                let (k, j) = (i / l, i % l);
                let x = inner.tensor(j);
                match decay {
                    None => x * scales[k],
                    Some((lambda, w)) => (x + w.tensors()[j].clone() * *lambda) * scales[k],
                }
            }
        }
    }

    /// [`Gradient::with_tensor`] for the forms other than a family point's (which
    /// [`Gradient::check`] keeps from nesting).
    fn with_inner<R>(&self, i: usize, f: impl FnOnce(TensorGradient<'_>) -> R) -> R {
        match self {
            Gradient::Values(g) => with_host(&g.tensors()[i], |g| {
                f(TensorGradient {
                    g,
                    form: Form::Values,
                    outer: Outer::None,
                })
            }),
            Gradient::Chain { g, chained } => match &chained[i] {
                None => with_host(&g.tensors()[i], |g| {
                    f(TensorGradient {
                        g,
                        form: Form::Values,
                        outer: Outer::None,
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
                        outer: Outer::None,
                    })
                }),
            },
            Gradient::Point { .. } => unreachable!("a family point's gradient inside another"),
        }
    }

    /// The values as a parameter set.
    pub fn into_values(self) -> Result<ParamSet> {
        self.check()?;
        if let Gradient::Values(g) = self {
            return Ok(g);
        }
        let device = self.graph().tensors()[0].device();
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

    /// A family point's gradient composes with the variational chain rule: each packed
    /// point's block is `c_k·((g + u⊙v + r·k) + λ·w)` (and `c_k·(u⊙v + r·k)` for a tensor
    /// that enters only through the host pass), whole, sliced and through the optimiser's
    /// branch-free loop.
    #[test]
    fn point_gradient_composes_with_the_chain_rule() {
        struct Collect<'a>(&'a mut Vec<f32>, usize);
        impl ElementLoop for Collect<'_> {
            fn run(self, get: impl Fn(usize) -> f32) {
                self.0.extend((0..self.1).map(get));
            }
        }
        let base = layout("", 1);
        let dev = backend::device();
        let g = set(&base, vec![vec![1.0, -2.0, 3.0, 0.5], vec![4.0, 0.0, -1.0]]);
        let w = set(&base, vec![vec![2.0, 1.0, -3.0, 1.0], vec![2.0, 3.0, 4.0]]);
        let (u, v, k) = (
            vec![0.5f32, 1.5, -1.0, 2.0],
            vec![2.0f32, -1.0, 0.25, 1.0],
            vec![1.0f32, 2.0, 3.0, 4.0],
        );
        let (r, lambda, cs) = (0.1f32, 0.5f32, [0.25f32, -2.0]);
        let rule = |with_graph| ChainRule {
            with_graph,
            upstream: Tensor::from_data(burn::tensor::TensorData::new(u.clone(), [4]), &dev),
            d_output: Arc::new(v.clone()),
            d_penalty: Arc::new(k.clone()),
            penalty_weight: r,
        };
        for with_graph in [true, false] {
            let chain = Gradient::Chain {
                g: g.clone(),
                chained: vec![Some(rule(with_graph)), None],
            };
            let grad = Gradient::Point {
                packed: layout("point", 2),
                inner: Box::new(chain),
                decay: Some((lambda, w.clone())),
                scales: cs.to_vec(),
            };
            let got = grad.clone().into_values().unwrap().to_vecs();
            let (gv, wv) = (g.to_vecs(), w.to_vecs());
            for (i, vals) in got.iter().enumerate() {
                let (c, j) = (cs[i / 2], i % 2);
                let want: Vec<f32> = (0..vals.len())
                    .map(|e| {
                        let inner = if j == 0 {
                            let graph = if with_graph { gv[0][e] } else { 0.0 };
                            graph + u[e] * v[e] + r * k[e]
                        } else {
                            gv[1][e]
                        };
                        c * (inner + lambda * wv[j][e])
                    })
                    .collect();
                for (a, b) in vals.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "tensor {i}");
                }
                let mut looped = Vec::new();
                grad.with_tensor(i, |t| t.run(Collect(&mut looped, t.len())));
                assert_eq!(&looped, vals, "tensor {i}: the loop's values are `at`'s");
                let sliced = grad.with_tensor(i, |t| {
                    let t = t.slice(1..3);
                    vec![t.at(0), t.at(1)]
                });
                assert_eq!(sliced, vals[1..3].to_vec(), "tensor {i}, sliced");
            }
        }
        // A point inside a point is refused.
        let nested = Gradient::Point {
            packed: layout("point", 1),
            inner: Box::new(Gradient::Point {
                packed: base.clone(),
                inner: Box::new(Gradient::Values(g.clone())),
                decay: None,
                scales: vec![1.0],
            }),
            decay: None,
            scales: vec![1.0],
        };
        assert!(nested.check().is_err());
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
            inner: Box::new(Gradient::Values(g.clone())),
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
            inner: Box::new(Gradient::Values(g.clone())),
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
            inner: Box::new(Gradient::Values(g)),
            decay: None,
            scales: vec![1.0],
        };
        assert!(bad.into_values().is_err());
    }
}
