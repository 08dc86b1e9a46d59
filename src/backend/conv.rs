//! 2-d convolution as im2col + GEMM per sample on the host, with its own backward pass, plugged
//! into burn through a backend extension (`GemmConv`) for the flex backend and its autodiff
//! wrapper. Other backends keep burn's `conv2d`.
//!
//! Per sample `b` (Chellapilla et al. 2006, the Caffe scheme), with `X_b = im2col(x_b)` of shape
//! `[C·KH·KW, OH·OW]` and `W` viewed as `[O, C·KH·KW]`:
//! - forward: `y_b = W·X_b` (already in `[O, OH, OW]`, i.e. NCHW, layout);
//! - weight gradient: `∂L/∂W = Σ_b g_b·X_bᵀ`, computed as its transpose `[C·KH·KW, O]` (see
//!   [`gemm_into_t`]: `X_bᵀ` is then packed with vector loads, not element by element);
//! - input gradient: `∂L/∂x_b = col2im(Wᵀ·g_b)` (the adjoint of im2col scatters and adds).
//!
//! An input stored channels last (`layout.rs`) takes the transposed scheme, im2row:
//! `R_b = X_bᵀ` with the kernel positions outermost (`[OH·OW, KH·KW·C]`, each pixel's channels
//! one copy), `y_b = R_b·W'ᵀ` (channels last), `∂L/∂W' = Σ_b g_bᵀ·R_b` and
//! `∂L/∂x_b = row2im(g_b·W')`, with `W'` the kernel as `[O, KH·KW·C]`. 3×3 convolutions with unit
//! stride and padding 1 take Winograd's algorithm (`conv/winograd.rs`) in either case.
//!
//! Why: flex computes a convolution's input gradient as a transposed convolution and its weight
//! gradient through an unfolded copy of the whole batch (profiled on a LeNet-5 train step: its
//! im2col closures ≈ 33%, the transposed convolution ≈ 10%; with these kernels and the host
//! pooling the step is 2× as fast). Here every product is one GEMM on cache-sized per-sample
//! panels, the batch is cut into fixed chunks of [`CHUNK`] samples run in parallel, and the
//! weight gradient's partial sums are added in chunk order, so results do not depend on the
//! number of threads. The column matrices are recomputed in the backward pass rather than kept
//! from the forward pass (`KH·KW` times the input's size, for a few percent of a step).

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;
use multiversion::multiversion;

use super::host;
use super::layout::{self, Order, reorder};
use super::matmul::{Mat, gemm_into, gemm_into_t};
use rayon::prelude::*;

mod winograd;

/// Samples per parallel task (fixed, so that sums do not depend on the thread count).
const CHUNK: usize = 8;

/// Shapes of one convolution: input `[n, c, h, w]`, weight `[o, c, kh, kw]`, output
/// `[n, o, oh, ow]`, with stride `s` and zero padding `p` on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    s: [usize; 2],
    p: [usize; 2],
    oh: usize,
    ow: usize,
}

impl Geometry {
    /// The geometry of `x ⋆ w`, or `None` if the kernel does not fit in the padded input.
    pub fn new(
        x: [usize; 4],
        w: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Option<Self> {
        let [n, c, h, wd] = x;
        let [o, c2, kh, kw] = w;
        if c != c2 || stride.contains(&0) || kh == 0 || kw == 0 {
            return None;
        }
        let out = |len: usize, k: usize, s: usize, p: usize| {
            (len + 2 * p).checked_sub(k).map(|d| d / s + 1)
        };
        Some(Self {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            s: stride,
            p: padding,
            oh: out(h, kh, stride[0], padding[0])?,
            ow: out(wd, kw, stride[1], padding[1])?,
        })
    }

    /// Rows of a column matrix: `c·kh·kw`.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Columns of a column matrix: `oh·ow`.
    fn l(&self) -> usize {
        self.oh * self.ow
    }

    /// Input values per sample.
    fn chw(&self) -> usize {
        self.c * self.h * self.w
    }

    /// A 1×1 convolution with unit stride and no padding: the column matrix is the input.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.s == [1, 1] && self.p == [0, 0]
    }

    /// Output columns `ow` that read inside the input along the width for kernel column `j`:
    /// `0 ≤ ow·s + j − p < w`.
    fn valid_cols(&self, j: usize) -> std::ops::Range<usize> {
        let (s, p) = (self.s[1], self.p[1]);
        let lo = if p > j { (p - j).div_ceil(s) } else { 0 };
        let hi = if self.w + p > j {
            (self.w + p - j).div_ceil(s).min(self.ow)
        } else {
            0
        };
        lo..hi.max(lo)
    }

