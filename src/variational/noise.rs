//! Standard normal noise for the local reparameterisation: Box–Muller (Box & Muller 1958) on
//! ChaCha8 output, vectorised and spread over rayon's threads, reproducible bit for bit.
//!
//! A call takes one `u64` from the caller's stream as the seed of a ChaCha8 generator; block `c`
//! of [`BLOCK`] values uses that generator's stream `c`, so the values depend only on the seed and
//! the count, never on the thread count. Per pair of 32-bit words, `u₁ = (⌊w₁/2⁸⌋ + 1)·2⁻²⁴ ∈
//! (0, 1]`, `u₂ = ⌊w₂/2⁸⌋·2⁻²⁴ ∈ [0, 1)`, `r = √(−2 ln u₁)` and the pair `r·cos 2πu₂`, `r·sin 2πu₂`
//! (the first half of a block takes the cosines, the second the sines). With 24-bit uniforms
//! `|z| ≤ 5.77`: the tails beyond are cut (probability 8·10⁻⁹).
//!
//! Why: `rand_distr`'s ziggurat, one value at a time from one stream, was a tenth of a sparse-VD
//! MLP train step (52k values a step at batch 128).

use multiversion::multiversion;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::elementary::ln_f32;

/// Values per ChaCha8 stream (and per parallel task).
pub const BLOCK: usize = 4096;

/// `n` standard normal values, row-major for any shape, seeded from `rng` (see the module docs).
pub fn standard_normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let seed = rng.next_u64();
    let mut out = vec![0.0f32; n];
    out.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(c, block)| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            r.set_stream(c as u64);
            let pairs = block.len().div_ceil(2);
            let mut words = [0u32; BLOCK];
            r.fill(&mut words[..2 * pairs]);
            let (w1, w2) = words[..2 * pairs].split_at(pairs);
            box_muller(w1, w2, block);
        });
    out
}

/// Fills `out` (`len ≤ 2·w1.len()`): cosines in the first `w1.len()` values, sines after.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn box_muller(w1: &[u32], w2: &[u32], out: &mut [f32]) {
    box_muller_body(w1, w2, out)
}

/// The same IEEE operations and explicit `mul_add`s in every build, so every build gives the
/// same bits (as in `fused.rs`).
#[inline(always)]
fn box_muller_body(w1: &[u32], w2: &[u32], out: &mut [f32]) {
    let pairs = w1.len();
    let (cos_half, sin_half) = out.split_at_mut(pairs);
    let w2 = &w2[..pairs];
    let full = sin_half.len();
    const SCALE: f32 = 1.0 / 16_777_216.0; // 2⁻²⁴
    let pair = |a: u32, b: u32| {
        let u1 = ((a >> 8) as i32 + 1) as f32 * SCALE;
        let u2 = (b >> 8) as i32 as f32 * SCALE;
        let r = (-2.0 * ln_f32(u1)).sqrt();
        let (s, c) = sin_cos_turns(u2);
        (r * c, r * s)
    };
    // Re-cut to one length: no bounds checks in the loop.
    let (cos_full, a, b) = (&mut cos_half[..full], &w1[..full], &w2[..full]);
    for j in 0..full {
        let (c, s) = pair(a[j], b[j]);
        cos_full[j] = c;
        sin_half[j] = s;
    }
    // An odd count: the last pair's sine is not needed.
    for j in full..pairs {
        cos_half[j] = pair(w1[j], w2[j]).0;
    }
}

