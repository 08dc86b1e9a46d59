//! Filled contours and contour lines for a scalar field on a rectangular grid (plotters has no
//! contour primitive).
//!
//! The field is first refined by bilinear interpolation ([`Grid::upsample`]). Each cell is then
//! split into four triangles around its centre, whose value is the mean of the four corners (the
//! exact bilinear value there); on a triangle the field is taken linear. This is marching squares
//! with the centre point resolving the ambiguous saddle cases:
//!
//! - **bands** ([`band_polygons`]): the part of a triangle with `levels[k] ≤ f < levels[k+1]` is
//!   the triangle clipped by two half-planes, a convex polygon; cells lying inside one band are
//!   emitted whole and merged along rows, so the output stays small (SVG friendly);
//! - **lines** ([`contour_segments`]): a level crossing a triangle is the segment between the two
//!   edge points where the linear field equals the level; these are exactly the band boundaries.
//!
//! Log-spaced levels ([`log_levels`]) are used on `ln f`: the grid is transformed with
//! [`Grid::map`] before contouring, so levels uniform in `ln f` are geometric in `f`.

/// A point `(x, y)`.
pub type Pt = (f64, f64);

/// A scalar field sampled on a rectangular grid: `z[j·nx + i] = f(x[i], y[j])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Increasing x coordinates (`nx ≥ 2`).
    pub x: Vec<f64>,
    /// Increasing y coordinates (`ny ≥ 2`).
    pub y: Vec<f64>,
    /// Values, row-major by y.
    pub z: Vec<f64>,
}

impl Grid {
    /// Builds a grid; `None` unless `z.len() == x.len()·y.len()` and both axes have ≥ 2 points.
    pub fn new(x: Vec<f64>, y: Vec<f64>, z: Vec<f64>) -> Option<Self> {
        (x.len() >= 2 && y.len() >= 2 && z.len() == x.len() * y.len()).then_some(Self { x, y, z })
    }

    /// Number of x samples.
    pub fn nx(&self) -> usize {
        self.x.len()
    }

    /// Number of y samples.
    pub fn ny(&self) -> usize {
        self.y.len()
    }

    /// `f(x[i], y[j])`.
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.z[j * self.nx() + i]
    }

    /// The same grid with `f` applied to every value.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Grid {
        Grid {
            x: self.x.clone(),
            y: self.y.clone(),
            z: self.z.iter().map(|&v| f(v)).collect(),
        }
    }

    /// Bilinear interpolation at `(x, y)` (clamped to the grid).
    pub fn bilinear(&self, x: f64, y: f64) -> f64 {
        let (i, s) = locate(&self.x, x);
        let (j, t) = locate(&self.y, y);
        let (a, b) = (self.at(i, j), self.at(i + 1, j));
        let (c, d) = (self.at(i, j + 1), self.at(i + 1, j + 1));
        (1.0 - t) * ((1.0 - s) * a + s * b) + t * ((1.0 - s) * c + s * d)
    }

    /// The grid refined `factor` times along each axis by bilinear interpolation (the original
    /// samples are kept exactly).
    pub fn upsample(&self, factor: usize) -> Grid {
        let f = factor.max(1);
        let refine = |v: &[f64]| -> Vec<f64> {
            let mut out = Vec::with_capacity((v.len() - 1) * f + 1);
            for w in v.windows(2) {
                for k in 0..f {
                    out.push(w[0] + (w[1] - w[0]) * k as f64 / f as f64);
                }
            }
            out.push(*v.last().unwrap());
            out
        };
        let (x, y) = (refine(&self.x), refine(&self.y));
        let mut z = Vec::with_capacity(x.len() * y.len());
        for &yy in &y {
            for &xx in &x {
                z.push(self.bilinear(xx, yy));
            }
        }
        Grid { x, y, z }
    }

    /// Smallest and largest finite value.
    pub fn range(&self) -> (f64, f64) {
        self.z
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    }
}

/// Cell index `i` with `v[i] ≤ x ≤ v[i+1]` and the fraction within it (clamped).
fn locate(v: &[f64], x: f64) -> (usize, f64) {
    let n = v.len();
    let i = match v.partition_point(|&a| a <= x) {
        0 => 0,
        p => (p - 1).min(n - 2),
    };
    let w = v[i + 1] - v[i];
    let s = if w > 0.0 { (x - v[i]) / w } else { 0.0 };
    (i, s.clamp(0.0, 1.0))
}

