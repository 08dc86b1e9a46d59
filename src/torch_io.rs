//! PyTorch state dicts in and out.
//!
//! **In** ([`read_state_dict`], [`map_to_layout`]): a `state_dict` saved by `torch.save` (`.pt`,
//! `.pth`, read by the `pytorch-reader` crate) or by safetensors. Wrapper prefixes (`module.`
//! from DataParallel, `_orig_mod.` from `torch.compile`) are stripped, `num_batches_tracked`
//! dropped, float16/bfloat16/float64 converted to float32, `--rename REGEX=REPL` rules applied
//! in order. Names that then equal the architecture's (PyTorch names: `fc1.weight`,
//! `bn1.running_mean`, ...) are taken as they are; a state dict of an `nn.Sequential` (every
//! module named by a number, `0.weight`, `2.weight`, ...) is matched by its shape chain: its
//! modules in numeric order against the architecture's layers in order, role by role, every
//! shape checked. Every unmatched or misshapen tensor is named in the error.
//!
//! **Out** ([`write_state_dict`]): the network's tensors under their PyTorch names as float32
//! safetensors, with an int64 `num_batches_tracked` beside each BatchNorm's running statistics,
//! so that `module.load_state_dict(safetensors.torch.load_file(f))` loads it strictly.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;

use crate::error::{Error, Result};
use crate::params::io::write_atomic;
use crate::params::layout::{Layout, Role};

/// One tensor of a state dict, as float32.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    /// Its name in the file.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

/// Prefixes that wrappers add to every name.
const WRAPPERS: [&str; 2] = ["module.", "_orig_mod."];

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::data(path, msg)
}

fn le_f32(bytes: &[u8], width: usize, f: impl Fn(&[u8]) -> f32) -> Vec<f32> {
    bytes.chunks_exact(width).map(f).collect()
}

