//! `modeconn import --from torch`: a PyTorch state dict (`torch.save` or safetensors) as a
//! modeconn network file of a given architecture (name mapping: [`crate::torch_io`]).

use std::path::PathBuf;

use regex::Regex;
use serde_json::{Value, json};

use super::eval_device;
use crate::arch::Arch;
use crate::error::{Error, Result};
use crate::network_file::save_model;
use crate::params::ParamSet;
use crate::report::RunRecord;
use crate::torch_io::{map_to_layout, read_state_dict};

/// Validated options of `import`.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The state dict file.
    pub file: PathBuf,
    /// The architecture it holds.
    pub arch: Arch,
    /// `--rename` rules, applied in order.
    pub renames: Vec<(Regex, String)>,
    /// The key a checkpoint nests its state dict under.
    pub key: Option<String>,
    /// Output directory.
    pub out: PathBuf,
}

/// Runs `import`: everything is read and checked before `out/model.safetensors` is written.
pub fn run(opts: &ImportOptions, argv: Vec<String>) -> Result<Value> {
    let rules: Vec<String> = opts
        .renames
        .iter()
        .map(|(r, s)| format!("{}={s}", r.as_str()))
        .collect();
    let record = RunRecord::start(
        argv,
        json!({"file": opts.file, "arch": opts.arch.to_string(), "rename": rules,
               "key": opts.key, "out": opts.out}),
        None,
    );
    let tensors = read_state_dict(&opts.file, opts.key.as_deref())?;
    let layout = opts.arch.layout();
    let (values, from) = map_to_layout(&opts.file, tensors, &layout, &opts.renames)?;
    let params = ParamSet::from_vecs(layout.clone(), values, &eval_device())?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let model = opts.out.join("model.safetensors");
    save_model(&model, &opts.arch, &params)?;
    let mapping: Vec<Value> = layout
        .entries()
        .iter()
        .zip(&from)
        .map(|(e, f)| json!({"name": e.name, "from": f, "shape": e.shape}))
        .collect();
    let summary = json!({
        "source": opts.file,
        "arch": opts.arch.to_string(),
        "model": model,
        "tensors": mapping,
    });
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}

/// The one-screen table of an import: each tensor and where it came from.
pub fn table(v: &Value) -> String {
    let mut t = format!("{}\n", v["model"].as_str().unwrap_or_default());
    for m in v["tensors"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "  {:<24} <- {:<28} {}\n",
            m["name"].as_str().unwrap_or_default(),
            m["from"].as_str().unwrap_or_default(),
            m["shape"]
        ));
    }
    t
}
