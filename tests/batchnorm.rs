//! Batch normalisation and state: PyTorch's semantics against hand-computed statistics, the
//! state's life (checkpoints, exact resume, untouched by the optimiser, permuted with its
//! channels, recomputed at new points), and `connect` / `path` on an MLP-BN.

use burn::tensor::{Tensor, TensorData};
use modeconn::arch::Arch;
use modeconn::backend;
use modeconn::data::{DataConfig, Source, load};
use modeconn::eval::state::{StateSample, recompute};
use modeconn::eval::{EVAL_BATCH, evaluate};
use modeconn::network_file::load_model;
use modeconn::params::{ParamSet, host_vec};
use modeconn::permute::{Permutation, apply};
use modeconn::weights::Weights;
use modeconn::weights::norm::{BN_EPS, TrainMode, fold_stats};

mod common;
use common::{json, modeconn, perturbed};

const ARCH: &str = "mlp:64-32-32-10:norm=bn";

#[test]
fn batch_norm_matches_hand_computed_statistics() {
    let dev = backend::device();
    let arch: Arch = "mlp:3-2-2:norm=bn".parse().unwrap();
    let p = perturbed(&arch, 1);
    // x: 4 samples × 2 channels.
    let xs = [1.0f32, -2.0, 3.0, 0.5, -1.0, 4.0, 2.0, 1.5];
    let x = Tensor::<2>::from_data(TensorData::new(xs.to_vec(), [4, 2]), &dev);
    let v = p.to_vecs();
    let at = |name: &str| v[p.layout().index_of(name).unwrap()].clone();
    let (gamma, beta) = (at("bn1.weight"), at("bn1.bias"));
    let (rm, rv) = (at("bn1.running_mean"), at("bn1.running_var"));
    let train = TrainMode::new(&p);
    let yt = host_vec(&train.batch_norm("bn1", x.clone()));
    let ye = host_vec(&p.batch_norm("bn1", x));
    let stats = train.into_stats();
    for c in 0..2 {
        let col: Vec<f64> = (0..4).map(|r| xs[r * 2 + c] as f64).collect();
        let mean = col.iter().sum::<f64>() / 4.0;
        let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0;
        assert!((stats[0].mean[c] as f64 - mean).abs() < 1e-6);
        assert!((stats[0].var[c] as f64 - var).abs() < 1e-5);
        assert!((stats[0].unbiased_var()[c] as f64 - var * 4.0 / 3.0).abs() < 1e-5);
        for r in 0..4 {
            let want_t =
                gamma[c] as f64 * (col[r] - mean) / (var + BN_EPS as f64).sqrt() + beta[c] as f64;
            let want_e = gamma[c] as f64 * (col[r] - rm[c] as f64)
                / (rv[c] as f64 + BN_EPS as f64).sqrt()
                + beta[c] as f64;
            assert!((yt[r * 2 + c] as f64 - want_t).abs() < 1e-5, "train mode");
            assert!((ye[r * 2 + c] as f64 - want_e).abs() < 1e-5, "eval mode");
        }
    }
    // Folding with momentum m: r ← (1 − m)·r + m·s (the unbiased variance).
    let f = fold_stats(&p, &stats, 0.1);
    let fv = f.to_vecs();
    let i = p.layout().index_of("bn1.running_var").unwrap();
    for c in 0..2 {
        let want = 0.9 * rv[c] + 0.1 * stats[0].unbiased_var()[c];
        assert!((fv[i][c] - want).abs() < 1e-6);
    }
}

#[test]
fn permuting_an_mlp_bn_keeps_eval_logits_and_matching_recovers_it() {
    let arch: Arch = ARCH.parse().unwrap();
    let spec = arch.perm_spec();
    let p = perturbed(&arch, 3);
    let x = common::inputs(&arch, 5);
    let perm = Permutation::random(&spec, 11);
    let q = apply(&spec, &perm, &p).unwrap();
    let (a, b) = (
        host_vec(&arch.forward(&p, x.clone())),
        host_vec(&arch.forward(&q, x)),
    );
    let worst = common::max_abs_diff(&a, &b);
    assert!(worst <= 1e-5, "logits moved by {worst}");
    let m = modeconn::permute::weight_matching(&spec, &p, &q, &Default::default()).unwrap();
    let back = apply(&spec, &m.perm, &q).unwrap();
    assert_eq!(
        back.to_vecs(),
        p.to_vecs(),
        "weight matching did not undo the permutation"
    );
}

