//! Architectures as functions of their weights: each knows its [`Layout`], its initialisation and
//! its forward pass through any [`Weights`] source. Spec strings: `mlp:784-300-100-10`,
//! `lenet5` (= `lenet5:1x28x28`), `lenet5:3x32x32`.

pub mod lenet;
pub mod memory;
pub mod mlp;
pub mod resnet;
pub mod vgg;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::distr::{Distribution, Uniform};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::params::{Layout, ParamSet, Role};
use crate::permute::PermSpec;
use crate::weights::Weights;

/// Receives a hidden layer's name and its post-activation `[samples, units]`.
pub type Observer<'a> = &'a mut dyn FnMut(&str, Tensor<2>);

/// The normalisation of an architecture's hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Norm {
    /// None.
    #[default]
    None,
    /// Batch normalisation ([`crate::weights::norm`]).
    Bn,
    /// Layer normalisation (MLP only): per-sample statistics, no state.
    Ln,
}

/// How [`Arch::init_with`] draws weights and biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// PyTorch's default (Kaiming-uniform with a = √5): weights and biases
    /// `~ U(−1/√fan_in, 1/√fan_in)`.
    #[default]
    Pytorch,
    /// He et al. (2015): weights `~ N(0, 2/fan_in)`, biases 0; keeps the activations' scale
    /// through deep ReLU networks without normalisation (a VGG without BatchNorm).
    He,
}

impl Init {
    /// Whether this is the default scheme.
    pub fn is_default(&self) -> bool {
        *self == Init::default()
    }
}

/// A network architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arch {
    /// ReLU MLP with the given widths (input first, classes last); with `norm = Bn` every hidden
    /// block is Linear without bias → BatchNorm → ReLU (the MLP-BN of Jordan et al. 2023).
    Mlp {
        /// Layer widths `d_0 … d_L`.
        widths: Vec<usize>,
        /// Normalisation of the hidden layers.
        norm: Norm,
    },
    /// LeNet-5-Caffe on `[c, h, w]` inputs with 10 classes; with `norm = Bn` every hidden layer
    /// is conv / Linear without bias → BatchNorm → ReLU (the LeNet-5-BN of Neklyudov et al.'s
    /// variance networks).
    LeNet5 {
        /// Input image shape.
        input: [usize; 3],
        /// Normalisation of the hidden layers (none or BatchNorm).
        norm: Norm,
    },
    /// VGG11 / VGG16 ([`vgg`]), with a width multiplier and a normalisation choice.
    Vgg(vgg::Vgg),
    /// ResNet-20 ([`resnet`]), with a width multiplier.
    ResNet(resnet::ResNet),
}

