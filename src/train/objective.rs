//! Objectives: what the loop minimises. Plain classification is `CE(f(x; w), y)` (or the squared
//! error to one-hot targets, [`Loss::Mse`]) with the optimiser's weight decay; curves and
//! variational models bring their own.

use burn::tensor::{Device, Int, Tensor};
use serde_json::{Value, json};

use super::{Gradient, StepCtx};
use crate::arch::Arch;
use crate::data::Dataset;
use crate::error::Result;
use crate::eval::{EVAL_BATCH, cross_entropy, evaluate, squared_error};
use crate::params::ParamSet;
use crate::weights::norm::{BatchStats, TrainMode};

/// Named scalars an objective reports for one step (averaged over the epoch in the log).
pub type Scalars = Vec<(&'static str, f64)>;

/// A training objective.
pub trait Objective {
    /// The differentiable loss of one batch (`[1]` tensor) and named scalars to log (averaged
    /// over the epoch). `params` are autodiff leaves.
    fn loss(
        &mut self,
        params: &ParamSet,
        x: Tensor<2>,
        y: Tensor<1, Int>,
        ctx: &mut StepCtx<'_>,
    ) -> (Tensor<1>, Scalars);

    /// For objectives whose network weights are a function of the trained parameters formed
    /// outside the graph (a curve's point `w(t) = Σ_j c_j(t)·θ_j`): this step's weights as plain
    /// values. `loss` then receives them as autodiff leaves, and [`Objective::pull_back`] maps
    /// `∂L/∂w` to `∂L/∂params`. The default, `None`: `loss` receives `params` themselves.
    fn weights(&mut self, _params: &ParamSet, _ctx: &mut StepCtx<'_>) -> Option<ParamSet> {
        None
    }

    /// `∂L/∂params` from `∂L/∂w` for the weights `w` returned by [`Objective::weights`] (only
    /// called when it returned some).
    fn pull_back(&mut self, _weights: ParamSet, grad: ParamSet) -> Result<Gradient> {
        Ok(Gradient::Values(grad))
    }

    /// Metrics recorded at the end of epoch `epoch` (0-based); `params` carry no autodiff.
    fn epoch_end(&mut self, params: &ParamSet, epoch: usize) -> Result<Vec<(String, Value)>>;

    /// The normalisation layers' batch statistics of the last [`Objective::loss`], which the
    /// loop folds into the trained set's state with PyTorch's momentum
    /// ([`crate::weights::norm::BN_MOMENTUM`]). Default: none (no state, or state that is
    /// recomputed rather than tracked, as a curve's).
    fn take_batch_stats(&mut self) -> Vec<BatchStats> {
        Vec::new()
    }
}

/// The data term of a plain network.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Cross-entropy of the softmax, `−log softmax(z)_y`.
    #[default]
    CrossEntropy,
    /// Squared error to the one-hot target, `‖z − e_y‖²` summed over the outputs and averaged
    /// over the batch: the interpolating setting of `modeconn dimension` (Cooper 2018), where the
    /// minima are the exact fits `z_i = e_{y_i}`.
    Mse,
}

impl Loss {
    /// The loss of `logits: [b, k]` against labels `[b]`, as a `[1]` tensor.
    pub fn of(self, logits: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
        match self {
            Loss::CrossEntropy => cross_entropy(logits, y),
            Loss::Mse => squared_error(logits, y),
        }
    }
}

/// The loss of a plain network (normalisation layers in train mode), cross-entropy unless
/// [`Classification::with_loss`] says otherwise; reports test cross-entropy and accuracy after
/// each epoch.
pub struct Classification<'a> {
    /// The architecture.
    pub arch: Arch,
    /// The data term.
    pub loss: Loss,
    /// Evaluated after every epoch.
    pub test: &'a Dataset,
    /// Device for evaluation.
    pub device: Device,
    stats: Vec<BatchStats>,
}

impl<'a> Classification<'a> {
    /// The objective for `arch`, evaluated on `test` after every epoch.
    pub fn new(arch: Arch, test: &'a Dataset, device: Device) -> Self {
        Self {
            arch,
            loss: Loss::CrossEntropy,
            test,
            device,
            stats: Vec::new(),
        }
    }

    /// The same objective with the data term `loss`.
    pub fn with_loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }
}

impl Objective for Classification<'_> {
    fn loss(
        &mut self,
        params: &ParamSet,
        x: Tensor<2>,
        y: Tensor<1, Int>,
        _ctx: &mut StepCtx<'_>,
    ) -> (Tensor<1>, Scalars) {
        if !params.layout().has_state() {
            return (self.loss.of(self.arch.forward(params, x), y), Vec::new());
        }
        let train = TrainMode::new(params);
        let logits = self.arch.forward(&train, x);
        self.stats = train.into_stats();
        (self.loss.of(logits, y), Vec::new())
    }

    fn take_batch_stats(&mut self) -> Vec<BatchStats> {
        std::mem::take(&mut self.stats)
    }

    fn epoch_end(&mut self, params: &ParamSet, _epoch: usize) -> Result<Vec<(String, Value)>> {
        let m = evaluate(&self.arch, params, self.test, EVAL_BATCH, &self.device);
        Ok(vec![
            ("test_loss".into(), json!(m.loss)),
            ("test_acc".into(), json!(m.acc)),
        ])
    }
}
