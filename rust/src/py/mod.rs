//! Python bindings (`streamhouse._core`), the only place PyO3 appears. Arguments are converted by
//! the helpers here so that a wrong Python type raises `streamhouse.errors.InvalidArgumentType`.
//!
//! Invariants: heavy work runs inside [`release`] (the one GIL-release helper); no Python object is
//! touched or kept while the GIL is released, and Rust never calls back into Python.
mod codec;
pub mod errors;
mod records;
mod segment;
mod wal;

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyInt, PyString};

use errors::{type_err, value_err};

/// Inputs at least this large are processed with the GIL released.
pub const RELEASE_THRESHOLD_BYTES: usize = 16 << 10;

/// Run `f` with the GIL released when `heavy`; the one place the extension lets go of the GIL.
pub fn release<T, F>(py: Python<'_>, heavy: bool, f: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    if heavy {
        py.detach(f)
    } else {
        f()
    }
}

/// Bytes argument: `bytes` is borrowed (immutable, so safe to read without the GIL); `bytearray` is
/// copied because Python code may resize it meanwhile.
pub fn bytes_arg<'a>(obj: &'a Bound<'_, PyAny>, name: &str) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    Err(type_err(
        obj.py(),
        format!("{name} must be bytes, not {}", type_name(obj)),
    ))
}

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn int_arg<'a, 'py>(obj: &'a Bound<'py, PyAny>, name: &str) -> PyResult<&'a Bound<'py, PyInt>> {
    // bool is an int subclass in Python, but True as a size or offset is a bug in the caller.
    if obj.is_instance_of::<PyBool>() {
        return Err(type_err(obj.py(), format!("{name} must be int, not bool")));
    }
    obj.cast::<PyInt>().map_err(|_| {
        type_err(
            obj.py(),
            format!("{name} must be int, not {}", type_name(obj)),
        )
    })
}

/// Signed 64-bit integer argument.
pub fn i64_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<i64> {
    int_arg(obj, name)?.extract::<i64>().map_err(|_| {
        value_err(
            obj.py(),
            format!("{name} does not fit in a signed 64-bit integer"),
        )
    })
}

/// Unsigned integer argument in `[0, 2^63)` (offsets, epochs, sizes).
pub fn u63_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
    let v = int_arg(obj, name)?.extract::<i64>().ok();
    match v {
        Some(v) if v >= 0 => Ok(v as u64),
        _ => Err(value_err(obj.py(), format!("{name} must be in [0, 2**63)"))),
    }
}

/// Integer argument in `[lo, hi]` (`hi` at most `u64::MAX`).
pub fn ranged_arg(obj: &Bound<'_, PyAny>, name: &str, lo: u64, hi: u64) -> PyResult<u64> {
    match int_arg(obj, name)?.extract::<u64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(value_err(
            obj.py(),
            format!("{name} = {obj} is outside [{lo}, {hi}]"),
        )),
    }
}

/// Optional argument: `None` (or absent) gives `default`.
pub fn opt<T>(
    obj: Option<&Bound<'_, PyAny>>,
    default: T,
    f: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<T>,
) -> PyResult<T> {
    match obj {
        Some(o) if !o.is_none() => f(o),
        _ => Ok(default),
    }
}

/// A size argument (positive `usize`).
pub fn size_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    let v = u63_arg(obj, name)?;
    usize::try_from(v).map_err(|_| value_err(obj.py(), format!("{name} is too large")))
}

/// A `str` argument.
pub fn str_arg<'a>(obj: &'a Bound<'_, PyAny>, name: &str) -> PyResult<Cow<'a, str>> {
    let s = obj.cast::<PyString>().map_err(|_| {
        type_err(
            obj.py(),
            format!("{name} must be str, not {}", type_name(obj)),
        )
    })?;
    s.to_cow()
        .map_err(|_| value_err(obj.py(), format!("{name} is not valid UTF-8")))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ENGINE", "rust")?;
    m.add("FORMAT_VERSION", crate::FORMAT_VERSION)?;
    m.add("DEFAULT_MAX_RECORD_BYTES", crate::DEFAULT_MAX_RECORD_BYTES)?;
    m.add("DEFAULT_BLOCK_SIZE_BYTES", crate::DEFAULT_BLOCK_SIZE_BYTES)?;
    m.add(
        "DEFAULT_WAL_MAX_FILE_BYTES",
        crate::DEFAULT_WAL_MAX_FILE_BYTES,
    )?;
    m.add("MAX_FRAME_BYTES", crate::MAX_FRAME_BYTES)?;
    m.add("FOOTER_SIZE", crate::FOOTER_SIZE)?;
    m.add("RELEASE_THRESHOLD_BYTES", RELEASE_THRESHOLD_BYTES)?;
    codec::register(m)?;
    wal::register(m)?;
    segment::register(m)?;
    Ok(())
}
