//! LeNet-5 in the Caffe variant used by the sparse variational dropout paper (Molchanov et al.
//! 2017): conv 5×5×20 → ReLU → max-pool 2 → conv 5×5×50 → ReLU → max-pool 2 → fc 500 → ReLU →
//! fc 10. Layers `conv1, conv2, fc1, fc2`. Works for any `c×h×w` input large enough. With
//! BatchNorm (`lenet5:norm=bn`) `conv1`, `conv2` and `fc1` lose their biases and are followed by
//! `bn1`, `bn2` and `bn3` before their ReLUs.

use burn::tensor::Tensor;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};

use super::Norm;
use crate::backend;
use crate::error::{Error, Result};
use crate::params::{Entry, Layout, Role};
use crate::permute::spec::SpecBuilder;
use crate::permute::{Axis, PermSpec};
use crate::weights::norm::{running_mean_name, running_var_name};
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

/// The hidden layers and their normalisation layers (with `norm = Bn`).
const HIDDEN: [(&str, &str); 3] = [("conv1", "bn1"), ("conv2", "bn2"), ("fc1", "bn3")];

/// A layer's weight and, without a normalisation after it (`bn`), its bias; with one, the
/// normalisation's γ, β and running statistics.
fn push(out: &mut Vec<Entry>, layer: &str, wshape: Vec<usize>, bn: Option<&str>) {
    let o = wshape[0];
    let mut add =
        |name: String, shape: Vec<usize>, role: Role| out.push(Entry { name, shape, role });
    add(weight_name(layer), wshape, Role::Weight);
    match bn {
        None => add(bias_name(layer), vec![o], Role::Bias),
        Some(bn) => {
            add(weight_name(bn), vec![o], Role::NormScale);
            add(bias_name(bn), vec![o], Role::NormShift);
            add(running_mean_name(bn), vec![o], Role::RunningMean);
            add(running_var_name(bn), vec![o], Role::RunningVar);
        }
    }
}

/// The normalisation layer after `layer`, if any.
fn bn_of(layer: &str, norm: Norm) -> Option<&'static str> {
    (norm == Norm::Bn)
        .then(|| HIDDEN.iter().find(|(l, _)| *l == layer).map(|(_, b)| *b))
        .flatten()
}

/// Layout entries for an input of shape `[c, h, w]`.
pub fn entries(input: [usize; 3], classes: usize, norm: Norm) -> Vec<Entry> {
    let mut out = Vec::new();
    push(
        &mut out,
        "conv1",
        vec![20, input[0], 5, 5],
        bn_of("conv1", norm),
    );
    push(&mut out, "conv2", vec![50, 20, 5, 5], bn_of("conv2", norm));
    push(
        &mut out,
        "fc1",
        vec![500, fc1_inputs(input)],
        bn_of("fc1", norm),
    );
    push(&mut out, "fc2", vec![classes, 500], None);
    out
}

/// Forward pass on flattened images `x: [batch, c·h·w]`; `observe` sees each hidden layer's
/// post-ReLU activations as `[samples, units]` (conv: every spatial position is a sample).
pub fn forward<W: Weights + ?Sized>(
    input: [usize; 3],
    norm: Norm,
    w: &W,
    x: Tensor<2>,
    mut observe: Option<super::Observer<'_>>,
) -> Tensor<2> {
    let b = x.dims()[0];
    let conv = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let pool = MaxPoolOptions::new([2, 2]);
    let mut h: Tensor<4> = x.reshape([b, input[0], input[1], input[2]]);
    for layer in ["conv1", "conv2"] {
        let z = w.conv2d(layer, h, conv.clone());
        h = backend::relu(match bn_of(layer, norm) {
            Some(bn) => w.batch_norm2d(bn, z),
            None => z,
        });
        let [_, c, hh, ww] = h.dims();
        // Only when observed: the channels-last copy costs as much as a pooling layer.
        if let Some(observe) = observe.as_deref_mut() {
            observe(layer, h.clone().swap_dims(1, 3).reshape([b * hh * ww, c]));
        }
        h = backend::max_pool2d(h, pool.clone());
    }
    let flat: Tensor<2> = h.flatten(1, 3);
    let h = match bn_of("fc1", norm) {
        Some(bn) => backend::relu(w.batch_norm(bn, w.dense("fc1", flat))),
        None => w.dense_relu("fc1", flat),
    };
    if let Some(observe) = observe {
        observe("fc1", h.clone());
    }
    w.dense("fc2", h)
}

/// Permutation spec: the output channels of `conv1` and `conv2` and the units of `fc1`. A conv
/// permutation acts on the output axis of its weight, on its bias and on the input-channel axis
/// of the next conv; conv2's channels reach `fc1` through the channel-major flattening, so they
/// permute `fc1.weight`'s input axis in blocks of `h·w` spatial positions.
pub fn perm_spec(input: [usize; 3], norm: Norm, layout: &Layout) -> Result<PermSpec> {
    let (h, w) = feature_hw(input[1], input[2])
        .ok_or_else(|| Error::InvalidSpec(format!("LeNet-5 input {input:?} is too small")))?;
    let f = Axis::Fixed;
    // A hidden layer's bias, or its normalisation's γ, β and running statistics, move with its
    // units.
    let with_units = |b: SpecBuilder, layer: &str| match bn_of(layer, norm) {
        None => b.param(&bias_name(layer), vec![Axis::by(layer)]),
        Some(bn) => [
            weight_name(bn),
            bias_name(bn),
            running_mean_name(bn),
            running_var_name(bn),
        ]
        .iter()
        .fold(b, |b, n| b.param(n, vec![Axis::by(layer)])),
    };
    let b = PermSpec::builder()
        .perm("conv1", 20)
        .perm("conv2", 50)
        .perm("fc1", 500)
        .param(
            "conv1.weight",
            vec![Axis::by("conv1"), f.clone(), f.clone(), f.clone()],
        );
    let b = with_units(b, "conv1").param(
        "conv2.weight",
        vec![Axis::by("conv2"), Axis::by("conv1"), f.clone(), f.clone()],
    );
    let b = with_units(b, "conv2").param(
        "fc1.weight",
        vec![Axis::by("fc1"), Axis::blocks("conv2", h * w)],
    );
    with_units(b, "fc1")
        .param("fc2.weight", vec![f.clone(), Axis::by("fc1")])
        .param("fc2.bias", vec![f])
        .build(layout)
}
