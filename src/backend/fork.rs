//! A tensor read by two ops (a residual block's input, read by its branch and by its shortcut),
//! with the two gradients it receives summed on the host in the order they are stored.
//!
//! `fork(x) = (x, x)`, `∂L/∂x = ∂L/∂x₁ + ∂L/∂x₂`.
//!
//! Why: burn sums the gradients of a tensor with several readers with its element-wise add,
//! which walks a channels-last map (`layout.rs`) in row-major order, with a strided inner loop,
//! into a new row-major buffer; every op before the block then reorders that gradient back.
//! Here each reader gets its own node: the first of the two to run its backward step registers
//! its gradient as usual, the second takes what is registered and adds its own into it in
//! storage order (in the buffer of whichever is its only owner), so the sum stays channels
//! last and burn's add never runs on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Tensor};
use burn_flex::FlexTensor;
use multiversion::multiversion;
use rayon::prelude::*;

use super::PASS_BLOCK;
use super::layout;

/// `a ← a + b`, element by element.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn add_in_place(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(PASS_BLOCK)
        .zip(b.par_chunks(PASS_BLOCK))
        .for_each(|(a, b)| {
            for (a, &b) in a.iter_mut().zip(b) {
                *a += b;
            }
        });
}

/// `a + b` of one shape, stored channels last if either operand is (the order the host ops
/// keep), else row-major: over an operand in that order that is its only owner, the other one
/// read in that order, else in a new buffer.
fn sum(a: FlexTensor, b: FlexTensor) -> FlexTensor {
    let last = |t: &FlexTensor| layout::order_of(t) == Some(layout::Order::Nhwc);
    // Addition commutes, so the operands can swap places: `a` in the order of the sum.
    let (a, b) = if last(&b) && !last(&a) {
        (b, a)
    } else {
        (a, b)
    };
    let a = match into(a, &b) {
        Ok(s) => return s,
        Err(a) => a,
    };
    let b = if layout::order_of(&b) == layout::order_of(&a) {
        match into(b, &a) {
            Ok(s) => return s,
            Err(b) => b,
        }
    } else {
        b
    };
    let (va, order) = layout::stored(&a);
    let vb = layout::stored_as(&b, order);
    // SAFETY: each block of the sum is zipped with the same blocks of `va` and `vb` (of one
    // length), and every element written.
    let v = unsafe {
        super::par_new(va.len(), PASS_BLOCK, |i, s| {
            let (x, y) = (
                &va[i * PASS_BLOCK..][..s.len()],
                &vb[i * PASS_BLOCK..][..s.len()],
            );
            for ((s, &x), &y) in s.iter_mut().zip(x).zip(y) {
                s.write(x + y);
            }
        })
    };
    layout::like(&a, order, v)
}

/// `dst + src` in `dst`'s buffer, if [`layout::writable`]; else `Err(dst)`.
fn into(dst: FlexTensor, src: &FlexTensor) -> Result<FlexTensor, FlexTensor> {
    let Some(order) = layout::order_of(&dst) else {
        return Err(dst);
    };
    let mut dst = layout::writable(dst, order)?;
    let vs = layout::stored_as(src, order);
    add_in_place(dst.storage_mut::<f32>(), &vs);
    Ok(dst)
}

/// One reader's view of a forked tensor (see the module docs). Only the flex backend and its
/// autodiff wrapper implement it; [`fork`] decides when it is used.
#[backend_extension(Flex, Autodiff)]
pub trait HostFork: Backend {
    /// `x`, for one of the readers that share `registered` (set once one of them has
    /// registered its gradient of `x`).
    fn host_fork_view(x: FloatTensor<Self>, registered: Arc<AtomicBool>) -> FloatTensor<Self>;
}

impl HostFork for Flex {
    fn host_fork_view(x: FloatTensor<Self>, _: Arc<AtomicBool>) -> FloatTensor<Self> {
        x
    }
}

/// The backward step of a view: its gradient passed to `x`, or added to the one registered.
#[derive(Debug)]
struct ForkBackward {
    registered: Arc<AtomicBool>,
}

impl Backward<Flex, 1> for ForkBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [Some(node)] = ops.parents else {
            return;
        };
        // Only an op's output (order > 0) has its gradient removed when taken; a leaf's stays,
        // and registering the sum would count it twice, so a leaf gets burn's add.
        let other_first = self.registered.swap(true, Ordering::AcqRel);
        let sum = if other_first && node.order > 0 {
            sum(grads.consume::<Flex>(&node), g)
        } else {
            g
        };
        grads.register::<Flex>(node.id, sum);
    }
}

impl<C: CheckpointStrategy> HostFork for Autodiff<Flex, C> {
    fn host_fork_view(x: FloatTensor<Self>, registered: Arc<AtomicBool>) -> FloatTensor<Self> {
        let nodes = [x.node()];
        ForkBackward { registered }
            .prepare::<C>(nodes)
            .compute_bound()
            .stateless(x.into_primitive())
    }
}