/// `CxHxW` as `[c, h, w]`.
fn parse_shape(s: &str) -> Option<[usize; 3]> {
    let d = s
        .split('x')
        .map(|x| x.parse::<usize>().ok())
        .collect::<Option<Vec<_>>>()?;
    <[usize; 3]>::try_from(d).ok()
}

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidSpec(format!(
                "architecture `{s}`: {why} (expected e.g. `mlp:784-300-100-10`, `mlp:784-128-128-10:norm=bn`, `lenet5`, `lenet5:3x32x32`, `vgg16:w=0.25`, `vgg11:w=0.5:norm=none:in=1x28x28` or `resnet20:w=2`)"
            ))
        };
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        match kind {
            "mlp" => {
                let mut parts = rest.split(':');
                let widths = parts.next().unwrap_or_default();
                let mut norm = Norm::None;
                for opt in parts {
                    norm = match opt {
                        "norm=bn" => Norm::Bn,
                        "norm=ln" => Norm::Ln,
                        "norm=none" => Norm::None,
                        _ => {
                            return Err(bad(&format!(
                                "unknown option `{opt}` (expected norm=bn, norm=ln or norm=none)"
                            )));
                        }
                    };
                }
                let widths = widths
                    .split('-')
                    .map(|w| w.trim().parse::<usize>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| bad("widths must be positive integers separated by `-`"))?;
                if widths.len() < 2 || widths.contains(&0) {
                    return Err(bad("an MLP needs at least two positive widths"));
                }
                if norm != Norm::None && widths.len() < 3 {
                    return Err(bad("a normalisation needs at least one hidden layer"));
                }
                Ok(Arch::Mlp { widths, norm })
            }
            "lenet5" => {
                let mut input = [1, 28, 28];
                let mut norm = Norm::None;
                for opt in rest.split(':').filter(|o| !o.is_empty()) {
                    match opt {
                        "norm=bn" => norm = Norm::Bn,
                        "norm=none" => norm = Norm::None,
                        _ if opt.starts_with("norm=") => {
                            return Err(bad(&format!(
                                "unknown option `{opt}` (LeNet-5 takes norm=bn or norm=none)"
                            )));
                        }
                        _ => {
                            input = parse_shape(opt)
                                .ok_or_else(|| bad("input shape must be CxHxW, e.g. 1x28x28"))?
                        }
                    }
                }
                if input[0] == 0 || lenet::feature_hw(input[1], input[2]).is_none() {
                    return Err(bad("LeNet-5 needs inputs of at least 16×16 pixels"));
                }
                Ok(Arch::LeNet5 { input, norm })
            }
            "vgg11" | "vgg16" => {
                let mut v = vgg::Vgg {
                    depth: if kind == "vgg11" { 11 } else { 16 },
                    width_micro: 1_000_000,
                    norm: Norm::Bn,
                    input: [3, 32, 32],
                    classes: 10,
                };
                for opt in rest.split(':').filter(|o| !o.is_empty()) {
                    match opt.split_once('=') {
                        Some(("w", w)) => {
                            let w: f64 = w
                                .parse()
                                .ok()
                                .filter(|w: &f64| w.is_finite() && *w > 0.0 && *w <= 64.0)
                                .ok_or_else(|| bad("w must be a number in (0, 64]"))?;
                            v.width_micro = (w * 1e6).round() as u64;
                        }
                        Some(("norm", "bn")) => v.norm = Norm::Bn,
                        Some(("norm", "none")) => v.norm = Norm::None,
                        Some(("in", d)) => {
                            v.input = parse_shape(d)
                                .ok_or_else(|| bad("in must be CxHxW, e.g. 1x28x28"))?;
                        }
                        _ => {
                            return Err(bad(&format!(
                                "unknown option `{opt}` (expected w=W, norm=bn|none, in=CxHxW)"
                            )));
                        }
                    }
                }
                v.validate().map_err(|e| bad(&e))?;
                Ok(Arch::Vgg(v))
            }
            "resnet20" => {
                let mut r = resnet::ResNet {
                    width: 1,
                    input: [3, 32, 32],
                    classes: 10,
                };
                for opt in rest.split(':').filter(|o| !o.is_empty()) {
                    match opt.split_once('=') {
                        Some(("w", w)) => {
                            r.width = w
                                .parse()
                                .ok()
                                .filter(|w| (1..=64).contains(w))
                                .ok_or_else(|| bad("w must be an integer from 1 to 64"))?;
                        }
                        Some(("in", d)) => {
                            r.input = parse_shape(d)
                                .ok_or_else(|| bad("in must be CxHxW, e.g. 1x28x28"))?;
                        }
                        _ => {
                            return Err(bad(&format!(
                                "unknown option `{opt}` (expected w=W, in=CxHxW)"
                            )));
                        }
                    }
                }
                r.validate().map_err(|e| bad(&e))?;
                Ok(Arch::ResNet(r))
            }
            _ => Err(bad("unknown architecture")),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::Mlp { widths, norm } => {
                let w: Vec<String> = widths.iter().map(|w| w.to_string()).collect();
                write!(f, "mlp:{}", w.join("-"))?;
                match norm {
                    Norm::None => Ok(()),
                    Norm::Bn => write!(f, ":norm=bn"),
                    Norm::Ln => write!(f, ":norm=ln"),
                }
            }
            Arch::LeNet5 { input, norm } => {
                write!(f, "lenet5:{}x{}x{}", input[0], input[1], input[2])?;
                match norm {
                    Norm::Bn => write!(f, ":norm=bn"),
                    _ => Ok(()),
                }
            }
            Arch::Vgg(v) => write!(f, "vgg{}{}", v.depth, v.options()),
            Arch::ResNet(r) => write!(f, "resnet20{}", r.options()),
        }
    }
}

