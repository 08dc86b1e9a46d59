//! The affine ops every architecture is built from, and the [`Weights`] trait through which an
//! architecture asks a weights source for a layer's output.
//!
//! A plain [`ParamSet`] computes `y = x·Wᵀ + b` (dense, `W: [out, in]`) or a convolution; a
//! variational source computes the same ops with the local reparameterisation trick. Architectures
//! never see which one they are talking to.

pub mod norm;

use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::ops::ConvOptions;

use crate::backend;
use crate::params::ParamSet;

/// A source of layer outputs, keyed by layer name (`fc1`, `conv2`, ...).
pub trait Weights {
    /// Dense layer: `x: [batch, in]` → `[batch, out]`.
    fn dense(&self, layer: &str, x: Tensor<2>) -> Tensor<2>;
    /// `relu` of [`Weights::dense`]; sources that can fuse the two override it.
    fn dense_relu(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        relu(self.dense(layer, x))
    }
    /// 2-d convolution: `x: [batch, c_in, h, w]` → `[batch, c_out, h', w']`.
    fn conv2d(&self, layer: &str, x: Tensor<4>, options: ConvOptions<2>) -> Tensor<4>;
    /// Batch normalisation of `x: [batch, c]` ([`norm`]): eval mode (running statistics) for a
    /// plain parameter set, train mode for [`norm::TrainMode`].
    fn batch_norm(&self, layer: &str, x: Tensor<2>) -> Tensor<2>;
    /// [`Weights::batch_norm`] of a convolution's output `[batch, c, h, w]`, per channel.
    fn batch_norm2d(&self, layer: &str, x: Tensor<4>) -> Tensor<4>;
    /// Layer normalisation of `x: [batch, c]` ([`norm::layer_norm`]), the same in every mode.
    fn layer_norm(&self, layer: &str, x: Tensor<2>) -> Tensor<2>;
    /// A point parameter by its architecture name, e.g. a normalisation layer's `bn1.weight`
    /// (γ) or its running mean (a variational source answers with its mean `mu/bn1.weight`):
    /// what wrappers such as [`norm::TrainMode`] compute a layer from.
    fn param(&self, name: &str) -> Tensor<1>;
}

/// `x·Wᵀ + b` with `x: [batch, in]`, `W: [out, in]`, `b: [out]`.
pub fn dense(x: Tensor<2>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<2> {
    backend::dense(x, w, b, false)
}

/// `relu(x·Wᵀ + b)`, one op on the CPU backend (see [`backend::dense`]).
pub fn dense_relu(x: Tensor<2>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<2> {
    backend::dense(x, w, b, true)
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

impl ParamSet {
    /// The layer's bias, `None` for a layer without one (a layer followed by a normalisation).
    fn bias(&self, layer: &str) -> Option<Tensor<1>> {
        let name = bias_name(layer);
        self.layout().index_of(&name).ok().map(|_| self.get(&name))
    }
}

impl Weights for ParamSet {
    fn param(&self, name: &str) -> Tensor<1> {
        self.get(name)
    }

    fn dense(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        dense(x, self.get(&weight_name(layer)), self.bias(layer))
    }

    fn dense_relu(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        dense_relu(x, self.get(&weight_name(layer)), self.bias(layer))
    }

    fn conv2d(&self, layer: &str, x: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
        conv2d(x, self.get(&weight_name(layer)), self.bias(layer), options)
    }

    fn batch_norm(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        norm::batch_norm_eval(
            x,
            self.get(&weight_name(layer)),
            self.get(&bias_name(layer)),
            self.get(&norm::running_mean_name(layer)),
            self.get(&norm::running_var_name(layer)),
        )
    }

    fn layer_norm(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        norm::layer_norm(
            x,
            self.get(&weight_name(layer)),
            self.get(&bias_name(layer)),
        )
    }

    fn batch_norm2d(&self, layer: &str, x: Tensor<4>) -> Tensor<4> {
        norm::batch_norm_eval_4d(
            x,
            self.get(&weight_name(layer)),
            self.get(&bias_name(layer)),
            self.get(&norm::running_mean_name(layer)),
            self.get(&norm::running_var_name(layer)),
        )
    }
}
