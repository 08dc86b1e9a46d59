//! Optimisers on [`ParamSet`]s with PyTorch's update rules, so their state is plain parameter sets
//! that checkpoints store by name (exact `--resume`).
//!
//! - SGD: `d = g + wd·p; b ← μ·b + d; p ← p − lr·b` (PyTorch `SGD`, dampening 0; `b₀ = 0` makes
//!   the first step `b = d`, as in PyTorch).
//! - Adam: `d = g + wd·p; m ← β₁m + (1−β₁)d; v ← β₂v + (1−β₂)d²;
//!   p ← p − lr·m̂/(√v̂ + ε)` with bias corrections (Kingma & Ba 2015; PyTorch `Adam`).

use std::fmt;
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use multiversion::multiversion;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Gradient;
use super::gradient::{ElementLoop, TensorGradient};
use crate::backend::{self, PASS_BLOCK as BLOCK};
use crate::error::{Error, Result};
use crate::params::{Layout, ParamSet};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OptimKind {
    /// SGD with momentum.
    Sgd,
    /// Adam.
    Adam,
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

    /// Checks the values once, naming the flag at fault.
    pub fn validate(&self) -> Result<()> {
        let (momentum, wd) = match *self {
            OptimConfig::Sgd { momentum, wd } => (momentum, wd),
            OptimConfig::Adam { wd, .. } => (0.0, wd),
        };
        if !(0.0..1.0).contains(&momentum) {
            return Err(Error::Config(format!(
                "--momentum must be in [0, 1), got {momentum}"
            )));
        }
        if !(wd >= 0.0 && wd.is_finite()) {
            return Err(Error::Config(format!(
                "--wd must be a non-negative number, got {wd}"
            )));
        }
        Ok(())
    }

    /// Weight-sized state buffers: 1 for SGD (momentum), 2 for Adam (both moments).
    pub fn slots(&self) -> usize {
        match self {
            OptimConfig::Sgd { .. } => 1,
            OptimConfig::Adam { .. } => 2,
        }
    }
}

/// An optimiser and its state (one or two parameter sets shaped like the trained set). For CPU
/// parameters the state stays on the host between steps and the update is a host pass; for
/// parameters on a GPU it stays on their device and the update is composed of burn's tensor ops
/// ([`Optimizer::step`]). Tensors are made from host state only for checkpoints.
#[derive(Debug, Clone)]
pub struct Optimizer {
    cfg: OptimConfig,
    /// Number of steps taken.
    pub steps: u64,
    layout: Arc<Layout>,
    device: Device,
    state: Slots,
}

/// Where an [`Optimizer`]'s state lives: it follows the parameters (the first step on the
/// other kind of device moves it there once).
#[derive(Debug, Clone)]
enum Slots {
    /// `[slot][tensor][element]` on the host.
    Host(Vec<Vec<Vec<f32>>>),
    /// `[slot][tensor]` on the parameters' device.
    Device(Vec<Vec<Tensor<1>>>),
}

impl Optimizer {
    /// Fresh state (zeros) for `params`.
    pub fn new(cfg: OptimConfig, params: &ParamSet) -> Self {
        let device = params.tensors()[0].device();
        let state = if backend::on_host(&params.tensors()[0]) {
            let zeros: Vec<Vec<f32>> = params
                .layout()
                .entries()
                .iter()
                .map(|e| vec![0.0; e.numel()])
                .collect();
            Slots::Host(vec![zeros; cfg.slots()])
        } else {
            let zeros: Vec<Tensor<1>> = params.tensors().iter().map(Tensor::zeros_like).collect();
            Slots::Device(vec![zeros; cfg.slots()])
        };
        Self {
            state,
            cfg,
            steps: 0,
            layout: params.layout().clone(),
            device,
        }
    }

