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
//! zero-bordered `[h][w][c]` buffer), [`LANES`] channels per vector operation, so that every
//! feature-map size, down to VGG's 2×2 maps, runs in whole vectors. Tiles of several samples
//! are multiplied together, in blocks of samples fixed by the geometry (never by the thread
//! count), so that the small late feature maps still make GEMMs of a useful width; every
//! output is computed within one block and the weight gradient's partial sums are added in a
//! fixed order, so results do not depend on the number of threads.

use multiversion::multiversion;
use rayon::prelude::*;

use super::Geometry;
use crate::backend::matmul::{Mat, gemm_into_t};

/// Transformed-tile positions: 4×4.
const XI: usize = 16;

/// Tiles aimed at per block of samples (the GEMMs' width).
const TILES_PER_BLOCK: usize = 64;

/// Whether [`forward`] and [`backward`] compute this convolution: a 3×3 kernel, unit stride,
/// padding 1, and enough channels on both sides that the 16 narrow GEMMs pay for the transforms.
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

/// `U = G·g·Gᵀ` of each kernel, as `[16][cols][rows]` (each `U_ξ` column-major, for the packing
/// of [`gemm_into_t`]) where kernel `(r, q)` is `w[(r, q)]` when
/// `!flip` (`w: [rows, cols, 3, 3]`), or, with `flip`, the input gradient's kernel
/// `w'[c, o] = rot180(w[o, c])` (`w: [cols, rows, 3, 3]`).
fn kernel_transform(w: &[f32], rows: usize, cols: usize, flip: bool) -> Vec<f32> {
    let mut u = vec![0.0f32; XI * rows * cols];
    for r in 0..rows {
        for q in 0..cols {
            let k = if flip {
                let src = &w[(q * rows + r) * 9..][..9];
                std::array::from_fn::<f32, 9, _>(|i| src[8 - i])
            } else {
                std::array::from_fn::<f32, 9, _>(|i| w[(r * cols + q) * 9 + i])
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
            for i in 0..4 {
                let (a, b, c) = (gg[3 * i], gg[3 * i + 1], gg[3 * i + 2]);
                let row = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
                for (j, v) in row.into_iter().enumerate() {
                    u[((i * 4 + j) * cols + q) * rows + r] = v;
                }
            }
        }
    }
    u
}

/// Channels per vector in the transforms (their inner dimension; the last few channels of a
/// count that is not a multiple go one at a time).
const LANES: usize = 8;

/// `x` (samples `[nb, c, h, w]`) into `pad` (`[nb][2·th + 2][2·tw + 2][c]`): channels innermost,
/// the image at rows and columns `lead..` (1 for the inputs of tiles, which start one pixel
/// above and left of their outputs; 0 for output gradients). The border is never written
/// (zero from allocation).
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn to_padded_hwc(t: Tiling, c: usize, lead: usize, x: &[f32], pad: &mut [f32]) {
    let plane = t.h * t.w;
    let (ph, pw) = (2 * t.th + 2, 2 * t.tw + 2);
    for (s, xs) in x.chunks_exact(c * plane).enumerate() {
        let ps = &mut pad[s * ph * pw * c..][..ph * pw * c];
        for r in 0..t.h {
            let row = &mut ps[((r + lead) * pw + lead) * c..][..t.w * c];
            for (ci, src) in xs.chunks_exact(plane).enumerate() {
                let src = &src[r * t.w..][..t.w];
                for (px, v) in row.chunks_exact_mut(c).zip(src) {
                    px[ci] = *v;
                }
            }
        }
    }
}

/// A binary operation, applied lane by lane.
type Scalar = fn(f32, f32) -> f32;

/// `V = Bᵀ·d·B` of `N` channels of one tile: `d[4p + q]` is input row `p`, column `q`.
#[inline(always)]
fn tile_in<const N: usize>(d: [[f32; N]; XI]) -> [[f32; N]; XI] {
    let op = |a: [f32; N], b: [f32; N], f: Scalar| std::array::from_fn(|l| f(a[l], b[l]));
    let (sub, add): (Scalar, Scalar) = (|a, b| a - b, |a, b| a + b);
    // Bᵀ·d: rows.
    let mut r = [[0.0f32; N]; XI];
    for q in 0..4 {
        let (d0, d1, d2, d3) = (d[q], d[4 + q], d[8 + q], d[12 + q]);
        r[q] = op(d0, d2, sub);
        r[4 + q] = op(d1, d2, add);
        r[8 + q] = op(d2, d1, sub);
        r[12 + q] = op(d1, d3, sub);
    }
    // (Bᵀ·d)·B: columns.
    let mut v = [[0.0f32; N]; XI];
    for i in 0..4 {
        let (e0, e1, e2, e3) = (r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]);
        v[4 * i] = op(e0, e2, sub);
        v[4 * i + 1] = op(e1, e2, add);
        v[4 * i + 2] = op(e2, e1, sub);
        v[4 * i + 3] = op(e1, e3, sub);
    }
    v
}

