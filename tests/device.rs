//! The device subset: commands on the device named by `MODECONN_TEST_DEVICE` (`wgpu` or
//! `cuda`, in a build with that feature; `scripts/gpu-check.sh` sets it) against the same
//! commands on the CPU. There the host kernels are bypassed and burn's tensor ops compute every
//! layer, so results agree to rounding, not bit for bit. Without the variable the tests say so
//! and return: the CPU path is what every other test covers.

mod common;

use std::path::{Path, PathBuf};

use common::{json, modeconn};

/// The device under test, or `None` (with a note) when none is named.
fn device_under_test() -> Option<String> {
    match std::env::var("MODECONN_TEST_DEVICE") {
        Ok(d) if d != "cpu" => Some(d),
        _ => {
            eprintln!("MODECONN_TEST_DEVICE names no GPU: the device subset is not run");
            None
        }
    }
}

/// A sparse-VD model trained on the digits into `out` on `device`: its variational file.
fn sparse_vd(out: &Path, arch: &str, epochs: &str, seed: &str, device: &str) -> PathBuf {
    modeconn()
        .args([
            "vtrain",
            "--method",
            "sparse-vd",
            "--arch",
            arch,
            "--epochs",
            epochs,
        ])
        .args(["-q", "--seed", seed, "--device", device, "--out"])
        .arg(out)
        .assert()
        .success();
    out.join("variational.safetensors")
}

/// Asserts `|cpu − dev| < bound` for the value `what`.
fn agree(what: &str, device: &str, cpu: f64, dev: f64, bound: f64) {
    assert!(
        (cpu - dev).abs() < bound,
        "{what}: cpu {cpu}, {device} {dev}"
    );
}

fn metrics(dir: &Path) -> serde_json::Value {
    json(&dir.join("metrics.json"))
}

#[test]
fn training_on_the_device_matches_the_cpu() {
    let Some(device) = device_under_test() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (arch, epochs) in [("mlp:64-64-10", "8"), ("mlp:64-32-32-10:norm=bn", "8")] {
        let run = |dev: &str| {
            let out = dir.path().join(format!("{}-{dev}", arch.replace(':', "_")));
            modeconn()
                .args([
                    "train", "--arch", arch, "--epochs", epochs, "--seed", "3", "-q",
                ])
                .args(["--device", dev, "--out"])
                .arg(&out)
                .assert()
                .success();
            metrics(&out)
        };
        let (cpu, gpu) = (run("cpu"), run(&device));
        let (a, b) = (
            cpu["test_acc"].as_f64().unwrap(),
            gpu["test_acc"].as_f64().unwrap(),
        );
        assert!(b > 0.85, "{arch} on {device}: test accuracy {b}");
        agree(arch, &device, a, b, 0.03);
    }
}

#[test]
fn evaluation_on_the_device_matches_the_cpu() {
    let Some(device) = device_under_test() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = common::train_digits(dir.path(), "mlp:64-64-10", "5", &[]);
    let eval = |dev: &str| {
        let a = modeconn()
            .args(["eval", "--device", dev, "--model"])
            .arg(&model)
            .assert()
            .success();
        serde_json::from_slice::<serde_json::Value>(&a.get_output().stdout).unwrap()
    };
    let (cpu, gpu) = (eval("cpu"), eval(&device));
    for k in ["train_loss", "test_loss"] {
        let (a, b) = (cpu[k].as_f64().unwrap(), gpu[k].as_f64().unwrap());
        agree(k, &device, a, b, 1e-4 * a.max(1.0));
    }
}

#[test]
fn a_variational_model_trains_on_the_device() {
    let Some(device) = device_under_test() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vd");
    sparse_vd(&out, "mlp:64-64-10", "5", "1", &device);
    let s = json(&out.join("summary.json"));
    let acc = s["mode_acc"].as_f64().unwrap();
    assert!(acc > 0.8, "sparse VD on {device}: {s}");
}

/// A curve between two digits MLPs fitted on the device (its points formed and its bend
/// updated in tensor ops) is as good as the CPU's: the chain's worst test loss is below the
/// line's on both, and the midpoints' losses agree.
#[test]
fn a_curve_fitted_on_the_device_matches_the_cpu() {
    let Some(device) = device_under_test() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let models: Vec<_> = ["1", "2"]
        .iter()
        .map(|s| {
            let out = dir.path().join(format!("w{s}"));
            common::train_digits(&out, "mlp:64-32-10", "20", &["--seed", s])
        })
        .collect();
    let run = |dev: &str| {
        let out = dir.path().join(format!("chain-{dev}"));
        modeconn()
            .args([
                "connect", "--epochs", "20", "--wd", "5e-4", "-q", "--device", dev,
            ])
            .arg("--a")
            .arg(&models[0])
            .arg("--b")
            .arg(&models[1])
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let path = dir.path().join(format!("path-{dev}"));
        modeconn()
            .args(["path", "--points", "5", "--device", dev, "--a"])
            .arg(&models[0])
            .arg("--b")
            .arg(&models[1])
            .arg("--curve")
            .arg(format!("chain={}", out.join("curve.safetensors").display()))
            .arg("--out")
            .arg(&path)
            .assert()
            .success();
        json(&path.join("summary.json"))
    };
    let (cpu, gpu) = (run("cpu"), run(&device));
    common::assert_chain_below_line(&gpu);
    let max = |s: &serde_json::Value| s["chain"]["test_loss"]["max"].as_f64().unwrap();
    let (a, b) = (max(&cpu), max(&gpu));
    agree("chain's worst test loss", &device, a, b, 0.1 * a.max(0.1));
}

/// A curve between two sparse-VD models fitted on the device (the per-weight terms as tensor
/// expressions there) is as good as the CPU's: the midpoint's mode accuracy agrees.
#[test]
fn a_variational_curve_fitted_on_the_device_matches_the_cpu() {
    let Some(device) = device_under_test() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let models: Vec<_> = ["1", "2"]
        .iter()
        .map(|s| {
            sparse_vd(
                &dir.path().join(format!("vd{s}")),
                "mlp:64-32-10",
                "10",
                s,
                "cpu",
            )
        })
        .collect();
    let run = |dev: &str| {
        let out = dir.path().join(format!("vchain-{dev}"));
        modeconn()
            .args(["connect", "--epochs", "10", "-q", "--device", dev, "--a"])
            .arg(&models[0])
            .arg("--b")
            .arg(&models[1])
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let rows = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let last: serde_json::Value =
            serde_json::from_str(rows.lines().last().expect("a row per epoch")).unwrap();
        last["test_mode_acc_mid"].as_f64().unwrap()
    };
    let (cpu, gpu) = (run("cpu"), run(&device));
    assert!(gpu > 0.8, "the midpoint on {device}: accuracy {gpu}");
    agree("midpoint accuracy", &device, cpu, gpu, 0.05);
}

#[test]
fn devices_not_compiled_in_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cpu");
    modeconn()
        .args([
            "train",
            "--arch",
            "mlp:64-16-10",
            "--epochs",
            "1",
            "-q",
            "--device",
            "cpu",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    assert!(out.join("model.safetensors").exists());
    // The GPU devices this build lacks.
    let missing = [
        ("wgpu", !cfg!(feature = "wgpu")),
        ("cuda", !cfg!(feature = "cuda")),
    ];
    for dev in missing.iter().filter(|(_, m)| *m).map(|(d, _)| *d) {
        let out = dir.path().join(dev);
        let args = ["--epochs", "1", "--device", dev];
        let err = common::refused_in_one_line("train", &args, &out, "--device");
        assert!(err.contains(dev), "{err}");
    }
}