impl Arch {
    /// Number of input values per sample.
    pub fn input_dim(&self) -> usize {
        match self {
            Arch::Mlp { widths, .. } => widths[0],
            Arch::LeNet5 { input, .. } => input.iter().product(),
            Arch::Vgg(v) => v.input.iter().product(),
            Arch::ResNet(r) => r.input.iter().product(),
        }
    }

    /// Number of output classes.
    pub fn classes(&self) -> usize {
        match self {
            Arch::Mlp { widths, .. } => *widths.last().unwrap(),
            Arch::LeNet5 { .. } => 10,
            Arch::Vgg(v) => v.classes,
            Arch::ResNet(r) => r.classes,
        }
    }

    /// The image shape `[c, h, w]` a convolutional architecture expects (`None` for an MLP,
    /// which sees flat vectors).
    pub fn image_shape(&self) -> Option<[usize; 3]> {
        match self {
            Arch::LeNet5 { input, .. } => Some(*input),
            Arch::Vgg(v) => Some(v.input),
            Arch::ResNet(r) => Some(r.input),
            Arch::Mlp { .. } => None,
        }
    }

    /// Errors unless the dataset's samples and classes fit this architecture.
    pub fn check_data(&self, data: &Dataset) -> Result<()> {
        if let Some(input) = self.image_shape()
            && input != data.shape
        {
            return Err(Error::Config(format!(
                "--arch {self} expects {}x{}x{} images but {} has {}x{}x{}",
                input[0],
                input[1],
                input[2],
                data.name,
                data.shape[0],
                data.shape[1],
                data.shape[2]
            )));
        }
        if self.input_dim() != data.dim() {
            return Err(Error::Config(format!(
                "--arch {self} expects {} inputs but {} has {} values per sample",
                self.input_dim(),
                data.name,
                data.dim()
            )));
        }
        if self.classes() != data.classes {
            return Err(Error::Config(format!(
                "--arch {self} has {} outputs but {} has {} classes",
                self.classes(),
                data.name,
                data.classes
            )));
        }
        Ok(())
    }

    /// The parameter layout.
    pub fn layout(&self) -> Arc<Layout> {
        let entries = match self {
            Arch::Mlp { widths, norm } => mlp::entries(widths, *norm),
            Arch::LeNet5 { input, norm } => lenet::entries(*input, 10, *norm),
            Arch::Vgg(v) => vgg::entries(v),
            Arch::ResNet(r) => resnet::entries(r),
        };
        Arc::new(Layout::new(entries).expect("architecture layouts are valid"))
    }

    /// The permutation spec of the hidden units (one permutation per hidden layer, named as in
    /// [`Arch::hidden_layers`]), validated against [`Arch::layout`].
    pub fn perm_spec(&self) -> PermSpec {
        let layout = self.layout();
        match self {
            Arch::Mlp { widths, norm } => mlp::perm_spec(widths, *norm, &layout),
            Arch::LeNet5 { input, norm } => lenet::perm_spec(*input, *norm, &layout),
            Arch::Vgg(v) => vgg::perm_spec(v, &layout),
            Arch::ResNet(r) => resnet::perm_spec(r, &layout),
        }
        .expect("architecture permutation specs fit their layouts")
    }

