//! Every figure kind renders from a small result fixture to non-empty PNG and SVG files of the
//! requested size; `plane` and `plot` work end to end on digits.

use std::path::Path;

use assert_cmd::Command;
use modeconn::plot::figures::{
    kl_figure, log_alpha_histograms, path_figure, plane_figures, vtrain_figure,
};

fn png_size(p: &Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[1..4], b"PNG", "{} is not a PNG", p.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

fn check(files: &[std::path::PathBuf], size: (u32, u32)) {
    assert!(files.len() >= 2);
    for f in files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len > 2000, "{} is nearly empty ({len} bytes)", f.display());
        match f.extension().and_then(|e| e.to_str()) {
            Some("png") => assert_eq!(png_size(f), size),
            Some("svg") => {
                let s = std::fs::read_to_string(f).unwrap();
                assert!(
                    s.contains(&format!("width=\"{}\"", size.0)),
                    "{}",
                    f.display()
                );
                assert!(s.contains("<text"), "no text in {}", f.display());
            }
            _ => panic!("unexpected file {}", f.display()),
        }
    }
}

#[test]
fn every_plot_kind_renders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("path,t,train_loss,train_err,test_loss,test_err,dl\n");
    for (name, bump) in [("line", 1.0), ("curve", 0.1)] {
        for i in 0..11 {
            let t = i as f64 / 10.0;
            let l = 0.1 + bump * (std::f64::consts::PI * t).sin();
            csv.push_str(&format!(
                "{name},{t},{l},{},{l},{},0.5\n",
                l / 10.0,
                l / 9.0
            ));
        }
    }
    std::fs::write(d.join("path.csv"), csv).unwrap();
    check(
        &path_figure(&d.join("path.csv"), d, None).unwrap(),
        (1350, 430),
    );

    let g = 5;
    let xs: Vec<f64> = (0..g).map(|i| i as f64).collect();
    let z: Vec<Vec<f64>> = (0..g)
        .map(|j| {
            (0..g)
                .map(|i| 0.05 + ((i + j) as f64).powi(2) / 10.0)
                .collect()
        })
        .collect();
    let plane = serde_json::json!({"x": xs, "y": xs, "train_loss": z, "test_err": z,
        "w1": [1.0, 1.0], "w2": [3.0, 1.0], "bend": [2.0, 3.0],
        "curve": [[1.0, 1.0], [2.0, 2.0], [3.0, 1.0]]});
    std::fs::write(d.join("plane.json"), plane.to_string()).unwrap();
    let files = plane_figures(&d.join("plane.json"), d, None).unwrap();
    check(&files[..2], (820, 640));
    check(&files[2..], (820, 640));

    check(&kl_figure(d, None).unwrap(), modeconn::plot::SIZE);

    let mut log = String::new();
    for e in 1..=4 {
        log.push_str(
            &serde_json::json!({"epoch": e, "test_mode_acc": 0.9, "test_sample_acc": 0.8,
            "test_ensemble_acc": {"10": 0.85}, "sparsity": {"fc1": 0.1 * e as f64},
            "log_alpha_mean": {"fc1": e as f64}})
            .to_string(),
        );
        log.push('\n');
    }
    std::fs::write(d.join("metrics.jsonl"), log).unwrap();
    check(
        &vtrain_figure(&d.join("metrics.jsonl"), d, None).unwrap(),
        (1400, 430),
    );
    let layers = vec![
        (
            "fc1".to_string(),
            (0..500).map(|i| (i % 17) as f32 - 8.0).collect(),
        ),
        ("fc2".to_string(), (0..50).map(|i| (i % 5) as f32).collect()),
    ];
    check(&log_alpha_histograms(&layers, d, None).unwrap(), (840, 400));

    // Bad input names the file.
    std::fs::write(d.join("bad.json"), "{\"x\": 1}").unwrap();
    let e = plane_figures(&d.join("bad.json"), d, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.json"), "{e}");
}

#[test]
fn plane_and_plot_on_digits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        Command::cargo_bin("modeconn")
            .unwrap()
            .args(args)
            .assert()
            .success();
    };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    for seed in ["1", "2"] {
        let out = s(&d.join(format!("m{seed}")));
        run(&[
            "train",
            "--arch",
            "mlp:64-32-10",
            "--epochs",
            "10",
            "-q",
            "--seed",
            seed,
            "--out",
            &out,
        ]);
    }
    let (a, b) = (
        s(&d.join("m1/model.safetensors")),
        s(&d.join("m2/model.safetensors")),
    );
    run(&[
        "connect",
        "--epochs",
        "5",
        "-q",
        "--a",
        &a,
        "--b",
        &b,
        "--out",
        &s(&d.join("c")),
    ]);
    let c = s(&d.join("c/curve.safetensors"));
    run(&[
        "plane",
        "--grid",
        "5",
        "--a",
        &a,
        "--b",
        &b,
        "--curve",
        &c,
        "--out",
        &s(&d.join("pl")),
    ]);
    let plane: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("pl/plane.json")).unwrap()).unwrap();
    assert_eq!(plane["train_loss"].as_array().unwrap().len(), 5);
    assert_eq!(plane["curve"].as_array().unwrap().len(), 61);
    // The endpoints project to (0, 0) and (‖w2 − w1‖, 0); the curve starts and ends there.
    let c0 = &plane["curve"][0];
    assert!(c0[0].as_f64().unwrap().abs() < 1e-3 && c0[1].as_f64().unwrap().abs() < 1e-3);
    let w2x = plane["w2"][0].as_f64().unwrap();
    assert!((plane["curve"][60][0].as_f64().unwrap() - w2x).abs() < 1e-3 * w2x);
    run(&["plot", &s(&d.join("pl"))]);
    assert!(d.join("pl/plane_train_loss.png").exists());
    assert!(d.join("pl/plane_test_err.svg").exists());
    // A requested size applies to every figure, PNG and SVG.
    run(&[
        "plot",
        &s(&d.join("pl")),
        "--size",
        "640x480",
        "--out",
        &s(&d.join("small")),
    ]);
    let small = [
        d.join("small/plane_train_loss.png"),
        d.join("small/plane_train_loss.svg"),
    ];
    check(&small, (640, 480));
    Command::cargo_bin("modeconn")
        .unwrap()
        .args(["plot", &s(&d.join("pl")), "--size", "64x48"])
        .assert()
        .failure()
        .code(1)
        .stderr(predicates::str::contains("--size `64x48`"));
    Command::cargo_bin("modeconn")
        .unwrap()
        .args(["plot", &s(&d.join("m1"))])
        .assert()
        .failure()
        .code(1)
        .stderr(predicates::str::contains("nothing to plot"));
}