    /// Restores state saved by [`Optimizer::state`].
    pub fn with_state(cfg: OptimConfig, steps: u64, state: Vec<ParamSet>) -> Result<Self> {
        if state.len() != cfg.slots() || state.is_empty() {
            return Err(Error::Config(format!(
                "optimizer state has {} slots, expected {}",
                state.len(),
                cfg.slots()
            )));
        }
        Ok(Self {
            cfg,
            steps,
            layout: state[0].layout().clone(),
            device: state[0].tensors()[0].device(),
            state: if backend::on_host(&state[0].tensors()[0]) {
                Slots::Host(state.iter().map(ParamSet::to_vecs).collect())
            } else {
                Slots::Device(state.iter().map(|s| s.tensors().to_vec()).collect())
            },
        })
    }

    /// The state sets (for checkpoints).
    pub fn state(&self) -> Vec<ParamSet> {
        match &self.state {
            Slots::Host(slots) => slots
                .iter()
                .map(|v| {
                    ParamSet::from_vecs(self.layout.clone(), v.clone(), &self.device)
                        .expect("state shaped like the layout")
                })
                .collect(),
            Slots::Device(slots) => slots
                .iter()
                .map(|ts| {
                    ParamSet::from_tensors(self.layout.clone(), ts.clone())
                        .expect("state shaped like the layout")
                })
                .collect(),
        }
    }

    /// The state on the host (moved there from a device once).
    fn host_slots(&mut self) -> &mut Vec<Vec<Vec<f32>>> {
        if let Slots::Device(slots) = &self.state {
            let host = slots
                .iter()
                .map(|ts| ts.iter().map(crate::params::host_vec).collect())
                .collect();
            self.state = Slots::Host(host);
        }
        match &mut self.state {
            Slots::Host(slots) => slots,
            Slots::Device(_) => unreachable!("moved to the host above"),
        }
    }

    /// The state as tensors on `device` (moved there once).
    fn device_slots(&mut self, device: &Device) -> &mut Vec<Vec<Tensor<1>>> {
        if let Slots::Host(slots) = &self.state {
            let tensors = slots
                .iter()
                .map(|vs| {
                    vs.iter()
                        .map(|v| Tensor::from_data(TensorData::new(v.clone(), [v.len()]), device))
                        .collect()
                })
                .collect();
            self.state = Slots::Device(tensors);
        }
        match &mut self.state {
            Slots::Device(slots) => slots,
            Slots::Host(_) => unreachable!("moved to the device above"),
        }
    }

    /// The optimiser's configuration.
    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// Number of state sets this configuration keeps.
    pub fn slots(cfg: &OptimConfig) -> usize {
        cfg.slots()
    }

    /// One update: returns the new parameters (no autodiff) given their gradient. `params` is
    /// consumed: where a tensor is the only owner of its buffer the new values are written in
    /// place ([`backend::into_host_vec`]).
    pub fn step(&mut self, params: ParamSet, grads: &Gradient, lr: f64) -> Result<ParamSet> {
        let host = backend::on_host(&params.tensors()[0]);
        self.step_on(params, grads, lr, host)
    }

    /// [`Optimizer::step`] as a host pass (`host`) or in tensor ops.
    fn step_on(
        &mut self,
        params: ParamSet,
        grads: &Gradient,
        lr: f64,
        host: bool,
    ) -> Result<ParamSet> {
        grads.check()?;
        if !(Arc::ptr_eq(params.layout(), grads.layout()) || **params.layout() == **grads.layout())
        {
            return Err(Error::Config(
                "gradient is for another parameter layout".into(),
            ));
        }
        if !(Arc::ptr_eq(params.layout(), &self.layout) || **params.layout() == *self.layout) {
            return Err(Error::Config(
                "optimizer state is for another parameter layout".into(),
            ));
        }
        self.steps += 1;
        let k = Update::of(&self.cfg, self.steps, lr as f32);
        if host {
            self.host_step(params, grads, k)
        } else {
            self.tensor_step(params, grads, k)
        }
    }