    /// The first layer when it is dense (its output is linear in its weights and in the
    /// input, which [`crate::eval::family`] exploits), `None` for a convolutional first layer.
    pub fn first_dense_layer(&self) -> Option<&'static str> {
        match self {
            Arch::Mlp {
                norm: Norm::None, ..
            } => Some("fc1"),
            Arch::Mlp { .. } | Arch::LeNet5 { .. } | Arch::Vgg(_) | Arch::ResNet(_) => None,
        }
    }

    /// Output units of the first layer (channels × positions for a convolution).
    pub fn first_layer_units(&self) -> usize {
        match self {
            Arch::Mlp { widths, .. } => widths[1],
            Arch::LeNet5 { input, .. } => 20 * (input[1] - 4) * (input[2] - 4),
            Arch::Vgg(v) => {
                let s = v.input[1] + 2 * (v.first_pad() - 1);
                v.channels()[0] * s * s
            }
            Arch::ResNet(r) => r.channels(0) * r.input[1] * r.input[2],
        }
    }

    /// Multiply-adds of the first layer for one sample.
    pub fn first_layer_macs(&self) -> usize {
        match self {
            Arch::Mlp { widths, .. } => widths[0] * widths[1],
            Arch::LeNet5 { input, .. } => self.first_layer_units() * input[0] * 25,
            Arch::Vgg(v) => self.first_layer_units() * v.input[0] * 9,
            Arch::ResNet(r) => self.first_layer_units() * r.input[0] * 9,
        }
    }

    /// Multiply-adds of one forward pass for one sample (dense and convolution layers; the
    /// elementwise work is not counted). `2 ×` this is the usual FLOP count.
    pub fn macs_per_sample(&self) -> usize {
        match self {
            Arch::Mlp { widths, .. } => widths.windows(2).map(|w| w[0] * w[1]).sum(),
            Arch::LeNet5 { input, .. } => {
                let (h1, w1) = (input[1] - 4, input[2] - 4);
                let (h2, w2) = (h1 / 2 - 4, w1 / 2 - 4);
                let fc1 = lenet::fc1_inputs(*input);
                self.first_layer_macs() + 50 * h2 * w2 * 20 * 25 + fc1 * 500 + 500 * self.classes()
            }
            Arch::Vgg(v) => vgg::macs_per_sample(v),
            Arch::ResNet(r) => resnet::macs_per_sample(r),
        }
    }

    /// Names of the hidden layers whose units can be permuted, in forward order.
    pub fn hidden_layers(&self) -> Vec<String> {
        match self {
            Arch::Mlp { widths, .. } => (1..widths.len() - 1).map(|i| format!("fc{i}")).collect(),
            Arch::LeNet5 { .. } => vec!["conv1".into(), "conv2".into(), "fc1".into()],
            Arch::Vgg(v) => vgg::hidden_layers(v),
            Arch::ResNet(r) => resnet::hidden_layers(r),
        }
    }

    /// PyTorch's default initialisation ([`Init::Pytorch`]).
    pub fn init(&self, seed: u64, device: &Device) -> ParamSet {
        self.init_with(Init::Pytorch, seed, device)
    }

    /// Initial parameters drawn in layout order from a ChaCha8 stream seeded by `seed`, the
    /// weights and biases as `scheme` says; normalisation scales and running variances 1, shifts
    /// and running means 0.
    pub fn init_with(&self, scheme: Init, seed: u64, device: &Device) -> ParamSet {
        let layout = self.layout();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let values = layout
            .entries()
            .iter()
            .map(|e| {
                let fan_in: usize = match e.role {
                    Role::NormScale | Role::RunningVar => return vec![1.0; e.numel()],
                    Role::NormShift | Role::RunningMean => return vec![0.0; e.numel()],
                    Role::Weight => e.shape[1..].iter().product(),
                    Role::Bias => {
                        let w = e.name.trim_end_matches(".bias").to_string() + ".weight";
                        layout
                            .entry(&w)
                            .map(|w| w.shape[1..].iter().product())
                            .unwrap_or(1)
                    }
                };
                match scheme {
                    Init::Pytorch => {
                        let bound = 1.0 / (fan_in as f32).sqrt();
                        let dist = Uniform::new(-bound, bound).expect("finite bound");
                        (0..e.numel()).map(|_| dist.sample(&mut rng)).collect()
                    }
                    Init::He if e.role == Role::Bias => vec![0.0; e.numel()],
                    Init::He => {
                        let std = (2.0 / fan_in as f32).sqrt();
                        (0..e.numel())
                            .map(|_| {
                                let z: f32 = rand_distr::StandardNormal.sample(&mut rng);
                                std * z
                            })
                            .collect()
                    }
                }
            })
            .collect();
        ParamSet::from_vecs(layout, values, device).expect("layout-shaped values")
    }

    /// Logits `[batch, classes]` for flattened inputs `x: [batch, input_dim]`.
    pub fn forward<W: Weights + ?Sized>(&self, w: &W, x: Tensor<2>) -> Tensor<2> {
        self.forward_with(w, x, None)
    }

    /// Forward pass that also hands each hidden layer's post-activation `[samples, units]` to
    /// `observe` (used by activation matching).
    pub fn forward_observed<W: Weights + ?Sized>(
        &self,
        w: &W,
        x: Tensor<2>,
        observe: Observer<'_>,
    ) -> Tensor<2> {
        self.forward_with(w, x, Some(observe))
    }

    fn forward_with<W: Weights + ?Sized>(
        &self,
        w: &W,
        x: Tensor<2>,
        observe: Option<Observer<'_>>,
    ) -> Tensor<2> {
        match self {
            Arch::Mlp { widths, norm } => mlp::forward(widths, *norm, w, x, observe),
            Arch::LeNet5 { input, norm } => lenet::forward(*input, *norm, w, x, observe),
            Arch::Vgg(v) => vgg::forward(v, w, x, observe),
            Arch::ResNet(r) => resnet::forward(r, w, x, observe),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// He initialisation: weights with standard deviation √(2/fan_in) (a conv layer's fan-in
    /// is c·kh·kw), zero biases, normalisation at its identity; the default is PyTorch's.
    /// `lenet5:norm=bn` parses, prints in full and parses back to itself; its hidden layers lose
    /// their biases to BatchNorm; other normalisations are refused.
    #[test]
    fn lenet5_bn_spec_round_trips() {
        let a: Arch = "lenet5:norm=bn".parse().unwrap();
        assert_eq!(a.to_string(), "lenet5:1x28x28:norm=bn");
        assert_eq!(a.to_string().parse::<Arch>().unwrap(), a);
        assert_eq!(
            "lenet5:3x32x32:norm=bn"
                .parse::<Arch>()
                .unwrap()
                .image_shape(),
            Some([3, 32, 32])
        );
        assert_eq!(
            "lenet5".parse::<Arch>().unwrap().to_string(),
            "lenet5:1x28x28"
        );
        let names: Vec<String> = a
            .layout()
            .entries()
            .iter()
            .map(|e| e.name.clone())
            .collect();
        for n in ["bn1.running_var", "bn2.weight", "bn3.bias", "fc2.bias"] {
            assert!(names.contains(&n.to_string()), "{n}");
        }
        for n in ["conv1.bias", "conv2.bias", "fc1.bias"] {
            assert!(!names.contains(&n.to_string()), "{n}");
        }
        assert!(a.layout().has_state());
        let e = "lenet5:norm=ln".parse::<Arch>().unwrap_err().to_string();
        assert!(e.contains("norm=ln"), "{e}");
    }

    #[test]
    fn he_initialisation_has_the_fan_in_scale() {
        let device = crate::backend::device();
        let arch: Arch = "vgg11:w=0.25:norm=none".parse().unwrap();
        let p = arch.init_with(Init::He, 3, &device);
        let vals = p.to_vecs();
        for (e, v) in arch.layout().entries().iter().zip(&vals) {
            if e.role == Role::Bias {
                assert!(v.iter().all(|&b| b == 0.0), "{}", e.name);
                continue;
            }
            let fan_in: usize = e.shape[1..].iter().product();
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
            let std = (v
                .iter()
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>()
                / n)
                .sqrt();
            let want = (2.0 / fan_in as f64).sqrt();
            let tol = 4.0 * want / (2.0 * n).sqrt() + 1e-12;
            assert!((std - want).abs() < tol, "{}: std {std} vs {want}", e.name);
            assert!(
                mean.abs() < 4.0 * want / n.sqrt(),
                "{}: mean {mean}",
                e.name
            );
        }
        assert_eq!(
            arch.init(3, &device).to_vecs(),
            arch.init_with(Init::Pytorch, 3, &device).to_vecs()
        );
        let bn: Arch = "vgg11:w=0.25".parse().unwrap();
        let q = bn.init_with(Init::He, 3, &device);
        let scale = q.layout().index_of("bn1.weight").unwrap();
        assert!(q.to_vecs()[scale].iter().all(|&g| g == 1.0));
    }
}