/// `(sin 2πu, cos 2πu)` for `u ∈ [0, 1)`, in f32 to a few ulp (written to vectorise): the
/// nearest quarter turn `q` and `a = 2π(u − q/4) ∈ [−π/4, π/4]`, Cephes `sinf`/`cosf`
/// polynomials for `a`, rotated by `q` quarter turns.
#[inline(always)]
pub fn sin_cos_turns(u: f32) -> (f32, f32) {
    let x = 4.0 * u;
    // Round to nearest by the 1.5·2²³ trick, the integer read from the low mantissa bits.
    let shifted = x + 12_582_912.0;
    let q = (shifted.to_bits() as i32 - 0x4b40_0000) & 3;
    let a = (x - (shifted - 12_582_912.0)) * std::f32::consts::FRAC_PI_2;
    let z = a * a;
    let mut ps = -1.951_529_6e-4f32;
    ps = ps.mul_add(z, 8.332_161e-3);
    ps = ps.mul_add(z, -1.666_665_5e-1);
    let sin_a = (ps * z).mul_add(a, a);
    let mut pc = 2.443_315_7e-5f32;
    pc = pc.mul_add(z, -1.388_731_6e-3);
    pc = pc.mul_add(z, 4.166_664_6e-2);
    let cos_a = (pc * z).mul_add(z, (-0.5f32).mul_add(z, 1.0));
    // Rotation by q quarter turns: odd q swaps sine and cosine; the sine is negative for
    // q = 2, 3, the cosine for q = 1, 2.
    let (s, c) = if q & 1 == 1 {
        (cos_a, sin_a)
    } else {
        (sin_a, cos_a)
    };
    let s = if q >= 2 { -s } else { s };
    let c = if q == 1 || q == 2 { -c } else { c };
    (s, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sin_cos_match_std_to_a_few_ulp() {
        let mut worst = 0.0f64;
        for i in 0..1_000_000 {
            let u = i as f32 / 1_000_000.0;
            let (s, c) = sin_cos_turns(u);
            let t = 2.0 * std::f64::consts::PI * f64::from(u);
            worst = worst
                .max((f64::from(s) - t.sin()).abs())
                .max((f64::from(c) - t.cos()).abs());
        }
        assert!(worst < 5e-7, "max abs error {worst}");
    }

    /// Moments and the distribution function at ±3σ match N(0, 1) to within sampling error.
    #[test]
    fn values_are_standard_normal() {
        let n = 1 << 21;
        let z = standard_normals(&mut ChaCha8Rng::seed_from_u64(7), n);
        let m = |k: i32| z.iter().map(|&v| f64::from(v).powi(k)).sum::<f64>() / n as f64;
        // Standard errors at n = 2²¹: mean 7e-4, variance 1e-3, kurtosis 7e-3.
        assert!(m(1).abs() < 4e-3, "mean {}", m(1));
        assert!((m(2) - 1.0).abs() < 6e-3, "variance {}", m(2));
        assert!(m(3).abs() < 1.5e-2, "third moment {}", m(3));
        assert!((m(4) - 3.0).abs() < 4e-2, "fourth moment {}", m(4));
        // Φ at −3…3 (Abramowitz & Stegun, table 26.1); binomial standard errors ≤ 3.5e-4.
        let phi = [
            (-3.0, 0.001_349_9),
            (-2.0, 0.022_750_1),
            (-1.0, 0.158_655_3),
            (0.0, 0.5),
            (1.0, 0.841_344_7),
            (2.0, 0.977_249_9),
            (3.0, 0.998_650_1),
        ];
        for (x, want) in phi {
            let got = z.iter().filter(|&&v| v < x).count() as f64 / n as f64;
            assert!((got - want).abs() < 2e-3, "Φ({x}): {got} vs {want}");
        }
        // Cosine and sine halves of a block are independent: no correlation between them.
        let (a, b) = (&z[..BLOCK / 2], &z[BLOCK / 2..BLOCK]);
        let r: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum::<f64>() / a.len() as f64;
        assert!(r.abs() < 0.1, "cos/sin correlation {r}");
    }

    /// The values depend on the seed and the count only: not on the thread count; the caller's
    /// stream advances, so consecutive calls differ.
    #[test]
    fn reproducible_and_independent_of_threads() {
        let draw = |threads: usize, n: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut rng = ChaCha8Rng::seed_from_u64(11);
                (standard_normals(&mut rng, n), standard_normals(&mut rng, n))
            })
        };
        let n = 3 * BLOCK + 101;
        let (a1, b1) = draw(1, n);
        let (a3, b3) = draw(3, n);
        assert_eq!(a1, a3);
        assert_eq!(b1, b3);
        assert_ne!(a1, b1);
        // Blocks use distinct streams.
        assert_ne!(a1[..BLOCK], a1[BLOCK..2 * BLOCK]);
        assert!(a1.iter().all(|v| v.is_finite() && v.abs() <= 5.8));
    }
}
