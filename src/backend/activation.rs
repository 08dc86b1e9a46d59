//! ReLU of a feature map, and ReLU of a residual sum `relu(a + b)`, on the host with their own
//! backward pass, plugged into burn through a backend extension (`HostRelu`) for the flex
//! backend and its autodiff wrapper.
//!
//! `y = relu(x)` (a NaN passes through, as in burn and PyTorch), `∂L/∂x = ∂L/∂y·[y > 0 or y is
//! NaN]`; for `relu(a + b)` both inputs receive that gradient.
//!
//! Why: burn's element-wise ops return row-major results for a channels-last input
//! (`layout.rs`) through a strided walk, so a ReLU or a residual addition between two
//! channels-last convolutions would transpose the map both ways; these run in storage order and
//! keep it.

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

use super::PASS_BLOCK;
use super::layout;

/// ReLU keeping a NaN.
#[inline(always)]
fn relu1(v: f32) -> f32 {
    if v.is_nan() || v > 0.0 { v } else { 0.0 }
}

/// `relu(a + b)` (`b` absent: `relu(a)`), element by element in storage order.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn forward_host(a: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    // SAFETY: each block of the output is zipped with the same block of `a` (and of `b`, of
    // `a`'s length), and every element written.
    unsafe {
        super::par_new(a.len(), PASS_BLOCK, |i, y| {
            let a = &a[i * PASS_BLOCK..][..y.len()];
            match b {
                Some(b) => {
                    let b = &b[i * PASS_BLOCK..][..y.len()];
                    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                        y.write(relu1(a + b));
                    }
                }
                None => {
                    for (y, &a) in y.iter_mut().zip(a) {
                        y.write(relu1(a));
                    }
                }
            }
        })
    }
}

/// `∂L/∂y` where the output `y` is positive or NaN, else 0 (both in the same order).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn backward_host(y: &[f32], gy: &[f32]) -> Vec<f32> {
    // SAFETY: each block of `∂L/∂x` is zipped with the same blocks of `y` and `gy` (of one
    // length), and every element written.
    unsafe {
        super::par_new(y.len(), PASS_BLOCK, |i, dx| {
            let (y, gy) = (
                &y[i * PASS_BLOCK..][..dx.len()],
                &gy[i * PASS_BLOCK..][..dx.len()],
            );
            for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(gy) {
                dx.write(if y.is_nan() || y > 0.0 { g } else { 0.0 });
            }
        })
    }
}

/// [`backward_host`] in the output gradient's buffer: `g ← ∂L/∂y` where `y` is positive or
/// NaN, else 0.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn backward_in_place(y: &[f32], g: &mut [f32]) {
    g.par_chunks_mut(PASS_BLOCK)
        .zip(y.par_chunks(PASS_BLOCK))
        .for_each(|(g, y)| {
            for (g, &y) in g.iter_mut().zip(y) {
                if !(y.is_nan() || y > 0.0) {
                    *g = 0.0;
                }
            }
        });
}

/// `a ← relu(a + b)` (`b` absent: `relu(a)`), element by element.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn in_place(a: &mut [f32], b: Option<&[f32]>) {
    let blocks = a.par_chunks_mut(PASS_BLOCK);
    match b {
        Some(b) => blocks.zip(b.par_chunks(PASS_BLOCK)).for_each(|(a, b)| {
            for (a, &b) in a.iter_mut().zip(b) {
                *a = relu1(*a + b);
            }
        }),
        None => blocks.for_each(|a| {
            for a in a {
                *a = relu1(*a);
            }
        }),
    }
}

/// `relu(a + b)` or `relu(a)` of flex tensors, the output stored in the order of `a` (`b`
/// reordered to it if need be): in `a`'s buffer when `a` is its only owner and stored densely
/// (row-major or channels last), else in a new one.
fn forward_flex(a: FlexTensor, b: Option<&FlexTensor>) -> FlexTensor {
    let Some(order) = layout::order_of(&a) else {
        return new_output(&a, b);
    };
    match layout::writable(a, order) {
        Ok(mut a) => {
            let vb = b.map(|b| layout::stored_as(b, order));
            in_place(a.storage_mut::<f32>(), vb.as_deref());
            a
        }
        Err(a) => new_output(&a, b),
    }
}

/// [`forward_flex`] into a new buffer.
fn new_output(a: &FlexTensor, b: Option<&FlexTensor>) -> FlexTensor {
    let (va, order) = layout::stored(a);
    let y = match b {
        Some(b) => forward_host(&va, Some(&layout::stored_as(b, order))),
        None => forward_host(&va, None),
    };
    layout::like(a, order, y)
}

