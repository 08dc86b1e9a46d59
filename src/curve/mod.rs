//! Curves between two minima (Garipov et al. 2018): `w(t) = Σ_j c_j(t) θ_j` over control points
//! `θ_0 = w_A, θ_1 … θ_{n−2}` (bends), `θ_{n−1} = w_B`. Endpoints are frozen by default; bends are
//! initialised on the straight line, `θ_j = (1 − j/(n−1)) w_A + (j/(n−1)) w_B`, so an untrained
//! curve is the line. Training samples one `t ~ U(0,1)` per minibatch and minimises
//! `CE(w(t)) + ½·wd·‖w(t)‖²` (decay on the sampled point, not on the bends).

pub mod kind;

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor};
use rand::Rng;
use serde_json::{Value, json};

pub use kind::CurveKind;

use crate::arch::Arch;
use crate::backend::{into_host_vec, on_host};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::state::{StateSample, recompute_model};
use crate::model::Model;
use crate::params::io::{FileMeta, Loaded, save};
use crate::params::{Layout, ParamSet};
use crate::train::{Classification, Gradient, Objective, Scalars, StepCtx};
use crate::variational::{VConfig, VModel};

/// A curve: its kind, model and control points (endpoints first and last).
///
/// The points of a curve between variational models hold every variational parameter (θ,
/// log σ², per-layer log α): its points interpolate in the space the models are stored in,
/// (θ, log σ²) (REFERENCE: Rossi et al. 2023 interpolate means and standard deviations).
#[derive(Debug, Clone)]
pub struct Curve {
    /// Curve family.
    pub kind: CurveKind,
    /// What every point is the parameters of (a plain network or a variational model).
    pub model: Model,
    /// Control points `θ_0 … θ_{n−1}` (no autodiff).
    pub points: Vec<ParamSet>,
    /// Whether the endpoints were trained too (`connect --train-ends`); when false they are the
    /// two input networks, bit for bit.
    pub ends_trained: bool,
}

fn prefix(j: usize) -> String {
    format!("point{j}/")
}

impl Curve {
    /// A curve with `bends` bends placed on the straight line between `a` and `b`.
    pub fn init_linear(
        kind: CurveKind,
        bends: usize,
        model: impl Into<Model>,
        a: &ParamSet,
        b: &ParamSet,
    ) -> Result<Self> {
        a.check_same_layout(b)?;
        let n = bends + 2;
        let points = (0..n)
            .map(|j| {
                if j == 0 {
                    Ok(a.clone())
                } else if j == n - 1 {
                    Ok(b.clone())
                } else {
                    a.lerp(b, j as f32 / (n - 1) as f32)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            kind,
            model: model.into(),
            points,
            ends_trained: false,
        })
    }

    /// The architecture of every point.
    pub fn arch(&self) -> &Arch {
        self.model.arch()
    }

    /// Number of control points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Always false: a curve has at least its two endpoints.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The point `w(t)` as an ordinary parameter set.
    pub fn point(&self, t: f64) -> ParamSet {
        point_of(self.kind, &self.points.iter().collect::<Vec<_>>(), t)
    }

    /// Indices of the trained control points: the bends, plus the ends when `train_ends`.
    pub fn trainable(&self, train_ends: bool) -> Vec<usize> {
        let n = self.len();
        (0..n)
            .filter(|&j| train_ends || (j != 0 && j != n - 1))
            .collect()
    }

    /// The points `idx` packed into one set (names `point{j}/…`) for the training loop.
    pub fn pack(&self, idx: &[usize]) -> ParamSet {
        let sets: Vec<&ParamSet> = idx.iter().map(|&j| &self.points[j]).collect();
        ParamSet::pack(&sets, |k| prefix(idx[k]))
    }

    /// Writes packed points back (inverse of [`Curve::pack`]).
    pub fn unpack(&mut self, idx: &[usize], packed: &ParamSet) {
        let parts = packed.unpack(self.points[0].layout());
        for (&j, p) in idx.iter().zip(parts) {
            self.points[j] = p;
        }
    }

    /// Saves all control points with the curve kind in the metadata (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut meta = FileMeta::new("curve", &self.arch().to_string());
        meta.extra = json!({
            "curve": self.kind.to_string(),
            "points": self.len(),
            "train_ends": self.ends_trained,
        });
        if let Some(m) = self.model.variational() {
            meta.extra["variational"] = json!(m.config);
        }
        let names: Vec<String> = (0..self.len()).map(prefix).collect();
        let sets: Vec<(&str, &ParamSet)> = names
            .iter()
            .map(String::as_str)
            .zip(self.points.iter())
            .collect();
        save(path, &meta, &sets)
    }

