//! The local-reparameterisation weights source (Kingma et al. 2015, §2.2).
//!
//! For a layer with weight mean θ and weight variance `v` (`v = α·θ²`, or `σ²` for variance
//! layers), the pre-activation of each example and unit is Gaussian with
//!
//! - mean `γ = x·θᵀ + b` (dense) or `conv(x, θ) + b` — the bias goes into the mean only;
//! - variance `δ = (x⊙x)·vᵀ` or `conv(x⊙x, v)`;
//!
//! and is sampled as `γ + √(δ + ε)·ξ`, `ξ ~ N(0, 1)` per example and unit (`ε = 1e−8`; `1e−16` for
//! variance layers, whose mean is the bias alone). Sampling the output instead of the weights
//! gives every example its own weight sample at the cost of two ops, with lower-variance
//! gradients. The noise ξ is drawn on the host, seeded from an explicit ChaCha8 stream
//! ([`super::noise`]), so a run and an evaluation are reproducible byte for byte. On the CPU a
//! dense layer with a weight mean and variance is one op ([`backend::lrt_dense`]).

use std::cell::RefCell;

use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData, activation};
use rand_chacha::ChaCha8Rng;

use super::fused::{self, KlKind, Pass};
use super::noise::standard_normals;
use super::{LayerInfo, LrtVariance, Posterior, Prior, VModel, log_sigma2_name, mu_name};
use crate::backend::{self, lrt_dense, lrt_dense_scaled, with_host};
use crate::params::{ParamSet, host_vec};
use crate::weights::{Weights, bias_name, conv2d, dense, weight_name};

/// `ε` added to the LRT variance before the square root.
pub const LRT_EPS: f32 = 1e-8;
/// `ε` for variance layers (Neklyudov et al.).
pub const VARIANCE_EPS: f32 = 1e-16;

/// Mean and variance of a layer's weights.
struct WeightMoments<const D: usize> {
    /// `None`: zero-mean weights.
    mean: Option<Tensor<D>>,
    /// `None`: a point estimate.
    var: Option<Tensor<D>>,
    bias: Tensor<1>,
}

/// The fused host pass of `model`'s additive layers under a per-weight log-uniform or ARD prior
/// (`sparse-vd`, `ard`; with the model's clip and variance form) for parameters on the CPU;
/// `None` for the other methods and on a GPU.
pub fn fused_pass(model: &VModel, params: &ParamSet) -> Option<Pass> {
    // On a GPU the per-weight terms are tensor expressions ([`VModel::log_alpha_t`],
    // [`VModel::kl_given`]) instead.
    if !backend::on_host(&params.tensors()[0])
        || !model.layers().iter().any(|l| l.q == Posterior::Additive)
    {
        return None;
    }
    let kl = match model.prior {
        Prior::LogUniform => KlKind::LogUniform,
        Prior::Ard => KlKind::Ard,
        _ => return None,
    };
    Some(Pass {
        kl,
        clip: model.config.log_alpha_clip as f32,
        variance: model.config.lrt_variance,
    })
}

/// A sampling weights source: the model's layers computed with the local reparameterisation
/// trick from a variational parameter set, with noise from a ChaCha8 stream.
pub struct VarWeights<'a> {
    model: &'a VModel,
    params: &'a ParamSet,
    /// Clipped log α per layer as a tensor expression; `None` for point layers and for
    /// layers computed by the fused pass.
    log_alphas: Vec<Option<Tensor<1>>>,
    /// Weight variance and KL per layer from [`fused`] (per-weight `sparse-vd` / `ard`).
    fused: Vec<Option<(Tensor<1>, Tensor<1>)>>,
    noise: RefCell<ChaCha8Rng>,
}

