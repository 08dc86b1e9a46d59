//! Dense layer `y = act(x·Wᵀ + b)` (`act` = identity or ReLU) as one host op with its own
//! backward pass, plugged into burn through a backend extension (`GemmDense`) for the flex
//! backend and its autodiff wrapper. Other backends compose burn's matmul, add and relu.
//!
//! With `x: [n, i]`, `W: [o, i]`, `g = ∂L/∂y` and `g' = g ⊙ [y > 0]` after a ReLU (`g' = g`
//! otherwise):
//! - forward: `y = act(x·Wᵀ + b)`, the bias and the ReLU applied to each output block while it
//!   is in cache;
//! - backward: `∂L/∂b = Σ_rows g'`, `∂L/∂W = g'ᵀ·x`, `∂L/∂x = g'·W` (only those asked for).
//!
//! Why: on flex an MLP train step spent a third of its time outside its GEMMs, in the separate
//! bias add, ReLU, their backward ops and layout copies, and its small GEMMs ran slower on
//! `gemm`'s own two threads than on one (see `matmul.rs`).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;
use multiversion::multiversion;

use super::host;
use super::matmul::{Epilogue, Mat, product, products_of};

/// Sizes of one dense layer: `n` rows (samples), `i` inputs, `o` outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub(super) n: usize,
    pub(super) i: usize,
    pub(super) o: usize,
}

impl Dims {
    /// The sizes of `x·wᵀ` (panics unless the inner sides agree).
    pub(super) fn of(x: &FlexTensor, w: &FlexTensor) -> Self {
        let [n, i] = x.shape().dims();
        let [o, i2] = w.shape().dims();
        assert_eq!(i, i2, "dense: input width {i} against weight width {i2}");
        Self { n, i, o }
    }
}

/// `y = act(x·Wᵀ + b)` on host buffers: `x: [n, i]`, `w: [o, i]`, `b: [o]` → `[n, o]`.
pub fn forward_host(d: Dims, x: &[f32], w: &[f32], b: Option<&[f32]>, relu: bool) -> Vec<f32> {
    product(
        Mat::new(x, d.n, d.i),
        Mat::new(w, d.o, d.i).t(),
        Epilogue { bias: b, relu },
    )
}

/// Gradients asked of [`backward_host`], and what it returns.
#[derive(Debug, Default, PartialEq)]
pub struct Grads {
    /// `∂L/∂x`, `[n, i]`.
    pub x: Option<Vec<f32>>,
    /// `∂L/∂W`, `[o, i]`.
    pub w: Option<Vec<f32>>,
    /// `∂L/∂b`, `[o]`.
    pub b: Option<Vec<f32>>,
}

/// Gradients of `y = act(x·Wᵀ + b)` given `gy = ∂L/∂y`; `y` is the forward output when the
/// activation is a ReLU (its gradient is taken as 0 where `y ≤ 0`, as in burn's relu).
#[allow(clippy::too_many_arguments)]
pub fn backward_host(
    d: Dims,
    x: &[f32],
    w: &[f32],
    y: Option<&[f32]>,
    gy: &[f32],
    want: [bool; 3],
) -> Grads {
    let [want_x, want_w, want_b] = want;
    let masked = y.map(|y| relu_masked(gy, y));
    let g = masked.as_deref().unwrap_or(gy);
    let b = want_b.then(|| column_sums(g, d.o));
    let gm = Mat::new(g, d.n, d.o);
    let e = Epilogue::default();
    let (w_grad, x_grad) = products_of(
        want_w.then(|| (gm.t(), Mat::new(x, d.n, d.i), e)),
        want_x.then(|| (gm, Mat::new(w, d.o, d.i), e)),
    );
    Grads {
        x: x_grad,
        w: w_grad,
        b,
    }
}

/// `∂L/∂(pre-activation)` of a ReLU with output `y`: `g` where `y > 0`, else 0 (as burn's relu);
/// multiversioned for AVX-512 and AVX2 (the crate builds for baseline x86-64, 4 lanes).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn relu_masked(g: &[f32], y: &[f32]) -> Vec<f32> {
    g.iter()
        .zip(y)
        .map(|(&g, &y)| if y <= 0.0 { 0.0 } else { g })
        .collect()
}

/// Column sums of the row-major `g` with `cols` columns (rows added in order): a bias gradient
/// (multiversioned like [`relu_masked`]).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
pub(super) fn column_sums(g: &[f32], cols: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; cols];
    for row in g.chunks_exact(cols) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
    sums
}

/// A flex tensor owning `values`.
pub(super) fn flex<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn forward_flex(x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>, relu: bool) -> FlexTensor {
    let d = Dims::of(x, w);
    let b = b.map(host);
    let y = forward_host(d, &host(x), &host(w), b.as_deref(), relu);
    flex(y, [d.n, d.o])
}