    /// Loads a curve saved by [`Curve::save`], checking every name and shape.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let mut f = Loaded::open(path)?;
        f.expect_kind(&["curve"])?;
        let bad = |msg: String| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        let arch: Arch = f.meta.arch.parse().map_err(|e: Error| bad(e.to_string()))?;
        let kind: CurveKind = serde_json::from_value(f.meta.extra["curve"].clone())
            .map_err(|e| bad(format!("curve kind in metadata: {e}")))?;
        let n = f.meta.extra["points"]
            .as_u64()
            .filter(|&n| n >= 2)
            .ok_or_else(|| bad("no valid point count in metadata".into()))?
            as usize;
        // Files written before this field existed are read as frozen-ends curves (the default).
        let ends_trained = f.meta.extra["train_ends"].as_bool().unwrap_or(false);
        let model = match f.meta.extra.get("variational") {
            None => Model::Plain(arch),
            Some(v) => {
                let config: VConfig = serde_json::from_value(v.clone())
                    .map_err(|e| bad(format!("invalid variational metadata: {e}")))?;
                Model::Variational(VModel::new(arch, config).map_err(|e| bad(e.to_string()))?)
            }
        };
        let layout = model.layout();
        let points = (0..n)
            .map(|j| f.take_set(&prefix(j), &layout, device))
            .collect::<Result<Vec<_>>>()?;
        f.finish()?;
        Ok(Self {
            kind,
            model,
            points,
            ends_trained,
        })
    }

    /// Errors unless this curve runs from `a` to `b`: with frozen ends its first and last control
    /// points must equal them bit for bit (a curve fitted between other networks, or from `b` to
    /// `a`, would be compared with the wrong line). A curve whose ends were trained is accepted
    /// as it is. `what` names the curve in the message (e.g. its file).
    pub fn check_ends(&self, a: &ParamSet, b: &ParamSet, what: &str) -> Result<()> {
        if self.ends_trained {
            return Ok(());
        }
        let (first, last) = (&self.points[0], &self.points[self.len() - 1]);
        let same = |p: &ParamSet, q: &ParamSet| p.to_flat() == q.to_flat();
        if same(first, a) && same(last, b) {
            Ok(())
        } else if same(first, b) && same(last, a) {
            Err(Error::Config(format!(
                "{what} runs from --b to --a: swap --a and --b"
            )))
        } else {
            Err(Error::Config(format!(
                "{what} was fitted between other networks: its frozen endpoints are not --a and --b"
            )))
        }
    }
}

/// Multiplies every bend (every point but the first and the last) by `mask` (0/1 per
/// parameter, in the points' layout).
pub fn mask_bends(points: &mut [ParamSet], mask: &[Vec<f32>]) {
    let n = points.len();
    for p in points.iter_mut().take(n - 1).skip(1) {
        let device = p.tensors()[0].device();
        let values = p
            .to_vecs()
            .into_iter()
            .zip(mask)
            .map(|(v, m)| v.iter().zip(m).map(|(x, k)| x * k).collect())
            .collect();
        *p = ParamSet::from_vecs(p.layout().clone(), values, &device).expect("the points' layout");
    }
}

/// `Σ_j c_j(t) θ_j` for the given points (differentiable in whichever points carry autodiff).
pub fn point_of(kind: CurveKind, points: &[&ParamSet], t: f64) -> ParamSet {
    let c: Vec<f32> = kind
        .coeffs(points.len(), t)
        .into_iter()
        .map(|c| c as f32)
        .collect();
    ParamSet::combination(points, &c).expect("control points share one layout")
}

