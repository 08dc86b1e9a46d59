//! A trained network on disk: its architecture spec plus its [`ParamSet`], in one self-describing
//! safetensors file (kind `model`, tensors under their bare names such as `fc1.weight`).

use std::path::Path;

use burn::tensor::Device;

use crate::arch::Arch;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::params::ParamSet;
use crate::params::io::{FileMeta, Loaded, save};
use crate::variational::{is_variational, save_vmodel, vmodel_from};

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
    model_from(Loaded::open(path)?, path, device)
}

/// [`load_model`] of a file already read.
fn model_from(mut f: Loaded, path: &Path, device: &Device) -> Result<(Arch, ParamSet)> {
    f.expect_kind(&["model"])?;
    let arch: Arch = f.meta.arch.parse().map_err(|e: Error| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let params = f.take_set("", &arch.layout(), device)?;
    f.finish()?;
    Ok((arch, params))
}

/// Loads a plain network or a variational model (a `vtrain` model file or checkpoint).
pub fn load_any(path: &Path, device: &Device) -> Result<(Model, ParamSet)> {
    let f = Loaded::open(path)?;
    if is_variational(&f.meta) {
        let (m, p, _) = vmodel_from(f, path, device)?;
        Ok((Model::Variational(m), p))
    } else {
        let (a, p) = model_from(f, path, device)?;
        Ok((Model::Plain(a), p))
    }
}

/// Whether the file at `path` holds a variational model (reads its header and metadata).
pub fn holds_variational(path: &Path) -> Result<bool> {
    Ok(is_variational(&Loaded::open(path)?.meta))
}

/// Loads two plain networks or two variational models of one architecture and configuration:
/// `(flag, file)` each names the flag in errors.
pub fn load_any_pair(
    a: (&str, &Path),
    b: (&str, &Path),
    device: &Device,
) -> Result<(Model, ParamSet, ParamSet)> {
    let (ma, pa) = load_any(a.1, device)?;
    let (mb, pb) = load_any(b.1, device)?;
    if ma != mb {
        let what = |m: &Model| match m.variational() {
            None => format!("a plain {m}"),
            Some(_) => format!("a {m} variational model"),
        };
        let detail = match (ma.variational(), mb.variational()) {
            (Some(x), Some(y)) if x.arch == y.arch && x.config.method == y.config.method => {
                " with other variational settings"
            }
            _ => "",
        };
        return Err(Error::Config(format!(
            "{} {} is {} but {} {} is {}{detail}: the two must share one architecture and kind",
            a.0,
            a.1.display(),
            what(&ma),
            b.0,
            b.1.display(),
            what(&mb)
        )));
    }
    Ok((ma, pa, pb))
}

/// The file name a command writes a model of this kind to: `model.safetensors` for a network,
/// `variational.safetensors` for a variational model (as `train` and `vtrain` do).
pub fn file_name(model: &Model) -> &'static str {
    match model {
        Model::Plain(_) => "model.safetensors",
        Model::Variational(_) => "variational.safetensors",
    }
}

/// Saves a network or a variational model (atomically), readable by [`load_any`].
pub fn save_any(path: &Path, model: &Model, params: &ParamSet) -> Result<()> {
    match model {
        Model::Plain(a) => save_model(path, a, params),
        Model::Variational(m) => save_vmodel(path, m, params, serde_json::Value::Null),
    }
}
