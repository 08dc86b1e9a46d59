//! Elementary functions in f32 written to vectorise: `e^x` and `ln x` from Cephes' polynomials
//! (≈ 1 ulp), through bit operations and explicit `mul_add`, so that every build (baseline,
//! AVX2, AVX-512) gives the same bits. Used by the fused variational pass, the Box–Muller noise
//! and the evaluation's cross-entropy.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` in f32 (≈ 1 ulp; written to vectorise): `x = n·ln 2 + r`, a degree-6 polynomial for
/// `e^r` on `|r| ≤ ln2/2` (Cephes `expf` coefficients), scaled by `2^n` through the exponent bits.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5·2^23 trick (vectorises without SSE4.1): the sum's low
    // mantissa bits hold n itself, read back without a float→int conversion (a saturating `as`
    // cast does not vectorise).
    let shifted = x * LOG2E + 12_582_912.0;
    let n_int = shifted.to_bits() as i32 - 0x4b40_0000;
    let n = shifted - 12_582_912.0;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5); // 5.0000001201e-1 rounds to 0.5 in f32
    let e = (p * r).mul_add(r, r) + 1.0;
    f32::from_bits(((n_int + 127) << 23) as u32) * e
}

/// `ln x` in f32 for normal `x > 0` (≈ 1 ulp; written to vectorise): `x = 2^e·m` with
/// `m ∈ [√½, √2)`, a degree-9 polynomial in `f = m − 1` (Cephes `logf` coefficients).
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += big as i32;
    let f = m - 1.0;
    let mut p = 7.037_683_6e-2f32;
    p = p.mul_add(f, -1.151_461e-1);
    p = p.mul_add(f, 1.167_699_9e-1);
    p = p.mul_add(f, -1.242_014_1e-1);
    p = p.mul_add(f, 1.424_932_3e-1);
    p = p.mul_add(f, -1.666_805_8e-1);
    p = p.mul_add(f, 2.000_071_4e-1);
    p = p.mul_add(f, -2.499_999_4e-1);
    p = p.mul_add(f, 0.333_333_3);
    let z = f * f;
    let ef = e as f32;
    let y = f * z * p + ef * LN2_LO - 0.5 * z;
    f + y + ef * LN2_HI
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_ln_match_std_to_a_few_ulp() {
        let mut worst = (0.0f32, 0.0f32);
        for i in 0..200_001 {
            let x = -80.0 + 160.0 * i as f32 / 200_000.0;
            let rel = (exp_f32(x) - x.exp()).abs() / x.exp();
            worst.0 = worst.0.max(rel);
        }
        for i in 0..200_001 {
            let x = 1e-9f32 * (1.0f32 + 1e-4).powi(i); // 1e-9 … ~5e-1·e^20
            let want = f64::from(x).ln();
            let err = (f64::from(ln_f32(x)) - want).abs() / want.abs().max(1.0);
            worst.1 = worst.1.max(err as f32);
        }
        assert!(worst.0 < 5e-7, "exp rel err {}", worst.0);
        assert!(worst.1 < 5e-7, "ln err {}", worst.1);
    }
}
