//! # modeconn
//!
//! A toolkit for studying the loss surfaces of neural networks: training small networks from
//! seeded initialisations, connecting minima by low-loss curves (Garipov et al. 2018), probing
//! permuted minima (Ainsworth et al. 2022) and variational dropout (Molchanov et al. 2017).
//!
//! ## Concepts
//! - **ParamSet** ([`params::ParamSet`]): the one container of weights — an ordered set of named,
//!   shaped tensors described by a [`params::Layout`]. Training, curves, permutations and
//!   variational models all operate on it; parameters are matched by name.
//! - **Architecture** ([`arch::Arch`]): a function of its weights. Each layer asks a
//!   [`weights::Weights`] source for its output, so plain and variational networks share one
//!   definition.
//! - **Objective** ([`train::Objective`]): what the one training loop ([`train::fit`]) minimises.
//! - **Metrics** ([`eval::Metrics`]): loss and accuracy from [`eval::evaluate`].
//!
//! ## Glossary
//! - *barrier*: how far the loss along a path rises above its endpoints.
//! - *bend*: a trainable control point of a curve between two frozen endpoints.

#![warn(missing_docs)]

pub mod arch;
pub mod backend;
pub mod cli;
pub mod commands;
pub mod curve;
pub mod data;
pub mod elementary;
pub mod error;
pub mod eval;
pub mod minima;
pub mod model;
pub mod network_file;
pub mod params;
pub mod permute;
pub mod pipeline;
pub mod plot;
pub mod report;
pub mod simplex;
pub mod torch_io;
pub mod train;
pub mod variational;
pub mod weights;

pub use error::{Error, Result};
