//! Dense layer under the local reparameterisation trick (Kingma et al. 2015, §2.2) as one
//! host op with its own backward pass, plugged into burn like [`super::dense`] (backend extension
//! `GemmLrt` for flex and its autodiff wrapper; other backends compose burn's ops).
//!
//! With `x: [n, i]`, weight mean `θ: [o, i]`, bias `b: [o]`, weight variance `v: [o, i]` and
//! standard normal noise `ξ: [n, o]` (a constant):
//! - forward: `μ = x·θᵀ + b`, `δ = (x⊙x)·vᵀ`, `y = act(μ + √(δ + ε)·ξ)` (`act` = identity or ReLU);
//! - backward, with `g' = ∂L/∂y ⊙ [y > 0]` after a ReLU and `g_δ = g' ⊙ ξ / (2√(δ + ε))`:
//!   `∂L/∂b = Σ_rows g'`, `∂L/∂θ = g'ᵀ·x`, `∂L/∂v = g_δᵀ·(x⊙x)`,
//!   `∂L/∂x = g'·θ + 2x ⊙ (g_δ·v)` (only those asked for).
//!
//! A second form takes one scale `a` for the layer instead of `v` and uses `v = a·θ⊙θ`
//! (Gaussian dropout and one α per layer, Kingma et al. 2015 §3.2–3.3): then
//! `∂L/∂θ += 2a·θ ⊙ ∂L/∂v` and `∂L/∂a = Σ θ⊙θ⊙∂L/∂v`, in the op's own passes.
//!
//! Why: composed of burn's ops the layer is ten element-wise graph ops around its two GEMMs,
//! forward and back, each a fresh activation-sized buffer; on flex those cost more than the
//! GEMMs of a sparse-VD MLP step.

use std::borrow::Cow;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Tensor};
use burn_flex::FlexTensor;
use multiversion::multiversion;
use rayon::prelude::*;

use super::dense::{Dims, column_sums, flex, relu_masked};
use super::host;
use super::matmul::{Epilogue, Mat, products, products_of};

/// What the forward pass returns: the output and what the backward pass needs.
#[derive(Debug, Clone)]
pub struct Forward {
    /// `y`, `[n, o]`.
    pub y: Vec<f32>,
    /// `ξ / (2√(δ + ε))`, `[n, o]`: `∂y/∂δ` before the activation.
    pub k: Vec<f32>,
    /// `x ⊙ x`, `[n, i]`.
    pub x2: Vec<f32>,
}

/// The forward pass on host buffers (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn forward_host(
    d: Dims,
    x: &[f32],
    theta: &[f32],
    b: &[f32],
    v: &[f32],
    xi: &[f32],
    eps: f32,
    relu: bool,
) -> Forward {
    assert_eq!(xi.len(), d.n * d.o, "one noise value per output");
    let x2 = squares(x);
    let (mut y, mut k) = products(
        (
            Mat::new(x, d.n, d.i),
            Mat::new(theta, d.o, d.i).t(),
            Epilogue {
                bias: Some(b),
                relu: false,
            },
        ),
        (
            Mat::new(&x2, d.n, d.i),
            Mat::new(v, d.o, d.i).t(),
            Epilogue::default(),
        ),
    );
    sample(&mut y, &mut k, xi, eps, relu);
    Forward { y, k, x2 }
}

/// `x ⊙ x`. This and the other element-wise loops of the op are multiversioned for AVX-512 and
/// AVX2 (the crate builds for baseline x86-64: 4 lanes); IEEE operations only, so every build
/// gives the same bits.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn squares(x: &[f32]) -> Vec<f32> {
    x.iter().map(|x| x * x).collect()
}

/// In place: `y ← act(y + √(k + ε)·ξ)` and `k ← ξ / (2√(k + ε))`, with the mean in `y` and the
/// variance `δ` in `k` on entry.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn sample(y: &mut [f32], k: &mut [f32], xi: &[f32], eps: f32, relu: bool) {
    let n = y.len();
    let (k, xi) = (&mut k[..n], &xi[..n]);
    for ((y, k), &xi) in y.iter_mut().zip(k.iter_mut()).zip(xi) {
        let sd = (*k + eps).sqrt();
        let out = *y + sd * xi;
        // NaN stays NaN, as in burn's relu.
        *y = if relu && out < 0.0 { 0.0 } else { out };
        *k = xi / (2.0 * sd);
    }
}