    /// [`Optimizer::step`] as one fused host pass per tensor (CPU parameters).
    fn host_step(&mut self, params: ParamSet, grads: &Gradient, k: Update) -> Result<ParamSet> {
        let device = params.tensors()[0].device();
        let layout = params.layout().clone();
        let state = self.host_slots();
        // One fused host pass per tensor, the same f32 operations in the same order as the
        // formulas above (so the result is bit-identical to composing tensor ops), instead of
        // 4 (SGD) or 12 (Adam) whole-tensor passes with an allocation each. Gradients are read
        // in place (a curve point's chain rule formed a block at a time, [`Gradient`]), the
        // parameters updated in their own buffer where possible, and the state stays on the
        // host. Element-wise in parallel blocks of [`BLOCK`] (the same bits on any number of
        // threads).
        let mut p: Vec<Vec<f32>> = params
            .into_tensors()
            .into_iter()
            .map(backend::into_host_vec)
            .collect();
        match k {
            Update::Sgd(k) => {
                for (i, (p, b)) in p.iter_mut().zip(&mut state[0]).enumerate() {
                    if layout.entries()[i].role.is_state() {
                        continue;
                    }
                    grads.with_tensor(i, |g| {
                        p.par_chunks_mut(BLOCK)
                            .zip(b.par_chunks_mut(BLOCK))
                            .enumerate()
                            .for_each(|(j, (p, b))| {
                                let g = g.slice(j * BLOCK..j * BLOCK + p.len());
                                sgd_block(p, g, b, k)
                            })
                    });
                }
            }
            Update::Adam(k) => {
                let (m_all, v_all) = state.split_at_mut(1);
                for (i, ((p, m), v)) in p
                    .iter_mut()
                    .zip(m_all[0].iter_mut())
                    .zip(v_all[0].iter_mut())
                    .enumerate()
                {
                    if layout.entries()[i].role.is_state() {
                        continue;
                    }
                    grads.with_tensor(i, |g| {
                        p.par_chunks_mut(BLOCK)
                            .zip(m.par_chunks_mut(BLOCK).zip(v.par_chunks_mut(BLOCK)))
                            .enumerate()
                            .for_each(|(j, (p, (m, v)))| {
                                let g = g.slice(j * BLOCK..j * BLOCK + p.len());
                                adam_block(p, g, m, v, k)
                            })
                    });
                }
            }
        };
        ParamSet::from_vecs(layout, p, &device)
    }

    /// [`Optimizer::step`] composed of burn's tensor ops on the parameters' device (GPU
    /// parameters): the formulas of the module docs in the order of the host pass, the
    /// gradient in its tensor form ([`Gradient::tensor`]) and the state kept on the device.
    fn tensor_step(&mut self, params: ParamSet, grads: &Gradient, k: Update) -> Result<ParamSet> {
        let device = params.tensors()[0].device();
        let layout = params.layout().clone();
        let state = self.device_slots(&device);
        let mut p = params.into_tensors();
        for (i, p) in p.iter_mut().enumerate() {
            if layout.entries()[i].role.is_state() {
                continue;
            }
            let g = grads.tensor(i);
            let decayed = |wd: f32, p: &Tensor<1>| {
                if wd == 0.0 {
                    g.clone()
                } else {
                    g.clone() + p.clone() * wd
                }
            };
            match k {
                Update::Sgd(k) => {
                    let d = decayed(k.wd, p);
                    let b = state[0][i].clone() * k.mu + d;
                    *p = p.clone() - b.clone() * k.lr;
                    state[0][i] = b;
                }
                Update::Adam(k) => {
                    let d = decayed(k.wd, p);
                    let m = state[0][i].clone() * k.b1 + d.clone() * (1.0 - k.b1);
                    let v = state[1][i].clone() * k.b2 + d.clone() * d * (1.0 - k.b2);
                    let denom = (v.clone() / k.c2).sqrt() + k.eps;
                    *p = p.clone() - m.clone() / denom * k.step;
                    state[0][i] = m;
                    state[1][i] = v;
                }
            }
        }
        ParamSet::from_tensors(layout, p)
    }
}

/// The constants of one update, from the configuration, the step number (from 1) and the rate.
#[derive(Clone, Copy)]
enum Update {
    Sgd(Sgd),
    Adam(Adam),
}

