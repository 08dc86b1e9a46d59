//! `Layout`: the ordered list of named, shaped tensors that make up a parameter set.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a tensor is for: it decides the initialisation (a weight's fan-in scales its bias's
/// range; a normalisation's scale starts at 1, its shift at 0), which tensors a variational
/// model makes stochastic (weights; the rest stay points), and which are **state**: running
/// statistics that a train-mode forward pass updates and no optimiser touches. Weight decay
/// applies to every trained tensor alike, never to state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A dense `[out, in]` or conv `[out, in, kh, kw]` weight.
    Weight,
    /// A bias `[out]`.
    Bias,
    /// A normalisation layer's scale γ `[channels]` (PyTorch's `<bn>.weight`), initially 1.
    NormScale,
    /// A normalisation layer's shift β `[channels]` (PyTorch's `<bn>.bias`), initially 0.
    NormShift,
    /// State: a batch normalisation's running mean `[channels]`, initially 0.
    RunningMean,
    /// State: a batch normalisation's running variance `[channels]`, initially 1.
    RunningVar,
}

impl Role {
    /// Whether the tensor is state: saved in checkpoints and restored on resume, updated by
    /// train-mode forward passes, skipped by optimisers and weight decay, and never
    /// interpolated (wherever a new point in weight space is evaluated it is recomputed from
    /// data instead, [`crate::eval::state::recompute`]).
    pub fn is_state(self) -> bool {
        matches!(self, Role::RunningMean | Role::RunningVar)
    }
}

/// One named tensor of a layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Dotted name, e.g. `fc1.weight`.
    pub name: String,
    /// Shape (PyTorch conventions: dense `[out, in]`, conv `[out, in, kh, kw]`).
    pub shape: Vec<usize>,
    /// Role of the tensor.
    pub role: Role,
}

impl Entry {
    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An ordered set of named tensor shapes. Parameters are matched by name, never by position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    entries: Vec<Entry>,
}

impl Layout {
    /// Builds a layout; names must be unique and shapes non-empty.
    pub fn new(entries: Vec<Entry>) -> Result<Self> {
        for (i, e) in entries.iter().enumerate() {
            if entries[..i].iter().any(|o| o.name == e.name) {
                return Err(Error::InvalidSpec(format!(
                    "duplicate parameter name `{}`",
                    e.name
                )));
            }
            if e.numel() == 0 {
                return Err(Error::InvalidSpec(format!(
                    "parameter `{}` has an empty shape {:?}",
                    e.name, e.shape
                )));
            }
        }
        Ok(Self { entries })
    }

    /// The entries in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the layout is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Index of a named tensor.
    pub fn index_of(&self, name: &str) -> Result<usize> {
        self.entries
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| Error::MissingParam {
                name: name.to_string(),
            })
    }

    /// The entry of a named tensor.
    pub fn entry(&self, name: &str) -> Result<&Entry> {
        Ok(&self.entries[self.index_of(name)?])
    }

    /// Whether any tensor is state ([`Role::is_state`]).
    pub fn has_state(&self) -> bool {
        self.entries.iter().any(|e| e.role.is_state())
    }

    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.entries.iter().map(Entry::numel).sum()
    }

    /// Number of trained scalars (state excluded).
    pub fn trained_numel(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| !e.role.is_state())
            .map(Entry::numel)
            .sum()
    }

    /// Offsets of each tensor in the flat vector (length `len() + 1`).
    pub fn offsets(&self) -> Vec<usize> {
        let mut o = Vec::with_capacity(self.entries.len() + 1);
        o.push(0);
        for e in &self.entries {
            o.push(o.last().unwrap() + e.numel());
        }
        o
    }

    /// A layout with every name prefixed by `prefix` (used to put several sets in one file).
    pub fn prefixed(&self, prefix: &str) -> Layout {
        Layout {
            entries: self
                .entries
                .iter()
                .map(|e| Entry {
                    name: format!("{prefix}{}", e.name),
                    ..e.clone()
                })
                .collect(),
        }
    }
}