/// `(x, x)` for two readers, through [`HostFork`] for an `f32` tensor.
pub fn fork<const D: usize>(x: Tensor<D>) -> (Tensor<D>, Tensor<D>) {
    if x.dtype() != DType::F32 {
        return (x.clone(), x);
    }
    let registered = Arc::new(AtomicBool::new(false));
    let view = |x: Tensor<D>| {
        <Dispatch as HostFork>::host_fork_view(x.into_dispatch(), registered.clone())
    };
    let first = Tensor::from_dispatch(view(x.clone()));
    (first, Tensor::from_dispatch(view(x)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::activation::relu;
    use crate::backend::conv::tests::{normal, values};
    use crate::backend::train_device;

    /// Gradients through [`fork`] equal burn's (one tensor read twice): for a leaf and for an
    /// op's output; with both readers' gradients channels last (summed in place) or one of them
    /// row-major; with a third reader outside the fork; and with one view left unread.
    #[test]
    fn gradients_equal_burns() {
        let dev = train_device();
        let d = [3, 5, 4, 6];
        // A leaf stored `[n, h, w, c]`, viewed as `[n, c, h, w]`.
        let x0 = Tensor::<4>::from_data(normal(d, 1, &dev).permute([0, 2, 3, 1]).into_data(), &dev);
        let r: Vec<Tensor<4>> = (2..5).map(|s| normal(d, s, &dev)).collect();
        // (x an op's output, second reader host ReLU, third reader, second view read)
        let cases = [
            (true, true, false, true),
            (true, false, false, true),
            (false, true, false, true),
            (false, false, false, true),
            (true, true, true, true),
            (true, false, true, false),
            (false, true, false, false),
        ];
        for (op_output, relu_second, third, read_second) in cases {
            let run = |ours: bool| {
                let leaf = x0.clone().require_grad();
                let view = leaf.clone().permute([0, 3, 1, 2]);
                // A channels-last op output (the host ReLU keeps the order), or the leaf.
                let x = if op_output { relu(view) } else { view };
                let (p, q) = if ours {
                    fork(x.clone())
                } else {
                    (x.clone(), x.clone())
                };
                let mut loss = (relu(p) * r[0].clone()).sum();
                if read_second {
                    let q = if relu_second { relu(q) } else { q * 0.5 };
                    loss = loss + (q * r[1].clone()).sum();
                }
                if third {
                    loss = loss + (x * r[2].clone()).sum();
                }
                values(&leaf.grad(&loss.backward()).unwrap())
            };
            let (ours, theirs) = (run(true), run(false));
            let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in ours.iter().zip(&theirs) {
                assert!(
                    (a - b).abs() <= 1e-6 * scale,
                    "{op_output} {relu_second} {third} {read_second}: {a} vs {b}"
                );
            }
        }
    }

    /// [`sum`] of two maps in any pair of orders: the values of `a + b`, stored channels last
    /// if either operand is, else row-major; an operand whose buffer is also held elsewhere is
    /// not written over.
    #[test]
    fn sum_adds_in_storage_order() {
        use layout::Order::{Nchw, Nhwc};
        let d = [2, 3, 4, 5];
        let n: usize = d.iter().product();
        let (a, b): (Vec<f32>, Vec<f32>) = (0..n).map(|i| (i as f32, (i * i % 7) as f32)).unzip();
        let stored =
            |v: &[f32], o| layout::tensor(layout::reorder(v, d, Nchw, o).into_owned(), d, o);
        let want: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
        for (oa, ob) in [(Nchw, Nchw), (Nhwc, Nhwc), (Nhwc, Nchw), (Nchw, Nhwc)] {
            // Each operand alone, then with its buffer also held elsewhere (left unchanged).
            for shared in [None, Some(false), Some(true)] {
                let (ta, tb) = (stored(&a, oa), stored(&b, ob));
                let held = shared.map(|first| if first { ta.clone() } else { tb.clone() });
                let s = sum(ta, tb);
                let order = if oa == Nhwc || ob == Nhwc { Nhwc } else { Nchw };
                assert_eq!(layout::order_of(&s), Some(order), "{oa:?} {ob:?}");
                assert_eq!(
                    layout::stored_as(&s, Nchw).as_ref(),
                    &want[..],
                    "{oa:?} {ob:?}"
                );
                if let (Some(first), Some(h)) = (shared, held) {
                    let v = if first { &a } else { &b };
                    assert_eq!(
                        layout::stored_as(&h, Nchw).as_ref(),
                        &v[..],
                        "{oa:?} {ob:?}"
                    );
                }
            }
        }
    }
}
