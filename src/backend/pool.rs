//! 2-d max pooling (no padding, no dilation, floor mode) on the host, with its backward pass,
//! plugged into burn through a backend extension (`HostMaxPool`) for the flex backend and its
//! autodiff wrapper.
//!
//! `y[n, c, i, j] = max_{a < kh, b < kw} x[n, c, i·sh + a, j·sw + b]`; the backward pass sends
//! each output gradient to the first maximal input of its window (as PyTorch and burn do).
//! Why: flex computes 2-d pooling through its 3-d kernel with an index tensor, ≈ 13% of a
//! LeNet-5 train step for a few million comparisons.

use std::sync::Arc;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{DType, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::layout::{self, Order};

/// Shapes of one pooling: input `[n, c, h, w]`, output `[n, c, oh, ow]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    nc: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    s: [usize; 2],
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(x: [usize; 4], k: [usize; 2], s: [usize; 2]) -> Option<Self> {
        if k.contains(&0) || s.contains(&0) || x[2] < k[0] || x[3] < k[1] {
            return None;
        }
        Some(Self {
            nc: x[0] * x[1],
            h: x[2],
            w: x[3],
            k,
            s,
            oh: (x[2] - k[0]) / s[0] + 1,
            ow: (x[3] - k[1]) / s[1] + 1,
        })
    }
}

/// Pools one plane; `arg` (if given) receives each output's input offset within the plane.
fn pool_plane(g: &Geometry, x: &[f32], y: &mut [f32], arg: Option<&mut [u32]>) {
    if g.k == [2, 2] && g.s == [2, 2] {
        return pool_plane_2x2(g, x, y, arg);
    }
    pool_plane_any(g, x, y, arg)
}

/// All ones if `b` is the first maximum of `a, b` (larger, or a NaN after a number), else zero.
#[inline(always)]
fn takes_second(a: f32, b: f32) -> u32 {
    (u32::from(b > a) | (u32::from(b.is_nan()) & u32::from(!a.is_nan()))).wrapping_neg()
}

/// `b` where `mask` is all ones, else `a` (bitwise, so that loops over it vectorise).
#[inline(always)]
fn pick_f32(mask: u32, a: f32, b: f32) -> f32 {
    f32::from_bits((b.to_bits() & mask) | (a.to_bits() & !mask))
}

/// The 2×2, stride-2 case: each row's pair, then the two rows (row 0 first), which picks the
/// same candidate as the scan in order; bitwise selects over whole rows, so that it vectorises.
fn pool_plane_2x2(g: &Geometry, x: &[f32], y: &mut [f32], mut arg: Option<&mut [u32]>) {
    let ow = g.ow;
    for i in 0..g.oh {
        let r0 = &x[2 * i * g.w..][..2 * ow];
        let r1 = &x[(2 * i + 1) * g.w..][..2 * ow];
        let yr = &mut y[i * ow..(i + 1) * ow];
        let base = (2 * i * g.w) as u32;
        let w = g.w as u32;
        match arg.as_deref_mut() {
            None => {
                for ((out, p0), p1) in yr
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    let m0 = pick_f32(takes_second(p0[0], p0[1]), p0[0], p0[1]);
                    let m1 = pick_f32(takes_second(p1[0], p1[1]), p1[0], p1[1]);
                    *out = pick_f32(takes_second(m0, m1), m0, m1);
                }
            }
            Some(arg) => {
                let ar = &mut arg[i * ow..(i + 1) * ow];
                for (j, ((out, at), (p0, p1))) in yr
                    .iter_mut()
                    .zip(ar.iter_mut())
                    .zip(r0.chunks_exact(2).zip(r1.chunks_exact(2)))
                    .enumerate()
                {
                    let (t0, t1) = (takes_second(p0[0], p0[1]), takes_second(p1[0], p1[1]));
                    let m0 = pick_f32(t0, p0[0], p0[1]);
                    let m1 = pick_f32(t1, p1[0], p1[1]);
                    let t = takes_second(m0, m1);
                    *out = pick_f32(t, m0, m1);
                    // Offset: row (0 or w), then column 2j + (0 or 1) of the chosen row.
                    let col = (t1 & t) | (t0 & !t);
                    *at = base + 2 * j as u32 + (col & 1) + (w & t);
                }
            }
        }
    }
}

