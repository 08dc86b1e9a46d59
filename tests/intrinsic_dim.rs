//! Random-subspace training (Li et al. 2018): the chain rule `∂L/∂z = Pᵀ·∂L/∂θ` against central
//! differences of the loss in z, and `modeconn intrinsic-dim` end to end on the embedded digits.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{json, modeconn, refused_in_one_line};
use modeconn::arch::Arch;
use modeconn::backend;
use modeconn::data::{DataConfig, Source, load};
use modeconn::eval::cross_entropy;
use modeconn::params::ParamSet;
use modeconn::train::subspace::{Projection, ProjectionKind, Subspace, coordinates_layout};
use modeconn::train::{Classification, StepCtx, loss_and_grad};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn the_coordinates_gradient_is_the_projected_weight_gradient() {
    let device = backend::device();
    let ad = backend::train_device();
    let split = load(&DataConfig::new(Source::Digits)).unwrap();
    let arch: Arch = "mlp:64-8-10".parse().unwrap();
    let theta0 = arch.init(2, &device);
    let full = arch.layout().numel();
    for kind in [ProjectionKind::Dense, ProjectionKind::Sparse] {
        let d = 6;
        let proj = Projection::new(kind, full, d, 9).unwrap();
        let inner = Classification::new(arch.clone(), &split.test, device.clone());
        let mut obj = Subspace::new(&theta0, proj, inner).unwrap();
        let z0: Vec<f32> = (0..d).map(|j| 0.3 * (j as f32 - 2.5)).collect();
        let z = ParamSet::from_flat(coordinates_layout(d), &z0, &device).unwrap();
        let (xv, yv) = split.train.gather(&(0..50).collect::<Vec<_>>());
        let x = Tensor::<2>::from_data(TensorData::new(xv.clone(), [50, 64]), &ad);
        let y = Tensor::<1, Int>::from_data(TensorData::new(yv.clone(), [50]), &ad);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut ctx = StepCtx {
            epoch: 0,
            step: 0,
            rng: &mut rng,
            n_train: 50,
        };
        let (_, g, _) = loss_and_grad(&z, &mut obj, x, y, &mut ctx).unwrap();
        let g = g.to_flat();
        assert_eq!(g.len(), d);
        // The loss at z as a plain network's, in f64 around z by central differences.
        let loss_at = |zs: &[f32]| -> f64 {
            let p = ParamSet::from_flat(coordinates_layout(d), zs, &device).unwrap();
            let w = obj.network(&p);
            let x = Tensor::<2>::from_data(TensorData::new(xv.clone(), [50, 64]), &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(yv.clone(), [50]), &device);
            f64::from(cross_entropy(arch.forward(&w, x), y).into_scalar::<f32>())
        };
        let h = 1e-2f32;
        for j in 0..d {
            let (mut up, mut down) = (z0.clone(), z0.clone());
            up[j] += h;
            down[j] -= h;
            let fd = (loss_at(&up) - loss_at(&down)) / (2.0 * f64::from(h));
            let an = f64::from(g[j]);
            assert!(
                (fd - an).abs() < 2e-3 + 2e-2 * an.abs(),
                "{kind:?} z[{j}]: analytic {an} vs finite difference {fd}"
            );
        }
    }
}

