//! Variational dropout family: Gaussian dropout with layer-wise α (Kingma et al.
//! 2015), layer-wise learned α (the "phase transition" experiment), sparse variational dropout
//! (Molchanov et al. 2017), ARD and group ARD (Kharitonov et al. 2018) and variance layers
//! (Neklyudov et al. 2019).
//!
//! A variational model is **one** trainable [`ParamSet`] on a prefixed layout built from the
//! architecture's own layout ([`VModel::layout`]):
//!
//! - `mu/<name>`: the means θ (every weight and bias of the architecture; variance layers have no
//!   weight means, their weights are zero-mean);
//! - `log_sigma2/<layer>.weight`: per-weight log σ² (additive reparameterisation: `sparse-vd`,
//!   `ard`, `group-ard`; and `variance` layers);
//! - `log_alpha/<layer>.weight`, shape `[1]`: one log α per layer (`layerwise-alpha`, and
//!   `gaussian` with `--learn-alpha`).
//!
//! Per weight, `q(w) = N(θ, α θ²)` with `log α = log σ² − log(θ² + 1e−8)` clipped to `[−8, 8]`
//! (additive form; `[−10, 10]` and sampling with σ² itself as the PyTorch ports do are
//! [`VConfig`] options), or `q(w) = N(θ, α θ²)` with one α per layer (multiplicative form), or
//! `q(w) = N(0, σ²)` (variance layers). Layers are the architecture's own functions computed by
//! [`weights::VarWeights`] with the local reparameterisation trick. Test time ("mode") uses
//! `θ ⊙ 1[log α < 3]`: the pruned plain network of [`VModel::mode`].

pub mod eval;
pub mod fused;
pub mod kl;
pub mod noise;
pub mod objective;
pub mod path;
pub mod weights;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::distr::{Distribution, Uniform};
use rand_chacha::ChaCha8Rng;
use rand_distr::Normal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::arch::Arch;
use crate::error::{Error, Result};
use crate::params::io::{FileMeta, Loaded, save};
use crate::params::{Entry, Layout, ParamSet, Role, host_vec};
use crate::weights::weight_name;

/// Prefix of the means θ.
pub const MU: &str = "mu/";
/// Prefix of the per-weight log σ².
pub const LOG_SIGMA2: &str = "log_sigma2/";
/// Prefix of the per-layer log α.
pub const LOG_ALPHA: &str = "log_alpha/";
/// `log α` is clipped to `[−LOG_ALPHA_CLIP, LOG_ALPHA_CLIP]` in the additive form (Molchanov et al. 2017, §4.3).
pub const LOG_ALPHA_CLIP: f32 = 8.0;
/// `log α` of the per-layer form is clipped to `[−20, 20]`.
pub const LAYER_LOG_ALPHA_CLIP: f32 = 20.0;
/// A weight is pruned when `log α > PRUNE_LOG_ALPHA` (dropout rate ≈ 0.95).
pub const PRUNE_LOG_ALPHA: f32 = 3.0;
/// `ε` in `log(θ² + ε)`.
pub const THETA2_EPS: f32 = 1e-8;
/// File kind of a saved variational model.
pub const KIND: &str = "variational";

/// A variational method (`--method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Gaussian dropout, multiplicative form, one α per layer: fixed from the dropout rate, or
    /// learned with Kingma's KL (α ≤ 1).
    Gaussian,
    /// One learned log α per layer, log-uniform KL × |W| (a layer may run to α → ∞ and become zero-mean).
    LayerwiseAlpha,
    /// Sparse variational dropout: per-weight α, log-uniform prior, Molchanov's KL.
    SparseVd,
    /// Empirical-Bayes Gaussian (ARD) prior per weight: KL = ½·softplus(−log α).
    Ard,
    /// ARD with one prior variance per neuron / filter.
    GroupArd,
    /// Variance layers: zero-mean weights `q(w) = N(0, σ²)`, no KL.
    Variance,
}

impl Method {
    /// All methods, in `--help` order.
    pub const ALL: [Method; 6] = [
        Method::Gaussian,
        Method::LayerwiseAlpha,
        Method::SparseVd,
        Method::Ard,
        Method::GroupArd,
        Method::Variance,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Gaussian => "gaussian",
            Method::LayerwiseAlpha => "layerwise-alpha",
            Method::SparseVd => "sparse-vd",
            Method::Ard => "ard",
            Method::GroupArd => "group-ard",
            Method::Variance => "variance",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Initialisation of a variational model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitConfig {
    /// θ ~ N(0, std²) and zero biases; `None`: the architecture's PyTorch initialisation.
    pub std: Option<f64>,
    /// Initial log σ² of the additive methods (Molchanov et al. 2017: −10).
    pub log_sigma2: f64,
    /// Initial per-layer log α of `layerwise-alpha` (−10 by default).
    pub log_alpha: f64,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            std: None,
            log_sigma2: -10.0,
            log_alpha: -10.0,
        }
    }
}