/// Reads every floating-point tensor of a state dict (`.safetensors`, else a `torch.save`
/// file), converted to float32, in the file's name order; `num_batches_tracked` and other
/// integer buffers are skipped. `key` opens a checkpoint that nests the state dict under it
/// (`state_dict`, `model`).
pub fn read_state_dict(path: &Path, key: Option<&str>) -> Result<Vec<Named>> {
    let mut out = Vec::new();
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    if key.is_some() && is_safetensors {
        return Err(Error::Config(format!(
            "--key: {} is a safetensors file, which has no nesting",
            path.display()
        )));
    }
    if is_safetensors {
        use safetensors::Dtype;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
        for (name, view) in st.tensors() {
            let data = view.data();
            let values = match view.dtype() {
                Dtype::F32 => le_f32(data, 4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                Dtype::F16 => le_f32(data, 2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
                Dtype::BF16 => le_f32(data, 2, |b| {
                    half::bf16::from_le_bytes([b[0], b[1]]).to_f32()
                }),
                Dtype::F64 => le_f32(data, 8, |b| {
                    f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32
                }),
                _ => continue,
            };
            out.push(Named {
                name,
                shape: view.shape().to_vec(),
                values,
            });
        }
    } else {
        use pytorch_reader::{DType, PytorchReader};
        let reader = match key {
            Some(k) => PytorchReader::with_top_level_key(path, k),
            None => PytorchReader::new(path),
        }
        .map_err(|e| bad(path, format!("not a PyTorch state dict: {e}")))?;
        for t in reader.tensors().values() {
            let width = t.dtype().size();
            let conv: fn(&[u8]) -> f32 = match t.dtype() {
                DType::F32 => |b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                DType::F16 => |b| half::f16::from_ne_bytes([b[0], b[1]]).to_f32(),
                DType::BF16 => |b| half::bf16::from_ne_bytes([b[0], b[1]]).to_f32(),
                DType::F64 => |b| f64::from_ne_bytes(b.try_into().expect("8 bytes")) as f32,
                _ => continue,
            };
            let bytes = t.read().map_err(|e| Error::io(path, e))?;
            out.push(Named {
                name: t.name.clone(),
                shape: t.shape().to_vec(),
                values: le_f32(&bytes, width, conv),
            });
        }
    }
    out.sort_by_key(|t| natural(&t.name));
    Ok(out)
}

/// A sort key that orders numeric segments by value (`2.weight` before `10.weight`).
fn natural(name: &str) -> Vec<(u64, String)> {
    name.split('.')
        .map(|s| match s.parse::<u64>() {
            Ok(n) => (n, String::new()),
            Err(_) => (u64::MAX, s.to_string()),
        })
        .collect()
}

/// Parses a `--rename REGEX=REPL` rule (`$1`, `${name}` in REPL refer to groups).
pub fn parse_rename(rule: &str) -> Result<(Regex, String)> {
    let (re, rep) = rule
        .split_once('=')
        .ok_or_else(|| Error::Config(format!("--rename `{rule}`: expected REGEX=REPLACEMENT")))?;
    let re = Regex::new(re).map_err(|e| {
        Error::Config(format!(
            "--rename `{rule}`: {}",
            e.to_string().replace('\n', " ")
        ))
    })?;
    Ok((re, rep.to_string()))
}

/// The module of a tensor name (`fc1` of `fc1.weight`) and its last segment.
fn split(name: &str) -> (&str, &str) {
    name.rsplit_once('.').unwrap_or(("", name))
}

/// The last segment PyTorch gives a tensor of `role`.
fn torch_suffix(role: Role) -> &'static str {
    match role {
        Role::Weight | Role::NormScale => "weight",
        Role::Bias | Role::NormShift => "bias",
        Role::RunningMean => "running_mean",
        Role::RunningVar => "running_var",
    }
}

/// Maps the tensors of a state dict read from `path` onto `layout` (see the module docs);
/// returns the layout's values in its order and, for each, the source name it came from.
pub fn map_to_layout(
    path: &Path,
    tensors: Vec<Named>,
    layout: &Layout,
    renames: &[(Regex, String)],
) -> Result<(Vec<Vec<f32>>, Vec<String>)> {
    // Clean names: wrapper prefixes, then the user's rules.
    let mut source: Vec<(String, Named)> = Vec::new();
    for t in tensors {
        let mut name = t.name.as_str();
        while let Some(rest) = WRAPPERS.iter().find_map(|w| name.strip_prefix(w)) {
            name = rest;
        }
        let mut name = name.to_string();
        for (re, rep) in renames {
            name = re.replace_all(&name, rep.as_str()).into_owned();
        }
        if source.iter().any(|(n, _)| *n == name) {
            return Err(bad(
                path,
                format!("two tensors are named `{name}` after prefixes and --rename rules"),
            ));
        }
        source.push((name, t));
    }
    let entries = layout.entries();
    let by_name: BTreeMap<&str, usize> = source
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    let sequential = !source.is_empty()
        && source.iter().all(|(n, _)| {
            let (module, _) = split(n);
            module
                .rsplit('.')
                .next()
                .is_some_and(|last| last.parse::<u64>().is_ok())
        });
    let pick: Vec<usize> = if entries
        .iter()
        .all(|e| by_name.contains_key(e.name.as_str()))
    {
        entries.iter().map(|e| by_name[e.name.as_str()]).collect()
    } else if sequential {
        shape_chain(path, &source, layout)?
    } else {
        let missing: Vec<&str> = entries
            .iter()
            .map(|e| e.name.as_str())
            .filter(|n| !by_name.contains_key(n))
            .collect();
        let unknown: Vec<&str> = source
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !entries.iter().any(|e| e.name == *n))
            .collect();
        let msg = if unknown.is_empty() {
            format!(
                "no tensors {} (the architecture has them)",
                quoted(&missing)
            )
        } else {
            format!(
                "tensors {} match no tensor of the architecture, which lacks {}; strip or rename them with --rename 'REGEX=REPLACEMENT'",
                quoted(&unknown),
                quoted(&missing)
            )
        };
        return Err(bad(path, msg));
    };
    let extra: Vec<&str> = source
        .iter()
        .enumerate()
        .filter(|(i, _)| !pick.contains(i))
        .map(|(_, (n, _))| n.as_str())
        .collect();
    if !extra.is_empty() {
        return Err(bad(
            path,
            format!(
                "tensors {} have no place in the architecture",
                quoted(&extra)
            ),
        ));
    }
    let mut values = Vec::new();
    let mut names = Vec::new();
    for (e, &i) in entries.iter().zip(&pick) {
        let (_, t) = &source[i];
        if t.shape != e.shape {
            return Err(bad(
                path,
                format!(
                    "tensor `{}` has shape {:?}, the architecture's `{}` {:?}",
                    t.name, t.shape, e.name, e.shape
                ),
            ));
        }
        values.push(t.values.clone());
        names.push(t.name.clone());
    }
    Ok((values, names))
}

