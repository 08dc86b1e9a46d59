//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use burn::tensor::{Tensor, TensorData};
use modeconn::arch::Arch;
use modeconn::backend;
use modeconn::params::ParamSet;
use serde_json::Value;

/// The `modeconn` binary.
pub fn modeconn() -> Command {
    Command::cargo_bin("modeconn").unwrap()
}

/// A JSON file's value.
pub fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Two minima and a chain between them in `d`: `train ARGS --seed 1|2` into `w1`, `w2`,
/// `connect ARGS` into `chain`, `path ARGS` with the line and the chain into `path`; returns
/// the two model files and the path summary.
pub fn two_minima_and_chain(
    d: &Path,
    train: &[&str],
    connect: &[&str],
    path: &[&str],
) -> (PathBuf, PathBuf, Value) {
    for s in ["1", "2"] {
        modeconn()
            .arg("train")
            .args(train)
            .args(["-q", "--seed", s, "--out"])
            .arg(d.join(format!("w{s}")))
            .assert()
            .success();
    }
    let (a, b) = (
        d.join("w1/model.safetensors"),
        d.join("w2/model.safetensors"),
    );
    modeconn()
        .arg("connect")
        .args(connect)
        .args(["-q", "--a"])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--out")
        .arg(d.join("chain"))
        .assert()
        .success();
    modeconn()
        .arg("path")
        .args(path)
        .arg("--a")
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--curve")
        .arg(format!(
            "chain={}",
            d.join("chain/curve.safetensors").display()
        ))
        .arg("--out")
        .arg(d.join("path"))
        .assert()
        .success();
    let s = json(&d.join("path/summary.json"));
    (a, b, s)
}

/// The chain's worst test loss is below the straight line's.
pub fn assert_chain_below_line(s: &Value) {
    let max = |p: &str| s[p]["test_loss"]["max"].as_f64().unwrap();
    assert!(
        max("chain") < max("line"),
        "chain {} vs line {}",
        max("chain"),
        max("line")
    );
}

/// `arch`'s initialisation with non-trivial normalisation parameters and statistics.
pub fn perturbed(arch: &Arch, seed: u64) -> ParamSet {
    let dev = backend::device();
    let p = arch.init(seed, &dev);
    let vals = p
        .layout()
        .entries()
        .iter()
        .zip(p.to_vecs())
        .map(|(e, v)| {
            let k = |a: f32, b: f32| (0..v.len()).map(|i| a + b * i as f32).collect::<Vec<_>>();
            match (e.name.starts_with("bn"), e.name.rsplit('.').next().unwrap()) {
                (true, "running_var") => k(0.5, 0.1),
                (true, "running_mean") => k(-0.3, 0.05),
                (true, "weight") => k(0.8, 0.02),
                (true, "bias") => k(-0.1, 0.03),
                _ => v,
            }
        })
        .collect();
    ParamSet::from_vecs(p.layout().clone(), vals, &dev).unwrap()
}

/// `n` fixed inputs in [−1, 1) for `arch`, `[n, input_dim]`.
pub fn inputs(arch: &Arch, n: usize) -> Tensor<2> {
    let d = arch.input_dim();
    Tensor::<2>::from_data(
        TensorData::new(
            (0..n * d)
                .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
                .collect(),
            [n, d],
        ),
        &backend::device(),
    )
}

