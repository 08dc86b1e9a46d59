//! ResNet-20 for CIFAR (He et al. 2016, §4.2): a 3×3 stem convolution, three stages of three
//! basic blocks with `16·W`, `32·W` and `64·W` channels (the first block of stages 2 and 3
//! halves the resolution with stride 2), global average pooling and one dense layer. A basic
//! block is `backend::relu(bn2(conv2(backend::relu(bn1(conv1(x))))) + s(x))`, `s` the identity or, where the
//! shape changes, a 1×1 convolution with BatchNorm (the projection shortcut). Spec:
//! `resnet20`, `resnet20:w=4`, `resnet20:in=1x28x28` (default input `3x32x32`).
//!
//! Names follow the PyTorch ports: `conv1`, `bn1`, `layer{k}.{j}.conv1|bn1|conv2|bn2`,
//! `layer{k}.{j}.shortcut.0` (convolution) and `.shortcut.1` (BatchNorm), `fc`.

use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;

use crate::backend;
use crate::error::{Error, Result};
use crate::params::{Entry, Layout, Role};
use crate::permute::{Axis, PermSpec};
use crate::weights::norm::{running_mean_name, running_var_name};
use crate::weights::{Weights, bias_name, weight_name};

/// A ResNet-20 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResNet {
    /// Width multiplier (channels `16·width`, `32·width`, `64·width`).
    pub width: usize,
    /// Input `[c, h, w]`.
    pub input: [usize; 3],
    /// Output classes.
    pub classes: usize,
}

/// Blocks per stage.
pub const BLOCKS: usize = 3;

impl ResNet {
    /// Channels of stage `k` (0-based).
    pub fn channels(&self, k: usize) -> usize {
        16 * self.width * (1 << k)
    }

    /// The spec string's options after `resnet20`.
    pub fn options(&self) -> String {
        let mut s = String::new();
        if self.width != 1 {
            s.push_str(&format!(":w={}", self.width));
        }
        if self.input != [3, 32, 32] {
            let [c, h, w] = self.input;
            s.push_str(&format!(":in={c}x{h}x{w}"));
        }
        s
    }

    /// Checks the configuration: a positive width and an input of at least 4×4.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let [c, h, w] = self.input;
        if self.width == 0 {
            return Err("the width multiplier w must be a positive integer".into());
        }
        if c == 0 || h < 4 || w < 4 {
            return Err(format!(
                "input {c}x{h}x{w}: ResNet-20 needs at least 4×4 pixels"
            ));
        }
        Ok(())
    }
}

fn block(k: usize, j: usize) -> String {
    format!("layer{}.{j}", k + 1)
}

fn has_projection(k: usize, j: usize) -> bool {
    k > 0 && j == 0
}

fn stream(k: usize) -> String {
    format!("stage{}", k + 1)
}

fn push_conv(out: &mut Vec<Entry>, layer: &str, shape: Vec<usize>) {
    out.push(Entry {
        name: weight_name(layer),
        shape,
        role: Role::Weight,
    });
}

fn push_bn(out: &mut Vec<Entry>, bn: &str, c: usize) {
    for (name, role) in [
        (weight_name(bn), Role::NormScale),
        (bias_name(bn), Role::NormShift),
        (running_mean_name(bn), Role::RunningMean),
        (running_var_name(bn), Role::RunningVar),
    ] {
        out.push(Entry {
            name,
            shape: vec![c],
            role,
        });
    }
}

