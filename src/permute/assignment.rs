//! The linear assignment problem: `max_P tr(Pᵀ C) = max_π Σ_i C[i, π[i]]` over permutations of a
//! square matrix `C`, solved exactly by the `lsap` crate (the shortest-augmenting-path algorithm
//! of Crouse 2016, as in SciPy's `linear_sum_assignment`).

use ndarray::Array2;

use crate::error::{Error, Result};

/// The permutation `π` maximising `Σ_i c[i, π[i]]` for a square `c: [n, n]`.
///
/// Errors if `c` is not square or has non-finite entries (e.g. from NaN weights).
pub fn maximize(c: &Array2<f64>) -> Result<Vec<usize>> {
    let (n, m) = c.dim();
    if n != m {
        return Err(Error::InvalidSpec(format!(
            "assignment problem must be square, got {n}×{m}"
        )));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    if c.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidSpec(
            "assignment problem has non-finite entries (NaN or infinite weights/activations?)"
                .into(),
        ));
    }
    let flat: Vec<f64> = c.iter().copied().collect();
    let (rows, cols) = lsap::solve(n, n, &flat, true)
        .map_err(|e| Error::InvalidSpec(format!("linear assignment failed: {e:?}")))?;
    let mut perm = vec![usize::MAX; n];
    for (r, col) in rows.into_iter().zip(cols) {
        perm[r] = col;
    }
    debug_assert!(perm.iter().all(|&j| j < n));
    Ok(perm)
}

/// `Σ_i c[i, π[i]]`.
pub fn assignment_value(c: &Array2<f64>, perm: &[usize]) -> f64 {
    perm.iter().enumerate().map(|(i, &j)| c[[i, j]]).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Best value over all `n!` permutations (Heap's algorithm).
    fn brute_force(c: &Array2<f64>) -> f64 {
        let n = c.nrows();
        let mut p: Vec<usize> = (0..n).collect();
        let mut best = assignment_value(c, &p);
        let mut stack = vec![0usize; n];
        let mut i = 1;
        while i < n {
            if stack[i] < i {
                let j = if i % 2 == 0 { 0 } else { stack[i] };
                p.swap(j, i);
                best = best.max(assignment_value(c, &p));
                stack[i] += 1;
                i = 1;
            } else {
                stack[i] = 0;
                i += 1;
            }
        }
        best
    }

    #[test]
    fn small_cases() {
        assert!(maximize(&Array2::zeros((0, 0))).unwrap().is_empty());
        assert_eq!(maximize(&Array2::from_elem((1, 1), 3.0)).unwrap(), [0]);
        let c = ndarray::array![[1.0, 5.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 2.0]];
        assert_eq!(maximize(&c).unwrap(), [1, 0, 2]);
        let mut bad = c.clone();
        bad[[0, 0]] = f64::NAN;
        assert!(
            maximize(&bad)
                .unwrap_err()
                .to_string()
                .contains("non-finite")
        );
        assert!(maximize(&Array2::zeros((2, 3))).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn matches_brute_force(
            n in 1usize..7,
            vals in prop::collection::vec(-10.0f64..10.0, 36),
            int in any::<bool>(),
        ) {
            // Integer-valued matrices make ties (several optimal assignments) likely.
            let c = Array2::from_shape_fn((n, n), |(i, j)| {
                let v = vals[i * 6 + j];
                if int { v.round() } else { v }
            });
            let p = maximize(&c).unwrap();
            let mut sorted = p.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            let (got, best) = (assignment_value(&c, &p), brute_force(&c));
            prop_assert!((got - best).abs() <= 1e-9, "lsap {} vs brute force {}", got, best);
        }
    }
}
