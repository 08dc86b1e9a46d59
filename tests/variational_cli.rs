//! End-to-end tests of `modeconn vtrain` (every method) and of `modeconn eval` on variational
//! models, on the embedded digits data.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

fn modeconn() -> Command {
    Command::cargo_bin("modeconn").unwrap()
}

fn vtrain(out: &Path, method: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
    modeconn()
        .args(["vtrain", "--method", method, "--data", "digits"])
        .args(["--seed", "1", "--quiet", "--out"])
        .arg(out)
        .args(extra)
        .assert()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn last_epoch(out: &Path) -> Value {
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    serde_json::from_str(log.lines().last().unwrap()).unwrap()
}

/// The summary has the documented keys, layer-keyed objects for every layer and K-keyed
/// ensembles; returns it.
fn check_summary(out: &Path, layers: &[&str]) -> Value {
    let s = read_json(&out.join("summary.json"));
    for k in ["mode_acc", "sample_acc", "compression", "kl"] {
        assert!(
            s[k].is_number() || k == "compression",
            "summary lacks {k}: {s}"
        );
    }
    for k in ["10", "20"] {
        let a = f(&s["ensemble_acc"][k]);
        assert!((0.0..=1.0).contains(&a));
    }
    for l in layers {
        let sp = f(&s["sparsity"][l]);
        assert!((0.0..=1.0).contains(&sp), "sparsity {l}");
        assert!(
            s["log_alpha_mean"].get(l).is_some(),
            "log_alpha_mean lacks {l}"
        );
    }
    for file in [
        "variational.safetensors",
        "mode.safetensors",
        "checkpoint.safetensors",
        "run.json",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    // Per-epoch records carry the same evaluations and statistics.
    let r = last_epoch(out);
    for k in [
        "lr",
        "nll",
        "kl",
        "rw",
        "test_mode_acc",
        "test_mode_nll",
        "test_sample_acc",
        "compression",
    ] {
        assert!(r.get(k).is_some(), "metrics.jsonl lacks {k}: {r}");
    }
    for k in ["test_ensemble_acc", "sparsity", "log_alpha_mean"] {
        assert!(r[k].is_object(), "metrics.jsonl lacks {k}");
    }
    s
}

#[test]
fn sparse_vd_sparsifies_and_eval_reproduces_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("svd");
    vtrain(&out, "sparse-vd", &["--epochs", "20", "--lr", "3e-3"]).success();
    let s = check_summary(&out, &["fc1", "fc2"]);
    assert!(f(&s["mode_acc"]) > 0.9, "{s}");
    assert!(f(&s["sparsity"]["fc1"]) > 0.5, "{s}");
    assert!(f(&s["compression"]) > 2.0, "{s}");
    assert!(f(&s["log_alpha_mean"]["fc1"]) > 0.0, "{s}");
    // rw follows the default warm-up: 0.04 + 0.02·19 at epoch 20 (the deepbayes log's 0.42).
    assert!((f(&last_epoch(&out)["rw"]) - 0.42).abs() < 1e-9);

    // `eval` on the saved model and on the training checkpoint: same numbers (same seed).
    for file in ["variational.safetensors", "checkpoint.safetensors"] {
        let o = modeconn()
            .args(["eval", "--data", "digits", "--model"])
            .arg(out.join(file))
            .assert()
            .success();
        let e: Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
        for k in ["mode_acc", "sample_acc", "compression"] {
            assert_eq!(e[k], s[k], "{file}: {k}");
        }
        assert_eq!(e["ensemble_acc"], s["ensemble_acc"], "{file}");
        assert_eq!(e["sparsity"], s["sparsity"], "{file}");
    }
    // Other ensemble sizes and seeds on request.
    let o = modeconn()
        .args([
            "eval",
            "--data",
            "digits",
            "--ensemble",
            "3",
            "--eval-seed",
            "9",
        ])
        .arg("--model")
        .arg(out.join("variational.safetensors"))
        .assert()
        .success();
    let e: Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
    assert!(e["ensemble_acc"]["3"].is_number() && e["ensemble_acc"].get("10").is_none());
    // The mode is an ordinary model.
    let o = modeconn()
        .args(["eval", "--data", "digits", "--model"])
        .arg(out.join("mode.safetensors"))
        .assert()
        .success();
    let e: Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
    assert_eq!(e["test_acc"], s["mode_acc"]);
}

/// The deepbayes port's options are stored with the model: `eval` on the saved file draws the
/// same samples (σ²-direct variance, ±10 clip) as training's final evaluation did.
#[test]
fn port_options_are_stored_and_eval_reproduces_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("port");
    let port = ["--log-alpha-clip", "10", "--lrt-variance", "sigma2"];
    let mut args = vec!["--epochs", "8", "--lr", "3e-3"];
    args.extend(port);
    vtrain(&out, "sparse-vd", &args).success();
    let s = check_summary(&out, &["fc1", "fc2"]);
    assert!(f(&s["mode_acc"]) > 0.85, "{s}");
    let file = out.join("variational.safetensors");
    let header = std::fs::read(&file).unwrap();
    let n = u64::from_le_bytes(header[..8].try_into().unwrap()) as usize;
    let meta = String::from_utf8_lossy(&header[8..8 + n]).to_string();
    assert!(
        meta.contains("sigma2") && meta.contains("log_alpha_clip"),
        "{meta}"
    );
    let o = modeconn()
        .args(["eval", "--data", "digits", "--model"])
        .arg(&file)
        .assert()
        .success();
    let e: Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
    for k in ["mode_acc", "sample_acc", "ensemble_acc", "sparsity"] {
        assert_eq!(e[k], s[k], "{k}");
    }
    // The same run with the default choices is a different model.
    let other = dir.path().join("reference");
    vtrain(&other, "sparse-vd", &["--epochs", "8", "--lr", "3e-3"]).success();
    assert_ne!(
        std::fs::read(&file).unwrap(),
        std::fs::read(other.join("variational.safetensors")).unwrap()
    );
}

