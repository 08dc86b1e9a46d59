//! Curves: endpoints reproduce the end networks, an untrained chain is the line, gradients reach
//! only the bends, and `connect` + `path` find a lower path than the line on digits.

use std::path::Path;

use assert_cmd::Command;
use burn::tensor::{Int, Tensor, TensorData};
use modeconn::arch::Arch;
use modeconn::backend;
use modeconn::curve::{Curve, CurveKind, CurveObjective};
use modeconn::data::{DataConfig, Pixels, Source, load};
use modeconn::eval::cross_entropy;
use modeconn::eval::path::{PathSpec, grid, profile};
use modeconn::eval::state::StateSample;
use modeconn::params::ParamSet;
use modeconn::train::{StepCtx, loss_and_grad};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

fn digits() -> modeconn::data::Split {
    load(&DataConfig {
        source: Source::Digits,
        dir: None,
        pixels: Pixels::Unit,
    })
    .unwrap()
}

fn logits(arch: &Arch, w: &ParamSet, x: &[f32], b: usize) -> Vec<f32> {
    let d = backend::device();
    let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [b, arch.input_dim()]), &d);
    arch.forward(w, xt).into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn curve_endpoints_give_the_end_networks_logits() {
    let device = backend::device();
    let split = digits();
    let (x, _) = split.test.gather(&(0..32).collect::<Vec<_>>());
    for spec in ["mlp:64-32-16-10", "lenet5:1x16x16"] {
        let arch: Arch = spec.parse().unwrap();
        let a = arch.init(1, &device);
        let b = arch.init(2, &device);
        let xin: Vec<f32> = if spec.starts_with("lenet") {
            (0..32 * 256)
                .map(|i| ((i * 7919) % 100) as f32 / 100.0)
                .collect()
        } else {
            x.clone()
        };
        for kind in [CurveKind::Polychain, CurveKind::Bezier] {
            for bends in [1, 3] {
                let mut c = Curve::init_linear(kind, bends, arch.clone(), &a, &b).unwrap();
                // Move the bends off the line, as training would.
                for j in 1..=bends {
                    c.points[j] = c.points[j].map(|t| t.clone() * 1.7 + 0.05);
                }
                for (t, end) in [(0.0, &a), (1.0, &b)] {
                    let (l1, l2) = (
                        logits(&arch, &c.point(t), &xin, 32),
                        logits(&arch, end, &xin, 32),
                    );
                    let err = l1
                        .iter()
                        .zip(&l2)
                        .map(|(p, q)| (p - q).abs())
                        .fold(0.0, f32::max);
                    assert!(err <= 1e-5, "{spec} {kind} bends={bends} t={t}: {err}");
                }
            }
        }
    }
}

#[test]
fn untrained_chain_is_the_straight_line() {
    let device = backend::device();
    let split = digits();
    let arch: Arch = "mlp:64-32-10".parse().unwrap();
    let a = arch.init(3, &device);
    let b = arch.init(4, &device);
    let c = Curve::init_linear(CurveKind::Polychain, 2, arch.clone(), &a, &b).unwrap();
    let ts = grid(13);
    let line = PathSpec {
        name: "line",
        kind: CurveKind::Polychain,
        points: vec![a.to_flat(), b.to_flat()],
        repair: None,
    };
    let chain = PathSpec {
        name: "curve",
        kind: c.kind,
        points: c.points.iter().map(|p| p.to_flat()).collect(),
        repair: None,
    };
    let train = split.train.subset(200);
    let r1 = profile(
        &arch,
        &arch.layout(),
        &line,
        &ts,
        (&train, Some(StateSample::ALL)),
        &split.test,
        &device,
    );
    let r2 = profile(
        &arch,
        &arch.layout(),
        &chain,
        &ts,
        (&train, Some(StateSample::ALL)),
        &split.test,
        &device,
    );
    for (p, q) in r1.iter().zip(&r2) {
        assert!((p.test_loss - q.test_loss).abs() < 1e-5, "t={}", p.t);
        assert!((p.train_loss - q.train_loss).abs() < 1e-5, "t={}", p.t);
        assert_eq!(p.test_err, q.test_err);
        assert!((p.dl - q.dl).abs() < 1e-3 * p.dl.max(1e-3));
    }
}

