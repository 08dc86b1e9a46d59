//! Autodiff gradients of the MLP, MLP-BN (batch normalisation in train mode) and LeNet-5 losses
//! against central finite differences.

use burn::tensor::{Int, Tensor, TensorData};
use modeconn::arch::Arch;
use modeconn::backend;
use modeconn::eval::cross_entropy;
use modeconn::params::ParamSet;
use modeconn::weights::norm::TrainMode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Logits in train mode (batch statistics) for a network with normalisation layers.
fn logits(arch: &Arch, p: &ParamSet, x: Tensor<2>) -> Tensor<2> {
    if p.layout().has_state() {
        arch.forward(&TrainMode::new(p), x)
    } else {
        arch.forward(p, x)
    }
}

fn loss_value(arch: &Arch, p: &ParamSet, x: &[f32], y: &[i64]) -> f64 {
    let device = backend::device();
    let b = y.len();
    let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [b, arch.input_dim()]), &device);
    let yt = Tensor::<1, Int>::from_data(TensorData::new(y.to_vec(), [b]), &device);
    cross_entropy(logits(arch, p, xt), yt).into_scalar::<f32>() as f64
}

fn check(arch: &str, batch: usize, coords_per_tensor: usize, seed: u64) {
    let arch: Arch = arch.parse().unwrap();
    let device = backend::device();
    let ad = backend::train_device();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = arch.init(seed, &device);
    let x: Vec<f32> = (0..batch * arch.input_dim())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let y: Vec<i64> = (0..batch)
        .map(|_| rng.random_range(0..arch.classes() as i64))
        .collect();

    // Analytic gradient.
    let leaves = params.to_device(&ad).leaves();
    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [batch, arch.input_dim()]), &ad);
    let yt = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [batch]), &ad);
    let loss = cross_entropy(logits(&arch, &leaves, xt), yt);
    let grads = loss.backward();
    let g: Vec<Vec<f32>> = leaves
        .tensors()
        .iter()
        .map(|t| match t.grad(&grads) {
            Some(g) => g.into_data().try_into_vec::<f32>().unwrap(),
            // State (running statistics) takes no part in a train-mode loss.
            None => vec![0.0; t.dims()[0]],
        })
        .collect();

    // Central differences on a random subset of coordinates of every tensor.
    let base = params.to_vecs();
    let h = 1e-3f32; // small enough to rarely straddle a ReLU kink, large for f32 noise
    let mut worst = 0.0f64;
    let (mut dot, mut nf, mut na) = (0.0f64, 0.0f64, 0.0f64);
    let (mut kinks, mut checked) = (0usize, 0usize);
    for (ti, vals) in base.iter().enumerate() {
        for _ in 0..coords_per_tensor.min(vals.len()) {
            let j = rng.random_range(0..vals.len());
            let eval_at = |delta: f32| {
                let mut v = base.clone();
                v[ti][j] += delta;
                let p = ParamSet::from_vecs(params.layout().clone(), v, &device).unwrap();
                loss_value(&arch, &p, &x, &y)
            };
            let (up, mid, down) = (eval_at(h), eval_at(0.0), eval_at(-h));
            let (fwd, bwd) = ((up - mid) / h as f64, (mid - down) / h as f64);
            // A ReLU kink within ±h makes the one-sided slopes disagree: no derivative to
            // compare there (batch-normalised pre-activations sit near 0 more often).
            if (fwd - bwd).abs() > 1e-3 + 0.2 * fwd.abs().max(bwd.abs()) {
                kinks += 1;
                continue;
            }
            checked += 1;
            let fd = (up - down) / (2.0 * h as f64);
            let an = g[ti][j] as f64;
            // f32 losses: allow ~5e-4 of rounding noise plus 5% relative error per coordinate; the
            // cosine over all checked coordinates below is the sharp test.
            let err = (fd - an).abs() / (1e-2 + fd.abs().max(an.abs()));
            (dot, nf, na) = (dot + fd * an, nf + fd * fd, na + an * an);
            worst = worst.max(err);
            assert!(
                (fd - an).abs() <= 5e-4 + 5e-2 * fd.abs().max(an.abs()),
                "{} coord {j}: autodiff {an:.6} vs finite difference {fd:.6}",
                params.layout().entries()[ti].name
            );
        }
    }
    let cos = dot / (nf.sqrt() * na.sqrt());
    eprintln!(
        "{arch}: worst relative error {worst:.2e}, cosine {cos:.6}, {checked} coordinates, {kinks} at kinks"
    );
    assert!(
        kinks * 10 <= checked,
        "{kinks} kinks in {checked} coordinates"
    );
    assert!(cos > 0.9995, "gradient direction differs: cosine {cos}");
}

