//! One pipeline language: analysis specs (`analyses/*.toml`, [`spec`]) describe multi-step
//! experiments as modeconn commands; [`runner`] executes them step by step with caching and
//! resume; the demo ([`demo`]) is one such spec embedded in the binary.

pub mod demo;
pub mod runner;
pub mod spec;
