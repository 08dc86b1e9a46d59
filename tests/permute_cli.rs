//! End-to-end tests of `modeconn permute` and `modeconn align` on the embedded digits data.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn modeconn() -> Command {
    Command::cargo_bin("modeconn").unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Trains a small digits MLP and returns its model file.
fn train(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let out = dir.join(name);
    modeconn()
        .args(["train", "--arch", "mlp:64-32-32-10", "--epochs", "6", "-q"])
        .args(["--seed", &seed.to_string(), "--out"])
        .arg(&out)
        .assert()
        .success();
    out.join("model.safetensors")
}

fn eval(model: &Path) -> Value {
    let o = modeconn()
        .args(["eval", "--model"])
        .arg(model)
        .assert()
        .success();
    serde_json::from_slice(&o.get_output().stdout).unwrap()
}

fn run(args: &[&str], paths: &[(&str, &Path)]) -> Value {
    let mut c = modeconn();
    c.args(args);
    for (flag, p) in paths {
        c.arg(flag).arg(p);
    }
    let o = c.assert().success();
    serde_json::from_slice(&o.get_output().stdout).unwrap()
}

fn assert_same_metrics(a: &Value, b: &Value) {
    for k in ["train_loss", "train_acc", "test_loss", "test_acc"] {
        let (x, y) = (a[k].as_f64().unwrap(), b[k].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-6, "{k}: {x} vs {y}");
    }
}

#[test]
fn permute_preserves_the_function_and_align_undoes_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = train(dir.path(), "a", 1);
    let p = dir.path().join("p");
    let s = run(
        &["permute", "--seed", "3"],
        &[("--model", &a), ("--out", &p)],
    );
    assert!(s["max_logit_diff"].as_f64().unwrap() <= 1e-5, "{s}");
    assert!(s["units_moved"].as_u64().unwrap() > 50, "{s}");
    assert_eq!(s, read_json(&p.join("summary.json")));
    assert!(p.join("run.json").exists());
    let pm = p.join("model.safetensors");
    assert_ne!(std::fs::read(&pm).unwrap(), std::fs::read(&a).unwrap());
    assert_same_metrics(&eval(&a), &eval(&pm));

    let pj = read_json(&p.join("permutation.json"));
    assert_eq!(pj["arch"], "mlp:64-32-32-10");
    assert_eq!(pj["origin"]["seed"], 3);
    assert_eq!(pj["acts_on"]["fc2"][2], "fc3.weight:1");
    for name in ["fc1", "fc2"] {
        let mut m: Vec<u64> = pj["perms"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        m.sort_unstable();
        assert_eq!(m, (0..32).collect::<Vec<_>>());
    }

    // Weight matching of π(A) to A recovers π⁻¹: the aligned file is A, byte for byte.
    let al = dir.path().join("al");
    let s = run(
        &["align", "--method", "weights"],
        &[("--model", &pm), ("--to", &a), ("--out", &al)],
    );
    assert_eq!(s["converged"], true);
    assert_eq!(s["distance_after"].as_f64().unwrap(), 0.0);
    let ab = std::fs::read(&a).unwrap();
    assert_eq!(std::fs::read(al.join("model.safetensors")).unwrap(), ab);
    // The recovered permutation is the inverse of the random one.
    let inv = read_json(&al.join("permutation.json"));
    for name in ["fc1", "fc2"] {
        let fwd = pj["perms"][name].as_array().unwrap();
        let back = inv["perms"][name].as_array().unwrap();
        for (i, j) in fwd.iter().enumerate() {
            assert_eq!(back[j.as_u64().unwrap() as usize], i, "{name}");
        }
    }
    // Activation matching pairs every unit that fires with its perfectly correlated twin
    // (units dead on all the data have correlation 0 and may pair up arbitrarily).
    let act = dir.path().join("act");
    let s = run(
        &[
            "align",
            "--method",
            "activations",
            "--correlation",
            "pearson",
        ],
        &[("--model", &pm), ("--to", &a), ("--out", &act)],
    );
    for l in s["layers"].as_array().unwrap() {
        assert!(l["mean_after"].as_f64().unwrap() > 0.75, "{s}");
    }
    assert_same_metrics(&eval(&a), &eval(&act.join("model.safetensors")));
}

