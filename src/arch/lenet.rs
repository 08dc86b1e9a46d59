//! LeNet-5 in the Caffe variant used by the sparse variational dropout paper (Molchanov et al.
//! 2017): conv 5×5×20 → ReLU → max-pool 2 → conv 5×5×50 → ReLU → max-pool 2 → fc 500 → ReLU →
//! fc 10. Layers `conv1, conv2, fc1, fc2`. Works for any `c×h×w` input large enough.

use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};

use crate::backend;
use crate::error::{Error, Result};
use crate::params::{Entry, Layout, Role};
use crate::permute::{Axis, PermSpec};
use crate::weights::{Weights, bias_name, weight_name};

/// Spatial size after the two conv+pool stages, if the input is large enough.
pub fn feature_hw(h: usize, w: usize) -> Option<(usize, usize)> {
    let stage = |s: usize| s.checked_sub(4).map(|s| s / 2).filter(|&s| s > 0);
    Some((stage(stage(h)?)?, stage(stage(w)?)?))
}

/// Number of inputs of `fc1` (flattened conv features, channel-major).
pub fn fc1_inputs(input: [usize; 3]) -> usize {
    let (h, w) = feature_hw(input[1], input[2]).expect("validated input size");
    50 * h * w
}

fn push(out: &mut Vec<Entry>, layer: &str, wshape: Vec<usize>) {
    let o = wshape[0];
    out.push(Entry {
        name: weight_name(layer),
        shape: wshape,
        role: Role::Weight,
    });
    out.push(Entry {
        name: bias_name(layer),
        shape: vec![o],
        role: Role::Bias,
    });
}

/// Layout entries for an input of shape `[c, h, w]`.
pub fn entries(input: [usize; 3], classes: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    push(&mut out, "conv1", vec![20, input[0], 5, 5]);
    push(&mut out, "conv2", vec![50, 20, 5, 5]);
    push(&mut out, "fc1", vec![500, fc1_inputs(input)]);
    push(&mut out, "fc2", vec![classes, 500]);
    out
}

/// Forward pass on flattened images `x: [batch, c·h·w]`; `observe` sees each hidden layer's
/// post-ReLU activations as `[samples, units]` (conv: every spatial position is a sample).
pub fn forward<W: Weights + ?Sized>(
    input: [usize; 3],
    w: &W,
    x: Tensor<2>,
    mut observe: Option<super::Observer<'_>>,
) -> Tensor<2> {
    let b = x.dims()[0];
    let conv = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let pool = MaxPoolOptions::new([2, 2]);
    let mut h: Tensor<4> = x.reshape([b, input[0], input[1], input[2]]);
    for layer in ["conv1", "conv2"] {
        h = relu(w.conv2d(layer, h, conv.clone()));
        let [_, c, hh, ww] = h.dims();
        // Only when observed: the channels-last copy costs as much as a pooling layer.
        if let Some(observe) = observe.as_deref_mut() {
            observe(layer, h.clone().swap_dims(1, 3).reshape([b * hh * ww, c]));
        }
        h = backend::max_pool2d(h, pool.clone());
    }
    let flat: Tensor<2> = h.flatten(1, 3);
    let h = w.dense_relu("fc1", flat);
    if let Some(observe) = observe {
        observe("fc1", h.clone());
    }
    w.dense("fc2", h)
}

/// Permutation spec: the output channels of `conv1` and `conv2` and the units of `fc1`. A conv
/// permutation acts on the output axis of its weight, on its bias and on the input-channel axis
/// of the next conv; conv2's channels reach `fc1` through the channel-major flattening, so they
/// permute `fc1.weight`'s input axis in blocks of `h·w` spatial positions.
pub fn perm_spec(input: [usize; 3], layout: &Layout) -> Result<PermSpec> {
    let (h, w) = feature_hw(input[1], input[2])
        .ok_or_else(|| Error::InvalidSpec(format!("LeNet-5 input {input:?} is too small")))?;
    let f = Axis::Fixed;
    PermSpec::builder()
        .perm("conv1", 20)
        .perm("conv2", 50)
        .perm("fc1", 500)
        .param(
            "conv1.weight",
            vec![Axis::by("conv1"), f.clone(), f.clone(), f.clone()],
        )
        .param("conv1.bias", vec![Axis::by("conv1")])
        .param(
            "conv2.weight",
            vec![Axis::by("conv2"), Axis::by("conv1"), f.clone(), f.clone()],
        )
        .param("conv2.bias", vec![Axis::by("conv2")])
        .param(
            "fc1.weight",
            vec![Axis::by("fc1"), Axis::blocks("conv2", h * w)],
        )
        .param("fc1.bias", vec![Axis::by("fc1")])
        .param("fc2.weight", vec![f.clone(), Axis::by("fc1")])
        .param("fc2.bias", vec![f])
        .build(layout)
}