/// The weight variance that the local reparameterisation of an additive layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LrtVariance {
    /// `α·θ²` with the clipped α (the clip applies in the forward pass and the KL).
    #[default]
    AlphaTheta2,
    /// `σ²` itself, unclipped; the clip acts only in the KL and in pruning (the deepbayes
    /// notebook's `LinearSVDO`).
    Sigma2,
}

impl LrtVariance {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            LrtVariance::AlphaTheta2 => "alpha-theta2",
            LrtVariance::Sigma2 => "sigma2",
        }
    }
}

/// Which layers of a variance network are zero-mean, `q(w) = N(0, σ²)`; the others are point
/// estimates.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VarianceLayers {
    /// Every weight layer but the last (the output layer stays a point estimate): learns
    /// without normalisation.
    #[default]
    Hidden,
    /// Every weight layer, as Neklyudov et al. (2019) train normalised networks.
    All,
    /// The named layers.
    Named(Vec<String>),
}

impl FromStr for VarianceLayers {
    type Err = Error;

    /// `hidden`, `all` or a comma-separated list of layer names.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim() {
            "hidden" => VarianceLayers::Hidden,
            "all" => VarianceLayers::All,
            list => VarianceLayers::Named(
                list.split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect(),
            ),
        })
    }
}

impl VarianceLayers {
    /// Whether layer `name`, the `index`-th of `count` weight layers, is zero-mean.
    pub fn contains(&self, name: &str, index: usize, count: usize) -> bool {
        match self {
            VarianceLayers::Hidden => index + 1 < count,
            VarianceLayers::All => true,
            VarianceLayers::Named(v) => v.iter().any(|l| l == name),
        }
    }
}

fn default_log_alpha_clip() -> f64 {
    f64::from(LOG_ALPHA_CLIP)
}

/// Everything that decides a variational model's layout and meaning (stored in its files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VConfig {
    /// The method.
    pub method: Method,
    /// `variance`: the zero-mean layers; the others are point estimates.
    #[serde(default)]
    pub variance_layers: VarianceLayers,
    /// `gaussian`: dropout rate p, α = p/(1−p) (the initial value when learned).
    pub dropout_rate: f64,
    /// `gaussian`: learn the per-layer α (clipped to α ≤ 1) with Kingma's KL.
    pub learn_alpha: bool,
    /// Initialisation.
    pub init: InitConfig,
    /// Per-weight log α (additive and variance layers) is clipped to `[−c, c]` (default 8;
    /// the PyTorch ports: 10).
    #[serde(default = "default_log_alpha_clip")]
    pub log_alpha_clip: f64,
    /// The weight variance of additive layers in the local reparameterisation.
    #[serde(default)]
    pub lrt_variance: LrtVariance,
}

impl VConfig {
    /// Defaults for `method`: dropout rate 0.5, fixed α, [`InitConfig::default`].
    pub fn new(method: Method) -> Self {
        Self {
            method,
            variance_layers: VarianceLayers::Hidden,
            dropout_rate: 0.5,
            learn_alpha: false,
            init: InitConfig::default(),
            log_alpha_clip: default_log_alpha_clip(),
            lrt_variance: LrtVariance::AlphaTheta2,
        }
    }
}

/// How one layer's weights are distributed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Posterior {
    /// A point estimate θ (no noise).
    Point,
    /// Additive reparameterisation: per-weight log σ², `log α = log σ² − log(θ² + 1e−8)`.
    Additive,
    /// One trainable log α for the layer, clipped to `[lo, hi]`.
    Shared {
        /// Lower clip.
        lo: f32,
        /// Upper clip.
        hi: f32,
    },
    /// One fixed log α for the layer.
    Fixed {
        /// The value.
        log_alpha: f32,
    },
    /// Zero-mean weights, per-weight log σ².
    Variance,
}

/// The prior of a variational model, and so its KL term: the second axis of a method beside the
/// posterior form of its layers ([`Posterior`]), chosen once from the method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    /// Log-uniform `p(|w|) ∝ 1/|w|`: Molchanov et al.'s (2017) KL approximation per weight
    /// (`sparse-vd`; `layerwise-alpha` counts its one α once per weight).
    LogUniform,
    /// Empirical-Bayes Gaussian per weight (ARD): `KL = ½·log(1 + 1/α)` at the optimal prior
    /// variance.
    Ard,
    /// Empirical-Bayes Gaussian per unit (group ARD), the prior variance shared by a unit's
    /// incoming weights.
    GroupArd,
    /// Kingma et al.'s (2015) polynomial fit of the log-uniform KL for α ≤ 1 (`gaussian` with a
    /// learned α).
    Kingma,
    /// No KL term (fixed-α Gaussian dropout, variance layers).
    None,
}

