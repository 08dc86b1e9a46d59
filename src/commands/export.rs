//! `modeconn export --to torch`: a network file as a PyTorch state dict in safetensors, under
//! the architecture's PyTorch names, loadable with `load_state_dict(..., strict=True)` into the
//! matching `nn.Module` ([`crate::torch_io::write_state_dict`]).

use std::path::PathBuf;

use serde_json::{Value, json};

use super::eval_device;
use crate::error::{Error, Result};
use crate::network_file::load_model;
use crate::report::RunRecord;
use crate::torch_io::write_state_dict;

/// Validated options of `export`.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The network file.
    pub model: PathBuf,
    /// Output directory (`state_dict.safetensors`).
    pub out: PathBuf,
}

/// Runs `export`.
pub fn run(opts: &ExportOptions, argv: Vec<String>) -> Result<Value> {
    let record = RunRecord::start(argv, json!({"model": opts.model, "out": opts.out}), None);
    let (arch, params) = load_model(&opts.model, &eval_device()).map_err(|e| {
        Error::Config(format!(
            "--model: {e} (export takes a plain network file, e.g. train's model.safetensors)"
        ))
    })?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let file = opts.out.join("state_dict.safetensors");
    write_state_dict(&file, &params.layout().clone(), &params.to_vecs())?;
    let summary = json!({
        "model": opts.model,
        "arch": arch.to_string(),
        "state_dict": file,
        "tensors": params.layout().entries().iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
    });
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}
