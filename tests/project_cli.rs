//! `modeconn project` end to end on the embedded digits: two interpolating minima from
//! `dimension`, the line between them, a line to a function-preserving permutation of the
//! second, and a squared-error chain, each projected onto the set of minima on the same points.

mod common;

use std::collections::HashMap;

use common::{csv_rows, json, modeconn, refused_in_one_line};

#[test]
fn paths_between_interpolating_minima_project_onto_the_minima_set() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let pts = ["--points", "10", "--points-seed", "2"];
    for s in ["0", "1"] {
        modeconn()
            .args(["dimension", "--arch", "mlp:64-32-10", "-q", "--seed", s])
            .args(pts)
            .arg("--out")
            .arg(d.join(format!("m{s}")))
            .assert()
            .success();
    }
    let (a, b) = (
        d.join("m0/model.safetensors"),
        d.join("m1/model.safetensors"),
    );
    modeconn()
        .args(["permute", "--seed", "5", "--model"])
        .arg(&b)
        .arg("--out")
        .arg(d.join("perm"))
        .assert()
        .success();
    modeconn()
        .args([
            "connect",
            "--loss",
            "mse",
            "--train-subset",
            "10",
            "--seed",
            "2",
        ])
        .args(["--epochs", "200", "--batch-size", "10", "-q", "--a"])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--out")
        .arg(d.join("chain"))
        .assert()
        .success();
    let out = d.join("proj");
    modeconn()
        .args(["project", "-q", "--t-points", "5"])
        .args(pts)
        .arg("--a")
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg(format!(
            "--line=permuted={}",
            d.join("perm/model.safetensors").display()
        ))
        .arg(format!(
            "--curve=chain={}",
            d.join("chain/curve.safetensors").display()
        ))
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let v = json(&out.join("summary.json"));
    let r = csv_rows(&out.join("project.csv"));
    assert_eq!(r.len(), 3 * 5);
    let f = |row: &HashMap<String, String>, k: &str| row[k].parse::<f64>().unwrap();
    for row in &r {
        // Every point reaches the minima set, whose dimension is at least D − N·K (rank J ≤
        // N·K; more where the projected point has units off on every point).
        assert_eq!(row["converged"], "true", "{row:?}");
        assert!(f(row, "residual_after") <= 1e-6, "{row:?}");
        assert!(f(row, "dimension") >= 2410.0 - 100.0, "{row:?}");
        assert_eq!(f(row, "dimension") + f(row, "rank"), 2410.0);
        let (t, before, moved) = (f(row, "t"), f(row, "residual_before"), f(row, "distance"));
        if t == 0.0 || (t == 1.0 && row["path"] != "chain") {
            // The ends are minima (saved in f32): nothing to move but the rounding. The
            // permuted network computes the same function, so it is a minimum too.
            assert!(before < 1e-4 && moved < 1e-4, "{row:?}");
            assert_eq!(f(row, "dimension"), 2410.0 - 100.0, "{row:?}");
        } else if t == 0.5 {
            // The middle of a line is off the set and is moved onto it.
            assert!(before > 1e-2 && moved > 1e-3, "{row:?}");
        }
    }
    assert!(v["length"].as_f64().unwrap() > 1.0);
    // The line's steps add up to ‖w2 − w1‖; its projection is a chain of minima whose steps
    // are recorded beside them.
    let line = &v["paths"]["line"];
    let (len, total) = (
        line["length"].as_f64().unwrap(),
        v["length"].as_f64().unwrap(),
    );
    assert!((len - total).abs() < 1e-4 * total, "{len} vs {total}");
    assert!(line["projected_length"].as_f64().unwrap() > 0.0);
    assert!(line["max_segment_ratio"].as_f64().unwrap().is_finite());
    assert_eq!(v["paths"]["permuted"]["all_converged"], true);
    assert!(out.join("project.png").exists() && out.join("run.json").exists());

    // One-line refusals that write nothing.
    let refuse =
        |args: &[&str], needle: &str| refused_in_one_line("project", args, &d.join("bad"), needle);
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    refuse(&["--a", a, "--b", b, "--t-points", "1"], "--t-points");
    refuse(
        &["--a", a, "--b", "nowhere.safetensors"],
        "nowhere.safetensors",
    );
    refuse(&["--a", a, "--b", b, "--line", "line=x"], "--line");
    let other = d.join("other");
    modeconn()
        .args([
            "train",
            "--arch",
            "mlp:64-16-10",
            "--epochs",
            "1",
            "-q",
            "--out",
        ])
        .arg(&other)
        .assert()
        .success();
    let other = other.join("model.safetensors");
    refuse(&["--a", a, "--b", other.to_str().unwrap()], "mlp:64-16-10");
}
