//! A trained network on disk: its architecture spec plus its [`ParamSet`], in one self-describing
//! safetensors file (kind `model`, tensors under their bare names such as `fc1.weight`).

use std::path::Path;

use burn::tensor::Device;

use crate::arch::Arch;
use crate::error::{Error, Result};
use crate::params::ParamSet;
use crate::params::io::{FileMeta, Loaded, save};

/// Saves a network (atomically).
pub fn save_model(path: &Path, arch: &Arch, params: &ParamSet) -> Result<()> {
    save(
        path,
        &FileMeta::new("model", &arch.to_string()),
        &[("", params)],
    )
}

/// Loads a network, checking every name and shape against its architecture's layout.
pub fn load_model(path: &Path, device: &Device) -> Result<(Arch, ParamSet)> {
    let mut f = Loaded::open(path)?;
    f.expect_kind(&["model"])?;
    let arch: Arch = f.meta.arch.parse().map_err(|e: Error| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let params = f.take_set("", &arch.layout(), device)?;
    f.finish()?;
    Ok((arch, params))
}
