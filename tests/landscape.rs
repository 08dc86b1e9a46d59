//! `modeconn landscape` end to end on digits: the grid's centre is the network (its train loss
//! equals `eval`'s), the directions are filter-normalised (each as long as the weights, biases
//! excluded), the loss rises away from the minimum, 1-d and 2-d figures, `plot` redraws them,
//! and bad flags are refused in one line.

mod common;

use common::{csv_rows, json, modeconn, refused_in_one_line};

#[test]
fn landscape_on_digits() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = common::train_digits(&d.join("w"), "mlp:64-32-10", "15", &[]);
    let out = d.join("l2");
    modeconn()
        .args(["landscape", "--points", "11", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let v = json(&out.join("landscape.json"));
    let rows = csv_rows(&out.join("landscape.csv"));
    assert_eq!(rows.len(), 121);
    let a = modeconn()
        .args(["eval", "--model"])
        .arg(&model)
        .assert()
        .success();
    let e: serde_json::Value =
        serde_json::from_slice(&a.get_output().stdout).expect("eval prints JSON");
    assert_eq!(v["centre"]["train_loss"], e["train_loss"]);
    // Filter normalisation: every weight row as long as the weight's row, biases zero, so the
    // direction is a little shorter than the weights (their biases).
    let (w, dn) = (
        v["weight_norm"].as_f64().unwrap(),
        v["direction_norms"][0].as_f64().unwrap(),
    );
    assert!(dn < w && dn > 0.95 * w, "{dn} vs {w}");
    let at = |x: &str, y: &str| -> f64 {
        rows.iter().find(|r| r["x"] == x && r["y"] == y).unwrap()["train_loss"]
            .parse()
            .unwrap()
    };
    let centre = at("0", "0");
    for (x, y) in [("1", "0"), ("-1", "0"), ("0", "1"), ("0", "-1"), ("1", "1")] {
        assert!(at(x, y) > centre, "({x}, {y})");
    }
    for f in [
        "landscape_train_loss.png",
        "landscape_test_err.svg",
        "run.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    std::fs::remove_file(out.join("landscape_train_loss.png")).unwrap();
    modeconn().arg("plot").arg(&out).assert().success();
    assert!(out.join("landscape_train_loss.png").exists());

    let one = d.join("l1");
    modeconn()
        .args([
            "landscape",
            "--dims",
            "1",
            "--points",
            "21",
            "--range=-0.5:0.5",
            "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(&one)
        .assert()
        .success();
    assert_eq!(csv_rows(&one.join("landscape.csv")).len(), 21);
    assert!(one.join("landscape.png").exists());

    let m = model.to_str().unwrap();
    let bad = d.join("bad");
    refused_in_one_line("landscape", &["--model", m, "--dims", "3"], &bad, "--dims");
    refused_in_one_line(
        "landscape",
        &["--model", m, "--range", "1:0"],
        &bad,
        "--range",
    );
    refused_in_one_line(
        "landscape",
        &["--model", m, "--points", "1"],
        &bad,
        "--points",
    );
}
