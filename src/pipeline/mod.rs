//! One pipeline language: analysis specs (`analyses/*.toml`, [`spec`]) describe multi-step
//! experiments as modeconn commands; [`runner`] executes them (in order, several at once, or
//! one step) with caching and resume; [`export`] renders them for Snakemake and SLURM; the demo
//! ([`demo`]) is one such spec embedded in the binary.

pub mod demo;
pub mod export;
pub mod runner;
pub mod spec;
