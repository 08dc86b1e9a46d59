//! Learning-rate schedules, evaluated once per epoch.
//!
//! Spec strings: `constant`, `step:EVERY:GAMMA`, `multistep:M1,M2,...:GAMMA`, `cosine`, `garipov`
//! (base lr for the first 50% of epochs, linear down to 0.01·base at 90%, flat after; Garipov et
//! al. 2018).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        /// Period in epochs.
        every: usize,
        /// Factor.
        gamma: f64,
    },
    /// Multiply by `gamma` at each milestone epoch.
    MultiStep {
        /// Epochs (0-based) at which the rate drops.
        milestones: Vec<usize>,
        /// Factor.
        gamma: f64,
    },
    /// Cosine annealing from the base rate to 0.
    Cosine,
    /// Garipov et al.: 1 until 50% of training, linear to 0.01 at 90%, then flat.
    Garipov,
    /// Linear decay from the base rate to 0 over the epochs from `start` on.
    LinearTo0 {
        /// First epoch of the decay.
        start: usize,
    },
    /// Fast Geometric Ensembling's cyclic rate (Garipov et al. 2018), per step: with
    /// `τ = ((epoch mod cycle) + i/N)/cycle` at step `i` of `N`, the factor is `(1 − 2τ) + 2τ·ratio`
    /// for `τ < ½`, else `(2τ − 1) + (2 − 2τ)·ratio`: from the base rate α₁ down to
    /// `α₂ = ratio·α₁` at the middle of each cycle and back.
    Fge {
        /// Cycle length in epochs (even).
        cycle: usize,
        /// `α₂ / α₁`.
        ratio: f64,
    },
}

impl Schedule {
    /// Learning rate for step `step` (0-based) of `steps` in `epoch` (0-based) of `epochs`: the
    /// epoch's rate ([`Schedule::lr`]) for every schedule but [`Schedule::Fge`], which changes
    /// at every step.
    pub fn lr_at(&self, base: f64, epoch: usize, epochs: usize, step: usize, steps: usize) -> f64 {
        match *self {
            Schedule::Fge { cycle, ratio } => {
                let c = cycle.max(1) as f64;
                let tau = ((epoch % cycle.max(1)) as f64 + step as f64 / steps.max(1) as f64) / c;
                let factor = if tau < 0.5 {
                    (1.0 - 2.0 * tau) + 2.0 * tau * ratio
                } else {
                    (2.0 * tau - 1.0) + (2.0 - 2.0 * tau) * ratio
                };
                base * factor
            }
            _ => self.lr(base, epoch, epochs),
        }
    }

    /// Learning rate for `epoch` (0-based) of `epochs` (for [`Schedule::Fge`], at its first
    /// step).
    pub fn lr(&self, base: f64, epoch: usize, epochs: usize) -> f64 {
        let t = epoch as f64 / epochs.max(1) as f64;
        let factor = match self {
            Schedule::Constant => 1.0,
            Schedule::Step { every, gamma } => gamma.powi((epoch / every.max(&1)) as i32),
            Schedule::MultiStep { milestones, gamma } => {
                gamma.powi(milestones.iter().filter(|&&m| epoch >= m).count() as i32)
            }
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
            Schedule::Garipov => {
                if t <= 0.5 {
                    1.0
                } else if t <= 0.9 {
                    1.0 - (t - 0.5) / 0.4 * 0.99
                } else {
                    0.01
                }
            }
            Schedule::Fge { .. } => return self.lr_at(base, epoch, epochs, 0, 1),
            Schedule::LinearTo0 { start } => {
                if epoch < *start {
                    1.0
                } else {
                    1.0 - (epoch - start) as f64 / (epochs - start).max(1) as f64
                }
            }
        };
        base * factor
    }
}