/// Element-wise ReLU and residual ReLU on the host (see the module docs). Only the flex
/// backend and its autodiff wrapper implement it; [`relu`] and [`add_relu`] decide when it is
/// used.
#[backend_extension(Flex, Autodiff)]
pub trait HostRelu: Backend {
    /// `relu(a)`.
    fn host_relu(a: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `relu(a + b)` (`a` and `b` of one shape).
    fn host_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl HostRelu for Flex {
    fn host_relu(a: FloatTensor<Self>) -> FloatTensor<Self> {
        forward_flex(a, None)
    }

    fn host_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        forward_flex(a, Some(&b))
    }
}

/// The backward step keeps the output (for its mask).
#[derive(Debug)]
struct ReluBackward<const N: usize>;

impl<const N: usize> Backward<Flex, N> for ReluBackward<N> {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let gy = grads.consume::<Flex>(&ops.node);
        let y = ops.state;
        let (vy, order) = layout::stored(&y);
        // In the output gradient's buffer when it is the only owner, else in a new one.
        let dx = match layout::writable(gy, order) {
            Ok(mut g) => {
                backward_in_place(&vy, g.storage_mut::<f32>());
                g
            }
            Err(gy) => layout::like(
                &y,
                order,
                backward_host(&vy, &layout::stored_as(&gy, order)),
            ),
        };
        for node in ops.parents.into_iter().flatten() {
            grads.register::<Flex>(node.id, dx.clone());
        }
    }
}

impl<C: CheckpointStrategy> HostRelu for Autodiff<Flex, C> {
    fn host_relu(a: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [a.node()];
        let y = forward_flex(a.into_primitive(), None);
        match ReluBackward::<1>
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn host_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [a.node(), b.node()];
        let y = forward_flex(a.into_primitive(), Some(b.primitive()));
        match ReluBackward::<2>
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// `relu(x)` through [`HostRelu`] for an `f32` tensor, else burn's.
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() != DType::F32 {
        return burn::tensor::activation::relu(x);
    }
    Tensor::from_dispatch(<Dispatch as HostRelu>::host_relu(x.into_dispatch()))
}

/// `relu(a + b)` through [`HostRelu`] for `f32` tensors of one shape, else burn's ops.
pub fn add_relu<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if a.dtype() != DType::F32 || b.dtype() != DType::F32 || a.dims() != b.dims() {
        return burn::tensor::activation::relu(a + b);
    }
    Tensor::from_dispatch(<Dispatch as HostRelu>::host_add_relu(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conv::tests::{normal, values};
    use crate::backend::train_device;

    /// Values and gradients equal burn's `relu` and `relu(a + b)`, for row-major and
    /// channels-last inputs (mixed in one sum), with a NaN passed through.
    #[test]
    fn values_and_gradients_equal_burns() {
        let dev = train_device();
        let d = [3, 5, 4, 6];
        // A channels-last input: a leaf stored `[n, h, w, c]`, viewed as `[n, c, h, w]`.
        let leaf = |t: Tensor<4>, last: bool| {
            if last {
                t.permute([0, 2, 3, 1]).into_data()
            } else {
                t.into_data()
            }
        };
        let view = |t: Tensor<4>, last: bool| if last { t.permute([0, 3, 1, 2]) } else { t };
        for (ca, cb) in [(false, false), (true, true), (true, false)] {
            let mut av = values(&normal(d, 1, &dev));
            av[7] = f32::NAN;
            let a0 = Tensor::<4>::from_data(burn::tensor::TensorData::new(av, d), &dev);
            let a0 = Tensor::<4>::from_data(leaf(a0, ca), &dev);
            let b0 = Tensor::<4>::from_data(leaf(normal(d, 2, &dev), cb), &dev);
            let r = normal(d, 3, &dev);
            let run = |ours: bool| {
                let a = a0.clone().require_grad();
                let b = b0.clone().require_grad();
                let (ia, ib) = (view(a.clone(), ca), view(b.clone(), cb));
                let (y1, y2) = if ours {
                    (relu(ia.clone()), add_relu(ia, ib))
                } else {
                    let r = burn::tensor::activation::relu;
                    (r(ia.clone()), r(ia + ib))
                };
                let g = ((y1.clone() + y2.clone()) * r.clone()).sum().backward();
                [
                    values(&y1),
                    values(&y2),
                    values(&a.grad(&g).unwrap()),
                    values(&b.grad(&g).unwrap()),
                ]
            };
            let (ours, theirs) = (run(true), run(false));
            for (o, t) in ours.iter().zip(&theirs) {
                for (x, y) in o.iter().zip(t) {
                    assert!(x == y || (x.is_nan() && y.is_nan()), "{x} vs {y}");
                }
            }
        }
    }

    /// In `relu(relu(a) + b)` the outer and the residual backward steps mask their uniquely
    /// owned gradients in place, while the inner step gets the buffer the residual step also
    /// handed to `b` (and so writes a new one): both gradients equal burn's.
    #[test]
    fn in_place_gradients_leave_shared_ones_alone() {
        let dev = train_device();
        let d = [2, 3, 4, 5];
        let (a0, b0, r) = (normal(d, 4, &dev), normal(d, 5, &dev), normal(d, 6, &dev));
        let run = |ours: bool| {
            let (a, b) = (a0.clone().require_grad(), b0.clone().require_grad());
            let y = if ours {
                relu(add_relu(relu(a.clone()), b.clone()))
            } else {
                let r = burn::tensor::activation::relu;
                r(r(a.clone()) + b.clone())
            };
            let g = (y * r.clone()).sum().backward();
            [values(&a.grad(&g).unwrap()), values(&b.grad(&g).unwrap())]
        };
        assert_eq!(run(true), run(false));
    }
}