/// The largest absolute difference of two equally long vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// A variational model of `m` from `seed` with its variances spread out, so that α differs
/// from weight to weight (the initial log σ² = −10 would make every weight alike): every
/// per-weight log σ² becomes `log θ² + u`, u ~ U(`around_theta`), or, for a zero-mean weight,
/// a draw from U(`zero_mean`); every per-layer log α becomes `log_alpha`. The draws come from
/// a ChaCha8 stream seeded with `stream`.
pub fn spread_posterior(
    m: &modeconn::variational::VModel,
    seed: u64,
    stream: u64,
    around_theta: std::ops::Range<f32>,
    zero_mean: std::ops::Range<f32>,
    log_alpha: f32,
) -> ParamSet {
    use rand::{Rng, SeedableRng};
    let device = backend::device();
    let p = m.init(seed, &device);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream);
    let names: Vec<String> = p
        .layout()
        .entries()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    let vecs = p.to_vecs();
    let out = names
        .iter()
        .zip(&vecs)
        .map(|(n, v)| match n.strip_prefix("log_sigma2/") {
            Some(w) => match names.iter().position(|x| *x == format!("mu/{w}")) {
                Some(k) => vecs[k]
                    .iter()
                    .map(|t| (t * t + 1e-8).ln() + rng.random_range(around_theta.clone()))
                    .collect(),
                None => (0..v.len())
                    .map(|_| rng.random_range(zero_mean.clone()))
                    .collect(),
            },
            None if n.starts_with("log_alpha/") => vec![log_alpha; v.len()],
            None => v.clone(),
        })
        .collect();
    ParamSet::from_vecs(p.layout().clone(), out, &device).unwrap()
}

/// A CSV result file (`path.csv`, `project.csv`, …) as rows of column name → value.
pub fn csv_rows(p: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(p).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

/// `modeconn COMMAND ARGS --out OUT` fails with exit 1 and one line of stderr containing
/// `needle`, and writes nothing at `out`; returns that line.
pub fn refused_in_one_line(command: &str, args: &[&str], out: &Path, needle: &str) -> String {
    let a = modeconn()
        .arg(command)
        .args(args)
        .arg("--out")
        .arg(out)
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(err.contains(needle), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists(), "{args:?} wrote {}", out.display());
    err
}

/// `modeconn train --data digits --arch ARCH --epochs EPOCHS -q EXTRA --out DIR`; returns the
/// model file.
pub fn train_digits(dir: &Path, arch: &str, epochs: &str, extra: &[&str]) -> PathBuf {
    modeconn()
        .args([
            "train", "--data", "digits", "--arch", arch, "--epochs", epochs, "-q",
        ])
        .args(extra)
        .arg("--out")
        .arg(dir)
        .assert()
        .success();
    dir.join("model.safetensors")
}

/// `n` random inputs of 6 features in 3 classes (shape 1×2×3), seeded: data for tiny models.
pub fn tiny_data(n: usize) -> modeconn::data::Dataset {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    modeconn::data::Dataset {
        name: "tiny".into(),
        x: (0..n * 6).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        y: (0..n).map(|i| (i % 3) as u8).collect(),
        shape: [1, 2, 3],
        classes: 3,
    }
}

/// Central differences (step 1e-2) of `loss` in every `stride`-th entry of every tensor of `at`
/// against the gradient `grad` (per tensor): `|fd − g| ≤ 2e-2·max(|fd|, |g|) + abs` each;
/// returns the number of entries checked. `label` prefixes the failure message.
pub fn check_gradient(
    at: &ParamSet,
    grad: &[Vec<f32>],
    stride: usize,
    abs: f64,
    mut loss: impl FnMut(&ParamSet) -> f64,
    label: &str,
) -> usize {
    let device = at.tensors()[0].device();
    let base = at.to_vecs();
    let e = 1e-2f32;
    let mut checked = 0;
    for (i, v) in base.iter().enumerate() {
        for j in (0..v.len()).step_by(stride) {
            let mut shifted = |d: f32| {
                let mut w = base.clone();
                w[i][j] += d;
                loss(&ParamSet::from_vecs(at.layout().clone(), w, &device).unwrap())
            };
            let fd = (shifted(e) - shifted(-e)) / (2.0 * f64::from(e));
            let ours = f64::from(grad[i][j]);
            let name = &at.layout().entries()[i].name;
            assert!(
                (fd - ours).abs() <= 2e-2 * fd.abs().max(ours.abs()) + abs,
                "{label} {name}[{j}]: finite difference {fd}, ours {ours}"
            );
            checked += 1;
        }
    }
    checked
}
