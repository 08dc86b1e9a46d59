//! `modeconn demo --quick` finishes and writes its summary and figures.

use assert_cmd::Command;

#[test]
fn demo_quick_writes_summary_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    Command::cargo_bin("modeconn")
        .unwrap()
        .args(["demo", "--quick", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicates::str::contains("aligned line"));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for k in [
        "w1",
        "w2",
        "paths",
        "sparse_vd",
        "variance",
        "permute",
        "align",
    ] {
        assert!(!s[k].is_null(), "summary lacks {k}");
    }
    let figs = s["figures"].as_array().unwrap();
    assert!(figs.len() >= 12, "{} figure files", figs.len());
    for f in figs {
        let p = std::path::Path::new(f.as_str().unwrap());
        assert!(
            p.exists() && std::fs::metadata(p).unwrap().len() > 2000,
            "{}",
            p.display()
        );
    }
    for f in [
        "connectivity/path.png",
        "plane/plane_train_loss.svg",
        "kl/kl.png",
        "sparse_vd/vtrain.png",
    ] {
        assert!(out.join("figures").join(f).exists(), "{f}");
    }
}