#[test]
fn ard_and_group_ard_train_and_report_units() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ard");
    vtrain(&out, "ard", &["--epochs", "20", "--lr", "3e-3"]).success();
    let s = check_summary(&out, &["fc1", "fc2"]);
    assert!(f(&s["mode_acc"]) > 0.9, "{s}");
    assert!(f(&s["sparsity"]["fc1"]) > 0.5, "{s}");

    let out = dir.path().join("gard");
    vtrain(&out, "group-ard", &["--epochs", "20", "--lr", "3e-3"]).success();
    let s = check_summary(&out, &["fc1", "fc2"]);
    assert!(f(&s["mode_acc"]) > 0.85, "{s}");
    assert!(s["units_removed"]["fc1"].is_u64(), "{s}");
}

#[test]
fn layerwise_alpha_learns_one_alpha_per_layer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("la");
    vtrain(
        &out,
        "layerwise-alpha",
        &["--epochs", "10", "--lr", "1e-2", "--kl-warmup", "none"],
    )
    .success();
    let s = check_summary(&out, &["fc1", "fc2"]);
    let la = f(&s["log_alpha_mean"]["fc1"]);
    // Initialised at −10; the KL pushes α up.
    assert!(la > -9.5, "{s}");
    assert!(f(&s["mode_acc"]) > 0.85, "{s}");
    // Per-epoch series of per-layer log α, rising.
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let las: Vec<f64> = log
        .lines()
        .map(|l| f(&serde_json::from_str::<Value>(l).unwrap()["log_alpha_mean"]["fc1"]))
        .collect();
    assert_eq!(las.len(), 10);
    assert!(las.windows(2).all(|w| w[1] > w[0]), "{las:?}");
}

#[test]
fn gaussian_dropout_fixed_and_learned_alpha() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g");
    vtrain(&out, "gaussian", &["--epochs", "10", "--lr", "3e-3"]).success();
    let s = check_summary(&out, &["fc1", "fc2"]);
    // p = 0.5 → α = 1 → log α = 0, no sparsity, no KL.
    assert!(f(&s["log_alpha_mean"]["fc1"]).abs() < 1e-6);
    assert_eq!(f(&s["compression"]), 1.0);
    assert_eq!(f(&s["kl"]), 0.0);
    assert!(f(&s["ensemble_acc"]["20"]) > 0.9, "{s}");

    let out = dir.path().join("gl");
    vtrain(
        &out,
        "gaussian",
        &[
            "--epochs",
            "10",
            "--lr",
            "3e-2",
            "--learn-alpha",
            "--dropout-rate",
            "0.2",
        ],
    )
    .success();
    let s = check_summary(&out, &["fc1", "fc2"]);
    let la = f(&s["log_alpha_mean"]["fc1"]);
    // Learned, starting from log(0.2/0.8) = −1.386, clipped at α ≤ 1.
    assert!(la <= 0.0 && (la - (0.25f64).ln()).abs() > 1e-3, "{s}");
    assert!(f(&s["kl"]) > 0.0);
}

