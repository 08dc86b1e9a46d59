//! Command implementations. Each takes validated options (never clap types), does the work and
//! writes its result files.

pub mod align;
pub mod connect;
pub mod dimension;
pub mod eval;
pub mod export;
pub mod fge;
pub mod hessian;
pub mod import;
pub mod instability;
pub mod intrinsic;
pub mod landscape;
pub mod path;
pub mod permute;
pub mod plane;
pub mod plot;
pub mod probe;
pub mod project;
pub mod prune;
pub mod report;
pub mod simplex;
pub mod train;
pub mod vtrain;

use burn::tensor::Device;

use crate::arch::Arch;
use crate::data::{self, DataConfig, Source, Split};
use crate::error::Result;

/// Loads the data split named by `cfg`.
pub fn load_data(cfg: &DataConfig) -> Result<Split> {
    data::load(cfg)
}

/// The default architecture for a dataset when `--arch` is not given: `mlp:D-128-10` for the
/// small digits set, LeNet-300-100 (`mlp:D-300-100-10`) otherwise.
pub fn default_arch(split: &Split) -> Arch {
    let d = split.train.dim();
    let widths = match split.train.name.starts_with(Source::Digits.name()) {
        true => vec![d, 128, split.train.classes],
        false => vec![d, 300, 100, split.train.classes],
    };
    Arch::Mlp {
        widths,
        norm: Default::default(),
    }
}

/// When `fit` stopped early (`--stop-after`, `--stop-at-step`): records the run and returns what
/// to report.
pub fn early_stop(
    fitted: &crate::train::Fitted,
    record: &crate::report::RunRecord,
    out: &std::path::Path,
) -> Result<Option<serde_json::Value>> {
    if fitted.finished {
        return Ok(None);
    }
    let v = match fitted.stopped_at_step {
        Some(k) => serde_json::json!({"stopped_at_step": k}),
        None => serde_json::json!({"stopped_after_epoch": fitted.epochs_done}),
    };
    record.finish(out, v.clone())?;
    Ok(Some(v))
}

/// The evaluation device.
pub fn eval_device() -> Device {
    crate::backend::device()
}
