//! 3×3 convolutions with unit stride and padding 1 (VGG's and ResNet's) by Winograd's minimal
//! filtering F(2×2, 3×3) (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
//! Networks"): the forward pass, the input gradient and the weight gradient.
//!
//! Each output tile of 2×2 pixels is read from a 4×4 input tile `d` as `Y = Aᵀ[U ⊙ V]A`, with
//! `U = G·g·Gᵀ` the transformed 3×3 kernel, `V = Bᵀ·d·B` the transformed input tile and
//!
//! ```text
//! Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],  G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
//! Aᵀ = [1 1 1 0; 0 1 −1 −1].
//! ```
//!
//! Summed over input channels, the 16 element-wise products of a tile become 16 GEMMs
//! `M_ξ = U_ξ·V_ξ` (`[O, C]·[C, tiles]`): 16 multiplications per 2×2 outputs and channel pair
//! instead of 36, and the input is expanded 4 times (overlapping tiles) instead of im2col's 9.
//! The input gradient is the same convolution of `∂L/∂y` with the flipped, transposed kernel;
//! the weight gradient is the adjoint, `∂L/∂U_ξ = Σ_tiles ∂L/∂M_ξ·V_ξᵀ` with
//! `∂L/∂M = A·∂L/∂Y·Aᵀ`, then `∂L/∂g = Gᵀ·∂L/∂U·G`. In exact arithmetic all three are the
//! direct convolution's; in `f32` they differ by rounding (tested against burn's convolution
//! and finite differences).
//!
//! The transforms work on tiles with the channels innermost (the input copied once into a
//! zero-bordered `[h][w][c]` buffer, a row at a time when it is stored channels last), [`LANES`]
//! channels per vector operation, so that every feature-map size, down to VGG's 2×2 maps, runs
//! in whole vectors; outputs and input gradients are written channels last
//! (`backend/layout.rs`), so that a net of these convolutions never transposes a feature map. Tiles of several samples
//! are multiplied together, in blocks of samples fixed by the geometry (never by the thread
//! count), so that the small late feature maps still make GEMMs of a useful width; every
//! output is computed within one block and the weight gradient's partial sums are added in a
//! fixed order, so results do not depend on the number of threads.

use std::ops::{Add, Neg, Sub};

use multiversion::multiversion;
use rayon::prelude::*;
use wide::f32x8;

use super::Geometry;
use crate::backend::layout::Order;
use crate::backend::matmul::{Mat, gemm_into_strided, gemm_into_t};

/// Transformed-tile positions: 4×4.
const XI: usize = 16;

/// Tiles aimed at per block of samples (the GEMMs' width).
const TILES_PER_BLOCK: usize = 64;

/// Whether [`forward`], [`input_gradient`] and [`weight_gradient`] compute this convolution: a
/// 3×3 kernel, unit stride, padding 1, and enough channels on both sides that the 16 narrow
/// GEMMs pay for the transforms.
pub fn applies(g: &Geometry) -> bool {
    g.kh == 3 && g.kw == 3 && g.s == [1, 1] && g.p == [1, 1] && g.c >= 8 && g.o >= 8
}

/// The tiling of one image plane `h × w` (output = input size): `th × tw` tiles of 2×2.
#[derive(Clone, Copy)]
struct Tiling {
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
}