#[test]
fn training_tracks_state_resumes_exactly_and_recompute_reproduces_the_endpoint() {
    let d = tempfile::tempdir().unwrap();
    let train = |out: &str, extra: &[&str]| {
        modeconn()
            .args([
                "train", "--arch", ARCH, "--epochs", "6", "--seed", "3", "-q", "--out",
            ])
            .arg(d.path().join(out))
            .args(extra)
            .assert()
            .success();
    };
    train("full", &[]);
    train("part", &["--stop-after", "2"]);
    train("part", &["--resume"]);
    let bytes = |dir: &str| std::fs::read(d.path().join(dir).join("model.safetensors")).unwrap();
    assert_eq!(
        bytes("full"),
        bytes("part"),
        "resume of a BN net is not exact"
    );
    let m = json(&d.path().join("full/metrics.json"));
    assert!(m["test_acc"].as_f64().unwrap() > 0.85, "{m}");

    // The running statistics were trained (moved from 0 and 1) and survive the file.
    let dev = backend::device();
    let (arch, p) = load_model(&d.path().join("full/model.safetensors"), &dev).unwrap();
    let v = p.to_vecs();
    let rm = &v[p.layout().index_of("bn1.running_mean").unwrap()];
    let rv = &v[p.layout().index_of("bn1.running_var").unwrap()];
    assert!(rm.iter().any(|&x| x.abs() > 1e-3) && rv.iter().any(|&x| (x - 1.0).abs() > 1e-3));

    // Recomputing the state on the training data reproduces the endpoint's evaluation within
    // the difference between the running average (momentum 0.1) and the exact mean.
    let split = load(&DataConfig::new(Source::Digits)).unwrap();
    let r = recompute(&arch, &p, &split.train, &StateSample::ALL, &dev);
    let (e0, e1) = (
        evaluate(&arch, &p, &split.test, EVAL_BATCH, &dev),
        evaluate(&arch, &r, &split.test, EVAL_BATCH, &dev),
    );
    assert!((e0.acc - e1.acc).abs() <= 0.02, "{e0:?} vs {e1:?}");
    assert!((e0.loss - e1.loss).abs() <= 0.05, "{e0:?} vs {e1:?}");
    // Recomputed from a reset: a network whose state was wrecked gets the same state back.
    let wrecked = {
        let mut v = p.to_vecs();
        let i = p.layout().index_of("bn2.running_var").unwrap();
        v[i].iter_mut().for_each(|x| *x = 100.0);
        ParamSet::from_vecs(p.layout().clone(), v, &dev).unwrap()
    };
    let r2 = recompute(&arch, &wrecked, &split.train, &StateSample::ALL, &dev);
    assert_eq!(r2.to_vecs(), r.to_vecs());
}

#[test]
fn a_curve_between_mlp_bns_beats_the_line() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, s) = common::two_minima_and_chain(
        d.path(),
        &["--arch", ARCH, "--epochs", "10"],
        &["--epochs", "10"],
        &["--points", "11"],
    );
    common::assert_chain_below_line(&s);
    let run = json(&d.path().join("path/run.json"));
    let rec = &run["result"]["state_recomputed"];
    assert_eq!(
        rec["batches"], 11,
        "1,348 digits training samples in batches of 128: {rec}"
    );
    // --bn-batches bounds the recomputation, and is recorded; 0 is a one-line error.
    modeconn()
        .args(["path", "--points", "3", "--bn-batches", "2", "--a"])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--out")
        .arg(d.path().join("path2"))
        .assert()
        .success();
    let rec = json(&d.path().join("path2/run.json"))["result"]["state_recomputed"].clone();
    assert_eq!(
        (rec["batches"].clone(), rec["samples"].clone()),
        (2.into(), 256.into())
    );
    assert_eq!(
        (rec["subset"].as_str(), rec["seed"].as_u64()),
        (Some("seeded"), Some(0))
    );
    // Another --bn-seed draws other samples: other statistics at the midpoint.
    modeconn()
        .args([
            "path",
            "--points",
            "3",
            "--bn-batches",
            "2",
            "--bn-seed",
            "5",
            "--a",
        ])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--out")
        .arg(d.path().join("path2b"))
        .assert()
        .success();
    let rec = json(&d.path().join("path2b/run.json"))["result"]["state_recomputed"].clone();
    assert_eq!(rec["seed"].as_u64(), Some(5));
    let mid = |dir: &str| {
        let csv = std::fs::read_to_string(d.path().join(dir).join("path.csv")).unwrap();
        csv.lines().nth(2).unwrap().to_string()
    };
    assert_ne!(mid("path2"), mid("path2b"), "the seed picks the samples");
    let out = modeconn()
        .args(["path", "--bn-batches", "0", "--a"])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--out")
        .arg(d.path().join("path3"))
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("--bn-batches") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    assert!(
        !d.path().join("path3").exists(),
        "nothing written on bad input"
    );
    // Without the reset the state is interpolated: t = 0 is w1 exactly as trained.
    modeconn()
        .args(["path", "--points", "3", "--no-bn-reset", "--a"])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--out")
        .arg(d.path().join("path4"))
        .assert()
        .success();
    let s4 = json(&d.path().join("path4/summary.json"));
    let m1 = json(&d.path().join("w1/metrics.json"));
    assert!(
        (s4["line"]["test_err"]["start"].as_f64().unwrap() - m1["test_err"].as_f64().unwrap())
            .abs()
            < 1e-12
    );
    assert!(
        (s4["line"]["test_loss"]["start"].as_f64().unwrap() - m1["test_loss"].as_f64().unwrap())
            .abs()
            < 1e-9
    );
    assert_eq!(
        json(&d.path().join("path4/run.json"))["result"]["state_recomputed"],
        false
    );
    // The endpoints are evaluated with recomputed state: close to their own evaluations.
    let m1 = json(&d.path().join("w1/metrics.json"));
    let start = s["line"]["test_err"]["start"].as_f64().unwrap();
    let own = m1["test_err"].as_f64().unwrap();
    assert!(
        (start - own).abs() <= 0.02,
        "path start {start} vs endpoint {own}"
    );
}

