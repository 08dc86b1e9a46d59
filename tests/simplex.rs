//! Loss-surface simplexes (`modeconn simplex`): the gradient of the SPRO objective (mean of the
//! sampled losses minus the volume term) against finite differences; end to end on the embedded
//! digits: the modes are kept bit for bit, a trained connector lies below the straight line's
//! midpoint, the volume term grows the complex, an interrupted run resumes to the same bytes,
//! and bad input is refused in one line.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use common::{csv_rows, json, modeconn, refused_in_one_line};
use modeconn::arch::Arch;
use modeconn::backend;
use modeconn::data::{DataConfig, Source, load};
use modeconn::eval::{EVAL_BATCH, evaluate};
use modeconn::network_file::load_model;
use modeconn::params::ParamSet;
use modeconn::simplex::{Complex, SimplexObjective};
use modeconn::train::{StepCtx, loss_and_grad};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// `∂L/∂c` of a new connector (two modes and one older connector; three Dirichlet samples per
/// step; a volume term) against central differences of L in every tensor, with the same
/// samples for every evaluation.
#[test]
fn simplex_gradient_matches_finite_differences() {
    let device = backend::device();
    let ad = backend::train_device();
    let arch: Arch = "mlp:6-5-3".parse().unwrap();
    let data = common::tiny_data(8);
    let mut complex = Complex::new(
        arch.clone(),
        vec![arch.init(1, &device), arch.init(2, &device)],
    )
    .unwrap();
    complex.connectors.push(arch.init(3, &device));
    let newest = arch.init(4, &device);
    for lambda in [0.0, 0.3] {
        let mut obj =
            SimplexObjective::new(complex.clone(), 3, lambda, &data, &data, device.clone())
                .unwrap();
        let x = || Tensor::<2>::from_data(TensorData::new(data.x.clone(), [8, 6]), &ad);
        let y = || {
            let v: Vec<i64> = data.y.iter().map(|&v| v as i64).collect();
            Tensor::<1, Int>::from_data(TensorData::new(v, [8]), &ad)
        };
        let mut eval_at = |p: &ParamSet| {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let mut ctx = StepCtx {
                epoch: 0,
                step: 0,
                rng: &mut rng,
                n_train: 8,
            };
            loss_and_grad(p, &mut obj, x(), y(), &mut ctx).unwrap()
        };
        let (_, g, scalars) = eval_at(&newest);
        if lambda > 0.0 {
            let lv = scalars.iter().find(|(k, _)| *k == "log_volume").unwrap().1;
            assert!(lv.is_finite(), "log volume {lv}");
        }
        let label = format!("λ = {lambda},");
        let checked =
            common::check_gradient(&newest, &g.to_vecs(), 2, 2e-3, |p| eval_at(p).0, &label);
        assert!(checked > 20, "{checked} coordinates");
    }
}

fn train(dir: &Path, seed: &str) -> PathBuf {
    common::train_digits(dir, "mlp:64-32-10", "20", &["--seed", seed])
}

