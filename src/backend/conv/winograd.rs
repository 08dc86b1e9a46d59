//! 3×3 convolutions with unit stride and padding 1 (VGG's and ResNet's) by Winograd's minimal
//! filtering F(m×m, 3×3) (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
//! Networks"): the forward pass, the input gradient and the weight gradient, by F(4×4, 3×3) on
//! maps at least 8 pixels across and by F(2×2, 3×3) on smaller ones ([`takes_f4`]).
//!
//! Each output tile of m×m pixels is read from an input tile `d` of (m+2)×(m+2) as
//! `Y = Aᵀ[U ⊙ V]A`, with `U = G·g·Gᵀ` the transformed 3×3 kernel and `V = Bᵀ·d·B` the
//! transformed input tile (the matrices at [`F2`] and [`F4`]). Summed over input channels, the
//! (m+2)² element-wise products of a tile become (m+2)² GEMMs `M_ξ = U_ξ·V_ξ`
//! (`[O, C]·[C, tiles]`): per m×m outputs and channel pair 16 multiplications instead of 36
//! (F(2×2)) or 36 instead of 144 (F(4×4)). The input gradient is the same convolution of
//! `∂L/∂y` with the flipped, transposed kernel; the weight gradient is the adjoint,
//! `∂L/∂U_ξ = Σ_tiles ∂L/∂M_ξ·V_ξᵀ` with `∂L/∂M = A·∂L/∂Y·Aᵀ`, then `∂L/∂g = Gᵀ·∂L/∂U·G`. In
//! exact arithmetic all three are the direct convolution's; in `f32` they differ by rounding,
//! a few units in the sixth digit of the outputs' scale for F(4×4) (tested against burn's
//! convolution and finite differences).
//!
//! The transforms work on tiles with the channels innermost (the input copied once into a
//! zero-bordered `[h][w][c]` buffer, a row at a time when it is stored channels last), 16
//! channels per AVX-512 operation where the CPU has it, else 8, so that every feature-map
//! size, down to VGG's 2×2 maps, runs in whole vectors; outputs and input gradients are written
//! channels last (`backend/layout.rs`), so that a net of these convolutions never transposes a
//! feature map. Tiles of several samples are multiplied together, in blocks of samples fixed by
//! the geometry (never by the thread count), so that the small late feature maps still make
//! GEMMs of a useful width; every output is computed within one block and the weight
//! gradient's partial sums are added in a fixed order, so results do not depend on the number
//! of threads.

use std::mem::MaybeUninit;
use std::ops::{Add, Mul, Neg, Sub};

use multiversion::multiversion;
use rayon::prelude::*;
use wide::f32x8;

use super::Geometry;
use crate::backend::layout::Order;
use crate::backend::matmul::{Mat, gemm_into_strided, gemm_into_t};

/// Tiles aimed at per block of samples (the GEMMs' width).
const TILES_PER_BLOCK: usize = 64;

/// Whether [`forward`], [`input_gradient`] and [`weight_gradient`] compute this convolution: a
/// 3×3 kernel, unit stride, padding 1, and enough channels on both sides that the narrow
/// GEMMs pay for the transforms.
pub fn applies(g: &Geometry) -> bool {
    g.kh == 3 && g.kw == 3 && g.s == [1, 1] && g.p == [1, 1] && g.c >= 8 && g.o >= 8
}

/// Whether a map of `h × w` pixels takes F(4×4, 3×3) rather than F(2×2, 3×3): at least 8
/// pixels across. On smaller maps most of a 4×4 tile's 6×6 input is the zero border and the
/// weight gradient's products get few tiles to sum over (VGG's 4×4 maps measured as fast or
/// faster by F(2×2, 3×3)).
pub(super) fn takes_f4(h: usize, w: usize) -> bool {
    h.min(w) >= 8
}

/// Channels of one pixel in a transform: 16 of them in an AVX-512 register ([`Zmm`]), 8 in a
/// [`f32x8`], or one ([`f32`]).
trait Lanes:
    Copy + Add<Output = Self> + Sub<Output = Self> + Neg<Output = Self> + Mul<Output = Self>
{
    /// `k` in every lane.
    fn splat(k: f32) -> Self;
    /// The channels at `s[at..]`.
    fn load(s: &[f32], at: usize) -> Self;
    /// Into `s[at..]`.
    fn store(self, s: &mut [f32], at: usize);
    /// Into `s[at..]`, uninitialised before.
    fn store_new(self, s: &mut [MaybeUninit<f32>], at: usize);
    /// `k·self`.
    #[inline(always)]
    fn scale(self, k: f32) -> Self {
        self * Self::splat(k)
    }
}

