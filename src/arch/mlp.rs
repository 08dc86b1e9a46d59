//! Multi-layer perceptron `d_0 → d_1 → … → d_L` with ReLU between layers (LeNet-300-100 is
//! `784-300-100-10`). Layers are named `fc1 … fcL`; weights `[d_i, d_{i−1}]`.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::params::{Entry, Layout, Role};
use crate::permute::{Axis, PermSpec};
use crate::weights::{Weights, bias_name, weight_name};

/// Layout entries for the given widths.
pub fn entries(widths: &[usize]) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, w) in widths.windows(2).enumerate() {
        let layer = format!("fc{}", i + 1);
        out.push(Entry {
            name: weight_name(&layer),
            shape: vec![w[1], w[0]],
            role: Role::Weight,
        });
        out.push(Entry {
            name: bias_name(&layer),
            shape: vec![w[1]],
            role: Role::Bias,
        });
    }
    out
}

/// Forward pass; `observe`, if given, sees each hidden layer's post-ReLU activations
/// `[batch, units]`.
pub fn forward<W: Weights + ?Sized>(
    widths: &[usize],
    w: &W,
    x: Tensor<2>,
    mut observe: Option<super::Observer<'_>>,
) -> Tensor<2> {
    let n = widths.len() - 1;
    let mut h = x;
    for i in 1..=n {
        let layer = format!("fc{i}");
        if i < n {
            h = w.dense_relu(&layer, h);
            if let Some(observe) = observe.as_deref_mut() {
                observe(&layer, h.clone());
            }
        } else {
            h = w.dense(&layer, h);
        }
    }
    h
}

/// Permutation spec: one permutation per hidden layer `fc1 … fc(L−1)`, acting on the output
/// axis of `fc_i.weight` and on `fc_i.bias`, and on the input axis of `fc(i+1).weight`; the
/// output layer's units stay fixed (Git Re-Basin's MLP spec).
pub fn perm_spec(widths: &[usize], layout: &Layout) -> Result<PermSpec> {
    let n = widths.len() - 1;
    let mut b = PermSpec::builder();
    for (i, &w) in widths.iter().enumerate().take(n).skip(1) {
        b = b.perm(&format!("fc{i}"), w);
    }
    let unit = |i: usize| match i {
        i if i >= 1 && i < n => Axis::by(&format!("fc{i}")),
        _ => Axis::Fixed,
    };
    for i in 1..=n {
        let layer = format!("fc{i}");
        b = b
            .param(&weight_name(&layer), vec![unit(i), unit(i - 1)])
            .param(&bias_name(&layer), vec![unit(i)]);
    }
    b.build(layout)
}
