//! Permutations as data and their action on parameter sets, generic over any [`PermSpec`].
//!
//! Convention (the same as Git Re-Basin's `take(perm, axis)`): applying `π` moves unit `π[i]`
//! of the original to position `i`, on every axis the permutation acts on:
//! `π(W)[…, i, …] = W[…, π[i], …]` (in blocks of `b` indices: index `i·b + r` ← `π[i]·b + r`).
//! Then `π⁻¹[π[i]] = i`, and applying `π` then `σ` equals applying `π.then(σ)` with
//! `(π.then(σ))[i] = π[σ[i]]`.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::spec::PermSpec;
use crate::error::{Error, Result};
use crate::params::ParamSet;

/// One permutation per entry of a spec, by name (see the module docs for the convention).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permutation {
    /// Names, in the spec's order.
    pub names: Vec<String>,
    /// `maps[p][i]`: the original unit moved to position `i` by permutation `p`.
    pub maps: Vec<Vec<usize>>,
}

impl Permutation {
    /// The identity for `spec`.
    pub fn identity(spec: &PermSpec) -> Self {
        Self {
            names: spec.perms().iter().map(|p| p.name.clone()).collect(),
            maps: spec.perms().iter().map(|p| (0..p.size).collect()).collect(),
        }
    }

    /// Uniformly random permutations (Fisher–Yates), drawn in spec order from a ChaCha8 stream
    /// seeded with `seed`.
    pub fn random(spec: &PermSpec, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut p = Self::identity(spec);
        for m in &mut p.maps {
            m.shuffle(&mut rng);
        }
        p
    }

    /// The inverse: `inv[π[i]] = i`.
    pub fn inverse(&self) -> Self {
        let maps = self
            .maps
            .iter()
            .map(|m| {
                let mut inv = vec![0; m.len()];
                for (i, &j) in m.iter().enumerate() {
                    inv[j] = i;
                }
                inv
            })
            .collect();
        Self {
            names: self.names.clone(),
            maps,
        }
    }

    /// `self` followed by `next`: `apply(self.then(next), w) = apply(next, apply(self, w))`,
    /// i.e. `(self.then(next))[i] = self[next[i]]`. Both must belong to the same spec.
    pub fn then(&self, next: &Permutation) -> Self {
        assert_eq!(self.names, next.names, "permutations of different specs");
        let maps = self
            .maps
            .iter()
            .zip(&next.maps)
            .map(|(a, b)| b.iter().map(|&j| a[j]).collect())
            .collect();
        Self {
            names: self.names.clone(),
            maps,
        }
    }

    /// Whether every map is the identity.
    pub fn is_identity(&self) -> bool {
        self.maps
            .iter()
            .all(|m| m.iter().enumerate().all(|(i, &j)| i == j))
    }

    /// Errors unless this permutation has the spec's names and sizes and every map is a
    /// bijection.
    pub fn check(&self, spec: &PermSpec) -> Result<()> {
        let names: Vec<&str> = spec.perms().iter().map(|p| p.name.as_str()).collect();
        if self.names != names || self.maps.len() != names.len() {
            return Err(Error::InvalidSpec(format!(
                "permutation names {:?} do not match the spec's {names:?}",
                self.names
            )));
        }
        for (def, m) in spec.perms().iter().zip(&self.maps) {
            let mut seen = vec![false; def.size];
            let ok = m.len() == def.size
                && m.iter()
                    .all(|&j| j < def.size && !std::mem::replace(&mut seen[j], true));
            if !ok {
                return Err(Error::InvalidSpec(format!(
                    "permutation `{}` is not a permutation of 0..{}",
                    def.name, def.size
                )));
            }
        }
        Ok(())
    }
}

/// What `permutation.json` says about the convention.
pub const CONVENTION: &str = "unit i of the permuted layer is unit perm[i] of the original: \
W'[..., i, ...] = W[..., perm[i], ...] on every axis listed in acts_on (in blocks where noted)";