/// `n + 1` level edges spaced evenly in `ln` between `lo` and `hi` (both `> 0`), i.e. geometric:
/// `lo·(hi/lo)^(k/n)`. A degenerate range is widened by a factor of 2 on both sides.
pub fn log_levels(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let n = n.max(1);
    let lo = lo.max(f64::MIN_POSITIVE);
    let (lo, hi) = if hi <= lo * (1.0 + 1e-9) {
        (lo / 2.0, lo * 2.0)
    } else {
        (lo, hi)
    };
    let (a, b) = (lo.ln(), hi.ln());
    (0..=n)
        .map(|k| (a + (b - a) * k as f64 / n as f64).exp())
        .collect()
}

/// Index of the band `[levels[k], levels[k+1])` holding `v` (values outside the levels go to the
/// first or last band). `levels` must be increasing with at least two entries.
pub fn band_of(levels: &[f64], v: f64) -> usize {
    let bands = levels.len() - 1;
    levels[1..bands].partition_point(|&l| l <= v)
}

/// A vertex with its field value.
type Vf = (Pt, f64);

/// Clips a convex polygon (vertices with linear field values) to `f ≥ level` (`keep_above`) or
/// `f < level` (Sutherland–Hodgman against the level set of a linear field).
fn clip(poly: &[Vf], level: f64, keep_above: bool) -> Vec<Vf> {
    let inside = |f: f64| if keep_above { f >= level } else { f < level };
    let mut out = Vec::with_capacity(poly.len() + 2);
    for k in 0..poly.len() {
        let (p, fp) = poly[k];
        let (q, fq) = poly[(k + 1) % poly.len()];
        let (ip, iq) = (inside(fp), inside(fq));
        if ip {
            out.push((p, fp));
        }
        if ip != iq {
            let s = (level - fp) / (fq - fp);
            out.push(((p.0 + s * (q.0 - p.0), p.1 + s * (q.1 - p.1)), level));
        }
    }
    out
}

/// The four triangles of cell `(i, j)` (centre first), with field values.
fn cell_triangles(g: &Grid, i: usize, j: usize) -> [[Vf; 3]; 4] {
    let p = |a: usize, b: usize| ((g.x[a], g.y[b]), g.at(a, b));
    let (c00, c10, c11, c01) = (p(i, j), p(i + 1, j), p(i + 1, j + 1), p(i, j + 1));
    let centre = (
        (0.5 * (g.x[i] + g.x[i + 1]), 0.5 * (g.y[j] + g.y[j + 1])),
        0.25 * (c00.1 + c10.1 + c11.1 + c01.1),
    );
    [
        [centre, c00, c10],
        [centre, c10, c11],
        [centre, c11, c01],
        [centre, c01, c00],
    ]
}

/// Filled band polygons of `g` for increasing `levels` (`levels.len() − 1` bands): a list of
/// `(band, polygon)`. Whole cells of one band are merged along rows into rectangles.
/// Non-finite values are treated as the top of the range.
pub fn band_polygons(g: &Grid, levels: &[f64]) -> Vec<(usize, Vec<Pt>)> {
    assert!(levels.len() >= 2, "at least one band");
    let top = *levels.last().unwrap();
    let g = g.map(|v| if v.is_finite() { v } else { top });
    let band = |v: f64| band_of(levels, v);
    let mut out = Vec::new();
    for j in 0..g.ny() - 1 {
        // A run of whole cells in one band: (band, first cell).
        let mut run: Option<(usize, usize)> = None;
        let flush = |run: &mut Option<(usize, usize)>, end: usize, out: &mut Vec<_>| {
            if let Some((b, i0)) = run.take() {
                let (x0, x1, y0, y1) = (g.x[i0], g.x[end], g.y[j], g.y[j + 1]);
                out.push((b, vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)]));
            }
        };
        for i in 0..g.nx() - 1 {
            let corners = [
                g.at(i, j),
                g.at(i + 1, j),
                g.at(i + 1, j + 1),
                g.at(i, j + 1),
            ];
            let b0 = band(corners[0]);
            if corners.iter().all(|&v| band(v) == b0) {
                match run {
                    Some((b, _)) if b == b0 => {}
                    _ => {
                        flush(&mut run, i, &mut out);
                        run = Some((b0, i));
                    }
                }
                continue;
            }
            flush(&mut run, i, &mut out);
            for tri in cell_triangles(&g, i, j) {
                let lo = tri.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
                let hi = tri.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
                let (blo, bhi) = (band(lo), band(hi));
                if blo == bhi {
                    out.push((blo, tri.iter().map(|v| v.0).collect()));
                    continue;
                }
                for b in blo..=bhi {
                    let mut poly: Vec<Vf> = tri.to_vec();
                    if b > 0 {
                        poly = clip(&poly, levels[b], true);
                    }
                    if b + 1 < levels.len() - 1 {
                        poly = clip(&poly, levels[b + 1], false);
                    }
                    if poly.len() >= 3 {
                        out.push((b, poly.into_iter().map(|v| v.0).collect()));
                    }
                }
            }
        }
        flush(&mut run, g.nx() - 1, &mut out);
    }
    out
}

