//! Host matrix products through the `gemm` crate (the kernels burn's flex backend uses for its
//! own matmul), for the convolution and dense kernels of this backend.
//!
//! `gemm` accumulates each output element over the inner dimension in blocks whose size depends
//! only on that dimension and the cache sizes, never on the other two; so a product cut into
//! blocks of output rows or columns gives the same bits as the whole product, whatever the
//! number of blocks (tested in `dense.rs` with one and three threads). [`gemm_par`] relies on
//! it: it cuts the output into one block per thread, each multiplied on one thread, which
//! measured faster than `gemm`'s own threading on the MLP's shapes (e.g. the 128×784·784×300
//! product: 300 µs with `gemm`'s two threads, 230–250 µs as two one-thread halves; the 128-row
//! products of its second layer: 85 µs threaded, 60 µs on one thread, 35–45 µs in halves).

use rayon::prelude::*;

/// A matrix stored in a slice: `rows × cols`, element `(i, j)` at `i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    v: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows × cols` (the slice must hold exactly that many values).
    pub fn new(v: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(v.len(), rows * cols, "matrix buffer sized by its geometry");
        Self {
            v,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// `rows × cols` with element `(i, j)` at `v[i·rs + j·cs]` (every such element must lie in
    /// `v`).
    pub fn strided(v: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        let m = Self {
            v,
            rows,
            cols,
            rs,
            cs,
        };
        m.check();
        m
    }

    /// The transpose (a view: strides swapped).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Rows `r` (a view).
    fn rows(self, r: std::ops::Range<usize>) -> Self {
        Self {
            v: &self.v[(r.start * self.rs).min(self.v.len())..],
            rows: r.len(),
            ..self
        }
    }

    /// Columns `c` (a view).
    fn cols(self, c: std::ops::Range<usize>) -> Self {
        Self {
            v: &self.v[(c.start * self.cs).min(self.v.len())..],
            cols: c.len(),
            ..self
        }
    }

    /// Panics unless every element the view addresses lies inside its slice.
    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            assert!((self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.v.len());
        }
    }
}

/// `dst = a·b` (`accumulate`: `dst += a·b`) on the calling thread, `dst` row-major
/// `a.rows × b.cols` at `dst` with row stride `ld`.
///
/// # Safety
/// `a` and `b` must pass [`Mat::check`], and `dst` must be valid for writes of the
/// `a.rows × b.cols` block (row stride `ld`) and not alias `a` or `b`.
unsafe fn gemm_block(dst: *mut f32, ld: usize, a: Mat<'_>, b: Mat<'_>, accumulate: bool) {
    // SAFETY: the caller's contract.
    unsafe { gemm_strided(dst, [ld, 1], a, b, accumulate) }
}