impl Permutation {
    /// The JSON form written to `permutation.json`: the convention, `perms` (name → map) and
    /// `acts_on` (name → `parameter:axis` list).
    pub fn to_json(&self, spec: &PermSpec) -> serde_json::Value {
        let perms: serde_json::Map<String, serde_json::Value> = self
            .names
            .iter()
            .zip(&self.maps)
            .map(|(n, m)| (n.clone(), serde_json::json!(m)))
            .collect();
        let acts_on: serde_json::Map<String, serde_json::Value> = spec
            .describe()
            .into_iter()
            .map(|(n, on)| (n, serde_json::json!(on)))
            .collect();
        serde_json::json!({
            "convention": CONVENTION,
            "perms": perms,
            "acts_on": acts_on,
        })
    }

    /// Reads the `perms` object of [`Permutation::to_json`]'s output, checked against `spec`.
    pub fn from_json(spec: &PermSpec, v: &serde_json::Value) -> Result<Self> {
        let bad = |msg: String| Error::InvalidSpec(format!("permutation file: {msg}"));
        let perms = v
            .get("perms")
            .and_then(|p| p.as_object())
            .ok_or_else(|| bad("no `perms` object".into()))?;
        let mut p = Self::identity(spec);
        for (name, map) in p.names.iter().zip(&mut p.maps) {
            let m = perms
                .get(name)
                .ok_or_else(|| bad(format!("no permutation `{name}`")))?;
            *map = serde_json::from_value(m.clone())
                .map_err(|e| bad(format!("permutation `{name}`: {e}")))?;
        }
        if let Some(extra) = perms.keys().find(|k| !p.names.contains(k)) {
            return Err(bad(format!("unknown permutation `{extra}`")));
        }
        p.check(spec)?;
        Ok(p)
    }
}

/// The full index map of one axis of size `perm.len() · block`: output index → input index.
fn axis_map(perm: &[usize], block: usize) -> Vec<usize> {
    perm.iter()
        .flat_map(|&u| (u * block)..(u * block + block))
        .collect()
}

/// Gathers a row-major tensor of `shape` along its axes: `out[i_0, …] = src[m_0[i_0], …]`, where
/// `m_a` is `maps[a]` or the identity when `None`.
pub fn gather_axes<T: Copy>(src: &[T], shape: &[usize], maps: &[Option<Vec<usize>>]) -> Vec<T> {
    debug_assert_eq!(src.len(), shape.iter().product::<usize>());
    let mut strides = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    let mut out = Vec::with_capacity(src.len());
    fn rec<T: Copy>(
        a: usize,
        base: usize,
        src: &[T],
        shape: &[usize],
        strides: &[usize],
        maps: &[Option<Vec<usize>>],
        out: &mut Vec<T>,
    ) {
        if a == shape.len() {
            out.push(src[base]);
            return;
        }
        for i in 0..shape[a] {
            let j = maps[a].as_ref().map_or(i, |m| m[i]);
            rec(a + 1, base + j * strides[a], src, shape, strides, maps, out);
        }
    }
    rec(0, 0, src, shape, &strides, maps, &mut out);
    out
}

/// Applies `perm` to the host values of parameter `k` of `spec` (row-major, layout shape),
/// leaving the axes acted on by `skip` (a permutation index) untouched.
pub(crate) fn permute_param<T: Copy>(
    spec: &PermSpec,
    perm: &Permutation,
    k: usize,
    values: &[T],
    skip: Option<usize>,
) -> Vec<T> {
    let param = &spec.params()[k];
    let maps: Vec<Option<Vec<usize>>> = param
        .axes
        .iter()
        .map(|a| {
            a.filter(|a| Some(a.perm) != skip)
                .map(|a| axis_map(&perm.maps[a.perm], a.block))
        })
        .collect();
    if maps.iter().all(Option::is_none) {
        return values.to_vec();
    }
    gather_axes(values, &param.shape, &maps)
}

