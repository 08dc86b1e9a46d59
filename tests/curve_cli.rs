//! End-to-end `connect` / `path` on the embedded digits data: exact resume of a curve fit,
//! `--train-ends`, the endpoint check of `path`, and one-line errors for bad input.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use modeconn::backend;
use modeconn::curve::Curve;
use modeconn::network_file::load_model;
use serde_json::Value;

fn modeconn() -> Command {
    Command::cargo_bin("modeconn").unwrap()
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Trains the two digits endpoints `m1`, `m2` (a small MLP, a few epochs) into `d`.
fn endpoints(d: &Path) -> (PathBuf, PathBuf) {
    for s in ["1", "2"] {
        modeconn()
            .args(["train", "--arch", "mlp:64-32-10", "--epochs", "8", "-q"])
            .args(["--seed", s, "--out"])
            .arg(d.join(format!("m{s}")))
            .assert()
            .success();
    }
    (
        d.join("m1/model.safetensors"),
        d.join("m2/model.safetensors"),
    )
}

fn connect(a: &Path, b: &Path, out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    modeconn()
        .args(["connect", "-q", "--a"])
        .arg(a)
        .arg("--b")
        .arg(b)
        .arg("--out")
        .arg(out)
        .args(extra)
        .assert()
}

fn path_cmd(a: &Path, b: &Path, out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    modeconn()
        .args(["path", "--points", "5", "--a"])
        .arg(a)
        .arg("--b")
        .arg(b)
        .arg("--out")
        .arg(out)
        .args(extra)
        .assert()
}

/// A failure with exit code 1 and a one-line `error: …` message containing `needle`.
fn fails_with(assert: assert_cmd::assert::Assert, needle: &str) {
    let out = assert.failure().code(1).get_output().clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn connect_resumes_exactly_and_records_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = endpoints(d);
    let args = [
        "--curve", "bezier", "--bends", "2", "--epochs", "4", "--seed", "5",
    ];
    connect(&a, &b, &d.join("full"), &args).success();
    let mut stopped = args.to_vec();
    stopped.extend(["--stop-after", "2"]);
    connect(&a, &b, &d.join("part"), &stopped).success();
    assert!(!d.join("part/curve.safetensors").exists());
    let mut resumed = args.to_vec();
    resumed.push("--resume");
    connect(&a, &b, &d.join("part"), &resumed).success();
    assert_eq!(
        std::fs::read(d.join("full/curve.safetensors")).unwrap(),
        std::fs::read(d.join("part/curve.safetensors")).unwrap(),
        "a resumed curve fit must end with the same bytes"
    );
    // A resume with other flags is refused.
    let mut other = args.to_vec();
    other[3] = "3";
    other.push("--resume");
    fails_with(
        connect(&a, &b, &d.join("part"), &other),
        "different configuration",
    );

    let log = std::fs::read_to_string(d.join("full/metrics.jsonl")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    for l in &lines {
        let t = l["t"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&t));
        assert!(l["test_loss_mid"].as_f64().unwrap().is_finite());
    }
    // Garipov's schedule by default: the base rate for the first half, then lower.
    assert_eq!(lines[0]["lr"].as_f64(), Some(0.1));
    assert!(lines[3]["lr"].as_f64().unwrap() < 0.1);
    let run = json(&d.join("full/run.json"));
    let cfg = &run["config"];
    assert_eq!(cfg["curve"], "bezier");
    assert_eq!(cfg["bends"], 2);
    assert_eq!(cfg["schedule"]["kind"], "garipov");
    // The decay acts on w(t), not through the optimiser.
    assert_eq!(cfg["wd"].as_f64(), Some(5e-4));
    assert_eq!(cfg["optim"]["wd"].as_f64(), Some(0.0));
    let dev = backend::device();
    let c = Curve::load(&d.join("full/curve.safetensors"), &dev).unwrap();
    assert_eq!(c.len(), 4);
    assert!(!c.ends_trained);
}

#[test]
fn train_ends_moves_the_ends_and_path_accepts_the_curve() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = endpoints(d);
    connect(&a, &b, &d.join("c"), &["--train-ends", "--epochs", "2"]).success();
    let dev = backend::device();
    let c = Curve::load(&d.join("c/curve.safetensors"), &dev).unwrap();
    assert!(c.ends_trained);
    let (_, pa) = load_model(&a, &dev).unwrap();
    let (_, pb) = load_model(&b, &dev).unwrap();
    assert_ne!(c.points[0].to_flat(), pa.to_flat());
    assert_ne!(c.points[2].to_flat(), pb.to_flat());
    let curve = d.join("c/curve.safetensors");
    path_cmd(&a, &b, &d.join("p"), &["--curve", curve.to_str().unwrap()]).success();
    let s = json(&d.join("p/summary.json"));
    assert!(s["curve"]["test_err"]["max"].is_f64());
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = endpoints(d);
    connect(&a, &b, &d.join("c"), &["--epochs", "1"]).success();
    let curve = d.join("c/curve.safetensors");
    let cs = curve.to_str().unwrap();

    // `path` refuses a curve that does not run from --a to --b.
    fails_with(
        path_cmd(&b, &a, &d.join("p"), &["--curve", cs]),
        "swap --a and --b",
    );
    modeconn()
        .args(["train", "--arch", "mlp:64-32-10", "--epochs", "1", "-q"])
        .args(["--seed", "3", "--out"])
        .arg(d.join("m3"))
        .assert()
        .success();
    let m3 = d.join("m3/model.safetensors");
    fails_with(
        path_cmd(&a, &m3, &d.join("p"), &["--curve", cs]),
        "fitted between other networks",
    );
    fails_with(
        path_cmd(&a, &b, &d.join("p"), &["--train-subset", "0"]),
        "--train-subset",
    );
    fails_with(
        path_cmd(&a, &b, &d.join("p"), &["--points", "1"]),
        "--points",
    );
    fails_with(
        path_cmd(&a, &b, &d.join("p"), &["--curve", "line=x.safetensors"]),
        "`line`",
    );
    fails_with(
        path_cmd(&a, &b, &d.join("p"), &["--curve", a.to_str().unwrap()]),
        "expected a `curve`",
    );
    fails_with(
        path_cmd(&a, &b, &d.join("p"), &["--curve", "nope.safetensors"]),
        "nope.safetensors",
    );

    // `connect` names the flag or file at fault.
    fails_with(
        connect(&a, &b, &d.join("x"), &["--curve", "spline"]),
        "'spline' for '--curve",
    );
    fails_with(
        connect(&a, &b, &d.join("x"), &["--bends", "0"]),
        "--bends 0",
    );
    fails_with(connect(&a, &curve, &d.join("x"), &[]), "expected a `model`");
    modeconn()
        .args(["train", "--arch", "mlp:64-16-10", "--epochs", "1", "-q"])
        .args(["--seed", "4", "--out"])
        .arg(d.join("m4"))
        .assert()
        .success();
    let m4 = d.join("m4/model.safetensors");
    fails_with(
        connect(&a, &m4, &d.join("x"), &[]),
        "share one architecture",
    );
    fails_with(
        path_cmd(&a, &m4, &d.join("p"), &[]),
        "share one architecture",
    );
    fails_with(
        connect(
            &a,
            &b,
            &d.join("x"),
            &["--data", "mnist", "--data-dir", "/nonexistent"],
        ),
        "/nonexistent",
    );
}