impl Prior {
    /// The prior of `config`'s method.
    pub fn of(config: &VConfig) -> Self {
        match config.method {
            Method::SparseVd | Method::LayerwiseAlpha => Prior::LogUniform,
            Method::Ard => Prior::Ard,
            Method::GroupArd => Prior::GroupArd,
            Method::Gaussian if config.learn_alpha => Prior::Kingma,
            Method::Gaussian | Method::Variance => Prior::None,
        }
    }
}

/// A layer of the architecture and its posterior.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    /// Layer name (`fc1`, `conv2`, ...).
    pub name: String,
    /// Weight shape (`[out, in]` or `[out, in, kh, kw]`).
    pub shape: Vec<usize>,
    /// Its posterior.
    pub q: Posterior,
}

impl LayerInfo {
    /// Number of weights |W|.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of output units (neurons / filters).
    pub fn units(&self) -> usize {
        self.shape[0]
    }

    /// Incoming weights per unit.
    pub fn fan_in(&self) -> usize {
        self.numel() / self.units()
    }
}

/// A variational model: an architecture, its method and the resulting layout.
#[derive(Debug, Clone)]
pub struct VModel {
    /// The architecture.
    pub arch: Arch,
    /// The configuration.
    pub config: VConfig,
    /// The prior (from the method; the posterior form is per layer, in [`VModel::layers`]).
    pub prior: Prior,
    layers: Vec<LayerInfo>,
    layout: Arc<Layout>,
    /// Layers evaluated with their means set to zero ([`VModel::with_zero_mean`]).
    zero_mean: Vec<String>,
}

/// Name of the mean of an architecture tensor.
pub fn mu_name(name: &str) -> String {
    format!("{MU}{name}")
}

/// Name of a layer's per-weight log σ².
pub fn log_sigma2_name(layer: &str) -> String {
    format!("{LOG_SIGMA2}{}", weight_name(layer))
}

/// Name of a layer's log α.
pub fn log_alpha_name(layer: &str) -> String {
    format!("{LOG_ALPHA}{}", weight_name(layer))
}

impl VModel {
    /// Builds the model, validating the configuration against the architecture.
    pub fn new(arch: Arch, config: VConfig) -> Result<Self> {
        let base = arch.layout();
        // The variational layers: dense and convolution weights. A normalisation layer's γ and
        // β, biases and running statistics stay point estimates (`mu/`, the statistics with
        // their state role).
        let is_layer = |e: &Entry| e.role == Role::Weight;
        let names: Vec<String> = base
            .entries()
            .iter()
            .filter(|e| is_layer(e))
            .map(|e| e.name.trim_end_matches(".weight").to_string())
            .collect();
        if let VarianceLayers::Named(vl) = &config.variance_layers {
            if config.method != Method::Variance {
                return Err(Error::Config(
                    "--variance-layers applies only to --method variance".into(),
                ));
            }
            if vl.is_empty() {
                return Err(Error::Config("--variance-layers: no layer named".into()));
            }
            for l in vl {
                if !names.contains(l) {
                    return Err(Error::Config(format!(
                        "--variance-layers: `{l}` is not a layer of {arch} (layers: {})",
                        names.join(", ")
                    )));
                }
            }
        }
        let p = config.dropout_rate;
        if !(p > 0.0 && p < 1.0) {
            return Err(Error::Config(format!(
                "--dropout-rate must be in (0, 1), got {p}"
            )));
        }
        if config.learn_alpha && config.method != Method::Gaussian {
            return Err(Error::Config(
                "--learn-alpha applies only to --method gaussian".into(),
            ));
        }
        let c = config.log_alpha_clip;
        if !(c.is_finite() && c > f64::from(PRUNE_LOG_ALPHA)) {
            return Err(Error::Config(format!(
                "--log-alpha-clip must be a number above the pruning threshold {PRUNE_LOG_ALPHA}, got {c}"
            )));
        }
        if let Some(s) = config.init.std
            && !(s.is_finite() && s > 0.0)
        {
            return Err(Error::Config(format!(
                "--init-std must be a positive number, got {s}"
            )));
        }
        for (flag, v) in [
            ("--init-log-sigma2", config.init.log_sigma2),
            ("--init-log-alpha", config.init.log_alpha),
        ] {
            if !v.is_finite() {
                return Err(Error::Config(format!("{flag} must be finite, got {v}")));
            }
        }
        let gauss_log_alpha = (p / (1.0 - p)).ln() as f32;
        let count = names.len();
        let layers: Vec<LayerInfo> = base
            .entries()
            .iter()
            .filter(|e| is_layer(e))
            .enumerate()
            .map(|(index, e)| {
                let name = e.name.trim_end_matches(".weight").to_string();
                let q = match config.method {
                    Method::Gaussian if config.learn_alpha => Posterior::Shared {
                        lo: -LAYER_LOG_ALPHA_CLIP,
                        hi: 0.0,
                    },
                    Method::Gaussian => Posterior::Fixed {
                        log_alpha: gauss_log_alpha,
                    },
                    Method::LayerwiseAlpha => Posterior::Shared {
                        lo: -LAYER_LOG_ALPHA_CLIP,
                        hi: LAYER_LOG_ALPHA_CLIP,
                    },
                    Method::SparseVd | Method::Ard | Method::GroupArd => Posterior::Additive,
                    Method::Variance if config.variance_layers.contains(&name, index, count) => {
                        Posterior::Variance
                    }
                    Method::Variance => Posterior::Point,
                };
                LayerInfo {
                    name,
                    shape: e.shape.clone(),
                    q,
                }
            })
            .collect();

        let mut entries: Vec<Entry> = Vec::new();
        for e in base.entries() {
            let layer = e.name.trim_end_matches(".weight");
            let zero_mean = is_layer(e)
                && layers
                    .iter()
                    .any(|l| l.name == layer && l.q == Posterior::Variance);
            if !zero_mean {
                entries.push(Entry {
                    name: mu_name(&e.name),
                    ..e.clone()
                });
            }
        }
        for l in &layers {
            if matches!(l.q, Posterior::Additive | Posterior::Variance) {
                entries.push(Entry {
                    name: log_sigma2_name(&l.name),
                    shape: l.shape.clone(),
                    role: Role::Weight,
                });
            }
        }
        for l in &layers {
            if matches!(l.q, Posterior::Shared { .. }) {
                entries.push(Entry {
                    name: log_alpha_name(&l.name),
                    shape: vec![1],
                    role: Role::Weight,
                });
            }
        }
        let layout = Arc::new(Layout::new(entries)?);
        Ok(Self {
            arch,
            prior: Prior::of(&config),
            config,
            layers,
            layout,
            zero_mean: Vec::new(),
        })
    }