/// Segments where the (piecewise-linear) field equals `level`.
pub fn contour_segments(g: &Grid, level: f64) -> Vec<[Pt; 2]> {
    let mut out = Vec::new();
    for j in 0..g.ny() - 1 {
        for i in 0..g.nx() - 1 {
            let corners = [
                g.at(i, j),
                g.at(i + 1, j),
                g.at(i + 1, j + 1),
                g.at(i, j + 1),
            ];
            if corners.iter().any(|v| !v.is_finite())
                || corners.iter().all(|&v| v >= level)
                || corners.iter().all(|&v| v < level)
            {
                continue;
            }
            for tri in cell_triangles(g, i, j) {
                let mut pts = Vec::with_capacity(2);
                for k in 0..3 {
                    let (p, fp) = tri[k];
                    let (q, fq) = tri[(k + 1) % 3];
                    if (fp >= level) != (fq >= level) {
                        let s = (level - fp) / (fq - fp);
                        pts.push((p.0 + s * (q.0 - p.0), p.1 + s * (q.1 - p.1)));
                    }
                }
                if let [a, b] = pts[..] {
                    out.push([a, b]);
                }
            }
        }
    }
    out
}

/// Joins segments that share endpoints into polylines (endpoints compared after rounding to
/// 1e-9 of the coordinate scale), so a contour is drawn as a few paths instead of many pieces.
pub fn chain_segments(segs: &[[Pt; 2]]) -> Vec<Vec<Pt>> {
    use std::collections::HashMap;
    let scale = segs
        .iter()
        .flatten()
        .fold(0.0f64, |m, p| m.max(p.0.abs()).max(p.1.abs()))
        .max(1e-300);
    let key = |p: Pt| {
        let q = |v: f64| (v / scale * 1e9).round() as i64;
        (q(p.0), q(p.1))
    };
    // Endpoint → segments touching it.
    let mut at: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
    for (i, s) in segs.iter().enumerate() {
        for p in s {
            at.entry(key(*p)).or_default().push(i);
        }
    }
    let mut used = vec![false; segs.len()];
    let mut out = Vec::new();
    for start in 0..segs.len() {
        if used[start] {
            continue;
        }
        used[start] = true;
        let mut line: std::collections::VecDeque<Pt> = segs[start].iter().cloned().collect();
        // Extend at the back, then at the front.
        for back in [true, false] {
            loop {
                let end = if back {
                    *line.back().unwrap()
                } else {
                    *line.front().unwrap()
                };
                let next = at
                    .get(&key(end))
                    .and_then(|v| v.iter().find(|&&j| !used[j]).copied());
                let Some(j) = next else { break };
                used[j] = true;
                let [a, b] = segs[j];
                let other = if key(a) == key(end) { b } else { a };
                if back {
                    line.push_back(other);
                } else {
                    line.push_front(other);
                }
            }
        }
        out.push(line.into_iter().collect());
    }
    out
}

