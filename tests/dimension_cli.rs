//! `modeconn dimension` end to end on the embedded digits: an interpolating fit, the rank of the
//! residual Jacobian against the theory (rank ≤ min(N·K, D − H), the H rescaling directions in
//! its kernel, rank + dimension = D), reproducibility, restarting from a saved network, the
//! figure, and the one-line refusals.

mod common;

use std::path::Path;

use common::{json, modeconn};

fn dimension(out: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    modeconn()
        .arg("dimension")
        .args(args)
        .args(["-q", "--out"])
        .arg(out)
        .assert()
}

#[test]
fn an_interpolating_mlp_has_the_generic_dimension() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dim");
    let args = ["--arch", "mlp:64-32-10", "--points", "20"];
    dimension(&out, &args).success();
    let v = json(&out.join("dimension.json"));
    let n = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    let (d, m, h) = (n("params"), n("constraints"), n("hidden_units"));
    assert_eq!((d, m, h), (2410.0, 200.0, 32.0));
    assert!(n("residual") <= 1e-6, "{v}");
    // The Jacobian has full row rank here: the minima set is a manifold of dimension D − N·K.
    assert_eq!(n("rank"), m, "{v}");
    assert!(n("rank") <= d - h);
    assert_eq!(n("dimension"), d - n("rank"));
    assert_eq!(n("dimension"), n("predicted_dimension"));
    assert!(n("gap_ratio") > 1e6, "{v}");
    // ReLU's positive homogeneity: every rescaling direction is in ker J to rounding.
    assert!(n("rescaling_max_relative") < 1e-12, "{v}");
    assert!(n("residual_f32") < 1e-4, "{v}");

    let csv = std::fs::read_to_string(out.join("spectrum.csv")).unwrap();
    let sigma: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(sigma.len(), 200);
    assert!(sigma.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(sigma[0], n("sigma_max"));
    for f in [
        "spectrum.png",
        "spectrum.svg",
        "model.safetensors",
        "run.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }

    // The same seeds give the same bytes.
    let again = tmp.path().join("again");
    dimension(&again, &args).success();
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(again.join("model.safetensors")).unwrap()
    );
    assert_eq!(
        std::fs::read(out.join("spectrum.csv")).unwrap(),
        std::fs::read(again.join("spectrum.csv")).unwrap()
    );

    // Restarting from the saved (f32) network on the same points: already a minimum up to the
    // rounding, polished back below the tolerance, the same rank.
    let model = out.join("model.safetensors");
    let restart = tmp.path().join("restart");
    dimension(
        &restart,
        &[
            "--model",
            model.to_str().unwrap(),
            "--points",
            "20",
            "--adam-steps",
            "0",
        ],
    )
    .success();
    let w = json(&restart.join("dimension.json"));
    assert!(w["residual"].as_f64().unwrap() <= 1e-6, "{w}");
    assert_eq!(w["rank"], v["rank"]);
    assert_eq!(w["arch"], v["arch"]);

    // The saved network is a model the other commands read.
    modeconn()
        .args(["eval", "--model"])
        .arg(&model)
        .assert()
        .success();
    // `plot` redraws the figure from the directory.
    std::fs::remove_file(out.join("spectrum.png")).unwrap();
    modeconn().arg("plot").arg(&out).assert().success();
    assert!(out.join("spectrum.png").exists());
}