#[test]
fn variance_network_mode_is_at_chance_but_its_ensemble_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v");
    vtrain(
        &out,
        "variance",
        &["--variance-layers", "fc1", "--epochs", "30", "--lr", "1e-2"],
    )
    .success();
    let s = check_summary(&out, &["fc1", "fc2"]);
    // The zero-mean layer's mode output is its bias: one constant prediction (chance level:
    // the largest class holds ~10% of the 449 test digits).
    let mode = f(&s["mode_acc"]);
    assert!(mode < 0.15, "mode accuracy {mode}");
    let ens = f(&s["ensemble_acc"]["20"]);
    assert!(ens > 0.7, "ensemble accuracy {ens}");
    assert!(f(&s["sample_acc"]) > 0.5);
    assert_eq!(f(&s["sparsity"]["fc1"]), 1.0);
    assert_eq!(f(&s["kl"]), 0.0);
}

#[test]
fn same_command_gives_identical_bytes_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--epochs", "4", "--lr", "3e-3", "--ensemble", "5"];
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    vtrain(&a, "sparse-vd", &args).success();
    vtrain(&b, "sparse-vd", &args).success();
    // Interrupted after epoch 2, then resumed.
    let mut stop = args.to_vec();
    stop.extend(["--stop-after", "2"]);
    vtrain(&c, "sparse-vd", &stop).success();
    let mut resume = args.to_vec();
    resume.push("--resume");
    vtrain(&c, "sparse-vd", &resume).success();
    for file in [
        "checkpoint.safetensors",
        "variational.safetensors",
        "summary.json",
    ] {
        let x = std::fs::read(a.join(file)).unwrap();
        assert_eq!(
            x,
            std::fs::read(b.join(file)).unwrap(),
            "{file} differs between runs"
        );
        assert_eq!(
            x,
            std::fs::read(c.join(file)).unwrap(),
            "{file} differs after resume"
        );
    }
    // A different seed gives different noise, hence different weights.
    let d = dir.path().join("d");
    modeconn()
        .args(["vtrain", "--method", "sparse-vd", "--data", "digits"])
        .args(["--seed", "2", "--quiet", "--out"])
        .arg(&d)
        .args(args)
        .assert()
        .success();
    assert_ne!(
        std::fs::read(a.join("variational.safetensors")).unwrap(),
        std::fs::read(d.join("variational.safetensors")).unwrap()
    );
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let cases: [(&[&str], &str); 9] = [
        (&["--method", "dropconnect"], "--method"),
        (&["--method", "variance", "--variance-layers", "fc9"], "fc9"),
        (
            &["--method", "sparse-vd", "--variance-layers", "fc1"],
            "--variance-layers",
        ),
        (&["--method", "sparse-vd", "--learn-alpha"], "--learn-alpha"),
        (
            &["--method", "gaussian", "--dropout-rate", "1.5"],
            "--dropout-rate",
        ),
        (&["--method", "ard", "--kl-warmup", "ramp"], "--kl-warmup"),
        (&["--method", "ard", "--ensemble", "10,0"], "--ensemble"),
        (
            &["--method", "sparse-vd", "--log-alpha-clip", "2"],
            "--log-alpha-clip",
        ),
        (
            &["--method", "sparse-vd", "--lrt-variance", "sigma"],
            "--lrt-variance",
        ),
    ];
    for (args, needle) in cases {
        let o = modeconn()
            .args(["vtrain", "--data", "digits", "--epochs", "1", "--out"])
            .arg(&out)
            .args(args)
            .assert()
            .failure()
            .code(1);
        let err = String::from_utf8_lossy(&o.get_output().stderr).to_string();
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
