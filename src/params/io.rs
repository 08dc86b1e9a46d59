//! Self-describing safetensors files: tensors named `<prefix><name>` with their layout shapes
//! (little-endian f32) and one metadata entry `modeconn` holding a JSON [`FileMeta`] (kind,
//! architecture, version, extras). Writing is atomic (temp file + rename) and byte-deterministic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::Device;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use super::{Layout, ParamSet};
use crate::error::{Error, Result};

/// The metadata key under which [`FileMeta`] is stored.
pub const META_KEY: &str = "modeconn";

/// What a modeconn file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// `model`, `curve`, `variational`, `checkpoint`, ...
    pub kind: String,
    /// Architecture spec string, e.g. `mlp:784-300-100-10`.
    pub arch: String,
    /// Crate version that wrote the file.
    pub version: String,
    /// Kind-specific extras (curve kind, epoch, optimiser, ...).
    #[serde(default)]
    pub extra: serde_json::Value,
}

impl FileMeta {
    /// Metadata of the given kind for an architecture, with the crate version filled in.
    pub fn new(kind: &str, arch: &str) -> Self {
        Self {
            kind: kind.into(),
            arch: arch.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extra: serde_json::Value::Null,
        }
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Saves named parameter sets (`prefix` + tensor name) with metadata, atomically.
pub fn save(path: &Path, meta: &FileMeta, sets: &[(&str, &ParamSet)]) -> Result<()> {
    let mut names = Vec::new();
    let mut shapes = Vec::new();
    let mut bytes = Vec::new();
    for (prefix, set) in sets {
        for (e, v) in set.layout().entries().iter().zip(set.to_vecs()) {
            names.push(format!("{prefix}{}", e.name));
            shapes.push(e.shape.clone());
            bytes.push(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        }
    }
    let mut views = Vec::with_capacity(names.len());
    for ((n, s), b) in names.iter().zip(&shapes).zip(&bytes) {
        let view = TensorView::new(Dtype::F32, s.clone(), b)
            .map_err(|e| Error::data(path, format!("tensor `{n}`: {e}")))?;
        views.push((n.clone(), view));
    }
    let meta_json = serde_json::to_string(meta).expect("metadata serialises");
    let info = std::collections::HashMap::from([(META_KEY.to_string(), meta_json)]);
    let out = safetensors::serialize(views, Some(info))
        .map_err(|e| Error::data(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &out)
}

/// A loaded file: metadata plus raw tensors, consumed set by set with shape checks.
#[derive(Debug)]
pub struct Loaded {
    /// The file it came from.
    pub path: PathBuf,
    /// Its metadata.
    pub meta: FileMeta,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Loaded {
    /// Reads and parses a modeconn safetensors file.
    pub fn open(path: &Path) -> Result<Self> {
        let buf = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        let (_, header) = SafeTensors::read_metadata(&buf)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| bad("no `modeconn` metadata: not written by modeconn".into()))?;
        let meta: FileMeta = serde_json::from_str(meta_json)
            .map_err(|e| bad(format!("invalid modeconn metadata: {e}")))?;
        let st = SafeTensors::deserialize(&buf)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor `{name}` has dtype {:?}, expected F32",
                    view.dtype()
                )));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Self {
            path: path.to_path_buf(),
            meta,
            tensors,
        })
    }

    /// Errors unless the file's kind is one of `kinds`.
    pub fn expect_kind(&self, kinds: &[&str]) -> Result<()> {
        if kinds.contains(&self.meta.kind.as_str()) {
            Ok(())
        } else {
            Err(Error::Checkpoint {
                path: self.path.clone(),
                msg: format!(
                    "holds a `{}`, expected {}",
                    self.meta.kind,
                    kinds
                        .iter()
                        .map(|k| format!("a `{k}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            })
        }
    }

    /// Whether any tensor name starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.tensors.keys().any(|k| k.starts_with(prefix))
    }

    /// Removes the set stored under `prefix`, checking every name and shape against `layout`.
    pub fn take_set(
        &mut self,
        prefix: &str,
        layout: &Arc<Layout>,
        device: &Device,
    ) -> Result<ParamSet> {
        let mut values = Vec::with_capacity(layout.len());
        for e in layout.entries() {
            let key = format!("{prefix}{}", e.name);
            let (shape, v) = self.tensors.remove(&key).ok_or_else(|| Error::Checkpoint {
                path: self.path.clone(),
                msg: format!("missing parameter `{key}`"),
            })?;
            if shape != e.shape {
                return Err(Error::Checkpoint {
                    path: self.path.clone(),
                    msg: format!(
                        "parameter `{key}`: expected shape {:?}, found {:?}",
                        e.shape, shape
                    ),
                });
            }
            values.push(v);
        }
        ParamSet::from_vecs(layout.clone(), values, device)
    }

    /// Errors if tensors remain that no set claimed.
    pub fn finish(self) -> Result<()> {
        match self.tensors.keys().next() {
            None => Ok(()),
            Some(k) => Err(Error::Checkpoint {
                path: self.path,
                msg: format!("unexpected parameter `{k}`"),
            }),
        }
    }
}