/// Any kernel and stride: the window's candidates in order, the running maximum kept by bitwise
/// selects (a data-dependent branch per comparison, mispredicted half the time, is several
/// times slower).
fn pool_plane_any(g: &Geometry, x: &[f32], y: &mut [f32], mut arg: Option<&mut [u32]>) {
    for i in 0..g.oh {
        for j in 0..g.ow {
            let first = i * g.s[0] * g.w + j * g.s[1];
            let (mut m, mut t) = (x[first], first as u32);
            for a in 0..g.k[0] {
                let row = first + a * g.w;
                for (b, &v) in x[row..row + g.k[1]].iter().enumerate() {
                    let take = takes_second(m, v);
                    m = pick_f32(take, m, v);
                    t = (((row + b) as u32) & take) | (t & !take);
                }
            }
            y[i * g.ow + j] = m;
            if let Some(arg) = arg.as_deref_mut() {
                arg[i * g.ow + j] = t;
            }
        }
    }
}

/// One channels-last sample (`x: [h][w][c]` → `y: [oh][ow][c]`), each output's window scanned
/// in order with the channels as vector lanes; `arg` (if given) receives each output's input
/// offset within its plane.
#[multiversion::multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn pool_sample_nhwc(g: &Geometry, c: usize, x: &[f32], y: &mut [f32], mut arg: Option<&mut [u32]>) {
    for i in 0..g.oh {
        for j in 0..g.ow {
            let at = (i * g.ow + j) * c;
            let first = i * g.s[0] * g.w + j * g.s[1];
            let m = &mut y[at..at + c];
            m.copy_from_slice(&x[first * c..][..c]);
            let mut t = arg.as_deref_mut().map(|a| &mut a[at..at + c]);
            if let Some(t) = t.as_deref_mut() {
                t.fill(first as u32);
            }
            for a in 0..g.k[0] {
                for b in 0..g.k[1] {
                    if a + b == 0 {
                        continue;
                    }
                    let p = first + a * g.w + b;
                    let v = &x[p * c..][..c];
                    match t.as_deref_mut() {
                        None => {
                            for (m, &v) in m.iter_mut().zip(v) {
                                *m = pick_f32(takes_second(*m, v), *m, v);
                            }
                        }
                        Some(t) => {
                            for ((m, t), &v) in m.iter_mut().zip(t.iter_mut()).zip(v) {
                                let take = takes_second(*m, v);
                                *m = pick_f32(take, *m, v);
                                *t = (p as u32 & take) | (*t & !take);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Pooled values `[n·c·oh·ow]` stored in `order` (that of `x`) and, if asked, the input offset
/// of each within its plane.
fn forward_host(
    g: &Geometry,
    (x, order): (&[f32], Order),
    c: usize,
    with_arg: bool,
) -> (Vec<f32>, Vec<u32>) {
    let (plane, out) = (g.h * g.w, g.oh * g.ow);
    let mut y = vec![0.0f32; g.nc * out];
    let mut arg = vec![0u32; if with_arg { g.nc * out } else { 0 }];
    if order == Order::Nhwc {
        let xs = x.par_chunks(c * plane);
        if with_arg {
            y.par_chunks_mut(c * out)
                .zip(arg.par_chunks_mut(c * out))
                .zip(xs)
                .for_each(|((y, a), x)| pool_sample_nhwc(g, c, x, y, Some(a)));
        } else {
            y.par_chunks_mut(c * out)
                .zip(xs)
                .for_each(|(y, x)| pool_sample_nhwc(g, c, x, y, None));
        }
        return (y, arg);
    }
    if with_arg {
        y.par_chunks_mut(out)
            .zip(arg.par_chunks_mut(out))
            .zip(x.par_chunks(plane))
            .with_min_len(16)
            .for_each(|((y, a), x)| pool_plane(g, x, y, Some(a)));
    } else {
        y.par_chunks_mut(out)
            .zip(x.par_chunks(plane))
            .with_min_len(16)
            .for_each(|(y, x)| pool_plane(g, x, y, None));
    }
    (y, arg)
}

/// `∂L/∂x`: each output gradient added at its window's maximum (`arg`, `gy` and `∂L/∂x` stored
/// in `order`).
fn backward_host(g: &Geometry, order: Order, c: usize, arg: &[u32], gy: &[f32]) -> Vec<f32> {
    let (plane, out) = (g.h * g.w, g.oh * g.ow);
    let mut dx = vec![0.0f32; g.nc * plane];
    if order == Order::Nhwc {
        dx.par_chunks_mut(c * plane)
            .zip(arg.par_chunks(c * out).zip(gy.par_chunks(c * out)))
            .for_each(|(dx, (a, gy))| {
                for (at, gy) in a.chunks_exact(c).zip(gy.chunks_exact(c)) {
                    for (ch, (&p, &v)) in at.iter().zip(gy).enumerate() {
                        dx[p as usize * c + ch] += v;
                    }
                }
            });
        return dx;
    }
    dx.par_chunks_mut(plane)
        .zip(arg.par_chunks(out).zip(gy.par_chunks(out)))
        .with_min_len(16)
        .for_each(|(dx, (a, gy))| {
            for (&at, &v) in a.iter().zip(gy) {
                dx[at as usize] += v;
            }
        });
    dx
}

fn geometry(x: &FlexTensor, k: [usize; 2], s: [usize; 2]) -> Geometry {
    let d = x.shape().dims::<4>();
    Geometry::new(d, k, s).expect("checked by max_pool2d before dispatch")
}

/// Max pooling on the host (see the module docs). Only the flex backend and its autodiff
/// wrapper implement it; [`max_pool2d`] decides when it is used.
#[backend_extension(Flex, Autodiff)]
pub trait HostMaxPool: Backend {
    /// Max pooling with kernel `kernel` and stride `stride`, no padding, floor mode.
    fn host_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> FloatTensor<Self>;
}

fn pooled(g: &Geometry, x: &FlexTensor, y: Vec<f32>, order: Order) -> FlexTensor {
    let d = x.shape().dims::<4>();
    layout::tensor(y, [d[0], d[1], g.oh, g.ow], order)
}

impl HostMaxPool for Flex {
    fn host_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> FloatTensor<Self> {
        let g = geometry(&x, kernel, stride);
        let (v, order) = layout::stored(&x);
        let (y, _) = forward_host(&g, (&v, order), layout::dims4(&x)[1], false);
        pooled(&g, &x, y, order)
    }
}

/// The backward step keeps the argmax offsets and the input shape.
#[derive(Debug)]
struct HostMaxPoolBackward;

impl Backward<Flex, 1> for HostMaxPoolBackward {
    type State = (Arc<Vec<u32>>, [usize; 4], Geometry, Order);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let gy = grads.consume::<Flex>(&ops.node);
        let (arg, shape, g, order) = ops.state;
        if let Some(node) = node_x {
            let gv = layout::stored_as(&gy, order);
            let dx = backward_host(&g, order, shape[1], &arg, &gv);
            grads.register::<Flex>(node.id, layout::tensor(dx, shape, order));
        }
    }
}

impl<C: CheckpointStrategy> HostMaxPool for Autodiff<Flex, C> {
    fn host_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> FloatTensor<Self> {
        let g = geometry(x.primitive(), kernel, stride);
        let shape = x.primitive().shape().dims::<4>();
        match HostMaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (v, order) = layout::stored(x.primitive());
                let (y, arg) = forward_host(&g, (&v, order), shape[1], true);
                let y = pooled(&g, x.primitive(), y, order);
                prep.finish((Arc::new(arg), shape, g, order), y)
            }
            OpsKind::UnTracked(prep) => {
                let (v, order) = layout::stored(x.primitive());
                let (y, _) = forward_host(&g, (&v, order), shape[1], false);
                prep.finish(pooled(&g, x.primitive(), y, order))
            }
        }
    }
}

/// Max pooling through [`HostMaxPool`] when the options are ones it covers (no padding, no
/// dilation, floor mode, `f32`); otherwise burn's own `max_pool2d`.
pub fn max_pool2d(x: Tensor<4>, options: MaxPoolOptions<2>) -> Tensor<4> {
    let supported = options.padding == [(0, 0); 2]
        && options.dilation == [1, 1]
        && !options.ceil_mode
        && x.dtype() == DType::F32
        && Geometry::new(x.dims(), options.kernel_size, options.stride).is_some();
    if !supported {
        return burn::tensor::module::max_pool2d(x, options);
    }
    let y = <Dispatch as HostMaxPool>::host_max_pool2d(
        x.into_dispatch(),
        options.kernel_size,
        options.stride,
    );
    Tensor::from_dispatch(y)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Tensor, TensorData};

    use super::*;
    use crate::backend::{device, train_device, with_host};

    /// `(shape, kernel, stride)`: LeNet's 2×2/2, overlapping 3×3/2 with a ragged edge, 2×3/1.
    const CASES: [([usize; 4], [usize; 2], [usize; 2]); 3] = [
        ([3, 4, 8, 8], [2, 2], [2, 2]),
        ([2, 3, 9, 7], [3, 3], [2, 2]),
        ([2, 2, 5, 6], [2, 3], [1, 1]),
    ];

    fn input(case: usize, dev: &burn::tensor::Device) -> Tensor<4> {
        crate::backend::conv::tests::normal(CASES[case].0, 40 + case as u64, dev)
    }

    fn burns(x: Tensor<4>, k: [usize; 2], s: [usize; 2]) -> Tensor<4> {
        let mut o = MaxPoolOptions::new(k);
        o.stride = s;
        burn::tensor::module::max_pool2d(x, o)
    }

    fn ours(x: Tensor<4>, k: [usize; 2], s: [usize; 2]) -> Tensor<4> {
        let mut o = MaxPoolOptions::new(k);
        o.stride = s;
        max_pool2d(x, o)
    }

    #[test]
    fn values_and_gradients_equal_burns_pooling() {
        for (case, &(_, k, s)) in CASES.iter().enumerate() {
            let x = input(case, &device());
            let (a, b) = (ours(x.clone(), k, s), burns(x, k, s));
            assert_eq!(a.dims(), b.dims());
            assert_eq!(
                with_host(&a, <[f32]>::to_vec),
                with_host(&b, <[f32]>::to_vec)
            );
            let grad = |f: fn(Tensor<4>, [usize; 2], [usize; 2]) -> Tensor<4>| {
                let dev = train_device();
                let x = input(case, &dev).require_grad();
                let y = f(x.clone(), k, s);
                let r = Tensor::<4>::from_data(
                    TensorData::new(
                        (0..y.dims().iter().product::<usize>())
                            .map(|i| (i % 7) as f32 - 3.0)
                            .collect(),
                        y.dims(),
                    ),
                    &dev,
                );
                let g = (y * r).sum().backward();
                with_host(&x.grad(&g).expect("gradient"), <[f32]>::to_vec)
            };
            assert_eq!(grad(ours), grad(burns), "case {case}");
        }
    }

    /// Inputs stored channels last (a leaf `[n, h, w, c]` viewed as `[n, c, h, w]`), with many
    /// ties (values rounded to halves): the values and gradients of burn's pooling of the view.
    #[test]
    fn channels_last_inputs_equal_burns_pooling() {
        let dev = train_device();
        for (case, &(d, k, s)) in CASES.iter().enumerate() {
            let x = (input(case, &dev) * 2.0).round() / 2.0;
            let leaf = Tensor::<4>::from_data(x.permute([0, 2, 3, 1]).into_data(), &dev);
            let run = |f: fn(Tensor<4>, [usize; 2], [usize; 2]) -> Tensor<4>| {
                let x = leaf.clone().require_grad();
                let y = f(x.clone().permute([0, 3, 1, 2]), k, s);
                let r = crate::backend::conv::tests::normal(y.dims(), 9, &dev);
                let g = (y.clone() * r).sum().backward();
                let grad = with_host(&x.grad(&g).expect("gradient"), <[f32]>::to_vec);
                (with_host(&y, <[f32]>::to_vec), grad)
            };
            assert_eq!(run(ours), run(burns), "case {case} {d:?}");
        }
    }

    /// A tie sends the gradient to the first maximum of the window; a NaN propagates.
    #[test]
    fn ties_go_to_the_first_maximum_and_nan_propagates() {
        // [[1, 1, 0, NaN], [0, 1, 2, 3]]; 2×2 windows at stride 2 (the special case) and at
        // stride 1 (the general scan).
        let values = vec![1.0f32, 1.0, 0.0, f32::NAN, 0.0, 1.0, 2.0, 3.0];
        for (stride, want_y, want_dx) in [
            (
                2,
                vec![1.0, f32::NAN],
                vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            ),
            (
                1,
                vec![1.0, 2.0, f32::NAN],
                vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0],
            ),
        ] {
            let dev = train_device();
            let x = Tensor::<4>::from_data(TensorData::new(values.clone(), [1, 1, 2, 4]), &dev)
                .require_grad();
            let y = ours(x.clone(), [2, 2], [stride, stride]);
            let yv = with_host(&y, <[f32]>::to_vec);
            assert_eq!(yv.len(), want_y.len());
            for (a, b) in yv.iter().zip(&want_y) {
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "stride {stride}: {yv:?}"
                );
            }
            let g = y.sum().backward();
            assert_eq!(with_host(&x.grad(&g).unwrap(), <[f32]>::to_vec), want_dx);
        }
    }
}