    /// The input row read by output row `oh` for kernel row `i`, if inside the input.
    fn input_row(&self, oh: usize, i: usize) -> Option<usize> {
        (oh * self.s[0] + i)
            .checked_sub(self.p[0])
            .filter(|&r| r < self.h)
    }
}

/// `dst = src` for short rows, in 8-lane blocks with an overlapping last block: a feature-map
/// row of a few to a few dozen values, copied thousands of times per sample, where a call to
/// `memcpy` per row costs more than the copy.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    assert_eq!(n, src.len());
    if n < 8 {
        dst.copy_from_slice(src);
        return;
    }
    let block = |d: &mut [f32], s: &[f32]| {
        let v: [f32; 8] = s[..8].try_into().expect("8 values");
        d[..8].copy_from_slice(&v);
    };
    for k in (0..n - 8).step_by(8) {
        block(&mut dst[k..], &src[k..]);
    }
    block(&mut dst[n - 8..], &src[n - 8..]);
}

/// `dst += src` for short rows, in 8-lane blocks and a scalar tail (see [`copy_row`]).
#[inline(always)]
fn add_row(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let mut v: [f32; 8] = d[..8].try_into().expect("8 values");
        for (a, b) in v.iter_mut().zip(s) {
            *a += b;
        }
        d.copy_from_slice(&v);
    }
    for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a += b;
    }
}

/// `col[(ci, i, j), (oh, ow)] = x[ci, oh·s + i − p, ow·s + j − p]` (zero outside) for one sample.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn im2col(g: &Geometry, x: &[f32], col: &mut [f32]) {
    let l = g.l();
    if g.s == [1, 1] && g.p == [0, 0] {
        // Every row of a column is inside the input: one short copy per output row.
        for ci in 0..g.c {
            let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let row = &mut col[((ci * g.kh + i) * g.kw + j) * l..][..l];
                    for (oh, dst) in row.chunks_exact_mut(g.ow).enumerate() {
                        copy_row(dst, &plane[(oh + i) * g.w + j..][..g.ow]);
                    }
                }
            }
        }
        return;
    }
    for ci in 0..g.c {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut col[((ci * g.kh + i) * g.kw + j) * l..][..l];
                let cols = g.valid_cols(j);
                for oh in 0..g.oh {
                    let dst = &mut row[oh * g.ow..(oh + 1) * g.ow];
                    let Some(r) = g.input_row(oh, i) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src = &plane[r * g.w..(r + 1) * g.w];
                    dst[..cols.start].fill(0.0);
                    dst[cols.end..].fill(0.0);
                    // Input column of output column `ow`: ow·s + j − p.
                    let first = cols.start * g.s[1] + j - g.p[1];
                    if g.s[1] == 1 {
                        dst[cols.clone()].copy_from_slice(&src[first..first + cols.len()]);
                    } else {
                        for (k, d) in dst[cols.clone()].iter_mut().enumerate() {
                            *d = src[first + k * g.s[1]];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `dx[ci, r, q] += col[(ci, i, j), (oh, ow)]` over every position
/// that read `x[ci, r, q]`. `dx` (one sample) must be zeroed by the caller.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn col2im_add(g: &Geometry, col: &[f32], dx: &mut [f32]) {
    let l = g.l();
    if g.s == [1, 1] && g.p == [0, 0] {
        for ci in 0..g.c {
            let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let row = &col[((ci * g.kh + i) * g.kw + j) * l..][..l];
                    for (oh, src) in row.chunks_exact(g.ow).enumerate() {
                        add_row(&mut plane[(oh + i) * g.w + j..][..g.ow], src);
                    }
                }
            }
        }
        return;
    }
    for ci in 0..g.c {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &col[((ci * g.kh + i) * g.kw + j) * l..][..l];
                let cols = g.valid_cols(j);
                for oh in 0..g.oh {
                    let Some(r) = g.input_row(oh, i) else {
                        continue;
                    };
                    let src = &row[oh * g.ow..(oh + 1) * g.ow];
                    let dst = &mut plane[r * g.w..(r + 1) * g.w];
                    let first = cols.start * g.s[1] + j - g.p[1];
                    if g.s[1] == 1 {
                        // Contiguous: a loop the compiler vectorises.
                        let dst = &mut dst[first..first + cols.len()];
                        for (d, v) in dst.iter_mut().zip(&src[cols.clone()]) {
                            *d += v;
                        }
                    } else {
                        for (k, v) in src[cols.clone()].iter().enumerate() {
                            dst[first + k * g.s[1]] += v;
                        }
                    }
                }
            }
        }
    }
}

