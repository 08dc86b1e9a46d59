//! End to end on the embedded digits: two sparse-VD models, `connect` between them, `path` with
//! mode / one-sample / ensemble columns, `plot`; and the one-line errors of mixed or mismatched
//! endpoints.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn modeconn() -> Command {
    Command::cargo_bin("modeconn").unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn vtrain(dir: &Path, name: &str, method: &str, seed: &str) -> PathBuf {
    let out = dir.join(name);
    modeconn()
        .args([
            "vtrain", "--method", method, "--data", "digits", "--epochs", "8",
        ])
        .args(["--ensemble", "none", "--quiet", "--seed", seed, "--out"])
        .arg(&out)
        .assert()
        .success();
    out.join("variational.safetensors")
}

#[test]
fn sparse_vd_pair_connects_and_its_paths_report_mode_sample_and_ensemble() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        vtrain(dir.path(), "a", "sparse-vd", "1"),
        vtrain(dir.path(), "b", "sparse-vd", "2"),
    );
    let c = dir.path().join("c");
    modeconn()
        .args([
            "connect", "--data", "digits", "--epochs", "4", "--quiet", "--a",
        ])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--out")
        .arg(&c)
        .assert()
        .success();
    let run = read_json(&c.join("run.json"));
    assert_eq!(run["config"]["objective"], "elbo", "{run}");
    assert_eq!(run["config"]["method"], "sparse-vd");
    // vtrain's loop defaults: Adam.
    assert_eq!(run["config"]["optim"]["kind"], "adam", "{run}");
    let log = std::fs::read_to_string(c.join("metrics.jsonl")).unwrap();
    let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    for k in [
        "test_mode_acc_mid",
        "test_sample_acc_mid",
        "kl",
        "nll",
        "compression_mid",
    ] {
        assert!(last[k].is_number(), "metrics lack {k}: {last}");
    }

    let p = dir.path().join("p");
    modeconn()
        .args([
            "path",
            "--data",
            "digits",
            "--points",
            "5",
            "--ensemble",
            "3",
            "--a",
        ])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--curve")
        .arg(c.join("curve.safetensors"))
        .arg("--out")
        .arg(&p)
        .assert()
        .success()
        .stdout(predicates::str::contains("B_marg nll"));
    let rows = common::csv_rows(&p.join("path.csv"));
    assert_eq!(rows.len(), 10, "5 points on the line and on the curve");
    for k in [
        "test_mode_err",
        "test_sample_err",
        "test_ens3_err",
        "test_ens3_loss",
        "train_sample_loss",
        "kl",
        "compression",
        "dl",
    ] {
        assert!(rows[0].contains_key(k), "path.csv lacks {k}");
    }
    // The curve's ends are the models: its rows at t = 0 and 1 are the line's, every column
    // (the same parameters and the same noise) but the step length.
    let (line, curve): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r["path"] == "line");
    for (l, c) in [(line[0], curve[0]), (line[4], curve[4])] {
        for (k, v) in l.iter().filter(|(k, _)| *k != "path" && *k != "dl") {
            assert_eq!(v, &c[k], "column {k} at t = {}", l["t"]);
        }
    }
    // The line's ends are the models as vtrain evaluated them.
    let sa = read_json(&a.parent().unwrap().join("summary.json"));
    let mode_err: f64 = line[0]["test_mode_err"].parse().unwrap();
    assert!((mode_err - (1.0 - sa["mode_acc"].as_f64().unwrap())).abs() < 1e-12);
    let s = read_json(&p.join("summary.json"));
    for path in ["line", "curve"] {
        let b = s[path]["marginal_barrier_test"].as_f64().unwrap();
        assert!(b.is_finite(), "{path}: {s}");
        assert!(s[path]["test_ens3_err"]["max"].as_f64().unwrap() <= 1.0);
    }
    // The plane through a, the bend and b: the mode's train loss and test error, and one
    // sample's, at every cell.
    let pl = dir.path().join("plane");
    modeconn()
        .args(["plane", "--data", "digits", "--grid", "5", "--a"])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--curve")
        .arg(c.join("curve.safetensors"))
        .arg("--out")
        .arg(&pl)
        .assert()
        .success();
    let plane = read_json(&pl.join("plane.json"));
    for k in [
        "train_loss",
        "test_err",
        "train_sample_loss",
        "test_sample_err",
    ] {
        let g = plane[k]
            .as_array()
            .unwrap_or_else(|| panic!("plane lacks {k}"));
        assert_eq!(g.len(), 5);
        assert!(
            g.iter()
                .flat_map(|r| r.as_array().unwrap())
                .all(|v| v.as_f64().unwrap().is_finite())
        );
    }
    // An interrupted variational curve resumes to the same bytes.
    let r = dir.path().join("resumed");
    let connect = |extra: &[&str]| {
        modeconn()
            .args([
                "connect", "--data", "digits", "--epochs", "4", "--quiet", "--a",
            ])
            .arg(&a)
            .arg("--b")
            .arg(&b)
            .arg("--out")
            .arg(&r)
            .args(extra)
            .assert()
            .success();
    };
    connect(&["--stop-after", "2"]);
    connect(&["--resume"]);
    assert_eq!(
        std::fs::read(r.join("curve.safetensors")).unwrap(),
        std::fs::read(c.join("curve.safetensors")).unwrap(),
        "resume is exact"
    );
    let files = modeconn().arg("plot").arg(&p).assert().success();
    let out = String::from_utf8(files.get_output().stdout.clone()).unwrap();
    assert!(out.contains("path.png"), "{out}");
    assert!(p.join("path.svg").exists());
}

