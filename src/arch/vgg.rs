//! VGG (Simonyan & Zisserman 2015) in the CIFAR form of Garipov et al. (2018): 3×3 convolutions
//! (padding 1) in five blocks, each block followed by a 2×2 max-pool, then fully connected
//! layers `512 → 512 → classes` (without the dropout of their code). `vgg11` has
//! 1/1/2/2/2 convolutions per block, `vgg16` 2/2/3/3/3. Options: `w=W` multiplies every width
//! (channels `64·W … 512·W`, the hidden fully connected layers `512·W`, at least 1), `norm=bn`
//! (default: convolution without bias → BatchNorm → ReLU) or `norm=none` (convolution with
//! bias → ReLU), `in=CxHxW` the input (default `3x32x32`). A 28×28 input meets the five pools as
//! if zero-padded to 32×32: the first convolution pads by 3 instead of 1.
//!
//! Layers `conv1 … convN` (with `bn1 … bnN`), `fc1`, `fc2`, `fc3`.

use burn::tensor::Tensor;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};

use super::Norm;
use crate::backend;
use crate::error::{Error, Result};
use crate::params::{Entry, Layout, Role};
use crate::permute::{Axis, PermSpec};
use crate::weights::norm::{running_mean_name, running_var_name};
use crate::weights::{Weights, bias_name, weight_name};

/// The VGG variants: convolutions per block.
pub fn blocks(depth: usize) -> Option<[usize; 5]> {
    match depth {
        11 => Some([1, 1, 2, 2, 2]),
        16 => Some([2, 2, 3, 3, 3]),
        _ => None,
    }
}

/// A VGG configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vgg {
    /// 11 or 16.
    pub depth: usize,
    /// Width multiplier in millionths (`w=0.25` is 250 000).
    pub width_micro: u64,
    /// Normalisation after each convolution.
    pub norm: Norm,
    /// Input `[c, h, w]`.
    pub input: [usize; 3],
    /// Output classes.
    pub classes: usize,
}

impl Vgg {
    fn scaled(&self, c: usize) -> usize {
        ((c as u64 * self.width_micro + 500_000) / 1_000_000).max(1) as usize
    }

    /// Output channels of every convolution, in order.
    pub fn channels(&self) -> Vec<usize> {
        let blocks = blocks(self.depth).expect("validated depth");
        [64, 128, 256, 512, 512]
            .iter()
            .zip(blocks)
            .flat_map(|(&c, n)| std::iter::repeat_n(self.scaled(c), n))
            .collect()
    }

    /// Units of the two hidden fully connected layers.
    pub fn fc_width(&self) -> usize {
        self.scaled(512)
    }

    /// Zero padding of the first convolution: 1, or enough to bring a smaller input to 32.
    pub fn first_pad(&self) -> usize {
        let h = self.input[1];
        if h < 32 { 1 + (32 - h) / 2 } else { 1 }
    }

    /// Spatial size after the five pools.
    pub fn feature_hw(&self) -> (usize, usize) {
        let pad = 2 * (self.first_pad() - 1);
        let shrink = |s: usize| (0..5).fold(s + pad, |s, _| s / 2);
        (shrink(self.input[1]), shrink(self.input[2]))
    }

