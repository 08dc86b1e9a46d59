//! Autodiff gradients of the MLP and LeNet-5 losses against central finite differences.

use burn::tensor::{Int, Tensor, TensorData};
use modeconn::arch::Arch;
use modeconn::backend;
use modeconn::eval::cross_entropy;
use modeconn::params::ParamSet;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn loss_value(arch: &Arch, p: &ParamSet, x: &[f32], y: &[i64]) -> f64 {
    let device = backend::device();
    let b = y.len();
    let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [b, arch.input_dim()]), &device);
    let yt = Tensor::<1, Int>::from_data(TensorData::new(y.to_vec(), [b]), &device);
    cross_entropy(arch.forward(p, xt), yt).into_scalar::<f32>() as f64
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
    let loss = cross_entropy(arch.forward(&leaves, xt), yt);
    let grads = loss.backward();
    let g: Vec<Vec<f32>> = leaves
        .tensors()
        .iter()
        .map(|t| {
            t.grad(&grads)
                .unwrap()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        })
        .collect();

    // Central differences on a random subset of coordinates of every tensor.
    let base = params.to_vecs();
    let h = 1e-3f32; // small enough to rarely straddle a ReLU kink, large for f32 noise
    let mut worst = 0.0f64;
    let (mut dot, mut nf, mut na) = (0.0f64, 0.0f64, 0.0f64);
    for (ti, vals) in base.iter().enumerate() {
        for _ in 0..coords_per_tensor.min(vals.len()) {
            let j = rng.random_range(0..vals.len());
            let eval_at = |delta: f32| {
                let mut v = base.clone();
                v[ti][j] += delta;
                let p = ParamSet::from_vecs(params.layout().clone(), v, &device).unwrap();
                loss_value(&arch, &p, &x, &y)
            };
            let fd = (eval_at(h) - eval_at(-h)) / (2.0 * h as f64);
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
    eprintln!("{arch}: worst relative error {worst:.2e}, cosine {cos:.6}");
    assert!(cos > 0.9995, "gradient direction differs: cosine {cos}");
}

#[test]
fn mlp_gradient_matches_finite_differences() {
    check("mlp:12-9-7-5", 6, 40, 3);
}

#[test]
fn lenet5_gradient_matches_finite_differences() {
    check("lenet5:1x16x16", 3, 12, 5);
}
