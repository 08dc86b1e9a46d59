//! `modeconn plot`: figures (PNG + SVG) from saved result files (see [`crate::plot::detect`]),
//! and the KL figure from a table it can compute itself (`--kl`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::params::io::write_atomic;
use crate::plot::detect::{PlotConfig, Written, plot_file, plot_path};
use crate::plot::kl::kl_table;
use crate::plot::{Size, detect::Input};

/// Validated options of `modeconn plot`.
#[derive(Debug, Clone, Default)]
pub struct PlotOptions {
    /// A result file or directory.
    pub input: Option<PathBuf>,
    /// Output directory (default: `figures/` next to the input).
    pub out: Option<PathBuf>,
    /// Also compute the KL table (`kl.csv`) and draw it.
    pub kl: bool,
    /// Size and title.
    pub config: PlotConfig,
}

/// Parses `WIDTHxHEIGHT`.
pub fn parse_size(s: &str, flag: &str) -> Result<Size> {
    let bad = || {
        Error::Config(format!(
            "{flag} `{s}`: expected WIDTHxHEIGHT, e.g. 1200x800"
        ))
    };
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let size = Size::new(
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    );
    size.validate()
        .map_err(|e| Error::Config(format!("{flag} `{s}`: {e}")))?;
    Ok(size)
}

/// The default output directory for an input: `<dir>/figures` (a file's directory).
pub fn default_out(input: &Path) -> PathBuf {
    if input.is_dir() {
        input.join("figures")
    } else {
        input
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join("figures")
    }
}

/// Writes `dir/kl.csv` and draws the KL figure from it.
pub fn write_kl(dir: &Path, cfg: &PlotConfig) -> Result<Vec<Written>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let csv = dir.join("kl.csv");
    write_atomic(&csv, kl_table().as_bytes())?;
    plot_file(&csv, Input::KlCsv, dir, "", cfg)
}

/// Runs `plot`; returns the list of figures written.
pub fn run(opts: &PlotOptions) -> Result<Value> {
    if opts.input.is_none() && !opts.kl {
        return Err(Error::Config(
            "nothing to plot: give a result file or directory, or --kl".into(),
        ));
    }
    let mut written = Vec::new();
    if let Some(input) = &opts.input {
        let out = opts.out.clone().unwrap_or_else(|| default_out(input));
        written.extend(plot_path(input, &out, &opts.config)?);
    }
    if opts.kl {
        let out = opts.out.clone().unwrap_or_else(|| PathBuf::from("figures"));
        written.extend(write_kl(&out, &opts.config)?);
    }
    Ok(json!(written))
}
