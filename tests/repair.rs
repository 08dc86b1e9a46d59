//! REPAIR (Jordan et al. 2023) through `path --repair` on digits MLPs without normalisation:
//! the repaired line keeps its endpoints, lowers the barrier of aligned networks, and is
//! refused for a network with batch normalisation.

mod common;
use common::{json, modeconn};

#[test]
fn repair_keeps_the_endpoints_and_lowers_the_aligned_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for s in ["1", "2"] {
        modeconn()
            .args(["train", "--arch", "mlp:64-64-64-10", "--epochs", "20", "-q"])
            .args(["--seed", s, "--out"])
            .arg(d.join(format!("w{s}")))
            .assert()
            .success();
    }
    let w1 = d.join("w1/model.safetensors");
    modeconn()
        .args(["align", "--method", "weights", "--model"])
        .arg(d.join("w2/model.safetensors"))
        .arg("--to")
        .arg(&w1)
        .arg("--out")
        .arg(d.join("wm"))
        .assert()
        .success();
    modeconn()
        .args(["path", "--points", "5", "--repair", "--a"])
        .arg(&w1)
        .arg("--b")
        .arg(d.join("wm/model.safetensors"))
        .arg("--out")
        .arg(d.join("path"))
        .assert()
        .success();
    let s = json(&d.join("path/summary.json"));
    let v = |p: &str, m: &str, k: &str| s[p][m][k].as_f64().unwrap();
    for m in ["train_loss", "test_loss"] {
        for k in ["start", "end"] {
            // The endpoints are repaired towards their own statistics: a fixed point.
            let (line, rep) = (v("line", m, k), v("line-repair", m, k));
            assert!(
                (line - rep).abs() < 1e-3 * line.max(1e-2),
                "{m}.{k}: {line} vs {rep}"
            );
        }
    }
    assert!(
        v("line-repair", "train_loss", "b_lin") < v("line", "train_loss", "b_lin"),
        "REPAIR lowers the aligned line's train-loss barrier: {s}"
    );
    let run = json(&d.join("path/run.json"));
    assert_eq!(run["config"]["repair"], true);
    assert_eq!(run["result"]["repair"]["samples"], 1348);
    // The path figure draws the repaired line too.
    modeconn()
        .arg("plot")
        .arg(d.join("path"))
        .assert()
        .success();

    // A network with batch normalisation has the BN reset instead: one line, nothing written.
    for s in ["1", "2"] {
        modeconn()
            .args([
                "train",
                "--arch",
                "mlp:64-16-10:norm=bn",
                "--epochs",
                "1",
                "-q",
            ])
            .args(["--seed", s, "--out"])
            .arg(d.join(format!("bn{s}")))
            .assert()
            .success();
    }
    let out = modeconn()
        .args(["path", "--repair", "--a"])
        .arg(d.join("bn1/model.safetensors"))
        .arg("--b")
        .arg(d.join("bn2/model.safetensors"))
        .arg("--out")
        .arg(d.join("bad"))
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("--repair") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    assert!(!d.join("bad").exists(), "nothing written on bad input");
}
