//! End-to-end tests of `modeconn train` / `modeconn eval` on the embedded digits data.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

fn modeconn() -> Command {
    Command::cargo_bin("modeconn").unwrap()
}

fn train(out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    modeconn()
        .args(["train", "--data", "digits", "--arch", "mlp:64-128-10"])
        .args(["--seed", "1", "--quiet", "--out"])
        .arg(out)
        .args(extra)
        .assert()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn train_reaches_95_percent_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a");
    train(&out, &["--epochs", "30"]).success();
    let m = read_json(&out.join("metrics.json"));
    for k in ["train_loss", "train_acc", "test_loss", "test_acc"] {
        assert!(m[k].is_f64(), "metrics.json lacks {k}");
    }
    let acc = m["test_acc"].as_f64().unwrap();
    assert!(acc >= 0.95, "digits MLP test accuracy {acc}");
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 30);
    let run = read_json(&out.join("run.json"));
    assert_eq!(run["seed"], 1);
    assert_eq!(run["config"]["arch"], "mlp:64-128-10");
    assert!(run["version"].is_string() && run["command"].is_array());

    // eval prints and writes the same metrics with the same keys.
    let mj = dir.path().join("m.json");
    let outp = modeconn()
        .args(["eval", "--data", "digits", "--model"])
        .arg(out.join("model.safetensors"))
        .arg("--out")
        .arg(&mj)
        .assert()
        .success();
    let printed: Value = serde_json::from_slice(&outp.get_output().stdout).unwrap();
    let written = read_json(&mj);
    assert_eq!(printed, written);
    for k in ["train_loss", "train_acc", "test_loss", "test_acc"] {
        let (a, b) = (m[k].as_f64().unwrap(), written[k].as_f64().unwrap());
        assert!((a - b).abs() < 1e-9, "{k}: train says {a}, eval says {b}");
    }
}

#[test]
fn training_is_deterministic_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    train(&a, &["--epochs", "8"]).success();
    train(&b, &["--epochs", "8"]).success();
    let ma = std::fs::read(a.join("model.safetensors")).unwrap();
    assert_eq!(ma, std::fs::read(b.join("model.safetensors")).unwrap());
    // Interrupted after epoch 3, then resumed: same final bytes.
    train(&c, &["--epochs", "8", "--stop-after", "3"]).success();
    assert!(!c.join("model.safetensors").exists());
    assert_eq!(
        std::fs::read_to_string(c.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    train(&c, &["--epochs", "8", "--resume"]).success();
    assert_eq!(ma, std::fs::read(c.join("model.safetensors")).unwrap());
    assert_eq!(
        std::fs::read_to_string(c.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        8
    );
    // Resuming with different flags is refused.
    train(&c, &["--epochs", "8", "--lr", "0.3", "--resume"])
        .failure()
        .stderr(predicates::str::contains("different configuration"));
    // A different seed gives different weights.
    let d = dir.path().join("d");
    modeconn()
        .args([
            "train",
            "--arch",
            "mlp:64-128-10",
            "--epochs",
            "8",
            "--seed",
            "2",
            "-q",
        ])
        .arg("--out")
        .arg(&d)
        .assert()
        .success();
    assert_ne!(ma, std::fs::read(d.join("model.safetensors")).unwrap());
}

fn fails_with(args: &[&str], needle: &str) {
    let a = modeconn().args(args).assert().failure().code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(err.contains(needle), "stderr `{err}` lacks `{needle}`");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
}

#[test]
fn bad_input_is_one_line_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let o = out.to_str().unwrap();
    fails_with(
        &["train", "--arch", "mlp:64-x-10", "--out", o],
        "mlp:64-x-10",
    );
    fails_with(
        &["train", "--arch", "mlp:100-10", "--out", o],
        "expects 100 inputs",
    );
    fails_with(&["train", "--arch", "lenet5", "--out", o], "lenet5");
    fails_with(&["train", "--data", "imagenet", "--out", o], "imagenet");
    fails_with(
        &["train", "--schedule", "sometimes", "--out", o],
        "--schedule",
    );
    fails_with(&["train", "--lr=-1", "--out", o], "--lr");
    fails_with(&["train", "--no-such-flag", "--out", o], "--no-such-flag");
    fails_with(&["train", "--epochs", "0", "--out", o], "--epochs");
    let missing = dir.path().join("nope.safetensors");
    fails_with(
        &["eval", "--model", missing.to_str().unwrap()],
        "nope.safetensors",
    );
    let corrupt = dir.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x08\0\0\0\0\0\0\0{bad json").unwrap();
    fails_with(
        &["eval", "--model", corrupt.to_str().unwrap()],
        "corrupt.safetensors",
    );
    let mnist_dir = dir.path().join("empty");
    std::fs::create_dir_all(&mnist_dir).unwrap();
    fails_with(
        &[
            "train",
            "--data",
            "mnist",
            "--data-dir",
            mnist_dir.to_str().unwrap(),
            "--out",
            o,
        ],
        "fetch-data.sh",
    );
}

#[test]
fn divergence_is_reported_not_nan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let a = modeconn()
        .args(["train", "--lr", "1e6", "--epochs", "3", "--quiet", "--out"])
        .arg(&out)
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(err.contains("diverged") && err.contains("--lr"), "{err}");
}

/// `--init he` draws other weights than the default and is recorded; the default is not
/// written into the configuration (so earlier checkpoints still resume).
#[test]
fn the_initialisation_scheme_is_chosen_and_recorded() {
    let d = tempfile::tempdir().unwrap();
    train(&d.path().join("he"), &["--epochs", "1", "--init", "he"]).success();
    train(&d.path().join("default"), &["--epochs", "1"]).success();
    let he = read_json(&d.path().join("he/run.json"));
    let default = read_json(&d.path().join("default/run.json"));
    assert_eq!(he["config"]["init"], "he");
    assert!(default["config"].get("init").is_none(), "{default}");
    let model = |dir: &str| std::fs::read(d.path().join(dir).join("model.safetensors")).unwrap();
    assert_ne!(model("he"), model("default"));
}