impl<'a> VarWeights<'a> {
    /// A source over `params` (the model's layout) drawing ξ from `rng`. Computes every
    /// layer's clipped log α once ([`VModel::log_alphas_t`]), or, for the per-weight additive
    /// posteriors of `sparse-vd` and `ard` on the CPU, the weight variances and KL in one fused
    /// host pass ([`fused`]).
    pub fn new(model: &'a VModel, params: &'a ParamSet, rng: ChaCha8Rng) -> Self {
        let fused = fused_pass(model, params);
        let mut log_alphas = Vec::with_capacity(model.layers().len());
        let mut fused_terms = Vec::with_capacity(model.layers().len());
        for layer in model.layers() {
            match (layer.q, fused) {
                (Posterior::Additive, Some(pass)) => {
                    let theta = params
                        .flat(&mu_name(&weight_name(&layer.name)))
                        .expect("variational layout")
                        .clone();
                    let ls2 = params
                        .flat(&log_sigma2_name(&layer.name))
                        .expect("variational layout")
                        .clone();
                    let t = fused::terms(&host_vec(&theta), &host_vec(&ls2), pass);
                    let n = t.var.len();
                    let var = Tensor::<1>::from_data(TensorData::new(t.var, [n]), &theta.device());
                    let var = fused::splice(var, &theta, &ls2, &t.var_dtheta, &t.var_dls2);
                    let kl = fused::splice_sum(t.kl, &theta, &ls2, &t.kl_dtheta, &t.kl_dls2);
                    log_alphas.push(None);
                    fused_terms.push(Some((var, kl)));
                }
                _ => {
                    log_alphas.push(model.log_alpha_t(params, layer));
                    fused_terms.push(None);
                }
            }
        }
        Self {
            model,
            params,
            log_alphas,
            fused: fused_terms,
            noise: RefCell::new(rng),
        }
    }

    /// A source whose fused layers (see [`fused_pass`]) take their weight variance and KL as
    /// given, `fused[i] = (variance, KL)` for layer `i`, instead of computing them from
    /// `params`: the training loop's host chain rule passes the variances as autodiff leaves
    /// and the KL as a constant ([`super::objective::Elbo`]).
    pub fn with_fused(
        model: &'a VModel,
        params: &'a ParamSet,
        fused: Vec<Option<(Tensor<1>, Tensor<1>)>>,
        rng: ChaCha8Rng,
    ) -> Self {
        let log_alphas = model
            .layers()
            .iter()
            .zip(&fused)
            .map(|(l, f)| match f {
                Some(_) => None,
                None => model.log_alpha_t(params, l),
            })
            .collect();
        Self {
            model,
            params,
            log_alphas,
            fused,
            noise: RefCell::new(rng),
        }
    }

    /// The same source drawing its noise from `rng` instead: another sample of the network
    /// from one set of log α / fused terms (the multi-sample objective of
    /// [`super::objective::Elbo::with_samples`]).
    pub fn with_noise(&self, rng: ChaCha8Rng) -> Self {
        Self {
            model: self.model,
            params: self.params,
            log_alphas: self.log_alphas.clone(),
            fused: self.fused.clone(),
            noise: RefCell::new(rng),
        }
    }

    /// The KL term of the ELBO for these parameters ([`VModel::kl`], with the fused layers'
    /// KL from the fused pass).
    pub fn kl(&self) -> Tensor<1> {
        let mut total = self.model.kl_given(self.params, &self.log_alphas);
        for (_, kl) in self.fused.iter().flatten() {
            total = total + kl.clone();
        }
        total
    }

    fn layer_index(&self, layer: &LayerInfo) -> usize {
        self.model
            .layers()
            .iter()
            .position(|l| l.name == layer.name)
            .expect("a layer of the model")
    }

    fn layer_log_alpha(&self, layer: &LayerInfo) -> Tensor<1> {
        self.log_alphas[self.layer_index(layer)]
            .clone()
            .expect("a stochastic layer")
    }

    /// The layer's bias mean; zeros for a layer without a bias (one followed by a
    /// normalisation layer).
    fn bias(&self, layer: &LayerInfo) -> Tensor<1> {
        let name = mu_name(&bias_name(&layer.name));
        match self.params.layout().index_of(&name) {
            Ok(_) => self.params.get::<1>(&name),
            Err(_) => {
                let device = self.params.tensors()[0].device();
                Tensor::zeros([layer.units()], &device)
            }
        }
    }

