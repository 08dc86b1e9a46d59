//! Optimisers on [`ParamSet`]s with PyTorch's update rules, so their state is plain parameter sets
//! that checkpoints store by name (exact `--resume`).
//!
//! - SGD: `d = g + wd·p; b ← μ·b + d; p ← p − lr·b` (PyTorch `SGD`, dampening 0; `b₀ = 0` makes
//!   the first step `b = d`, as in PyTorch).
//! - Adam: `d = g + wd·p; m ← β₁m + (1−β₁)d; v ← β₂v + (1−β₂)d²;
//!   p ← p − lr·m̂/(√v̂ + ε)` with bias corrections (Kingma & Ba 2015; PyTorch `Adam`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::ParamSet;

/// Optimiser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum OptimConfig {
    /// Stochastic gradient descent with (heavy-ball) momentum.
    Sgd {
        /// Momentum μ.
        momentum: f64,
        /// L2 weight decay added to the gradient.
        wd: f64,
    },
    /// Adam.
    Adam {
        /// β₁.
        beta1: f64,
        /// β₂.
        beta2: f64,
        /// ε.
        eps: f64,
        /// L2 weight decay added to the gradient.
        wd: f64,
    },
}

/// Optimiser kind as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimKind {
    /// SGD with momentum.
    Sgd,
    /// Adam.
    Adam,
}

impl FromStr for OptimKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sgd" => Ok(OptimKind::Sgd),
            "adam" => Ok(OptimKind::Adam),
            _ => Err(Error::Config(format!(
                "--optimizer `{s}`: expected `sgd` or `adam`"
            ))),
        }
    }
}

impl fmt::Display for OptimKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptimKind::Sgd => "sgd",
            OptimKind::Adam => "adam",
        })
    }
}

impl OptimConfig {
    /// Settings for `kind` with momentum 0.9 (SGD) or β = (0.9, 0.999), ε = 1e-8 (Adam).
    pub fn new(kind: OptimKind, momentum: f64, wd: f64) -> Self {
        match kind {
            OptimKind::Sgd => OptimConfig::Sgd { momentum, wd },
            OptimKind::Adam => OptimConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                wd,
            },
        }
    }

    fn slots(&self) -> usize {
        match self {
            OptimConfig::Sgd { .. } => 1,
            OptimConfig::Adam { .. } => 2,
        }
    }
}

/// An optimiser and its state (one or two parameter sets shaped like the trained set).
#[derive(Debug, Clone)]
pub struct Optimizer {
    cfg: OptimConfig,
    /// Number of steps taken.
    pub steps: u64,
    state: Vec<ParamSet>,
}

impl Optimizer {
    /// Fresh state (zeros) for `params`.
    pub fn new(cfg: OptimConfig, params: &ParamSet) -> Self {
        let zeros = params.map(|t| t.zeros_like());
        Self {
            state: vec![zeros; cfg.slots()],
            cfg,
            steps: 0,
        }
    }

    /// Restores state saved by [`Optimizer::state`].
    pub fn with_state(cfg: OptimConfig, steps: u64, state: Vec<ParamSet>) -> Result<Self> {
        if state.len() != cfg.slots() {
            return Err(Error::Config(format!(
                "optimizer state has {} slots, expected {}",
                state.len(),
                cfg.slots()
            )));
        }
        Ok(Self { cfg, steps, state })
    }

    /// The state sets (for checkpoints).
    pub fn state(&self) -> &[ParamSet] {
        &self.state
    }

    /// Number of state sets this configuration keeps.
    pub fn slots(cfg: &OptimConfig) -> usize {
        cfg.slots()
    }

    /// One update: returns the new parameters (no autodiff) given gradients on the same layout.
    pub fn step(&mut self, params: &ParamSet, grads: &ParamSet, lr: f64) -> Result<ParamSet> {
        self.steps += 1;
        let lr = lr as f32;
        match self.cfg {
            OptimConfig::Sgd { momentum, wd } => {
                let d = decayed(params, grads, wd)?;
                let buf =
                    self.state[0].zip_map(&d, |b, d| b.clone() * momentum as f32 + d.clone())?;
                let next = params.zip_map(&buf, |p, b| p.clone() - b.clone() * lr)?;
                self.state[0] = buf;
                Ok(next)
            }
            OptimConfig::Adam {
                beta1,
                beta2,
                eps,
                wd,
            } => {
                let d = decayed(params, grads, wd)?;
                let (b1, b2) = (beta1 as f32, beta2 as f32);
                let m =
                    self.state[0].zip_map(&d, |m, d| m.clone() * b1 + d.clone() * (1.0 - b1))?;
                let v = self.state[1].zip_map(&d, |v, d| {
                    v.clone() * b2 + d.clone() * d.clone() * (1.0 - b2)
                })?;
                let t = self.steps as i32;
                let c1 = 1.0 - beta1.powi(t);
                let c2 = 1.0 - beta2.powi(t);
                let step = (lr as f64 / c1) as f32;
                let denom = v.map(|v| (v.clone() / c2 as f32).sqrt() + eps as f32);
                let upd = m.zip_map(&denom, |m, q| m.clone() / q.clone())?;
                let next = params.zip_map(&upd, |p, u| p.clone() - u.clone() * step)?;
                self.state[0] = m;
                self.state[1] = v;
                Ok(next)
            }
        }
    }
}

fn decayed(params: &ParamSet, grads: &ParamSet, wd: f64) -> Result<ParamSet> {
    if wd == 0.0 {
        Ok(grads.clone())
    } else {
        grads.axpy(wd as f32, params)
    }
}
