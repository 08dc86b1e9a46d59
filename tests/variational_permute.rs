//! Permutations of variational models: one permutation moves every variational tensor of a
//! unit (its means, log σ², a layer's log α stays), so the mode's logits, the KL and the
//! sparsity are unchanged and the sampled predictive is the same distribution; weight matching
//! on the means (on σ for zero-mean layers) recovers a known permutation.

mod common;

use burn::tensor::{Tensor, TensorData};
use modeconn::backend;
use modeconn::data::Dataset;
use modeconn::model::Model;
use modeconn::params::ParamSet;
use modeconn::permute::{MatchOptions, Permutation, apply, weight_matching};
use modeconn::variational::eval::{Sampling, evaluate_variational};
use modeconn::variational::{Method, VConfig, VModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A model with per-weight log σ² spread around log θ² (u in [−5, 6); zero-mean layers in
/// [−5, −1)), so that α differs from weight to weight and some weights are pruned.
fn spread(m: &VModel, seed: u64) -> ParamSet {
    common::spread_posterior(m, seed, seed + 50, -5.0..6.0, -5.0..-1.0, -2.0)
}

fn data(arch: &modeconn::arch::Arch, n: usize) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let d = arch.input_dim();
    let shape = match d {
        784 => [1, 28, 28],
        _ => [1, 1, d],
    };
    Dataset {
        name: "random".into(),
        x: (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        y: (0..n).map(|i| (i % arch.classes()) as u8).collect(),
        shape,
        classes: arch.classes(),
    }
}

#[test]
fn permuting_a_variational_model_keeps_its_mode_kl_sparsity_and_predictive() {
    let device = backend::device();
    for (arch, method) in [
        ("mlp:12-9-7-3", Method::SparseVd),
        ("mlp:12-9-7-3", Method::LayerwiseAlpha),
        ("mlp:12-9-7-3", Method::GroupArd),
        ("mlp:12-9-7-3", Method::Variance),
        ("lenet5", Method::SparseVd),
    ] {
        let m = VModel::new(arch.parse().unwrap(), VConfig::new(method)).unwrap();
        let model = Model::Variational(m.clone());
        let w = spread(&m, 1);
        let spec = model.perm_spec().unwrap();
        let perm = Permutation::random(&spec, 3);
        assert!(!perm.is_identity());
        let pw = apply(&spec, &perm, &w).unwrap();
        assert!(pw.sub(&w).unwrap().norm() > 0.0, "{arch} {method}: moved");
        let kl = |p: &ParamSet| m.kl(p).into_scalar::<f32>() as f64;
        assert!(
            (kl(&w) - kl(&pw)).abs() <= 1e-5 * kl(&w).abs().max(1.0),
            "{arch} {method}: KL {} vs {}",
            kl(&w),
            kl(&pw)
        );
        let (s, ps) = (m.stats(&w), m.stats(&pw));
        assert_eq!(s.compression, ps.compression, "{arch} {method}");
        for (a, b) in s.layers.iter().zip(&ps.layers) {
            assert_eq!(
                (a.sparsity, a.units_removed),
                (b.sparsity, b.units_removed),
                "{arch} {method} {}",
                a.name
            );
        }
        let d = data(&m.arch, 64);
        let x = Tensor::<2>::from_data(
            TensorData::new(d.x.clone(), [64, m.arch.input_dim()]),
            &device,
        );
        let logits = |p: &ParamSet| {
            m.arch
                .forward(&m.mode(p), x.clone())
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        let (l, pl) = (logits(&w), logits(&pw));
        let diff = l
            .iter()
            .zip(&pl)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            diff <= 1e-5,
            "{arch} {method}: mode logits differ by {diff}"
        );
        // The sampled predictive: the same distribution (the noise of a moved unit is drawn at
        // its new position), so a large ensemble's NLL agrees to Monte Carlo accuracy.
        let sampling = Sampling {
            ensembles: &[100],
            seed: 4,
        };
        let e = evaluate_variational(&m, &w, &d, Some(sampling), 64, &device);
        let pe = evaluate_variational(&m, &pw, &d, Some(sampling), 64, &device);
        let (a, b) = (e.ensembles[0].1.loss, pe.ensembles[0].1.loss);
        assert!(
            (a - b).abs() <= 0.02 * a.max(0.1),
            "{arch} {method}: NLL {a} vs {b}"
        );
    }
}

#[test]
fn weight_matching_recovers_a_known_permutation_of_a_variational_model() {
    for method in [Method::SparseVd, Method::Variance, Method::LayerwiseAlpha] {
        let m = VModel::new("mlp:12-9-7-3".parse().unwrap(), VConfig::new(method)).unwrap();
        let model = Model::Variational(m.clone());
        let w = spread(&m, 2);
        let spec = model.perm_spec().unwrap();
        let perm = Permutation::random(&spec, 8);
        let pw = apply(&spec, &perm, &w).unwrap();
        // Align the permuted copy back to the original: matched on the means (σ where a layer
        // is zero-mean), applied to every tensor.
        let base = m.arch.perm_spec();
        let found = weight_matching(
            &base,
            &model.matching_view(&w).unwrap(),
            &model.matching_view(&pw).unwrap(),
            &MatchOptions::default(),
        )
        .unwrap()
        .perm;
        assert_eq!(found, perm.inverse(), "{method}");
        let back = apply(&spec, &found, &pw).unwrap();
        assert_eq!(
            back.to_vecs(),
            w.to_vecs(),
            "{method}: every tensor restored"
        );
    }
}

/// The zero-mean ablation (Neklyudov et al. 2019): a layer whose α has run off keeps its
/// information in the variances, so setting its means to 0 leaves the sampled logits (same
/// noise) all but unchanged, while its mode is zero; with a small α the same ablation destroys
/// the layer. A layer the model lacks is refused.
#[test]
fn zero_mean_ablation_keeps_samples_only_where_alpha_ran_off() {
    use modeconn::variational::weights::VarWeights;
    let device = backend::device();
    let m = VModel::new(
        "mlp:12-9-3".parse().unwrap(),
        VConfig::new(Method::LayerwiseAlpha),
    )
    .unwrap();
    let base = spread(&m, 4);
    let x = Tensor::<2>::from_data(TensorData::new(data(&m.arch, 32).x, [32, 12]), &device);
    let with_log_alpha = |la: f32| {
        let vecs = base
            .layout()
            .entries()
            .iter()
            .zip(base.to_vecs())
            .map(|(e, v)| {
                if e.name == "log_alpha/fc1.weight" {
                    vec![la]
                } else {
                    v
                }
            })
            .collect();
        ParamSet::from_vecs(base.layout().clone(), vecs, &device).unwrap()
    };
    let ablated = m.clone().with_zero_mean(&["fc1".to_string()]).unwrap();
    let sample = |model: &VModel, p: &ParamSet| -> Vec<f32> {
        let w = VarWeights::new(model, p, ChaCha8Rng::seed_from_u64(3));
        model
            .arch
            .forward(&w, x.clone())
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    let rel = |a: &[f32], b: &[f32]| {
        let d: f32 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f32>()
            .sqrt();
        d / a.iter().map(|x| x * x).sum::<f32>().sqrt()
    };
    // α = e¹⁵: the means are e^−7.5 of the noise's scale.
    let p = with_log_alpha(15.0);
    assert!(rel(&sample(&m, &p), &sample(&ablated, &p)) < 1e-2);
    // α = e^−4: the means carry the layer.
    let p = with_log_alpha(-4.0);
    assert!(rel(&sample(&m, &p), &sample(&ablated, &p)) > 0.1);
    // The ablated layer's mode is zero; the others are untouched.
    let (mode, full) = (ablated.mode(&p), m.mode(&p));
    assert!(mode.to_vecs()[0].iter().all(|&v| v == 0.0), "fc1.weight");
    assert_eq!(mode.to_vecs()[2], full.to_vecs()[2], "fc2.weight");
    let e = m.clone().with_zero_mean(&["fc7".to_string()]).unwrap_err();
    assert!(e.to_string().contains("fc7"), "{e}");
}