impl Lanes for f32 {
    #[inline(always)]
    fn splat(k: f32) -> Self {
        k
    }
    #[inline(always)]
    fn load(s: &[f32], at: usize) -> Self {
        s[at]
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], at: usize) {
        s[at] = self;
    }
    #[inline(always)]
    fn store_new(self, s: &mut [MaybeUninit<f32>], at: usize) {
        s[at].write(self);
    }
}

impl Lanes for f32x8 {
    #[inline(always)]
    fn splat(k: f32) -> Self {
        f32x8::splat(k)
    }
    #[inline(always)]
    fn load(s: &[f32], at: usize) -> Self {
        f32x8::new(s[at..at + LANES].try_into().expect("a full vector"))
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], at: usize) {
        s[at..at + LANES].copy_from_slice(&self.to_array());
    }
    #[inline(always)]
    fn store_new(self, s: &mut [MaybeUninit<f32>], at: usize) {
        for (d, v) in s[at..at + LANES].iter_mut().zip(self.to_array()) {
            d.write(v);
        }
    }
}

/// 16 channels in one AVX-512 register, for the transforms' widest runs ([`by_lanes!`]).
///
/// A `Zmm` is made only where [`zmm_available`] said the CPU has AVX-512F: that is what makes
/// its intrinsics sound to call. Its operations are `#[inline(always)]` and the code using
/// them has no closures, so that they are compiled into the transforms' AVX-512 clones rather
/// than called.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Zmm(std::arch::x86_64::__m512);

