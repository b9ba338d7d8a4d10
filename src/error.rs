//! One error type for the library. Every variant says what went wrong in words a user can act on:
//! the file, the tensor, the expected and actual shapes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op was called with tensors whose shapes do not fit together.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },

    /// A parameter of an op or a command is out of its valid range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A weight or fixture file is unreadable, truncated or malformed.
    #[error("{}: {msg}", path.display())]
    BadFile { path: PathBuf, msg: String },

    /// A tensor is absent from a weight file.
    #[error("{}: tensor `{name}` is missing", path.display())]
    MissingTensor { path: PathBuf, name: String },

    /// A tensor is present but not usable as asked (shape, dtype, NaN ...).
    #[error("{}: tensor `{name}`: {msg}", path.display())]
    BadTensor { path: PathBuf, name: String, msg: String },

    /// Filesystem trouble, with the path that caused it.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// A device backend failed (launch, allocation, driver).
    #[error("backend {backend}: {msg}")]
    Backend { backend: &'static str, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape { op, msg: msg.into() }
    }
}

/// `.at_path(p)` on an `io::Result`: the error names the file or folder it was about.
pub trait AtPath<T> {
    fn at_path(self, path: impl AsRef<std::path::Path>) -> Result<T>;
}

impl<T> AtPath<T> for std::result::Result<T, std::io::Error> {
    fn at_path(self, path: impl AsRef<std::path::Path>) -> Result<T> {
        self.map_err(|source| Error::Io { path: path.as_ref().to_path_buf(), source })
    }
}
