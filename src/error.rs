//! Library error type. Every variant names the file, flag or parameter at fault, so the CLI can
//! print one line and exit with code 1 instead of panicking.

use std::path::PathBuf;

/// Errors raised by the modeconn library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A data file exists but its content is invalid (bad magic, truncated, wrong length...).
    #[error("{}: {msg}", path.display())]
    Data {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A named parameter has the wrong shape.
    #[error("parameter `{name}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// Parameter name.
        name: String,
        /// Shape required by the layout.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },
    /// A parameter required by the layout is absent.
    #[error("missing parameter `{name}`")]
    MissingParam {
        /// Parameter name.
        name: String,
    },
    /// A parameter is present that the layout does not know.
    #[error("unexpected parameter `{name}`")]
    UnexpectedParam {
        /// Parameter name.
        name: String,
    },
    /// An invalid architecture, permutation or analysis specification.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// An invalid configuration value (flag or config key named in the message).
    #[error("{0}")]
    Config(String),
    /// A checkpoint file that cannot be used (wrong kind, architecture or layout).
    #[error("{}: {msg}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A figure could not be drawn.
    #[error("{}: cannot draw figure: {msg}", path.display())]
    Plot {
        /// The figure file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// Training produced a non-finite loss.
    #[error(
        "training diverged: loss is {loss} at epoch {epoch}, step {step}; lower the learning rate (--lr)"
    )]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Step within the epoch (0-based).
        step: usize,
        /// The offending loss value.
        loss: f64,
    },
}

/// Library result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A data-format error for a named file.
    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
