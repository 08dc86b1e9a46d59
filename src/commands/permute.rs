//! `modeconn permute`: apply a seeded random, function-preserving permutation of the hidden units
//! to a saved network or variational model (every variational tensor of a unit moves with it).
//! Writes `model.safetensors` (an ordinary model file; `variational.safetensors` for a
//! variational model), `permutation.json`, `summary.json` and `run.json` into `--out`.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde_json::{Value, json};

use super::eval_device;
use crate::arch::Arch;
use crate::error::Result;
use crate::model::Model;
use crate::network_file::{file_name, load_any, save_any};
use crate::params::ParamSet;
use crate::permute::{Permutation, apply};
use crate::report::{RunRecord, write_json};

/// Validated options of `modeconn permute`.
#[derive(Debug, Clone)]
pub struct PermuteOptions {
    /// The network to permute.
    pub model: PathBuf,
    /// Seed of the random permutation.
    pub seed: u64,
    /// Output directory.
    pub out: PathBuf,
}

/// Number of random inputs on which function preservation is checked.
pub const CHECK_INPUTS: usize = 256;

/// `max |f(x; w1) − f(x; w2)|` over the logits of [`CHECK_INPUTS`] inputs `x ~ N(0, I)` drawn
/// from a ChaCha8 stream seeded with `seed`: a function-preserving map gives ~1e-6.
pub fn max_logit_diff(arch: &Arch, w1: &ParamSet, w2: &ParamSet, seed: u64, dev: &Device) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (n, d) = (CHECK_INPUTS, arch.input_dim());
    let v: Vec<f32> = (0..n * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let x: Tensor<2> = Tensor::from_data(TensorData::new(v, [n, d]), dev);
    let diff = (arch.forward(w1, x.clone()) - arch.forward(w2, x))
        .abs()
        .max();
    f64::from(diff.into_scalar::<f32>())
}

/// [`max_logit_diff`] of two parameter sets of `model`: for variational models, of their modes
/// (the sampled predictions agree in distribution: the noise of a permuted unit is drawn
/// at its new position).
pub fn max_logit_diff_of(
    model: &Model,
    w1: &ParamSet,
    w2: &ParamSet,
    seed: u64,
    dev: &Device,
) -> f64 {
    match model {
        Model::Plain(a) => max_logit_diff(a, w1, w2, seed, dev),
        Model::Variational(m) => max_logit_diff(&m.arch, &m.mode(w1), &m.mode(w2), seed, dev),
    }
}

/// `‖w1 − w2‖₂`.
pub fn distance(w1: &ParamSet, w2: &ParamSet) -> Result<f64> {
    Ok(w1.sub(w2)?.norm())
}

/// Writes `permutation.json`: the architecture, where the permutation came from, and
/// [`Permutation::to_json`].
pub fn write_permutation(
    path: &Path,
    arch: &Arch,
    perm: &Permutation,
    origin: Value,
) -> Result<()> {
    let mut v = perm.to_json(&arch.perm_spec());
    v["arch"] = json!(arch.to_string());
    v["origin"] = origin;
    write_json(path, &v)
}

/// Runs `permute`; returns the summary (also written to `out/summary.json`).
pub fn run(opts: &PermuteOptions, argv: Vec<String>) -> Result<Value> {
    let config = json!({"model": opts.model, "seed": opts.seed, "out": opts.out});
    let record = RunRecord::start(argv, config, Some(opts.seed));
    let device = eval_device();
    let (kind, w) = load_any(&opts.model, &device)?;
    let arch = kind.arch().clone();
    let spec = kind.perm_spec()?;
    let perm = Permutation::random(&spec, opts.seed);
    let pw = apply(&spec, &perm, &w)?;
    let model = opts.out.join(file_name(&kind));
    save_any(&model, &kind, &pw)?;
    write_permutation(
        &opts.out.join("permutation.json"),
        &arch,
        &perm,
        json!({"kind": "random", "seed": opts.seed, "source": opts.model}),
    )?;
    let summary = json!({
        "arch": arch.to_string(),
        "source": opts.model,
        "model": model,
        "seed": opts.seed,
        "units": perm.maps.iter().map(Vec::len).sum::<usize>(),
        "units_moved": perm.maps.iter().map(Vec::len).sum::<usize>() - fixed_points(&perm),
        "distance": distance(&w, &pw)?,
        "max_logit_diff": max_logit_diff_of(&kind, &w, &pw, opts.seed, &device),
    });
    write_json(&opts.out.join("summary.json"), &summary)?;
    record.finish(&opts.out, summary.clone())?;
    Ok(summary)
}

/// Number of units a permutation leaves in place (over all its maps).
fn fixed_points(p: &Permutation) -> usize {
    p.maps
        .iter()
        .map(|m| m.iter().enumerate().filter(|&(i, &j)| i == j).count())
        .sum()
}