/// `probe` on a variational pair: every pair's line and chain with the mode's barriers and the
/// marginalised barrier; aligning w2 to w1 (weight matching on the means) lowers the line's.
#[test]
fn probe_runs_on_a_variational_pair_and_alignment_lowers_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        vtrain(dir.path(), "a", "sparse-vd", "1"),
        vtrain(dir.path(), "b", "sparse-vd", "2"),
    );
    let out = dir.path().join("probe");
    modeconn()
        .args([
            "probe", "--data", "digits", "--epochs", "2", "--points", "5", "-q",
        ])
        .arg("--a")
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicates::str::contains("B_marg nll"));
    let s = read_json(&out.join("summary.json"));
    for pair in ["w1-w2", "w1-pi_w1", "w1-pi_w2", "w1-align_w2"] {
        for path in ["line", "chain"] {
            let p = &s[pair][path];
            assert!(p["marginal_barrier_test"].is_number(), "{pair} {path}: {s}");
            assert!(
                p["test_mode_err"]["b_max"].is_number(),
                "{pair} {path}: {s}"
            );
        }
    }
    assert!(out.join("align_w2/variational.safetensors").exists());
    let b = |pair: &str| s[pair]["line"]["test_mode_loss"]["b_max"].as_f64().unwrap();
    assert!(b("w1-align_w2") < b("w1-w2"), "{s}");
}

/// Reads a safetensors file's tensors by name (f32, little-endian).
fn tensors(p: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, vals)
        })
        .collect()
}