impl Tiling {
    fn new(h: usize, w: usize) -> Self {
        Self {
            h,
            w,
            th: h.div_ceil(2),
            tw: w.div_ceil(2),
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

/// `U = G·g·Gᵀ` of each kernel, as `[16][cols][rows]` (each `U_ξ` column-major, so that the GEMM
/// packs it with vector loads), where kernel `(r, q)` is `w[(r, q)]` when `!flip`
/// (`w: [rows, cols, 3, 3]`), or, with `flip`, the input gradient's kernel
/// `w'[c, o] = rot180(w[o, c])` (`w: [cols, rows, 3, 3]`).
fn kernel_transform(w: &[f32], rows: usize, cols: usize, flip: bool) -> Vec<f32> {
    /// Kernels transformed together: their 16 values are gathered in a small buffer and
    /// written out as 16 runs (16 scattered stores per kernel fall in the same cache sets).
    const RUN: usize = 64;
    let mut u = vec![0.0f32; XI * rows * cols];
    let mut run = [[0.0f32; RUN]; XI];
    for q in 0..cols {
        for r0 in (0..rows).step_by(RUN) {
            let n = RUN.min(rows - r0);
            for (i, r) in (r0..r0 + n).enumerate() {
                let k = if flip {
                    let src = &w[(q * rows + r) * 9..][..9];
                    std::array::from_fn::<f32, 9, _>(|i| src[8 - i])
                } else {
                    let src = &w[(r * cols + q) * 9..][..9];
                    std::array::from_fn::<f32, 9, _>(|i| src[i])
                };
                // G·g (4×3), then (G·g)·Gᵀ (4×4).
                let mut gg = [0.0f32; 12];
                for j in 0..3 {
                    let (a, b, c) = (k[j], k[3 + j], k[6 + j]);
                    gg[j] = a;
                    gg[3 + j] = 0.5 * (a + b + c);
                    gg[6 + j] = 0.5 * (a - b + c);
                    gg[9 + j] = c;
                }
                for row in 0..4 {
                    let (a, b, c) = (gg[3 * row], gg[3 * row + 1], gg[3 * row + 2]);
                    let vals = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
                    for (j, v) in vals.into_iter().enumerate() {
                        run[row * 4 + j][i] = v;
                    }
                }
            }
            for (xi, vals) in run.iter().enumerate() {
                u[(xi * cols + q) * rows + r0..][..n].copy_from_slice(&vals[..n]);
            }
        }
    }
    u
}

/// Channels per vector in the transforms (their inner dimension; the last few channels of a
/// count that is not a multiple go one at a time).
const LANES: usize = 8;

/// `x` (samples `[nb, c, h, w]` stored in `order`) into `pad` (`[nb][2·th + 2][2·tw + 2][c]`):
/// channels innermost, the image at rows and columns `lead..` (1 for the inputs of tiles,
/// which start one pixel above and left of their outputs; 0 for output gradients), zeros
/// around it.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn to_padded_hwc(t: Tiling, c: usize, lead: usize, x: &[f32], order: Order, pad: &mut [f32]) {
    let plane = t.h * t.w;
    let (ph, pw) = (2 * t.th + 2, 2 * t.tw + 2);
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

/// Channels of one pixel in a transform: [`LANES`] of them in a vector ([`f32x8`]), or one
/// ([`f32`], for the channels past the last multiple of [`LANES`]).
trait Lanes: Copy + Add<Output = Self> + Sub<Output = Self> + Neg<Output = Self> {
    /// The channels at `s[at..]`.
    fn load(s: &[f32], at: usize) -> Self;
    /// Into `s[at..]`.
    fn store(self, s: &mut [f32], at: usize);
}

impl Lanes for f32 {
    #[inline(always)]
    fn load(s: &[f32], at: usize) -> Self {
        s[at]
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], at: usize) {
        s[at] = self;
    }
}

impl Lanes for f32x8 {
    #[inline(always)]
    fn load(s: &[f32], at: usize) -> Self {
        f32x8::new(s[at..at + LANES].try_into().expect("a full vector"))
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], at: usize) {
        s[at..at + LANES].copy_from_slice(&self.to_array());
    }
}

/// `Bᵀ·z` of a column `z` of four: `[z0 − z2, z1 + z2, z2 − z1, z1 − z3]`.
#[inline(always)]
fn bt<L: Lanes>([z0, z1, z2, z3]: [L; 4]) -> [L; 4] {
    [z0 - z2, z1 + z2, z2 - z1, z1 - z3]
}

/// `Aᵀ·z` of a column `z` of four: `[z0 + z1 + z2, z1 − z2 − z3]`.
#[inline(always)]
fn at2<L: Lanes>([z0, z1, z2, z3]: [L; 4]) -> [L; 2] {
    [z0 + z1 + z2, z1 - z2 - z3]
}

/// `A·z` of a pair `z`: `[z0, z0 + z1, z0 − z1, −z1]`.
#[inline(always)]
fn a4<L: Lanes>([z0, z1]: [L; 2]) -> [L; 4] {
    [z0, z0 + z1, z0 - z1, -z1]
}

/// `V = Bᵀ·d·B` of the channels `L` holds of one tile: input row `p`, column `q` at
/// `src[at(4p + q)..]`, `V_ξ` stored at `dst[out(ξ)..]`.
#[inline(always)]
fn tile_in<L: Lanes>(
    src: &[f32],
    at: impl Fn(usize) -> usize,
    dst: &mut [f32],
    out: impl Fn(usize) -> usize,
) {
    // Bᵀ·d, a column at a time: `r[q][i]` is row i, column q.
    let r: [[L; 4]; 4] =
        std::array::from_fn(|q| bt(std::array::from_fn(|p| L::load(src, at(4 * p + q)))));
    // (Bᵀ·d)·B, a row at a time.
    for (i, (((r0, r1), r2), r3)) in r[0].iter().zip(&r[1]).zip(&r[2]).zip(&r[3]).enumerate() {
        for (j, v) in bt([*r0, *r1, *r2, *r3]).into_iter().enumerate() {
            v.store(dst, out(4 * i + j));
        }
    }
}

/// `Y = Aᵀ·M·A` of the channels `L` holds of one tile: `M_ξ` at `src[at(ξ)..]`; the 2×2 outputs
/// `[y00, y01, y10, y11]`.
#[inline(always)]
fn tile_out<L: Lanes>(src: &[f32], at: impl Fn(usize) -> usize) -> [L; 4] {
    // Aᵀ·M, a column at a time: `a[j][i]` is row i, column j.
    let a: [[L; 2]; 4] =
        std::array::from_fn(|j| at2(std::array::from_fn(|i| L::load(src, at(4 * i + j)))));
    let [y00, y01] = at2([a[0][0], a[1][0], a[2][0], a[3][0]]);
    let [y10, y11] = at2([a[0][1], a[1][1], a[2][1], a[3][1]]);
    [y00, y01, y10, y11]
}

/// The 2×2 outputs `y` of channels `ch..` of one tile into `ys` (`[h][w][o]`) at the pixels
/// `px` inside the image.
#[inline(always)]
fn put_tile<L: Lanes>(ys: &mut [f32], o: usize, ch: usize, px: [Option<usize>; 4], y: [L; 4]) {
    for (p, yv) in px.into_iter().zip(y) {
        if let Some(p) = p {
            yv.store(ys, p * o + ch);
        }
    }
}

/// `∂L/∂M = A·∂L/∂Y·Aᵀ` of the channels `L` holds of one tile (the adjoint of [`tile_out`]): output
/// gradient `(a, b)` at `src[at(2a + b)..]`, `∂L/∂M_ξ` stored at `dst[out(ξ)..]`.
#[inline(always)]
fn tile_out_adjoint<L: Lanes>(
    src: &[f32],
    at: impl Fn(usize) -> usize,
    dst: &mut [f32],
    out: impl Fn(usize) -> usize,
) {
    let dy = |a: usize, b: usize| L::load(src, at(2 * a + b));
    // A·∂L/∂Y, a column at a time: `c[b][i]` is row i, column b.
    let c = [a4([dy(0, 0), dy(1, 0)]), a4([dy(0, 1), dy(1, 1)])];
    for (i, (c0, c1)) in c[0].iter().zip(&c[1]).enumerate() {
        for (j, v) in a4([*c0, *c1]).into_iter().enumerate() {
            v.store(dst, out(4 * i + j));
        }
    }
}

/// `f(n, ch)` over the channels `0..c` in runs of [`LANES`], then one at a time.
#[inline(always)]
fn by_lanes(c: usize, mut f: impl FnMut(usize, usize)) {
    let mut ch = 0;
    while ch + LANES <= c {
        f(LANES, ch);
        ch += LANES;
    }
    while ch < c {
        f(1, ch);
        ch += 1;
    }
}

/// `V = Bᵀ·d·B` of every 4×4 tile of `pad` (from [`to_padded_hwc`]) into `v`
/// (`[nb·tiles][16][c]`, tile index `(sample, ty, tx)`, a tile's 16 side by side): a tile at a
/// time, [`LANES`] channels per vector operation.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn input_transform(t: Tiling, c: usize, pad: &[f32], v: &mut [f32]) {
    let (ph, pw) = (2 * t.th + 2, 2 * t.tw + 2);
    let nb = pad.len() / (ph * pw * c);
    let mut k = 0;
    for s in 0..nb {
        for ty in 0..t.th {
            for tx in 0..t.tw {
                let base = ((s * ph + 2 * ty) * pw + 2 * tx) * c;
                by_lanes(c, |n, ch| {
                    let at = |xi: usize| base + ((xi / 4) * pw + xi % 4) * c + ch;
                    let out = |xi: usize| (k * XI + xi) * c + ch;
                    if n == LANES {
                        tile_in::<f32x8>(pad, at, v, out);
                    } else {
                        tile_in::<f32>(pad, at, v, out);
                    }
                });
                k += 1;
            }
        }
    }
}

