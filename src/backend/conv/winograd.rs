//! 3×3 convolutions with unit stride and padding 1 (VGG's and ResNet's) by Winograd's minimal
//! filtering F(2×2, 3×3) (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
//! Networks"): the forward pass and the input gradient.
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
//! The input gradient is the same convolution of `∂L/∂y` with the flipped, transposed kernel.
//! In exact arithmetic both are the direct convolution's; in `f32` they differ by rounding
//! (tested against burn's convolution and finite differences). The weight gradient stays on
//! the im2col path: its Winograd form (the adjoint, `∂L/∂U_ξ = Σ_tiles A·∂L/∂Y·Aᵀ ⊙ V_ξ`)
//! measured 2% slower on a VGG16 train run, its products being as narrow as the channels.
//!
//! Tiles of several samples are multiplied together, in blocks of samples fixed by the
//! geometry (never by the thread count), so that the small late feature maps still make GEMMs of
//! a useful width; every output is computed within one block, so results do not depend on the
//! number of threads.

use multiversion::multiversion;
use rayon::prelude::*;

use super::Geometry;
use crate::backend::matmul::{Mat, gemm_into};

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

/// `U = G·g·Gᵀ` of each kernel, as `[16][rows][cols]` where kernel `(r, q)` is `w[(r, q)]` when
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
                    u[((i * 4 + j) * rows + r) * cols + q] = v;
                }
            }
        }
    }
    u
}

/// `x − y`, `x + y` element-wise into `out`.
#[inline(always)]
fn sub_into(out: &mut [f32], x: &[f32], y: &[f32]) {
    for ((o, a), b) in out.iter_mut().zip(x).zip(y) {
        *o = a - b;
    }
}

#[inline(always)]
fn add_into(out: &mut [f32], x: &[f32], y: &[f32]) {
    for ((o, a), b) in out.iter_mut().zip(x).zip(y) {
        *o = a + b;
    }
}

/// `V = Bᵀ·d·B` of every 4×4 input tile of `x` (samples `[nb, c, h, w]`) into `v`
/// (`[16][c][nb·tiles]`, tile index `(sample, ty, tx)`).
///
/// A plane at a time, in long vectors: the zero-padded plane is split into its four quarters
/// by row and column parity (`q[a][b][m][n] = x_pad[2m + a][2n + b]`, rows of `tw + 1`), so
/// that the rows' combination `Bᵀ·d` of every tile is one pass over each quarter, and the
/// columns' combination reads its four neighbours at fixed offsets.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn input_transform(t: Tiling, c: usize, x: &[f32], v: &mut [f32]) {
    let nb = x.len() / (c * t.h * t.w);
    let cols = nb * t.tiles();
    let plane = t.h * t.w;
    let (th, tw) = (t.th, t.tw);
    let qw = tw + 1;
    // One spare row so that the shifted reads below stay inside.
    let qlen = (th + 2) * qw;
    let l = th * qw;
    let mut q = vec![0.0f32; 4 * qlen];
    // `Bᵀ·d` per row k of the tile and column parity: `[k][parity][th·qw]`.
    let mut r = vec![0.0f32; 8 * l];
    for s in 0..nb {
        for ci in 0..c {
            let xp = &x[(s * c + ci) * plane..][..plane];
            // Quarters: padded row pr = 2m + a is input row pr − 1; padded column 2n + b is
            // input column 2n + b − 1.
            q.fill(0.0);
            for row in 0..t.h {
                let pr = row + 1;
                let (a, m) = (pr % 2, pr / 2);
                let src = &xp[row * t.w..(row + 1) * t.w];
                let (q0, q1) = q.split_at_mut((2 * a + 1) * qlen);
                let even = &mut q0[2 * a * qlen + m * qw..][..qw];
                let odd = &mut q1[m * qw..][..qw];
                // Input column j sits at padded column j + 1: even columns to `odd[j / 2]`,
                // odd ones to `even[(j + 1) / 2]`.
                let mut pairs = src.chunks_exact(2);
                for ((p, o), e) in (&mut pairs).zip(odd.iter_mut()).zip(&mut even[1..]) {
                    *o = p[0];
                    *e = p[1];
                }
                if let [last] = pairs.remainder() {
                    odd[t.w / 2] = *last;
                }
            }
            // Rows 2ty + i of the tile: quarter (i % 2) shifted by i / 2 rows.
            for b in 0..2 {
                let row = |i: usize| &q[((i % 2) * 2 + b) * qlen + (i / 2) * qw..][..l];
                let (d0, d1, d2, d3) = (row(0), row(1), row(2), row(3));
                let out = |k: usize| (k * 2 + b) * l;
                sub_into(&mut r[out(0)..][..l], d0, d2);
                add_into(&mut r[out(1)..][..l], d1, d2);
                sub_into(&mut r[out(2)..][..l], d2, d1);
                sub_into(&mut r[out(3)..][..l], d1, d3);
            }
            // Columns 2tx + j: parity j % 2 shifted by j / 2.
            for k in 0..4 {
                let (ev, od) = (&r[(k * 2) * l..][..l], &r[(k * 2 + 1) * l..][..l]);
                for ty in 0..th {
                    let f = ty * qw;
                    let (e0, e1) = (&ev[f..f + tw], &od[f..f + tw]);
                    let (e2, e3) = (&ev[f + 1..f + 1 + tw], &od[f + 1..f + 1 + tw]);
                    let col = s * t.tiles() + ty * tw;
                    let at = |j: usize| ((4 * k + j) * c + ci) * cols + col;
                    sub_into(&mut v[at(0)..][..tw], e0, e2);
                    add_into(&mut v[at(1)..][..tw], e1, e2);
                    sub_into(&mut v[at(2)..][..tw], e2, e1);
                    sub_into(&mut v[at(3)..][..tw], e1, e3);
                }
            }
        }
    }
}