/// Layout entries.
pub fn entries(r: &ResNet) -> Vec<Entry> {
    let mut out = Vec::new();
    let c0 = r.channels(0);
    push_conv(&mut out, "conv1", vec![c0, r.input[0], 3, 3]);
    push_bn(&mut out, "bn1", c0);
    let mut c_in = c0;
    for k in 0..3 {
        let c = r.channels(k);
        for j in 0..BLOCKS {
            let b = block(k, j);
            push_conv(&mut out, &format!("{b}.conv1"), vec![c, c_in, 3, 3]);
            push_bn(&mut out, &format!("{b}.bn1"), c);
            push_conv(&mut out, &format!("{b}.conv2"), vec![c, c, 3, 3]);
            push_bn(&mut out, &format!("{b}.bn2"), c);
            if has_projection(k, j) {
                push_conv(&mut out, &format!("{b}.shortcut.0"), vec![c, c_in, 1, 1]);
                push_bn(&mut out, &format!("{b}.shortcut.1"), c);
            }
            c_in = c;
        }
    }
    out.push(Entry {
        name: weight_name("fc"),
        shape: vec![r.classes, c_in],
        role: Role::Weight,
    });
    out.push(Entry {
        name: bias_name("fc"),
        shape: vec![r.classes],
        role: Role::Bias,
    });
    out
}

/// The permutations, in forward order: per stage the inner channels of its three blocks
/// (`layer{k}.{j}.conv1`), then its residual stream (`stage{k}`), shared by the stem (stage 1),
/// every block's output and the projection shortcut (Git Re-Basin's ResNet spec).
pub fn hidden_layers(_r: &ResNet) -> Vec<String> {
    let mut out = Vec::new();
    for k in 0..3 {
        for j in 0..BLOCKS {
            out.push(format!("{}.conv1", block(k, j)));
        }
        out.push(stream(k));
    }
    out
}

fn conv_bn<W: Weights + ?Sized>(
    w: &W,
    conv: &str,
    bn: &str,
    x: Tensor<4>,
    stride: usize,
    pad: usize,
) -> Tensor<4> {
    let opts = ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1);
    w.batch_norm2d(bn, w.conv2d(conv, x, opts))
}

/// Forward pass on flattened images `x: [batch, c·h·w]`; `observe` sees each block's inner
/// activations under `layer{k}.{j}.conv1` and each stage's output under `stage{k}`, as
/// `[samples, channels]` (every spatial position a sample).
pub fn forward<W: Weights + ?Sized>(
    r: &ResNet,
    w: &W,
    x: Tensor<2>,
    mut observe: Option<super::Observer<'_>>,
) -> Tensor<2> {
    let b = x.dims()[0];
    let [c, hh, ww] = r.input;
    let mut see = |name: &str, t: &Tensor<4>| {
        if let Some(observe) = observe.as_deref_mut() {
            let [_, c, sh, sw] = t.dims();
            observe(name, t.clone().swap_dims(1, 3).reshape([b * sh * sw, c]));
        }
    };
    let mut h = backend::relu(conv_bn(w, "conv1", "bn1", x.reshape([b, c, hh, ww]), 1, 1));
    for k in 0..3 {
        for j in 0..BLOCKS {
            let name = block(k, j);
            let stride = if has_projection(k, j) { 2 } else { 1 };
            let (into_branch, into_shortcut) = backend::fork(h);
            let inner = backend::relu(conv_bn(
                w,
                &format!("{name}.conv1"),
                &format!("{name}.bn1"),
                into_branch,
                stride,
                1,
            ));
            see(&format!("{name}.conv1"), &inner);
            let out = conv_bn(
                w,
                &format!("{name}.conv2"),
                &format!("{name}.bn2"),
                inner,
                1,
                1,
            );
            let shortcut = if has_projection(k, j) {
                conv_bn(
                    w,
                    &format!("{name}.shortcut.0"),
                    &format!("{name}.shortcut.1"),
                    into_shortcut,
                    2,
                    0,
                )
            } else {
                into_shortcut
            };
            h = backend::add_relu(out, shortcut);
        }
        see(&stream(k), &h);
    }
    let [_, c, _, _] = h.dims();
    let pooled: Tensor<2> = h.mean_dim(2).mean_dim(3).reshape([b, c]);
    w.dense("fc", pooled)
}