impl Update {
    fn of(cfg: &OptimConfig, steps: u64, lr: f32) -> Self {
        match *cfg {
            OptimConfig::Sgd { momentum, wd } => Update::Sgd(Sgd {
                mu: momentum as f32,
                wd: wd as f32,
                lr,
            }),
            OptimConfig::Adam {
                beta1,
                beta2,
                eps,
                wd,
            } => {
                let t = steps as i32;
                Update::Adam(Adam {
                    b1: beta1 as f32,
                    b2: beta2 as f32,
                    c2: (1.0 - beta2.powi(t)) as f32,
                    eps: eps as f32,
                    step: (lr as f64 / (1.0 - beta1.powi(t))) as f32,
                    wd: wd as f32,
                })
            }
        }
    }
}

/// SGD constants of one step.
#[derive(Clone, Copy)]
struct Sgd {
    mu: f32,
    wd: f32,
    lr: f32,
}

/// `d = g + wd·p; b ← μ·b + d; p ← p − lr·b` over one block, the gradient `g` read element by
/// element in the same loop (a chain rule formed there: one loop per form of the gradient,
/// [`TensorGradient::run`]); compiled for AVX-512 and AVX2 as well as the baseline (the same IEEE
/// operations in each: no build contracts them into FMAs).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn sgd_block(p: &mut [f32], g: TensorGradient<'_>, b: &mut [f32], k: Sgd) {
    struct Update<'a> {
        p: &'a mut [f32],
        b: &'a mut [f32],
        k: Sgd,
    }
    impl ElementLoop for Update<'_> {
        #[inline(always)]
        fn run(self, g: impl Fn(usize) -> f32) {
            let k = self.k;
            let b = &mut self.b[..self.p.len()];
            for (i, (p, b)) in self.p.iter_mut().zip(b).enumerate() {
                let g = g(i);
                let d = if k.wd == 0.0 { g } else { g + *p * k.wd };
                *b = *b * k.mu + d;
                *p -= *b * k.lr;
            }
        }
    }
    assert_eq!(g.len(), p.len(), "one gradient per parameter");
    g.run(Update { p, b, k });
}

/// Adam constants of one step (`c2` the second bias correction, `step` = lr / first one).
#[derive(Clone, Copy)]
struct Adam {
    b1: f32,
    b2: f32,
    c2: f32,
    eps: f32,
    step: f32,
    wd: f32,
}

