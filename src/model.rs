//! What a parameter set holds the parameters of: a plain network (an architecture's weights) or
//! a variational model (the same architecture's posterior parameters, [`VModel`]). Curves,
//! paths and alignment take either, so a curve between two variational models is a curve of
//! [`Model::Variational`] points, not a second curve type.

use std::fmt;
use std::sync::Arc;

use crate::arch::Arch;
use crate::error::Result;
use crate::params::{Layout, ParamSet, Role};
use crate::permute::PermSpec;
use crate::variational::{LOG_SIGMA2, MU, VModel};

/// A plain network or a variational model.
#[derive(Debug, Clone)]
pub enum Model {
    /// The architecture's own weights.
    Plain(Arch),
    /// A variational posterior over the architecture's weights.
    Variational(VModel),
}

impl Model {
    /// The architecture.
    pub fn arch(&self) -> &Arch {
        match self {
            Model::Plain(a) => a,
            Model::Variational(m) => &m.arch,
        }
    }

    /// The layout of the parameter set.
    pub fn layout(&self) -> Arc<Layout> {
        match self {
            Model::Plain(a) => a.layout(),
            Model::Variational(m) => m.layout().clone(),
        }
    }

    /// The permutation spec of the parameter set: the architecture's, carried over to every
    /// variational tensor ([`PermSpec::lifted`]).
    pub fn perm_spec(&self) -> Result<PermSpec> {
        let spec = self.arch().perm_spec();
        match self {
            Model::Plain(_) => Ok(spec),
            Model::Variational(m) => spec.lifted(m.layout()),
        }
    }

    /// What weight matching compares: the parameters on the architecture's layout — for a
    /// variational model its means, and for a zero-mean (variance) layer's weight its standard
    /// deviations `σ = exp(½·log σ²)`, the only place such a layer keeps its information.
    pub fn matching_view(&self, params: &ParamSet) -> Result<ParamSet> {
        let Model::Variational(m) = self else {
            return Ok(params.clone());
        };
        let base = m.arch.layout();
        let values = base
            .entries()
            .iter()
            .map(|e| {
                if let Ok(t) = params.flat(&format!("{MU}{}", e.name)) {
                    return Ok(crate::params::host_vec(t));
                }
                debug_assert_eq!(e.role, Role::Weight, "only weights lose their means");
                let ls2 = crate::params::host_vec(params.flat(&format!("{LOG_SIGMA2}{}", e.name))?);
                Ok(ls2.iter().map(|v| (0.5 * v).exp()).collect())
            })
            .collect::<Result<Vec<_>>>()?;
        ParamSet::from_vecs(base, values, &params.tensors()[0].device())
    }

    /// The variational model, if this is one.
    pub fn variational(&self) -> Option<&VModel> {
        match self {
            Model::Plain(_) => None,
            Model::Variational(m) => Some(m),
        }
    }
}

impl From<Arch> for Model {
    fn from(a: Arch) -> Self {
        Model::Plain(a)
    }
}

impl PartialEq for Model {
    /// The same architecture, and for variational models the same configuration (method,
    /// posterior forms, clip, variance form, initialisation settings).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Model::Plain(a), Model::Plain(b)) => a == b,
            (Model::Variational(a), Model::Variational(b)) => {
                a.arch == b.arch && a.config == b.config
            }
            _ => false,
        }
    }
}

impl fmt::Display for Model {
    /// `lenet5`, or `sparse-vd lenet5` for a variational model.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Model::Plain(a) => write!(f, "{a}"),
            Model::Variational(m) => write!(f, "{} {}", m.config.method, m.arch),
        }
    }
}