/// `g ⊙ k`.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn products_elementwise(g: &[f32], k: &[f32]) -> Vec<f32> {
    g.iter().zip(k).map(|(g, k)| g * k).collect()
}

/// In place: `dx ← dx + 2x ⊙ t`.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn add_twice_product(dx: &mut [f32], x: &[f32], t: &[f32]) {
    let n = dx.len();
    let (x, t) = (&x[..n], &t[..n]);
    for ((dx, t), x) in dx.iter_mut().zip(t).zip(x) {
        *dx += 2.0 * x * t;
    }
}

/// Gradients asked of [`backward_host`], and what it returns.
#[derive(Debug, Default, PartialEq)]
pub struct Grads {
    /// `∂L/∂x`, `[n, i]`.
    pub x: Option<Vec<f32>>,
    /// `∂L/∂θ`, `[o, i]`.
    pub theta: Option<Vec<f32>>,
    /// `∂L/∂b`, `[o]`.
    pub b: Option<Vec<f32>>,
    /// `∂L/∂v`, `[o, i]`.
    pub v: Option<Vec<f32>>,
}

/// Gradients given `gy = ∂L/∂y`, the forward pass's `k` and `x2` ([`Forward`]) and, after a
/// ReLU, its output `y`; `want` = `[x, θ, b, v]`.
#[allow(clippy::too_many_arguments)]
pub fn backward_host(
    d: Dims,
    x: &[f32],
    theta: &[f32],
    v: &[f32],
    (k, x2): (&[f32], &[f32]),
    y: Option<&[f32]>,
    gy: &[f32],
    want: [bool; 4],
) -> Grads {
    let [want_x, want_theta, want_b, want_v] = want;
    let masked = y.map(|y| relu_masked(gy, y));
    let g = masked.as_deref().unwrap_or(gy);
    let gd = products_elementwise(g, k);
    let (gm, gdm) = (Mat::new(g, d.n, d.o), Mat::new(&gd, d.n, d.o));
    let b = want_b.then(|| column_sums(g, d.o));
    let e = Epilogue::default();
    let (theta_grad, v_grad) = products_of(
        want_theta.then(|| (gm.t(), Mat::new(x, d.n, d.i), e)),
        want_v.then(|| (gdm.t(), Mat::new(x2, d.n, d.i), e)),
    );
    let x_grad = want_x.then(|| {
        let (mut dx, t) = products(
            (gm, Mat::new(theta, d.o, d.i), e),
            (gdm, Mat::new(v, d.o, d.i), e),
        );
        add_twice_product(&mut dx, x, &t);
        dx
    });
    Grads {
        x: x_grad,
        theta: theta_grad,
        b,
        v: v_grad,
    }
}

/// Weights per parallel block of the scaled-variance passes; fixed, so that `∂L/∂a` is summed in
/// one order whatever the thread count.
const BLOCK: usize = 4096;

/// `v = a·(θ⊙θ)`: the weight variance of the scaled form (see the module docs).
pub fn scaled_variance(theta: &[f32], a: f32) -> Vec<f32> {
    let mut v = vec![0.0; theta.len()];
    v.par_chunks_mut(BLOCK)
        .zip(theta.par_chunks(BLOCK))
        .for_each(|(v, t)| scaled_squares(t, a, v));
    v
}

/// `v ← a·(t⊙t)` over one block.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn scaled_squares(t: &[f32], a: f32, v: &mut [f32]) {
    let n = v.len();
    for (v, t) in v.iter_mut().zip(&t[..n]) {
        *v = t * t * a;
    }
}