/// Past `--max-memory` for the dense Jacobian, `dimension` takes the matrix-free path (Lanczos
/// on JJᵀ, conjugate-gradient steps) and measures the same rank and dimension.
#[test]
fn the_matrix_free_path_measures_the_same_dimension() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--arch", "mlp:64-32-10", "--points", "20"];
    let dense = tmp.path().join("dense");
    dimension(&dense, &args).success();
    let free = tmp.path().join("free");
    // Dense: ≈ 7.7 MB; matrix-free: ≈ 0.8 MB.
    dimension(&free, &[&args[..], &["--max-memory", "0.001"]].concat()).success();
    let (v, w) = (
        json(&dense.join("dimension.json")),
        json(&free.join("dimension.json")),
    );
    assert_eq!(v["jacobian"], "dense");
    assert_eq!(w["jacobian"], "matrix-free");
    assert!(w["residual"].as_f64().unwrap() <= 1e-6, "{w}");
    assert_eq!(w["rank"], v["rank"]);
    assert_eq!(w["dimension"], v["dimension"]);
    assert!(w["gap_ratio"].as_f64().unwrap() > 1e3, "{w}");
    assert!(w["rescaling_max_relative"].as_f64().unwrap() < 1e-12, "{w}");
    let s = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!((s(&w, "sigma_max") / s(&v, "sigma_max") - 1.0).abs() < 1e-3);
}

fn refused(args: &[&str], needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let quiet: Vec<&str> = args.iter().copied().chain(["-q"]).collect();
    common::refused_in_one_line("dimension", &quiet, &tmp.path().join("dim"), needle);
}

#[test]
fn bad_input_is_refused_in_one_line_and_writes_nothing() {
    refused(&["--arch", "lenet5"], "plain MLP");
    refused(&["--arch", "mlp:64-32-10:norm=bn"], "plain MLP");
    refused(&["--arch", "mlp:64-32-3"], "3 outputs");
    refused(&["--points", "0"], "--points");
    refused(&["--points", "100000"], "--points 100000 exceeds");
    refused(&["--tol", "0"], "--tol");
    refused(&["--points", "200", "--max-memory", "0.01"], "--max-memory");
    // Two hidden units cannot fit 40 one-hot points: the refusal says why (rank J < N·K).
    refused(
        &[
            "--arch",
            "mlp:64-2-10",
            "--points",
            "40",
            "--adam-steps",
            "500",
        ],
        "rank J",
    );
}

/// `train --loss mse` on a seeded subset reaches the interpolating setting: `dimension --model`
/// on the same points (`--points-seed` = the training seed) only polishes it, and `connect
/// --loss mse` fits a curve between two such minima on those points.
#[test]
fn squared_error_training_feeds_dimension_and_connect() {
    let tmp = tempfile::tempdir().unwrap();
    let train = |seed: &str| {
        let out = tmp.path().join(format!("w{seed}"));
        modeconn()
            .args([
                "train",
                "--arch",
                "mlp:64-64-10",
                "--loss",
                "mse",
                "--wd",
                "0",
            ])
            .args([
                "--train-subset",
                "30",
                "--batch-size",
                "30",
                "--epochs",
                "1500",
            ])
            .args([
                "--optimizer",
                "adam",
                "--lr",
                "1e-3",
                "-q",
                "--seed",
                seed,
                "--out",
            ])
            .arg(&out)
            .assert()
            .success();
        assert_eq!(json(&out.join("run.json"))["config"]["loss"], "mse");
        out.join("model.safetensors")
    };
    let a = train("3");
    let out = tmp.path().join("dim");
    dimension(
        &out,
        &[
            "--model",
            a.to_str().unwrap(),
            "--points",
            "30",
            "--points-seed",
            "3",
            "--adam-steps",
            "0",
        ],
    )
    .success();
    let v = json(&out.join("dimension.json"));
    assert!(v["residual"].as_f64().unwrap() <= 1e-6, "{v}");
    // The trained network nearly fits these points (on 30 other points ‖r‖ would be ≈ 5).
    assert!(v["residual_after_adam"].as_f64().unwrap() < 0.1, "{v}");
    assert_eq!(v["rank"], 300, "{v}");

    let b = train("4");
    let chain = tmp.path().join("chain");
    modeconn()
        .args([
            "connect",
            "--loss",
            "mse",
            "--train-subset",
            "30",
            "--seed",
            "3",
        ])
        .args(["--epochs", "20", "--batch-size", "30", "-q", "--a"])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--out")
        .arg(&chain)
        .assert()
        .success();
    assert_eq!(json(&chain.join("run.json"))["config"]["loss"], "mse");
}