/// Whether this CPU runs AVX-512F (detected once, then cached by the standard library).
fn zmm_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod zmm {
    use std::arch::x86_64::*;
    use std::ops::{Add, Mul, Neg, Sub};

    use super::{Lanes, MaybeUninit, Zmm};

    // SAFETY (every `unsafe` below): a `Zmm` exists only on a CPU with AVX-512F (see `Zmm`),
    // and loads and stores go through bounds-checked slices.
    impl Add for Zmm {
        type Output = Self;
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            Zmm(unsafe { _mm512_add_ps(self.0, b.0) })
        }
    }
    impl Sub for Zmm {
        type Output = Self;
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            Zmm(unsafe { _mm512_sub_ps(self.0, b.0) })
        }
    }
    impl Mul for Zmm {
        type Output = Self;
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            Zmm(unsafe { _mm512_mul_ps(self.0, b.0) })
        }
    }
    impl Neg for Zmm {
        type Output = Self;
        #[inline(always)]
        fn neg(self) -> Self {
            // The sign bit flipped, as `-x` of an `f32` (also for zeros).
            Zmm(unsafe {
                let sign = _mm512_set1_epi32(i32::MIN);
                _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(self.0), sign))
            })
        }
    }
    impl Lanes for Zmm {
        #[inline(always)]
        fn splat(k: f32) -> Self {
            Zmm(unsafe { _mm512_set1_ps(k) })
        }
        #[inline(always)]
        fn load(s: &[f32], at: usize) -> Self {
            let v = &s[at..at + 16];
            Zmm(unsafe { _mm512_loadu_ps(v.as_ptr()) })
        }
        #[inline(always)]
        fn store(self, s: &mut [f32], at: usize) {
            let v = &mut s[at..at + 16];
            unsafe { _mm512_storeu_ps(v.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn store_new(self, s: &mut [MaybeUninit<f32>], at: usize) {
            // `MaybeUninit<f32>` has the layout of an `f32`.
            let v = &mut s[at..at + 16];
            unsafe { _mm512_storeu_ps(v.as_mut_ptr().cast(), self.0) }
        }
    }
}

/// Where the elements of a small 2-d array of channel runs lie in a slice: element `(p, q)`
/// at `base + p·row + q·col`.
#[derive(Clone, Copy)]
struct Grid {
    base: usize,
    row: usize,
    col: usize,
}

impl Grid {
    #[inline(always)]
    fn at(self, p: usize, q: usize) -> usize {
        self.base + p * self.row + q * self.col
    }

    /// The same grid, `d` elements on.
    #[inline(always)]
    fn shift(self, d: usize) -> Self {
        Self {
            base: self.base + d,
            ..self
        }
    }
}

/// Where a tile operation writes: a buffer of values, or a new one not yet initialised.
trait Dest {
    /// `v` at `self[at..]`.
    fn put<L: Lanes>(&mut self, v: L, at: usize);
}

impl Dest for [f32] {
    #[inline(always)]
    fn put<L: Lanes>(&mut self, v: L, at: usize) {
        v.store(self, at);
    }
}

impl Dest for [MaybeUninit<f32>] {
    #[inline(always)]
    fn put<L: Lanes>(&mut self, v: L, at: usize) {
        v.store_new(self, at);
    }
}

/// A 1-d transform: an `O × I` matrix applied to a column of `I`.
trait Map<const I: usize, const O: usize> {
    fn map<L: Lanes>(z: [L; I]) -> [L; O];
}

/// `F·X·Fᵀ` for the 1-d transform `F` of the `I × I` array `X` of `src` at `from`, into `dst`
/// at `to`, rows `< keep[0]` and columns `< keep[1]` of the `O × O` result only. Columns
/// first, then rows; written without closures (see [`Zmm`]).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // Index loops over the small arrays, on purpose (above).
fn two_sided<F: Map<I, O>, L: Lanes, D: Dest + ?Sized, const I: usize, const O: usize>(
    (src, from): (&[f32], Grid),
    (dst, to): (&mut D, Grid),
    keep: [usize; 2],
) {
    // `cols[q][i]`: row i of F·X, column q (every column a copy of the first to begin with:
    // a zeroed array was a library call per tile).
    let mut z = [L::load(src, from.at(0, 0)); I];
    for p in 1..I {
        z[p] = L::load(src, from.at(p, 0));
    }
    let mut cols = [F::map(z); I];
    for q in 1..I {
        for p in 0..I {
            z[p] = L::load(src, from.at(p, q));
        }
        cols[q] = F::map(z);
    }
    for i in 0..keep[0] {
        for q in 0..I {
            z[q] = cols[q][i];
        }
        let row = F::map(z);
        for j in 0..keep[1] {
            dst.put(row[j], to.at(i, j));
        }
    }
}

/// One of Winograd's algorithms F(m×m, 3×3): its tile sizes and its tile operations, each a
/// [`two_sided`] product with its 1-d transforms `Bᵀ` (input, `T × T` with `T = m + 2`), `Aᵀ`
/// (output, `m × T`), `A` (the adjoint of `Aᵀ`) and `G`, `Gᵀ` (kernel, `T × 3`).
trait Variant {
    /// Output pixels per tile side, m.
    const M: usize;
    /// Input pixels per tile side, m + 2.
    const T: usize = Self::M + 2;
    /// Transformed-tile positions ξ, T².
    const XI: usize = Self::T * Self::T;

    /// `V = Bᵀ·d·B` of the channels `L` holds of one input tile `d` at `from` (`T × T`), `V_ξ`
    /// (ξ = T·i + j) at `to.at(i, j)`.
    fn tile_in<L: Lanes>(src: (&[f32], Grid), dst: (&mut [f32], Grid));

    /// `Y = Aᵀ·M·A` of the channels `L` holds of one tile `M` at `from` (`T × T`), output
    /// `(i, j)` at `to.at(i, j)` for `i < keep[0]`, `j < keep[1]` (the rest is outside the
    /// image).
    fn tile_out<L: Lanes>(
        src: (&[f32], Grid),
        dst: (&mut [MaybeUninit<f32>], Grid),
        keep: [usize; 2],
    );

    /// `∂L/∂M = A·∂L/∂Y·Aᵀ` of the channels `L` holds of one tile (the adjoint of
    /// [`Variant::tile_out`]): `∂L/∂Y` at `from` (`m × m`), `∂L/∂M_ξ` at `to.at(i, j)`.
    fn tile_out_adjoint<L: Lanes>(src: (&[f32], Grid), dst: (&mut [f32], Grid));

    /// `U = G·g·Gᵀ` of a 3×3 kernel `g` (row-major) into `u` (`U_ξ` at `u[ξ]`).
    fn kernel(g: &[f32; 9], u: &mut [f32]);

    /// `∂L/∂g = Gᵀ·∂L/∂U·G` (row-major 3×3) of `∂L/∂U` at `from` (`T × T`).
    fn kernel_adjoint(src: (&[f32], Grid)) -> [f32; 9];
}

/// A 3×3 kernel, row-major.
const KERNEL: Grid = Grid {
    base: 0,
    row: 3,
    col: 1,
};

/// A `t × t` array, row-major.
const fn square(t: usize) -> Grid {
    Grid {
        base: 0,
        row: t,
        col: 1,
    }
}

/// Everything in a `t × t` result kept.
const fn all(t: usize) -> [usize; 2] {
    [t, t]
}

/// F(2×2, 3×3):
///
/// ```text
/// Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],  G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
/// Aᵀ = [1 1 1 0; 0 1 −1 −1].
/// ```
struct F2;

/// F(2×2, 3×3)'s 1-d transforms.
struct Bt2;
struct At2;
struct A2;
struct G2;
struct Gt2;

impl Map<4, 4> for Bt2 {
    #[inline(always)]
    fn map<L: Lanes>([z0, z1, z2, z3]: [L; 4]) -> [L; 4] {
        [z0 - z2, z1 + z2, z2 - z1, z1 - z3]
    }
}

impl Map<4, 2> for At2 {
    #[inline(always)]
    fn map<L: Lanes>([z0, z1, z2, z3]: [L; 4]) -> [L; 2] {
        [z0 + z1 + z2, z1 - z2 - z3]
    }
}

impl Map<2, 4> for A2 {
    #[inline(always)]
    fn map<L: Lanes>([z0, z1]: [L; 2]) -> [L; 4] {
        [z0, z0 + z1, z0 - z1, -z1]
    }
}

impl Map<3, 4> for G2 {
    #[inline(always)]
    fn map<L: Lanes>([a, b, c]: [L; 3]) -> [L; 4] {
        [a, (a + b + c).scale(0.5), (a - b + c).scale(0.5), c]
    }
}

impl Map<4, 3> for Gt2 {
    #[inline(always)]
    fn map<L: Lanes>([u0, u1, u2, u3]: [L; 4]) -> [L; 3] {
        let half = (u1 + u2).scale(0.5);
        [u0 + half, (u1 - u2).scale(0.5), half + u3]
    }
}

impl Variant for F2 {
    const M: usize = 2;

    #[inline(always)]
    fn tile_in<L: Lanes>(src: (&[f32], Grid), dst: (&mut [f32], Grid)) {
        two_sided::<Bt2, L, _, 4, 4>(src, dst, all(4));
    }

    #[inline(always)]
    fn tile_out<L: Lanes>(
        src: (&[f32], Grid),
        dst: (&mut [MaybeUninit<f32>], Grid),
        keep: [usize; 2],
    ) {
        two_sided::<At2, L, _, 4, 2>(src, dst, keep);
    }

    #[inline(always)]
    fn tile_out_adjoint<L: Lanes>(src: (&[f32], Grid), dst: (&mut [f32], Grid)) {
        two_sided::<A2, L, _, 2, 4>(src, dst, all(4));
    }

    fn kernel(g: &[f32; 9], u: &mut [f32]) {
        two_sided::<G2, f32, _, 3, 4>((g, KERNEL), (u, square(4)), all(4));
    }

    fn kernel_adjoint(src: (&[f32], Grid)) -> [f32; 9] {
        let mut k = [0.0; 9];
        two_sided::<Gt2, f32, [f32], 4, 3>(src, (&mut k, KERNEL), all(3));
        k
    }
}

/// F(4×4, 3×3), interpolating at 0, ±1, ±2 and ∞:
///
/// ```text
/// Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1],
/// G  = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1],
/// Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1].
/// ```
struct F4;

/// F(4×4, 3×3)'s 1-d transforms.
struct Bt4;
struct At4;
struct A4;
struct G4;
struct Gt4;

impl Map<6, 6> for Bt4 {
    #[inline(always)]
    fn map<L: Lanes>([z0, z1, z2, z3, z4, z5]: [L; 6]) -> [L; 6] {
        let (a, b) = (z4 - z2.scale(4.0), z3 - z1.scale(4.0));
        let (c, d) = (z4 - z2, (z3 - z1).scale(2.0));
        [
            z0.scale(4.0) - z2.scale(5.0) + z4,
            a + b,
            a - b,
            c + d,
            c - d,
            z1.scale(4.0) - z3.scale(5.0) + z5,
        ]
    }
}

impl Map<6, 4> for At4 {
    #[inline(always)]
    fn map<L: Lanes>([z0, z1, z2, z3, z4, z5]: [L; 6]) -> [L; 4] {
        let (p, q, r, s) = (z1 + z2, z1 - z2, z3 + z4, z3 - z4);
        [
            z0 + p + r,
            q + s.scale(2.0),
            p + r.scale(4.0),
            q + s.scale(8.0) + z5,
        ]
    }
}

impl Map<4, 6> for A4 {
    #[inline(always)]
    fn map<L: Lanes>([w0, w1, w2, w3]: [L; 4]) -> [L; 6] {
        let (e, f) = (w0 + w2, w1 + w3);
        let (g, h) = (w0 + w2.scale(4.0), w1.scale(2.0) + w3.scale(8.0));
        [w0, e + f, e - f, g + h, g - h, w3]
    }
}

impl Map<3, 6> for G4 {
    #[inline(always)]
    fn map<L: Lanes>([a, b, c]: [L; 3]) -> [L; 6] {
        let (s, d) = ((a + c).scale(1.0 / 6.0), b.scale(1.0 / 6.0));
        let (s2, d2) = ((a.scale(0.25) + c).scale(1.0 / 6.0), b.scale(1.0 / 12.0));
        [a.scale(0.25), -(s + d), d - s, s2 + d2, s2 - d2, c]
    }
}

impl Map<6, 3> for Gt4 {
    #[inline(always)]
    fn map<L: Lanes>([u0, u1, u2, u3, u4, u5]: [L; 6]) -> [L; 3] {
        let (p, q, r, s) = (u1 + u2, u2 - u1, u3 + u4, u3 - u4);
        [
            u0.scale(0.25) - p.scale(1.0 / 6.0) + r.scale(1.0 / 24.0),
            q.scale(1.0 / 6.0) + s.scale(1.0 / 12.0),
            (r - p).scale(1.0 / 6.0) + u5,
        ]
    }
}

impl Variant for F4 {
    const M: usize = 4;

    #[inline(always)]
    fn tile_in<L: Lanes>(src: (&[f32], Grid), dst: (&mut [f32], Grid)) {
        two_sided::<Bt4, L, _, 6, 6>(src, dst, all(6));
    }

    #[inline(always)]
    fn tile_out<L: Lanes>(
        src: (&[f32], Grid),
        dst: (&mut [MaybeUninit<f32>], Grid),
        keep: [usize; 2],
    ) {
        two_sided::<At4, L, _, 6, 4>(src, dst, keep);
    }

    #[inline(always)]
    fn tile_out_adjoint<L: Lanes>(src: (&[f32], Grid), dst: (&mut [f32], Grid)) {
        two_sided::<A4, L, _, 4, 6>(src, dst, all(6));
    }

    fn kernel(g: &[f32; 9], u: &mut [f32]) {
        two_sided::<G4, f32, _, 3, 6>((g, KERNEL), (u, square(6)), all(6));
    }

    fn kernel_adjoint(src: (&[f32], Grid)) -> [f32; 9] {
        let mut k = [0.0; 9];
        two_sided::<Gt4, f32, [f32], 6, 3>(src, (&mut k, KERNEL), all(3));
        k
    }
}

/// The tiling of one image plane `h × w` (output = input size) by `V`: `th × tw` tiles of
/// `m × m` outputs, read from a zero-bordered plane of `ph × pw` pixels.
#[derive(Clone, Copy)]
struct Tiling {
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
    ph: usize,
    pw: usize,
}

impl Tiling {
    fn new<V: Variant>(h: usize, w: usize) -> Self {
        let (th, tw) = (h.div_ceil(V::M), w.div_ceil(V::M));
        Self {
            h,
            w,
            th,
            tw,
            ph: V::M * th + 2,
            pw: V::M * tw + 2,
        }
    }

    fn tiles(&self) -> usize {
        self.th * self.tw
    }

    /// Samples per block: about [`TILES_PER_BLOCK`] tiles, at most 32 samples.
    fn samples_per_block(&self) -> usize {
        (TILES_PER_BLOCK / self.tiles()).clamp(1, 32)
    }
}

/// `U = G·g·Gᵀ` of each kernel, as `[ξ][cols][rows]` (each `U_ξ` column-major, so that the
/// GEMM packs it with vector loads), where kernel `(r, q)` is `w[(r, q)]` when `!flip`
/// (`w: [rows, cols, 3, 3]`), or, with `flip`, the input gradient's kernel
/// `w'[c, o] = rot180(w[o, c])` (`w: [cols, rows, 3, 3]`).
fn kernel_transform<V: Variant>(w: &[f32], rows: usize, cols: usize, flip: bool) -> Vec<f32> {
    /// Kernels transformed together: their values are gathered in a small buffer and
    /// written out as one run per ξ (scattered stores per kernel fall in the same cache sets).
    const RUN: usize = 64;
    let mut u = vec![0.0f32; V::XI * rows * cols];
    let mut run = [[0.0f32; RUN]; 36];
    let mut ui = [0.0f32; 36];
    for q in 0..cols {
        for r0 in (0..rows).step_by(RUN) {
            let n = RUN.min(rows - r0);
            for (i, r) in (r0..r0 + n).enumerate() {
                let k = if flip {
                    let src = &w[(q * rows + r) * 9..][..9];
                    std::array::from_fn(|i| src[8 - i])
                } else {
                    let src = &w[(r * cols + q) * 9..][..9];
                    std::array::from_fn(|i| src[i])
                };
                V::kernel(&k, &mut ui);
                for (xi, v) in ui[..V::XI].iter().enumerate() {
                    run[xi][i] = *v;
                }
            }
            for (xi, vals) in run[..V::XI].iter().enumerate() {
                u[(xi * cols + q) * rows + r0..][..n].copy_from_slice(&vals[..n]);
            }
        }
    }
    u
}

/// Channels per [`f32x8`] and per [`Zmm`] in the transforms (their inner dimension).
const LANES: usize = 8;
const WIDE: usize = 16;

/// `x` (samples `[nb, c, h, w]` stored in `order`) into `pad` (`[nb][ph][pw][c]`): channels
/// innermost, the image at rows and columns `lead..` (1 for the inputs of tiles, which start
/// one pixel above and left of their outputs; 0 for output gradients), zeros around it.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn to_padded_hwc(t: Tiling, c: usize, lead: usize, x: &[f32], order: Order, pad: &mut [f32]) {
    let plane = t.h * t.w;
    let (ph, pw) = (t.ph, t.pw);
    if order == Order::Nhwc {
        // Whole image rows: zeros, the row, zeros.
        for (s, xs) in x.chunks_exact(c * plane).enumerate() {
            let ps = &mut pad[s * ph * pw * c..][..ph * pw * c];
            for (r, row) in ps.chunks_exact_mut(pw * c).enumerate() {
                match r.checked_sub(lead).filter(|&r| r < t.h) {
                    Some(r) => {
                        row[..lead * c].fill(0.0);
                        row[lead * c..(lead + t.w) * c]
                            .copy_from_slice(&xs[r * t.w * c..][..t.w * c]);
                        row[(lead + t.w) * c..].fill(0.0);
                    }
                    None => row.fill(0.0),
                }
            }
        }
        return;
    }
    for (s, xs) in x.chunks_exact(c * plane).enumerate() {
        let ps = &mut pad[s * ph * pw * c..][..ph * pw * c];
        // Zeros first (one pass; the border is what stays of them).
        ps.fill(0.0);
        // A row at a time (its pixels' lines stay in cache while every channel is written).
        for r in 0..t.h {
            let row = &mut ps[((r + lead) * pw + lead) * c..][..t.w * c];
            for (ci, src) in xs.chunks_exact(plane).enumerate() {
                for (px, v) in row.chunks_exact_mut(c).zip(&src[r * t.w..][..t.w]) {
                    px[ci] = *v;
                }
            }
        }
    }
}

/// `$body` over the channels `0..$c` in runs: [`WIDE`] at a time in a [`Zmm`] (if `$wide`),
/// then [`LANES`] at a time in an [`f32x8`], then one at a time in an [`f32`]; `$ch` is a
/// run's first channel and `$L` its type. (A macro, not a closure: see [`Zmm`].)
macro_rules! by_lanes {
    ($c:expr, $wide:expr, |$ch:ident, $L:ident| $body:expr) => {{
        let (c, wide) = ($c, $wide);
        let mut $ch = 0usize;
        #[cfg(target_arch = "x86_64")]
        if wide {
            type $L = Zmm;
            while $ch + WIDE <= c {
                $body;
                $ch += WIDE;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = wide;
        {
            type $L = f32x8;
            while $ch + LANES <= c {
                $body;
                $ch += LANES;
            }
        }
        {
            type $L = f32;
            while $ch < c {
                $body;
                $ch += 1;
            }
        }
    }};
}

/// `V = Bᵀ·d·B` of every tile of `pad` (from [`to_padded_hwc`]) into `v` (`[nb·tiles][ξ][c]`,
/// tile index `(sample, ty, tx)`, a tile's positions side by side): a tile at a time, a run
/// of channels per vector operation.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn input_transform<V: Variant>(t: Tiling, c: usize, pad: &[f32], v: &mut [f32]) {
    let wide = zmm_available();
    let (ph, pw) = (t.ph, t.pw);
    let nb = pad.len() / (ph * pw * c);
    let mut k = 0;
    for s in 0..nb {
        for ty in 0..t.th {
            for tx in 0..t.tw {
                let from = Grid {
                    base: ((s * ph + V::M * ty) * pw + V::M * tx) * c,
                    row: pw * c,
                    col: c,
                };
                let to = Grid {
                    base: k * V::XI * c,
                    row: V::T * c,
                    col: c,
                };
                by_lanes!(c, wide, |ch, L| V::tile_in::<L>(
                    (pad, from.shift(ch)),
                    (&mut *v, to.shift(ch))
                ));
                k += 1;
            }
        }
    }
}

/// `Y = Aᵀ·M·A` of every tile of `m` (`[nb·tiles][ξ][o]`) into `y` (`[nb][h][w][o]`), the
/// parts of edge tiles outside the image dropped: a tile at a time, a run of channels per
/// vector operation.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn output_transform<V: Variant>(t: Tiling, o: usize, m: &[f32], y: &mut [MaybeUninit<f32>]) {
    let wide = zmm_available();
    let plane = t.h * t.w;
    let nb = y.len() / (o * plane);
    let mut k = 0;
    for s in 0..nb {
        for ty in 0..t.th {
            for tx in 0..t.tw {
                let from = Grid {
                    base: k * V::XI * o,
                    row: V::T * o,
                    col: o,
                };
                let (r, q) = (V::M * ty, V::M * tx);
                let to = Grid {
                    base: ((s * t.h + r) * t.w + q) * o,
                    row: t.w * o,
                    col: o,
                };
                let keep = [V::M.min(t.h - r), V::M.min(t.w - q)];
                by_lanes!(o, wide, |ch, L| V::tile_out::<L>(
                    (m, from.shift(ch)),
                    (&mut *y, to.shift(ch)),
                    keep
                ));
                k += 1;
            }
        }
    }
}

/// `∂L/∂M` of every tile of `pad` (output gradients from [`to_padded_hwc`] with lead 0) into
/// `dm` (`[nb·tiles][ξ][o]`): a tile at a time, a run of channels per vector operation.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn output_gradient_transform<V: Variant>(t: Tiling, o: usize, pad: &[f32], dm: &mut [f32]) {
    let wide = zmm_available();
    let (ph, pw) = (t.ph, t.pw);
    let nb = pad.len() / (ph * pw * o);
    let mut k = 0;
    for s in 0..nb {
        for ty in 0..t.th {
            for tx in 0..t.tw {
                let from = Grid {
                    base: ((s * ph + V::M * ty) * pw + V::M * tx) * o,
                    row: pw * o,
                    col: o,
                };
                let to = Grid {
                    base: k * V::XI * o,
                    row: V::T * o,
                    col: o,
                };
                by_lanes!(o, wide, |ch, L| V::tile_out_adjoint::<L>(
                    (pad, from.shift(ch)),
                    (&mut *dm, to.shift(ch))
                ));
                k += 1;
            }
        }
    }
}