/// A dense layer as one op (see the module docs). Only the flex backend and its autodiff
/// wrapper implement it; [`dense`] decides when it is used.
#[backend_extension(Flex, Autodiff)]
pub trait GemmDense: Backend {
    /// `act(x·Wᵀ + b)` with `x: [n, i]`, `weight: [o, i]`, `bias: [o]`; `act` is a ReLU if
    /// `relu`, the identity otherwise.
    fn gemm_dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// `act(x·Wᵀ)` (the extension macro takes no optional tensors).
    fn gemm_dense_unbiased(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self>;
}

impl GemmDense for Flex {
    fn gemm_dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self> {
        forward_flex(&x, &weight, Some(&bias), relu)
    }

    fn gemm_dense_unbiased(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self> {
        forward_flex(&x, &weight, None, relu)
    }
}

/// What the backward step keeps: the input, the weight and (after a ReLU) the output.
type State = (FlexTensor, FlexTensor, Option<FlexTensor>);

/// The backward step shared by the layers with and without a bias: `gy = ∂L/∂y` and the ids of
/// the tracked parents `[x, W, b]`.
fn backward_step(
    gy: FlexTensor,
    [node_x, node_w, node_b]: [Option<NodeId>; 3],
    (x, w, y): State,
    grads: &mut Gradients,
) {
    let d = Dims::of(&x, &w);
    let y = y.as_ref().map(host);
    let g = backward_host(
        d,
        &host(&x),
        &host(&w),
        y.as_deref(),
        &host(&gy),
        [node_x.is_some(), node_w.is_some(), node_b.is_some()],
    );
    if let (Some(node), Some(dx)) = (node_x, g.x) {
        grads.register::<Flex>(node, flex(dx, [d.n, d.i]));
    }
    if let (Some(node), Some(dw)) = (node_w, g.w) {
        grads.register::<Flex>(node, flex(dw, [d.o, d.i]));
    }
    if let (Some(node), Some(db)) = (node_b, g.b) {
        grads.register::<Flex>(node, flex(db, [d.o]));
    }
}

#[derive(Debug)]
struct DenseBackward;

impl Backward<Flex, 3> for DenseBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let gy = grads.consume::<Flex>(&ops.node);
        let ids = ops.parents.map(|p| p.map(|p| p.id));
        backward_step(gy, ids, ops.state, grads);
    }
}

#[derive(Debug)]
struct DenseNoBiasBackward;

impl Backward<Flex, 2> for DenseNoBiasBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let gy = grads.consume::<Flex>(&ops.node);
        let [x, w] = ops.parents.map(|p| p.map(|p| p.id));
        backward_step(gy, [x, w, None], ops.state, grads);
    }
}