    fn moments<const D: usize>(&self, layer: &LayerInfo) -> WeightMoments<D> {
        let p = self.params;
        let bias = self.bias(layer);
        let theta = || p.get::<D>(&mu_name(&weight_name(&layer.name)));
        let shape: [usize; D] = layer.shape.clone().try_into().expect("layer rank");
        let (mean, var) = match layer.q {
            Posterior::Point => (Some(theta()), None),
            Posterior::Variance => {
                let s2 = p.get::<D>(&log_sigma2_name(&layer.name)).exp();
                (None, Some(s2))
            }
            Posterior::Additive => {
                let i = self.layer_index(layer);
                let var = match &self.fused[i] {
                    Some((var, _)) => var.clone().reshape(shape),
                    None => match self.model.config.lrt_variance {
                        LrtVariance::AlphaTheta2 => {
                            let la = self.layer_log_alpha(layer).reshape(shape);
                            la.exp() * theta().powi_scalar(2)
                        }
                        LrtVariance::Sigma2 => p.get::<D>(&log_sigma2_name(&layer.name)).exp(),
                    },
                };
                (Some(theta()), Some(var))
            }
            Posterior::Shared { .. } | Posterior::Fixed { .. } => {
                let a = self.layer_log_alpha(layer).exp().reshape([1; D]);
                let t = theta();
                (Some(t.clone()), Some(t.powi_scalar(2) * a))
            }
        };
        // The zero-mean ablation: the weights keep their variance, lose their mean.
        let mean = mean.filter(|_| !self.model.is_zero_mean(&layer.name));
        WeightMoments { mean, var, bias }
    }

    /// Output mean `[b, out]` and variance (`None` for point layers) of a dense layer.
    pub fn dense_moments(&self, layer: &str, x: Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>) {
        let info = self.model.layer(layer);
        Self::dense_moments_of(info, self.moments::<2>(info), x)
    }

    /// [`VarWeights::dense_moments`] given the layer's weight moments.
    fn dense_moments_of(
        info: &LayerInfo,
        m: WeightMoments<2>,
        x: Tensor<2>,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let [b, _] = x.dims();
        let var = m.var.map(|v| dense(x.clone() * x.clone(), v, None));
        let mean = match m.mean {
            Some(w) => dense(x, w, Some(m.bias)),
            None => m.bias.reshape([1, info.units()]).expand([b, info.units()]),
        };
        (mean, var)
    }

    /// Output mean `[b, out, h', w']` and variance (`None` for point layers) of a convolution.
    pub fn conv2d_moments(
        &self,
        layer: &str,
        x: Tensor<4>,
        options: ConvOptions<2>,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        let info = self.model.layer(layer);
        let m = self.moments::<4>(info);
        let var = m
            .var
            .map(|v| conv2d(x.clone() * x.clone(), v, None, options.clone()));
        let mean = match m.mean {
            Some(w) => conv2d(x, w, Some(m.bias), options),
            None => {
                let v = var.as_ref().expect("variance layers have a variance");
                m.bias.reshape([1, info.units(), 1, 1]).expand(v.dims())
            }
        };
        (mean, var)
    }

    /// The sampled output noise `√(v + ε)·ξ` for an output variance `v`, ξ ~ N(0, 1) from the
    /// stream. Under autodiff on the CPU it is the first-order form `v·K + C` with host constants
    /// `K = ξ / (2√(v + ε))` and `C = √(v + ε)·ξ − v·K`: the same value and the same gradient
    /// `∂/∂v = K`, in one multiply and one add instead of flex's `sqrt`, whose backward is a
    /// scalar `powf` per element.
    fn noise<const D: usize>(&self, v: Tensor<D>, eps: f32) -> Tensor<D> {
        let shape: [usize; D] = v.dims();
        let device = v.device();
        let xi = standard_normals(&mut self.noise.borrow_mut(), shape.iter().product());
        if !v.is_tracked() || !backend::on_host(&v) {
            return (v + eps).sqrt() * Tensor::from_data(TensorData::new(xi, shape), &device);
        }
        let (k, c): (Vec<f32>, Vec<f32>) = with_host(&v, |vals| {
            vals.iter()
                .zip(xi)
                .map(|(&v, xi)| {
                    let sd = (v + eps).sqrt();
                    let k = xi / (2.0 * sd);
                    (k, sd * xi - v * k)
                })
                .unzip()
        });
        let k = Tensor::from_data(TensorData::new(k, shape), &device);
        let c = Tensor::from_data(TensorData::new(c, shape), &device);
        v * k + c
    }

