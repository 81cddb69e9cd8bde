//! The one place Rust errors become Python exceptions: each `Error` variant maps to the class of the
//! same meaning in `streamhouse.errors`, looked up by name once and cached for the process.
//!
//! Invariant: storage code never builds a `PyErr`; bindings call [`to_py`] (or `?` via `PyResultExt`).
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::error::Error;

/// Python exception classes the engine raises.
#[derive(Clone, Copy, Debug)]
pub enum Class {
    InvalidArgument,
    InvalidArgumentType,
    InvalidBatch,
    EmptyBatch,
    RecordTooLarge,
    OffsetMismatch,
    StorageError,
    DiskFull,
    WalClosed,
    WalPoisoned,
    WalCorrupted,
    SegmentCorrupted,
    UnsupportedVersion,
}

const NAMES: [&str; 13] = [
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidBatch",
    "EmptyBatch",
    "RecordTooLarge",
    "OffsetMismatch",
    "StorageError",
    "DiskFull",
    "WalClosed",
    "WalPoisoned",
    "WalCorrupted",
    "SegmentCorrupted",
    "UnsupportedVersion",
];

static CLASSES: [PyOnceLock<Py<PyType>>; 13] = [const { PyOnceLock::new() }; 13];

fn class(py: Python<'_>, c: Class) -> PyResult<Bound<'_, PyType>> {
    let i = c as usize;
    let (Some(cell), Some(name)) = (CLASSES.get(i), NAMES.get(i)) else {
        return Err(pyo3::exceptions::PySystemError::new_err(
            "unknown exception class",
        ));
    };
    let ty = cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let module = py.import("streamhouse.errors")?;
        Ok(module.getattr(*name)?.cast_into::<PyType>()?.unbind())
    })?;
    Ok(ty.bind(py).clone())
}

/// Build an exception of class `c` with `message` (and `path`/`position` for corruption classes).
pub fn new_err(
    py: Python<'_>,
    c: Class,
    message: String,
    location: Option<(Option<String>, Option<u64>)>,
) -> PyErr {
    match class(py, c) {
        Ok(ty) => match location {
            Some((path, position)) => PyErr::from_type(ty, (message, path, position)),
            None => PyErr::from_type(ty, (message,)),
        },
        Err(e) => e,
    }
}

/// Raise `InvalidArgumentType`.
pub fn type_err(py: Python<'_>, message: impl Into<String>) -> PyErr {
    new_err(py, Class::InvalidArgumentType, message.into(), None)
}

/// Raise `InvalidArgument`.
pub fn value_err(py: Python<'_>, message: impl Into<String>) -> PyErr {
    new_err(py, Class::InvalidArgument, message.into(), None)
}

/// Map a storage error to its Python class.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    let (c, loc) = match e {
        Error::InvalidArgument(_) => (Class::InvalidArgument, None),
        Error::InvalidBatch(_) => (Class::InvalidBatch, None),
        Error::EmptyBatch => (Class::EmptyBatch, None),
        Error::RecordTooLarge { .. } => (Class::RecordTooLarge, None),
        Error::OffsetMismatch { .. } => (Class::OffsetMismatch, None),
        Error::DiskFull(_) => (Class::DiskFull, None),
        Error::WalClosed => (Class::WalClosed, None),
        Error::WalPoisoned(_) => (Class::WalPoisoned, None),
        Error::WalCorrupted { path, position, .. } => (
            Class::WalCorrupted,
            Some((Some(path.display().to_string()), Some(position))),
        ),
        Error::SegmentCorrupted { position, .. } => {
            (Class::SegmentCorrupted, Some((None, position)))
        }
        Error::UnsupportedVersion { path, .. } => (
            Class::UnsupportedVersion,
            Some((path.map(|p| p.display().to_string()), None)),
        ),
        Error::Io { .. } => (Class::StorageError, None),
    };
    new_err(py, c, msg, loc)
}

/// `result.py_err(py)?` in bindings.
pub trait IntoPyResult<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for crate::error::Result<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}
