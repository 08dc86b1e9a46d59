//! The permuted-minima probe end to end on digits: every pair is evaluated, and aligning w2 to
//! w1 lowers the straight-line barrier below the naive one, and REPAIR lowers it further.

use assert_cmd::Command;
use serde_json::Value;

#[test]
fn probe_on_digits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for s in ["1", "2"] {
        Command::cargo_bin("modeconn")
            .unwrap()
            .args(["train", "--arch", "mlp:64-128-10", "--epochs", "30", "-q"])
            .args(["--seed", s, "--out"])
            .arg(d.join(format!("m{s}")))
            .assert()
            .success();
    }
    Command::cargo_bin("modeconn")
        .unwrap()
        .args([
            "probe", "--epochs", "10", "--points", "11", "--repair", "-q", "--a",
        ])
        .arg(d.join("m1/model.safetensors"))
        .arg("--b")
        .arg(d.join("m2/model.safetensors"))
        .arg("--out")
        .arg(d.join("p"))
        .assert()
        .success()
        .stdout(predicates::str::contains("w1-align_w2"));
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("p/summary.json")).unwrap()).unwrap();
    for pair in ["w1-w2", "w1-pi_w1", "w1-pi_w2", "w1-align_w2"] {
        for path in ["line", "line-repair", "chain"] {
            for m in ["test_loss", "test_err"] {
                for k in ["b_max", "b_lin", "max"] {
                    assert!(s[pair][path][m][k].is_f64(), "{pair}.{path}.{m}.{k}");
                }
            }
        }
    }
    let b = |pair: &str, path: &str| s[pair][path]["test_loss"]["b_lin"].as_f64().unwrap();
    assert!(b("w1-align_w2", "line") < 0.5 * b("w1-w2", "line"));
    // REPAIR lowers the aligned line's barrier further (Jordan et al. 2023).
    assert!(b("w1-align_w2", "line-repair") < b("w1-align_w2", "line"));
    // π(w1) computes the same function as w1, yet the line between them has a barrier.
    assert!(b("w1-pi_w1", "line") > b("w1-pi_w1", "chain"));
}
