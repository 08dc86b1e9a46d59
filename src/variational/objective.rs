//! The ELBO objective for [`crate::train::fit`] and the KL warm-up schedules (Molchanov et al. 2017, §4.2; Sønderby et al. 2016).
//!
//! Minimised per batch: `N · mean_batch CE(f(x; w ~ q), y) + rw · KL(q ‖ p)`, with N the
//! training-set size (the negative ELBO up to the batch estimate of the data term). The noise of
//! each step comes from a ChaCha8 stream seeded by the loop's per-step stream, so training is
//! reproducible and `--resume` exact. Warm-up of `rw` per epoch `e` (0-based):
//!
//! - `linear:S:E` (`theano`: S = 5, E = 20): `rw = clamp((e − S)/(E − S), 0, 1)`;
//! - `slope:R`: `rw = min(R·(e + 1), 1)`;
//! - `ramp:F:R` (`pytorch` = `ramp:0.04:0.02`, the deepbayes notebook): `rw = min(F + R·e, 1)`;
//! - `none`: `rw = 1`;
//! - `off`: `rw = 0` (the likelihood term only).

use std::fmt;
use std::str::FromStr;

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::eval::{Sampling, evaluate_variational};
use super::fused::{self, Terms};
use super::weights::{VarWeights, fused_pass};
use super::{Posterior, VModel, log_sigma2_name, mu_name};
use crate::backend::with_host;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{EVAL_BATCH, cross_entropy, ensemble_nll};
use crate::params::{Entry, Layout, ParamSet, Role};
use crate::train::{ChainRule, Gradient, Objective, StepCtx};
use crate::weights::norm::{BatchStats, TrainMode};
use crate::weights::weight_name;

/// KL weight schedule (`--kl-warmup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Warmup {
    /// 0 until epoch `start`, then linear to 1 at epoch `end`.
    Linear {
        /// First epoch with a rising weight.
        start: usize,
        /// Epoch at which the weight reaches 1.
        end: usize,
    },
    /// `min(rate·(epoch + 1), 1)`.
    Slope {
        /// Increase per epoch.
        rate: f64,
    },
    /// `min(first + rate·epoch, 1)` (0-based epochs).
    Ramp {
        /// Weight of the first epoch.
        first: f64,
        /// Increase per epoch.
        rate: f64,
    },
    /// Always 1.
    None,
    /// Always 0: the likelihood term only.
    Off,
}

impl Warmup {
    /// The KL weight of epoch `epoch` (0-based).
    pub fn rw(&self, epoch: usize) -> f64 {
        match *self {
            Warmup::Linear { start, end } => {
                if epoch < start {
                    0.0
                } else if end <= start {
                    1.0
                } else {
                    ((epoch - start) as f64 / (end - start) as f64).min(1.0)
                }
            }
            Warmup::Slope { rate } => (rate * (epoch + 1) as f64).min(1.0),
            Warmup::Ramp { first, rate } => (first + rate * epoch as f64).min(1.0),
            Warmup::None => 1.0,
            Warmup::Off => 0.0,
        }
    }
}

impl FromStr for Warmup {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "--kl-warmup `{s}`: expected theano (= linear:5:20), pytorch (= ramp:0.04:0.02), none, off, linear:START:END, slope:RATE or ramp:FIRST:RATE"
            ))
        };
        let parts: Vec<&str> = s.split(':').collect();
        Ok(match parts.as_slice() {
            ["theano"] => Warmup::Linear { start: 5, end: 20 },
            // The deepbayes notebook starts at 0.02 and adds 0.02 before every epoch, the
            // first included: 0.04, 0.06, … (`0.02·(epoch+1)` with 1-based epochs).
            ["pytorch"] => Warmup::Ramp {
                first: 0.04,
                rate: 0.02,
            },
            ["none"] => Warmup::None,
            ["off"] => Warmup::Off,
            ["linear", a, b] => Warmup::Linear {
                start: a.parse().map_err(|_| bad())?,
                end: b.parse().map_err(|_| bad())?,
            },
            ["slope", r] => {
                let rate: f64 = r.parse().map_err(|_| bad())?;
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(bad());
                }
                Warmup::Slope { rate }
            }
            ["ramp", a, r] => {
                let first: f64 = a.parse().map_err(|_| bad())?;
                let rate: f64 = r.parse().map_err(|_| bad())?;
                if !(first.is_finite() && first >= 0.0 && rate.is_finite() && rate > 0.0) {
                    return Err(bad());
                }
                Warmup::Ramp { first, rate }
            }
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Warmup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warmup::Linear { start, end } => write!(f, "linear:{start}:{end}"),
            Warmup::Slope { rate } => write!(f, "slope:{rate}"),
            Warmup::Ramp { first, rate } => write!(f, "ramp:{first}:{rate}"),
            Warmup::None => write!(f, "none"),
            Warmup::Off => write!(f, "off"),
        }
    }
}

