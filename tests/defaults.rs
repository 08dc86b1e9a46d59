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

mod common;
use common::{json, modeconn};

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn train_and_connect_with_defaults_learn() {
    let d = tempfile::tempdir().unwrap();
    let (_, _, s) = common::two_minima_and_chain(d.path(), &[], &[], &["--points", "21"]);
    for w in ["w1", "w2"] {
        let m = json(&d.path().join(w).join("metrics.json"));
        let acc = f(&m["test_acc"]);
        assert!(acc >= 0.90, "train, {w}: test accuracy {acc}");
    }
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
