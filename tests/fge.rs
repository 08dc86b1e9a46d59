//! `modeconn fge` end to end on digits: from `train --stop-after`'s checkpoint with its momentum,
//! snapshots at every cycle's middle, the first snapshot's ensemble is the snapshot, the rate is
//! α₁ at each cycle's start, the same seed gives the same snapshots, and bad flags or a
//! checkpoint without SGD state are refused in one line.

mod common;

use common::{csv_rows, json, modeconn, refused_in_one_line};

#[test]
fn fge_from_a_training_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::train_digits(&d.join("t"), "mlp:64-32-10", "20", &["--stop-after", "16"]);
    let ckpt = d.join("t/checkpoint.safetensors");
    let fge = |out: &std::path::Path, extra: &[&str]| {
        modeconn()
            .args([
                "fge",
                "--data",
                "digits",
                "-q",
                "--epochs",
                "10",
                "--checkpoint",
            ])
            .arg(&ckpt)
            .args(extra)
            .arg("--out")
            .arg(out)
            .assert()
            .success();
    };
    let out = d.join("f");
    fge(&out, &[]);
    // Cycle 4: snapshots after epochs 2, 6 and 10.
    let rows = csv_rows(&out.join("fge.csv"));
    let epochs: Vec<&str> = rows.iter().map(|r| r["epoch"].as_str()).collect();
    assert_eq!(epochs, ["2", "6", "10"]);
    let f =
        |r: &std::collections::HashMap<String, String>, k: &str| -> f64 { r[k].parse().unwrap() };
    assert_eq!(f(&rows[0], "test_err"), f(&rows[0], "ensemble_test_err"));
    assert!((f(&rows[0], "test_loss") - f(&rows[0], "ensemble_test_loss")).abs() < 1e-6);
    // The ensemble's NLL is at most the mean of its members' (Jensen).
    let mean: f64 = rows.iter().map(|r| f(r, "test_loss")).sum::<f64>() / 3.0;
    assert!(f(&rows[2], "ensemble_test_loss") <= mean + 1e-9);
    for j in 1..=3 {
        assert!(
            out.join(format!("snapshots/snapshot{j}.safetensors"))
                .exists()
        );
    }
    assert!(out.join("fge.png").exists());
    // Each cycle starts at α₁ (epochs 1, 5, 9 of the log).
    let log: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for e in [0, 4, 8] {
        assert!((log[e]["lr"].as_f64().unwrap() - 0.05).abs() < 1e-12);
    }
    assert_eq!(json(&out.join("summary.json"))["start_epoch"], 16);
    let again = d.join("again");
    fge(&again, &[]);
    assert_eq!(
        std::fs::read(out.join("snapshots/snapshot3.safetensors")).unwrap(),
        std::fs::read(again.join("snapshots/snapshot3.safetensors")).unwrap()
    );

    let c = ckpt.to_str().unwrap();
    let bad = d.join("bad");
    refused_in_one_line("fge", &["--checkpoint", c, "--cycle", "3"], &bad, "--cycle");
    refused_in_one_line("fge", &["--checkpoint", c, "--lr2", "0.1"], &bad, "--lr2");
    refused_in_one_line(
        "fge",
        &["--checkpoint", c, "--epochs", "1"],
        &bad,
        "--epochs",
    );
    common::train_digits(
        &d.join("adam"),
        "mlp:64-32-10",
        "1",
        &["--optimizer", "adam", "--lr", "1e-3"],
    );
    let adam = d.join("adam/checkpoint.safetensors");
    refused_in_one_line(
        "fge",
        &["--checkpoint", adam.to_str().unwrap()],
        &bad,
        "holds no sgd optimiser state",
    );
}