/// `prune` keeps the mode's metrics (the pruned network is the mode) and writes its mask;
/// `connect --mask union|intersection|none` between two pruned networks keeps the bend inside
/// the union or the intersection, or lets it go anywhere.
#[test]
fn pruned_pair_connects_inside_and_outside_its_masks() {
    let dir = tempfile::tempdir().unwrap();
    let mut pruned = Vec::new();
    for (name, seed) in [("a", "1"), ("b", "2")] {
        let v = vtrain(dir.path(), name, "sparse-vd", seed);
        let out = dir.path().join(format!("pruned_{name}"));
        modeconn()
            .args(["prune", "--data", "digits", "--model"])
            .arg(&v)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let s = read_json(&out.join("summary.json"));
        let vs = read_json(&v.parent().unwrap().join("summary.json"));
        assert_eq!(
            s["test_acc"], vs["mode_acc"],
            "the pruned network is the mode"
        );
        assert_eq!(s["test_loss"], vs["mode_nll"]);
        assert_eq!(s["compression"], vs["compression"]);
        // Pruned weights are zero exactly where the mask is 0.
        let (w, m) = (
            tensors(&out.join("model.safetensors")),
            tensors(&out.join("mask.safetensors")),
        );
        let kept = m["fc1.weight"].iter().filter(|&&k| k == 1.0).count();
        assert!(
            kept > 0 && kept < m["fc1.weight"].len(),
            "fc1 partly pruned"
        );
        for (x, k) in w["fc1.weight"].iter().zip(&m["fc1.weight"]) {
            assert!(*k == 1.0 || *x == 0.0);
        }
        pruned.push(out);
    }
    let (ma, mb) = (
        tensors(&pruned[0].join("mask.safetensors")),
        tensors(&pruned[1].join("mask.safetensors")),
    );
    for mode in ["union", "intersection", "none"] {
        let out = dir.path().join(format!("c_{mode}"));
        modeconn()
            .args([
                "connect", "--data", "digits", "--epochs", "3", "-q", "--mask", mode,
            ])
            .arg("--a")
            .arg(pruned[0].join("model.safetensors"))
            .arg("--b")
            .arg(pruned[1].join("model.safetensors"))
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let c = tensors(&out.join("curve.safetensors"));
        let bend = &c["point1/fc1.weight"];
        let (mut inside, mut outside) = (0, 0);
        for (i, x) in bend.iter().enumerate() {
            let (a, b) = (ma["fc1.weight"][i] == 1.0, mb["fc1.weight"][i] == 1.0);
            let allowed = match mode {
                "union" => a || b,
                "intersection" => a && b,
                _ => true,
            };
            if allowed {
                inside += usize::from(*x != 0.0);
            } else {
                assert_eq!(*x, 0.0, "{mode}: bend entry {i} outside the mask");
                outside += 1;
            }
        }
        assert!(inside > 0, "{mode}: the bend is not empty");
        assert_eq!(
            outside > 0,
            mode != "none",
            "{mode}: some entries are masked out"
        );
        assert_eq!(read_json(&out.join("run.json"))["config"]["mask"], mode);
    }
    // A mask of another architecture beside an endpoint.
    let other = dir.path().join("other");
    let v3 = modeconn()
        .args([
            "vtrain",
            "--method",
            "sparse-vd",
            "--data",
            "digits",
            "--arch",
            "mlp:64-32-10",
        ])
        .args(["--epochs", "1", "--ensemble", "none", "-q", "--out"])
        .arg(&other)
        .assert();
    v3.success();
    modeconn()
        .args(["prune", "--data", "digits", "--model"])
        .arg(other.join("variational.safetensors"))
        .arg("--out")
        .arg(&other)
        .assert()
        .success();
    std::fs::copy(
        other.join("mask.safetensors"),
        pruned[1].join("mask.safetensors"),
    )
    .unwrap();
    let a = modeconn()
        .args(["connect", "--data", "digits", "--mask", "union", "--a"])
        .arg(pruned[0].join("model.safetensors"))
        .arg("--b")
        .arg(pruned[1].join("model.safetensors"))
        .arg("--out")
        .arg(dir.path().join("bad"))
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8(a.get_output().stderr.clone()).unwrap();
    assert!(
        err.trim().lines().count() == 1 && err.contains("mlp:64-32-10"),
        "{err}"
    );
    // A pair without masks beside it.
    let plain = dir.path().join("plain");
    modeconn()
        .args(["train", "--data", "digits", "--epochs", "1", "-q", "--out"])
        .arg(&plain)
        .assert()
        .success();
    let a = modeconn()
        .args(["connect", "--data", "digits", "--mask", "union", "--a"])
        .arg(plain.join("model.safetensors"))
        .arg("--b")
        .arg(plain.join("model.safetensors"))
        .arg("--out")
        .arg(dir.path().join("bad"))
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8(a.get_output().stderr.clone()).unwrap();
    assert!(
        err.contains("mask.safetensors") && err.contains("modeconn prune"),
        "{err}"
    );
    assert!(!dir.path().join("bad").exists());
}

#[test]
fn mixed_or_mismatched_endpoints_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let v = vtrain(dir.path(), "v", "sparse-vd", "1");
    let w = vtrain(dir.path(), "w", "variance", "2");
    let plain = dir.path().join("plain");
    modeconn()
        .args([
            "train", "--data", "digits", "--epochs", "1", "--quiet", "--out",
        ])
        .arg(&plain)
        .assert()
        .success();
    let plain = plain.join("model.safetensors");
    let fails = |args: &[&str], files: &[&Path], needle: &str| {
        let out = dir.path().join("bad");
        let mut cmd = modeconn();
        cmd.args(args);
        for (flag, f) in ["--a", "--b"].iter().zip(files) {
            cmd.arg(flag).arg(f);
        }
        let a = cmd.arg("--out").arg(&out).assert().failure().code(1);
        let err = String::from_utf8(a.get_output().stderr.clone()).unwrap();
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!out.exists(), "nothing written: {err}");
    };
    for cmd in ["connect", "path"] {
        fails(&[cmd, "--data", "digits"], &[&v, &plain], "--b");
        fails(&[cmd, "--data", "digits"], &[&v, &w], "variance");
    }
    fails(
        &["connect", "--data", "digits", "--wd", "1e-4"],
        &[&v, &v],
        "--wd",
    );
    fails(
        &["connect", "--data", "digits", "--train-samples", "4"],
        &[&plain, &plain],
        "--train-samples",
    );
    fails(
        &["connect", "--data", "digits", "--train-samples", "0"],
        &[&v, &v],
        "--train-samples",
    );
    // Several samples per step between variance networks: trained, and recorded.
    let k2 = dir.path().join("k2");
    modeconn()
        .args([
            "connect",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--train-samples",
            "2",
        ])
        .arg("--a")
        .arg(&w)
        .arg("--b")
        .arg(&w)
        .args(["-q", "--out"])
        .arg(&k2)
        .assert()
        .success();
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(k2.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["config"]["train_samples"], 2, "{run}");
    fails(
        &["path", "--data", "digits", "--ensemble", "0"],
        &[&v, &v],
        "--ensemble",
    );
    fails(
        &["path", "--data", "digits", "--repair"],
        &[&v, &v],
        "--repair",
    );
}

