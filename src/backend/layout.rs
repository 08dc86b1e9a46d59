//! The memory order of host feature maps `[n, c, h, w]`: row-major, or channels innermost
//! (`[n][h][w][c]` in memory, PyTorch's "channels last"), which the 3×3 convolutions write and
//! read without transposing (`conv/winograd.rs`), and batch normalisation and pooling keep.
//!
//! A channels-last map is an ordinary burn tensor of shape `[n, c, h, w]` whose strides are
//! `[h·w·c, 1, w·c, c]`: every burn op reads it correctly, and the host kernels of this module
//! read it in place. Any other layout is copied to row-major first.

use std::borrow::Cow;

use burn::backend::TensorMetadata;
use burn::tensor::{DType, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// How the values of a feature map `[n, c, h, w]` are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Row-major `[n][c][h][w]`.
    Nchw,
    /// Channels innermost, `[n][h][w][c]`.
    Nhwc,
}

/// The dimensions `[n, c, h, w]` of a 4-d tensor.
pub fn dims4(t: &FlexTensor) -> [usize; 4] {
    t.shape().dims::<4>()
}

/// How an `f32` tensor is stored, if row-major (possibly at an offset) or, for a 4-d tensor,
/// channels last from the start of its buffer; `None` for another layout or dtype.
pub fn order_of(t: &FlexTensor) -> Option<Order> {
    if t.dtype() != DType::F32 {
        return None;
    }
    if t.layout().is_contiguous() {
        return Some(Order::Nchw);
    }
    if t.shape().num_dims() != 4 {
        return None;
    }
    let [n, c, h, w] = dims4(t);
    let l = t.layout();
    let want = [h * w * c, 1, w * c, c].map(|s| s as isize);
    (l.start_offset() == 0 && l.strides() == want && t.storage::<f32>().len() >= n * c * h * w)
        .then_some(Order::Nhwc)
}

/// `t` back if its values can be overwritten in place in `order`: `t` is their only owner and
/// stores exactly them, from the start of its buffer, in `order`; else `Err(t)`.
pub fn writable(t: FlexTensor, order: Order) -> Result<FlexTensor, FlexTensor> {
    let n = t.layout().num_elements();
    let fits = order_of(&t) == Some(order)
        && t.layout().start_offset() == 0
        && t.storage::<f32>().len() == n
        && t.is_unique();
    if fits { Ok(t) } else { Err(t) }
}

/// An `f32` tensor's values in the order they are stored, if that is row-major or channels
/// last (no copy, see [`order_of`]); otherwise copied to row-major.
pub fn stored(t: &FlexTensor) -> (Cow<'_, [f32]>, Order) {
    match order_of(t) {
        Some(Order::Nchw) => (super::host(t), Order::Nchw),
        Some(Order::Nhwc) => {
            let len = t.layout().num_elements();
            (Cow::Borrowed(&t.storage::<f32>()[..len]), Order::Nhwc)
        }
        None => (super::host(t), Order::Nchw),
    }
}

/// A tensor's values stored in `order` (a copy only if the tensor is stored otherwise; then it
/// is a 4-d feature map).
pub fn stored_as(t: &FlexTensor, order: Order) -> Cow<'_, [f32]> {
    let (v, from) = stored(t);
    if from == order {
        return v;
    }
    // `reorder` borrows `v` back when the two orders store the same sequence.
    let moved = match reorder(&v, dims4(t), from, order) {
        Cow::Owned(o) => Some(o),
        Cow::Borrowed(_) => None,
    };
    moved.map_or(v, Cow::Owned)
}

/// A tensor `[n, c, h, w]` over values stored in `order`.
pub fn tensor(values: Vec<f32>, [n, c, h, w]: [usize; 4], order: Order) -> FlexTensor {
    match order {
        Order::Nchw => FlexTensor::from_data(TensorData::new(values, [n, c, h, w])),
        Order::Nhwc => {
            let t = FlexTensor::from_data(TensorData::new(values, [n, h, w, c]));
            let l = t.layout().permute(&[0, 3, 1, 2]);
            t.with_layout(l)
        }
    }
}

/// A tensor of the shape of `x` over values `v` stored in `order` (channels last only for a
/// 4-d `x`).
pub fn like(x: &FlexTensor, order: Order, v: Vec<f32>) -> FlexTensor {
    match order {
        Order::Nchw => FlexTensor::from_data(TensorData::new(v, x.shape().to_vec())),
        Order::Nhwc => tensor(v, dims4(x), order),
    }
}

/// `v` (a map `[n, c, h, w]` stored in `from`) stored in `to` (a copy only if they differ).
pub fn reorder(v: &[f32], [_, c, h, w]: [usize; 4], from: Order, to: Order) -> Cow<'_, [f32]> {
    if from == to || c == 1 || h * w == 1 {
        return Cow::Borrowed(v);
    }
    let plane = h * w;
    let mut out = vec![0.0f32; v.len()];
    // Per sample a `[rows][cols]` → `[cols][rows]` transpose, in 8×8 blocks.
    let (rows, cols) = match from {
        Order::Nchw => (c, plane),
        Order::Nhwc => (plane, c),
    };
    const B: usize = 8;
    out.par_chunks_mut(c * plane)
        .zip(v.par_chunks(c * plane))
        .for_each(|(dst, src)| {
            for r0 in (0..rows).step_by(B) {
                for c0 in (0..cols).step_by(B) {
                    for r in r0..(r0 + B).min(rows) {
                        for q in c0..(c0 + B).min(cols) {
                            dst[q * rows + r] = src[r * cols + q];
                        }
                    }
                }
            }
        });
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::backend::ops::FloatTensorOps;

    use super::*;

    /// A channels-last tensor reads back as the same logical values, `stored` finds its order,
    /// and `reorder` converts between the two orders both ways.
    #[test]
    fn channels_last_round_trip() {
        let d = [2, 3, 4, 5];
        let nchw: Vec<f32> = (0..120).map(|i| i as f32).collect();
        let nhwc = reorder(&nchw, d, Order::Nchw, Order::Nhwc).into_owned();
        // Element (n, c, h, w) = n·60 + c·20 + h·5 + w sits at ((n·4 + h)·5 + w)·3 + c.
        assert_eq!(
            nhwc[((4 + 2) * 5 + 3) * 3 + 1],
            (60 + 20 + 2 * 5 + 3) as f32
        );
        let t = tensor(nhwc.clone(), d, Order::Nhwc);
        let (v, order) = stored(&t);
        assert_eq!((&*v, order), (&nhwc[..], Order::Nhwc));
        let logical = t.clone().into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(logical, nchw);
        assert_eq!(
            reorder(&nhwc, d, Order::Nhwc, Order::Nchw).into_owned(),
            nchw
        );
        // Another permutation (here [n, c, w, h] transposed) is copied to row-major.
        let other = Flex::float_swap_dims(tensor(nchw.clone(), d, Order::Nchw), 2, 3);
        let (v, order) = stored(&other);
        assert_eq!(order, Order::Nchw);
        assert_eq!(v.len(), 120);
        assert_eq!(v[1], nchw[5]);
    }
}