/// The curve-fitting objective: one `t ~ U(0,1)` per minibatch, loss
/// `P(w(t)) + ½·wd·‖w(t)‖²` for a per-point objective `P` — cross-entropy for plain networks
/// ([`Classification`], normalisation layers in train mode), the ELBO of the point's posterior
/// for variational models ([`crate::variational::objective::Elbo`]); frozen points enter as
/// constants.
///
/// The point `w(t) = Σ_j c_j(t)·θ_j` is formed on the host ([`Objective::weights`]), into the
/// last step's buffers, and handed to the point objective, whose graph differentiates at `w(t)`
/// only; the chain rule to the trained points, `∂L/∂θ_j = c_j(t)·(∂P/∂w + wd·w(t))`, is applied
/// by the optimiser inside its update pass ([`Objective::pull_back`] returns a
/// [`Gradient::Point`] around the point objective's own gradient form). Forming `w(t)` and its
/// decay term in the graph instead cost as much again as the network's own step.
pub struct CurveObjective<'a, P: Objective = Classification<'a>> {
    /// The curve (frozen points are read from here).
    pub curve: Curve,
    /// Indices of the trained points, in packing order.
    pub trainable: Vec<usize>,
    /// Weight decay on the sampled point.
    pub wd: f64,
    /// Test data for the per-epoch midpoint evaluation.
    pub test: &'a Dataset,
    /// Evaluation device.
    pub device: Device,
    /// The per-point objective.
    point: P,
    /// 0/1 per parameter (in the points' layout) that the bends are multiplied by wherever they
    /// are used ([`CurveObjective::with_bend_mask`]).
    bend_mask: Option<Vec<Vec<f32>>>,
    /// Data on which the midpoint's state is recomputed before its evaluation (networks with
    /// normalisation layers; [`CurveObjective::with_state_data`]; default: `test`).
    state_data: Option<&'a Dataset>,
    sampled: Option<Sampled>,
    /// The point `w(t)` of the last step, whose buffers the next step reuses.
    last_point: Option<ParamSet>,
}

/// What [`Objective::weights`] drew for the current step.
struct Sampled {
    t: f64,
    /// `c_j(t)` per control point.
    coeffs: Vec<f32>,
    /// `‖w(t)‖²`.
    sq_norm: f64,
    /// Layout of the packed trained points.
    packed: Arc<Layout>,
    /// Whether the point objective extended the point with its own host pass (and so maps
    /// the gradient back itself).
    extended: bool,
}

impl<'a> CurveObjective<'a> {
    /// The objective for training the points `trainable` of a plain network's `curve` with
    /// decay `wd` on the sampled point, evaluating the midpoint on `test` after each epoch.
    pub fn new(
        curve: Curve,
        trainable: Vec<usize>,
        wd: f64,
        test: &'a Dataset,
        device: Device,
    ) -> Self {
        let point = Classification::new(curve.arch().clone(), test, device.clone());
        Self::with_point(curve, trainable, wd, point, test, device)
    }
}

impl<'a, P: Objective> CurveObjective<'a, P> {
    /// The objective for training the points `trainable` of `curve` with the per-point
    /// objective `point` (which also evaluates the midpoint after each epoch) and decay `wd`
    /// on the sampled point.
    pub fn with_point(
        curve: Curve,
        trainable: Vec<usize>,
        wd: f64,
        point: P,
        test: &'a Dataset,
        device: Device,
    ) -> Self {
        Self {
            curve,
            trainable,
            wd,
            test,
            device,
            point,
            bend_mask: None,
            state_data: None,
            sampled: None,
            last_point: None,
        }
    }

    /// Restrict the bends to a 0/1 mask (curves between pruned networks inside the union or
    /// the intersection of their masks, Evci et al. 2019): every use of a bend multiplies it
    /// by the mask, so its masked-out entries take no part in the loss and stay out of the
    /// fitted curve ([`mask_bends`]); the endpoints are untouched.
    pub fn with_bend_mask(self, mask: Vec<Vec<f32>>) -> Self {
        self.with_bend_mask_opt(Some(mask))
    }

    /// [`CurveObjective::with_bend_mask`] when `mask` is some.
    pub fn with_bend_mask_opt(mut self, mask: Option<Vec<Vec<f32>>>) -> Self {
        self.bend_mask = mask;
        self
    }

    /// Recompute the evaluated midpoint's state on `data` (the training set).
    pub fn with_state_data(mut self, data: &'a Dataset) -> Self {
        self.state_data = Some(data);
        self
    }

    fn assemble(&self, packed: &ParamSet) -> Vec<ParamSet> {
        let trained = packed.unpack(self.curve.points[0].layout());
        let mut points = self.curve.points.clone();
        for (&j, p) in self.trainable.iter().zip(trained) {
            points[j] = p;
        }
        if let Some(m) = &self.bend_mask {
            mask_bends(&mut points, m);
        }
        points
    }
}