/// Tiles aimed at per product of the weight gradient (its inner dimension).
const GRAD_TILES_PER_BLOCK: usize = 256;

/// Parts the weight gradient's batch is cut into (each a fixed run of samples, summed in
/// order, so that the bits do not depend on the number of threads).
const GRAD_PARTS: usize = 8;

/// `∂L/∂w` (`[o, c, 3, 3]`) for a geometry that [`applies`]: per transformed position ξ,
/// `∂L/∂U_ξ = Σ_tiles ∂L/∂M_ξ·V_ξᵀ` (`[o, tiles]·[tiles, c]`, the inner dimension as long as
/// the tiles of many samples), then `∂L/∂g = Gᵀ·∂L/∂U·G` for every kernel.
pub fn weight_gradient(g: &Geometry, x: (&[f32], Order), gy: (&[f32], Order)) -> Vec<f32> {
    if takes_f4(g.h, g.w) {
        weight_gradient_by::<F4>(g, x, gy)
    } else {
        weight_gradient_by::<F2>(g, x, gy)
    }
}

fn weight_gradient_by<V: Variant>(
    g: &Geometry,
    (x, xo): (&[f32], Order),
    (gy, go): (&[f32], Order),
) -> Vec<f32> {
    let (c, o) = (g.c, g.o);
    let t = Tiling::new::<V>(g.h, g.w);
    let plane = t.h * t.w;
    let padded = t.ph * t.pw;
    let per_part = g.n.div_ceil(GRAD_PARTS).max(1);
    let spb = (GRAD_TILES_PER_BLOCK / t.tiles()).clamp(1, per_part);
    let parts: Vec<Vec<f32>> = x
        .par_chunks(per_part * c * plane)
        .zip(gy.par_chunks(per_part * o * plane))
        .map(|(xp, gp)| {
            // `∂L/∂U_ξ`, stored `[ξ][c][o]`.
            let mut du = vec![0.0f32; V::XI * c * o];
            for (bi, (xb, gb)) in xp
                .chunks(spb * c * plane)
                .zip(gp.chunks(spb * o * plane))
                .enumerate()
            {
                let nb = xb.len() / (c * plane);
                let cols = nb * t.tiles();
                let n = [
                    nb * padded * c,
                    V::XI * cols * c,
                    nb * padded * o,
                    V::XI * cols * o,
                ];
                with_scratch(n, |[pad, v, gpad, dm]| {
                    to_padded_hwc(t, c, 1, xb, xo, pad);
                    input_transform::<V>(t, c, pad, v);
                    to_padded_hwc(t, o, 0, gb, go, gpad);
                    output_gradient_transform::<V>(t, o, gpad, dm);
                    for k in 0..V::XI {
                        gemm_into_t(
                            &mut du[k * c * o..][..c * o],
                            Mat::strided(&dm[k * o..], o, cols, 1, V::XI * o),
                            Mat::strided(&v[k * c..], cols, c, V::XI * c, 1),
                            bi > 0,
                        );
                    }
                });
            }
            du
        })
        .collect();
    // The parts added in order, element by element (blocks in parallel).
    let mut du = vec![0.0f32; V::XI * c * o];
    du.par_chunks_mut(crate::backend::PASS_BLOCK)
        .enumerate()
        .for_each(|(i, block)| {
            for part in &parts {
                let part = &part[i * crate::backend::PASS_BLOCK..][..block.len()];
                for (a, b) in block.iter_mut().zip(part) {
                    *a += b;
                }
            }
        });
    // ∂L/∂g = Gᵀ·∂L/∂U·G per kernel.
    let mut dw = vec![0.0f32; o * c * 9];
    dw.par_chunks_mut(c * 9).enumerate().for_each(|(oc, dw)| {
        for (ci, k) in dw.chunks_exact_mut(9).enumerate() {
            // `∂L/∂U_ξ` of this kernel: ξ = T·i + j at `((T·i + j)·c + ci)·o + oc`.
            let from = Grid {
                base: ci * o + oc,
                row: V::T * c * o,
                col: c * o,
            };
            k.copy_from_slice(&V::kernel_adjoint((&du, from)));
        }
    });
    dw
}