/// `Y = Aᵀ·M·A` of every tile of `m` (`[nb·tiles][16][o]`) into `y` (`[nb][h][w][o]`), the
/// parts of edge tiles outside the image dropped: a tile at a time, [`LANES`] channels per
/// vector operation.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn output_transform(t: Tiling, o: usize, m: &[f32], y: &mut [f32]) {
    let plane = t.h * t.w;
    let nb = y.len() / (o * plane);
    let mut k = 0;
    for s in 0..nb {
        let ys = &mut y[s * o * plane..][..o * plane];
        for ty in 0..t.th {
            for tx in 0..t.tw {
                // Output pixels of this tile inside the image, in `tile_out`'s order.
                let px = [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(i, j)| {
                    let (r, q) = (2 * ty + i, 2 * tx + j);
                    (r < t.h && q < t.w).then_some(r * t.w + q)
                });
                by_lanes(o, |n, ch| {
                    let at = |xi: usize| (k * XI + xi) * o + ch;
                    if n == LANES {
                        put_tile(ys, o, ch, px, tile_out::<f32x8>(m, at));
                    } else {
                        put_tile(ys, o, ch, px, tile_out::<f32>(m, at));
                    }
                });
                k += 1;
            }
        }
    }
}

/// `∂L/∂M` of every tile of `pad` (output gradients from [`to_padded_hwc`] with lead 0) into
/// `dm` (`[nb·tiles][16][o]`): a tile at a time, [`LANES`] channels per vector operation.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn output_gradient_transform(t: Tiling, o: usize, pad: &[f32], dm: &mut [f32]) {
    let (ph, pw) = (2 * t.th + 2, 2 * t.tw + 2);
    let nb = pad.len() / (ph * pw * o);
    let mut k = 0;
    for s in 0..nb {
        for ty in 0..t.th {
            for tx in 0..t.tw {
                let base = ((s * ph + 2 * ty) * pw + 2 * tx) * o;
                by_lanes(o, |n, ch| {
                    let at = |p: usize| base + ((p / 2) * pw + p % 2) * o + ch;
                    let out = |xi: usize| (k * XI + xi) * o + ch;
                    if n == LANES {
                        tile_out_adjoint::<f32x8>(pad, at, dm, out);
                    } else {
                        tile_out_adjoint::<f32>(pad, at, dm, out);
                    }
                });
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
pub fn weight_gradient(
    g: &Geometry,
    (x, xo): (&[f32], Order),
    (gy, go): (&[f32], Order),
) -> Vec<f32> {
    let (c, o) = (g.c, g.o);
    let t = Tiling::new(g.h, g.w);
    let plane = t.h * t.w;
    let padded = (2 * t.th + 2) * (2 * t.tw + 2);
    let per_part = g.n.div_ceil(GRAD_PARTS).max(1);
    let spb = (GRAD_TILES_PER_BLOCK / t.tiles()).clamp(1, per_part);
    let parts: Vec<Vec<f32>> = x
        .par_chunks(per_part * c * plane)
        .zip(gy.par_chunks(per_part * o * plane))
        .map(|(xp, gp)| {
            // `∂L/∂U_ξ`, stored `[16][c][o]`.
            let mut du = vec![0.0f32; XI * c * o];
            for (bi, (xb, gb)) in xp
                .chunks(spb * c * plane)
                .zip(gp.chunks(spb * o * plane))
                .enumerate()
            {
                let nb = xb.len() / (c * plane);
                let cols = nb * t.tiles();
                let n = [
                    nb * padded * c,
                    XI * cols * c,
                    nb * padded * o,
                    XI * cols * o,
                ];
                with_scratch(n, |[pad, v, gpad, dm]| {
                    to_padded_hwc(t, c, 1, xb, xo, pad);
                    input_transform(t, c, pad, v);
                    to_padded_hwc(t, o, 0, gb, go, gpad);
                    output_gradient_transform(t, o, gpad, dm);
                    for k in 0..XI {
                        gemm_into_t(
                            &mut du[k * c * o..][..c * o],
                            Mat::strided(&dm[k * o..], o, cols, 1, XI * o),
                            Mat::strided(&v[k * c..], cols, c, XI * c, 1),
                            bi > 0,
                        );
                    }
                });
            }
            du
        })
        .collect();
    // The parts added in order, element by element (blocks in parallel).
    let mut du = vec![0.0f32; XI * c * o];
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
    // ∂L/∂g = Gᵀ·∂L/∂U·G per kernel, G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1].
    let gt = |u: [f32; 4]| {
        [
            u[0] + 0.5 * (u[1] + u[2]),
            0.5 * (u[1] - u[2]),
            0.5 * (u[1] + u[2]) + u[3],
        ]
    };
    let mut dw = vec![0.0f32; o * c * 9];
    dw.par_chunks_mut(c * 9).enumerate().for_each(|(oc, dw)| {
        for ci in 0..c {
            let u = |i: usize, j: usize| du[((4 * i + j) * c + ci) * o + oc];
            // Gᵀ·∂L/∂U: rows.
            let rows: [[f32; 3]; 4] =
                std::array::from_fn(|j| gt([u(0, j), u(1, j), u(2, j), u(3, j)]));
            let k = &mut dw[ci * 9..][..9];
            for r in 0..3 {
                let col = gt([rows[0][r], rows[1][r], rows[2][r], rows[3][r]]);
                k[3 * r..3 * r + 3].copy_from_slice(&col);
            }
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

/// The convolution of `x` (`[n, c, h, w]` stored in `order`) with transformed kernels `u`
/// (`[16][c][o]`), padding 1: `[n, o, h, w]` stored channels last.
fn convolve(
    n: usize,
    c: usize,
    t: Tiling,
    o: usize,
    (x, order): (&[f32], Order),
    u: &[f32],
) -> Vec<f32> {
    let spb = t.samples_per_block();
    let plane = t.h * t.w;
    let padded = (2 * t.th + 2) * (2 * t.tw + 2) * c;
    let mut y = vec![0.0f32; n * o * plane];
    y.par_chunks_mut(spb * o * plane)
        .zip(x.par_chunks(spb * c * plane))
        .for_each(|(yb, xb)| {
            let nb = xb.len() / (c * plane);
            let cols = nb * t.tiles();
            with_scratch(
                [nb * padded, XI * cols * c, XI * cols * o, 0],
                |[pad, v, m, _]| {
                    to_padded_hwc(t, c, 1, xb, order, pad);
                    input_transform(t, c, pad, v);
                    for k in 0..XI {
                        // `M_ξ = U_ξ·V_ξ` (`[o, c]·[c, tiles]`), in `m` at `[tiles][ξ][o]`.
                        gemm_into_strided(
                            &mut m[k * o..],
                            [1, XI * o],
                            Mat::new(&u[k * c * o..][..c * o], c, o).t(),
                            Mat::strided(&v[k * c..], cols, c, XI * c, 1).t(),
                            false,
                        );
                    }
                    output_transform(t, o, m, yb);
                },
            );
        });
    y
}

/// `y = x ⋆ w` for a geometry that [`applies`]: `[n, o, h, w]` stored channels last.
pub fn forward(g: &Geometry, x: (&[f32], Order), w: &[f32]) -> Vec<f32> {
    let u = kernel_transform(w, g.o, g.c, false);
    convolve(g.n, g.c, Tiling::new(g.h, g.w), g.o, x, &u)
}

/// `∂L/∂x`, stored channels last: the convolution of `gy` with the flipped, transposed kernel.
pub fn input_gradient(g: &Geometry, w: &[f32], gy: (&[f32], Order)) -> Vec<f32> {
    let u = kernel_transform(w, g.c, g.o, true);
    convolve(g.n, g.o, Tiling::new(g.h, g.w), g.c, gy, &u)
}