#[test]
fn gradients_reach_the_bends_only() {
    let device = backend::device();
    let ad = backend::train_device();
    let split = digits();
    let arch: Arch = "mlp:64-16-10".parse().unwrap();
    let a = arch.init(5, &device);
    let b = arch.init(6, &device);
    let curve = Curve::init_linear(CurveKind::Bezier, 2, arch.clone(), &a, &b).unwrap();
    let idx = curve.trainable(false);
    assert_eq!(idx, vec![1, 2]);
    let packed = curve.pack(&idx);
    let mut obj = CurveObjective::new(curve.clone(), idx, 1e-3, &split.test, device.clone());
    let (xv, yv) = split.train.gather(&(0..64).collect::<Vec<_>>());
    let x = Tensor::<2>::from_data(TensorData::new(xv, [64, 64]), &ad);
    let y = Tensor::<1, Int>::from_data(TensorData::new(yv, [64]), &ad);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut ctx = StepCtx {
        epoch: 0,
        step: 0,
        rng: &mut rng,
        n_train: 64,
    };
    let (loss, g, scalars) = loss_and_grad(&packed, &mut obj, x, y, &mut ctx).unwrap();
    assert!(loss.is_finite() && scalars[0].0 == "t");
    // The gradient is on the packed bends (points 1 and 2) only, every tensor of them non-zero;
    // the endpoints are not trained parameters at all.
    assert_eq!(g.layout(), packed.layout());
    assert!(
        g.layout()
            .entries()
            .iter()
            .all(|e| e.name.starts_with("point1/") || e.name.starts_with("point2/"))
    );
    for t in g.tensors() {
        let norm = t.clone().abs().sum().into_scalar::<f32>();
        assert!(norm > 0.0);
    }
}