/// `π(w)`: the parameter set with every permuted axis gathered (function-preserving when the
/// spec is the architecture's). Errors if `perm` does not fit `spec` or `w`'s layout lacks a
/// parameter of the spec.
pub fn apply(spec: &PermSpec, perm: &Permutation, w: &ParamSet) -> Result<ParamSet> {
    perm.check(spec)?;
    let layout = w.layout().clone();
    let mut values = w.to_vecs();
    for (k, param) in spec.params().iter().enumerate() {
        let i = layout.index_of(&param.name)?;
        let e = &layout.entries()[i];
        if e.shape != param.shape {
            return Err(Error::ShapeMismatch {
                name: e.name.clone(),
                expected: param.shape.clone(),
                found: e.shape.clone(),
            });
        }
        values[i] = permute_param(spec, perm, k, &values[i], None);
    }
    let device = w.tensors()[0].device();
    ParamSet::from_vecs(layout, values, &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use proptest::prelude::*;

    #[test]
    fn gather_moves_units_and_blocks() {
        // 2×3 matrix; permute rows by [1, 0] and columns by [2, 0, 1].
        let w = [0, 1, 2, 10, 11, 12];
        let out = gather_axes(&w, &[2, 3], &[Some(vec![1, 0]), Some(vec![2, 0, 1])]);
        assert_eq!(out, [12, 10, 11, 2, 0, 1]);
        assert_eq!(axis_map(&[1, 0], 3), [3, 4, 5, 0, 1, 2]);
    }

    #[test]
    fn then_matches_sequential_application() {
        let arch: Arch = "lenet5".parse().unwrap();
        let spec = arch.perm_spec();
        let w = arch.init(3, &crate::backend::device());
        let (a, b) = (Permutation::random(&spec, 1), Permutation::random(&spec, 2));
        let seq = apply(&spec, &b, &apply(&spec, &a, &w).unwrap()).unwrap();
        let one = apply(&spec, &a.then(&b), &w).unwrap();
        assert_eq!(seq.to_flat(), one.to_flat());
        assert!(a.then(&a.inverse()).is_identity());
        assert!(a.inverse().then(&a).is_identity());
    }

    #[test]
    fn check_rejects_non_permutations() {
        let arch: Arch = "mlp:4-3-2".parse().unwrap();
        let spec = arch.perm_spec();
        let mut p = Permutation::identity(&spec);
        p.check(&spec).unwrap();
        p.maps[0] = vec![0, 0, 1];
        assert!(p.check(&spec).unwrap_err().to_string().contains("`fc1`"));
        p.maps[0] = vec![0, 1];
        assert!(p.check(&spec).is_err());
        p.names[0] = "x".into();
        assert!(p.check(&spec).is_err());
    }

    #[test]
    fn json_round_trip() {
        let arch: Arch = "lenet5".parse().unwrap();
        let spec = arch.perm_spec();
        let p = Permutation::random(&spec, 9);
        let v = p.to_json(&spec);
        assert_eq!(v["acts_on"]["conv2"][2], "fc1.weight:1 (blocks of 16)");
        assert_eq!(Permutation::from_json(&spec, &v).unwrap(), p);
        let mut bad = v.clone();
        bad["perms"]["fc1"][0] = serde_json::json!(1000);
        let e = Permutation::from_json(&spec, &bad).unwrap_err().to_string();
        assert!(e.contains("`fc1`"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn inverse_after_apply_is_identity(
            widths in prop::collection::vec(1usize..7, 2..6),
            seed: u64,
        ) {
            let arch = Arch::Mlp { widths, norm: Default::default() };
            let spec = arch.perm_spec();
            let w = arch.init(seed, &crate::backend::device());
            let p = Permutation::random(&spec, seed);
            let back = apply(&spec, &p.inverse(), &apply(&spec, &p, &w).unwrap()).unwrap();
            prop_assert_eq!(back.to_flat(), w.to_flat());
            let mut sorted = p.maps.clone();
            for m in &mut sorted { m.sort_unstable(); }
            prop_assert_eq!(sorted, Permutation::identity(&spec).maps);
        }
    }
}
