//! Permutation specs: which permutation acts on which axis of which named parameter (the
//! "permutation spec" of Git Re-Basin, Ainsworth et al. 2022).
//!
//! Permuting the hidden units of a layer — the output axis of its weight and its bias, and the
//! input axis of the next layer's weight — leaves the network's function unchanged. A spec names
//! one permutation per hidden layer (`fc1`, `conv2`, ...) with its size `n`, and lists for every
//! parameter of the layout, axis by axis, the permutation acting on it or none.
//!
//! An axis of size `n·b` may be permuted in *blocks* of `b` contiguous indices: unit `u` owns
//! indices `u·b … u·b + b − 1`. LeNet-5's `fc1` input is the channel-major flattening of the
//! `conv2` feature map, so permuting conv2's channels moves blocks of `h·w` spatial positions.
//!
//! A spec is validated against the real [`Layout`] when built: every parameter named and covered,
//! ranks and axis sizes (`n·b`) as declared; errors name the parameter at fault.

use crate::error::{Error, Result};
use crate::params::Layout;

/// One permutation of a spec: its name (the hidden layer it permutes) and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermDef {
    /// Name, e.g. `fc1` or `conv2`.
    pub name: String,
    /// Number of units permuted.
    pub size: usize,
}

/// A permutation acting on one axis: index into [`PermSpec::perms`] and block length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisPerm {
    /// Which permutation (index into [`PermSpec::perms`]).
    pub perm: usize,
    /// Contiguous indices per unit along the axis (axis size = perm size · block).
    pub block: usize,
}

/// The axes of one named parameter and the permutations acting on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamAxes {
    /// Parameter name in the layout.
    pub name: String,
    /// Shape (copied from the layout).
    pub shape: Vec<usize>,
    /// One entry per axis: the permutation acting on it, or `None`.
    pub axes: Vec<Option<AxisPerm>>,
}

/// How one axis is declared in a [`SpecBuilder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Axis {
    /// Not permuted.
    Fixed,
    /// Permuted by the named permutation, in blocks of `block` contiguous indices.
    Perm {
        /// Name of the permutation.
        perm: String,
        /// Block length (1 for a plain unit axis).
        block: usize,
    },
}

impl Axis {
    /// The axis is permuted unit by unit by permutation `perm`.
    pub fn by(perm: &str) -> Axis {
        Axis::Perm {
            perm: perm.into(),
            block: 1,
        }
    }

    /// The axis is permuted by `perm` in blocks of `block` contiguous indices.
    pub fn blocks(perm: &str, block: usize) -> Axis {
        Axis::Perm {
            perm: perm.into(),
            block,
        }
    }
}

/// Declares a spec; [`SpecBuilder::build`] validates it against a layout.
#[derive(Debug, Clone, Default)]
pub struct SpecBuilder {
    perms: Vec<(String, usize)>,
    params: Vec<(String, Vec<Axis>)>,
}

impl SpecBuilder {
    /// Declares a permutation of `size` units.
    pub fn perm(mut self, name: &str, size: usize) -> Self {
        self.perms.push((name.into(), size));
        self
    }

    /// Declares the axes of a parameter (one [`Axis`] per dimension).
    pub fn param(mut self, name: &str, axes: Vec<Axis>) -> Self {
        self.params.push((name.into(), axes));
        self
    }