    fn eps(&self, layer: &str) -> f32 {
        match self.model.layer(layer).q {
            Posterior::Variance => VARIANCE_EPS,
            _ => LRT_EPS,
        }
    }

    /// A dense layer, `act` a ReLU if `relu`: with a weight mean and variance one
    /// [`lrt_dense`] op (the mean plus [`VarWeights::noise`] up to rounding, ξ drawn alike;
    /// [`lrt_dense_scaled`] for one α per layer), a point layer one [`backend::dense`], a
    /// variance layer its moments and noise.
    fn dense_act(&self, layer: &str, x: Tensor<2>, relu: bool) -> Tensor<2> {
        let info = self.model.layer(layer);
        if matches!(info.q, Posterior::Shared { .. } | Posterior::Fixed { .. })
            && !self.model.is_zero_mean(layer)
        {
            // v = α·θ⊙θ with one α for the layer: formed inside the op.
            let p = self.params;
            let theta = p.get::<2>(&mu_name(&weight_name(layer)));
            let bias = self.bias(info);
            let alpha = self.layer_log_alpha(info).exp();
            let [n, _] = x.dims();
            let xi = self.standard_normal([n, info.units()], &x.device());
            return lrt_dense_scaled(x, theta, bias, alpha, xi, self.eps(layer), relu);
        }
        let m = self.moments::<2>(info);
        match (m.mean, m.var) {
            (Some(theta), Some(v)) => {
                let [n, _] = x.dims();
                let xi = self.standard_normal([n, info.units()], &x.device());
                lrt_dense(x, theta, m.bias, v, xi, self.eps(layer), relu)
            }
            (Some(theta), None) => backend::dense(x, theta, Some(m.bias), relu),
            (None, var) => {
                let m = WeightMoments {
                    mean: None,
                    var,
                    bias: m.bias,
                };
                let (mean, var) = Self::dense_moments_of(info, m, x);
                let y = match var {
                    None => mean,
                    Some(v) => mean + self.noise(v, self.eps(layer)),
                };
                if relu { activation::relu(y) } else { y }
            }
        }
    }

    /// `shape` standard normal values from the noise stream, row-major.
    fn standard_normal<const D: usize>(&self, shape: [usize; D], device: &Device) -> Tensor<D> {
        let xi = standard_normals(&mut self.noise.borrow_mut(), shape.iter().product());
        Tensor::from_data(TensorData::new(xi, shape), device)
    }
}