/// Buffers of the blocks a thread runs, kept between convolutions (every element is written
/// before it is read, so a buffer is only grown, never cleared).
#[derive(Default)]
struct Scratch([Vec<f32>; 4]);

impl Scratch {
    /// Buffers of `n[i]` elements.
    fn take(&mut self, n: [usize; 4]) -> [&mut [f32]; 4] {
        let mut bufs = self.0.iter_mut().zip(n);
        std::array::from_fn(|_| {
            let (v, n) = bufs.next().expect("four buffers");
            if v.len() < n {
                v.resize(n, 0.0);
            }
            &mut v[..n]
        })
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// `f` with this thread's [`Scratch`] buffers of `n[i]` elements.
fn with_scratch<R>(n: [usize; 4], f: impl FnOnce([&mut [f32]; 4]) -> R) -> R {
    SCRATCH.with_borrow_mut(|s| f(s.take(n)))
}

/// The convolution of `x` (`[n, c, h, w]` stored in `order`) with the 3×3 kernels `w`
/// (`[o, c, 3, 3]`, or with `flip`, `[c, o, 3, 3]` read as the input gradient's kernel, see
/// [`kernel_transform`]), padding 1, by `V`: `[n, o, h, w]` stored channels last.
fn convolve<V: Variant>(
    [n, c, h, wd]: [usize; 4],
    o: usize,
    (x, order): (&[f32], Order),
    (w, flip): (&[f32], bool),
) -> Vec<f32> {
    let u = kernel_transform::<V>(w, o, c, flip);
    let t = Tiling::new::<V>(h, wd);
    let spb = t.samples_per_block();
    let plane = t.h * t.w;
    let padded = t.ph * t.pw * c;
    // SAFETY: a block is `nb` whole samples of the output, and `output_transform` writes all
    // of them: its tiles cover every pixel, `by_lanes!` every channel.
    unsafe {
        crate::backend::par_new(n * o * plane, spb * o * plane, |i, yb| {
            let nb = yb.len() / (o * plane);
            let xb = &x[i * spb * c * plane..][..nb * c * plane];
            let cols = nb * t.tiles();
            with_scratch(
                [nb * padded, V::XI * cols * c, V::XI * cols * o, 0],
                |[pad, v, m, _]| {
                    to_padded_hwc(t, c, 1, xb, order, pad);
                    input_transform::<V>(t, c, pad, v);
                    for k in 0..V::XI {
                        // `M_ξ = U_ξ·V_ξ` (`[o, c]·[c, tiles]`), in `m` at `[tiles][ξ][o]`.
                        gemm_into_strided(
                            &mut m[k * o..],
                            [1, V::XI * o],
                            Mat::new(&u[k * c * o..][..c * o], c, o).t(),
                            Mat::strided(&v[k * c..], cols, c, V::XI * c, 1).t(),
                            false,
                        );
                    }
                    output_transform::<V>(t, o, m, yb);
                },
            );
        })
    }
}

/// `y = x ⋆ w` for a geometry that [`applies`]: `[n, o, h, w]` stored channels last.
pub fn forward(g: &Geometry, x: (&[f32], Order), w: &[f32]) -> Vec<f32> {
    let shape = [g.n, g.c, g.h, g.w];
    if takes_f4(g.h, g.w) {
        convolve::<F4>(shape, g.o, x, (w, false))
    } else {
        convolve::<F2>(shape, g.o, x, (w, false))
    }
}

/// `∂L/∂x`, stored channels last: the convolution of `gy` with the flipped, transposed kernel.
pub fn input_gradient(g: &Geometry, w: &[f32], gy: (&[f32], Order)) -> Vec<f32> {
    let shape = [g.n, g.o, g.h, g.w];
    if takes_f4(g.h, g.w) {
        convolve::<F4>(shape, g.c, gy, (w, true))
    } else {
        convolve::<F2>(shape, g.c, gy, (w, true))
    }
}