fn simplex(modes: &[&PathBuf], out: &Path, extra: &[&str]) {
    modeconn()
        .args(["simplex", "--data", "digits", "-q", "--modes"])
        .args(modes)
        .args(["--epochs", "8", "--eval-samples", "16", "--resolution", "6"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .assert()
        .success();
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn simplex_end_to_end_on_digits() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (a, b) = (train(&d.join("w1"), "1"), train(&d.join("w2"), "2"));
    let device = backend::device();
    let out = d.join("s");
    simplex(&[&a, &b], &out, &["--connectors", "2"]);
    for f in [
        "simplex.safetensors",
        "simplex.csv",
        "samples.csv",
        "triangle.csv",
        "summary.json",
        "run.json",
        "simplex.png",
        "simplex.svg",
        "triangle.png",
        "triangle.svg",
        "connector1/vertex.safetensors",
        "connector2/metrics.jsonl",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // The modes are the input networks, bit for bit; the connectors are the saved vertices.
    let complex = Complex::load(&out.join("simplex.safetensors"), &device).unwrap();
    assert_eq!(complex.connectors.len(), 2);
    for (m, p) in complex.modes.iter().zip([&a, &b]) {
        assert_eq!(m.to_flat(), load_model(p, &device).unwrap().1.to_flat());
    }
    let c1 = load_model(&out.join("connector1/vertex.safetensors"), &device)
        .unwrap()
        .1;
    assert_eq!(complex.connectors[0].to_flat(), c1.to_flat());
    // One row per stage (0, 1, 2 connectors); samples.csv holds every evaluated point.
    let rows = csv_rows(&out.join("simplex.csv"));
    assert_eq!(rows.len(), 3);
    let samples = csv_rows(&out.join("samples.csv"));
    assert_eq!(samples.len(), (16 + 2) + (16 + 3) + (16 + 4));
    assert_eq!(csv_rows(&out.join("triangle.csv")).len(), 7 * 8 / 2);
    // The trained connector lies below the straight line's midpoint (the centroid it started
    // from) in training loss.
    let split = load(&DataConfig::new(Source::Digits)).unwrap();
    let arch: Arch = "mlp:64-32-10".parse().unwrap();
    let mid = complex.modes[0].lerp(&complex.modes[1], 0.5).unwrap();
    let mid_loss = evaluate(&arch, &mid, &split.train, EVAL_BATCH, &device).loss;
    let c1_loss = evaluate(&arch, &c1, &split.train, EVAL_BATCH, &device).loss;
    assert!(
        c1_loss < mid_loss,
        "connector 1 {c1_loss} vs the line's midpoint {mid_loss}"
    );
    let s = json(&out.join("summary.json"));
    assert_eq!(s["stages"].as_array().unwrap().len(), 3);

    // The volume term grows the complex: a larger λ ends with a larger log-volume.
    let log_volume = |dir: &Path| {
        json(&dir.join("summary.json"))["stages"][2]["log_volume"]
            .as_f64()
            .unwrap()
    };
    let flat = d.join("flat");
    simplex(
        &[&a, &b],
        &flat,
        &["--connectors", "2", "--volume-weight", "0"],
    );
    let wide = d.join("wide");
    simplex(
        &[&a, &b],
        &wide,
        &["--connectors", "2", "--volume-weight", "1"],
    );
    assert!(
        log_volume(&wide) > log_volume(&flat) + 1.0,
        "{} vs {}",
        log_volume(&wide),
        log_volume(&flat)
    );

    // Several runs on one set of axes.
    let figs = d.join("figs");
    modeconn()
        .arg("plot")
        .arg(format!("flat={}", flat.display()))
        .arg(format!("wide={}", wide.display()))
        .arg("--out")
        .arg(&figs)
        .assert()
        .success();
    assert!(figs.join("simplexes.png").exists() && figs.join("simplexes.svg").exists());
    let svg = std::fs::read_to_string(figs.join("simplexes.svg")).unwrap();
    assert!(svg.contains("flat") && svg.contains("wide"));

    // An interrupted run resumes to the same bytes.
    let cut = d.join("cut");
    simplex(&[&a, &b], &cut, &["--connectors", "2", "--stop-after", "3"]);
    assert!(!cut.join("connector1/vertex.safetensors").exists());
    simplex(&[&a, &b], &cut, &["--connectors", "2", "--resume"]);
    assert_eq!(
        bytes(&cut.join("simplex.safetensors")),
        bytes(&out.join("simplex.safetensors"))
    );

    // Bad input: one line, exit 1, nothing written.
    let bad = d.join("bad");
    let a_s = a.to_str().unwrap();
    let b_s = b.to_str().unwrap();
    refused_in_one_line(
        "simplex",
        &["--data", "digits", "--modes", a_s],
        &bad,
        "at least two modes",
    );
    refused_in_one_line(
        "simplex",
        &["--data", "digits", "--modes", a_s, b_s, "--samples", "0"],
        &bad,
        "--samples",
    );
    refused_in_one_line(
        "simplex",
        &[
            "--data",
            "digits",
            "--modes",
            a_s,
            b_s,
            "--volume-weight=-1",
        ],
        &bad,
        "--volume-weight",
    );
    let other = common::train_digits(&d.join("other"), "mlp:64-16-10", "1", &[]);
    refused_in_one_line(
        "simplex",
        &["--data", "digits", "--modes", a_s, other.to_str().unwrap()],
        &bad,
        "differs from the first mode",
    );
}
