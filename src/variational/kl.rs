//! KL divergences of the variational dropout family, as functions of `log α` (Molchanov et al. 2017, eq. 14; Kharitonov et al. 2018).
//!
//! All are per weight, for `q(w) = N(θ, α θ²)`, and normalised so that they are **minimised**:
//!
//! - log-uniform prior, Molchanov et al. 2017 eq. 14 (the approximation every sparse-VD port uses):
//!   `−KL ≈ k1·σ(k2 + k3·log α) − ½·log(1 + 1/α) − k1`, computed in the stable form
//!   `KL ≈ ½·softplus(−log α) + k1·σ(−k2 − k3·log α)` (→ 0 as α → ∞), `k1 = 0.63576`,
//!   `k2 = 1.87320`, `k3 = 1.48695` ([`kl_log_uniform`]);
//! - the exact log-uniform value (up to the constant that makes `KL(α → ∞) = 0`),
//!   `−KL(α) = −½·[Σ_{j≥0} Pois(j; 1/(2α))·ψ(½ + j) − ψ(½)]` ([`kl_exact`], derived; for tests and
//!   figures);
//! - the empirical-Bayes Gaussian (ARD) prior `N(0, λ²)` with the optimal `λ² = θ² + σ²`
//!   (Kharitonov et al. 2018): `KL = ½·log(1 + 1/α) = ½·softplus(−log α)` ([`kl_ard`]);
//! - Kingma et al. 2015's polynomial for `α ≤ 1`: `−KL ≈ c0 + ½·log α + c1·α + c2·α² + c3·α³`,
//!   `c1 = 1.16145124`, `c2 = −1.50204118`, `c3 = 0.58629921` ([`kl_kingma`]); the constant
//!   `c0 = −½(γ + ln 2)` (derived) makes it agree with the exact value as α → 0;
//! - group ARD (one λ per neuron/filter): [`kl_group_ard`].
//!
//! Scalar versions work in `f64` on the host; the `*_t` versions are differentiable tensor ops
//! (any rank, element-wise).

use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

/// `k1` of Molchanov et al. 2017, eq. 14.
pub const K1: f64 = 0.63576;
/// `k2` of Molchanov et al. 2017, eq. 14.
pub const K2: f64 = 1.87320;
/// `k3` of Molchanov et al. 2017, eq. 14.
pub const K3: f64 = 1.48695;
/// Kingma et al. 2015's polynomial coefficient `c1`.
pub const C1: f64 = 1.161_451_24;
/// Kingma et al. 2015's polynomial coefficient `c2`.
pub const C2: f64 = -1.502_041_18;
/// Kingma et al. 2015's polynomial coefficient `c3`.
pub const C3: f64 = 0.586_299_21;
/// Euler–Mascheroni constant γ.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
/// `c0 = −½(γ + ln 2)`: the α → 0 limit of `−KL − ½ log α` (derived from the exact series).
pub const C0: f64 = -0.5 * (EULER_GAMMA + std::f64::consts::LN_2);

fn softplus_f64(x: f64) -> f64 {
    if x > 30.0 { x } else { x.exp().ln_1p() }
}

fn sigmoid_f64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Log-uniform-prior KL approximation (Molchanov et al. 2017, eq. 14), stable form
/// `½·softplus(−log α) + k1·σ(−k2 − k3·log α)`.
pub fn kl_log_uniform(log_alpha: f64) -> f64 {
    0.5 * softplus_f64(-log_alpha) + K1 * sigmoid_f64(-K2 - K3 * log_alpha)
}

/// ARD KL with the optimal prior variance: `½·softplus(−log α) = ½·log(1 + 1/α)`.
pub fn kl_ard(log_alpha: f64) -> f64 {
    0.5 * softplus_f64(-log_alpha)
}

/// Kingma et al. 2015's polynomial, valid for `α ≤ 1`:
/// `KL ≈ −(c0 + ½·log α + c1·α + c2·α² + c3·α³)`.
pub fn kl_kingma(log_alpha: f64) -> f64 {
    let a = log_alpha.exp();
    -(C0 + 0.5 * log_alpha + C1 * a + C2 * a * a + C3 * a * a * a)
}