    /// Validates the declaration against `layout` and resolves names to indices.
    ///
    /// Errors ([`Error::InvalidSpec`], naming the parameter or permutation): duplicate names, a
    /// parameter absent from the layout or not covered by the spec, a wrong number of axes, an
    /// unknown permutation, an axis whose size is not `perm size · block`, a permutation acting
    /// on two axes of one parameter, or a permutation acting on nothing.
    pub fn build(self, layout: &Layout) -> Result<PermSpec> {
        let bad = |msg: String| Error::InvalidSpec(format!("permutation spec: {msg}"));
        let mut perms: Vec<PermDef> = Vec::with_capacity(self.perms.len());
        for (name, size) in self.perms {
            if perms.iter().any(|p| p.name == name) {
                return Err(bad(format!("permutation `{name}` is declared twice")));
            }
            if size == 0 {
                return Err(bad(format!("permutation `{name}` has size 0")));
            }
            perms.push(PermDef { name, size });
        }
        let mut params: Vec<ParamAxes> = Vec::with_capacity(self.params.len());
        for (name, axes) in self.params {
            if params.iter().any(|p| p.name == name) {
                return Err(bad(format!("parameter `{name}` is listed twice")));
            }
            let entry = layout
                .entry(&name)
                .map_err(|_| bad(format!("parameter `{name}` is not in the layout")))?;
            if axes.len() != entry.shape.len() {
                return Err(bad(format!(
                    "parameter `{name}` has shape {:?} ({} axes) but the spec lists {} axes",
                    entry.shape,
                    entry.shape.len(),
                    axes.len()
                )));
            }
            let mut resolved = Vec::with_capacity(axes.len());
            for (ax, axis) in axes.into_iter().enumerate() {
                let Axis::Perm { perm, block } = axis else {
                    resolved.push(None);
                    continue;
                };
                let p = perms.iter().position(|d| d.name == perm).ok_or_else(|| {
                    bad(format!(
                        "parameter `{name}` axis {ax}: unknown permutation `{perm}`"
                    ))
                })?;
                let (size, dim) = (perms[p].size, entry.shape[ax]);
                if block == 0 || size * block != dim {
                    return Err(bad(format!(
                        "parameter `{name}` axis {ax} has size {dim}, but permutation `{perm}` \
                         of size {size} in blocks of {block} needs {}",
                        size * block
                    )));
                }
                if resolved.iter().flatten().any(|a: &AxisPerm| a.perm == p) {
                    return Err(bad(format!(
                        "parameter `{name}`: permutation `{perm}` acts on two axes"
                    )));
                }
                resolved.push(Some(AxisPerm { perm: p, block }));
            }
            params.push(ParamAxes {
                name,
                shape: entry.shape.clone(),
                axes: resolved,
            });
        }
        for e in layout.entries() {
            if !params.iter().any(|p| p.name == e.name) {
                return Err(bad(format!(
                    "parameter `{}` of the layout is not covered (list it, with no permutation \
                     on its axes if it is fixed)",
                    e.name
                )));
            }
        }
        let spec = PermSpec { perms, params };
        for (i, p) in spec.perms.iter().enumerate() {
            if spec.acted_on(i).is_empty() {
                return Err(bad(format!(
                    "permutation `{}` acts on no parameter",
                    p.name
                )));
            }
        }
        Ok(spec)
    }
}

/// A validated permutation spec (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermSpec {
    perms: Vec<PermDef>,
    params: Vec<ParamAxes>,
}

impl PermSpec {
    /// Starts declaring a spec.
    pub fn builder() -> SpecBuilder {
        SpecBuilder::default()
    }

    /// The permutations, in declaration order.
    pub fn perms(&self) -> &[PermDef] {
        &self.perms
    }

    /// The parameters and their axes.
    pub fn params(&self) -> &[ParamAxes] {
        &self.params
    }

    /// Index of a named permutation.
    pub fn perm_index(&self, name: &str) -> Option<usize> {
        self.perms.iter().position(|p| p.name == name)
    }

    /// The `(parameter index, axis)` pairs permutation `p` acts on.
    pub fn acted_on(&self, p: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (k, param) in self.params.iter().enumerate() {
            for (ax, a) in param.axes.iter().enumerate() {
                if a.is_some_and(|a| a.perm == p) {
                    out.push((k, ax));
                }
            }
        }
        out
    }

    /// This spec carried over to a layout whose entries are this spec's parameters under a
    /// prefix (a variational model's `mu/fc1.weight`, `log_sigma2/fc1.weight`): every such
    /// entry gets the axes of its parameter, so one permutation moves a unit's mean and
    /// variance together; an entry of another shape (a layer's single `log_alpha`) is fixed.
    /// Errors name an entry that matches no parameter.
    pub fn lifted(&self, layout: &Layout) -> Result<PermSpec> {
        let params = layout
            .entries()
            .iter()
            .map(|e| {
                let base = e.name.split_once('/').map_or(e.name.as_str(), |(_, b)| b);
                let p = self.params.iter().find(|p| p.name == base).ok_or_else(|| {
                    Error::InvalidSpec(format!(
                        "permutation spec: `{}` matches no parameter of the network",
                        e.name
                    ))
                })?;
                let axes = if p.shape == e.shape {
                    p.axes.clone()
                } else {
                    vec![None; e.shape.len()]
                };
                Ok(ParamAxes {
                    name: e.name.clone(),
                    shape: e.shape.clone(),
                    axes,
                })
            })
            .collect::<Result<_>>()?;
        Ok(PermSpec {
            perms: self.perms.clone(),
            params,
        })
    }

