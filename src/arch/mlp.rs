//! Multi-layer perceptron `d_0 → d_1 → … → d_L` with ReLU between layers (LeNet-300-100 is
//! `784-300-100-10`). Layers are named `fc1 … fcL`; weights `[d_i, d_{i−1}]`. With batch
//! normalisation (`:norm=bn`, the MLP-BN of Jordan et al. 2023) every hidden block is
//! `fc_i` without bias → `bn_i` (γ, β, running mean and variance `[d_i]`) → ReLU; the output
//! layer keeps its bias. With layer normalisation (`:norm=ln`, the alternative Git Re-Basin
//! uses) the blocks are `fc_i` without bias → `ln_i` (γ, β) → ReLU.

use burn::tensor::Tensor;

use burn::tensor::activation::relu;

use super::Norm;
use crate::error::Result;
use crate::params::{Entry, Layout, Role};
use crate::permute::{Axis, PermSpec};
use crate::weights::norm::{running_mean_name, running_var_name};
use crate::weights::{Weights, bias_name, weight_name};

/// Layout entries for the given widths.
pub fn entries(widths: &[usize], norm: Norm) -> Vec<Entry> {
    let n = widths.len() - 1;
    let mut out = Vec::new();
    let mut push =
        |name: String, shape: Vec<usize>, role: Role| out.push(Entry { name, shape, role });
    for (i, w) in widths.windows(2).enumerate() {
        let layer = format!("fc{}", i + 1);
        push(weight_name(&layer), vec![w[1], w[0]], Role::Weight);
        let hidden = i + 1 < n;
        if norm == Norm::Bn && hidden {
            let bn = format!("bn{}", i + 1);
            push(weight_name(&bn), vec![w[1]], Role::NormScale);
            push(bias_name(&bn), vec![w[1]], Role::NormShift);
            push(running_mean_name(&bn), vec![w[1]], Role::RunningMean);
            push(running_var_name(&bn), vec![w[1]], Role::RunningVar);
        } else if norm == Norm::Ln && hidden {
            let ln = format!("ln{}", i + 1);
            push(weight_name(&ln), vec![w[1]], Role::NormScale);
            push(bias_name(&ln), vec![w[1]], Role::NormShift);
        } else {
            push(bias_name(&layer), vec![w[1]], Role::Bias);
        }
    }
    out
}

/// Forward pass; `observe`, if given, sees each hidden layer's post-ReLU activations
/// `[batch, units]`.
pub fn forward<W: Weights + ?Sized>(
    widths: &[usize],
    norm: Norm,
    w: &W,
    x: Tensor<2>,
    mut observe: Option<super::Observer<'_>>,
) -> Tensor<2> {
    let n = widths.len() - 1;
    let mut h = x;
    for i in 1..=n {
        let layer = format!("fc{i}");
        if i < n && norm != Norm::None {
            let z = w.dense(&layer, h);
            h = relu(match norm {
                Norm::Bn => w.batch_norm(&format!("bn{i}"), z),
                _ => w.layer_norm(&format!("ln{i}"), z),
            });
            if let Some(observe) = observe.as_deref_mut() {
                observe(&layer, h.clone());
            }
        } else if i < n {
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
/// axis of `fc_i.weight` and on `fc_i.bias` (or on all four tensors of `bn_i`), and on the input
/// axis of `fc(i+1).weight`; the output layer's units stay fixed (Git Re-Basin's MLP spec).
pub fn perm_spec(widths: &[usize], norm: Norm, layout: &Layout) -> Result<PermSpec> {
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
        b = b.param(&weight_name(&layer), vec![unit(i), unit(i - 1)]);
        if norm == Norm::Bn && i < n {
            let bn = format!("bn{i}");
            for name in [
                weight_name(&bn),
                bias_name(&bn),
                running_mean_name(&bn),
                running_var_name(&bn),
            ] {
                b = b.param(&name, vec![unit(i)]);
            }
        } else if norm == Norm::Ln && i < n {
            let ln = format!("ln{i}");
            for name in [weight_name(&ln), bias_name(&ln)] {
                b = b.param(&name, vec![unit(i)]);
            }
        } else {
            b = b.param(&bias_name(&layer), vec![unit(i)]);
        }
    }
    b.build(layout)
}
