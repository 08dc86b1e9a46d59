//! Parameters as data: [`Layout`], [`ParamSet`] and self-describing safetensors files.

pub mod io;
pub mod layout;
pub mod set;

pub use layout::{Entry, Layout, Role};
pub use set::{ParamSet, combine, combine_slices, host_vec};