/// `y = x ⋆ w` (no bias) on host buffers: `x: [n, c, h, w]` stored in the given order,
/// `w: [o, c, kh, kw]` → `[n, o, oh, ow]` and the order it is stored in; 3×3 kernels with unit
/// stride and padding 1 by Winograd's algorithm ([`winograd`], channels last), others by
/// im2col (row-major).
pub fn forward_host(g: &Geometry, (x, order): (&[f32], Order), w: &[f32]) -> (Vec<f32>, Order) {
    if winograd::applies(g) {
        return (winograd::forward(g, (x, order), w), Order::Nhwc);
    }
    match order {
        Order::Nchw => (gemm_forward(g, x, w), Order::Nchw),
        Order::Nhwc => (rows_forward(g, x, w), Order::Nhwc),
    }
}

/// [`forward_host`] through im2col and GEMM (`x` row-major).
fn gemm_forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (k, l) = (g.k(), g.l());
    let wm = Mat::new(w, g.o, k);
    let mut y = vec![0.0f32; g.n * g.o * l];
    y.par_chunks_mut(CHUNK * g.o * l)
        .zip(x.par_chunks(CHUNK * g.chw()))
        .for_each(|(yc, xc)| {
            let mut col = if g.is_pointwise() {
                Vec::new()
            } else {
                vec![0.0f32; k * l]
            };
            for (yb, xb) in yc.chunks_mut(g.o * l).zip(xc.chunks(g.chw())) {
                let cols = if g.is_pointwise() {
                    xb
                } else {
                    im2col(g, xb, &mut col);
                    &col
                };
                gemm_into(yb, wm, Mat::new(cols, k, l), false);
            }
        });
    y
}

/// A feature map's values and the order they are stored in.
pub type Stored = (Vec<f32>, Order);

/// Gradients of `y = x ⋆ w` given `gy = ∂L/∂y` (each stored in the given order): `(∂L/∂x`
/// with its order, `∂L/∂w)`, each only if asked for (both by [`winograd`] for a 3×3,
/// unit-stride, padding-1 convolution).
pub fn backward_host(
    g: &Geometry,
    x: (&[f32], Order),
    w: &[f32],
    gy: (&[f32], Order),
    want_dx: bool,
    want_dw: bool,
) -> (Option<Stored>, Option<Vec<f32>>) {
    if winograd::applies(g) {
        let dx = want_dx.then(|| (winograd::input_gradient(g, w, gy), Order::Nhwc));
        return (dx, want_dw.then(|| winograd::weight_gradient(g, x, gy)));
    }
    // The order of the input decides the path (and that of `∂L/∂x`); the output gradient is
    // brought to it.
    let (x, order) = x;
    let gy = reorder(gy.0, [g.n, g.o, g.oh, g.ow], gy.1, order);
    let (dx, dw) = match order {
        Order::Nchw => gemm_backward(g, x, w, &gy, want_dx, want_dw),
        Order::Nhwc => rows_backward(g, x, w, &gy, want_dx, want_dw),
    };
    (dx.map(|dx| (dx, order)), dw)
}