fn bn_params(b: PermSpecBuilder, bn: &str, axis: Axis) -> PermSpecBuilder {
    [
        weight_name(bn),
        bias_name(bn),
        running_mean_name(bn),
        running_var_name(bn),
    ]
    .iter()
    .fold(b, |b, name| b.param(name, vec![axis.clone()]))
}

type PermSpecBuilder = crate::permute::spec::SpecBuilder;

/// Permutation spec: [`hidden_layers`]' permutations acting on every convolution's output and
/// input channels, every BatchNorm's four tensors and the input axis of `fc`.
pub fn perm_spec(r: &ResNet, layout: &Layout) -> Result<PermSpec> {
    let f = Axis::Fixed;
    let mut b = PermSpec::builder();
    for k in 0..3 {
        for j in 0..BLOCKS {
            b = b.perm(&format!("{}.conv1", block(k, j)), r.channels(k));
        }
        b = b.perm(&stream(k), r.channels(k));
    }
    let s = |k: usize| Axis::by(&stream(k));
    b = b.param(
        &weight_name("conv1"),
        vec![s(0), f.clone(), f.clone(), f.clone()],
    );
    b = bn_params(b, "bn1", s(0));
    for k in 0..3 {
        for j in 0..BLOCKS {
            let name = block(k, j);
            let inner = Axis::by(&format!("{name}.conv1"));
            let input = if has_projection(k, j) { s(k - 1) } else { s(k) };
            b = b.param(
                &weight_name(&format!("{name}.conv1")),
                vec![inner.clone(), input.clone(), f.clone(), f.clone()],
            );
            b = bn_params(b, &format!("{name}.bn1"), inner.clone());
            b = b.param(
                &weight_name(&format!("{name}.conv2")),
                vec![s(k), inner, f.clone(), f.clone()],
            );
            b = bn_params(b, &format!("{name}.bn2"), s(k));
            if has_projection(k, j) {
                b = b.param(
                    &weight_name(&format!("{name}.shortcut.0")),
                    vec![s(k), input, f.clone(), f.clone()],
                );
                b = bn_params(b, &format!("{name}.shortcut.1"), s(k));
            }
        }
    }
    b.param(&weight_name("fc"), vec![f.clone(), s(2)])
        .param(&bias_name("fc"), vec![f])
        .build(layout)
        .map_err(|e| Error::InvalidSpec(format!("ResNet-20 permutation spec: {e}")))
}

/// Spatial size after a 3×3 convolution with stride 2 and padding 1.
fn down(s: usize) -> usize {
    (s - 1) / 2 + 1
}

/// Multiply-adds of one forward pass for one sample.
pub fn macs_per_sample(r: &ResNet) -> usize {
    let (mut h, mut w) = (r.input[1], r.input[2]);
    let mut macs = r.channels(0) * r.input[0] * 9 * h * w;
    let mut c_in = r.channels(0);
    for k in 0..3 {
        let c = r.channels(k);
        for j in 0..BLOCKS {
            if has_projection(k, j) {
                let (h2, w2) = (down(h), down(w));
                macs += c * c_in * h2 * w2;
                (h, w) = (h2, w2);
            }
            macs += c * c_in * 9 * h * w + c * c * 9 * h * w;
            c_in = c;
        }
    }
    macs + c_in * r.classes
}

/// Activations of one forward pass for one sample (each convolution's output three times:
/// convolution, normalisation, ReLU or addition).
pub fn activations_per_sample(r: &ResNet) -> usize {
    let (mut h, mut w) = (r.input[1], r.input[2]);
    let mut acts = r.input.iter().product::<usize>() + 3 * r.channels(0) * h * w;
    for k in 0..3 {
        for j in 0..BLOCKS {
            if has_projection(k, j) {
                (h, w) = (down(h), down(w));
                acts += 3 * r.channels(k) * h * w;
            }
            acts += 6 * r.channels(k) * h * w;
        }
    }
    acts + r.classes
}