/// How and when the test set is evaluated during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Ensemble sizes K.
    pub ensembles: Vec<usize>,
    /// Seed of the evaluation noise.
    pub seed: u64,
    /// Sampled evaluations every this many epochs (and after the last); the mode every epoch.
    pub every: usize,
}

/// The ELBO objective of a variational model.
///
/// For the fused methods (`sparse-vd`, `ard`; [`fused_pass`]) a CPU step runs the host pass first
/// ([`Objective::weights`]): the graph sees each additive layer's weight variance as an autodiff
/// leaf and the KL as a constant, and [`Objective::pull_back`] hands the chain rule
/// `∂L/∂θ += ∂L/∂v·∂v/∂θ + rw·∂KL/∂θ`, `∂L/∂log σ² = ∂L/∂v·∂v/∂log σ² + rw·∂KL/∂log σ²` to the
/// optimiser, which applies it element by element inside its update pass ([`Gradient::Chain`];
/// writing it out first was a pass of its own, ≈ 2% of an MLP step). The same
/// loss and gradients as splicing the pass into the graph ([`VarWeights::new`], used when `loss`
/// is called without `weights`), without four element-wise graph operations per weight tensor
/// forward and back. On a GPU the graph computes the terms as tensor expressions instead.
pub struct Elbo<'a> {
    /// The model.
    pub model: VModel,
    /// KL weight schedule.
    pub warmup: Warmup,
    /// Evaluated after every epoch.
    pub test: &'a Dataset,
    /// Evaluation settings.
    pub eval: EvalConfig,
    /// Total number of epochs (the last one always gets a sampled evaluation).
    pub epochs: usize,
    /// Device for evaluation.
    pub device: Device,
    step: Option<HostStep>,
    /// The last step's host pass buffers, per fused layer in order, for reuse: the derivatives
    /// lent to its gradient come back once the optimiser has dropped it.
    lent: Vec<(Terms, [Arc<Vec<f32>>; 4])>,
    /// The batch statistics of the last step's normalisation layers (train mode), under the
    /// model's names (`mu/bn1`), for the loop to fold into the running statistics.
    stats: Vec<BatchStats>,
    /// Sampled networks per step ([`Elbo::with_samples`]).
    samples: usize,
}

/// One fused layer's host pass for the current step.
struct FusedLayer {
    /// Indices of θ, log σ² (parameter layout) and of the variance (extended layout).
    theta: usize,
    ls2: usize,
    var: usize,
    terms: Terms,
}

/// What [`Objective::weights`] computed for the current step.
struct HostStep {
    layers: Vec<Option<FusedLayer>>,
    /// Σ KL of the fused layers.
    kl: f64,
    /// The parameter layout.
    params: Arc<Layout>,
    /// KL weight of the step (set by `loss`).
    rw: f64,
}

/// Name of a layer's weight variance in the extended set of [`Objective::weights`].
fn var_name(layer: &str) -> String {
    format!("var/{layer}.weight")
}

