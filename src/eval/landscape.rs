//! Filter-normalised random directions (Li et al. 2018, "Visualizing the Loss Landscape of
//! Neural Nets"): `d ~ N(0, I)` per tensor; for every output row (a dense layer's row, a
//! convolution's output filter) `d_i ← d_i·‖θ_i‖/(‖d_i‖ + 1e-10)`, so each direction row has the
//! norm of its weight row and the loss surface `L(θ + x·d₁ + y·d₂)` is comparable across
//! networks and scales. One-dimensional tensors (biases, normalisation γ and β) are zeroed, as
//! their `ignore='biasbn'` setting does, or with `include_biasbn` set to the weights themselves
//! (their code's choice when they are kept); running statistics are always zero.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::params::ParamSet;

/// A filter-normalised random direction for `params` (flat, in layout order).
pub fn filter_normalised_direction(
    params: &ParamSet,
    include_biasbn: bool,
    rng: &mut impl Rng,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(params.layout().numel());
    for (e, theta) in params.layout().entries().iter().zip(params.to_vecs()) {
        if e.role.is_state() {
            out.extend(std::iter::repeat_n(0.0, theta.len()));
            continue;
        }
        if e.shape.len() < 2 {
            match include_biasbn {
                true => out.extend(&theta),
                false => out.extend(std::iter::repeat_n(0.0, theta.len())),
            }
            continue;
        }
        let row = theta.len() / e.shape[0];
        for w in theta.chunks(row) {
            let d: Vec<f64> = (0..row).map(|_| StandardNormal.sample(rng)).collect();
            let dn = d.iter().map(|v| v * v).sum::<f64>().sqrt();
            let wn = w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
            out.extend(d.iter().map(|v| (v * wn / (dn + 1e-10)) as f32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Every row of every weight tensor of a direction has the norm of the weight's row (dense
    /// and convolutional layers); biases and normalisation parameters are zero, state too.
    #[test]
    fn filter_normalisation_gives_each_row_its_weight_rows_norm() {
        for spec in ["mlp:20-7-3", "lenet5:norm=bn"] {
            let arch: Arch = spec.parse().unwrap();
            let params = arch.init(1, &crate::backend::device());
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let d = filter_normalised_direction(&params, false, &mut rng);
            assert_eq!(d.len(), params.layout().numel());
            let mut at = 0;
            for (e, w) in params.layout().entries().iter().zip(params.to_vecs()) {
                let part = &d[at..at + w.len()];
                at += w.len();
                if e.role.is_state() || e.shape.len() < 2 {
                    assert!(part.iter().all(|&v| v == 0.0), "{}", e.name);
                    continue;
                }
                let row = w.len() / e.shape[0];
                for (dr, wr) in part.chunks(row).zip(w.chunks(row)) {
                    let n = |x: &[f32]| x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
                    assert!(
                        (n(dr) - n(wr)).abs() <= 1e-5 * n(wr).max(1e-6),
                        "{}",
                        e.name
                    );
                }
            }
            // Kept biases and normalisation parameters are the weights themselves.
            let kept = filter_normalised_direction(&params, true, &mut rng);
            let flat = params.to_flat();
            let mut at = 0;
            for e in params.layout().entries() {
                if !e.role.is_state() && e.shape.len() < 2 {
                    assert_eq!(&kept[at..at + e.numel()], &flat[at..at + e.numel()]);
                }
                at += e.numel();
            }
        }
    }
}