/// `Aᵀ·M·A` of `N` channels of one tile: the 2×2 outputs `[y00, y01, y10, y11]`.
#[inline(always)]
fn tile_out<const N: usize>(m: [[f32; N]; XI]) -> [[f32; N]; 4] {
    let comb = |a: [f32; N], b: [f32; N], c: [f32; N], d: [f32; N]| -> [[f32; N]; 2] {
        [
            std::array::from_fn(|l| a[l] + b[l] + c[l]),
            std::array::from_fn(|l| b[l] - c[l] - d[l]),
        ]
    };
    // Aᵀ·M: rows.
    let mut a = [[[0.0f32; N]; 4]; 2];
    for j in 0..4 {
        let [a0, a1] = comb(m[j], m[4 + j], m[8 + j], m[12 + j]);
        a[0][j] = a0;
        a[1][j] = a1;
    }
    // (Aᵀ·M)·A: columns.
    let [y00, y01] = comb(a[0][0], a[0][1], a[0][2], a[0][3]);
    let [y10, y11] = comb(a[1][0], a[1][1], a[1][2], a[1][3]);
    [y00, y01, y10, y11]
}

/// `V = Bᵀ·d·B` of every 4×4 tile of `pad` (from [`to_padded_hwc`]) into `v`
/// (`[16][nb·tiles][c]`, tile index `(sample, ty, tx)`): a tile at a time, [`LANES`] channels
/// per vector operation.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn input_transform(t: Tiling, c: usize, pad: &[f32], v: &mut [f32]) {
    let (ph, pw) = (2 * t.th + 2, 2 * t.tw + 2);
    let nb = pad.len() / (ph * pw * c);
    let cols = nb * t.tiles();
    let mut k = 0;
    for s in 0..nb {
        for ty in 0..t.th {
            for tx in 0..t.tw {
                let base = ((s * ph + 2 * ty) * pw + 2 * tx) * c;
                let mut ch = 0;
                while ch < c {
                    let n = if c - ch >= LANES { LANES } else { 1 };
                    let at = |xi: usize| base + ((xi / 4) * pw + xi % 4) * c + ch;
                    let out = |xi: usize| (xi * cols + k) * c + ch;
                    if n == LANES {
                        let d = std::array::from_fn(|xi| {
                            <[f32; LANES]>::try_from(&pad[at(xi)..][..LANES]).expect("lanes")
                        });
                        for (xi, vx) in tile_in(d).into_iter().enumerate() {
                            v[out(xi)..][..LANES].copy_from_slice(&vx);
                        }
                    } else {
                        let d = std::array::from_fn(|xi| [pad[at(xi)]]);
                        for (xi, [vx]) in tile_in(d).into_iter().enumerate() {
                            v[out(xi)] = vx;
                        }
                    }
                    ch += n;
                }
                k += 1;
            }
        }
    }
}

/// `Y = Aᵀ·M·A` of every tile of `m` (`[16][nb·tiles][o]`) into `y` (`[nb, o, h, w]`), the
/// parts of edge tiles outside the image dropped: a tile at a time, [`LANES`] channels per
/// vector operation, each output written once into its plane.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn output_transform(t: Tiling, o: usize, m: &[f32], y: &mut [f32]) {
    let plane = t.h * t.w;
    let nb = y.len() / (o * plane);
    let cols = nb * t.tiles();
    let mut k = 0;
    for s in 0..nb {
        let ys = &mut y[s * o * plane..][..o * plane];
        for ty in 0..t.th {
            for tx in 0..t.tw {
                // Output pixels of this tile inside the image, in `tile_out`'s order.
                let px = [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(i, j)| {
                    (2 * ty + i < t.h && 2 * tx + j < t.w).then(|| (2 * ty + i) * t.w + 2 * tx + j)
                });
                let mut ch = 0;
                while ch < o {
                    let n = if o - ch >= LANES { LANES } else { 1 };
                    let at = |xi: usize| (xi * cols + k) * o + ch;
                    if n == LANES {
                        let mx = std::array::from_fn(|xi| {
                            <[f32; LANES]>::try_from(&m[at(xi)..][..LANES]).expect("lanes")
                        });
                        for (p, yv) in px.iter().zip(tile_out(mx)) {
                            if let Some(p) = p {
                                for (l, val) in yv.into_iter().enumerate() {
                                    ys[(ch + l) * plane + p] = val;
                                }
                            }
                        }
                    } else {
                        let mx = std::array::from_fn(|xi| [m[at(xi)]]);
                        for (p, [val]) in px.iter().zip(tile_out(mx)) {
                            if let Some(p) = p {
                                ys[ch * plane + p] = val;
                            }
                        }
                    }
                    ch += n;
                }
                k += 1;
            }
        }
    }
}