/// Registers the forward output `y` of `x` and `weight` (and the bias, when `nodes` has it) with
/// the graph through `op`, keeping what the backward step needs.
fn tracked<C: CheckpointStrategy, O: Backward<Flex, N, State = State>, const N: usize>(
    op: O,
    nodes: [NodeGuard; N],
    x: FloatTensor<Autodiff<Flex, C>>,
    weight: FloatTensor<Autodiff<Flex, C>>,
    y: FlexTensor,
    relu: bool,
) -> FloatTensor<Autodiff<Flex, C>> {
    match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let kept = relu.then(|| y.clone());
            prep.finish((x.into_primitive(), weight.into_primitive(), kept), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

impl<C: CheckpointStrategy> GemmDense for Autodiff<Flex, C> {
    fn gemm_dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self> {
        let y = forward_flex(
            x.primitive(),
            weight.primitive(),
            Some(bias.primitive()),
            relu,
        );
        let nodes = [x.node(), weight.node(), bias.node()];
        tracked::<C, _, 3>(DenseBackward, nodes, x, weight, y, relu)
    }

    fn gemm_dense_unbiased(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self> {
        let y = forward_flex(x.primitive(), weight.primitive(), None, relu);
        let nodes = [x.node(), weight.node()];
        tracked::<C, _, 2>(DenseNoBiasBackward, nodes, x, weight, y, relu)
    }
}

/// `act(x·Wᵀ + b)` through [`GemmDense`] for `f32` tensors; otherwise burn's matmul, add and
/// relu.
pub fn dense(x: Tensor<2>, w: Tensor<2>, b: Option<Tensor<1>>, relu: bool) -> Tensor<2> {
    let f32s = x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && b.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    if !f32s {
        return super::compose_dense(x, w, b, relu);
    }
    let (x, w) = (x.into_dispatch(), w.into_dispatch());
    let y = match b {
        Some(b) => <Dispatch as GemmDense>::gemm_dense(x, w, b.into_dispatch(), relu),
        None => <Dispatch as GemmDense>::gemm_dense_unbiased(x, w, relu),
    };
    Tensor::from_dispatch(y)
}

#[cfg(test)]
mod tests {
    use burn::tensor::Tensor;

    use super::*;
    use crate::backend::conv::tests::{
        check_central, max_diff, normal, on_threads, uniform_stream, values,
    };
    use crate::backend::{compose_dense, device, train_device};

    /// `(n, i, o, bias, relu)`: the MLP's first layer (split by columns), a tall batch (split
    /// by rows), a layer too small to split, and one without a bias.
    const CASES: [(usize, usize, usize, bool, bool); 5] = [
        (128, 784, 300, true, true),
        (600, 100, 40, true, true),
        (7, 5, 3, true, false),
        (50, 70, 90, false, true),
        (64, 300, 100, false, false),
    ];

    type Layer = fn(Tensor<2>, Tensor<2>, Option<Tensor<1>>, bool) -> Tensor<2>;

    /// Output and gradients of `Σ y ⊙ r` for x, W and b through `f`.
    fn run(case: usize, f: Layer, x_tracked: bool) -> [Option<Vec<f32>>; 4] {
        let (n, i, o, bias, relu) = CASES[case];
        let dev = train_device();
        let seed = 10 * case as u64;
        let x = normal([n, i], seed, &dev);
        let x = if x_tracked { x.require_grad() } else { x };
        let w = (normal([o, i], seed + 1, &dev) * 0.1).require_grad();
        let b = bias.then(|| normal([o], seed + 2, &dev).require_grad());
        let y = f(x.clone(), w.clone(), b.clone(), relu);
        let r = normal([n, o], seed + 3, &dev);
        let g = (y.clone() * r).sum().backward();
        [
            Some(values(&y)),
            x.grad(&g).map(|t| values(&t)),
            w.grad(&g).map(|t| values(&t)),
            b.and_then(|b| b.grad(&g)).map(|t| values(&t)),
        ]
    }

    #[test]
    fn output_and_gradients_match_burns_ops() {
        for case in 0..CASES.len() {
            let ours = run(case, dense, true);
            let theirs = run(case, compose_dense, true);
            for (what, (a, b)) in ["y", "dx", "dW", "db"].iter().zip(ours.iter().zip(&theirs)) {
                assert_eq!(a.is_some(), b.is_some(), "case {case}: {what}");
                if let (Some(a), Some(b)) = (a, b) {
                    let d = max_diff(a, b);
                    assert!(d < 1e-4, "case {case}: max |{what} ours - burn| = {d}");
                }
            }
        }
        // An untracked input (a first layer) gets no gradient; the others are unchanged.
        let untracked = run(0, dense, false);
        assert!(untracked[1].is_none());
        let tracked = run(0, dense, true);
        assert_eq!(untracked[2], tracked[2]);
        assert_eq!(untracked[3], tracked[3]);
    }

    /// Evaluation (no autodiff) gives the values of the tracked forward pass.
    #[test]
    fn evaluation_matches_the_tracked_forward_pass() {
        let (n, i, o) = (40, 30, 20);
        let x = normal([n, i], 1, &device());
        let w = normal([o, i], 2, &device());
        let b = normal([o], 3, &device());
        let plain = dense(x.clone(), w.clone(), Some(b.clone()), true);
        let dev = train_device();
        let tracked = dense(
            Tensor::from_data(x.to_data(), &dev),
            Tensor::from_data(w.to_data(), &dev).require_grad(),
            Some(Tensor::from_data(b.to_data(), &dev).require_grad()),
            true,
        );
        assert_eq!(values(&plain), values(&tracked));
    }

    /// Central differences of `Σ y ⊙ r` (f64 sums of the f32 forward pass) in x, W and b,
    /// with and without the ReLU.
    #[test]
    fn gradients_match_finite_differences() {
        let d = Dims { n: 6, i: 9, o: 5 };
        let mut next = uniform_stream(4242);
        let x: Vec<f32> = (0..d.n * d.i).map(|_| next()).collect();
        let w: Vec<f32> = (0..d.o * d.i).map(|_| next()).collect();
        let b: Vec<f32> = (0..d.o).map(|_| next()).collect();
        let r: Vec<f32> = (0..d.n * d.o).map(|_| next()).collect();
        for relu in [false, true] {
            let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
                let y = forward_host(d, x, w, Some(b), relu);
                y.iter()
                    .zip(&r)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum()
            };
            let y = forward_host(d, &x, &w, Some(&b), relu);
            let g = backward_host(d, &x, &w, relu.then_some(&y[..]), &r, [true; 3]);
            let check = |what: &str, base: &[f32], grad: &[f32], f: &dyn Fn(&[f32]) -> f64| {
                check_central(
                    &format!("relu {relu}, {what}"),
                    base,
                    grad,
                    (1e-3, 5e-3, 1),
                    f,
                )
            };
            check("x", &x, g.x.as_ref().unwrap(), &|x| loss(x, &w, &b));
            check("w", &w, g.w.as_ref().unwrap(), &|w| loss(&x, w, &b));
            check("b", &b, g.b.as_ref().unwrap(), &|b| loss(&x, &w, b));
        }
    }

    /// Products are cut into one block per thread; one thread and three give the same bits.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let at = |threads: usize| on_threads(threads, || [0, 1].map(|case| run(case, dense, true)));
        assert_eq!(at(1), at(3));
    }
}