/// Area of a polygon (shoelace formula, absolute value).
pub fn area(poly: &[Pt]) -> f64 {
    let n = poly.len();
    (0..n)
        .map(|k| {
            let (a, b) = (poly[k], poly[(k + 1) % n]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum::<f64>()
        .abs()
        / 2.0
}

/// The colour map `viridis` at `s ∈ [0, 1]` (linear between ten anchor colours).
pub fn viridis(s: f64) -> (u8, u8, u8) {
    const A: [(u8, u8, u8); 10] = [
        (0x44, 0x01, 0x54),
        (0x48, 0x28, 0x78),
        (0x3e, 0x49, 0x89),
        (0x31, 0x68, 0x8e),
        (0x26, 0x82, 0x8e),
        (0x1f, 0x9e, 0x89),
        (0x35, 0xb7, 0x79),
        (0x6e, 0xce, 0x58),
        (0xb5, 0xde, 0x2b),
        (0xfd, 0xe7, 0x25),
    ];
    let s = if s.is_finite() {
        s.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let x = s * (A.len() - 1) as f64;
    let k = (x.floor() as usize).min(A.len() - 2);
    let f = x - k as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (A[k], A[k + 1]);
    (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(nx: usize, ny: usize) -> Grid {
        // f(x, y) = x on [0, 1]².
        let x: Vec<f64> = (0..nx).map(|i| i as f64 / (nx - 1) as f64).collect();
        let y: Vec<f64> = (0..ny).map(|j| j as f64 / (ny - 1) as f64).collect();
        let z = (0..nx * ny).map(|k| x[k % nx]).collect();
        Grid::new(x, y, z).unwrap()
    }

    #[test]
    fn levels_are_geometric() {
        let l = log_levels(0.01, 10.0, 3);
        assert_eq!(l.len(), 4);
        for (a, b) in l.iter().zip([0.01, 0.1, 1.0, 10.0]) {
            assert!((a - b).abs() < 1e-12 * b.max(1.0), "{a} vs {b}");
        }
        assert_eq!(band_of(&l, 0.001), 0);
        assert_eq!(band_of(&l, 0.05), 0);
        assert_eq!(band_of(&l, 0.11), 1);
        assert_eq!(band_of(&l, 5.0), 2);
        assert_eq!(band_of(&l, 50.0), 2);
    }

    #[test]
    fn bilinear_reproduces_samples_and_linear_fields() {
        let g = Grid::new(
            vec![0.0, 1.0, 3.0],
            vec![0.0, 2.0],
            vec![1.0, 2.0, 4.0, 3.0, 4.0, 6.0],
        )
        .unwrap();
        // f(x, y) = 1 + x + y is reproduced exactly.
        for (x, y) in [(0.0, 0.0), (0.5, 1.0), (2.0, 0.5), (3.0, 2.0)] {
            assert!((g.bilinear(x, y) - (1.0 + x + y)).abs() < 1e-12);
        }
        let u = g.upsample(4);
        assert_eq!((u.nx(), u.ny()), (9, 5));
        assert!((u.at(8, 4) - 6.0).abs() < 1e-12);
    }

    #[test]
    fn bands_tile_the_domain() {
        // Any field: band polygons cover the domain exactly once, and each band's area matches
        // the area where the field lies in it (here f = x, so band k has the width of its levels).
        let g = ramp(6, 4);
        let levels = [0.0, 0.2, 0.55, 1.0];
        let polys = band_polygons(&g, &levels);
        let total: f64 = polys.iter().map(|(_, p)| area(p)).sum();
        assert!((total - 1.0).abs() < 1e-9, "total area {total}");
        for b in 0..3 {
            let a: f64 = polys
                .iter()
                .filter(|(k, _)| *k == b)
                .map(|(_, p)| area(p))
                .sum();
            let want = levels[b + 1] - levels[b];
            assert!((a - want).abs() < 1e-9, "band {b}: {a} vs {want}");
        }
        // Saddle field: still a partition.
        let s = Grid::new(vec![0.0, 1.0], vec![0.0, 1.0], vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let polys = band_polygons(&s.upsample(3), &[0.0, 0.3, 0.6, 1.0]);
        let total: f64 = polys.iter().map(|(_, p)| area(p)).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn whole_cells_are_merged_along_rows() {
        let g = Grid::new(vec![0.0, 1.0, 2.0, 3.0], vec![0.0, 1.0], vec![0.5; 8]).unwrap();
        let polys = band_polygons(&g, &[0.0, 1.0]);
        assert_eq!(polys.len(), 1);
        assert!((area(&polys[0].1) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn contour_of_a_ramp_is_a_vertical_line() {
        let g = ramp(5, 5);
        let segs = contour_segments(&g, 0.6);
        assert!(!segs.is_empty());
        for s in &segs {
            for p in s {
                assert!((p.0 - 0.6).abs() < 1e-12);
            }
        }
        let len: f64 = segs
            .iter()
            .map(|[a, b]| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt())
            .sum();
        assert!((len - 1.0).abs() < 1e-9, "length {len}");
        assert!(contour_segments(&g, 2.0).is_empty());
    }

    #[test]
    fn segments_chain_into_polylines() {
        let g = ramp(5, 5);
        let segs = contour_segments(&g, 0.6);
        let lines = chain_segments(&segs);
        assert_eq!(lines.len(), 1, "one straight contour");
        assert_eq!(lines[0].len(), segs.len() + 1);
        // A closed loop: a bump in the middle.
        let x: Vec<f64> = (0..7).map(|i| i as f64).collect();
        let z = (0..49)
            .map(|k| {
                let (i, j) = ((k % 7) as f64 - 3.0, (k / 7) as f64 - 3.0);
                (-(i * i + j * j) / 4.0).exp()
            })
            .collect();
        let g = Grid::new(x.clone(), x, z).unwrap();
        let lines = chain_segments(&contour_segments(&g, 0.5));
        assert_eq!(lines.len(), 1);
        let (first, last) = (lines[0][0], *lines[0].last().unwrap());
        assert!((first.0 - last.0).abs() < 1e-9 && (first.1 - last.1).abs() < 1e-9);
    }

    #[test]
    fn viridis_ends() {
        assert_eq!(viridis(0.0), (0x44, 0x01, 0x54));
        assert_eq!(viridis(1.0), (0xfd, 0xe7, 0x25));
    }
}