/// The chain rule through `v = a·(θ⊙θ)` given `dv = ∂L/∂v`: adds `2a·θ⊙dv` to `dtheta` (when
/// given) in place and, if `want_da`, returns `∂L/∂a = Σ θ⊙θ⊙dv` (f64; blocks of [`BLOCK`]
/// summed in order).
pub fn scaled_pull_back(
    theta: &[f32],
    a: f32,
    dv: &[f32],
    dtheta: Option<&mut [f32]>,
    want_da: bool,
) -> Option<f64> {
    assert_eq!(theta.len(), dv.len(), "θ and ∂L/∂v of one layer");
    let sum = |t: &[f32], g: &[f32]| if want_da { weighted_squares(t, g) } else { 0.0 };
    let parts: Vec<f64> = match dtheta {
        Some(dt) => {
            assert_eq!(dt.len(), theta.len(), "∂L/∂θ shaped like θ");
            dt.par_chunks_mut(BLOCK)
                .zip(theta.par_chunks(BLOCK).zip(dv.par_chunks(BLOCK)))
                .map(|(dt, (t, g))| {
                    add_scaled_product(dt, t, g, a);
                    sum(t, g)
                })
                .collect()
        }
        None if want_da => theta
            .par_chunks(BLOCK)
            .zip(dv.par_chunks(BLOCK))
            .map(|(t, g)| sum(t, g))
            .collect(),
        None => return None,
    };
    want_da.then(|| parts.into_iter().sum())
}

/// `dt ← dt + (g·a)·(2t)` over one block.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn add_scaled_product(dt: &mut [f32], t: &[f32], g: &[f32], a: f32) {
    let n = dt.len();
    for ((d, t), g) in dt.iter_mut().zip(&t[..n]).zip(&g[..n]) {
        *d += (g * a) * (2.0 * t);
    }
}

/// `Σ t⊙t⊙g` over one block in f64: 16 interleaved partial sums (one running sum would wait on
/// each add), then those and the tail in order.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn weighted_squares(t: &[f32], g: &[f32]) -> f64 {
    const LANES: usize = 16;
    let n = t.len();
    let g = &g[..n];
    let mut acc = [0.0f64; LANES];
    for (t, g) in t.chunks_exact(LANES).zip(g.chunks_exact(LANES)) {
        for j in 0..LANES {
            acc[j] += f64::from(t[j] * t[j] * g[j]);
        }
    }
    let whole = n / LANES * LANES;
    let tail: f64 = t[whole..]
        .iter()
        .zip(&g[whole..])
        .map(|(t, g)| f64::from(t * t * g))
        .sum();
    acc.iter().sum::<f64>() + tail
}

/// The weight variance input of the op on flex.
enum VarIn<'a> {
    /// `v` itself, `[o, i]`.
    Given(&'a FlexTensor),
    /// The scale `a`, `[1]`: `v = a·θ⊙θ`.
    Scaled(&'a FlexTensor),
}

/// The inputs of the op on flex.
struct Inputs<'a> {
    x: &'a FlexTensor,
    theta: &'a FlexTensor,
    b: &'a FlexTensor,
    v: VarIn<'a>,
    xi: &'a FlexTensor,
}

/// The forward pass on flex; for the scaled form also the variance it computed and the scale.
fn forward_flex(i: Inputs<'_>, eps: f32, relu: bool) -> (Dims, Forward, Option<(Vec<f32>, f32)>) {
    let d = Dims::of(i.x, i.theta);
    let theta = host(i.theta);
    let (v, a) = match i.v {
        VarIn::Given(v) => {
            assert_eq!(Dims::of(i.x, v), d, "lrt: θ and v shaped alike");
            (host(v), None)
        }
        VarIn::Scaled(a) => {
            let a = host(a);
            assert_eq!(a.len(), 1, "lrt: one variance scale per layer");
            (Cow::Owned(scaled_variance(&theta, a[0])), Some(a[0]))
        }
    };
    let f = forward_host(
        d,
        &host(i.x),
        &theta,
        &host(i.b),
        &v,
        &host(i.xi),
        eps,
        relu,
    );
    (d, f, a.map(|a| (v.into_owned(), a)))
}

/// The op's output without autodiff.
fn untracked(inputs: Inputs<'_>, eps: f32, relu: bool) -> FlexTensor {
    let (d, f, _) = forward_flex(inputs, eps, relu);
    flex(f.y, [d.n, d.o])
}