fn quoted(names: &[&str]) -> String {
    let shown: Vec<String> = names.iter().take(8).map(|n| format!("`{n}`")).collect();
    let more = names.len().saturating_sub(8);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// The source index of each layout entry, matching modules in order (the source's numbered
/// modules, the layout's layers) and, within a module, tensors by role.
fn shape_chain(path: &Path, source: &[(String, Named)], layout: &Layout) -> Result<Vec<usize>> {
    let mut src_modules: Vec<&str> = Vec::new();
    for (n, _) in source {
        let (m, _) = split(n);
        if !src_modules.contains(&m) {
            src_modules.push(m);
        }
    }
    let mut dst_modules: Vec<&str> = Vec::new();
    for e in layout.entries() {
        let (m, _) = split(&e.name);
        if !dst_modules.contains(&m) {
            dst_modules.push(m);
        }
    }
    if src_modules.len() != dst_modules.len() {
        return Err(bad(
            path,
            format!(
                "the nn.Sequential has {} modules with tensors ({}), the architecture {} ({})",
                src_modules.len(),
                src_modules.join(", "),
                dst_modules.len(),
                dst_modules.join(", ")
            ),
        ));
    }
    let mut pick = Vec::new();
    for e in layout.entries() {
        let (m, _) = split(&e.name);
        let k = dst_modules.iter().position(|d| *d == m).expect("listed");
        let want = format!("{}.{}", src_modules[k], torch_suffix(e.role));
        let i = source.iter().position(|(n, _)| *n == want).ok_or_else(|| {
            bad(
                path,
                format!(
                    "no tensor `{want}` for the architecture's `{}` (module {} of the nn.Sequential matched to `{m}`)",
                    e.name,
                    src_modules[k]
                ),
            )
        })?;
        pick.push(i);
    }
    Ok(pick)
}

/// Writes `values` (in `layout`'s order) as a PyTorch state dict in safetensors, atomically.
pub fn write_state_dict(path: &Path, layout: &Layout, values: &[Vec<f32>]) -> Result<()> {
    use safetensors::{Dtype, tensor::TensorView};
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (e, v) in layout.entries().iter().zip(values) {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        owned.push((e.name.clone(), Dtype::F32, e.shape.clone(), bytes));
        if e.role == Role::RunningVar {
            let (m, _) = split(&e.name);
            owned.push((
                format!("{m}.num_batches_tracked"),
                Dtype::I64,
                Vec::new(),
                0i64.to_le_bytes().to_vec(),
            ));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                TensorView::new(*d, s.clone(), b).expect("shape matches bytes"),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| bad(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;

    fn named(name: &str, shape: &[usize]) -> Named {
        Named {
            name: name.into(),
            shape: shape.to_vec(),
            values: vec![0.0; shape.iter().product()],
        }
    }

    #[test]
    fn numbered_modules_sort_by_value() {
        let mut names = [
            "10.weight",
            "2.weight",
            "1.bias",
            "layers.11.bias",
            "layers.9.bias",
        ];
        names.sort_by_key(|n| natural(n));
        assert_eq!(
            names,
            [
                "1.bias",
                "2.weight",
                "10.weight",
                "layers.9.bias",
                "layers.11.bias"
            ]
        );
    }

    #[test]
    fn a_deep_sequential_behind_two_wrappers_maps_in_module_order() {
        // 12 Linear layers: numbering past 9 must not be ordered as text.
        let widths: Vec<usize> = (0..13).map(|i| if i == 0 { 4 } else { 3 + i }).collect();
        let spec = format!(
            "mlp:{}",
            widths
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join("-")
        );
        let arch: Arch = spec.parse().unwrap();
        let mut src = Vec::new();
        for l in 0..12 {
            let k = 2 * l; // Linear, ReLU, Linear, ...
            src.push(named(
                &format!("_orig_mod.module.{k}.bias"),
                &[widths[l + 1]],
            ));
            src.push(named(
                &format!("_orig_mod.module.{k}.weight"),
                &[widths[l + 1], widths[l]],
            ));
        }
        src.reverse();
        src.sort_by_key(|t| natural(&t.name));
        let (_, from) = map_to_layout(Path::new("f.pt"), src, &arch.layout(), &[]).unwrap();
        assert_eq!(from[0], "_orig_mod.module.0.weight");
        assert_eq!(from[22], "_orig_mod.module.22.weight");
        assert_eq!(from[23], "_orig_mod.module.22.bias");
    }
}
