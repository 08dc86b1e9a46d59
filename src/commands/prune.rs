//! `modeconn prune`: turn a sparse-VD, ARD or group-ARD model into the plain masked network of
//! its mode (`θ ⊙ 1[log α < 3]`, Molchanov et al. 2017) and write its mask, so that curves
//! between sparse minima can be fitted inside or outside their masks (`connect --mask`; Evci et
//! al. 2019). Writes `model.safetensors` (an ordinary model file), `mask.safetensors` (1 where a
//! weight is kept, 0 where pruned; biases 1), `summary.json` and `run.json` into `--out`.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde_json::{Value, json};

use super::{eval_device, load_data};
use crate::arch::Arch;
use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::eval::{EVAL_BATCH, evaluate};
use crate::network_file::save_model;
use crate::params::io::{FileMeta, Loaded, save};
use crate::params::{ParamSet, Role};
use crate::report::{RunRecord, write_json};
use crate::variational::{Prior, load_vmodel};

/// File kind of a mask.
pub const MASK_KIND: &str = "mask";

/// The mask file a pruned model's directory holds.
pub const MASK_FILE: &str = "mask.safetensors";

/// Validated options of `modeconn prune`.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// The variational model.
    pub model: PathBuf,
    /// Data on which the pruned network is evaluated.
    pub data: DataConfig,
    /// Output directory.
    pub out: PathBuf,
}

/// Saves a 0/1 mask on `arch`'s layout (atomically).
pub fn save_mask(path: &Path, arch: &Arch, mask: &ParamSet) -> Result<()> {
    save(
        path,
        &FileMeta::new(MASK_KIND, &arch.to_string()),
        &[("", mask)],
    )
}

/// Loads a mask written by [`save_mask`] for `arch`; `flag` names the option in errors.
pub fn load_mask(path: &Path, arch: &Arch, flag: &str, device: &Device) -> Result<ParamSet> {
    let mut f = Loaded::open(path).map_err(|e| {
        Error::Config(format!(
            "{flag}: {e} (a pruned model's mask, written by modeconn prune)"
        ))
    })?;
    f.expect_kind(&[MASK_KIND])?;
    if f.meta.arch != arch.to_string() {
        return Err(Error::Config(format!(
            "{flag}: the mask {} is for {}, the networks are {arch}",
            path.display(),
            f.meta.arch
        )));
    }
    let m = f.take_set("", &arch.layout(), device)?;
    f.finish()?;
    if m.to_flat().iter().any(|&v| v != 0.0 && v != 1.0) {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            msg: "a mask holds only 0 and 1".into(),
        });
    }
    Ok(m)
}

/// Runs `prune`; returns the summary (also `out/summary.json`).
pub fn run(opts: &PruneOptions, argv: Vec<String>) -> Result<Value> {
    let record = RunRecord::start(
        argv,
        json!({"model": opts.model, "data": opts.data, "out": opts.out}),
        None,
    );
    let device = eval_device();
    let (model, params, _) = load_vmodel(&opts.model, &device)?;
    if !matches!(
        model.prior,
        Prior::LogUniform | Prior::Ard | Prior::GroupArd
    ) || model
        .layers()
        .iter()
        .any(|l| l.q != crate::variational::Posterior::Additive)
    {
        return Err(Error::Config(format!(
            "--model {}: a {} model; prune applies to sparse-vd, ard and group-ard models (a weight is pruned where log α > 3)",
            opts.model.display(),
            model.config.method
        )));
    }
    let split = load_data(&opts.data)?;
    model.arch.check_data(&split.test)?;
    let pruned = model.mode(&params);
    let masks = model.keep_mask(&params);
    let layout = model.arch.layout();
    let values = layout
        .entries()
        .iter()
        .map(|e| match e.role {
            Role::Weight => {
                let layer = e.name.trim_end_matches(".weight");
                let (_, m) = masks.iter().find(|(n, _)| n == layer).expect("a layer");
                m.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect()
            }
            _ => vec![1.0; e.numel()],
        })
        .collect();
    let mask = ParamSet::from_vecs(layout, values, &device)?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let file = opts.out.join("model.safetensors");
    save_model(&file, &model.arch, &pruned)?;
    save_mask(&opts.out.join(MASK_FILE), &model.arch, &mask)?;
    let te = evaluate(&model.arch, &pruned, &split.test, EVAL_BATCH, &device);
    let stats = model.stats(&params);
    let mut summary = json!({
        "source": opts.model,
        "method": model.config.method.to_string(),
        "arch": model.arch.to_string(),
        "model": file,
        "mask": opts.out.join(MASK_FILE),
        "test_acc": te.acc,
        "test_loss": te.loss,
    });
    for (k, v) in stats.json_entries() {
        summary[k] = v;
    }
    write_json(&opts.out.join("summary.json"), &summary)?;
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}