    /// Checks the configuration: a known depth, a positive width, an input that survives the
    /// five pools.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if blocks(self.depth).is_none() {
            return Err(format!("VGG depth {} (expected 11 or 16)", self.depth));
        }
        if self.norm == Norm::Ln {
            return Err("VGG takes norm=bn or norm=none".into());
        }
        if self.width_micro == 0 {
            return Err("the width multiplier w must be positive".into());
        }
        let [c, h, w] = self.input;
        if c == 0 || h == 0 || w == 0 || (h < 32 && (32 - h) % 2 == 1) || h != w {
            return Err(format!(
                "input {c}x{h}x{w}: VGG takes square inputs of at least 32×32, or an even size below 32 padded to it"
            ));
        }
        let (fh, fw) = self.feature_hw();
        if fh == 0 || fw == 0 {
            return Err(format!(
                "input {c}x{h}x{w} shrinks to nothing in five pools"
            ));
        }
        Ok(())
    }

    /// The spec string's options after `vggN`.
    pub fn options(&self) -> String {
        let mut s = String::new();
        if self.width_micro != 1_000_000 {
            let w = self.width_micro as f64 / 1e6;
            s.push_str(&format!(":w={w}"));
        }
        if self.norm == Norm::None {
            s.push_str(":norm=none");
        }
        if self.input != [3, 32, 32] {
            let [c, h, w] = self.input;
            s.push_str(&format!(":in={c}x{h}x{w}"));
        }
        s
    }
}

fn conv_name(i: usize) -> String {
    format!("conv{i}")
}

fn bn_name(i: usize) -> String {
    format!("bn{i}")
}

/// Layout entries.
pub fn entries(v: &Vgg) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut push =
        |name: String, shape: Vec<usize>, role: Role| out.push(Entry { name, shape, role });
    let mut c_in = v.input[0];
    for (k, &o) in v.channels().iter().enumerate() {
        let i = k + 1;
        push(
            weight_name(&conv_name(i)),
            vec![o, c_in, 3, 3],
            Role::Weight,
        );
        match v.norm {
            Norm::Bn => {
                let bn = bn_name(i);
                push(weight_name(&bn), vec![o], Role::NormScale);
                push(bias_name(&bn), vec![o], Role::NormShift);
                push(running_mean_name(&bn), vec![o], Role::RunningMean);
                push(running_var_name(&bn), vec![o], Role::RunningVar);
            }
            Norm::None => push(bias_name(&conv_name(i)), vec![o], Role::Bias),
            Norm::Ln => unreachable!("Vgg::validate refuses layer normalisation"),
        }
        c_in = o;
    }
    let (fh, fw) = v.feature_hw();
    let f = v.fc_width();
    for (layer, o, i) in [
        ("fc1", f, c_in * fh * fw),
        ("fc2", f, f),
        ("fc3", v.classes, f),
    ] {
        push(weight_name(layer), vec![o, i], Role::Weight);
        push(bias_name(layer), vec![o], Role::Bias);
    }
    out
}

/// Names of the hidden layers whose units can be permuted, in forward order.
pub fn hidden_layers(v: &Vgg) -> Vec<String> {
    (1..=v.channels().len())
        .map(conv_name)
        .chain(["fc1".to_string(), "fc2".to_string()])
        .collect()
}

/// Forward pass on flattened images `x: [batch, c·h·w]`; `observe` sees each hidden layer's
/// post-ReLU activations as `[samples, units]` (conv: every spatial position is a sample).
pub fn forward<W: Weights + ?Sized>(
    v: &Vgg,
    w: &W,
    x: Tensor<2>,
    mut observe: Option<super::Observer<'_>>,
) -> Tensor<2> {
    let b = x.dims()[0];
    let [c, hh, ww] = v.input;
    let mut h: Tensor<4> = x.reshape([b, c, hh, ww]);
    let pool = MaxPoolOptions::new([2, 2]);
    let blocks = blocks(v.depth).expect("validated depth");
    let mut i = 0;
    for n in blocks {
        for _ in 0..n {
            i += 1;
            let pad = if i == 1 { v.first_pad() } else { 1 };
            let conv = ConvOptions::new([1, 1], [pad, pad], [1, 1], 1);
            let layer = conv_name(i);
            h = w.conv2d(&layer, h, conv);
            if v.norm == Norm::Bn {
                h = w.batch_norm2d(&bn_name(i), h);
            }
            h = backend::relu(h);
            if let Some(observe) = observe.as_deref_mut() {
                let [_, c, sh, sw] = h.dims();
                observe(&layer, h.clone().swap_dims(1, 3).reshape([b * sh * sw, c]));
            }
        }
        h = backend::max_pool2d(h, pool.clone());
    }
    let mut f: Tensor<2> = h.flatten(1, 3);
    for layer in ["fc1", "fc2"] {
        f = w.dense_relu(layer, f);
        if let Some(observe) = observe.as_deref_mut() {
            observe(layer, f.clone());
        }
    }
    w.dense("fc3", f)
}