/// A variational model of a network with batch normalisation: the dense layers variational,
/// γ, β and the running statistics point estimates; train mode in training (the statistics
/// folded into the running ones), eval mode in evaluation; exact resume; permutations keep the
/// mode; curves and paths between two such models, every point's statistics recomputed.
#[test]
fn variational_models_with_batch_norm_train_resume_and_permute() {
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path, extra: &[&str]| {
        modeconn()
            .args(["vtrain", "--method", "sparse-vd", "--data", "digits"])
            .args([
                "--arch",
                "mlp:64-32-10:norm=bn",
                "--epochs",
                "6",
                "--ensemble",
                "none",
            ])
            .args(["--seed", "3", "-q", "--out"])
            .arg(out)
            .args(extra)
            .assert()
            .success();
    };
    let full = dir.path().join("full");
    run(&full, &[]);
    let s = read_json(&full.join("summary.json"));
    assert!(s["mode_acc"].as_f64().unwrap() > 0.8, "{s}");
    let t = tensors(&full.join("variational.safetensors"));
    assert!(
        t["mu/bn1.running_mean"].iter().any(|&v| v != 0.0),
        "statistics folded"
    );
    assert!(t["mu/bn1.running_var"].iter().any(|&v| v != 1.0));
    assert!(t.contains_key("log_sigma2/fc1.weight") && !t.contains_key("log_sigma2/bn1.weight"));
    let resumed = dir.path().join("resumed");
    run(&resumed, &["--stop-after", "3"]);
    run(&resumed, &["--resume"]);
    assert_eq!(
        std::fs::read(resumed.join("variational.safetensors")).unwrap(),
        std::fs::read(full.join("variational.safetensors")).unwrap(),
        "resume is exact"
    );
    let perm = dir.path().join("perm");
    modeconn()
        .args(["permute", "--seed", "4", "--model"])
        .arg(full.join("variational.safetensors"))
        .arg("--out")
        .arg(&perm)
        .assert()
        .success();
    let p = read_json(&perm.join("summary.json"));
    assert!(p["max_logit_diff"].as_f64().unwrap() < 1e-4, "{p}");
    // A curve between two such models, and the path with every point's statistics recomputed
    // (sampled weights, exact means over the training data): at t = 0 the line is the first
    // model within the EMA-vs-exact difference of its statistics.
    let other = dir.path().join("other");
    modeconn()
        .args(["vtrain", "--method", "sparse-vd", "--data", "digits"])
        .args([
            "--arch",
            "mlp:64-32-10:norm=bn",
            "--epochs",
            "6",
            "--ensemble",
            "none",
        ])
        .args(["--seed", "4", "-q", "--out"])
        .arg(&other)
        .assert()
        .success();
    let (va, vb) = (
        full.join("variational.safetensors"),
        other.join("variational.safetensors"),
    );
    let c = dir.path().join("c");
    modeconn()
        .args(["connect", "--data", "digits", "--epochs", "3", "-q", "--a"])
        .arg(&va)
        .arg("--b")
        .arg(&vb)
        .arg("--out")
        .arg(&c)
        .assert()
        .success();
    let p = dir.path().join("p");
    modeconn()
        .args([
            "path",
            "--data",
            "digits",
            "--points",
            "3",
            "--ensemble",
            "2",
            "--a",
        ])
        .arg(&va)
        .arg("--b")
        .arg(&vb)
        .arg("--curve")
        .arg(c.join("curve.safetensors"))
        .arg("--out")
        .arg(&p)
        .assert()
        .success();
    let sp = read_json(&p.join("summary.json"));
    let start = sp["line"]["test_mode_err"]["start"].as_f64().unwrap();
    let own = 1.0 - s["mode_acc"].as_f64().unwrap();
    assert!(
        (start - own).abs() <= 0.03,
        "path start {start} vs the model's {own}"
    );
    for path in ["line", "curve"] {
        let m = sp[path]["test_mode_err"]["max"].as_f64().unwrap();
        assert!(m.is_finite() && m <= 1.0, "{path}: {sp}");
    }
    let run = read_json(&p.join("run.json"));
    assert_eq!(run["result"]["state_recomputed"]["data"], "train", "{run}");
}