#[test]
fn mlp_gradient_matches_finite_differences() {
    check("mlp:12-9-7-5", 6, 40, 3);
}

#[test]
fn mlp_ln_gradient_matches_finite_differences() {
    check("mlp:12-9-7-5:norm=ln", 6, 40, 5);
}

#[test]
fn mlp_bn_gradient_matches_finite_differences() {
    // The batch statistics depend on every sample, so every input and γ, β enter each loss.
    check("mlp:12-9-7-5:norm=bn", 8, 40, 4);
}

/// Per tensor, the cosine between the autodiff gradient and central differences on every
/// `len/12`-th coordinate: for deep normalised nets with max-pooling, where single coordinates
/// straddle pooling switches and ReLU kinks more often than the per-coordinate check allows.
fn check_directions(arch: &str, batch: usize, min_cos: f64) {
    let arch: Arch = arch.parse().unwrap();
    let (dev, ad) = (backend::device(), backend::train_device());
    let p = arch.init(6, &dev);
    let x: Vec<f32> = (0..batch * arch.input_dim())
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    let y: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
    let leaves = p.to_device(&ad).leaves();
    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [batch, arch.input_dim()]), &ad);
    let yt = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [batch]), &ad);
    let grads = cross_entropy(logits(&arch, &leaves, xt), yt).backward();
    let base = p.to_vecs();
    for (ti, e) in p.layout().entries().iter().enumerate() {
        if e.role.is_state() {
            continue;
        }
        let an: Vec<f32> = leaves.tensors()[ti]
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec()
            .unwrap();
        let (mut dot, mut nf, mut na) = (0.0f64, 0.0f64, 0.0f64);
        for j in (0..e.numel()).step_by((e.numel() / 12).max(1)) {
            let at = |d: f32| {
                let mut v = base.clone();
                v[ti][j] += d;
                let q = ParamSet::from_vecs(p.layout().clone(), v, &dev).unwrap();
                loss_value(&arch, &q, &x, &y)
            };
            let fd = (at(1e-3) - at(-1e-3)) / 2e-3;
            let a = an[j] as f64;
            (dot, nf, na) = (dot + fd * a, nf + fd * fd, na + a * a);
        }
        if nf == 0.0 && na == 0.0 {
            continue;
        }
        let cos = dot / (nf.sqrt() * na.sqrt());
        assert!(cos >= min_cos, "{}: cosine {cos:.5}", e.name);
        let ratio = na.sqrt() / nf.sqrt();
        assert!(
            (0.95..=1.05).contains(&ratio),
            "{}: norm ratio {ratio:.4}",
            e.name
        );
    }
}

#[test]
fn vgg_bn_gradient_directions_match_finite_differences() {
    check_directions("vgg11:w=0.03125:in=1x32x32", 6, 0.995);
}

#[test]
fn resnet20_gradient_directions_match_finite_differences() {
    check_directions("resnet20:in=1x6x6", 4, 0.995);
}

#[test]
fn vgg_gradient_matches_finite_differences() {
    check("vgg11:w=0.03125:norm=none:in=1x16x16", 3, 8, 6);
}

#[test]
fn lenet5_gradient_matches_finite_differences() {
    check("lenet5:1x16x16", 3, 12, 5);
}

/// LeNet-5-BN in train mode (batch statistics through both convolutions and fc1; max pooling
/// adds kinks that the one-sided slopes do not always catch, so the batch and seed are chosen to
/// keep the sampled coordinates off them: the cosine over all coordinates is 0.99995).
#[test]
fn lenet5_bn_gradient_matches_finite_differences() {
    check("lenet5:1x16x16:norm=bn", 6, 12, 8);
}
