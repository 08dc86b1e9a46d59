//! Every training command with its default flags learns on the embedded digits data (1,348
//! training / 449 test images, ten classes; chance is 10%).
//!
//! Thresholds, on the test set:
//! - `train`: ≥ 90% accuracy for each of two seeds;
//! - `connect`: the fitted chain's worst point has ≤ 5 points more test error than the worse
//!   endpoint, and is below the straight line's worst point;
//! - `vtrain`: ≥ 90% accuracy of the mode for the point-estimate methods (gaussian,
//!   layerwise-alpha, sparse-vd, ard, group-ard); ≥ 80% for the ensemble of 10 of a variance
//!   network (its mode, zero-mean hidden weights, stays near chance and is not asserted).

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

fn modeconn() -> Command {
    Command::cargo_bin("modeconn").unwrap()
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn train_and_connect_with_defaults_learn() {
    let d = tempfile::tempdir().unwrap();
    for s in ["1", "2"] {
        modeconn()
            .args(["train", "-q", "--seed", s, "--out"])
            .arg(d.path().join(format!("w{s}")))
            .assert()
            .success();
        let m = json(&d.path().join(format!("w{s}/metrics.json")));
        let acc = f(&m["test_acc"]);
        assert!(acc >= 0.90, "train --seed {s}: test accuracy {acc}");
    }
    let (a, b) = (
        d.path().join("w1/model.safetensors"),
        d.path().join("w2/model.safetensors"),
    );
    modeconn()
        .args(["connect", "-q", "--a"])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--out")
        .arg(d.path().join("chain"))
        .assert()
        .success();
    modeconn()
        .args(["path", "--points", "21", "--a"])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--curve")
        .arg(format!(
            "chain={}",
            d.path().join("chain/curve.safetensors").display()
        ))
        .arg("--out")
        .arg(d.path().join("path"))
        .assert()
        .success();
    let s = json(&d.path().join("path/summary.json"));
    let err = |path: &str, k: &str| f(&s[path]["test_err"][k]);
    let worse_end = err("chain", "start").max(err("chain", "end"));
    assert!(
        err("chain", "max") <= worse_end + 0.05,
        "chain max error {} vs endpoints {worse_end}",
        err("chain", "max")
    );
    assert!(
        err("chain", "max") < err("line", "max"),
        "chain {} not below line {}",
        err("chain", "max"),
        err("line", "max")
    );
}

#[test]
fn vtrain_with_defaults_learns_for_every_method() {
    let d = tempfile::tempdir().unwrap();
    for method in [
        "gaussian",
        "layerwise-alpha",
        "sparse-vd",
        "ard",
        "group-ard",
        "variance",
    ] {
        let out = d.path().join(method);
        modeconn()
            .args(["vtrain", "-q", "--method", method, "--out"])
            .arg(&out)
            .assert()
            .success();
        let s = json(&out.join("summary.json"));
        if method == "variance" {
            let acc = f(&s["ensemble_acc"]["10"]);
            assert!(acc >= 0.80, "{method}: ensemble-of-10 accuracy {acc}");
        } else {
            let acc = f(&s["mode_acc"]);
            assert!(acc >= 0.90, "{method}: mode accuracy {acc}");
        }
    }
}
