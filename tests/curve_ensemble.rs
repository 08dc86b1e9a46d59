//! Curve ensembles (`path --curve-ensemble`): K = 1 at t = 0 is the first network; K = 2 is the
//! two endpoints on every path, whose NLL is at most the mean of theirs (Jensen); on the line the
//! arc-length spacing is the t spacing; bad sizes are refused.

mod common;

use std::collections::HashMap;

use common::{csv_rows, json, modeconn, refused_in_one_line};

#[test]
fn curve_ensembles_along_the_line_and_a_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (a, b, _) = common::two_minima_and_chain(
        d,
        &[
            "--data",
            "digits",
            "--arch",
            "mlp:64-32-10",
            "--epochs",
            "15",
        ],
        &["--data", "digits", "--epochs", "10"],
        &["--data", "digits", "--points", "5"],
    );
    let out = d.join("pe");
    modeconn()
        .args([
            "path",
            "--data",
            "digits",
            "--points",
            "5",
            "--curve-ensemble",
            "1,2,4",
        ])
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
        .arg(&out)
        .assert()
        .success();
    let rows = csv_rows(&out.join("ensemble.csv"));
    assert_eq!(rows.len(), 2 * 2 * 3);
    let get = |path: &str, spacing: &str, k: &str| -> HashMap<String, String> {
        rows.iter()
            .find(|r| r["path"] == path && r["spacing"] == spacing && r["k"] == k)
            .unwrap()
            .clone()
    };
    let f = |r: &HashMap<String, String>, c: &str| -> f64 { r[c].parse().unwrap() };
    let eval = |m: &std::path::Path| -> serde_json::Value {
        let o = modeconn()
            .args(["eval", "--model"])
            .arg(m)
            .assert()
            .success();
        serde_json::from_slice(&o.get_output().stdout).unwrap()
    };
    let (ea, eb) = (eval(&a), eval(&b));
    for path in ["line", "chain"] {
        let one = get(path, "t", "1");
        assert_eq!(f(&one, "test_err"), ea["test_err"].as_f64().unwrap());
        assert!((f(&one, "test_loss") - ea["test_loss"].as_f64().unwrap()).abs() < 1e-6);
        // Jensen: the NLL of the mean prediction is at most the mean NLL.
        let two = get(path, "t", "2");
        let mean = 0.5 * (ea["test_loss"].as_f64().unwrap() + eb["test_loss"].as_f64().unwrap());
        assert!(f(&two, "test_loss") <= mean + 1e-9);
    }
    assert_eq!(get("line", "t", "2"), {
        let mut r = get("chain", "t", "2");
        r.insert("path".into(), "line".into());
        r
    });
    let (lt, ll) = (get("line", "t", "4"), get("line", "length", "4"));
    assert!((f(&lt, "test_loss") - f(&ll, "test_loss")).abs() < 1e-5);
    assert!(out.join("ensemble.png").exists() && out.join("ensemble.svg").exists());
    std::fs::remove_file(out.join("ensemble.png")).unwrap();
    modeconn().arg("plot").arg(&out).assert().success();
    assert!(out.join("ensemble.png").exists());
    assert_eq!(
        json(&out.join("run.json"))["result"]["curve_ensembles"],
        serde_json::json!([1, 2, 4])
    );
    let bad = d.join("bad");
    refused_in_one_line(
        "path",
        &[
            "--a",
            a.to_str().unwrap(),
            "--b",
            b.to_str().unwrap(),
            "--curve-ensemble",
            "0",
        ],
        &bad,
        "--curve-ensemble",
    );
}