    /// Human-readable `name:axis` list of what each permutation acts on (for result files).
    pub fn describe(&self) -> Vec<(String, Vec<String>)> {
        (0..self.perms.len())
            .map(|p| {
                let on = self
                    .acted_on(p)
                    .into_iter()
                    .map(|(k, ax)| {
                        let block = self.params[k].axes[ax].map_or(1, |a| a.block);
                        match block {
                            1 => format!("{}:{ax}", self.params[k].name),
                            b => format!("{}:{ax} (blocks of {b})", self.params[k].name),
                        }
                    })
                    .collect();
                (self.perms[p].name.clone(), on)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Entry, Role};

    fn layout() -> Layout {
        let e = |name: &str, shape: Vec<usize>, role| Entry {
            name: name.into(),
            shape,
            role,
        };
        Layout::new(vec![
            e("fc1.weight", vec![4, 3], Role::Weight),
            e("fc1.bias", vec![4], Role::Bias),
            e("fc2.weight", vec![2, 4], Role::Weight),
            e("fc2.bias", vec![2], Role::Bias),
        ])
        .unwrap()
    }

    fn good() -> SpecBuilder {
        PermSpec::builder()
            .perm("fc1", 4)
            .param("fc1.weight", vec![Axis::by("fc1"), Axis::Fixed])
            .param("fc1.bias", vec![Axis::by("fc1")])
            .param("fc2.weight", vec![Axis::Fixed, Axis::by("fc1")])
            .param("fc2.bias", vec![Axis::Fixed])
    }

    fn err(b: SpecBuilder) -> String {
        b.build(&layout()).unwrap_err().to_string()
    }

    #[test]
    fn valid_spec_resolves() {
        let s = good().build(&layout()).unwrap();
        assert_eq!(s.perms().len(), 1);
        assert_eq!(s.acted_on(0), vec![(0, 0), (1, 0), (2, 1)]);
        assert_eq!(s.perm_index("fc1"), Some(0));
        assert_eq!(
            s.describe()[0].1,
            ["fc1.weight:0", "fc1.bias:0", "fc2.weight:1"]
        );
    }

    #[test]
    fn misfits_name_the_parameter() {
        let e = err(good().param("fc3.weight", vec![Axis::Fixed]));
        assert!(
            e.contains("`fc3.weight`") && e.contains("not in the layout"),
            "{e}"
        );
        let e = err(PermSpec::builder()
            .perm("fc1", 5)
            .param("fc1.weight", vec![Axis::by("fc1"), Axis::Fixed])
            .param("fc1.bias", vec![Axis::by("fc1")])
            .param("fc2.weight", vec![Axis::Fixed, Axis::by("fc1")])
            .param("fc2.bias", vec![Axis::Fixed]));
        assert!(
            e.contains("`fc1.weight` axis 0 has size 4") && e.contains("needs 5"),
            "{e}"
        );
        let e = err(PermSpec::builder()
            .perm("fc1", 4)
            .param("fc1.weight", vec![Axis::by("fc1")])
            .param("fc1.bias", vec![Axis::by("fc1")]));
        assert!(e.contains("`fc1.weight`") && e.contains("2 axes"), "{e}");
        let e = err(PermSpec::builder()
            .perm("fc1", 4)
            .param("fc1.weight", vec![Axis::by("fc1"), Axis::Fixed])
            .param("fc1.bias", vec![Axis::by("fc1")])
            .param("fc2.weight", vec![Axis::Fixed, Axis::by("fc1")]));
        assert!(e.contains("`fc2.bias`") && e.contains("not covered"), "{e}");
        let e = err(PermSpec::builder()
            .perm("fc1", 4)
            .param("fc1.weight", vec![Axis::by("fc1"), Axis::Fixed])
            .param("fc1.bias", vec![Axis::by("h")])
            .param("fc2.weight", vec![Axis::Fixed, Axis::by("fc1")])
            .param("fc2.bias", vec![Axis::Fixed]));
        assert!(
            e.contains("`fc1.bias`") && e.contains("unknown permutation `h`"),
            "{e}"
        );
        let e = err(PermSpec::builder()
            .perm("fc1", 2)
            .param("fc1.weight", vec![Axis::blocks("fc1", 2), Axis::Fixed])
            .param("fc1.bias", vec![Axis::blocks("fc1", 3)])
            .param("fc2.weight", vec![Axis::by("fc1"), Axis::Fixed])
            .param("fc2.bias", vec![Axis::Fixed]));
        assert!(
            e.contains("`fc1.bias` axis 0 has size 4") && e.contains("blocks of 3"),
            "{e}"
        );
        let e = err(good().perm("unused", 3));
        assert!(e.contains("`unused` acts on no parameter"), "{e}");
        let e = err(good().param("fc1.bias", vec![Axis::Fixed]));
        assert!(e.contains("`fc1.bias` is listed twice"), "{e}");
    }

    #[test]
    fn blocks_fit_when_sizes_multiply() {
        let s = PermSpec::builder()
            .perm("fc1", 2)
            .param("fc1.weight", vec![Axis::blocks("fc1", 2), Axis::Fixed])
            .param("fc1.bias", vec![Axis::blocks("fc1", 2)])
            .param("fc2.weight", vec![Axis::by("fc1"), Axis::Fixed])
            .param("fc2.bias", vec![Axis::by("fc1")])
            .build(&layout())
            .unwrap();
        assert_eq!(s.params()[0].axes[0], Some(AxisPerm { perm: 0, block: 2 }));
    }
}