impl FromStr for Schedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "--schedule `{s}`: expected constant, step:EVERY:GAMMA, multistep:M1,M2:GAMMA, cosine, garipov, linear-to-0:START or fge:CYCLE:RATIO"
            ))
        };
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str| p.parse::<f64>().map_err(|_| bad());
        let int = |p: &str| p.parse::<usize>().map_err(|_| bad());
        Ok(match parts.as_slice() {
            ["constant"] => Schedule::Constant,
            ["cosine"] => Schedule::Cosine,
            ["garipov"] => Schedule::Garipov,
            ["step", every, gamma] => Schedule::Step {
                every: int(every)?.max(1),
                gamma: num(gamma)?,
            },
            ["multistep", ms, gamma] => Schedule::MultiStep {
                milestones: ms.split(',').map(int).collect::<Result<_>>()?,
                gamma: num(gamma)?,
            },
            ["linear-to-0", start] => Schedule::LinearTo0 { start: int(start)? },
            ["fge", cycle, ratio] => Schedule::Fge {
                cycle: int(cycle)?.max(1),
                ratio: num(ratio)?,
            },
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => write!(f, "constant"),
            Schedule::Cosine => write!(f, "cosine"),
            Schedule::Garipov => write!(f, "garipov"),
            Schedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
            Schedule::MultiStep { milestones, gamma } => {
                let m: Vec<String> = milestones.iter().map(|m| m.to_string()).collect();
                write!(f, "multistep:{}:{gamma}", m.join(","))
            }
            Schedule::LinearTo0 { start } => write!(f, "linear-to-0:{start}"),
            Schedule::Fge { cycle, ratio } => write!(f, "fge:{cycle}:{ratio}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garipov_schedule_shape() {
        let s = Schedule::Garipov;
        assert_eq!(s.lr(0.1, 0, 100), 0.1);
        assert_eq!(s.lr(0.1, 50, 100), 0.1);
        assert!((s.lr(0.1, 70, 100) - 0.1 * (1.0 - 0.5 * 0.99)).abs() < 1e-12);
        assert!((s.lr(0.1, 90, 100) - 0.001).abs() < 1e-12);
        assert!((s.lr(0.1, 99, 100) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn parse_round_trip() {
        for s in [
            "constant",
            "cosine",
            "garipov",
            "step:30:0.1",
            "multistep:50,60,70:0.2",
            "linear-to-0:100",
        ] {
            let p: Schedule = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert!("step:x:0.1".parse::<Schedule>().is_err());
        let m: Schedule = "multistep:2,4:0.5".parse().unwrap();
        assert_eq!(m.lr(1.0, 1, 10), 1.0);
        assert_eq!(m.lr(1.0, 2, 10), 0.5);
        assert_eq!(m.lr(1.0, 5, 10), 0.25);
    }

    /// FGE's rate starts each cycle at α₁, is α₂ exactly at the middle (the epoch boundary after
    /// which a snapshot is taken) and returns to α₁; between, it is linear in the step.
    #[test]
    fn fge_schedule_is_alpha2_at_each_snapshot() {
        let (a1, a2) = (0.05, 1e-4);
        let s = Schedule::Fge {
            cycle: 4,
            ratio: a2 / a1,
        };
        let n = 10;
        for epoch in 0..12 {
            if epoch % 4 == 0 {
                assert!((s.lr_at(a1, epoch, 12, 0, n) - a1).abs() < 1e-15);
            }
            // Snapshots follow the epochs with (epoch mod c) + 1 = c/2: the next step's rate is α₂.
            if (epoch % 4) + 1 == 2 {
                assert!((s.lr_at(a1, epoch + 1, 12, 0, n) - a2).abs() < 1e-15);
            }
        }
        // Linear down over the first half-cycle: equal decrements per step.
        let r: Vec<f64> = (0..2 * n)
            .map(|i| s.lr_at(a1, i / n, 12, i % n, n))
            .collect();
        let d0 = r[0] - r[1];
        assert!(r.windows(2).all(|w| ((w[0] - w[1]) - d0).abs() < 1e-12));
        assert_eq!(
            "fge:4:0.002".parse::<Schedule>().unwrap().to_string(),
            "fge:4:0.002"
        );
    }
}
