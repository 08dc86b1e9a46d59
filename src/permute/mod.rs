//! Permuted minima: function-preserving permutations of hidden units and the alignment of one
//! network to another (Ainsworth et al. 2022, "Git Re-Basin"; Tatro et al. 2020).
//!
//! - [`spec`]: which permutation acts on which axis of which parameter; each architecture
//!   declares its own next to its layout ([`crate::arch::Arch::perm_spec`]).
//! - [`mod@apply`]: permutations as data ([`Permutation`]: identity, random, inverse, composition)
//!   and their action on a [`crate::params::ParamSet`].
//! - [`matching`]: weight matching (coordinate ascent over linear assignment problems) and
//!   activation matching (cross-correlation or Pearson).
//! - [`assignment`]: the exact linear assignment solver both use.

pub mod apply;
pub mod assignment;
pub mod matching;
pub mod spec;

pub use apply::{Permutation, apply};
pub use matching::{
    ActivationMatching, Correlation, LayerStats, MatchOptions, WeightMatching, activation_matching,
    activation_stats, weight_matching,
};
pub use spec::{Axis, PermSpec};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::params::ParamSet;
    use burn::tensor::{Tensor, TensorData};
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn inputs(arch: &Arch, n: usize, seed: u64) -> Tensor<2> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let d = arch.input_dim();
        let v: Vec<f32> = (0..n * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        Tensor::from_data(TensorData::new(v, [n, d]), &crate::backend::device())
    }

    fn logits(arch: &Arch, w: &ParamSet, x: Tensor<2>) -> Vec<f32> {
        arch.forward(w, x).to_data().try_to_vec::<f32>().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn random_permutation_preserves_logits() {
        let dev = crate::backend::device();
        for (spec, seed) in [
            ("mlp:20-16-10", 0),
            ("mlp:20-16-12-8-10", 1),
            ("mlp:20-7-7-7-7-10", 2),
            ("lenet5", 3),
            ("lenet5:3x32x32", 4),
            ("lenet5:norm=bn", 11),
            ("mlp:20-16-12-10:norm=bn", 5),
            ("mlp:20-16-12-10:norm=ln", 9),
            ("vgg11:w=0.0625:in=1x8x8", 6),
            ("vgg11:w=0.0625:norm=none:in=1x8x8", 7),
            ("resnet20:in=1x8x8", 8),
        ] {
            let arch: Arch = spec.parse().unwrap();
            let ps = arch.perm_spec();
            assert_eq!(
                ps.perms()
                    .iter()
                    .map(|p| p.name.clone())
                    .collect::<Vec<_>>(),
                arch.hidden_layers()
            );
            let w = arch.init(seed, &dev);
            let p = Permutation::random(&ps, seed + 10);
            assert!(!p.is_identity());
            let pw = apply(&ps, &p, &w).unwrap();
            assert_ne!(pw.to_flat(), w.to_flat(), "{spec}: the weights must move");
            let x = inputs(&arch, 8, seed);
            let (a, b) = (logits(&arch, &w, x.clone()), logits(&arch, &pw, x));
            let d = max_diff(&a, &b);
            assert!(d <= 1e-5, "{spec}: logits differ by {d}");
        }
    }

    #[test]
    fn a_spec_that_does_not_fit_the_layout_names_the_parameter() {
        let other: Arch = "mlp:12-8-5".parse().unwrap();
        let e = crate::arch::mlp::perm_spec(&[12, 16, 5], Default::default(), &other.layout())
            .unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("`fc1.weight` axis 0 has size 8") && e.contains("needs 16"),
            "{e}"
        );
        let e = crate::arch::mlp::perm_spec(&[12, 8, 8, 5], Default::default(), &other.layout())
            .unwrap_err();
        assert!(
            e.to_string().contains("`fc2.weight` axis 0 has size 5"),
            "{e}"
        );
        let lenet: Arch = "lenet5:3x32x32".parse().unwrap();
        let e =
            crate::arch::lenet::perm_spec([1, 28, 28], crate::arch::Norm::None, &lenet.layout())
                .unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("`fc1.weight` axis 1 has size 1250") && e.contains("blocks of 16"),
            "{e}"
        );
        // Applying a spec to a parameter set of another layout is an error, not a panic.
        let spec = Arch::Mlp {
            widths: vec![12, 8, 5],
            norm: Default::default(),
        }
        .perm_spec();
        let w = Arch::Mlp {
            widths: vec![12, 8, 4],
            norm: Default::default(),
        }
        .init(0, &crate::backend::device());
        let e = apply(&spec, &Permutation::identity(&spec), &w).unwrap_err();
        assert!(e.to_string().contains("`fc2.weight`"), "{e}");
    }

    #[test]
    fn lenet_fc1_blocks_follow_conv2_channels() {
        let arch: Arch = "lenet5".parse().unwrap();
        let ps = arch.perm_spec();
        let fc1 = &ps.params()[ps
            .params()
            .iter()
            .position(|p| p.name == "fc1.weight")
            .unwrap()];
        let conv2 = ps.perm_index("conv2").unwrap();
        assert_eq!(fc1.shape, [500, 800]);
        assert_eq!(fc1.axes[1].unwrap().perm, conv2);
        assert_eq!(fc1.axes[1].unwrap().block, 16);
    }

    #[test]
    fn weight_matching_recovers_a_random_permutation() {
        let dev = crate::backend::device();
        for (spec, seeds) in [
            ("mlp:12-16-5", 0..3u64),
            ("mlp:12-16-16-5", 3..6),
            ("mlp:12-10-14-9-8-5", 6..9),
            ("lenet5:1x16x16", 9..10),
            ("mlp:12-16-16-5:norm=bn", 10..12),
            ("mlp:12-16-16-5:norm=ln", 14..15),
            ("vgg11:w=0.0625:in=1x8x8", 12..13),
            ("resnet20:in=1x8x8", 13..14),
        ] {
            let arch: Arch = spec.parse().unwrap();
            let ps = arch.perm_spec();
            for seed in seeds {
                let a = arch.init(seed, &dev);
                let pi = Permutation::random(&ps, seed + 100);
                let b = apply(&ps, &pi, &a).unwrap();
                let m = weight_matching(
                    &ps,
                    &a,
                    &b,
                    &MatchOptions {
                        seed,
                        ..Default::default()
                    },
                )
                .unwrap();
                assert!(m.converged, "{spec} seed {seed}");
                assert_eq!(m.perm, pi.inverse(), "{spec} seed {seed}: π not recovered");
                let aligned = apply(&ps, &m.perm, &b).unwrap();
                assert_eq!(aligned.to_flat(), a.to_flat());
                let best = a.dot(&a).unwrap();
                let last = *m.objective.last().unwrap();
                assert!(
                    (last - best).abs() <= 1e-6 * best,
                    "{last} vs ‖A‖² = {best}"
                );
            }
        }
    }

    #[test]
    fn weight_matching_objective_never_decreases() {
        let dev = crate::backend::device();
        for (spec, seed) in [("mlp:12-16-16-16-5", 0u64), ("mlp:30-24-20-24-5", 1)] {
            let arch: Arch = spec.parse().unwrap();
            let ps = arch.perm_spec();
            let (a, b) = (arch.init(seed, &dev), arch.init(seed + 50, &dev));
            let m = weight_matching(&ps, &a, &b, &MatchOptions::default()).unwrap();
            assert!(m.sweeps >= 2, "{spec}: a non-trivial ascent is expected");
            assert_eq!(m.objective.len(), m.sweeps + 1);
            for w in m.objective.windows(2) {
                assert!(
                    w[1] >= w[0] - 1e-9 * w[0].abs(),
                    "{spec}: {:?}",
                    m.objective
                );
            }
            assert!(m.objective.last().unwrap() > &m.objective[0]);
            // Same seed → same result; the aligned B computes the same function as B.
            let again = weight_matching(&ps, &a, &b, &MatchOptions::default()).unwrap();
            assert_eq!(again.perm, m.perm);
            let x = inputs(&arch, 4, seed);
            let aligned = apply(&ps, &m.perm, &b).unwrap();
            let d = max_diff(&logits(&arch, &b, x.clone()), &logits(&arch, &aligned, x));
            assert!(d <= 1e-5);
        }
    }

    #[test]
    fn single_hidden_layer_converges_in_one_sweep() {
        let dev = crate::backend::device();
        let arch: Arch = "mlp:12-16-5".parse().unwrap();
        let ps = arch.perm_spec();
        let m = weight_matching(
            &ps,
            &arch.init(1, &dev),
            &arch.init(2, &dev),
            &Default::default(),
        )
        .unwrap();
        // One improving sweep, then one that confirms nothing changes.
        assert!(m.sweeps <= 2 && m.converged, "{m:?}");
        let no_hidden: Arch = "mlp:12-5".parse().unwrap();
        let ps = no_hidden.perm_spec();
        let w = no_hidden.init(0, &dev);
        let m = weight_matching(&ps, &w, &w, &Default::default()).unwrap();
        assert_eq!((m.sweeps, m.converged), (0, true));
    }

    #[test]
    fn activation_matching_recovers_a_random_permutation() {
        let dev = crate::backend::device();
        let split = crate::data::load(&Default::default()).unwrap();
        let data = split.train.subset(300);
        for kind in [Correlation::Cross, Correlation::Pearson] {
            for (spec, seed) in [("mlp:64-16-5-10", 0u64), ("mlp:64-24-10", 1)] {
                let arch: Arch = spec.parse().unwrap();
                let ps = arch.perm_spec();
                // Positive biases keep every unit alive, so the matching has a unique optimum.
                let a = arch.init(seed, &dev).map(|t| t.clone().abs() * 0.5);
                let pi = Permutation::random(&ps, seed + 7);
                let b = apply(&ps, &pi, &a).unwrap();
                let st = activation_stats(&arch, &a, &b, &data, 128, &dev).unwrap();
                assert_eq!(st.len(), arch.hidden_layers().len());
                assert_eq!(st[0].samples, 300);
                let m = activation_matching(&ps, &st, kind).unwrap();
                assert_eq!(m.perm, pi.inverse(), "{spec} {kind:?}");
                assert!(m.objective_after() >= m.objective_before());
                if kind == Correlation::Pearson {
                    for l in &m.layers {
                        assert!((l.mean_after - 1.0).abs() < 1e-4, "{l:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn activation_matching_on_lenet_conv_layers() {
        let dev = crate::backend::device();
        let arch: Arch = "lenet5:1x16x16".parse().unwrap();
        let ps = arch.perm_spec();
        // Random-sign weights, positive biases: units differ and few are dead.
        let init = arch.init(4, &dev);
        let vals = init
            .layout()
            .entries()
            .iter()
            .zip(init.to_vecs())
            .map(|(e, v)| match e.role {
                crate::params::Role::Bias => v.iter().map(|b| b.abs() + 0.05).collect(),
                _ => v,
            })
            .collect();
        let a = ParamSet::from_vecs(init.layout().clone(), vals, &dev).unwrap();
        let pi = Permutation::random(&ps, 5);
        let b = apply(&ps, &pi, &a).unwrap();
        let mut data = crate::data::load(&Default::default())
            .unwrap()
            .train
            .subset(200);
        // Upsample the 8×8 digits to 16×16 by pixel repetition.
        data.x = (0..data.len())
            .flat_map(|i| {
                let img = data.image(i).to_vec();
                (0..256).map(move |k| img[(k / 16 / 2) * 8 + (k % 16) / 2])
            })
            .collect();
        data.shape = [1, 16, 16];
        let st = activation_stats(&arch, &a, &b, &data, 100, &dev).unwrap();
        assert_eq!(st[0].samples, 200 * 12 * 12);
        let m = activation_matching(&ps, &st, Correlation::Pearson).unwrap();
        // Units that never fire on the data are interchangeable; every other unit is recovered.
        let inv = pi.inverse();
        for (p, s) in st.iter().enumerate() {
            let alive: Vec<usize> = (0..s.sq_a.len()).filter(|&i| s.sq_a[i] > 0.0).collect();
            assert!(
                alive.len() * 4 >= s.sq_a.len() * 3,
                "{}: too many dead units",
                s.name
            );
            for i in alive {
                assert_eq!(m.perm.maps[p][i], inv.maps[p][i], "{} unit {i}", s.name);
            }
        }
    }

    #[test]
    fn activation_matching_names_a_missing_layer() {
        let arch: Arch = "mlp:12-16-5".parse().unwrap();
        let other: Arch = "mlp:12-8-5".parse().unwrap();
        let dev = crate::backend::device();
        let w = other.init(0, &dev);
        let data = crate::data::Dataset {
            name: "toy".into(),
            x: vec![0.5; 24],
            y: vec![0, 1],
            shape: [1, 1, 12],
            classes: 5,
        };
        let st = activation_stats(&other, &w, &w, &data, 2, &dev).unwrap();
        let e = activation_matching(&arch.perm_spec(), &st, Correlation::Cross).unwrap_err();
        assert!(e.to_string().contains("`fc1` (16 units)"), "{e}");
    }
}