#[test]
fn align_two_seeds_is_deterministic_and_function_preserving() {
    let dir = tempfile::tempdir().unwrap();
    let a = train(dir.path(), "a", 1);
    let b = train(dir.path(), "b", 2);
    for method in ["weights", "activations"] {
        let (o1, o2) = (
            dir.path().join(format!("{method}1")),
            dir.path().join(format!("{method}2")),
        );
        let args = ["align", "--method", method, "--samples", "500"];
        let s = run(&args, &[("--model", &b), ("--to", &a), ("--out", &o1)]);
        run(&args, &[("--model", &b), ("--to", &a), ("--out", &o2)]);
        let unpathed = |d: &Path| {
            let mut v = read_json(&d.join("summary.json"));
            v.as_object_mut().unwrap().remove("aligned");
            v
        };
        assert_eq!(unpathed(&o1), unpathed(&o2), "{method}: summaries differ");
        for f in ["model.safetensors", "permutation.json"] {
            assert_eq!(
                std::fs::read(o1.join(f)).unwrap(),
                std::fs::read(o2.join(f)).unwrap(),
                "{method}: {f} differs between identical runs"
            );
        }
        let v = |k: &str| s[k].as_f64().unwrap();
        assert!(
            v("objective_after") > v("objective_before"),
            "{method}: {s}"
        );
        assert!(v("distance_after") < v("distance_before"), "{method}: {s}");
        assert!(v("max_logit_diff") <= 1e-5, "{method}: {s}");
        assert!(v("match_time_s") >= 0.0);
        assert_eq!(s["identity"], false);
        let written = read_json(&o1.join("summary.json"));
        assert_eq!(written["objective_after"], s["objective_after"]);
        assert!(
            written.get("match_time_s").is_none(),
            "summary.json must be deterministic"
        );
        if method == "weights" {
            let hist = s["objective_per_sweep"].as_array().unwrap();
            assert_eq!(hist.len() as u64, s["sweeps"].as_u64().unwrap() + 1);
            for w in hist.windows(2) {
                assert!(w[1].as_f64().unwrap() >= w[0].as_f64().unwrap() - 1e-9);
            }
        } else {
            assert_eq!(s["samples"], 500);
        }
        assert_same_metrics(&eval(&b), &eval(&o1.join("model.safetensors")));
    }
}

#[test]
fn lenet_checkpoints_permute_and_align_back() {
    // A LeNet-5 for 28×28 inputs, written by the library (digits are too small for LeNet-5).
    let dir = tempfile::tempdir().unwrap();
    let arch: modeconn::arch::Arch = "lenet5".parse().unwrap();
    let dev = modeconn::backend::device();
    let a = dir.path().join("lenet.safetensors");
    modeconn::network_file::save_model(&a, &arch, &arch.init(7, &dev)).unwrap();
    let p = dir.path().join("p");
    let s = run(
        &["permute", "--seed", "1"],
        &[("--model", &a), ("--out", &p)],
    );
    assert!(s["max_logit_diff"].as_f64().unwrap() <= 1e-5, "{s}");
    let al = dir.path().join("al");
    run(
        &["align", "--method", "weights"],
        &[
            ("--model", &p.join("model.safetensors")),
            ("--to", &a),
            ("--out", &al),
        ],
    );
    assert_eq!(
        std::fs::read(al.join("model.safetensors")).unwrap(),
        std::fs::read(&a).unwrap()
    );
}

fn fails_with(args: &[&str], needle: &str) {
    let a = modeconn().args(args).assert().failure().code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(err.contains(needle), "stderr `{err}` lacks `{needle}`");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
}

#[test]
fn bad_input_is_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = train(dir.path(), "a", 1);
    let other = dir.path().join("other");
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
    let (a, o) = (a.to_str().unwrap(), dir.path().join("o"));
    let o = o.to_str().unwrap();
    let other = other.join("model.safetensors");
    let other = other.to_str().unwrap();
    fn cat<'s>(base: &[&'s str], extra: &[&'s str]) -> Vec<&'s str> {
        base.iter().chain(extra).copied().collect()
    }
    let base = ["align", "--model", a, "--to", a, "--out", o];
    let align = |extra: &[&'static str]| cat(&base, extra);
    fails_with(&align(&["--method", "magic"]), "'magic' for '--method");
    fails_with(
        &align(&["--method", "activations", "--correlation", "spearman"]),
        "--correlation",
    );
    fails_with(
        &align(&["--method", "activations", "--samples", "0"]),
        "--samples",
    );
    fails_with(
        &align(&["--method", "weights", "--max-sweeps", "0"]),
        "--max-sweeps",
    );
    fails_with(
        &[
            "align", "--method", "weights", "--model", other, "--to", a, "--out", o,
        ],
        "must share one architecture",
    );
    fails_with(
        &["permute", "--model", "no-such.safetensors", "--out", o],
        "no-such.safetensors",
    );
    let mnist = dir.path().join("empty");
    std::fs::create_dir_all(&mnist).unwrap();
    let mnist = mnist.to_str().unwrap();
    fails_with(
        &cat(
            &base,
            &[
                "--method",
                "activations",
                "--data",
                "mnist",
                "--data-dir",
                mnist,
            ],
        ),
        "fetch-data.sh",
    );
}