    /// The zero-mean ablation of Neklyudov et al. (2019): the same model evaluated with the
    /// weight means θ of `layers` set to 0 while their variances (`α·θ²`, σ²) are kept, so that
    /// each such layer is a variance layer `q(w) = N(0, σ²)`; its mode is 0. When a layer's α
    /// has run to infinity its information lives in the variances, and sampled predictions
    /// survive the ablation. Errors name a layer the architecture lacks.
    pub fn with_zero_mean(mut self, layers: &[String]) -> Result<Self> {
        for l in layers {
            if !self.layers.iter().any(|x| &x.name == l) {
                return Err(Error::Config(format!(
                    "--zero-mean: `{l}` is not a layer of {} (layers: {})",
                    self.arch,
                    self.layers
                        .iter()
                        .map(|x| x.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        self.zero_mean = layers.to_vec();
        Ok(self)
    }

    /// Whether layer `name` is evaluated zero-mean ([`VModel::with_zero_mean`]).
    pub fn is_zero_mean(&self, name: &str) -> bool {
        self.zero_mean.iter().any(|l| l == name)
    }

    /// The prefixed layout of the trainable set.
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// The layers in forward order.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    /// A layer by name (panics on unknown names: architectures only ask for their own layers).
    pub fn layer(&self, name: &str) -> &LayerInfo {
        self.layers
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("layer `{name}` is not in the architecture"))
    }

    /// Initial parameters, drawn in layout order from ChaCha8 streams seeded by `seed`:
    /// θ and biases from the architecture's initialisation (or θ ~ N(0, std²), biases 0),
    /// log σ² = `init.log_sigma2`, per-layer log α = `init.log_alpha` (`layerwise-alpha`) or
    /// log(p/(1−p)) (`gaussian`), and for variance layers `log σ² = 2·log|u|`,
    /// `u ~ U(−1/√fan_in, 1/√fan_in)` (Neklyudov et al.'s σ initialisation).
    pub fn init(&self, seed: u64, device: &Device) -> ParamSet {
        let base = self.arch.init(seed, device);
        let base_vals = base.to_vecs();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(1);
        let values = self
            .layout
            .entries()
            .iter()
            .map(|e| {
                if let Some(name) = e.name.strip_prefix(MU) {
                    let i = base.layout().index_of(name).expect("mu of a base tensor");
                    match self.config.init.std {
                        None => base_vals[i].clone(),
                        Some(_) if e.role == Role::Bias => vec![0.0; e.numel()],
                        // Normalisation layers and their statistics start as the network's.
                        Some(_) if e.role != Role::Weight => base_vals[i].clone(),
                        Some(s) => {
                            let d = Normal::new(0.0, s as f32).expect("positive std");
                            (0..e.numel()).map(|_| d.sample(&mut rng)).collect()
                        }
                    }
                } else if let Some(w) = e.name.strip_prefix(LOG_SIGMA2) {
                    let layer = self.layer(w.trim_end_matches(".weight"));
                    if layer.q == Posterior::Variance {
                        let b = 1.0 / (layer.fan_in() as f32).sqrt();
                        let d = Uniform::new(-b, b).expect("finite bound");
                        (0..e.numel())
                            .map(|_| 2.0 * d.sample(&mut rng).abs().max(1e-12).ln())
                            .collect()
                    } else {
                        vec![self.config.init.log_sigma2 as f32; e.numel()]
                    }
                } else {
                    let v = match self.config.method {
                        Method::Gaussian => {
                            let p = self.config.dropout_rate;
                            (p / (1.0 - p)).ln() as f32
                        }
                        _ => self.config.init.log_alpha as f32,
                    };
                    vec![v; e.numel()]
                }
            })
            .collect();
        ParamSet::from_vecs(self.layout.clone(), values, device).expect("layout-shaped values")
    }

    fn flat(params: &ParamSet, name: &str) -> Tensor<1> {
        params
            .flat(name)
            .unwrap_or_else(|_| panic!("`{name}` is not in the variational layout"))
            .clone()
    }

    /// Differentiable per-weight (or per-layer, shape `[1]`) clipped log α of a layer, flat;
    /// `None` for point layers. Variance layers use θ = 0.
    pub fn log_alpha_t(&self, params: &ParamSet, layer: &LayerInfo) -> Option<Tensor<1>> {
        let c = self.config.log_alpha_clip as f32;
        match layer.q {
            Posterior::Point => None,
            Posterior::Additive => {
                let theta = Self::flat(params, &mu_name(&weight_name(&layer.name)));
                let ls2 = Self::flat(params, &log_sigma2_name(&layer.name));
                Some((ls2 - (theta.powi_scalar(2) + THETA2_EPS).log()).clamp(-c, c))
            }
            Posterior::Variance => {
                let ls2 = Self::flat(params, &log_sigma2_name(&layer.name));
                Some((ls2 - THETA2_EPS.ln()).clamp(-c, c))
            }
            Posterior::Shared { lo, hi } => {
                Some(Self::flat(params, &log_alpha_name(&layer.name)).clamp(lo, hi))
            }
            Posterior::Fixed { log_alpha } => {
                let d = params.tensors()[0].device();
                Some(Tensor::<1>::full([1], log_alpha, &d))
            }
        }
    }

    /// [`VModel::log_alpha_t`] of every layer, in layer order.
    pub fn log_alphas_t(&self, params: &ParamSet) -> Vec<Option<Tensor<1>>> {
        self.layers
            .iter()
            .map(|l| self.log_alpha_t(params, l))
            .collect()
    }

    /// The KL term of the ELBO (a differentiable `[1]` tensor): Σ over weights of the method's
    /// KL ([`kl`]); `layerwise-alpha` and learned `gaussian` count `|W|·KL(log α)` per layer;
    /// fixed `gaussian` and `variance` have no (non-constant) KL and return 0.
    pub fn kl(&self, params: &ParamSet) -> Tensor<1> {
        self.kl_given(params, &self.log_alphas_t(params))
    }

    /// [`VModel::kl`] given the layers' log α from [`VModel::log_alphas_t`] (computed once per
    /// step and shared with the forward pass).
    pub fn kl_given(&self, params: &ParamSet, log_alphas: &[Option<Tensor<1>>]) -> Tensor<1> {
        let device = params.tensors()[0].device();
        let mut total = Tensor::<1>::zeros([1], &device);
        for (l, la) in self.layers.iter().zip(log_alphas) {
            let Some(la) = la.clone() else { continue };
            let weights = match l.q {
                Posterior::Point | Posterior::Fixed { .. } | Posterior::Variance => continue,
                Posterior::Additive => 1.0,
                // One α stands for every weight of the layer.
                Posterior::Shared { .. } => l.numel() as f32,
            };
            let term = match self.prior {
                Prior::None => continue,
                Prior::LogUniform => kl::kl_log_uniform_t(la).sum() * weights,
                Prior::Ard => kl::kl_ard_t(la).sum() * weights,
                Prior::Kingma => kl::kl_kingma_t(la).sum() * weights,
                Prior::GroupArd => {
                    let theta2 = Self::flat(params, &mu_name(&weight_name(&l.name))).powi_scalar(2);
                    // σ² consistent with the clipped α: σ² = α·(θ² + ε).
                    let s2 = la.exp() * (theta2.clone() + THETA2_EPS);
                    let shape = [l.units(), l.fan_in()];
                    kl::kl_group_ard_t(theta2.reshape(shape), s2.reshape(shape))
                }
            };
            total = total + term;
        }
        total
    }

    /// Host-side clipped log α per weight of each non-point layer (per-layer forms repeated
    /// over the layer's weights), `None` for point layers.
    pub fn log_alpha(&self, params: &ParamSet) -> Vec<(String, Option<Vec<f32>>)> {
        self.layers
            .iter()
            .map(|l| {
                let v = self.log_alpha_t(params, l).map(|t| {
                    let v = host_vec(&t);
                    if v.len() == 1 && l.numel() > 1 {
                        vec![v[0]; l.numel()]
                    } else {
                        v
                    }
                });
                (l.name.clone(), v)
            })
            .collect()
    }

    /// Per-weight keep mask of the mode: `log α < 3`; for `group-ard` also the unit's group
    /// `log α_g = log(Σσ²/Σθ²) < 3` (a unit whose prior variance λ_g → 0 is removed). Point
    /// layers keep everything; variance layers nothing (their mean is 0).
    pub fn keep_mask(&self, params: &ParamSet) -> Vec<(String, Vec<bool>)> {
        let las = self.log_alpha(params);
        self.layers
            .iter()
            .zip(las)
            .map(|(l, (_, la))| {
                let mask = match (l.q, la) {
                    (Posterior::Point, _) | (_, None) => vec![true; l.numel()],
                    (Posterior::Variance, _) => vec![false; l.numel()],
                    (_, Some(la)) => {
                        let mut m: Vec<bool> = la.iter().map(|&a| a < PRUNE_LOG_ALPHA).collect();
                        if self.prior == Prior::GroupArd {
                            let theta =
                                host_vec(params.flat(&mu_name(&weight_name(&l.name))).expect("mu"));
                            let k = l.fan_in();
                            for g in 0..l.units() {
                                let r = g * k..(g + 1) * k;
                                let (mut s2, mut t2) = (0.0f64, 0.0f64);
                                for j in r.clone() {
                                    let th = theta[j] as f64;
                                    s2 += (la[j] as f64).exp() * (th * th + THETA2_EPS as f64);
                                    t2 += th * th;
                                }
                                if (s2 / t2.max(1e-30)).ln() > PRUNE_LOG_ALPHA as f64 {
                                    m[r].iter_mut().for_each(|x| *x = false);
                                }
                            }
                        }
                        m
                    }
                };
                (l.name.clone(), mask)
            })
            .collect()
    }

    /// The mode as a plain network on the architecture's layout: `θ ⊙ mask` (see
    /// [`VModel::keep_mask`]), zeros for variance layers and zero-mean ablated ones, biases
    /// unchanged.
    pub fn mode(&self, params: &ParamSet) -> ParamSet {
        let device = params.tensors()[0].device();
        let masks = self.keep_mask(params);
        let base = self.arch.layout();
        let values = base
            .entries()
            .iter()
            .map(|e| {
                let mu = params.flat(&mu_name(&e.name)).ok().map(host_vec);
                if e.role != Role::Weight {
                    return mu.expect("biases, normalisation layers and state have means");
                }
                let layer = e.name.trim_end_matches(".weight");
                if self.is_zero_mean(layer) {
                    return vec![0.0; e.numel()];
                }
                let mask = &masks.iter().find(|(n, _)| n == layer).expect("layer").1;
                match mu {
                    None => vec![0.0; e.numel()],
                    Some(v) => v
                        .iter()
                        .zip(mask)
                        .map(|(x, &k)| if k { *x } else { 0.0 })
                        .collect(),
                }
            })
            .collect();
        ParamSet::from_vecs(base, values, &device).expect("architecture-shaped values")
    }

    /// Sparsity and α statistics of the current parameters.
    pub fn stats(&self, params: &ParamSet) -> Stats {
        let las = self.log_alpha(params);
        let masks = self.keep_mask(params);
        let mut layers = Vec::new();
        let (mut total, mut kept) = (0usize, 0usize);
        for ((l, (_, la)), (_, m)) in self.layers.iter().zip(las).zip(masks) {
            let n_keep = m.iter().filter(|&&k| k).count();
            total += l.numel();
            kept += n_keep;
            let k = l.fan_in();
            let removed = (0..l.units())
                .filter(|g| m[g * k..(g + 1) * k].iter().all(|&x| !x))
                .count();
            layers.push(LayerStats {
                name: l.name.clone(),
                weights: l.numel(),
                sparsity: 1.0 - n_keep as f64 / l.numel() as f64,
                log_alpha_mean: la
                    .map(|v| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64),
                units: l.units(),
                units_removed: removed,
            });
        }
        Stats {
            layers,
            compression: if kept == 0 {
                f64::INFINITY
            } else {
                total as f64 / kept as f64
            },
        }
    }

    /// Metadata of a file holding this model.
    pub fn meta(&self) -> FileMeta {
        let mut m = FileMeta::new(KIND, &self.arch.to_string());
        m.extra = json!({ "variational": self.config });
        m
    }

    /// Rebuilds the model described by a file's metadata (a variational model, or a `vtrain`
    /// checkpoint whose `of` is one).
    pub fn from_meta(meta: &FileMeta, path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        let m = if meta.kind == KIND {
            meta.clone()
        } else {
            serde_json::from_value::<FileMeta>(meta.extra["of"].clone())
                .map_err(|_| bad(format!("holds a `{}`, not a variational model", meta.kind)))?
        };
        if m.kind != KIND {
            return Err(bad(format!(
                "holds a `{}`, not a variational model",
                m.kind
            )));
        }
        let arch: Arch = m.arch.parse().map_err(|e: Error| bad(e.to_string()))?;
        let config: VConfig = serde_json::from_value(m.extra["variational"].clone())
            .map_err(|e| bad(format!("invalid variational metadata: {e}")))?;
        VModel::new(arch, config).map_err(|e| bad(e.to_string()))
    }
}

/// Whether a file's metadata describes a variational model or a `vtrain` checkpoint.
pub fn is_variational(meta: &FileMeta) -> bool {
    meta.kind == KIND || (meta.kind == "checkpoint" && meta.extra["of"]["kind"] == KIND)
}

/// Saves a variational model (kind `variational`; tensors under their prefixed names, the
/// configuration in the metadata, plus `extra` entries), atomically.
pub fn save_vmodel(path: &Path, model: &VModel, params: &ParamSet, extra: Value) -> Result<()> {
    let mut meta = model.meta();
    if let (Value::Object(m), Value::Object(x)) = (&mut meta.extra, extra) {
        m.extend(x);
    }
    save(path, &meta, &[("", params)])
}

/// Loads a variational model or the parameters of a `vtrain` checkpoint, checking every name
/// and shape against the layout its metadata implies. Returns the model's metadata (for a
/// checkpoint, the metadata of the model it is a checkpoint of).
pub fn load_vmodel(path: &Path, device: &Device) -> Result<(VModel, ParamSet, FileMeta)> {
    vmodel_from(Loaded::open(path)?, path, device)
}

/// [`load_vmodel`] of a file already read.
pub fn vmodel_from(
    mut f: Loaded,
    path: &Path,
    device: &Device,
) -> Result<(VModel, ParamSet, FileMeta)> {
    if !is_variational(&f.meta) {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("holds a `{}`, not a variational model", f.meta.kind),
        });
    }
    let model = VModel::from_meta(&f.meta, path)?;
    let kind = f.meta.kind.clone();
    // The model's own metadata (for a checkpoint: what it is a checkpoint of).
    let meta = if kind == KIND {
        f.meta.clone()
    } else {
        serde_json::from_value(f.meta.extra["of"].clone()).expect("checked by from_meta")
    };
    let params = if kind == KIND {
        let p = f.take_set("", model.layout(), device)?;
        f.finish()?;
        p
    } else {
        // A training checkpoint: the parameters; the optimiser state is left alone.
        f.take_set("params/", model.layout(), device)?
    };
    Ok((model, params, meta))
}

/// Per-layer statistics of a variational model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerStats {
    /// Layer name.
    pub name: String,
    /// |W|.
    pub weights: usize,
    /// Fraction of weights dropped in the mode.
    pub sparsity: f64,
    /// Mean clipped log α over the layer's weights (`None` for point layers).
    pub log_alpha_mean: Option<f64>,
    /// Output units.
    pub units: usize,
    /// Units whose incoming weights are all dropped.
    pub units_removed: usize,
}

/// Statistics of a variational model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Per layer, forward order.
    pub layers: Vec<LayerStats>,
    /// `|W| / |W ≠ 0|` over all weights (biases excluded) of the mode.
    pub compression: f64,
}

impl Stats {
    /// `{layer: f(layer)}` as a JSON object.
    pub fn by_layer(&self, f: impl Fn(&LayerStats) -> Value) -> Value {
        let m: Map<String, Value> = self.layers.iter().map(|l| (l.name.clone(), f(l))).collect();
        Value::Object(m)
    }

