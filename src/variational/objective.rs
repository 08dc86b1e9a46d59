//! The ELBO objective for [`crate::train::fit`] and the KL warm-up schedules (REFERENCE §3).
//!
//! Minimised per batch: `N · mean_batch CE(f(x; w ~ q), y) + rw · KL(q ‖ p)`, with N the
//! training-set size (the negative ELBO up to the batch estimate of the data term). The noise of
//! each step comes from a ChaCha8 stream seeded by the loop's per-step stream, so training is
//! reproducible and `--resume` exact. Warm-up of `rw` per epoch `e` (0-based):
//!
//! - `linear:S:E` (`theano`: S = 5, E = 20): `rw = clamp((e − S)/(E − S), 0, 1)`;
//! - `slope:R`: `rw = min(R·(e + 1), 1)`;
//! - `ramp:F:R` (`pytorch` = `ramp:0.04:0.02`, the deepbayes notebook): `rw = min(F + R·e, 1)`;
//! - `none`: `rw = 1`.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, Int, Tensor};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::VModel;
use super::eval::{Sampling, evaluate_variational};
use super::weights::VarWeights;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{EVAL_BATCH, cross_entropy};
use crate::params::ParamSet;
use crate::train::{Objective, StepCtx};

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
        }
    }
}

impl FromStr for Warmup {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "--kl-warmup `{s}`: expected theano (= linear:5:20), pytorch (= ramp:0.04:0.02), none, linear:START:END, slope:RATE or ramp:FIRST:RATE"
            ))
        };
        let parts: Vec<&str> = s.split(':').collect();
        Ok(match parts.as_slice() {
            ["theano"] => Warmup::Linear { start: 5, end: 20 },
            // The deepbayes notebook starts at 0.02 and adds 0.02 before every epoch, the
            // first included: 0.04, 0.06, … (REFERENCE's `0.02·(epoch+1)` with 1-based epochs).
            ["pytorch"] => Warmup::Ramp {
                first: 0.04,
                rate: 0.02,
            },
            ["none"] => Warmup::None,
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
}

impl Objective for Elbo<'_> {
    fn loss(
        &mut self,
        params: &ParamSet,
        x: Tensor<2>,
        y: Tensor<1, Int>,
        ctx: &mut StepCtx<'_>,
    ) -> (Tensor<1>, Vec<(&'static str, f64)>) {
        let noise = ChaCha8Rng::seed_from_u64(ctx.rng.next_u64());
        let w = VarWeights::new(&self.model, params, noise);
        let nll = cross_entropy(self.model.arch.forward(&w, x), y);
        let kl = w.kl();
        let rw = self.warmup.rw(ctx.epoch);
        let nll_v = nll.clone().into_scalar::<f32>() as f64;
        let kl_v = kl.clone().into_scalar::<f32>() as f64;
        let loss = nll * ctx.n_train as f32 + kl * rw as f32;
        (loss, vec![("nll", nll_v), ("kl", kl_v), ("rw", rw)])
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
        for bad in ["slope:-1", "linear:5", "ramp", "ramp:0.1:0", "ramp:-1:0.1"] {
            assert!(bad.parse::<Warmup>().is_err(), "{bad}");
        }
    }
}