/// `∂L/∂M = A·∂L/∂Y·Aᵀ` of `N` channels of one tile (the adjoint of [`tile_out`]): `dy` the
/// 2×2 output gradients `[y00, y01, y10, y11]`, the result `[16]` in `M`'s order.
#[inline(always)]
fn tile_out_adjoint<const N: usize>(dy: [[f32; N]; 4]) -> [[f32; N]; XI] {
    // A·z of a pair (z0, z1): [z0, z0 + z1, z0 − z1, −z1].
    let spread = |z0: [f32; N], z1: [f32; N]| -> [[f32; N]; 4] {
        [
            z0,
            std::array::from_fn(|l| z0[l] + z1[l]),
            std::array::from_fn(|l| z0[l] - z1[l]),
            std::array::from_fn(|l| -z1[l]),
        ]
    };
    let cols0 = spread(dy[0], dy[2]);
    let cols1 = spread(dy[1], dy[3]);
    let mut m = [[0.0f32; N]; XI];
    for i in 0..4 {
        let row = spread(cols0[i], cols1[i]);
        m[4 * i..4 * i + 4].copy_from_slice(&row);
    }
    m
}

/// `∂L/∂M` of every tile of `pad` (output gradients from [`to_padded_hwc`] with lead 0) into
/// `dm` (`[16][nb·tiles][o]`): a tile at a time, [`LANES`] channels per vector operation.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn output_gradient_transform(t: Tiling, o: usize, pad: &[f32], dm: &mut [f32]) {
    let (ph, pw) = (2 * t.th + 2, 2 * t.tw + 2);
    let nb = pad.len() / (ph * pw * o);
    let cols = nb * t.tiles();
    let mut k = 0;
    for s in 0..nb {
        for ty in 0..t.th {
            for tx in 0..t.tw {
                let base = ((s * ph + 2 * ty) * pw + 2 * tx) * o;
                let mut ch = 0;
                while ch < o {
                    let n = if o - ch >= LANES { LANES } else { 1 };
                    let at = |p: usize| base + ((p / 2) * pw + p % 2) * o + ch;
                    let out = |xi: usize| (xi * cols + k) * o + ch;
                    if n == LANES {
                        let d = std::array::from_fn(|p| {
                            <[f32; LANES]>::try_from(&pad[at(p)..][..LANES]).expect("lanes")
                        });
                        for (xi, mx) in tile_out_adjoint(d).into_iter().enumerate() {
                            dm[out(xi)..][..LANES].copy_from_slice(&mx);
                        }
                    } else {
                        let d = std::array::from_fn(|p| [pad[at(p)]]);
                        for (xi, [mx]) in tile_out_adjoint(d).into_iter().enumerate() {
                            dm[out(xi)] = mx;
                        }
                    }
                    ch += n;
                }
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
pub fn weight_gradient(g: &Geometry, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let (c, o) = (g.c, g.o);
    let t = Tiling::new(g.h, g.w);
    let plane = t.h * t.w;
    let padded = (2 * t.th + 2) * (2 * t.tw + 2);
    let per_part = g.n.div_ceil(GRAD_PARTS).max(1);
    let spb = (GRAD_TILES_PER_BLOCK / t.tiles()).clamp(1, per_part);
    let parts: Vec<Vec<f32>> = x
        .par_chunks(per_part * c * plane)
        .zip(gy.par_chunks(per_part * o * plane))
        .map_init(
            || (Scratch::default(), Scratch::default()),
            |(sx, sy), (xp, gp)| {
                // `∂L/∂U_ξ`, stored `[16][c][o]`.
                let mut du = vec![0.0f32; XI * c * o];
                for (bi, (xb, gb)) in xp
                    .chunks(spb * c * plane)
                    .zip(gp.chunks(spb * o * plane))
                    .enumerate()
                {
                    let nb = xb.len() / (c * plane);
                    let cols = nb * t.tiles();
                    let (pad, v, _) = sx.three(nb * padded * c, XI * cols * c, 0);
                    to_padded_hwc(t, c, 1, xb, pad);
                    input_transform(t, c, pad, v);
                    let (gpad, dm, _) = sy.three(nb * padded * o, XI * cols * o, 0);
                    to_padded_hwc(t, o, 0, gb, gpad);
                    output_gradient_transform(t, o, gpad, dm);
                    for k in 0..XI {
                        gemm_into_t(
                            &mut du[k * c * o..][..c * o],
                            Mat::new(&dm[k * cols * o..][..cols * o], cols, o).t(),
                            Mat::new(&v[k * cols * c..][..cols * c], cols, c),
                            bi > 0,
                        );
                    }
                }
                du
            },
        )
        .collect();
    let mut du = vec![0.0f32; XI * c * o];
    for part in &parts {
        for (a, b) in du.iter_mut().zip(part) {
            *a += b;
        }
    }
    // ∂L/∂g = Gᵀ·∂L/∂U·G per kernel, G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1].
    let gt = |u: [f32; 4]| {
        [
            u[0] + 0.5 * (u[1] + u[2]),
            0.5 * (u[1] - u[2]),
            0.5 * (u[1] + u[2]) + u[3],
        ]
    };
    let mut dw = vec![0.0f32; o * c * 9];
    for oc in 0..o {
        for ci in 0..c {
            let u = |i: usize, j: usize| du[((4 * i + j) * c + ci) * o + oc];
            // Gᵀ·∂L/∂U: rows.
            let rows: [[f32; 3]; 4] =
                std::array::from_fn(|j| gt([u(0, j), u(1, j), u(2, j), u(3, j)]));
            let k = &mut dw[(oc * c + ci) * 9..][..9];
            for r in 0..3 {
                let col = gt([rows[0][r], rows[1][r], rows[2][r], rows[3][r]]);
                k[3 * r..3 * r + 3].copy_from_slice(&col);
            }
        }
    }
    dw
}

/// Buffers of one block, reused by the blocks a thread runs: the padded input (its border
/// zero from allocation; the blocks of one convolution share the layout, so it stays zero),
/// the transformed tiles and their products (every element written before it is read).
#[derive(Default)]
struct Scratch(Vec<f32>, Vec<f32>, Vec<f32>);

impl Scratch {
    fn three(&mut self, a: usize, b: usize, c: usize) -> (&mut [f32], &mut [f32], &mut [f32]) {
        for (v, n) in [(&mut self.0, a), (&mut self.1, b), (&mut self.2, c)] {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        }
        (&mut self.0[..a], &mut self.1[..b], &mut self.2[..c])
    }
}

/// The convolution of `x` (`[n, c, h, w]`) with transformed kernels `u` (`[16][c][o]`), padding
/// 1: `[n, o, h, w]`.
fn convolve(n: usize, c: usize, t: Tiling, o: usize, x: &[f32], u: &[f32]) -> Vec<f32> {
    let spb = t.samples_per_block();
    let plane = t.h * t.w;
    let padded = (2 * t.th + 2) * (2 * t.tw + 2) * c;
    let mut y = vec![0.0f32; n * o * plane];
    y.par_chunks_mut(spb * o * plane)
        .zip(x.par_chunks(spb * c * plane))
        .for_each_init(Scratch::default, |scratch, (yb, xb)| {
            let nb = xb.len() / (c * plane);
            let cols = nb * t.tiles();
            let (pad, v, m) = scratch.three(nb * padded, XI * cols * c, XI * cols * o);
            to_padded_hwc(t, c, 1, xb, pad);
            input_transform(t, c, pad, v);
            for k in 0..XI {
                // `M_ξ = U_ξ·V_ξ` (`[o, c]·[c, tiles]`), stored `[tiles][o]`.
                gemm_into_t(
                    &mut m[k * cols * o..][..cols * o],
                    Mat::new(&u[k * c * o..][..c * o], c, o).t(),
                    Mat::new(&v[k * cols * c..][..cols * c], cols, c).t(),
                    false,
                );
            }
            output_transform(t, o, m, yb);
        });
    y
}

/// `y = x ⋆ w` for a geometry that [`applies`]: `[n, o, h, w]`.
pub fn forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let u = kernel_transform(w, g.o, g.c, false);
    convolve(g.n, g.c, Tiling::new(g.h, g.w), g.o, x, &u)
}

/// `∂L/∂x`: the convolution of `gy` with the flipped, transposed kernel.
pub fn input_gradient(g: &Geometry, w: &[f32], gy: &[f32]) -> Vec<f32> {
    let u = kernel_transform(w, g.c, g.o, true);
    convolve(g.n, g.o, Tiling::new(g.h, g.w), g.c, gy, &u)
}