/// Digamma ψ(x) for `x > 0`: recurrence up to `x ≥ 6`, then the asymptotic series.
pub fn digamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 6.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    acc + x.ln()
        - 0.5 / x
        - f * (1.0 / 12.0 - f * (1.0 / 120.0 - f * (1.0 / 252.0 - f * (1.0 / 240.0 - f / 132.0))))
}

/// `ln Γ(x)` for `x > 0`: recurrence up to `x ≥ 10`, then Stirling's series.
pub fn ln_gamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 10.0 {
        acc -= x.ln();
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    acc + (x - 0.5) * x.ln() - x
        + 0.5 * (2.0 * std::f64::consts::PI).ln()
        + (1.0 / 12.0 - f * (1.0 / 360.0 - f * (1.0 / 1260.0 - f / 1680.0))) / x
}

/// The exact log-uniform KL, normalised to `KL(α → ∞) = 0` (derived from Molchanov et al. 2017, eq. 13):
/// `KL(α) = ½·E_{J ~ Pois(1/(2α))}[ψ(½ + J) − ψ(½)]`.
///
/// `ψ(½ + j) − ψ(½) = Σ_{i<j} 1/(½ + i)`, so the sum runs over the Poisson mass (±12 standard
/// deviations around the mean, where the pmf is started in log space) with recurrences for both
/// factors. Accurate to ~1e-12 for `log α ∈ [−20, 20]`.
pub fn kl_exact(log_alpha: f64) -> f64 {
    let lambda = 0.5 * (-log_alpha).exp();
    let sd = lambda.sqrt();
    let j0 = (lambda - 12.0 * sd - 10.0).floor().max(0.0);
    let j1 = (lambda + 12.0 * sd + 30.0).ceil();
    // pmf and harmonic-like sum at j0.
    let mut p = (j0 * lambda.ln() - lambda - ln_gamma(j0 + 1.0)).exp();
    let mut h = digamma(0.5 + j0) - digamma(0.5);
    let mut j = j0;
    let mut sum = 0.0;
    while j <= j1 {
        sum += p * h;
        h += 1.0 / (0.5 + j);
        p *= lambda / (j + 1.0);
        j += 1.0;
    }
    0.5 * sum
}

/// `softplus(−x) = log(1 + e^{−x})` for clipped `x` (`|x| ≤ 20`, so `e^{−x}` cannot overflow):
/// three element-wise ops, no threshold mask.
fn softplus_neg_clipped<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.neg().exp().log1p()
}

/// Tensor version of [`kl_log_uniform`] (element-wise, differentiable). Expects clipped
/// `log α` (`|log α| ≤ 20`).
pub fn kl_log_uniform_t<const D: usize>(log_alpha: Tensor<D>) -> Tensor<D> {
    let sp = softplus_neg_clipped(log_alpha.clone()) * 0.5;
    sp + sigmoid(log_alpha * (-K3) - K2) * K1
}

/// Tensor version of [`kl_ard`] (element-wise, differentiable). Expects clipped `log α`.
pub fn kl_ard_t<const D: usize>(log_alpha: Tensor<D>) -> Tensor<D> {
    softplus_neg_clipped(log_alpha) * 0.5
}

/// Tensor version of [`kl_kingma`] (element-wise, differentiable; meant for `log α ≤ 0`).
pub fn kl_kingma_t<const D: usize>(log_alpha: Tensor<D>) -> Tensor<D> {
    let a = log_alpha.clone().exp();
    let poly = a.clone() * C1 + a.clone().powi_scalar(2) * C2 + a.powi_scalar(3) * C3;
    (log_alpha * 0.5 + poly + C0).neg()
}

/// Group-ARD KL of one layer (Kharitonov et al. 2018's empirical Bayes with one prior variance
/// per neuron or filter; derived from Kharitonov et al. 2018).
///
/// `theta2` and `sigma2` are `[groups, group_size]` (row `g` holds the incoming weights of output
/// unit `g`). With the optimal `λ_g² = mean_{j∈g}(θ_j² + σ_j²)`, the sum over `j ∈ g` of
/// `KL(N(θ_j, σ_j²) ‖ N(0, λ_g²)) = ½[log(λ_g²/σ_j²) + (θ_j² + σ_j²)/λ_g² − 1]` reduces to
/// `½·Σ_j log(λ_g²/σ_j²)`. Returns the layer's total as a `[1]` tensor.
pub fn kl_group_ard_t(theta2: Tensor<2>, sigma2: Tensor<2>) -> Tensor<1> {
    let [_, n] = sigma2.dims();
    let lambda2 = (theta2 + sigma2.clone()).mean_dim(1); // [groups, 1]
    let per_group = lambda2.log() * n as f64 - sigma2.log().sum_dim(1);
    per_group.sum() * 0.5
}