/// The layer as one op (see the module docs). Only the flex backend and its autodiff wrapper
/// implement it; [`lrt_dense`] and [`lrt_dense_scaled`] decide when it is used.
#[backend_extension(Flex, Autodiff)]
pub trait GemmLrt: Backend {
    /// `act(x·θᵀ + b + √((x⊙x)·vᵀ + eps)⊙ξ)`; `ξ` is never differentiated.
    #[allow(clippy::too_many_arguments)]
    fn gemm_lrt(
        x: FloatTensor<Self>,
        theta: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        var: FloatTensor<Self>,
        xi: FloatTensor<Self>,
        eps: f32,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// [`GemmLrt::gemm_lrt`] with `v = scale·θ⊙θ`, `scale: [1]`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_lrt_scaled(
        x: FloatTensor<Self>,
        theta: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        xi: FloatTensor<Self>,
        eps: f32,
        relu: bool,
    ) -> FloatTensor<Self>;
}

impl GemmLrt for Flex {
    fn gemm_lrt(
        x: FloatTensor<Self>,
        theta: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        var: FloatTensor<Self>,
        xi: FloatTensor<Self>,
        eps: f32,
        relu: bool,
    ) -> FloatTensor<Self> {
        untracked(
            Inputs {
                x: &x,
                theta: &theta,
                b: &bias,
                v: VarIn::Given(&var),
                xi: &xi,
            },
            eps,
            relu,
        )
    }

    fn gemm_lrt_scaled(
        x: FloatTensor<Self>,
        theta: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        xi: FloatTensor<Self>,
        eps: f32,
        relu: bool,
    ) -> FloatTensor<Self> {
        untracked(
            Inputs {
                x: &x,
                theta: &theta,
                b: &bias,
                v: VarIn::Scaled(&scale),
                xi: &xi,
            },
            eps,
            relu,
        )
    }
}

/// The weight variance the backward step reads.
#[derive(Debug, Clone)]
enum Variance {
    /// An input of the op; its gradient is `∂L/∂v`.
    Given(FlexTensor),
    /// `v = a·θ⊙θ` computed by the op; the input is `a`, its gradient `∂L/∂a`.
    Scaled { v: Vec<f32>, a: f32 },
}

/// What the backward step keeps: x, θ, v, the forward pass's `k` and `x2`, and the output after
/// a ReLU.
#[derive(Debug, Clone)]
struct State {
    x: FlexTensor,
    theta: FlexTensor,
    v: Variance,
    k: Vec<f32>,
    x2: Vec<f32>,
    y: Option<FlexTensor>,
}

#[derive(Debug)]
struct LrtBackward;

impl Backward<Flex, 4> for LrtBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let gy = grads.consume::<Flex>(&ops.node);
        let ids: [Option<NodeId>; 4] = ops.parents.map(|p| p.map(|p| p.id));
        let [node_x, node_theta, node_b, node_v] = ids;
        let s = ops.state;
        let d = Dims::of(&s.x, &s.theta);
        let y = s.y.as_ref().map(host);
        let theta = host(&s.theta);
        let (v, scale) = match &s.v {
            Variance::Given(v) => (host(v), None),
            Variance::Scaled { v, a } => (Cow::Borrowed(&v[..]), Some(*a)),
        };
        // The scaled form needs ∂L/∂v for θ's gradient too.
        let want_dv = node_v.is_some() || (scale.is_some() && node_theta.is_some());
        let mut g = backward_host(
            d,
            &host(&s.x),
            &theta,
            &v,
            (&s.k, &s.x2),
            y.as_deref(),
            &host(&gy),
            [
                node_x.is_some(),
                node_theta.is_some(),
                node_b.is_some(),
                want_dv,
            ],
        );
        if let Some(a) = scale
            && let Some(dv) = g.v.take()
        {
            // ∂L/∂a only when the scale is tracked (one α per layer, not Gaussian dropout).
            let da = scaled_pull_back(&theta, a, &dv, g.theta.as_deref_mut(), node_v.is_some());
            g.v = da.map(|da| vec![da as f32]);
        }
        if let (Some(node), Some(dx)) = (node_x, g.x) {
            grads.register::<Flex>(node, flex(dx, [d.n, d.i]));
        }
        if let (Some(node), Some(dt)) = (node_theta, g.theta) {
            grads.register::<Flex>(node, flex(dt, [d.o, d.i]));
        }
        if let (Some(node), Some(db)) = (node_b, g.b) {
            grads.register::<Flex>(node, flex(db, [d.o]));
        }
        if let (Some(node), Some(dv)) = (node_v, g.v) {
            let dv = match scale {
                Some(_) => flex(dv, [1]),
                None => flex(dv, [d.o, d.i]),
            };
            grads.register::<Flex>(node, dv);
        }
    }
}

