//! The affine ops every architecture is built from, and the [`Weights`] trait through which an
//! architecture asks a weights source for a layer's output.
//!
//! A plain [`ParamSet`] computes `y = x·Wᵀ + b` (dense, `W: [out, in]`) or a convolution; a
//! variational source computes the same ops with the local reparameterisation trick. Architectures
//! never see which one they are talking to.

use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;

use crate::backend;
use crate::params::ParamSet;

/// A source of layer outputs, keyed by layer name (`fc1`, `conv2`, ...).
pub trait Weights {
    /// Dense layer: `x: [batch, in]` → `[batch, out]`.
    fn dense(&self, layer: &str, x: Tensor<2>) -> Tensor<2>;
    /// 2-d convolution: `x: [batch, c_in, h, w]` → `[batch, c_out, h', w']`.
    fn conv2d(&self, layer: &str, x: Tensor<4>, options: ConvOptions<2>) -> Tensor<4>;
}

/// `x·Wᵀ + b` with `x: [batch, in]`, `W: [out, in]`, `b: [out]`.
///
/// When `W` is tracked by autodiff it is computed as `(W·xᵀ)ᵀ`: the backward pass then produces
/// `∂L/∂W = gᵀ·x` directly in `W`'s own `[out, in]` layout, whereas `x·(Wᵀ)` yields a transposed
/// gradient that costs a full copy of the weight matrix to flatten (measured: ~12% of an MLP
/// train step on burn flex). Otherwise `x·Wᵀ`, whose output is contiguous (elementwise ops on
/// a transposed activation take flex's slow strided path).
pub fn dense(x: Tensor<2>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<2> {
    let y = if w.is_tracked() {
        w.matmul(x.transpose()).transpose()
    } else {
        x.matmul(w.transpose())
    };
    match b {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    }
}

/// Convolution with `W: [out, in, kh, kw]`, `b: [out]`.
pub fn conv2d(
    x: Tensor<4>,
    w: Tensor<4>,
    b: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    // The bias is a broadcast add, whose gradient is a plain reduction (burn's own conv2d bias
    // gradient swapped the batch and channel axes of the whole output gradient and copied it,
    // ≈ 15% of a LeNet-5 train step on flex; GPU backends still use burn's conv2d).
    let y = backend::conv2d(x, w, options);
    match b {
        Some(b) => {
            let c = b.dims()[0];
            y + b.reshape([1, c, 1, 1])
        }
        None => y,
    }
}

/// Name of a layer's weight tensor.
pub fn weight_name(layer: &str) -> String {
    format!("{layer}.weight")
}

/// Name of a layer's bias tensor.
pub fn bias_name(layer: &str) -> String {
    format!("{layer}.bias")
}

impl Weights for ParamSet {
    fn dense(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        dense(
            x,
            self.get(&weight_name(layer)),
            Some(self.get(&bias_name(layer))),
        )
    }

    fn conv2d(&self, layer: &str, x: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
        conv2d(
            x,
            self.get(&weight_name(layer)),
            Some(self.get(&bias_name(layer))),
            options,
        )
    }
}