fn modeconn() -> Command {
    Command::cargo_bin("modeconn").unwrap()
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn connect_and_path_on_digits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for s in ["1", "2"] {
        modeconn()
            .args(["train", "--arch", "mlp:64-128-10", "--epochs", "30", "-q"])
            .args(["--seed", s, "--out"])
            .arg(d.join(format!("m{s}")))
            .assert()
            .success();
    }
    let (a, b) = (
        d.join("m1/model.safetensors"),
        d.join("m2/model.safetensors"),
    );
    modeconn()
        .args(["connect", "--epochs", "20", "--seed", "0", "-q", "--a"])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--out")
        .arg(d.join("c"))
        .assert()
        .success();
    for f in ["curve.safetensors", "metrics.jsonl", "run.json"] {
        assert!(d.join("c").join(f).exists(), "{f}");
    }
    // Endpoints stay frozen: the curve's ends are the input networks, bit for bit.
    let dev = backend::device();
    let c = Curve::load(&d.join("c/curve.safetensors"), &dev).unwrap();
    let (_, pa) = modeconn::network_file::load_model(&a, &dev).unwrap();
    let (_, pb) = modeconn::network_file::load_model(&b, &dev).unwrap();
    assert_eq!(c.points[0].to_flat(), pa.to_flat());
    assert_eq!(c.points[2].to_flat(), pb.to_flat());
    assert_ne!(c.points[1].to_flat(), pa.lerp(&pb, 0.5).unwrap().to_flat());

    modeconn()
        .args(["path", "--points", "21", "--a"])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--curve")
        .arg(d.join("c/curve.safetensors"))
        .arg("--out")
        .arg(d.join("p"))
        .assert()
        .success();
    let s = json(&d.join("p/summary.json"));
    for path in ["line", "curve"] {
        assert!(s[path]["length"].as_f64().unwrap() > 0.0);
        for m in ["train_loss", "train_err", "test_loss", "test_err"] {
            for k in [
                "start", "end", "min", "max", "mean", "arc_mean", "b_max", "b_lin",
            ] {
                assert!(s[path][m][k].is_f64(), "{path}.{m}.{k}");
            }
        }
        let e = s[path]["test_err"]["max"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&e));
    }
    let line_max = s["line"]["test_loss"]["max"].as_f64().unwrap();
    let curve_max = s["curve"]["test_loss"]["max"].as_f64().unwrap();
    assert!(
        curve_max < line_max,
        "curve max loss {curve_max} vs line {line_max}"
    );
    let csv = std::fs::read_to_string(d.join("p/path.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 21);
    assert!(csv.starts_with("path,t,train_loss,train_err,test_loss,test_err,dl"));
}

/// The objective's gradient obeys the chain rule through `w(t) = Σ c_j(t) θ_j`: the gradient on
/// each trained control point is `c_j(t)·∇_w L(w(t))`, with `L = CE + ½·wd·‖w‖²`; frozen points are
/// not part of the trained set at all, and `--train-ends` adds exactly the two ends.
#[test]
fn bend_gradients_are_the_point_gradient_times_the_coefficient() {
    let device = backend::device();
    let ad = backend::train_device();
    let split = digits();
    let arch: Arch = "mlp:64-16-10".parse().unwrap();
    let (a, b) = (arch.init(7, &device), arch.init(8, &device));
    let wd = 1e-2;
    let (xv, yv) = split.train.gather(&(0..48).collect::<Vec<_>>());
    for kind in [CurveKind::Polychain, CurveKind::Bezier] {
        let mut curve = Curve::init_linear(kind, 2, arch.clone(), &a, &b).unwrap();
        // Off the line, as after training, so every coefficient matters.
        curve.points[1] = curve.points[1].map(|t| t.clone() * 1.3 - 0.02);
        curve.points[2] = curve.points[2].map(|t| t.clone() * 0.8 + 0.03);
        for train_ends in [false, true] {
            let idx = curve.trainable(train_ends);
            assert_eq!(
                idx,
                if train_ends {
                    vec![0, 1, 2, 3]
                } else {
                    vec![1, 2]
                }
            );
            let packed = curve.pack(&idx);
            let names: Vec<&str> = packed
                .layout()
                .entries()
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            assert_eq!(names.len(), idx.len() * arch.layout().len());
            assert_eq!(names[0], format!("point{}/fc1.weight", idx[0]));
            let mut obj =
                CurveObjective::new(curve.clone(), idx.clone(), wd, &split.test, device.clone());
            for seed in 0..3u64 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                // The objective draws t first from the step's stream.
                let t: f64 = rand::Rng::random(&mut rng.clone());
                let x = Tensor::<2>::from_data(TensorData::new(xv.clone(), [48, 64]), &ad);
                let y = Tensor::<1, Int>::from_data(TensorData::new(yv.clone(), [48]), &ad);
                let mut ctx = StepCtx {
                    epoch: 0,
                    step: 0,
                    rng: &mut rng,
                    n_train: 48,
                };
                let (loss, g, _) =
                    loss_and_grad(&packed, &mut obj, x.clone(), y.clone(), &mut ctx).unwrap();

                // Reference: the loss as a function of the point w(t) itself.
                let w = curve.point(t).to_device(&ad).leaves();
                let ref_loss =
                    cross_entropy(arch.forward(&w, x), y) + w.sq_norm_tensor() * (0.5 * wd) as f32;
                // The loss value includes the decay term.
                let ref_value = ref_loss.clone().into_scalar::<f32>() as f64;
                assert!(
                    (loss - ref_value).abs() <= 1e-5 * ref_value.abs(),
                    "{loss} vs {ref_value}"
                );
                let ref_grads = ref_loss.backward();
                let gw: Vec<Vec<f32>> = w
                    .tensors()
                    .iter()
                    .map(|t| {
                        t.grad(&ref_grads)
                            .unwrap()
                            .into_data()
                            .try_to_vec::<f32>()
                            .unwrap()
                    })
                    .collect();
                let c = kind.coeffs(curve.len(), t);
                let per_point = arch.layout().len();
                for (k, &j) in idx.iter().enumerate() {
                    for (i, gwi) in gw.iter().enumerate() {
                        let g: Vec<f32> = g.tensors()[k * per_point + i]
                            .clone()
                            .into_data()
                            .try_to_vec::<f32>()
                            .unwrap();
                        let scale = gwi.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                        for (gv, rv) in g.iter().zip(gwi) {
                            let expect = c[j] as f32 * rv;
                            assert!(
                                (gv - expect).abs() <= 1e-4 * scale,
                                "{kind} ends={train_ends} t={t:.3} point {j} tensor {i}: {gv} vs {expect}"
                            );
                        }
                    }
                }
            }
        }
    }
}
