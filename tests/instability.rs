//! `modeconn instability`, `train --data-seed` and `train --stop-at-step` on digits: the copy
//! spawned at step k (in the middle of an epoch) with the trunk's data seed is the uninterrupted
//! run, bit for bit, and so is a run stopped at step k and resumed; two copies with the same data
//! seed are identical, so their instability is 0; bad flags are refused in one line.

mod common;

use common::{json, modeconn, refused_in_one_line, train_digits};

#[test]
fn instability_on_digits() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let run = |out: &std::path::Path, seeds: &str| {
        modeconn()
            .args(["instability", "--data", "digits", "--arch", "mlp:64-32-10"])
            .args([
                "--epochs",
                "4",
                "--k",
                "0,15",
                "--data-seeds",
                seeds,
                "-q",
                "--out",
            ])
            .arg(out)
            .assert()
            .success();
    };
    let out = d.join("i");
    run(&out, "1,2");
    let s = json(&out.join("summary.json"));
    assert_eq!(s["steps_per_epoch"], 11);
    assert_eq!(s["ks"].as_array().unwrap().len(), 2);
    assert!(out.join("instability.png").exists());
    assert_eq!(common::csv_rows(&out.join("instability.csv")).len(), 2 * 30);
    // The copy with the trunk's data seed, spawned at step 15 (epoch 2, step 4), is the run
    // trained without interruption with that data seed.
    let whole = train_digits(&d.join("whole"), "mlp:64-32-10", "4", &["--data-seed", "1"]);
    let bytes = |p: &std::path::Path| std::fs::read(p).unwrap();
    assert_eq!(bytes(&out.join("k15/copy1.safetensors")), bytes(&whole));
    assert_eq!(bytes(&out.join("k0/copy1.safetensors")), bytes(&whole));
    // A different data seed changes the run; the same one does not.
    assert_ne!(bytes(&out.join("k15/copy2.safetensors")), bytes(&whole));
    // `train --stop-at-step` stops in the middle of an epoch with a checkpoint that `--resume`
    // continues to the same bytes.
    let cut = d.join("cut");
    let args = ["--data-seed", "1", "--stop-at-step", "15"];
    let o = modeconn()
        .args([
            "train",
            "--data",
            "digits",
            "--arch",
            "mlp:64-32-10",
            "--epochs",
            "4",
            "-q",
        ])
        .args(args)
        .arg("--out")
        .arg(&cut)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&o.get_output().stdout).unwrap();
    assert_eq!(v["stopped_at_step"], 15);
    assert!(!cut.join("model.safetensors").exists());
    let resumed = train_digits(&cut, "mlp:64-32-10", "4", &["--data-seed", "1", "--resume"]);
    assert_eq!(bytes(&resumed), bytes(&whole));
    let same = d.join("same");
    run(&same, "5,5");
    assert_eq!(
        bytes(&same.join("k15/copy1.safetensors")),
        bytes(&same.join("k15/copy2.safetensors"))
    );
    for k in json(&same.join("summary.json"))["ks"].as_array().unwrap() {
        assert_eq!(k["test_instability"], 0.0);
        assert_eq!(k["stable"], true);
    }
    let bad = d.join("bad");
    refused_in_one_line(
        "instability",
        &["--data", "digits", "--epochs", "2", "--k", "1000"],
        &bad,
        "--k 1000",
    );
    refused_in_one_line("instability", &["--data-seeds", "1"], &bad, "--data-seeds");
    refused_in_one_line(
        "train",
        &["--data", "digits", "--epochs", "1", "--stop-at-step", "11"],
        &bad,
        "--stop-at-step 11",
    );
    refused_in_one_line("instability", &["--data-seed", "1"], &bad, "--data-seed");
}