/// `Y = Aᵀ·M·A` of every tile of `m` (`[16][o][nb·tiles]`) into `y` (`[nb, o, h, w]`), the
/// parts of edge tiles outside the image dropped. A sample's tiles are contiguous in `m`, so
/// both combinations run over all of them at once; the four outputs of each tile are then
/// interleaved into the image rows.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn output_transform(t: Tiling, o: usize, m: &[f32], y: &mut [f32]) {
    let nb = y.len() / (o * t.h * t.w);
    let cols = nb * t.tiles();
    let plane = t.h * t.w;
    let (th, tw) = (t.th, t.tw);
    let l = t.tiles();
    // Aᵀ·M: `[i][j][tiles]` for output row i and column j of M; then the 2×2 outputs.
    let mut a = vec![0.0f32; 8 * l];
    let mut out = vec![0.0f32; 4 * l];
    for s in 0..nb {
        for oc in 0..o {
            let e = |k: usize| &m[(k * o + oc) * cols + s * l..][..l];
            for j in 0..4 {
                let (m0, m1, m2, m3) = (e(j), e(4 + j), e(8 + j), e(12 + j));
                let (a0, a1) = a.split_at_mut(4 * l);
                let (a0, a1) = (&mut a0[j * l..][..l], &mut a1[j * l..][..l]);
                for k in 0..l {
                    a0[k] = m0[k] + m1[k] + m2[k];
                    a1[k] = m1[k] - m2[k] - m3[k];
                }
            }
            for i in 0..2 {
                let ai = &a[4 * i * l..][..4 * l];
                let (a0, a1, a2, a3) = (&ai[..l], &ai[l..2 * l], &ai[2 * l..3 * l], &ai[3 * l..]);
                let (y0, y1) = out[2 * i * l..(2 * i + 2) * l].split_at_mut(l);
                for k in 0..l {
                    y0[k] = a0[k] + a1[k] + a2[k];
                    y1[k] = a1[k] - a2[k] - a3[k];
                }
            }
            let yp = &mut y[(s * o + oc) * plane..][..plane];
            for ty in 0..th {
                for i in 0..2 {
                    let r = 2 * ty + i;
                    if r >= t.h {
                        continue;
                    }
                    let y0 = &out[2 * i * l + ty * tw..][..tw];
                    let y1 = &out[(2 * i + 1) * l + ty * tw..][..tw];
                    let row = &mut yp[r * t.w..(r + 1) * t.w];
                    let mut pairs = row.chunks_exact_mut(2);
                    for ((p, a), b) in (&mut pairs).zip(y0).zip(y1) {
                        p[0] = *a;
                        p[1] = *b;
                    }
                    if let [last] = pairs.into_remainder() {
                        *last = y0[tw - 1];
                    }
                }
            }
        }
    }
}

/// Transformed tiles of one block, reused by the blocks a thread runs (every element is
/// written before it is read, so a buffer is zeroed only when it grows).
#[derive(Default)]
struct Scratch(Vec<f32>, Vec<f32>);

impl Scratch {
    fn two(&mut self, a: usize, b: usize) -> (&mut [f32], &mut [f32]) {
        for (v, n) in [(&mut self.0, a), (&mut self.1, b)] {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        }
        (&mut self.0[..a], &mut self.1[..b])
    }
}

/// The convolution of `x` (`[n, c, h, w]`) with transformed kernels `u` (`[16][o][c]`), padding
/// 1: `[n, o, h, w]`.
fn convolve(n: usize, c: usize, t: Tiling, o: usize, x: &[f32], u: &[f32]) -> Vec<f32> {
    let spb = t.samples_per_block();
    let plane = t.h * t.w;
    let mut y = vec![0.0f32; n * o * plane];
    y.par_chunks_mut(spb * o * plane)
        .zip(x.par_chunks(spb * c * plane))
        .for_each_init(Scratch::default, |scratch, (yb, xb)| {
            let cols = xb.len() / (c * plane) * t.tiles();
            let (v, m) = scratch.two(XI * c * cols, XI * o * cols);
            input_transform(t, c, xb, v);
            for k in 0..XI {
                gemm_into(
                    &mut m[k * o * cols..][..o * cols],
                    Mat::new(&u[k * o * c..][..o * c], o, c),
                    Mat::new(&v[k * c * cols..][..c * cols], c, cols),
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