impl Weights for VarWeights<'_> {
    /// The mean of a point parameter (a normalisation layer's γ, β or running statistics).
    fn param(&self, name: &str) -> Tensor<1> {
        self.params.get(&mu_name(name))
    }

    fn dense(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        self.dense_act(layer, x, false)
    }

    fn dense_relu(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        self.dense_act(layer, x, true)
    }

    fn conv2d(&self, layer: &str, x: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
        let (mean, var) = self.conv2d_moments(layer, x, options);
        match var {
            None => mean,
            Some(v) => mean + self.noise(v, self.eps(layer)),
        }
    }

    /// On the means (the scale and shift are point estimates).
    fn layer_norm(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        crate::weights::norm::layer_norm(
            x,
            self.params.get::<1>(&mu_name(&weight_name(layer))),
            self.params.get::<1>(&mu_name(&bias_name(layer))),
        )
    }

    /// Eval mode on the means (running statistics); training wraps the source in
    /// [`crate::weights::norm::TrainMode`] for batch statistics.
    fn batch_norm2d(&self, layer: &str, x: Tensor<4>) -> Tensor<4> {
        let get = |name: String| self.params.get::<1>(&mu_name(&name));
        crate::weights::norm::batch_norm_eval_4d(
            x,
            get(weight_name(layer)),
            get(bias_name(layer)),
            get(crate::weights::norm::running_mean_name(layer)),
            get(crate::weights::norm::running_var_name(layer)),
        )
    }

    /// Eval mode on the means (running statistics); training wraps the source in
    /// [`crate::weights::norm::TrainMode`] for batch statistics.
    fn batch_norm(&self, layer: &str, x: Tensor<2>) -> Tensor<2> {
        let get = |name: String| self.params.get::<1>(&mu_name(&name));
        crate::weights::norm::batch_norm_eval(
            x,
            get(weight_name(layer)),
            get(crate::weights::bias_name(layer)),
            get(crate::weights::norm::running_mean_name(layer)),
            get(crate::weights::norm::running_var_name(layer)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::backend;
    use crate::variational::{LOG_ALPHA_CLIP, Method, VConfig, log_alpha_name};
    use rand::Rng;
    use rand::SeedableRng;
    use rand_distr::StandardNormal;

    fn set(model: &VModel, name: &str, values: Vec<f32>, p: &ParamSet) -> ParamSet {
        let dev = backend::device();
        let mut vals = p.to_vecs();
        let i = model.layout().index_of(name).unwrap();
        vals[i] = values;
        ParamSet::from_vecs(model.layout().clone(), vals, &dev).unwrap()
    }

    fn host(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// α = σ²/θ²: the LRT variance equals (x⊙x)·σ², and log α is log σ² − log θ².
    #[test]
    fn alpha_is_sigma2_over_theta2() {
        let dev = backend::device();
        let arch: Arch = "mlp:3-2".parse().unwrap();
        let model = VModel::new(arch, VConfig::new(Method::SparseVd)).unwrap();
        let p = model.init(0, &dev);
        let theta = vec![0.5f32, -2.0, 0.1, 1.0, -0.3, 0.05];
        let sigma2 = [0.01f32, 0.5, 0.002, 4.0, 0.09, 0.0001];
        let p = set(&model, "mu/fc1.weight", theta.clone(), &p);
        let p = set(
            &model,
            "log_sigma2/fc1.weight",
            sigma2.iter().map(|s| s.ln()).collect(),
            &p,
        );
        let la = &model.log_alpha(&p)[0].1.clone().unwrap();
        for j in 0..6 {
            let want = (sigma2[j] / theta[j].powi(2)).ln();
            assert!((la[j] - want).abs() < 1e-4, "{j}: {} vs {want}", la[j]);
        }
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, -2.0, 0.5], [1, 3]), &dev);
        let w = VarWeights::new(&model, &p, ChaCha8Rng::seed_from_u64(0));
        let (_, var) = w.dense_moments("fc1", x);
        let var = host(var.unwrap());
        let xs = [1.0f32, 4.0, 0.25];
        for o in 0..2 {
            let want: f32 = (0..3).map(|i| xs[i] * sigma2[o * 3 + i]).sum();
            assert!((var[o] - want).abs() < 1e-4 * want, "{} vs {want}", var[o]);
        }
    }

    /// log α beyond ±8 is clipped both in the forward variance and in the KL.
    #[test]
    fn clipping_applies_in_forward_and_kl() {
        let dev = backend::device();
        let arch: Arch = "mlp:1-1".parse().unwrap();
        for method in [Method::SparseVd, Method::Ard] {
            let model = VModel::new(arch.clone(), VConfig::new(method)).unwrap();
            let p = model.init(0, &dev);
            let p = set(&model, "mu/fc1.weight", vec![0.1], &p);
            let p = set(&model, "mu/fc1.bias", vec![0.0], &p);
            // log σ² − log θ² = 15 and −15.
            for (raw, clipped) in [(15.0f32, LOG_ALPHA_CLIP), (-15.0, -LOG_ALPHA_CLIP)] {
                let ls2 = raw + 0.01f32.ln();
                let p = set(&model, "log_sigma2/fc1.weight", vec![ls2], &p);
                let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32], [1, 1]), &dev);
                let w = VarWeights::new(&model, &p, ChaCha8Rng::seed_from_u64(0));
                let var = host(w.dense_moments("fc1", x).1.unwrap())[0];
                let want = clipped.exp() * 0.01;
                assert!(
                    (var / want - 1.0).abs() < 1e-3,
                    "{raw}: var {var} vs {want}"
                );
                let kl = model.kl(&p).into_scalar::<f32>() as f64;
                let want_kl = match method {
                    Method::SparseVd => crate::variational::kl::kl_log_uniform(clipped as f64),
                    _ => crate::variational::kl::kl_ard(clipped as f64),
                };
                assert!((kl - want_kl).abs() < 1e-5, "{raw}: KL {kl} vs {want_kl}");
            }
        }
        // Per-layer log α: clipped to [−20, 20].
        let model = VModel::new(arch, VConfig::new(Method::LayerwiseAlpha)).unwrap();
        let p = model.init(0, &dev);
        let p = set(&model, &log_alpha_name("fc1"), vec![30.0], &p);
        assert_eq!(model.log_alpha(&p)[0].1.as_ref().unwrap()[0], 20.0);
    }

    /// The ports' options: with `--log-alpha-clip 10` log α = 9 is not clipped and 15 is clipped
    /// to 10 (in forward and KL); with `--lrt-variance sigma2` the forward variance is σ² itself
    /// (no clip) while the KL still sees the clipped log α, for the fused (`sparse-vd`) and the
    /// tensor (`group-ard`) paths.
    #[test]
    fn port_clip_and_sigma2_variance() {
        let dev = backend::device();
        let arch: Arch = "mlp:1-1".parse().unwrap();
        for method in [Method::SparseVd, Method::GroupArd] {
            for variance in [LrtVariance::AlphaTheta2, LrtVariance::Sigma2] {
                let mut cfg = VConfig::new(method);
                cfg.log_alpha_clip = 10.0;
                cfg.lrt_variance = variance;
                let model = VModel::new(arch.clone(), cfg).unwrap();
                let p = model.init(0, &dev);
                let p = set(&model, "mu/fc1.weight", vec![0.1], &p);
                for (raw, clipped) in [(9.0f32, 9.0f32), (15.0, 10.0), (-15.0, -10.0)] {
                    let ls2 = raw + 0.01f32.ln();
                    let p = set(&model, "log_sigma2/fc1.weight", vec![ls2], &p);
                    let la = model.log_alpha(&p)[0].1.clone().unwrap()[0];
                    assert!((la - clipped).abs() < 1e-3, "{method} {raw}: log α {la}");
                    let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32], [1, 1]), &dev);
                    let w = VarWeights::new(&model, &p, ChaCha8Rng::seed_from_u64(0));
                    let var = host(w.dense_moments("fc1", x).1.unwrap())[0];
                    let want = match variance {
                        LrtVariance::AlphaTheta2 => clipped.exp() * 0.01,
                        LrtVariance::Sigma2 => ls2.exp(),
                    };
                    assert!(
                        (var / want - 1.0).abs() < 1e-3,
                        "{method} {variance:?} {raw}: var {var} vs {want}"
                    );
                    if method == Method::SparseVd {
                        let kl = w.kl().into_scalar::<f32>() as f64;
                        let want = crate::variational::kl::kl_log_uniform(f64::from(clipped));
                        assert!((kl - want).abs() < 1e-5, "{raw}: KL {kl} vs {want}");
                    }
                }
            }
        }
        let mut cfg = VConfig::new(Method::SparseVd);
        cfg.log_alpha_clip = 3.0;
        let err = VModel::new(arch, cfg).unwrap_err().to_string();
        assert!(err.contains("--log-alpha-clip"), "{err}");
    }

    /// The tracked noise `v·K + C` has the value `√(v + ε)·ξ` of the untracked form (same
    /// stream, same draws) and the gradient `ξ / (2√(v + ε))`.
    #[test]
    fn tracked_noise_has_the_sqrt_value_and_gradient() {
        let arch: Arch = "mlp:3-2".parse().unwrap();
        let model = VModel::new(arch, VConfig::new(Method::SparseVd)).unwrap();
        let p = model.init(0, &backend::device());
        let vals = vec![0.5f32, 2.0, 1e-3, 7.0, 0.0, 3.5];
        let eps = 1e-8f32;
        let plain =
            Tensor::<2>::from_data(TensorData::new(vals.clone(), [2, 3]), &backend::device());
        let w = VarWeights::new(&model, &p, ChaCha8Rng::seed_from_u64(5));
        let want = host(w.noise(plain, eps));
        let v = Tensor::<2>::from_data(
            TensorData::new(vals.clone(), [2, 3]),
            &backend::train_device(),
        )
        .require_grad();
        let w = VarWeights::new(&model, &p, ChaCha8Rng::seed_from_u64(5));
        let out = w.noise(v.clone(), eps);
        let got = host(out.clone().without_autodiff());
        let grads = out.sum().backward();
        let g = host(v.grad(&grads).unwrap());
        for i in 0..6 {
            assert!(
                (got[i] - want[i]).abs() <= 1e-6 * want[i].abs().max(1.0),
                "value {i}"
            );
            let sd = (vals[i] + eps).sqrt();
            let want_g = want[i] / sd / (2.0 * sd);
            assert!(
                (g[i] - want_g).abs() <= 1e-4 * want_g.abs().max(1.0),
                "grad {i}: {} vs {want_g}",
                g[i]
            );
        }
    }

    /// Welford accumulation of per-coordinate mean and variance.
    struct Moments {
        n: f64,
        mean: Vec<f64>,
        m2: Vec<f64>,
    }

    impl Moments {
        fn new(k: usize) -> Self {
            Self {
                n: 0.0,
                mean: vec![0.0; k],
                m2: vec![0.0; k],
            }
        }
        fn push(&mut self, v: &[f32]) {
            self.n += 1.0;
            for (i, &x) in v.iter().enumerate() {
                let d = x as f64 - self.mean[i];
                self.mean[i] += d / self.n;
                self.m2[i] += d * (x as f64 - self.mean[i]);
            }
        }
        fn var(&self, i: usize) -> f64 {
            self.m2[i] / (self.n - 1.0)
        }
    }

    /// Checks sampled moments against analytic ones within 5 standard errors.
    fn assert_close(what: &str, m: &Moments, mean: &[f32], var: &[f32]) {
        for i in 0..mean.len() {
            let (mu, v) = (mean[i] as f64, var[i] as f64);
            let se_mean = (v / m.n).sqrt();
            let se_var = v * (2.0 / (m.n - 1.0)).sqrt();
            assert!(
                (m.mean[i] - mu).abs() < 5.0 * se_mean + 1e-6,
                "{what} mean[{i}]: {} vs {mu}",
                m.mean[i]
            );
            assert!(
                (m.var(i) - v).abs() < 5.0 * se_var + 1e-9,
                "{what} var[{i}]: {} vs {v}",
                m.var(i)
            );
        }
    }

    /// Draws every weight from q and computes the layer with those weights (`forward`).
    fn mc_weights(
        model: &VModel,
        p: &ParamSet,
        layer: &str,
        samples: usize,
        forward: impl Fn(Tensor<1>, Tensor<1>) -> Vec<f32>,
        k: usize,
    ) -> Moments {
        let dev = backend::device();
        let info = model.layer(layer);
        let theta = p.flat(&mu_name(&weight_name(layer))).unwrap().clone();
        let la = model.log_alpha_t(p, info).unwrap();
        let sd = (la.exp() * theta.clone().powi_scalar(2)).sqrt();
        let bias = p.get::<1>(&mu_name(&bias_name(layer)));
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut m = Moments::new(k);
        let n = info.numel();
        for _ in 0..samples {
            let xi: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
            let xi = Tensor::<1>::from_data(TensorData::new(xi, [n]), &dev);
            let w = theta.clone() + sd.clone() * xi;
            m.push(&forward(w, bias.clone()));
        }
        m
    }

    fn random_params(model: &VModel, seed: u64) -> ParamSet {
        // θ ~ N(0, 1), log σ² ∈ [−4, 0]: α of order one, so the noise matters.
        let dev = backend::device();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let vals = model
            .layout()
            .entries()
            .iter()
            .map(|e| {
                (0..e.numel())
                    .map(|_| {
                        if e.name.starts_with("log_sigma2/") {
                            rng.random_range(-4.0f32..0.0)
                        } else {
                            rng.sample::<f32, _>(StandardNormal)
                        }
                    })
                    .collect()
            })
            .collect();
        ParamSet::from_vecs(model.layout().clone(), vals, &dev).unwrap()
    }

    #[test]
    fn lrt_dense_mean_and_variance_match_weight_sampling() {
        let dev = backend::device();
        let model =
            VModel::new("mlp:5-3".parse().unwrap(), VConfig::new(Method::SparseVd)).unwrap();
        let p = random_params(&model, 1);
        let (b, d) = (4usize, 5usize);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let xv: Vec<f32> = (0..b * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let x = Tensor::<2>::from_data(TensorData::new(xv, [b, d]), &dev);
        let w = VarWeights::new(&model, &p, ChaCha8Rng::seed_from_u64(3));
        let (mean, var) = w.dense_moments("fc1", x.clone());
        let (mean, var) = (host(mean), host(var.unwrap()));
        let s = 20_000;
        // 1. Weight sampling (one weight draw shared by the batch, many draws).
        let mc = mc_weights(
            &model,
            &p,
            "fc1",
            s,
            |wf, bias| host(dense(x.clone(), wf.reshape([3, 5]), Some(bias))),
            b * 3,
        );
        let var_eps: Vec<f32> = var.iter().map(|v| v + LRT_EPS).collect();
        assert_close("weights", &mc, &mean, &var_eps);
        // 2. The LRT sampling path itself.
        let mut lrt = Moments::new(b * 3);
        for _ in 0..s / 100 {
            // 100 replicas of the batch per call.
            let xr = x.clone().repeat_dim(0, 100);
            let out = host(w.dense("fc1", xr));
            for r in 0..100 {
                lrt.push(&out[r * b * 3..(r + 1) * b * 3]);
            }
        }
        assert_close("lrt", &lrt, &mean, &var_eps);
    }

    #[test]
    fn lrt_conv_mean_and_variance_match_weight_sampling() {
        let dev = backend::device();
        // LeNet-5 on 1×16×16 inputs: conv1 is [20, 1, 5, 5].
        let model = VModel::new(
            "lenet5:1x16x16".parse().unwrap(),
            VConfig::new(Method::SparseVd),
        )
        .unwrap();
        let p = random_params(&model, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let xv: Vec<f32> = (0..2 * 6 * 6)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(xv, [2, 1, 6, 6]), &dev);
        let opts = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let w = VarWeights::new(&model, &p, ChaCha8Rng::seed_from_u64(6));
        let (mean, var) = w.conv2d_moments("conv1", x.clone(), opts.clone());
        let k = 2 * 20 * 2 * 2;
        let flat = |t: Tensor<4>| t.into_data().try_into_vec::<f32>().unwrap();
        let mean = flat(mean);
        let var: Vec<f32> = flat(var.unwrap()).iter().map(|v| v + LRT_EPS).collect();
        let s = 10_000;
        let mc = mc_weights(
            &model,
            &p,
            "conv1",
            s,
            |wf, bias| {
                flat(conv2d(
                    x.clone(),
                    wf.reshape([20, 1, 5, 5]),
                    Some(bias),
                    opts.clone(),
                ))
            },
            k,
        );
        assert_close("weights", &mc, &mean, &var);
        let mut lrt = Moments::new(k);
        for _ in 0..s / 100 {
            let out = flat(w.conv2d("conv1", x.clone().repeat_dim(0, 100), opts.clone()));
            for r in 0..100 {
                lrt.push(&out[r * k..(r + 1) * k]);
            }
        }
        assert_close("lrt", &lrt, &mean, &var);
    }

    #[test]
    fn variance_layer_has_bias_mean_and_sigma2_variance() {
        let dev = backend::device();
        let config = VConfig {
            variance_layers: crate::variational::VarianceLayers::All,
            ..VConfig::new(Method::Variance)
        };
        let model = VModel::new("mlp:3-2".parse().unwrap(), config).unwrap();
        assert!(model.layout().index_of("mu/fc1.weight").is_err());
        let p = random_params(&model, 7);
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, -1.0], [1, 3]), &dev);
        let w = VarWeights::new(&model, &p, ChaCha8Rng::seed_from_u64(0));
        let (mean, var) = w.dense_moments("fc1", x);
        let bias = p.to_vecs()[model.layout().index_of("mu/fc1.bias").unwrap()].clone();
        assert_eq!(host(mean), bias);
        let s2: Vec<f32> = p.to_vecs()[model.layout().index_of("log_sigma2/fc1.weight").unwrap()]
            .iter()
            .map(|l| l.exp())
            .collect();
        let var = host(var.unwrap());
        for o in 0..2 {
            let want = s2[o * 3] + 4.0 * s2[o * 3 + 1] + s2[o * 3 + 2];
            assert!((var[o] - want).abs() < 1e-5 * want.max(1.0));
        }
        // Its mode has zero weights.
        let mode = model.mode(&p);
        assert!(mode.to_vecs()[0].iter().all(|&v| v == 0.0));
    }
}