#[test]
fn intrinsic_dim_sweeps_subspaces_on_digits() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("id");
    modeconn()
        .args(["intrinsic-dim", "--arch", "mlp:64-32-10", "--dims", "400,5"])
        .args(["--runs", "2", "--epochs", "30", "-q", "--out"])
        .arg(&out)
        .assert()
        .success();
    let v = json(&out.join("summary.json"));
    let means: Vec<(u64, f64)> = v["mean_acc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["d"].as_u64().unwrap(), m["mean"].as_f64().unwrap()))
        .collect();
    assert_eq!(means.iter().map(|m| m.0).collect::<Vec<_>>(), vec![5, 400]);
    // Five directions of a 2410-dimensional network barely train; 400 nearly reach the full
    // network; d_int90 follows the stated rule.
    assert!(means[0].1 < means[1].1 - 0.2, "{means:?}");
    let threshold = v["threshold"].as_f64().unwrap();
    assert!((threshold - 0.9 * v["baseline_acc"].as_f64().unwrap()).abs() < 1e-12);
    let want = means.iter().find(|m| m.1 >= threshold).map(|m| m.0);
    assert_eq!(v["d_int90"].as_u64(), want, "{v}");
    let csv = std::fs::read_to_string(out.join("intrinsic.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4);
    // A run's network is θ₀ + P·z as a plain model: `eval` gives the accuracy recorded.
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(
        csv.lines().next().unwrap().split(',').next_back(),
        Some("train_residual")
    );
    assert!(row[6].parse::<f64>().unwrap() > 0.0);
    let model = out.join(format!("d{}_r{}/model.safetensors", row[0], row[1]));
    let evald = tmp.path().join("eval.json");
    modeconn()
        .args(["eval", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&evald)
        .assert()
        .success();
    let e = json(&evald);
    let acc: f64 = row[3].parse().unwrap();
    assert!(
        (e["test_acc"].as_f64().unwrap() - acc).abs() < 1e-9,
        "{e} vs {acc}"
    );
    assert!(out.join("intrinsic.png").exists());

    let refused = |args: &[&str], needle: &str| {
        refused_in_one_line("intrinsic-dim", args, &tmp.path().join("bad"), needle)
    };
    refused(&["--dims", "0,10"], "--dims");
    refused(&["--dims", "ten"], "--dims");
    refused(&["--arch", "mlp:64-32-10", "--dims", "99999"], "exceeds");
    refused(
        &["--arch", "mlp:64-32-10:norm=bn", "--dims", "10"],
        "normalisation",
    );
    refused(
        &["--dims", "500", "--max-memory", "0.00001"],
        "--projection sparse",
    );
    refused(&["--runs", "0"], "--runs");
}

/// With `P = I` (d = D) the subspace is the whole space: the coordinates' gradient at `z` is the
/// plain network's gradient at `θ₀ + z` (bit for bit at z = 0), and ten plain SGD steps on z land
/// where ten on θ do.
#[test]
fn the_identity_subspace_is_plain_training() {
    let device = backend::device();
    let ad = backend::train_device();
    let split = load(&DataConfig::new(Source::Digits)).unwrap();
    let arch: Arch = "mlp:64-8-10".parse().unwrap();
    let theta0 = arch.init(4, &device);
    let full = arch.layout().numel();
    let mut sub = Subspace::new(
        &theta0,
        Projection::identity(full),
        Classification::new(arch.clone(), &split.test, device.clone()),
    )
    .unwrap();
    let mut plain = Classification::new(arch.clone(), &split.test, device.clone());
    let (xv, yv) = split.train.gather(&(0..40).collect::<Vec<_>>());
    let batch = || {
        (
            Tensor::<2>::from_data(TensorData::new(xv.clone(), [40, 64]), &ad),
            Tensor::<1, Int>::from_data(TensorData::new(yv.clone(), [40]), &ad),
        )
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut grad = |obj: &mut dyn modeconn::train::Objective, p: &ParamSet| {
        let mut ctx = StepCtx {
            epoch: 0,
            step: 0,
            rng: &mut rng,
            n_train: 40,
        };
        let (x, y) = batch();
        loss_and_grad(p, obj, x, y, &mut ctx).unwrap().1.to_flat()
    };
    let mut z = vec![0f32; full];
    let mut theta = theta0.to_flat();
    for step in 0..10 {
        let zp = ParamSet::from_flat(coordinates_layout(full), &z, &device).unwrap();
        let tp = ParamSet::from_flat(arch.layout(), &theta, &device).unwrap();
        let (gz, gt) = (grad(&mut sub, &zp), grad(&mut plain, &tp));
        if step == 0 {
            assert_eq!(gz, gt);
        }
        for ((zi, ti), (a, b)) in z.iter_mut().zip(theta.iter_mut()).zip(gz.iter().zip(&gt)) {
            *zi -= 0.5 * a;
            *ti -= 0.5 * b;
        }
    }
    let via_z = sub.network(&ParamSet::from_flat(coordinates_layout(full), &z, &device).unwrap());
    let moved: f32 = via_z
        .to_flat()
        .iter()
        .zip(theta0.to_flat())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let gap = via_z
        .to_flat()
        .iter()
        .zip(&theta)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(moved > 1e-2, "the steps moved the network by {moved}");
    assert!(gap < 1e-5, "θ₀ + z and θ differ by {gap}");
}
