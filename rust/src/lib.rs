//! StreamHouse storage engine (`streamhouse._core`): batch codec, WAL, segments.
//!
//! This file only lists modules and registers the Python module; formats live in docs/format.md.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod codec;
pub mod compress;
pub mod error;
pub mod segment;
pub mod stats;
pub mod wal;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};

/// Format version of the batch, record set, segment and flush object structures this build writes.
/// WAL files have their own version, [`wal::WAL_VERSION`] (2), in their file header.
pub const FORMAT_VERSION: u16 = 1;
/// Default `max_record_bytes`: 1 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
/// Default segment block size: 256 KiB.
pub const DEFAULT_BLOCK_SIZE_BYTES: usize = 256 << 10;
/// Default WAL file size before rotation: 64 MiB.
pub const DEFAULT_WAL_MAX_FILE_BYTES: u64 = 64 << 20;
/// Largest frame payload accepted on append and on read: 64 MiB.
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// Size of a segment footer.
pub const FOOTER_SIZE: usize = 64;

#[cfg(feature = "python")]
use pyo3::prelude::*;

#[cfg(feature = "python")]
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::register(m)
}