/// `rows[(oh, ow), (i, j, ci)] = x[oh·s + i − p, ow·s + j − p, ci]` (zero outside) for one
/// channels-last sample `x: [h][w][c]`: the im2col matrix transposed, with the kernel
/// positions outermost, so that each pixel's channels are one short copy.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn im2row(g: &Geometry, x: &[f32], rows: &mut [f32]) {
    let (c, k) = (g.c, g.k());
    for oh in 0..g.oh {
        for ow in 0..g.ow {
            let row = &mut rows[(oh * g.ow + ow) * k..][..k];
            for i in 0..g.kh {
                let part = &mut row[i * g.kw * c..][..g.kw * c];
                let Some(r) = g.input_row(oh, i) else {
                    part.fill(0.0);
                    continue;
                };
                for (j, px) in part.chunks_exact_mut(c).enumerate() {
                    match (ow * g.s[1] + j).checked_sub(g.p[1]).filter(|&q| q < g.w) {
                        Some(q) => copy_row(px, &x[(r * g.w + q) * c..][..c]),
                        None => px.fill(0.0),
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2row`]: `dx[r, q, ci] += rows[(oh, ow), (i, j, ci)]` over every position
/// that read `x[r, q, ci]`. `dx` (one channels-last sample) must be zeroed by the caller.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn row2im_add(g: &Geometry, rows: &[f32], dx: &mut [f32]) {
    let (c, k) = (g.c, g.k());
    for oh in 0..g.oh {
        for ow in 0..g.ow {
            let row = &rows[(oh * g.ow + ow) * k..][..k];
            for i in 0..g.kh {
                let Some(r) = g.input_row(oh, i) else {
                    continue;
                };
                for (j, px) in row[i * g.kw * c..][..g.kw * c].chunks_exact(c).enumerate() {
                    if let Some(q) = (ow * g.s[1] + j).checked_sub(g.p[1]).filter(|&q| q < g.w) {
                        add_row(&mut dx[(r * g.w + q) * c..][..c], px);
                    }
                }
            }
        }
    }
}

/// `w: [o, c, kh, kw]` as `[o, kh, kw, c]` (the column order of [`im2row`]), or back with
/// `back`.
fn kernel_positions_outer(g: &Geometry, w: &[f32], back: bool) -> Vec<f32> {
    let (c, taps) = (g.c, g.kh * g.kw);
    let mut out = vec![0.0f32; w.len()];
    for oc in 0..g.o {
        for ci in 0..c {
            for t in 0..taps {
                let (a, b) = ((oc * c + ci) * taps + t, (oc * taps + t) * c + ci);
                if back {
                    out[a] = w[b];
                } else {
                    out[b] = w[a];
                }
            }
        }
    }
    out
}

/// [`forward_host`] of a channels-last input through [`im2row`] and GEMM per sample:
/// `y_b = rows_b·W'ᵀ` (`[oh·ow, o]`, channels last), `W'` the kernel as `[o, kh·kw·c]`.
fn rows_forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (k, l) = (g.k(), g.l());
    let wp = kernel_positions_outer(g, w, false);
    let wm = Mat::new(&wp, g.o, k);
    let mut y = vec![0.0f32; g.n * g.o * l];
    y.par_chunks_mut(CHUNK * g.o * l)
        .zip(x.par_chunks(CHUNK * g.chw()))
        .for_each(|(yc, xc)| {
            let mut rows = vec![0.0f32; l * k];
            for (yb, xb) in yc.chunks_mut(g.o * l).zip(xc.chunks(g.chw())) {
                im2row(g, xb, &mut rows);
                gemm_into(yb, Mat::new(&rows, l, k), wm.t(), false);
            }
        });
    y
}

/// [`backward_host`] of a channels-last input and output gradient through [`im2row`]:
/// `∂L/∂W' = Σ_b g_bᵀ·rows_b` (chunk sums added in chunk order) and
/// `∂L/∂x_b = row2im(g_b·W')`, channels last.
fn rows_backward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (k, l) = (g.k(), g.l());
    let wp = kernel_positions_outer(g, w, false);
    let wm = Mat::new(&wp, g.o, k);
    let work = |rows: &mut Vec<f32>, ci: usize, dxc: Option<&mut [f32]>| {
        let samples = ci * CHUNK..((ci + 1) * CHUNK).min(g.n);
        let mut dw = vec![0.0f32; if want_dw { g.o * k } else { 0 }];
        let mut dxc = dxc;
        for (bi, b) in samples.enumerate() {
            let gb = Mat::new(&gy[b * g.o * l..(b + 1) * g.o * l], l, g.o);
            if want_dw {
                im2row(g, &x[b * g.chw()..(b + 1) * g.chw()], rows);
                gemm_into(&mut dw, gb.t(), Mat::new(rows, l, k), true);
            }
            if let Some(dxc) = dxc.as_deref_mut() {
                gemm_into(rows, gb, wm, false);
                row2im_add(g, rows, &mut dxc[bi * g.chw()..(bi + 1) * g.chw()]);
            }
        }
        dw
    };
    let (dx, dwp) = by_chunks(g, want_dx, || vec![0.0f32; l * k], work);
    (dx, want_dw.then(|| kernel_positions_outer(g, &dwp, true)))
}

/// Runs `work(buffers, chunk, ∂L/∂x of the chunk)` over the batch's chunks of [`CHUNK`]
/// samples in parallel (`∂L/∂x` zeroed and passed only if `want_dx`; `buffers` made once per
/// thread): `∂L/∂x` and the chunks' partial weight gradients added in chunk order.
fn by_chunks<B: Send>(
    g: &Geometry,
    want_dx: bool,
    buffers: impl Fn() -> B + Sync + Send,
    work: impl Fn(&mut B, usize, Option<&mut [f32]>) -> Vec<f32> + Sync + Send,
) -> (Option<Vec<f32>>, Vec<f32>) {
    let (dx, parts): (Option<Vec<f32>>, Vec<Vec<f32>>) = if want_dx {
        let mut dx = vec![0.0f32; g.n * g.chw()];
        let parts = dx
            .par_chunks_mut(CHUNK * g.chw())
            .enumerate()
            .map_init(&buffers, |b, (ci, dxc)| work(b, ci, Some(dxc)))
            .collect();
        (Some(dx), parts)
    } else {
        let parts = (0..g.n.div_ceil(CHUNK))
            .into_par_iter()
            .map_init(&buffers, |b, ci| work(b, ci, None))
            .collect();
        (None, parts)
    };
    let mut dw = parts.first().map_or(Vec::new(), |p| vec![0.0f32; p.len()]);
    for part in &parts {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    (dx, dw)
}

/// [`backward_host`] through im2col and GEMM.
fn gemm_backward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (k, l) = (g.k(), g.l());
    let wm = Mat::new(w, g.o, k);
    // One chunk of samples: writes its input gradients (if asked) and returns its partial
    // weight gradient (empty if not asked).
    // The column buffers are reused by the chunks a thread runs (every element is written
    // before it is read; zeroed only when allocated).
    let buffers = || {
        let len = |want: bool| if want && !g.is_pointwise() { k * l } else { 0 };
        (vec![0.0f32; len(want_dw)], vec![0.0f32; len(want_dx)])
    };
    let work = |(col, dcol): &mut (Vec<f32>, Vec<f32>), ci: usize, dxc: Option<&mut [f32]>| {
        let samples = ci * CHUNK..((ci + 1) * CHUNK).min(g.n);
        let mut dw = vec![0.0f32; if want_dw { g.o * k } else { 0 }];
        let mut dxc = dxc;
        for (bi, b) in samples.enumerate() {
            let xb = &x[b * g.chw()..(b + 1) * g.chw()];
            let gb = Mat::new(&gy[b * g.o * l..(b + 1) * g.o * l], g.o, l);
            if want_dw {
                let cols = if g.is_pointwise() {
                    xb
                } else {
                    im2col(g, xb, col);
                    &col[..]
                };
                // Into `∂L/∂Wᵀ` (`[k, o]`): see `gemm_into_t`.
                gemm_into_t(&mut dw, gb, Mat::new(cols, k, l).t(), true);
            }
            if let Some(dxc) = dxc.as_deref_mut() {
                let dxb = &mut dxc[bi * g.chw()..(bi + 1) * g.chw()];
                if g.is_pointwise() {
                    gemm_into(dxb, wm.t(), gb, false);
                } else {
                    gemm_into(dcol, wm.t(), gb, false);
                    col2im_add(g, dcol, dxb);
                }
            }
        }
        dw
    };
    let (dx, dwt) = by_chunks(g, want_dx, buffers, work);
    let dw = want_dw.then(|| {
        // `[k, o]` → `[o, k]`.
        let mut dw = vec![0.0f32; g.o * k];
        for (kk, row) in dwt.chunks(g.o).enumerate() {
            for (oc, v) in row.iter().enumerate() {
                dw[oc * k + kk] = *v;
            }
        }
        dw
    });
    (dx, dw)
}

fn flex(values: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn geometry(x: &FlexTensor, w: &FlexTensor, stride: [usize; 2], padding: [usize; 2]) -> Geometry {
    Geometry::new(x.shape().dims(), w.shape().dims(), stride, padding)
        .expect("checked by conv2d before dispatch")
}

fn forward_flex(
    x: &FlexTensor,
    w: &FlexTensor,
    stride: [usize; 2],
    padding: [usize; 2],
) -> FlexTensor {
    let g = geometry(x, w, stride, padding);
    let (x, order) = layout::stored(x);
    let (y, order) = forward_host(&g, (&x, order), &host(w));
    layout::tensor(y, [g.n, g.o, g.oh, g.ow], order)
}

/// Convolution through im2col + GEMM (see the module docs). Only the flex backend and its
/// autodiff wrapper implement it; [`conv2d`] decides when it is used.
#[backend_extension(Flex, Autodiff)]
pub trait GemmConv: Backend {
    /// `x ⋆ w` with the given stride and symmetric zero padding, no dilation, one group.
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self>;
}

impl GemmConv for Flex {
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        forward_flex(&x, &weight, stride, padding)
    }
}

/// The backward step: the input, the weight and the geometry are kept from the forward pass.
#[derive(Debug)]
struct GemmConvBackward;

impl Backward<Flex, 2> for GemmConvBackward {
    type State = (FlexTensor, FlexTensor, [usize; 2], [usize; 2]);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let gy = grads.consume::<Flex>(&ops.node);
        let (x, w, stride, padding) = ops.state;
        let g = geometry(&x, &w, stride, padding);
        let ((x, xo), (gy, go)) = (layout::stored(&x), layout::stored(&gy));
        let (dx, dw) = backward_host(
            &g,
            (&x, xo),
            &host(&w),
            (&gy, go),
            node_x.is_some(),
            node_w.is_some(),
        );
        if let (Some(node), Some((dx, order))) = (node_x, dx) {
            grads.register::<Flex>(node.id, layout::tensor(dx, [g.n, g.c, g.h, g.w], order));
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, flex(dw, [g.o, g.c, g.kh, g.kw]));
        }
    }
}

impl<C: CheckpointStrategy> GemmConv for Autodiff<Flex, C> {
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        let y = forward_flex(x.primitive(), weight.primitive(), stride, padding);
        match GemmConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                (x.into_primitive(), weight.into_primitive(), stride, padding),
                y,
            ),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// `x ⋆ w` (no bias) through [`GemmConv`] when the options are ones it covers (no dilation,
/// one group, symmetric padding, `f32`); otherwise burn's own `conv2d`.
pub fn conv2d(x: Tensor<4>, w: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
    let supported = options.dilation == [1, 1]
        && options.groups == 1
        && !options.is_asymmetric()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && Geometry::new(x.dims(), w.dims(), options.stride, options.padding_begin()).is_some();
    if !supported {
        return burn::tensor::module::conv2d(x, w, None, options);
    }
    let y = <Dispatch as GemmConv>::gemm_conv2d(
        x.into_dispatch(),
        w.into_dispatch(),
        options.stride,
        options.padding_begin(),
    );
    Tensor::from_dispatch(y)
}

#[cfg(test)]
pub(crate) mod tests {
    use burn::tensor::{Device, Tensor};

    use super::*;
    use crate::backend::{device, train_device, with_host};

    /// `(n, c, h, w, o, kh, kw, stride, padding)`.
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
    );

    /// LeNet-like, strided and padded, 1×1, a batch that is not a multiple of the chunk, and a
    /// kernel as wide as the padded input; then six for Winograd: by F(2×2, 3×3), odd sizes
    /// (edge tiles cut), 1×1 feature maps in two blocks of samples and a small square map; by
    /// F(4×4, 3×3), maps large enough that the weight gradient sums several blocks of samples
    /// per part (edge tiles cut, a channel count past the last vector); by F(2×2, 3×3), the
    /// same for small maps in a large batch; by F(4×4, 3×3), a small case for the
    /// finite-difference check whose channel counts take every run of the transforms (16, 8
    /// and single channels); last, an unpadded unit-stride case whose rows (17 wide) end in
    /// a partial block of 8.
    const CASES: [Case; 13] = [
        (3, 1, 12, 12, 4, 5, 5, [1, 1], [0, 0]),
        (2, 3, 9, 7, 5, 3, 2, [2, 1], [1, 2]),
        (4, 6, 5, 5, 3, 1, 1, [1, 1], [0, 0]),
        (17, 2, 6, 6, 3, 3, 3, [1, 1], [1, 1]),
        (2, 2, 8, 8, 2, 3, 3, [3, 2], [0, 1]),
        (2, 2, 3, 4, 3, 5, 6, [1, 1], [1, 1]),
        (3, 8, 7, 9, 12, 3, 3, [1, 1], [1, 1]),
        (37, 9, 1, 1, 8, 3, 3, [1, 1], [1, 1]),
        (5, 16, 4, 4, 10, 3, 3, [1, 1], [1, 1]),
        (16, 8, 47, 46, 9, 3, 3, [1, 1], [1, 1]),
        (136, 8, 7, 7, 8, 3, 3, [1, 1], [1, 1]),
        (2, 17, 9, 8, 26, 3, 3, [1, 1], [1, 1]),
        (2, 3, 13, 21, 4, 5, 5, [1, 1], [0, 0]),
    ];

    /// The Winograd cases are the ones taking that path, by F(4×4, 3×3) where said; the others
    /// are not.
    #[test]
    fn winograd_takes_the_3x3_unit_stride_cases() {
        for (i, &(n, c, h, w, o, kh, kw, s, p)) in CASES.iter().enumerate() {
            let g = Geometry::new([n, c, h, w], [o, c, kh, kw], s, p).unwrap();
            assert_eq!(winograd::applies(&g), (6..12).contains(&i), "case {i}");
            let f4 = winograd::applies(&g) && winograd::takes_f4(h, w);
            assert_eq!(f4, [9, 11].contains(&i), "case {i}");
        }
    }

    pub(crate) fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
        with_host(t, <[f32]>::to_vec)
    }

    /// `f` on a fresh rayon pool of `threads` threads.
    pub(crate) fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// `max |a − b|` relative to `b`'s largest magnitude (at least 1): Winograd's F(4×4, 3×3)
    /// rounds to a few units in the sixth digit of the outputs' scale, not of each output.
    pub(crate) fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
        max_diff(a, b) / b.iter().fold(1.0, |m, v| v.abs().max(m))
    }

    /// A deterministic stream of values in `[−1, 1)` (a 64-bit LCG, top 24 bits) for the
    /// host finite-difference checks.
    pub(crate) fn uniform_stream(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Asserts `grad[i]` against the central difference `(f(base + e·δᵢ) − f(base − e·δᵢ))/2e`
    /// to within `tol`, for every `step`-th element.
    pub(crate) fn check_central(
        what: &str,
        base: &[f32],
        grad: &[f32],
        (e, tol, step): (f32, f64, usize),
        f: &dyn Fn(&[f32]) -> f64,
    ) {
        for i in (0..base.len()).step_by(step) {
            let (mut a, mut b) = (base.to_vec(), base.to_vec());
            a[i] += e;
            b[i] -= e;
            let fd = (f(&a) - f(&b)) / (2.0 * f64::from(e));
            let ours = f64::from(grad[i]);
            assert!((fd - ours).abs() < tol, "{what}[{i}]: fd {fd}, ours {ours}");
        }
    }

    /// Normal values from a seeded local stream (burn's global generator is shared between
    /// tests running in parallel).
    pub(crate) fn normal<const D: usize>(shape: [usize; D], seed: u64, dev: &Device) -> Tensor<D> {
        use rand::SeedableRng;
        use rand_distr::Distribution as _;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| rand_distr::StandardNormal.sample(&mut rng))
            .collect();
        Tensor::from_data(TensorData::new(v, shape), dev)
    }

    fn inputs(case: usize, dev: &Device) -> (Tensor<4>, Tensor<4>, ConvOptions<2>) {
        let (n, c, h, w, o, kh, kw, s, p) = CASES[case];
        let x = normal([n, c, h, w], 100 + case as u64, dev);
        let k = normal([o, c, kh, kw], 200 + case as u64, dev);
        (x, k, ConvOptions::new(s, p, [1, 1], 1))
    }

    #[test]
    fn forward_matches_burns_convolution() {
        let dev = device();
        for case in 0..CASES.len() {
            let (x, k, opts) = inputs(case, &dev);
            let ours = conv2d(x.clone(), k.clone(), opts.clone());
            let theirs = burn::tensor::module::conv2d(x, k, None, opts);
            assert_eq!(ours.dims(), theirs.dims(), "case {case}");
            let d = rel_diff(&values(&ours), &values(&theirs));
            assert!(
                d < 1e-5,
                "case {case}: max |ours - burn| / max |burn| = {d}"
            );
        }
    }

    /// Gradients of `Σ y ⊙ r` for x and w, through `f`.
    fn grads(
        case: usize,
        f: impl Fn(Tensor<4>, Tensor<4>, ConvOptions<2>) -> Tensor<4>,
        x_tracked: bool,
    ) -> (Option<Vec<f32>>, Vec<f32>) {
        let dev = train_device();
        let (x, k, opts) = inputs(case, &dev);
        let x = if x_tracked { x.require_grad() } else { x };
        let k = k.require_grad();
        let y = f(x.clone(), k.clone(), opts);
        let r = normal(y.dims(), 7, &dev);
        let g = (y * r).sum().backward();
        let gx = x.grad(&g).map(|t| with_host(&t, <[f32]>::to_vec));
        (
            gx,
            with_host(&k.grad(&g).expect("weight gradient"), <[f32]>::to_vec),
        )
    }

    #[test]
    fn gradients_match_burns_convolution() {
        for case in 0..CASES.len() {
            let (ox, ow) = grads(case, conv2d, true);
            let (bx, bw) = grads(
                case,
                |x, k, o| burn::tensor::module::conv2d(x, k, None, o),
                true,
            );
            let dx = rel_diff(&ox.expect("x gradient"), &bx.expect("x gradient"));
            let dw = rel_diff(&ow, &bw);
            assert!(dx < 1e-5 && dw < 1e-5, "case {case}: dx {dx}, dw {dw}");
        }
        // An untracked input (a first layer) gets no gradient; the weight's is unchanged (on
        // the im2col and the Winograd path).
        for case in [0, 6, 11] {
            let (ox, ow) = grads(case, conv2d, false);
            assert!(ox.is_none());
            assert_eq!(ow, grads(case, conv2d, true).1, "case {case}");
        }
    }

    /// Inputs stored channels last (a leaf `[n, h, w, c]` viewed as `[n, c, h, w]`, as the
    /// 3×3 convolutions write their outputs): the same values and gradients as burn's
    /// convolution of the same view, on the im2row, the unpadded and the Winograd paths.
    #[test]
    fn channels_last_inputs_match_burns_convolution() {
        let dev = train_device();
        for case in 0..CASES.len() {
            let (x, k, opts) = inputs(case, &dev);
            let leaf = Tensor::<4>::from_data(x.permute([0, 2, 3, 1]).into_data(), &dev);
            let run = |ours: bool| {
                let (x, k) = (leaf.clone().require_grad(), k.clone().require_grad());
                let view = x.clone().permute([0, 3, 1, 2]);
                let y = if ours {
                    conv2d(view, k.clone(), opts.clone())
                } else {
                    burn::tensor::module::conv2d(view, k.clone(), None, opts.clone())
                };
                let r = normal(y.dims(), 7, &dev);
                let g = (y.clone() * r).sum().backward();
                [
                    values(&y),
                    values(&x.grad(&g).unwrap()),
                    values(&k.grad(&g).unwrap()),
                ]
            };
            let (ours, theirs) = (run(true), run(false));
            for (what, i) in [("y", 0), ("dx", 1), ("dw", 2)] {
                let d = rel_diff(&ours[i], &theirs[i]);
                assert!(d < 1e-5, "case {case}: {what} off by {d} (relative)");
            }
        }
    }

    /// Central differences of `Σ y ⊙ r` in a few weights and inputs (f64 host arithmetic).
    #[test]
    fn gradients_match_finite_differences() {
        for case in [1, 6, 11, 12] {
            finite_differences(case);
        }
    }

    fn finite_differences(case: usize) {
        let (n, c, h, w, o, kh, kw, s, p) = CASES[case];
        let g = Geometry::new([n, c, h, w], [o, c, kh, kw], s, p).unwrap();
        let mut next = uniform_stream(12345);
        let x: Vec<f32> = (0..n * c * h * w).map(|_| next()).collect();
        let k: Vec<f32> = (0..o * c * kh * kw).map(|_| next()).collect();
        let r: Vec<f32> = (0..n * o * g.oh * g.ow).map(|_| next()).collect();
        let d = [n, o, g.oh, g.ow];
        let loss = |x: &[f32], k: &[f32]| -> f64 {
            let (y, order) = forward_host(&g, (x, Order::Nchw), k);
            reorder(&y, d, order, Order::Nchw)
                .iter()
                .zip(&r)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        let (dx, dk) = backward_host(&g, (&x, Order::Nchw), &k, (&r, Order::Nchw), true, true);
        let ((dx, order), dk) = (dx.unwrap(), dk.unwrap());
        let dx = reorder(&dx, [n, c, h, w], order, Order::Nchw);
        // The loss is linear in each of x and k, so a central difference is exact for any step:
        // a long one keeps the forward pass's rounding small against the difference.
        check_central("x", &x, &dx, (0.25, 5e-4, 7), &|x| loss(x, &k));
        check_central("w", &k, &dk, (0.25, 5e-4, 1), &|k| loss(&x, k));
    }

    /// The batch is cut into fixed chunks and partial weight gradients are added in chunk order,
    /// so one thread and three threads give the same bits.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        for case in [3, 7, 9, 10] {
            let run = |threads: usize| on_threads(threads, || grads(case, conv2d, true));
            let (x1, w1) = run(1);
            let (x3, w3) = run(3);
            assert_eq!(x1, x3, "case {case}");
            assert_eq!(w1, w3, "case {case}");
        }
    }
}