/// The Adam update of the module docs over one block, the gradient read like
/// [`sgd_block`]'s (multiversioned like it).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn adam_block(p: &mut [f32], g: TensorGradient<'_>, m: &mut [f32], v: &mut [f32], k: Adam) {
    struct Update<'a> {
        p: &'a mut [f32],
        m: &'a mut [f32],
        v: &'a mut [f32],
        k: Adam,
    }
    impl ElementLoop for Update<'_> {
        #[inline(always)]
        fn run(self, g: impl Fn(usize) -> f32) {
            let (k, n) = (self.k, self.p.len());
            let (m, v) = (&mut self.m[..n], &mut self.v[..n]);
            for (i, (p, (m, v))) in self.p.iter_mut().zip(m.iter_mut().zip(v)).enumerate() {
                let g = g(i);
                let d = if k.wd == 0.0 { g } else { g + *p * k.wd };
                *m = *m * k.b1 + d * (1.0 - k.b1);
                *v = *v * k.b2 + d * d * (1.0 - k.b2);
                let denom = (*v / k.c2).sqrt() + k.eps;
                *p -= *m / denom * k.step;
            }
        }
    }
    assert_eq!(g.len(), p.len(), "one gradient per parameter");
    g.run(Update { p, m, v, k });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend;
    use crate::params::{Entry, Layout, Role};
    use crate::train::ChainRule;

    fn set(values: Vec<Vec<f32>>) -> ParamSet {
        let entries = values
            .iter()
            .enumerate()
            .map(|(i, v)| Entry {
                name: format!("p{i}"),
                shape: vec![v.len()],
                role: Role::Weight,
            })
            .collect();
        let layout = Arc::new(Layout::new(entries).unwrap());
        ParamSet::from_vecs(layout, values, &backend::device()).unwrap()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + 1.3) * (seed as f32 + 0.7)).sin() * 0.5)
            .collect()
    }

    /// A layout of flat tensors `(name, length, role)`.
    fn layout_of(entries: &[(&str, usize, Role)]) -> Arc<Layout> {
        let entries = entries
            .iter()
            .map(|&(name, n, role)| Entry {
                name: name.into(),
                shape: vec![n],
                role,
            })
            .collect();
        Arc::new(Layout::new(entries).unwrap())
    }

    /// State (running statistics) is left alone by both optimisers and their weight decay.
    #[test]
    fn state_is_not_updated() {
        let layout = layout_of(&[
            ("w", 4, Role::Weight),
            ("bn.running_var", 4, Role::RunningVar),
        ]);
        let dev = backend::device();
        let p0 =
            ParamSet::from_vecs(layout.clone(), vec![values(4, 1), values(4, 2)], &dev).unwrap();
        for cfg in [
            OptimConfig::new(OptimKind::Sgd, 0.9, 5e-4),
            OptimConfig::new(OptimKind::Adam, 0.0, 1e-2),
        ] {
            let mut opt = Optimizer::new(cfg, &p0);
            let g = ParamSet::from_vecs(layout.clone(), vec![values(4, 3), values(4, 4)], &dev)
                .unwrap();
            let p = opt.step(p0.clone(), &Gradient::Values(g), 0.1).unwrap();
            assert_ne!(p.to_vecs()[0], p0.to_vecs()[0], "the weight moves");
            assert_eq!(p.to_vecs()[1], p0.to_vecs()[1], "the state stays");
        }
    }

    /// The fused update is bit-identical to the update composed from whole-tensor ops.
    #[test]
    fn fused_update_equals_tensor_formulas_bit_for_bit() {
        for (cfg, wd) in [
            (OptimConfig::new(OptimKind::Sgd, 0.9, 0.0), 0.0f32),
            (OptimConfig::new(OptimKind::Sgd, 0.9, 5e-4), 5e-4),
            (OptimConfig::new(OptimKind::Adam, 0.0, 0.0), 0.0),
            (OptimConfig::new(OptimKind::Adam, 0.0, 1e-2), 1e-2),
        ] {
            let mut p = set(vec![values(37, 1), values(5, 2)]);
            let mut opt = Optimizer::new(cfg.clone(), &p);
            let t = |v: &[f32]| Tensor::<1>::from_data(v, &backend::device());
            let mut want: Vec<Vec<f32>> = p.to_vecs();
            let mut s0: Vec<Vec<f32>> = want.iter().map(|v| vec![0.0; v.len()]).collect();
            let mut s1 = s0.clone();
            for step in 1..=4 {
                let g = set(vec![values(37, 10 + step), values(5, 20 + step)]);
                let lr = 0.01 * step as f64;
                p = opt.step(p, &Gradient::Values(g.clone()), lr).unwrap();
                for (i, gv) in g.to_vecs().iter().enumerate() {
                    let (pt, gt) = (t(&want[i]), t(gv));
                    let d = if wd == 0.0 { gt } else { gt + pt.clone() * wd };
                    let host = |x: Tensor<1>| x.into_data().try_into_vec::<f32>().unwrap();
                    match cfg {
                        OptimConfig::Sgd { momentum, .. } => {
                            let b = t(&s0[i]) * momentum as f32 + d;
                            want[i] = host(pt - b.clone() * lr as f32);
                            s0[i] = host(b);
                        }
                        OptimConfig::Adam {
                            beta1, beta2, eps, ..
                        } => {
                            let (b1, b2) = (beta1 as f32, beta2 as f32);
                            let m = t(&s0[i]) * b1 + d.clone() * (1.0 - b1);
                            let v = t(&s1[i]) * b2 + d.clone() * d * (1.0 - b2);
                            let c1 = 1.0 - beta1.powi(step as i32);
                            let c2 = 1.0 - beta2.powi(step as i32);
                            let sz = (lr as f32 as f64 / c1) as f32;
                            let denom = (v.clone() / c2 as f32).sqrt() + eps as f32;
                            want[i] = host(pt - m.clone() / denom * sz);
                            s0[i] = host(m);
                            s1[i] = host(v);
                        }
                    }
                }
                assert_eq!(p.to_vecs(), want, "{cfg:?} step {step}");
            }
        }
    }

    /// Known behaviour: Adam's first step moves every weight by ≈ lr against its gradient's
    /// sign; SGD with momentum μ and a constant gradient g moves by lr·g, then lr·(1 + μ)·g.
    #[test]
    fn adam_first_step_and_sgd_momentum() {
        let p0 = set(vec![vec![1.0, -2.0, 0.5]]);
        let g = set(vec![vec![3.0, -0.001, 1e-3]]);
        let mut adam = Optimizer::new(OptimConfig::new(OptimKind::Adam, 0.0, 0.0), &p0);
        let g = Gradient::Values(g);
        let p1 = adam.step(p0.clone(), &g, 0.1).unwrap().to_vecs()[0].clone();
        for (a, b) in p1.iter().zip([0.9, -1.9, 0.4]) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        let mut sgd = Optimizer::new(OptimConfig::new(OptimKind::Sgd, 0.9, 0.0), &p0);
        let p1 = sgd.step(p0.clone(), &g, 0.1).unwrap();
        let p2 = sgd.step(p1, &g, 0.1).unwrap().to_vecs()[0].clone();
        for ((a, p), g) in p2
            .iter()
            .zip([1.0f32, -2.0, 0.5])
            .zip([3.0f32, -0.001, 1e-3])
        {
            let want = p - 0.1 * g - 0.1 * 1.9 * g;
            assert!((a - want).abs() < 1e-6, "{a} vs {want}");
        }
    }
    /// A curve point's gradient applied inside the update gives the bits of the update with
    /// the gradient written out first; parameters shared with another owner are left as they
    /// were (the in-place write happens only on a buffer nobody else holds).
    #[test]
    fn point_gradient_update_equals_materialised_and_spares_shared_params() {
        let base = set(vec![values(40_000, 3), values(7, 4)]);
        let g = set(vec![values(40_000, 5), values(7, 6)]);
        let w = set(vec![values(40_000, 7), values(7, 8)]);
        let packed = {
            let mut e = base.layout().prefixed("a/").entries().to_vec();
            e.extend(base.layout().prefixed("b/").entries().iter().cloned());
            Arc::new(Layout::new(e).unwrap())
        };
        let mut flat = base.to_vecs();
        flat.extend(set(vec![values(40_000, 9), values(7, 10)]).to_vecs());
        let p0 = ParamSet::from_vecs(packed.clone(), flat, &backend::device()).unwrap();
        let before = p0.to_vecs();
        for cfg in [
            OptimConfig::new(OptimKind::Sgd, 0.9, 1e-3),
            OptimConfig::new(OptimKind::Adam, 0.0, 0.0),
        ] {
            let point = Gradient::Point {
                packed: packed.clone(),
                inner: Box::new(Gradient::Values(g.clone())),
                decay: Some((5e-4, w.clone())),
                scales: vec![0.3, -1.7],
            };
            let values = Gradient::Values(point.clone().into_values().unwrap());
            let (mut o1, mut o2) = (Optimizer::new(cfg.clone(), &p0), Optimizer::new(cfg, &p0));
            let (mut p1, mut p2) = (p0.clone(), p0.clone());
            for lr in [0.1, 0.05] {
                p1 = o1.step(p1, &point, lr).unwrap();
                p2 = o2.step(p2, &values, lr).unwrap();
            }
            assert_eq!(p1.to_vecs(), p2.to_vecs());
            assert_ne!(p1.to_vecs(), before);
            assert_eq!(p0.to_vecs(), before, "the shared start is untouched");
        }
    }

    /// A host-pass chain rule (`g + u⊙v + r·k` on one tensor, `u⊙v + r·k` on another, plain
    /// values on a third) read inside the update gives the same parameters, bit for bit, as
    /// the update from its values written out; over several blocks, SGD and Adam.
    #[test]
    fn chained_gradient_updates_like_its_values() {
        let device = backend::device();
        let n = 2 * BLOCK + 123;
        let p0 = set(vec![values(n, 1), values(n, 2), values(9, 3)]);
        let g = set(vec![values(n, 4), values(n, 5), values(9, 6)]);
        let u = Tensor::<1>::from_floats(values(n, 7).as_slice(), &device);
        let arc = |seed| Arc::new(values(n, seed));
        let chained = vec![
            Some(ChainRule {
                with_graph: true,
                upstream: u.clone(),
                d_output: arc(8),
                d_penalty: arc(9),
                penalty_weight: 0.3,
            }),
            Some(ChainRule {
                with_graph: false,
                upstream: u,
                d_output: arc(10),
                d_penalty: arc(11),
                penalty_weight: 1.7,
            }),
            None,
        ];
        let chain = Gradient::Chain { g, chained };
        let values = chain.clone().into_values().unwrap();
        // The values are the formulas (the second tensor ignores its own `g`).
        let (gv, uv) = (chain_parts(&chain), values.to_vecs());
        for i in 0..n {
            let (b, u, v, k) = gv[0][i];
            assert_eq!(uv[0][i], b + u * v + 0.3 * k);
            let (_, u, v, k) = gv[1][i];
            assert_eq!(uv[1][i], u * v + 1.7 * k);
        }
        let values = Gradient::Values(values);
        for cfg in [
            OptimConfig::new(OptimKind::Sgd, 0.9, 1e-3),
            OptimConfig::new(OptimKind::Adam, 0.0, 1e-4),
        ] {
            let (mut o1, mut o2) = (Optimizer::new(cfg.clone(), &p0), Optimizer::new(cfg, &p0));
            let (mut p1, mut p2) = (p0.clone(), p0.clone());
            for lr in [0.1, 0.05] {
                p1 = o1.step(p1, &chain, lr).unwrap();
                p2 = o2.step(p2, &values, lr).unwrap();
            }
            assert_eq!(p1.to_vecs(), p2.to_vecs());
            assert_ne!(p1.to_vecs(), p0.to_vecs());
        }
    }

    /// The tensor-op update (a GPU's, run here on CPU tensors) gives the host pass's bits for
    /// every form of the gradient (values, a chain rule with and without the graph's term, a
    /// curve point with its decay around a chain rule), SGD and Adam with and without weight
    /// decay, and leaves running statistics alone; its state checkpoints alike, and a run
    /// moved between the two forms mid-way (state carried over) stays on the same bits.
    #[test]
    fn tensor_update_equals_host_update_bit_for_bit() {
        let device = backend::device();
        let n = BLOCK + 77;
        let base = layout_of(&[
            ("w", n, Role::Weight),
            ("b", n, Role::Weight),
            ("bn.running_mean", 5, Role::RunningMean),
        ]);
        let on = |vs: Vec<Vec<f32>>, l: &Arc<Layout>| {
            ParamSet::from_vecs(l.clone(), vs, &device).unwrap()
        };
        let vals = |s: u32| vec![values(n, s), values(n, s + 1), values(5, s + 2)];
        let arc = |seed| Arc::new(values(n, seed));
        let u = Tensor::<1>::from_floats(values(n, 40).as_slice(), &device);
        let chain = Gradient::Chain {
            g: on(vals(10), &base),
            chained: vec![
                Some(ChainRule {
                    with_graph: true,
                    upstream: u.clone(),
                    d_output: arc(20),
                    d_penalty: arc(21),
                    penalty_weight: 0.3,
                }),
                Some(ChainRule {
                    with_graph: false,
                    upstream: u,
                    d_output: arc(22),
                    d_penalty: arc(23),
                    penalty_weight: 1.7,
                }),
                None,
            ],
        };
        let packed = {
            let mut e = base.prefixed("a/").entries().to_vec();
            e.extend(base.prefixed("b/").entries().iter().cloned());
            Arc::new(Layout::new(e).unwrap())
        };
        let point = Gradient::Point {
            packed: packed.clone(),
            inner: Box::new(chain.clone()),
            decay: Some((5e-4, on(vals(30), &base))),
            scales: vec![0.3, -1.7],
        };
        let mut two = vals(1);
        two.extend(vals(4));
        let cases = [
            (Gradient::Values(on(vals(7), &base)), on(vals(1), &base)),
            (chain, on(vals(1), &base)),
            (point, on(two, &packed)),
        ];
        for (grad, p0) in &cases {
            for cfg in [
                OptimConfig::new(OptimKind::Sgd, 0.9, 0.0),
                OptimConfig::new(OptimKind::Sgd, 0.9, 1e-3),
                OptimConfig::new(OptimKind::Adam, 0.0, 0.0),
                OptimConfig::new(OptimKind::Adam, 0.0, 1e-2),
            ] {
                let (mut host, mut tensor) = (
                    Optimizer::new(cfg.clone(), p0),
                    Optimizer::new(cfg.clone(), p0),
                );
                let (mut p1, mut p2) = (p0.clone(), p0.clone());
                for lr in [0.1, 0.05, 0.02] {
                    p1 = host.step_on(p1, grad, lr, true).unwrap();
                    p2 = tensor.step_on(p2, grad, lr, false).unwrap();
                    assert_eq!(p1.to_vecs(), p2.to_vecs(), "{cfg:?} at lr {lr}");
                }
                assert!(matches!(tensor.state, Slots::Device(_)));
                let (s1, s2) = (host.state(), tensor.state());
                for (a, b) in s1.iter().zip(&s2) {
                    assert_eq!(a.to_vecs(), b.to_vecs(), "{cfg:?}: the state");
                }
                let k = p0.layout().len() - 1;
                assert_eq!(p2.to_vecs()[k], p0.to_vecs()[k], "running statistics kept");
                assert_ne!(p2.to_vecs()[0], p0.to_vecs()[0]);
                // Switch forms: the state follows the parameters.
                p1 = host.step_on(p1, grad, 0.01, false).unwrap();
                p2 = tensor.step_on(p2, grad, 0.01, true).unwrap();
                assert!(matches!(host.state, Slots::Device(_)));
                assert!(matches!(tensor.state, Slots::Host(_)));
                assert_eq!(p1.to_vecs(), p2.to_vecs(), "{cfg:?} after switching");
            }
        }
    }

    /// `(g, u, v, k)` per element of the two chained tensors of the test above.
    fn chain_parts(chain: &Gradient) -> Vec<Vec<(f32, f32, f32, f32)>> {
        let Gradient::Chain { g, chained } = chain else {
            unreachable!("built as a chain")
        };
        (0..2)
            .map(|i| {
                let c = chained[i].as_ref().unwrap();
                let (g, u) = (g.to_vecs()[i].clone(), crate::params::host_vec(&c.upstream));
                (0..g.len())
                    .map(|j| (g[j], u[j], c.d_output[j], c.d_penalty[j]))
                    .collect()
            })
            .collect()
    }

    /// A chain rule shaped unlike its tensor is refused.
    #[test]
    fn chained_gradient_of_the_wrong_length_is_refused() {
        let device = backend::device();
        let g = set(vec![values(5, 1)]);
        let bad = |u: usize, v: usize| Gradient::Chain {
            g: g.clone(),
            chained: vec![Some(ChainRule {
                with_graph: true,
                upstream: Tensor::<1>::from_floats(values(u, 2).as_slice(), &device),
                d_output: Arc::new(values(v, 3)),
                d_penalty: Arc::new(values(5, 4)),
                penalty_weight: 1.0,
            })],
        };
        assert!(bad(5, 5).check().is_ok());
        assert!(bad(4, 5).check().is_err());
        assert!(bad(5, 6).check().is_err());
        let p = set(vec![values(5, 5)]);
        let mut o = Optimizer::new(OptimConfig::new(OptimKind::Sgd, 0.9, 0.0), &p);
        assert!(o.step(p, &bad(5, 6), 0.1).is_err());
        let short = Gradient::Chain {
            g: g.clone(),
            chained: vec![],
        };
        assert!(short.into_values().is_err());
    }
}
