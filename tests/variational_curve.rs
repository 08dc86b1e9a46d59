//! Curves between variational models: the composed gradient (a curve point's `c_j` through the
//! variational chain rule) against finite differences; the endpoints of a variational curve are
//! the two models; an untrained chain is the line.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use modeconn::backend;
use modeconn::curve::{Curve, CurveKind, CurveObjective};
use modeconn::model::Model;
use modeconn::params::ParamSet;
use modeconn::train::{StepCtx, loss_and_grad};
use modeconn::variational::eval::{Sampling, evaluate_variational};
use modeconn::variational::objective::{Elbo, EvalConfig, Warmup};
use modeconn::variational::{Method, VConfig, VModel};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const ARCH: &str = "mlp:6-5-3";

fn model(method: Method) -> VModel {
    VModel::new(ARCH.parse().unwrap(), VConfig::new(method)).unwrap()
}

/// A model of `method` from `seed` with α inside the clip, so the loss is smooth: log σ² =
/// log θ² + u, u in [−4, 2) (zero-mean layers: log σ² in [−4, −2)), per-layer log α −1.
fn endpoint(m: &VModel, seed: u64) -> ParamSet {
    common::spread_posterior(m, seed, seed + 100, -4.0..2.0, -4.0..-2.0, -1.0)
}

/// `∂L/∂(bend)` of a one-bend chain between two variational models, L = N·CE(sampled) + KL at
/// the sampled point, against central differences of L in every bend tensor (the same `t`
/// and the same noise for every evaluation): through the fused chain rule (`sparse-vd`,
/// `ard`) and through the graph (`layerwise-alpha`, `variance`).
#[test]
fn composed_gradient_matches_finite_differences() {
    let device = backend::device();
    let ad = backend::train_device();
    let data = common::tiny_data(8);
    for method in [
        Method::SparseVd,
        Method::Ard,
        Method::LayerwiseAlpha,
        Method::Variance,
    ] {
        let m = model(method);
        let (a, b) = (endpoint(&m, 1), endpoint(&m, 2));
        let curve = Curve::init_linear(
            CurveKind::Polychain,
            1,
            Model::Variational(m.clone()),
            &a,
            &b,
        )
        .unwrap();
        // Move the bend off the line so that its gradient is not the line's.
        let bend = endpoint(&m, 3).lerp(&curve.points[1], 0.5).unwrap();
        let mut curve = curve;
        curve.points[1] = bend;
        let packed = curve.pack(&[1]);
        let eval = EvalConfig {
            ensembles: vec![],
            seed: 0,
            every: 1,
        };
        let elbo = Elbo::new(m.clone(), Warmup::None, &data, eval, 1, device.clone());
        let mut obj =
            CurveObjective::with_point(curve.clone(), vec![1], 0.0, elbo, &data, device.clone());
        let x = || Tensor::<2>::from_data(TensorData::new(data.x.clone(), [8, 6]), &ad);
        let y = || {
            let v: Vec<i64> = data.y.iter().map(|&v| v as i64).collect();
            Tensor::<1, Int>::from_data(TensorData::new(v, [8]), &ad)
        };
        let mut eval_at = |p: &ParamSet| {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let mut ctx = StepCtx {
                epoch: 0,
                step: 0,
                rng: &mut rng,
                n_train: 8,
            };
            loss_and_grad(p, &mut obj, x(), y(), &mut ctx).unwrap()
        };
        let (_, g, scalars) = eval_at(&packed);
        let t = scalars.iter().find(|(k, _)| *k == "t").unwrap().1;
        assert!(t > 0.0 && t < 1.0);
        let label = format!("{method}");
        let checked =
            common::check_gradient(&packed, &g.to_vecs(), 3, 2e-2, |p| eval_at(p).0, &label);
        assert!(checked > 10, "{method}: {checked} coordinates");
    }
}

/// At t = 0 and 1 a variational curve is its endpoints, bit for bit, with their mode and
/// seeded one-sample and ensemble metrics; an untrained chain is the straight line between the
/// two posteriors (in θ and log σ²).
#[test]
fn variational_curve_ends_are_the_models_and_an_untrained_chain_is_the_line() {
    let device = backend::device();
    let data = common::tiny_data(30);
    for method in [Method::SparseVd, Method::Variance, Method::GroupArd] {
        let m = model(method);
        let (a, b) = (endpoint(&m, 1), endpoint(&m, 2));
        let c = Curve::init_linear(
            CurveKind::Polychain,
            1,
            Model::Variational(m.clone()),
            &a,
            &b,
        )
        .unwrap();
        let sampling = Sampling {
            ensembles: &[3],
            seed: 7,
        };
        for (t, end) in [(0.0, &a), (1.0, &b)] {
            let p = c.point(t);
            assert_eq!(p.to_vecs(), end.to_vecs(), "{method}: t = {t}");
            let here = evaluate_variational(&m, &p, &data, Some(sampling), 10, &device);
            let there = evaluate_variational(&m, end, &data, Some(sampling), 10, &device);
            assert_eq!(here, there, "{method}: t = {t}");
        }
        for t in [0.2, 0.5, 0.9] {
            let line = a.lerp(&b, t as f32).unwrap().to_vecs();
            for (x, y) in c
                .point(t)
                .to_vecs()
                .iter()
                .flatten()
                .zip(line.iter().flatten())
            {
                assert!(
                    (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                    "{method}: t = {t}"
                );
            }
        }
    }
}