impl<P: Objective> Objective for CurveObjective<'_, P> {
    fn weights(&mut self, params: &ParamSet, ctx: &mut StepCtx<'_>) -> Option<ParamSet> {
        let t: f64 = ctx.rng.random();
        let points = self.assemble(params);
        let coeffs: Vec<f32> = self
            .curve
            .kind
            .coeffs(points.len(), t)
            .into_iter()
            .map(|c| c as f32)
            .collect();
        let refs: Vec<&ParamSet> = points.iter().collect();
        let (w, sq_norm) = if on_host(&params.tensors()[0]) {
            // The last step's point is written over: by now the step has dropped its other
            // references to it, so its buffers come back without a copy.
            let buffers = self
                .last_point
                .take()
                .map(|w| w.into_tensors().into_iter().map(into_host_vec).collect())
                .unwrap_or_default();
            let (w, sq_norm) = ParamSet::combination_into(&refs, &coeffs, buffers)
                .expect("control points share one layout");
            let device = params.tensors()[0].device();
            let w = ParamSet::from_vecs(points[0].layout().clone(), w, &device)
                .expect("shaped like the points");
            (w, sq_norm)
        } else {
            // On a GPU the point is formed on the device, in tensor ops.
            let w = ParamSet::combination(&refs, &coeffs).expect("control points share one layout");
            let sq_norm = if self.wd > 0.0 {
                w.sq_norm_tensor().into_scalar::<f32>() as f64
            } else {
                0.0
            };
            (w, sq_norm)
        };
        self.last_point = Some(w.clone());
        // The point objective's own host pass, if it has one (a variational point's
        // variances), extends the point.
        let extended = self.point.weights(&w, ctx);
        self.sampled = Some(Sampled {
            t,
            coeffs,
            sq_norm,
            packed: params.layout().clone(),
            extended: extended.is_some(),
        });
        Some(extended.unwrap_or(w))
    }

    /// `weights` are the leaves drawn by [`Objective::weights`] for this step.
    fn loss(
        &mut self,
        weights: &ParamSet,
        x: Tensor<2>,
        y: Tensor<1, Int>,
        ctx: &mut StepCtx<'_>,
    ) -> (Tensor<1>, Scalars) {
        let (sq_norm, t) = {
            let s = self
                .sampled
                .as_ref()
                .expect("CurveObjective::weights runs before loss");
            (s.sq_norm, s.t)
        };
        // Normalisation layers run in train mode at the sampled point (Garipov et al. 2018):
        // a curve's points carry no meaningful running statistics; they are recomputed
        // wherever a point is evaluated.
        let (loss, mut scalars) = self.point.loss(weights, x, y, ctx);
        // The decay's value only: its gradient enters in `pull_back`.
        let loss = if self.wd > 0.0 {
            loss + (0.5 * self.wd * sq_norm) as f32
        } else {
            loss
        };
        scalars.push(("t", t));
        (loss, scalars)
    }

    fn pull_back(&mut self, weights: ParamSet, grad: ParamSet) -> Result<Gradient> {
        let s = self
            .sampled
            .take()
            .expect("CurveObjective::weights runs before pull_back");
        let inner = match s.extended {
            true => self.point.pull_back(weights, grad)?,
            false => Gradient::Values(grad),
        };
        // `∂L/∂θ_j = c_j·(∂P/∂w + wd·w(t))`, formed by the optimiser inside its update pass
        // (`w(t)` is read only when there is a decay).
        let decay = (self.wd != 0.0).then(|| {
            let w = self.last_point.clone().expect("drawn by weights");
            (self.wd as f32, w)
        });
        Ok(Gradient::Point {
            packed: s.packed,
            inner: Box::new(inner),
            decay,
            scales: self.trainable.iter().map(|&j| s.coeffs[j]).collect(),
        })
    }

    fn epoch_end(&mut self, params: &ParamSet, epoch: usize) -> Result<Vec<(String, Value)>> {
        let points = self.assemble(params);
        let mid = point_of(self.curve.kind, &points.iter().collect::<Vec<_>>(), 0.5);
        let data = self.state_data.unwrap_or(self.test);
        let mid = recompute_model(
            &self.curve.model,
            &mid,
            data,
            &StateSample::ALL,
            &self.device,
        );
        let m = self.point.epoch_end(&mid, epoch)?;
        Ok(m.into_iter()
            .map(|(k, v)| (format!("{k}_mid"), v))
            .collect())
    }
}