impl<'a> Elbo<'a> {
    /// The objective of `model` with the KL weight schedule `warmup`, evaluating on `test` as
    /// `eval` says over a run of `epochs` epochs.
    pub fn new(
        model: VModel,
        warmup: Warmup,
        test: &'a Dataset,
        eval: EvalConfig,
        epochs: usize,
        device: Device,
    ) -> Self {
        Self {
            model,
            warmup,
            test,
            eval,
            epochs,
            device,
            step: None,
            lent: Vec::new(),
            stats: Vec::new(),
            samples: 1,
        }
    }

    /// The objective with `k` sampled networks per step (`--train-samples`): the data term
    /// becomes `N · mean_batch −log( (1/k)·Σ_j softmax(f(x; w_j))_y )`, `w_j ~ q` drawn
    /// independently (local reparameterisation, one noise stream each), the multi-sample bound
    /// on the marginal likelihood ([`crate::eval::ensemble_nll`]; Neklyudov et al. 2019 train
    /// variance networks with it). It rewards the ensemble rather than each sample: with k = 1
    /// a zero-mean output layer cannot beat its bias (by Jensen, `E CE(z) ≥ CE(E z)`), with
    /// k > 1 it can. Normalisation layers fold the mean over the k passes of their batch
    /// statistics. `k = 1` is the ELBO, bit for bit.
    pub fn with_samples(mut self, k: usize) -> Self {
        self.samples = k.max(1);
        self
    }
}

/// The logits of one sampled network of `model`; with normalisation layers, in train mode on
/// batch statistics (their γ, β are point estimates; the sampled layers feed them), whose
/// statistics are appended to `stats` under the model's names (`mu/bn1`).
fn sampled_logits(
    model: &VModel,
    w: &VarWeights<'_>,
    x: Tensor<2>,
    stats: &mut Vec<BatchStats>,
) -> Tensor<2> {
    if !model.layout().has_state() {
        return model.arch.forward(w, x);
    }
    let tm = TrainMode::new(w);
    let logits = model.arch.forward(&tm, x);
    stats.extend(tm.into_stats().into_iter().map(|s| BatchStats {
        layer: mu_name(&s.layer),
        ..s
    }));
    logits
}

/// The per-layer mean of `k` passes' batch statistics, `stats` holding the passes one after
/// another (each pass's layers in one order).
fn mean_stats(stats: Vec<BatchStats>, k: usize) -> Vec<BatchStats> {
    let per = stats.len() / k;
    let mut out: Vec<BatchStats> = stats[..per].to_vec();
    for (i, s) in stats.iter().enumerate().skip(per) {
        let o = &mut out[i % per];
        debug_assert_eq!(o.layer, s.layer);
        for (a, b) in o.mean.iter_mut().zip(&s.mean) {
            *a += b;
        }
        for (a, b) in o.var.iter_mut().zip(&s.var) {
            *a += b;
        }
    }
    let inv = 1.0 / k as f32;
    for o in &mut out {
        o.mean
            .iter_mut()
            .chain(o.var.iter_mut())
            .for_each(|v| *v *= inv);
    }
    out
}