/// The autodiff form of both ops: the forward pass on flex, its state kept when any input is
/// tracked. `var` is `v` or, for the scaled form, `a`.
#[allow(clippy::too_many_arguments)]
fn tracked_lrt<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    theta: FloatTensor<Autodiff<Flex, C>>,
    bias: FloatTensor<Autodiff<Flex, C>>,
    var: FloatTensor<Autodiff<Flex, C>>,
    xi: FloatTensor<Autodiff<Flex, C>>,
    scaled: bool,
    eps: f32,
    relu: bool,
) -> FloatTensor<Autodiff<Flex, C>> {
    let v_in = if scaled {
        VarIn::Scaled(var.primitive())
    } else {
        VarIn::Given(var.primitive())
    };
    let inputs = Inputs {
        x: x.primitive(),
        theta: theta.primitive(),
        b: bias.primitive(),
        v: v_in,
        xi: xi.primitive(),
    };
    let (d, Forward { y, k, x2 }, computed) = forward_flex(inputs, eps, relu);
    let y = flex(y, [d.n, d.o]);
    let nodes = [x.node(), theta.node(), bias.node(), var.node()];
    match LrtBackward.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let v = match computed {
                Some((v, a)) => Variance::Scaled { v, a },
                None => Variance::Given(var.into_primitive()),
            };
            let state = State {
                x: x.into_primitive(),
                theta: theta.into_primitive(),
                v,
                k,
                x2,
                y: relu.then(|| y.clone()),
            };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

impl<C: CheckpointStrategy> GemmLrt for Autodiff<Flex, C> {
    fn gemm_lrt(
        x: FloatTensor<Self>,
        theta: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        var: FloatTensor<Self>,
        xi: FloatTensor<Self>,
        eps: f32,
        relu: bool,
    ) -> FloatTensor<Self> {
        tracked_lrt::<C>(x, theta, bias, var, xi, false, eps, relu)
    }

    fn gemm_lrt_scaled(
        x: FloatTensor<Self>,
        theta: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        xi: FloatTensor<Self>,
        eps: f32,
        relu: bool,
    ) -> FloatTensor<Self> {
        tracked_lrt::<C>(x, theta, bias, scale, xi, true, eps, relu)
    }
}

/// Dense layer under the local reparameterisation trick,
/// `act(x·θᵀ + b + √((x⊙x)·vᵀ + eps)⊙ξ)` with `x: [n, in]`, weight mean `θ` and variance `v`
/// `[out, in]`, bias `b: [out]` and the noise `ξ: [n, out]` (never differentiated); `act` a ReLU
/// if `relu`. Through the `GemmLrt` extension for `f32` tensors (see the module docs); otherwise
/// [`super::compose_lrt_dense`].
pub fn lrt_dense(
    x: Tensor<2>,
    theta: Tensor<2>,
    b: Tensor<1>,
    v: Tensor<2>,
    xi: Tensor<2>,
    eps: f32,
    relu: bool,
) -> Tensor<2> {
    lrt(x, theta, b, VarArg::Given(v), xi, eps, relu)
}

/// [`lrt_dense`] with the weight variance `v = a·θ⊙θ` for one scale `a: [1]` of the layer (the
/// form of Gaussian dropout and of one α per layer), computed inside the op; otherwise
/// [`super::compose_lrt_dense_scaled`].
pub fn lrt_dense_scaled(
    x: Tensor<2>,
    theta: Tensor<2>,
    b: Tensor<1>,
    a: Tensor<1>,
    xi: Tensor<2>,
    eps: f32,
    relu: bool,
) -> Tensor<2> {
    lrt(x, theta, b, VarArg::Scaled(a), xi, eps, relu)
}

/// The weight variance argument of [`lrt`].
enum VarArg {
    /// `v`, `[out, in]`.
    Given(Tensor<2>),
    /// The scale `a`, `[1]`: `v = a·θ⊙θ`.
    Scaled(Tensor<1>),
}

/// Both public forms: through the extension when every input is `f32`, else burn's ops.
fn lrt(
    x: Tensor<2>,
    theta: Tensor<2>,
    b: Tensor<1>,
    var: VarArg,
    xi: Tensor<2>,
    eps: f32,
    relu: bool,
) -> Tensor<2> {
    let var_dtype = match &var {
        VarArg::Given(v) => v.dtype(),
        VarArg::Scaled(a) => a.dtype(),
    };
    let f32s = [x.dtype(), theta.dtype(), b.dtype(), var_dtype, xi.dtype()]
        .iter()
        .all(|t| *t == DType::F32);
    if !f32s {
        return match var {
            VarArg::Given(v) => super::compose_lrt_dense(x, theta, b, v, xi, eps, relu),
            VarArg::Scaled(a) => super::compose_lrt_dense_scaled(x, theta, b, a, xi, eps, relu),
        };
    }
    let (x, theta, b, xi) = (
        x.into_dispatch(),
        theta.into_dispatch(),
        b.into_dispatch(),
        xi.into_dispatch(),
    );
    let y = match var {
        VarArg::Given(v) => {
            <Dispatch as GemmLrt>::gemm_lrt(x, theta, b, v.into_dispatch(), xi, eps, relu)
        }
        VarArg::Scaled(a) => {
            <Dispatch as GemmLrt>::gemm_lrt_scaled(x, theta, b, a.into_dispatch(), xi, eps, relu)
        }
    };
    Tensor::from_dispatch(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conv::tests::{
        check_central, max_diff, normal, on_threads, uniform_stream, values,
    };
    use crate::backend::{compose_lrt_dense, compose_lrt_dense_scaled, device, train_device};

    /// `(n, i, o, relu)`: the sparse-VD MLP's first and last layers and a small odd one.
    const CASES: [(usize, usize, usize, bool); 3] = [
        (128, 784, 300, true),
        (128, 100, 10, false),
        (7, 5, 3, true),
    ];

    type Layer = fn(Tensor<2>, Tensor<2>, Tensor<1>, Tensor<2>, Tensor<2>, f32, bool) -> Tensor<2>;
    type Scaled = fn(Tensor<2>, Tensor<2>, Tensor<1>, Tensor<1>, Tensor<2>, f32, bool) -> Tensor<2>;

    /// Output and gradients of `Σ y ⊙ r` for x, θ, b and (when tracked) the layer's fourth input
    /// `fourth` (v, or the scale a), with `y = layer(x, θ, b, fourth, ξ, relu)` on case `case`'s
    /// sizes and inputs drawn from `seed`.
    fn run_case<const D: usize>(
        case: usize,
        seed: u64,
        fourth: Tensor<D>,
        layer: impl FnOnce(Tensor<2>, Tensor<2>, Tensor<1>, Tensor<D>, Tensor<2>, bool) -> Tensor<2>,
    ) -> Vec<Vec<f32>> {
        let (n, i, o, relu) = CASES[case];
        let dev = train_device();
        let x = normal([n, i], seed, &dev).require_grad();
        let theta = (normal([o, i], seed + 1, &dev) * 0.1).require_grad();
        let b = normal([o], seed + 2, &dev).require_grad();
        let xi = normal([n, o], seed + 4, &dev);
        let y = layer(
            x.clone(),
            theta.clone(),
            b.clone(),
            fourth.clone(),
            xi,
            relu,
        );
        let r = normal([n, o], seed + 5, &dev);
        let g = (y.clone() * r).sum().backward();
        let mut out = vec![
            values(&y),
            values(&x.grad(&g).expect("tracked")),
            values(&theta.grad(&g).expect("tracked")),
            values(&b.grad(&g).expect("tracked")),
        ];
        if fourth.is_tracked() {
            out.push(values(&fourth.grad(&g).expect("tracked")));
        }
        out
    }

    /// [`run_case`] for the form with the weight variance `v` as an input.
    fn run(case: usize, f: Layer) -> Vec<Vec<f32>> {
        let (_, i, o, _) = CASES[case];
        let seed = 10 * case as u64;
        let v = (normal([o, i], seed + 3, &train_device()) * 0.01)
            .powi_scalar(2)
            .require_grad();
        run_case(case, seed, v, |x, t, b, v, xi, relu| {
            f(x, t, b, v, xi, 1e-8, relu)
        })
    }

    /// [`run_case`] for the scaled form, `v = a·θ⊙θ`, `a` tracked or a constant.
    fn run_scaled(case: usize, f: Scaled, track_a: bool) -> Vec<Vec<f32>> {
        let a = Tensor::<1>::from_floats([0.37], &train_device());
        let a = if track_a { a.require_grad() } else { a };
        run_case(case, 10 * case as u64 + 100, a, |x, t, b, a, xi, relu| {
            f(x, t, b, a, xi, 1e-8, relu)
        })
    }

    /// Each of `ours` within 1e-4 of the largest magnitude of the matching one of `theirs`.
    fn assert_close(context: &str, names: &[&str], ours: &[Vec<f32>], theirs: &[Vec<f32>]) {
        assert_eq!(ours.len(), theirs.len(), "{context}");
        for (what, (a, b)) in names.iter().zip(ours.iter().zip(theirs)) {
            let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let d = max_diff(a, b);
            assert!(
                d < 1e-4 * scale,
                "{context}: max |{what} ours - burn| = {d}"
            );
        }
    }

    #[test]
    fn output_and_gradients_match_burns_ops() {
        for case in 0..CASES.len() {
            assert_close(
                &format!("case {case}"),
                &["y", "dx", "dθ", "db", "dv"],
                &run(case, lrt_dense),
                &run(case, compose_lrt_dense),
            );
        }
    }

    /// Evaluation (no autodiff) gives the values of the tracked forward pass.
    #[test]
    fn evaluation_matches_the_tracked_forward_pass() {
        let (n, i, o) = (40, 30, 20);
        let x = normal([n, i], 1, &device());
        let theta = normal([o, i], 2, &device());
        let b = normal([o], 3, &device());
        let v = normal([o, i], 4, &device()).powi_scalar(2);
        let xi = normal([n, o], 5, &device());
        let plain = lrt_dense(
            x.clone(),
            theta.clone(),
            b.clone(),
            v.clone(),
            xi.clone(),
            1e-8,
            true,
        );
        let dev = train_device();
        let t = |x: &Tensor<2>| Tensor::<2>::from_data(x.to_data(), &dev);
        let tracked = lrt_dense(
            t(&x),
            t(&theta).require_grad(),
            Tensor::from_data(b.to_data(), &dev).require_grad(),
            t(&v).require_grad(),
            t(&xi),
            1e-8,
            true,
        );
        assert_eq!(values(&plain), values(&tracked));
    }

    /// Central differences of `Σ y ⊙ r` (f64 sums of the f32 forward pass) in x, θ, b and v,
    /// with and without the ReLU.
    #[test]
    fn gradients_match_finite_differences() {
        let d = Dims { n: 5, i: 7, o: 4 };
        let mut next = uniform_stream(777);
        let x: Vec<f32> = (0..d.n * d.i).map(|_| next()).collect();
        let theta: Vec<f32> = (0..d.o * d.i).map(|_| next()).collect();
        let b: Vec<f32> = (0..d.o).map(|_| next()).collect();
        // Variances bounded away from 0, so that √(δ + ε) is smooth at the step size.
        let v: Vec<f32> = (0..d.o * d.i).map(|_| 0.2 + 0.5 * next().abs()).collect();
        let xi: Vec<f32> = (0..d.n * d.o).map(|_| next()).collect();
        let r: Vec<f32> = (0..d.n * d.o).map(|_| next()).collect();
        for relu in [false, true] {
            let loss = |x: &[f32], theta: &[f32], b: &[f32], v: &[f32]| -> f64 {
                let f = forward_host(d, x, theta, b, v, &xi, 1e-8, relu);
                f.y.iter()
                    .zip(&r)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum()
            };
            let f = forward_host(d, &x, &theta, &b, &v, &xi, 1e-8, relu);
            let y = relu.then_some(&f.y[..]);
            let g = backward_host(d, &x, &theta, &v, (&f.k, &f.x2), y, &r, [true; 4]);
            let check = |what: &str, base: &[f32], grad: &[f32], f: &dyn Fn(&[f32]) -> f64| {
                check_central(
                    &format!("relu {relu}, {what}"),
                    base,
                    grad,
                    (1e-3, 5e-3, 1),
                    f,
                )
            };
            check("x", &x, g.x.as_ref().unwrap(), &|x| loss(x, &theta, &b, &v));
            check("θ", &theta, g.theta.as_ref().unwrap(), &|t| {
                loss(&x, t, &b, &v)
            });
            check("b", &b, g.b.as_ref().unwrap(), &|b| loss(&x, &theta, b, &v));
            check("v", &v, g.v.as_ref().unwrap(), &|v| loss(&x, &theta, &b, v));
        }
    }

    /// One thread and three give the same bits.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let at = |threads: usize| on_threads(threads, || run(0, lrt_dense));
        assert_eq!(at(1), at(3));
    }

    /// The scaled form (`v = a·θ⊙θ` inside the op) gives burn's values and gradients, including
    /// `∂L/∂a`, and needs no gradient of a constant scale.
    #[test]
    fn scaled_form_matches_burns_ops() {
        for case in 0..CASES.len() {
            for track_a in [true, false] {
                let ours = run_scaled(case, lrt_dense_scaled, track_a);
                assert_eq!(ours.len(), if track_a { 5 } else { 4 });
                assert_close(
                    &format!("case {case}, a tracked {track_a}"),
                    &["y", "dx", "dθ", "db", "da"],
                    &ours,
                    &run_scaled(case, compose_lrt_dense_scaled, track_a),
                );
            }
        }
    }

    /// Central differences of the scaled form's chain rule: `Σ r ⊙ y(θ, a·θ⊙θ)` in θ and in a,
    /// through the host passes the op uses.
    #[test]
    fn scaled_gradients_match_finite_differences() {
        let d = Dims { n: 6, i: 9, o: 5 };
        let mut next = uniform_stream(4242);
        let x: Vec<f32> = (0..d.n * d.i).map(|_| next()).collect();
        let theta: Vec<f32> = (0..d.o * d.i).map(|_| 0.5 + 0.5 * next().abs()).collect();
        let b: Vec<f32> = (0..d.o).map(|_| next()).collect();
        let xi: Vec<f32> = (0..d.n * d.o).map(|_| next()).collect();
        let r: Vec<f32> = (0..d.n * d.o).map(|_| next()).collect();
        let a = 0.6f32;
        let loss = |theta: &[f32], a: f32| -> f64 {
            let v = scaled_variance(theta, a);
            let f = forward_host(d, &x, theta, &b, &v, &xi, 1e-8, true);
            f.y.iter()
                .zip(&r)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        let v = scaled_variance(&theta, a);
        let f = forward_host(d, &x, &theta, &b, &v, &xi, 1e-8, true);
        let mut g = backward_host(
            d,
            &x,
            &theta,
            &v,
            (&f.k, &f.x2),
            Some(&f.y),
            &r,
            [false, true, false, true],
        );
        let mut dtheta = g.theta.take().unwrap();
        let da =
            scaled_pull_back(&theta, a, g.v.as_ref().unwrap(), Some(&mut dtheta), true).unwrap();
        check_central("θ", &theta, &dtheta, (1e-3, 5e-3, 1), &|t| loss(t, a));
        check_central("a", &[a], &[da as f32], (1e-3, 5e-3, 1), &|s| {
            loss(&theta, s[0])
        });
        // Without ∂L/∂θ the scale's gradient is the same.
        assert_eq!(
            scaled_pull_back(&theta, a, g.v.as_ref().unwrap(), None, true).unwrap(),
            da
        );
    }

    /// One thread and three give the same bits for the scaled form, `∂L/∂a` included (a layer
    /// of several blocks).
    #[test]
    fn scaled_results_do_not_depend_on_the_thread_count() {
        let at = |threads: usize| on_threads(threads, || run_scaled(0, lrt_dense_scaled, true));
        assert_eq!(at(1), at(3));
    }
}