#[test]
fn a_bn_checkpoint_without_its_running_statistics_is_a_one_line_error() {
    use std::sync::Arc;

    use modeconn::params::Layout;
    use modeconn::params::io::{FileMeta, save};

    let d = tempfile::tempdir().unwrap();
    let arch: Arch = ARCH.parse().unwrap();
    let p = arch.init(0, &backend::device());
    let kept: Vec<usize> = (0..p.layout().len())
        .filter(|&i| !p.layout().entries()[i].role.is_state())
        .collect();
    let layout = Arc::new(
        Layout::new(
            kept.iter()
                .map(|&i| p.layout().entries()[i].clone())
                .collect(),
        )
        .unwrap(),
    );
    let values = p.to_vecs();
    let stripped = ParamSet::from_vecs(
        layout,
        kept.iter().map(|&i| values[i].clone()).collect(),
        &backend::device(),
    )
    .unwrap();
    let file = d.path().join("no-stats.safetensors");
    save(&file, &FileMeta::new("model", ARCH), &[("", &stripped)]).unwrap();
    let out = modeconn()
        .args(["eval", "--model"])
        .arg(&file)
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("no-stats.safetensors") && err.contains("bn1.running_mean"),
        "{err}"
    );
}

#[test]
fn fusing_batch_norm_into_the_layer_before_keeps_eval_logits() {
    use modeconn::weights::norm::fuse;

    let dev = backend::device();
    for spec in [ARCH, "vgg11:w=0.0625:in=1x8x8"] {
        let arch: Arch = spec.parse().unwrap();
        let p = perturbed(&arch, 9);
        let (plain, q) = fuse(&arch, &p).unwrap();
        assert!(!plain.layout().has_state(), "{plain}");
        let x = common::inputs(&arch, 4);
        let a = host_vec(&arch.forward(&p, x.clone()));
        let b = host_vec(&plain.forward(&q, x));
        let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let worst = common::max_abs_diff(&a, &b);
        assert!(
            worst <= 1e-4 * scale,
            "{spec}: fused logits moved by {worst}"
        );
    }
    assert!(
        fuse(
            &"resnet20".parse().unwrap(),
            &"resnet20".parse::<Arch>().unwrap().init(0, &dev)
        )
        .is_none()
    );
}

#[test]
fn layer_normalisation_learns_without_state() {
    let d = tempfile::tempdir().unwrap();
    let spec = "mlp:64-64-64-10:norm=ln";
    modeconn()
        .args(["train", "--arch", spec, "--epochs", "10", "-q", "--out"])
        .arg(d.path().join("ln"))
        .assert()
        .success();
    let m = json(&d.path().join("ln/metrics.json"));
    assert!(m["test_acc"].as_f64().unwrap() > 0.9, "{m}");
    let (arch, p) = load_model(&d.path().join("ln/model.safetensors"), &backend::device()).unwrap();
    assert_eq!(arch.to_string(), spec);
    assert!(!p.layout().has_state());
    assert!(p.layout().index_of("ln1.weight").is_ok() && p.layout().index_of("fc1.bias").is_err());
    let e = "vgg11:norm=ln".parse::<Arch>().unwrap_err().to_string();
    assert!(e.contains("norm=ln"), "{e}");
}