/// `dst = a·b` (`accumulate`: `dst += a·b`) on the calling thread, element `(i, j)` of `dst` at
/// `i·rs + j·cs` for `[rs, cs] = strides`.
///
/// # Safety
/// `a` and `b` must pass [`Mat::check`], and `dst` must be valid for writes of every element of
/// the `a.rows × b.cols` block and not alias `a` or `b`.
unsafe fn gemm_strided(
    dst: *mut f32,
    [rs, cs]: [usize; 2],
    a: Mat<'_>,
    b: Mat<'_>,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the caller's contract bounds every index read in `a`, `b` and written in `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            cs as isize,
            rs as isize,
            accumulate,
            a.v.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.v.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Checks the shapes of `dst = a·b` with `dst` row-major.
fn check_product(dst: &[f32], a: &Mat<'_>, b: &Mat<'_>) {
    assert_eq!(b.rows, a.cols, "inner dimensions");
    assert_eq!(dst.len(), a.rows * b.cols, "output sized by its geometry");
    a.check();
    b.check();
}

/// `dst = a·b` (`accumulate`: `dst += a·b`), `dst` row-major `a.rows × b.cols`, on the calling
/// thread (for callers that parallelise over something else, e.g. samples).
pub fn gemm_into(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool) {
    check_product(dst, &a, &b);
    // SAFETY: checked above; `dst` is a distinct mutable borrow of exactly the output.
    unsafe { gemm_block(dst.as_mut_ptr(), b.cols, a, b, accumulate) }
}

/// `dst = (a·b)ᵀ` (`accumulate`: `dst += (a·b)ᵀ`), `dst` row-major `b.cols × a.rows`, on the
/// calling thread.
///
/// `gemm` packs the operand that becomes its left-hand side into panels, with vector loads
/// when that operand's columns are contiguous and one element at a time otherwise. For a
/// row-major output that operand is `b`; for this transposed output it is `a`. So a product
/// whose `b` is a transposed view of a large matrix (a convolution's weight gradient
/// `g·colᵀ`, with `col` the large column matrix) is faster written transposed.
pub fn gemm_into_t(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool) {
    check_product(dst, &a, &b);
    // SAFETY: checked above (the transposed block has as many elements); `dst` is a distinct
    // mutable borrow of exactly the output.
    unsafe { gemm_strided(dst.as_mut_ptr(), [1, a.rows], a, b, accumulate) }
}

/// `dst = a·b` (`accumulate`: `dst += a·b`) with element `(i, j)` of the product at
/// `dst[i·rs + j·cs]`, on the calling thread (for products laid out inside a larger array).
pub fn gemm_into_strided(
    dst: &mut [f32],
    [rs, cs]: [usize; 2],
    a: Mat<'_>,
    b: Mat<'_>,
    accumulate: bool,
) {
    assert_eq!(b.rows, a.cols, "inner dimensions");
    a.check();
    b.check();
    if a.rows > 0 && b.cols > 0 {
        assert!(
            (a.rows - 1) * rs + (b.cols - 1) * cs < dst.len(),
            "output inside its buffer"
        );
    }
    // SAFETY: checked above (every written element lies in `dst`); `dst` is a distinct mutable
    // borrow.
    unsafe { gemm_strided(dst.as_mut_ptr(), [rs, cs], a, b, accumulate) }
}

/// What to apply to each output element after the product: `y = act(y + bias[column])`.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Added to every row (one value per output column).
    pub bias: Option<&'a [f32]>,
    /// `max(y, 0)`.
    pub relu: bool,
}

impl Epilogue<'_> {
    /// Applies the epilogue to the row segment `row` that starts at output column `c0`.
    fn apply(&self, row: &mut [f32], c0: usize) {
        if let Some(b) = self.bias {
            for (y, b) in row.iter_mut().zip(&b[c0..]) {
                *y += b;
            }
        }
        if self.relu {
            for y in row.iter_mut() {
                // NaN stays NaN, as in burn's relu.
                *y = if *y < 0.0 { 0.0 } else { *y };
            }
        }
    }
}

/// Below this many multiply-adds per block a product is not split.
const MIN_BLOCK_MACS: usize = 1 << 18;

/// Output rows or columns per block are a multiple of this (the kernels' vector width).
const ALIGN: usize = 16;

/// The output pointer shared by the blocks of one product (each writes a disjoint block).
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: only used by `gemm_par`, whose blocks write disjoint parts of one buffer.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `dst = epilogue(a·b)`, `dst` row-major `a.rows × b.cols`, cut along its longer side into one
/// block per rayon thread (each block on one thread, its epilogue applied while it is in
/// cache). The bits do not depend on the number of blocks (see the module docs).
pub fn gemm_par(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, epilogue: Epilogue<'_>) {
    check_product(dst, &a, &b);
    // SAFETY: `dst` is a distinct mutable borrow of exactly the checked output.
    unsafe {
        gemm_par_to(
            Out(dst.as_mut_ptr()),
            a,
            b,
            epilogue,
            rayon::current_num_threads(),
        )
    }
}

/// `epilogue(a·b)` as a new row-major `a.rows × b.cols` vector that the product writes
/// directly, without the zero fill of `vec![0.0; n]` first (a pass over every fresh activation-
/// or weight-sized output of a train step). The bits of [`gemm_par`].
pub fn product(a: Mat<'_>, b: Mat<'_>, epilogue: Epilogue<'_>) -> Vec<f32> {
    product_on(rayon::current_num_threads(), a, b, epilogue)
}

/// Two independent products side by side, each cut into blocks for half of rayon's threads
/// (at least one): one fork/join for the pair instead of one per product, each product whole
/// on one thread when there are two (the local reparameterisation's mean and variance, forward
/// and back). The bits of [`product`] for each.
pub fn products((a, b, e): Job<'_>, (c, d, f): Job<'_>) -> (Vec<f32>, Vec<f32>) {
    let half = (rayon::current_num_threads() / 2).max(1);
    rayon::join(|| product_on(half, a, b, e), || product_on(half, c, d, f))
}

/// One product of [`products_of`]: `epilogue(a·b)`.
pub type Job<'a> = (Mat<'a>, Mat<'a>, Epilogue<'a>);

/// The products asked for: side by side ([`products`]) when both are, alone otherwise (a
/// backward pass wanting only some of its gradients).
pub fn products_of(p: Option<Job<'_>>, q: Option<Job<'_>>) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    match (p, q) {
        (Some(p), Some(q)) => {
            let (x, y) = products(p, q);
            (Some(x), Some(y))
        }
        (p, q) => (
            p.map(|(a, b, e)| product(a, b, e)),
            q.map(|(a, b, e)| product(a, b, e)),
        ),
    }
}

/// [`product`] cut into blocks for at most `threads` threads.
fn product_on(threads: usize, a: Mat<'_>, b: Mat<'_>, epilogue: Epilogue<'_>) -> Vec<f32> {
    let len = a.rows * b.cols;
    assert_eq!(b.rows, a.cols, "inner dimensions");
    a.check();
    b.check();
    if a.cols == 0 {
        // An empty inner side: `gemm` is not asked to write a product of nothing.
        let mut dst = vec![0.0f32; len];
        gemm_par(&mut dst, a, b, epilogue);
        return dst;
    }
    let mut dst = Vec::with_capacity(len);
    // SAFETY: the capacity holds the `a.rows × b.cols` output, which nothing else references.
    unsafe { gemm_par_to(Out(dst.as_mut_ptr()), a, b, epilogue, threads) };
    // SAFETY: with a non-empty inner side `gemm` writes every output element (`read_dst` is
    // false: `dst = a·b`, the old contents never read), and the epilogue reads only what the
    // product wrote (`product_overwrites_every_element` checks this on a NaN-filled buffer).
    unsafe { dst.set_len(len) };
    dst
}

/// [`gemm_par`] through a raw output pointer, cut into blocks for at most `threads` threads.
///
/// # Safety
/// `a` and `b` must pass [`Mat::check`] with `b.rows == a.cols`, and `out` must be valid for
/// writes of `a.rows × b.cols` elements and alias neither `a` nor `b`.
unsafe fn gemm_par_to(out: Out, a: Mat<'_>, b: Mat<'_>, epilogue: Epilogue<'_>, threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if let Some(bias) = epilogue.bias {
        assert_eq!(bias.len(), n, "one bias per output column");
    }
    let by_rows = m >= n;
    let (len, other) = if by_rows { (m, n) } else { (n, m) };
    // No block may take one of `gemm`'s special paths that the whole product does not: the
    // matrix-vector kernels for a side of 1, and, for an inner side over 512, the path for
    // products with both sides ≤ 64, which blocks the inner side differently.
    let min_side = if k > 512 && other <= 64 { 65 } else { ALIGN };
    let most = (m * n * k / MIN_BLOCK_MACS).min(len / min_side).max(1);
    let blocks = threads.min(most).max(1);
    let step = len.div_ceil(blocks).div_ceil(ALIGN) * ALIGN;
    let mut count = len.div_ceil(step.max(1));
    // A short last block joins the one before it.
    if count > 1 && len - (count - 1) * step < min_side {
        count -= 1;
    }
    let block = |i: usize| {
        let r = i * step..if i + 1 == count { len } else { (i + 1) * step };
        let (rows, cols) = if by_rows { (r, 0..n) } else { (0..m, r) };
        let (ab, bb) = (a.rows(rows.clone()), b.cols(cols.clone()));
        // SAFETY: `ab`/`bb` are sub-views of checked views; the block `rows × cols` lies inside
        // `dst` (m × n, row stride n) and blocks are disjoint.
        unsafe {
            let corner = out.ptr().add(rows.start * n + cols.start);
            gemm_block(corner, n, ab, bb, false);
            for r in 0..rows.len() {
                let row = std::slice::from_raw_parts_mut(corner.add(r * n), cols.len());
                epilogue.apply(row, cols.start);
            }
        }
    };
    if count <= 1 {
        block(0);
    } else {
        (0..count).into_par_iter().for_each(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conv::tests::on_threads;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// Cut into one block per thread (by rows or by columns, whichever side is longer), the
    /// product gives the same bits as one call on one thread, for 1 to 5 threads (shapes with
    /// ragged sides, an inner side over 512 next to a short side, short last blocks); the bias
    /// and ReLU epilogue equals the same ops applied afterwards.
    #[test]
    fn blocks_give_the_bits_of_the_whole_product() {
        // (m, k, n): wide (column blocks), tall (row blocks), ragged sides, long inner side.
        let shapes = [
            (128, 784, 300),
            (300, 128, 784),
            (1000, 300, 100),
            (37, 1100, 53),
            (33, 1100, 300),
            (200, 700, 20),
            (130, 64, 33),
        ];
        for (m, k, n) in shapes {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let bias = values(n, 3);
            let mut whole = vec![0.0f32; m * n];
            // `b` is used transposed (as a dense layer's weight is): `a·bᵀ` with `b: [n, k]`.
            let (am, bm) = (Mat::new(&a, m, k), Mat::new(&b, n, k).t());
            gemm_into(&mut whole, am, bm, false);
            let expected: Vec<f32> = whole
                .chunks(n)
                .flat_map(|row| row.iter().zip(&bias).map(|(y, b)| (y + b).max(0.0)))
                .collect();
            for threads in 1..=5 {
                let (plain, fused) = on_threads(threads, || {
                    let mut plain = vec![0.0f32; m * n];
                    gemm_par(&mut plain, am, bm, Epilogue::default());
                    let mut fused = vec![0.0f32; m * n];
                    let epilogue = Epilogue {
                        bias: Some(&bias),
                        relu: true,
                    };
                    gemm_par(&mut fused, am, bm, epilogue);
                    (plain, fused)
                });
                assert!(plain == whole, "{m}×{k}×{n}, {threads} threads");
                assert!(
                    fused == expected,
                    "{m}×{k}×{n}, {threads} threads, epilogue"
                );
            }
        }
    }

    /// The products against a plain triple loop in f64.
    #[test]
    fn products_match_a_reference_loop() {
        let (m, k, n) = (70, 90, 260);
        let a = values(m * k, 4);
        let b = values(k * n, 5);
        let mut y = vec![0.0f32; m * n];
        gemm_par(
            &mut y,
            Mat::new(&a, m, k),
            Mat::new(&b, k, n),
            Epilogue::default(),
        );
        for i in 0..m {
            for j in 0..n {
                let r: f64 = (0..k)
                    .map(|l| f64::from(a[i * k + l]) * f64::from(b[l * n + j]))
                    .sum();
                assert!((r - f64::from(y[i * n + j])).abs() < 1e-4, "({i}, {j})");
            }
        }
    }
    /// The transposed output holds the bits of the row-major product, transposed, with and
    /// without accumulation, for a convolution's weight-gradient shapes (`g·colᵀ`: a short
    /// `g`, a long inner side) and ragged ones.
    #[test]
    fn transposed_output_is_the_transpose() {
        for (m, k, n) in [(16, 1024, 144), (50, 64, 500), (7, 33, 5), (64, 600, 576)] {
            let (av, bv, cv) = (values(m * k, 6), values(n * k, 7), values(m * n, 8));
            // `a·bᵀ` with `b: [n, k]`, as in `g·colᵀ`.
            let (a, b) = (Mat::new(&av, m, k), Mat::new(&bv, n, k).t());
            let transpose =
                |v: &[f32]| -> Vec<f32> { (0..m * n).map(|t| v[(t % m) * n + t / m]).collect() };
            let mut row = vec![0.0f32; m * n];
            gemm_into(&mut row, a, b, false);
            let mut col = vec![f32::NAN; m * n];
            gemm_into_t(&mut col, a, b, false);
            assert!(col == transpose(&row), "{m}×{k}×{n}");
            let mut row = cv.clone();
            gemm_into(&mut row, a, b, true);
            let mut col = transpose(&cv);
            gemm_into_t(&mut col, a, b, true);
            assert!(col == transpose(&row), "{m}×{k}×{n}, accumulated");
        }
    }

    /// `product` writes every element (none of a NaN-filled buffer's NaNs survive the
    /// overwriting `gemm`), with the bits of `gemm_par`, on one thread and on three.
    #[test]
    fn product_overwrites_every_element() {
        for (m, k, n) in [(1, 3, 5), (17, 1, 33), (128, 784, 300), (300, 128, 784)] {
            let (av, bv) = (values(m * k, 1), values(k * n, 2));
            let (a, b) = (Mat::new(&av, m, k), Mat::new(&bv, k, n));
            let epilogue = Epilogue {
                bias: None,
                relu: true,
            };
            let mut stale = vec![f32::NAN; m * n];
            gemm_par(&mut stale, a, b, epilogue);
            assert!(stale.iter().all(|v| v.is_finite()), "{m}x{k}x{n}");
            for threads in [1, 3] {
                let got = on_threads(threads, || product(a, b, epilogue));
                assert_eq!(got, stale, "{m}x{k}x{n} on {threads} threads");
            }
        }
        assert_eq!(
            product(
                Mat::new(&[], 2, 0),
                Mat::new(&[], 0, 3),
                Epilogue::default()
            ),
            vec![0.0; 6]
        );
    }
}