/// Host version of [`kl_group_ard_t`] for one group: `½·Σ_j log(λ²/σ_j²)` with
/// `λ² = mean_j(θ_j² + σ_j²)`.
pub fn kl_group_ard(theta: &[f64], sigma2: &[f64]) -> f64 {
    let n = theta.len() as f64;
    let lambda2 = theta
        .iter()
        .zip(sigma2)
        .map(|(t, s)| t * t + s)
        .sum::<f64>()
        / n;
    0.5 * sigma2.iter().map(|s| (lambda2 / s).ln()).sum::<f64>()
}

/// `KL(N(μ, σ²) ‖ N(0, λ²)) = ½[log(λ²/σ²) + (μ² + σ²)/λ² − 1]`.
pub fn kl_gauss_zero_mean(mu: f64, sigma2: f64, lambda2: f64) -> f64 {
    0.5 * ((lambda2 / sigma2).ln() + (mu * mu + sigma2) / lambda2 - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;
    use burn::tensor::TensorData;

    /// (log α, −KL exact, −KL approx), the exact value from the series of [`kl_exact`].
    const TABLE: [(f64, f64, f64); 4] = [
        (-4.0, -2.62575, -2.63421),
        (0.0, -0.42669, -0.43124),
        (2.0, -0.06617, -0.06842),
        (4.0, -0.00913, -0.00933),
    ];

    #[test]
    fn exact_series_and_approximation_match_the_reference_table() {
        for (la, exact, approx) in TABLE {
            let e = -kl_exact(la);
            let a = -kl_log_uniform(la);
            assert!((e - exact).abs() <= 1e-4, "exact at {la}: {e} vs {exact}");
            // The table's approximation values are given to 5 decimals.
            assert!(
                (a - approx).abs() <= 1e-4,
                "approx at {la}: {a} vs {approx}"
            );
        }
    }

    #[test]
    fn max_gap_between_exact_and_approximation_is_0_0094_near_minus_3_5() {
        let (mut worst, mut at) = (0.0f64, 0.0f64);
        for i in 0..=2000 {
            let la = -10.0 + 20.0 * i as f64 / 2000.0;
            let d = (kl_exact(la) - kl_log_uniform(la)).abs();
            if d > worst {
                worst = d;
                at = la;
            }
        }
        assert!((worst - 0.0094).abs() < 5e-4, "max gap {worst} at {at}");
        assert!((at + 3.5).abs() < 0.5, "max gap at log α = {at}");
    }

    #[test]
    fn exact_series_limits() {
        // α → ∞: KL → 0; α → 0: KL ≈ −½ log α − c0.
        assert!(kl_exact(20.0).abs() < 1e-8);
        for la in [-12.0, -16.0] {
            let asym = -(0.5 * la + C0);
            assert!((kl_exact(la) - asym).abs() < 1e-4, "{la}");
        }
        // Monotone decreasing in α.
        let mut prev = f64::INFINITY;
        for i in 0..200 {
            let k = kl_exact(-10.0 + 0.1 * i as f64);
            assert!(k < prev);
            prev = k;
        }
    }

    #[test]
    fn kingma_polynomial_tracks_the_exact_kl_for_alpha_up_to_1() {
        let mut worst = 0.0f64;
        for i in 0..=1000 {
            let la = -10.0 + 10.0 * i as f64 / 1000.0;
            worst = worst.max((kl_kingma(la) - kl_exact(la)).abs());
        }
        // The published polynomial is a rough fit: measured max deviation 0.0403 (at α = 1).
        assert!(worst < 0.045, "Kingma polynomial off by {worst}");
        // Hand-computed: α = 1 gives −KL = c0 + c1 + c2 + c3 = −0.38947.
        assert!(
            (kl_kingma(0.0) - 0.389_472).abs() < 1e-5,
            "{}",
            kl_kingma(0.0)
        );
        // Exact as α → 0 by construction of c0.
        assert!((kl_kingma(-15.0) - kl_exact(-15.0)).abs() < 1e-4);
    }

    #[test]
    fn ard_kl_is_half_log_one_plus_inverse_alpha_and_below_log_uniform() {
        for la in [-6.0, -1.0, 0.0, 2.5, 7.0] {
            let a: f64 = f64::exp(la);
            assert!((kl_ard(la) - 0.5 * (1.0 + 1.0 / a).ln()).abs() < 1e-12);
            let gap = kl_log_uniform(la) - kl_ard(la);
            assert!(gap > 0.0 && gap < K1);
        }
    }

    #[test]
    fn tensor_versions_match_scalar_versions() {
        let dev = backend::device();
        let las = [-9.0f32, -3.5, -0.2, 0.0, 1.7, 6.0];
        let t = Tensor::<1>::from_data(TensorData::new(las.to_vec(), [las.len()]), &dev);
        let lu = kl_log_uniform_t(t.clone())
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let ard = kl_ard_t(t.clone())
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let km = kl_kingma_t(t).into_data().try_into_vec::<f32>().unwrap();
        for (i, &la) in las.iter().enumerate() {
            let la = la as f64;
            assert!((lu[i] as f64 - kl_log_uniform(la)).abs() < 1e-5);
            assert!((ard[i] as f64 - kl_ard(la)).abs() < 1e-5);
            assert!((km[i] as f64 - kl_kingma(la)).abs() < 1e-4 * (1.0 + kl_kingma(la).abs()));
        }
    }

    /// Minimises `Σ_j KL(N(μ_j, σ_j²) ‖ N(0, λ²))` over λ² by golden-section search on log λ².
    fn min_over_shared_lambda(mu: &[f64], s2: &[f64]) -> (f64, f64) {
        let f = |ll: f64| {
            mu.iter()
                .zip(s2)
                .map(|(m, s)| kl_gauss_zero_mean(*m, *s, ll.exp()))
                .sum::<f64>()
        };
        let (mut a, mut b) = (-30.0f64, 10.0f64);
        let g = (5f64.sqrt() - 1.0) / 2.0;
        for _ in 0..200 {
            let c = b - g * (b - a);
            let d = a + g * (b - a);
            if f(c) < f(d) {
                b = d;
            } else {
                a = c;
            }
        }
        let ll = 0.5 * (a + b);
        (f(ll), ll.exp())
    }

    #[test]
    fn group_ard_kl_is_the_sum_of_per_weight_kls_at_the_optimal_shared_lambda() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let dev = backend::device();
        let (groups, n) = (4usize, 7usize);
        let mut mu = vec![0.0f64; groups * n];
        let mut s2 = vec![0.0f64; groups * n];
        for i in 0..groups * n {
            mu[i] = rng.random_range(-1.0..1.0) * if i < n { 1e-3 } else { 1.0 };
            s2[i] = f64::exp(rng.random_range(-8.0..0.0));
        }
        let mut total = 0.0;
        for g in 0..groups {
            let r = g * n..(g + 1) * n;
            let (numeric, lambda2) = min_over_shared_lambda(&mu[r.clone()], &s2[r.clone()]);
            let closed = kl_group_ard(&mu[r.clone()], &s2[r.clone()]);
            assert!(
                (numeric - closed).abs() < 1e-9 * (1.0 + closed.abs()),
                "{numeric} vs {closed}"
            );
            let mean: f64 = (0..n)
                .map(|j| mu[g * n + j].powi(2) + s2[g * n + j])
                .sum::<f64>()
                / n as f64;
            assert!(
                (lambda2 / mean - 1.0).abs() < 1e-6,
                "optimal λ² {lambda2} vs {mean}"
            );
            total += closed;
        }
        let to_t = |v: &[f64]| {
            let v: Vec<f32> = v.iter().map(|x| *x as f32).collect();
            Tensor::<2>::from_data(TensorData::new(v, [groups, n]), &dev)
        };
        let sq: Vec<f64> = mu.iter().map(|m| m * m).collect();
        let t = kl_group_ard_t(to_t(&sq), to_t(&s2)).into_scalar::<f32>() as f64;
        assert!(
            (t - total).abs() < 1e-3 * (1.0 + total.abs()),
            "{t} vs {total}"
        );
    }
}