impl Objective for Elbo<'_> {
    fn weights(&mut self, params: &ParamSet, _ctx: &mut StepCtx<'_>) -> Option<ParamSet> {
        let pass = fused_pass(&self.model, params)?;
        let layout = params.layout();
        let mut entries = layout.entries().to_vec();
        let mut tensors = params.tensors().to_vec();
        let mut layers = Vec::with_capacity(self.model.layers().len());
        let mut kl = 0.0;
        let mut spare = self.lent.drain(..).map(|(mut t, lent)| {
            let [vt, kt, vs, ks] = lent.map(|v| Arc::try_unwrap(v).unwrap_or_default());
            (t.var_dtheta, t.kl_dtheta, t.var_dls2, t.kl_dls2) = (vt, kt, vs, ks);
            t
        });
        for l in self.model.layers() {
            if l.q != Posterior::Additive {
                layers.push(None);
                continue;
            }
            let theta = layout.index_of(&mu_name(&weight_name(&l.name))).ok()?;
            let ls2 = layout.index_of(&log_sigma2_name(&l.name)).ok()?;
            let mut terms = spare.next().unwrap_or_default();
            with_host(&params.tensors()[theta], |t| {
                with_host(&params.tensors()[ls2], |s| {
                    fused::terms_into(t, s, pass, &mut terms)
                })
            });
            kl += terms.kl;
            let n = terms.var.len();
            entries.push(Entry {
                name: var_name(&l.name),
                shape: vec![n],
                role: Role::Weight,
            });
            let device = params.tensors()[theta].device();
            let var = std::mem::take(&mut terms.var);
            tensors.push(Tensor::from_data(TensorData::new(var, [n]), &device));
            layers.push(Some(FusedLayer {
                theta,
                ls2,
                var: tensors.len() - 1,
                terms,
            }));
        }
        let extended = Arc::new(Layout::new(entries).expect("var/ names are new"));
        self.step = Some(HostStep {
            layers,
            kl,
            params: layout.clone(),
            rw: 0.0,
        });
        Some(ParamSet::from_tensors(extended, tensors).expect("shaped like the entries"))
    }

    fn pull_back(&mut self, _weights: ParamSet, grad: ParamSet) -> Result<Gradient> {
        let step = self
            .step
            .take()
            .expect("Elbo::weights runs before pull_back");
        let r = step.rw as f32;
        let n = step.params.len();
        let parts = grad.into_tensors();
        let mut chained: Vec<Option<ChainRule>> = vec![None; n];
        // The chain rule is applied by the optimiser inside its update pass (read in place
        // from the graph's gradients of θ and of v and from the host pass's derivatives, lent
        // to the gradient until the next step reuses them).
        for f in step.layers.into_iter().flatten() {
            let mut t = f.terms;
            let lend = |v: &mut Vec<f32>| Arc::new(std::mem::take(v));
            let lent = [
                lend(&mut t.var_dtheta),
                lend(&mut t.kl_dtheta),
                lend(&mut t.var_dls2),
                lend(&mut t.kl_dls2),
            ];
            let u = parts[f.var].clone();
            // ∂L/∂θ = ∂L/∂θ|graph + ∂L/∂v·∂v/∂θ + rw·∂KL/∂θ.
            chained[f.theta] = Some(ChainRule {
                with_graph: true,
                upstream: u.clone(),
                d_output: lent[0].clone(),
                d_penalty: lent[1].clone(),
                penalty_weight: r,
            });
            // log σ² enters the graph only through v: ∂L/∂v·∂v/∂log σ² + rw·∂KL/∂log σ².
            chained[f.ls2] = Some(ChainRule {
                with_graph: false,
                upstream: u,
                d_output: lent[2].clone(),
                d_penalty: lent[3].clone(),
                penalty_weight: r,
            });
            self.lent.push((t, lent));
        }
        let g = ParamSet::from_tensors(step.params, parts.into_iter().take(n).collect())?;
        Ok(Gradient::Chain { g, chained })
    }

    /// With [`Objective::weights`] first, `params` is its extended set (variances as leaves);
    /// without, the parameters themselves (the pass is spliced into the graph).
    fn loss(
        &mut self,
        params: &ParamSet,
        x: Tensor<2>,
        y: Tensor<1, Int>,
        ctx: &mut StepCtx<'_>,
    ) -> (Tensor<1>, Vec<(&'static str, f64)>) {
        let noise = ChaCha8Rng::seed_from_u64(ctx.rng.next_u64());
        let rw = self.warmup.rw(ctx.epoch);
        let w = match self.step.as_mut() {
            Some(step) => {
                step.rw = rw;
                let device = params.tensors()[0].device();
                let mut kl_left = Some(step.kl);
                let fused = step
                    .layers
                    .iter()
                    .map(|f| {
                        f.as_ref().map(|f| {
                            // The KL total rides on the first fused layer, as a constant.
                            let kl = kl_left.take().unwrap_or(0.0) as f32;
                            (
                                params.tensors()[f.var].clone(),
                                Tensor::<1>::from_data(TensorData::new(vec![kl], [1]), &device),
                            )
                        })
                    })
                    .collect();
                VarWeights::with_fused(&self.model, params, fused, noise)
            }
            None => VarWeights::new(&self.model, params, noise),
        };
        self.stats.clear();
        let mut passes = Vec::with_capacity(self.samples);
        for _ in 1..self.samples {
            passes.push(w.with_noise(ChaCha8Rng::seed_from_u64(ctx.rng.next_u64())));
        }
        let (model, stats) = (&self.model, &mut self.stats);
        let mut logits = vec![sampled_logits(model, &w, x.clone(), stats)];
        logits.extend(
            passes
                .iter()
                .map(|p| sampled_logits(model, p, x.clone(), stats)),
        );
        let nll = if logits.len() == 1 {
            cross_entropy(logits.pop().expect("one pass"), y)
        } else {
            ensemble_nll(logits, y)
        };
        if self.samples > 1 {
            self.stats = mean_stats(std::mem::take(&mut self.stats), self.samples);
        }
        let kl = w.kl();
        let nll_v = nll.clone().into_scalar::<f32>() as f64;
        let kl_v = kl.clone().into_scalar::<f32>() as f64;
        let loss = nll * ctx.n_train as f32 + kl * rw as f32;
        (loss, vec![("nll", nll_v), ("kl", kl_v), ("rw", rw)])
    }

    fn take_batch_stats(&mut self) -> Vec<BatchStats> {
        std::mem::take(&mut self.stats)
    }

    fn epoch_end(&mut self, params: &ParamSet, epoch: usize) -> Result<Vec<(String, Value)>> {
        let sampled =
            (epoch + 1).is_multiple_of(self.eval.every.max(1)) || epoch + 1 >= self.epochs;
        let m = evaluate_variational(
            &self.model,
            params,
            self.test,
            sampled.then_some(Sampling {
                ensembles: &self.eval.ensembles,
                seed: self.eval.seed,
            }),
            EVAL_BATCH,
            &self.device,
        );
        let mut out = m.json_entries("test_");
        out.extend(self.model.stats(params).json_entries());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::backend;
    use crate::train::loss_and_grad;
    use crate::variational::{LrtVariance, Method, VConfig};

    /// The host chain rule (`weights` → graph at the variances → `pull_back`) gives the loss and
    /// gradients of the pass spliced into the graph, for both fused KLs and both variance forms,
    /// with one sampled network per step and with three (their gradients summed at the shared
    /// variance leaves).
    #[test]
    fn host_chain_rule_matches_the_spliced_graph() {
        let device = backend::device();
        let ad = backend::train_device();
        let arch: Arch = "mlp:6-5-3".parse().unwrap();
        let (b, d) = (8usize, 6usize);
        let xv: Vec<f32> = (0..b * d).map(|i| ((i as f32) * 0.71).sin()).collect();
        let yv: Vec<i64> = (0..b).map(|i| (i % 3) as i64).collect();
        let data = Dataset {
            name: "tiny".into(),
            x: xv.clone(),
            y: yv.iter().map(|&v| v as u8).collect(),
            shape: [1, 2, 3],
            classes: 3,
        };
        for (method, variance, samples) in [
            (Method::SparseVd, LrtVariance::AlphaTheta2, 1),
            (Method::SparseVd, LrtVariance::Sigma2, 1),
            (Method::Ard, LrtVariance::AlphaTheta2, 1),
            (Method::SparseVd, LrtVariance::AlphaTheta2, 3),
        ] {
            let mut cfg = VConfig::new(method);
            cfg.lrt_variance = variance;
            let model = VModel::new(arch.clone(), cfg).unwrap();
            // log σ² spread so that log α covers both sides of the clip.
            let p = model.init(3, &device);
            let p = ParamSet::from_vecs(
                p.layout().clone(),
                p.to_vecs()
                    .into_iter()
                    .zip(p.layout().entries())
                    .map(|(v, e)| {
                        if e.name.starts_with("log_sigma2/") {
                            (0..v.len())
                                .map(|i| -12.0 + (i as f32 * 1.7) % 14.0)
                                .collect()
                        } else {
                            v
                        }
                    })
                    .collect(),
                &device,
            )
            .unwrap();
            let eval = EvalConfig {
                ensembles: vec![],
                seed: 0,
                every: 1,
            };
            let mut obj = Elbo::new(model, Warmup::None, &data, eval, 1, device.clone())
                .with_samples(samples);
            let x = || Tensor::<2>::from_data(TensorData::new(xv.clone(), [b, d]), &ad);
            let y = || Tensor::<1, Int>::from_data(TensorData::new(yv.clone(), [b]), &ad);
            let run = |obj: &mut Elbo<'_>, host: bool| {
                let mut rng = ChaCha8Rng::seed_from_u64(11);
                let mut ctx = StepCtx {
                    epoch: 0,
                    step: 0,
                    rng: &mut rng,
                    n_train: 100,
                };
                if host {
                    let (v, g, _) = loss_and_grad(&p, obj, x(), y(), &mut ctx).unwrap();
                    (v, g.to_vecs())
                } else {
                    let leaves = p.leaves();
                    let (loss, _) = obj.loss(&leaves, x(), y(), &mut ctx);
                    let v = loss.clone().into_scalar::<f32>() as f64;
                    let grads = loss.backward();
                    let g = leaves.map(|t| {
                        t.grad(&grads)
                            .unwrap_or_else(|| t.clone().without_autodiff().zeros_like())
                    });
                    (v, g.to_vecs())
                }
            };
            let (v_host, g_host) = run(&mut obj, true);
            let (v_ref, g_ref) = run(&mut obj, false);
            assert!(
                (v_host - v_ref).abs() <= 1e-5 * v_ref.abs(),
                "{method}: {v_host} vs {v_ref}"
            );
            for (i, (a, r)) in g_host.iter().zip(&g_ref).enumerate() {
                let scale = r.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                for (x, y) in a.iter().zip(r) {
                    assert!(
                        (x - y).abs() <= 1e-4 * scale,
                        "{method} {variance:?} tensor {i}: {x} vs {y}"
                    );
                }
            }
        }
    }

    /// With a zero-mean output layer at uniform logits (`p = 1/C`) and noise on the label's logit
    /// only (variance `s²`), the expected data term per sample is, to second order in `s`,
    /// `−log p − s²·(1 − p)/2·[(1 − 2p) − (1 − p)/K]` (the mean softmax gains from the
    /// convexity of `p_y` in `z_y`, the log of a K-sample mean loses Jensen's gap): one sample
    /// (K = 1) is penalised for the label's variance, so the output layer's σ can only shrink
    /// (the Jensen bound), while K = 8 samples reward it (`(1 − 2p) > (1 − p)/K` for C = 10) —
    /// the way an ensemble of zero-mean networks learns. The sign of the mean gradient in the
    /// label row's log σ², over many draws, shows both.
    #[test]
    fn several_samples_reward_a_zero_mean_output_layer_one_does_not() {
        use crate::variational::VarianceLayers;
        let device = backend::device();
        let ad = backend::train_device();
        let arch: Arch = "mlp:6-10".parse().unwrap();
        let (b, d) = (256usize, 6usize);
        let xv: Vec<f32> = (0..b * d).map(|i| ((i as f32) * 0.37).sin()).collect();
        let yv: Vec<i64> = vec![0; b];
        let data = Dataset {
            name: "tiny".into(),
            x: xv.clone(),
            y: vec![0; b],
            shape: [1, 2, 3],
            classes: 10,
        };
        let mut cfg = VConfig::new(Method::Variance);
        cfg.variance_layers = VarianceLayers::All;
        let model = VModel::new(arch, cfg).unwrap();
        // σ = 0.1 in the label's row (class 0), 1e-3 elsewhere, zero bias: zero-mean logits,
        // the label's with a small spread, the others nearly constant.
        let p = model.init(0, &device);
        let p = ParamSet::from_vecs(
            p.layout().clone(),
            p.to_vecs()
                .into_iter()
                .zip(p.layout().entries())
                .map(|(v, e)| {
                    if e.name.starts_with("log_sigma2/") {
                        (0..v.len())
                            .map(|i| if i < d { 0.01f32.ln() } else { 1e-6f32.ln() })
                            .collect()
                    } else {
                        vec![0.0; v.len()]
                    }
                })
                .collect(),
            &device,
        )
        .unwrap();
        let ls2 = p.layout().index_of("log_sigma2/fc1.weight").unwrap();
        let mean_grad = |k: usize| {
            let eval = EvalConfig {
                ensembles: vec![],
                seed: 0,
                every: 1,
            };
            let mut obj = Elbo::new(model.clone(), Warmup::Off, &data, eval, 1, device.clone())
                .with_samples(k);
            let mut total = 0.0f64;
            let draws = 64;
            for seed in 0..draws {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut ctx = StepCtx {
                    epoch: 0,
                    step: 0,
                    rng: &mut rng,
                    n_train: 1,
                };
                let x = Tensor::<2>::from_data(TensorData::new(xv.clone(), [b, d]), &ad);
                let y = Tensor::<1, Int>::from_data(TensorData::new(yv.clone(), [b]), &ad);
                let (_, g, _) = loss_and_grad(&p, &mut obj, x, y, &mut ctx).unwrap();
                total += g.to_vecs()[ls2][..d].iter().map(|&v| v as f64).sum::<f64>();
            }
            total / draws as f64
        };
        let (one, eight) = (mean_grad(1), mean_grad(8));
        assert!(
            one > 0.0,
            "one sample: mean ∂L/∂log σ² = {one} (should shrink σ)"
        );
        assert!(
            eight < 0.0,
            "eight samples: mean ∂L/∂log σ² = {eight} (should grow σ)"
        );
        // The ratio of the two second-order terms: (1−p)[(1−2p) − (1−p)/K] at K = 8 over K = 1.
        let p = 0.1;
        let term = |k: f64| (1.0 - p) * ((1.0 - 2.0 * p) - (1.0 - p) / k);
        let want = term(8.0) / term(1.0);
        let got = eight / one;
        assert!((got / want - 1.0).abs() < 0.25, "ratio {got} vs {want}");
    }

    #[test]
    fn warmup_schedules() {
        let t: Warmup = "theano".parse().unwrap();
        assert_eq!(t.to_string(), "linear:5:20");
        assert_eq!(t.rw(0), 0.0);
        assert_eq!(t.rw(5), 0.0);
        assert!((t.rw(12) - 7.0 / 15.0).abs() < 1e-12);
        assert_eq!(t.rw(20), 1.0);
        assert_eq!(t.rw(99), 1.0);
        let p: Warmup = "pytorch".parse().unwrap();
        assert_eq!(p.to_string(), "ramp:0.04:0.02");
        assert!((p.rw(0) - 0.04).abs() < 1e-12);
        assert!((p.rw(9) - 0.22).abs() < 1e-12); // the deepbayes log's "kl" column at epoch 10
        assert_eq!(p.rw(60), 1.0);
        let s: Warmup = "slope:0.02".parse().unwrap();
        assert!((s.rw(0) - 0.02).abs() < 1e-12);
        assert!((s.rw(9) - 0.2).abs() < 1e-12);
        assert_eq!("none".parse::<Warmup>().unwrap().rw(0), 1.0);
        let off: Warmup = "off".parse().unwrap();
        assert_eq!(
            (off.rw(0), off.rw(99), off.to_string()),
            (0.0, 0.0, "off".into())
        );
        for bad in ["slope:-1", "linear:5", "ramp", "ramp:0.1:0", "ramp:-1:0.1"] {
            assert!(bad.parse::<Warmup>().is_err(), "{bad}");
        }
    }
}