/// Permutation spec: the output channels of every convolution (acting on its weight's output
/// axis, its bias or its normalisation's four tensors, and the next convolution's input
/// channels; the last one reaches `fc1` through the channel-major flattening in blocks of the
/// final `h·w` positions) and the units of `fc1` and `fc2`.
pub fn perm_spec(v: &Vgg, layout: &Layout) -> Result<PermSpec> {
    let f = Axis::Fixed;
    let channels = v.channels();
    let mut b = PermSpec::builder();
    for (k, &o) in channels.iter().enumerate() {
        b = b.perm(&conv_name(k + 1), o);
    }
    b = b.perm("fc1", v.fc_width()).perm("fc2", v.fc_width());
    for i in 1..=channels.len() {
        let prev = if i == 1 {
            f.clone()
        } else {
            Axis::by(&conv_name(i - 1))
        };
        let own = Axis::by(&conv_name(i));
        b = b.param(
            &weight_name(&conv_name(i)),
            vec![own.clone(), prev, f.clone(), f.clone()],
        );
        match v.norm {
            Norm::Bn => {
                let bn = bn_name(i);
                for name in [
                    weight_name(&bn),
                    bias_name(&bn),
                    running_mean_name(&bn),
                    running_var_name(&bn),
                ] {
                    b = b.param(&name, vec![own.clone()]);
                }
            }
            Norm::None => b = b.param(&bias_name(&conv_name(i)), vec![own]),
            Norm::Ln => unreachable!("Vgg::validate refuses layer normalisation"),
        }
    }
    let (fh, fw) = v.feature_hw();
    let last = conv_name(channels.len());
    b.param(
        "fc1.weight",
        vec![Axis::by("fc1"), Axis::blocks(&last, fh * fw)],
    )
    .param("fc1.bias", vec![Axis::by("fc1")])
    .param("fc2.weight", vec![Axis::by("fc2"), Axis::by("fc1")])
    .param("fc2.bias", vec![Axis::by("fc2")])
    .param("fc3.weight", vec![f.clone(), Axis::by("fc2")])
    .param("fc3.bias", vec![f])
    .build(layout)
    .map_err(|e| Error::InvalidSpec(format!("VGG permutation spec: {e}")))
}

/// Multiply-adds of one forward pass for one sample (convolutions and dense layers).
pub fn macs_per_sample(v: &Vgg) -> usize {
    let blocks = blocks(v.depth).expect("validated depth");
    let channels = v.channels();
    let mut s = v.input[1] + 2 * (v.first_pad() - 1);
    let (mut c_in, mut i, mut macs) = (v.input[0], 0, 0);
    for n in blocks {
        for _ in 0..n {
            macs += channels[i] * c_in * 9 * s * s;
            c_in = channels[i];
            i += 1;
        }
        s /= 2;
    }
    let (fh, fw) = v.feature_hw();
    let f = v.fc_width();
    macs + c_in * fh * fw * f + f * f + f * v.classes
}

/// Activations of one forward pass for one sample, the input included (each convolution's
/// output counted three times: convolution, normalisation, ReLU).
pub fn activations_per_sample(v: &Vgg) -> usize {
    let blocks = blocks(v.depth).expect("validated depth");
    let channels = v.channels();
    let mut s = v.input[1] + 2 * (v.first_pad() - 1);
    let (mut i, mut acts) = (0, v.input.iter().product::<usize>());
    for n in blocks {
        for _ in 0..n {
            acts += 3 * channels[i] * s * s;
            i += 1;
        }
        s /= 2;
    }
    acts + 2 * v.fc_width() + v.classes
}