    /// `sparsity`, `compression`, `log_alpha_mean` and `units_removed` as JSON entries.
    pub fn json_entries(&self) -> Vec<(String, Value)> {
        vec![
            ("sparsity".into(), self.by_layer(|l| json!(l.sparsity))),
            ("compression".into(), json!(self.compression)),
            (
                "log_alpha_mean".into(),
                self.by_layer(|l| json!(l.log_alpha_mean)),
            ),
            (
                "units_removed".into(),
                self.by_layer(|l| json!(l.units_removed)),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;

    fn with(model: &VModel, values: &[(&str, Vec<f32>)]) -> ParamSet {
        let dev = backend::device();
        let mut vals = model.init(0, &dev).to_vecs();
        for (name, v) in values {
            vals[model.layout().index_of(name).unwrap()] = v.clone();
        }
        ParamSet::from_vecs(model.layout().clone(), vals, &dev).unwrap()
    }

    #[test]
    fn layouts_hold_both_sets_under_prefixes() {
        let arch: Arch = "mlp:4-3-2".parse().unwrap();
        let names = |m: Method| -> Vec<String> {
            let model = VModel::new(arch.clone(), VConfig::new(m)).unwrap();
            model
                .layout()
                .entries()
                .iter()
                .map(|e| e.name.clone())
                .collect()
        };
        assert_eq!(
            names(Method::SparseVd),
            [
                "mu/fc1.weight",
                "mu/fc1.bias",
                "mu/fc2.weight",
                "mu/fc2.bias",
                "log_sigma2/fc1.weight",
                "log_sigma2/fc2.weight"
            ]
        );
        assert_eq!(
            names(Method::LayerwiseAlpha)[4..],
            ["log_alpha/fc1.weight", "log_alpha/fc2.weight"]
        );
        assert_eq!(names(Method::Gaussian).len(), 4);
        // By default the hidden layer is zero-mean and the output layer a point estimate.
        assert_eq!(
            names(Method::Variance),
            [
                "mu/fc1.bias",
                "mu/fc2.weight",
                "mu/fc2.bias",
                "log_sigma2/fc1.weight"
            ]
        );
        let all = VConfig {
            variance_layers: VarianceLayers::All,
            ..VConfig::new(Method::Variance)
        };
        let all: Vec<String> = VModel::new(arch.clone(), all)
            .unwrap()
            .layout()
            .entries()
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(
            all,
            [
                "mu/fc1.bias",
                "mu/fc2.bias",
                "log_sigma2/fc1.weight",
                "log_sigma2/fc2.weight"
            ]
        );
    }

    #[test]
    fn mode_masks_weights_with_log_alpha_above_3_and_stats_count_them() {
        let model =
            VModel::new("mlp:2-2".parse().unwrap(), VConfig::new(Method::SparseVd)).unwrap();
        // θ = 1: log α = log σ²; two of four weights above 3.
        let p = with(
            &model,
            &[
                ("mu/fc1.weight", vec![1.0, -1.0, 1.0, 1.0]),
                ("log_sigma2/fc1.weight", vec![-5.0, 4.0, 2.9, 3.5]),
            ],
        );
        let mode = model.mode(&p).to_vecs();
        assert_eq!(mode[0], vec![1.0, 0.0, 1.0, 0.0]);
        let s = model.stats(&p);
        assert_eq!(s.layers[0].sparsity, 0.5);
        assert_eq!(s.compression, 2.0);
        assert_eq!(s.layers[0].units_removed, 0);
        let mean = (-5.0 + 4.0 + 2.9 + 3.5) / 4.0;
        assert!((s.layers[0].log_alpha_mean.unwrap() - mean).abs() < 1e-5);
    }

    #[test]
    fn group_ard_removes_a_unit_whose_group_alpha_is_large() {
        let model =
            VModel::new("mlp:3-2".parse().unwrap(), VConfig::new(Method::GroupArd)).unwrap();
        // θ = 1, so log α = log σ². Unit 0: log α = (2, 5, 5): its first weight alone would be
        // kept, but the group α = mean(α) = e^4.6 > e^3 removes the unit. Unit 1: all kept.
        let p = with(
            &model,
            &[
                ("mu/fc1.weight", vec![1.0; 6]),
                (
                    "log_sigma2/fc1.weight",
                    vec![2.0, 5.0, 5.0, -6.0, -6.0, -6.0],
                ),
            ],
        );
        let s = model.stats(&p);
        assert_eq!(s.layers[0].units_removed, 1);
        let mode = model.mode(&p).to_vecs();
        assert_eq!(mode[0], vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        // Sparse VD on the same values keeps the first weight.
        let svd = VModel::new("mlp:3-2".parse().unwrap(), VConfig::new(Method::SparseVd)).unwrap();
        let p = ParamSet::from_vecs(svd.layout().clone(), p.to_vecs(), &backend::device()).unwrap();
        assert_eq!(
            svd.mode(&p).to_vecs()[0],
            vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn files_round_trip_and_describe_their_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.safetensors");
        let model = VModel::new(
            "mlp:3-4-2".parse().unwrap(),
            VConfig {
                variance_layers: VarianceLayers::Named(vec!["fc1".into()]),
                ..VConfig::new(Method::Variance)
            },
        )
        .unwrap();
        let p = model.init(5, &backend::device());
        save_vmodel(&path, &model, &p, json!({"eval_seed": 3})).unwrap();
        let (m2, p2, meta) = load_vmodel(&path, &backend::device()).unwrap();
        assert_eq!(m2.config, model.config);
        assert_eq!(m2.layout(), model.layout());
        assert_eq!(p2.to_vecs(), p.to_vecs());
        assert_eq!(meta.extra["eval_seed"], 3);
        assert_eq!(m2.layer("fc2").q, Posterior::Point);
    }

    #[test]
    fn bad_configurations_name_the_flag() {
        let arch: Arch = "mlp:3-2".parse().unwrap();
        let err = |c: VConfig| VModel::new(arch.clone(), c).unwrap_err().to_string();
        let mut c = VConfig::new(Method::Variance);
        c.variance_layers = VarianceLayers::Named(vec!["fc7".into()]);
        assert!(err(c).contains("--variance-layers"));
        let mut c = VConfig::new(Method::Gaussian);
        c.dropout_rate = 1.0;
        assert!(err(c).contains("--dropout-rate"));
        let mut c = VConfig::new(Method::Ard);
        c.init.std = Some(-1.0);
        assert!(err(c).contains("--init-std"));
    }
}
