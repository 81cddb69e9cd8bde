//! Bindings for segments: `SegmentBuffer`, `SealedSegment`, `SegmentReader`, `SegmentFooter`,
//! `BlockLocation`, `parse_segment_footer`, `parse_segment_index`, `decode_block`. Compression,
//! decompression and verification run with the GIL released.
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::codec::codec_arg;
use super::errors::{type_err, IntoPyResult};
use super::{
    bytes_arg, i64_arg, opt, release, size_arg, type_name, u63_arg, RELEASE_THRESHOLD_BYTES,
};
use crate::compress::Codec;
use crate::segment::{
    self, BlockLocation, SegmentBuffer, SegmentFooter, SegmentOptions, SegmentReader,
};

/// A finished segment.
#[pyclass(frozen, name = "SealedSegment", module = "streamhouse._core")]
pub struct PySealedSegment {
    #[pyo3(get)]
    data: Py<PyBytes>,
    #[pyo3(get)]
    base_offset: u64,
    #[pyo3(get)]
    end_offset: u64,
    #[pyo3(get)]
    record_count: u64,
    #[pyo3(get)]
    min_timestamp_ms: i64,
    #[pyo3(get)]
    max_timestamp_ms: i64,
    #[pyo3(get)]
    size_bytes: u64,
    #[pyo3(get)]
    crc32c: u32,
    #[pyo3(get)]
    block_count: u32,
    codec: Codec,
}

#[pymethods]
impl PySealedSegment {
    #[getter]
    fn compression(&self) -> &'static str {
        self.codec.name()
    }
    fn __repr__(&self) -> String {
        format!(
            "SealedSegment(base_offset={}, end_offset={}, size_bytes={}, compression={:?}, crc32c={:#010x})",
            self.base_offset,
            self.end_offset,
            self.size_bytes,
            self.codec.name(),
            self.crc32c
        )
    }
}

/// An unsealed segment; a mutex makes concurrent calls from Python threads queue, not fail.
#[pyclass(frozen, name = "SegmentBuffer", module = "streamhouse._core")]
pub struct PySegmentBuffer {
    inner: Mutex<SegmentBuffer>,
}

impl PySegmentBuffer {
    fn lock(&self) -> MutexGuard<'_, SegmentBuffer> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[pymethods]
impl PySegmentBuffer {
    #[new]
    #[pyo3(signature = (base_offset, *, compression=None, compression_level=None, block_size_bytes=None,
                        max_record_bytes=None))]
    fn new(
        py: Python<'_>,
        base_offset: &Bound<'_, PyAny>,
        compression: Option<&Bound<'_, PyAny>>,
        compression_level: Option<&Bound<'_, PyAny>>,
        block_size_bytes: Option<&Bound<'_, PyAny>>,
        max_record_bytes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let level = opt(compression_level, 3, |o| i64_arg(o, "compression_level"))?;
        let opts = SegmentOptions {
            compression: opt(compression, Codec::Zstd, codec_arg)?,
            compression_level: i32::try_from(level)
                .map_err(|_| super::errors::value_err(py, "compression_level out of range"))?,
            block_size_bytes: opt(block_size_bytes, crate::DEFAULT_BLOCK_SIZE_BYTES, |o| {
                size_arg(o, "block_size_bytes")
            })?,
            max_record_bytes: opt(max_record_bytes, crate::DEFAULT_MAX_RECORD_BYTES, |o| {
                size_arg(o, "max_record_bytes")
            })?,
        };
        let buf = SegmentBuffer::new(u63_arg(base_offset, "base_offset")?, opts).py_err(py)?;
        Ok(PySegmentBuffer {
            inner: Mutex::new(buf),
        })
    }

    fn append(
        &self,
        py: Python<'_>,
        base_offset: &Bound<'_, PyAny>,
        batch: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let base = u63_arg(base_offset, "base_offset")?;
        let batch = bytes_arg(batch, "batch")?;
        let heavy = batch.len() >= RELEASE_THRESHOLD_BYTES;
        release(py, heavy, || self.lock().append(base, &batch)).py_err(py)
    }

    /// A batch already validated with this buffer's max_record_bytes (by the WAL append): only its
    /// header and record framing are checked (see `SegmentBuffer::append_trusted`).
    fn append_trusted(
        &self,
        py: Python<'_>,
        base_offset: &Bound<'_, PyAny>,
        batch: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let base = u63_arg(base_offset, "base_offset")?;
        let batch = bytes_arg(batch, "batch")?;
        // A small batch is copied with the GIL held: taking it back after a release costs more than
        // the copy, and under a busy event loop it waits up to the interpreter's switch interval.
        let heavy = batch.len() >= RELEASE_THRESHOLD_BYTES;
        release(py, heavy, || self.lock().append_trusted(base, &batch)).py_err(py)
    }

    #[pyo3(signature = (offset, max_bytes=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: &Bound<'py, PyAny>,
        max_bytes: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let offset = u63_arg(offset, "offset")?;
        let max = opt(max_bytes, 1 << 20, |o| size_arg(o, "max_bytes"))?;
        let out = release(py, true, || self.lock().read(offset, max)).py_err(py)?;
        Ok(PyBytes::new(py, &out))
    }

    fn seal(&self, py: Python<'_>) -> PyResult<PySealedSegment> {
        // A small buffer is sealed with the GIL held (as for small appends): a flush of hundreds of
        // small partitions seals them one after another in one worker thread, and taking the GIL back
        // after each seal made every one of them wait for the event loop (300 us each, measured).
        let heavy = self.lock().stats().size_bytes >= RELEASE_THRESHOLD_BYTES as u64;
        let parts = release(py, heavy, || self.lock().seal_parts()).py_err(py)?;
        // The blocks go straight into the returned bytes: no intermediate copy of the whole file.
        let data = PyBytes::new_with(py, parts.len(), |out| parts.write_to(out).py_err(py))?;
        let s = &parts.segment;
        Ok(PySealedSegment {
            size_bytes: parts.len() as u64,
            data: data.unbind(),
            base_offset: s.base_offset,
            end_offset: s.end_offset,
            record_count: s.record_count,
            min_timestamp_ms: s.min_timestamp_ms,
            max_timestamp_ms: s.max_timestamp_ms,
            crc32c: s.crc32c,
            block_count: s.block_count,
            codec: s.compression,
        })
    }

    #[getter]
    fn base_offset(&self) -> u64 {
        self.lock().base_offset()
    }
    #[getter]
    fn next_offset(&self) -> u64 {
        self.lock().next_offset()
    }
    #[getter]
    fn record_count(&self) -> u64 {
        self.lock().record_count()
    }
    #[getter]
    fn size_bytes(&self) -> u64 {
        self.lock().stats().size_bytes
    }
    #[getter]
    fn memory_bytes(&self) -> u64 {
        self.lock().stats().memory_bytes
    }
    #[getter]
    fn min_timestamp_ms(&self) -> Option<i64> {
        self.lock().min_timestamp_ms()
    }
    #[getter]
    fn max_timestamp_ms(&self) -> Option<i64> {
        self.lock().max_timestamp_ms()
    }
    #[getter]
    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
    #[getter]
    fn sealed(&self) -> bool {
        self.lock().sealed()
    }
}

/// A parsed footer.
#[pyclass(frozen, name = "SegmentFooter", module = "streamhouse._core")]
#[derive(Clone)]
pub struct PySegmentFooter {
    footer: SegmentFooter,
}

#[pymethods]
impl PySegmentFooter {
    #[getter]
    fn base_offset(&self) -> u64 {
        self.footer.base_offset
    }
    #[getter]
    fn end_offset(&self) -> u64 {
        self.footer.end_offset
    }
    #[getter]
    fn min_timestamp_ms(&self) -> i64 {
        self.footer.min_timestamp_ms
    }
    #[getter]
    fn max_timestamp_ms(&self) -> i64 {
        self.footer.max_timestamp_ms
    }
    #[getter]
    fn index_position(&self) -> u64 {
        self.footer.index_position
    }
    #[getter]
    fn index_length(&self) -> u32 {
        self.footer.index_length
    }
    #[getter]
    fn block_count(&self) -> u32 {
        self.footer.block_count
    }
    #[getter]
    fn compression(&self) -> &'static str {
        self.footer.compression.name()
    }
    fn __repr__(&self) -> String {
        format!("{:?}", self.footer)
    }
}

/// Where one block is.
#[pyclass(frozen, name = "BlockLocation", module = "streamhouse._core")]
pub struct PyBlockLocation {
    loc: BlockLocation,
}

#[pymethods]
impl PyBlockLocation {
    #[getter]
    fn base_offset(&self) -> u64 {
        self.loc.base_offset
    }
    #[getter]
    fn end_offset(&self) -> u64 {
        self.loc.end_offset()
    }
    #[getter]
    fn position(&self) -> u64 {
        self.loc.position
    }
    #[getter]
    fn length(&self) -> u32 {
        self.loc.length
    }
    #[getter]
    fn record_count(&self) -> u32 {
        self.loc.record_count
    }
    #[getter]
    fn max_timestamp_ms(&self) -> i64 {
        self.loc.max_timestamp_ms
    }
    fn __repr__(&self) -> String {
        format!("{:?}", self.loc)
    }
}

fn locations<'py>(py: Python<'py>, blocks: &[BlockLocation]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, blocks.iter().map(|&loc| PyBlockLocation { loc }))
}

#[pyfunction]
fn parse_segment_footer(py: Python<'_>, tail: &Bound<'_, PyAny>) -> PyResult<PySegmentFooter> {
    let tail = bytes_arg(tail, "tail")?;
    Ok(PySegmentFooter {
        footer: segment::parse_segment_footer(&tail).py_err(py)?,
    })
}

#[pyfunction]
fn parse_segment_index<'py>(
    py: Python<'py>,
    footer: &Bound<'py, PyAny>,
    index: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let footer = footer
        .cast::<PySegmentFooter>()
        .map_err(|_| {
            type_err(
                py,
                format!("footer must be SegmentFooter, not {}", type_name(footer)),
            )
        })?
        .get()
        .footer;
    let index = bytes_arg(index, "index")?;
    let blocks = segment::parse_segment_index(&footer, &index).py_err(py)?;
    locations(py, &blocks)
}

#[pyfunction]
fn decode_block<'py>(
    py: Python<'py>,
    block: &Bound<'py, PyAny>,
    compression: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let codec = codec_arg(compression)?;
    let block = bytes_arg(block, "block")?;
    let out = release(py, true, || segment::decode_block(&block, codec)).py_err(py)?;
    Ok(PyBytes::new(py, &out))
}

/// A sealed segment in memory.
#[pyclass(frozen, name = "SegmentReader", module = "streamhouse._core")]
pub struct PySegmentReader {
    inner: SegmentReader,
}

#[pymethods]
impl PySegmentReader {
    #[new]
    fn new(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let data = bytes_arg(data, "data")?;
        let inner = release(py, true, || SegmentReader::new(data.into_owned())).py_err(py)?;
        Ok(PySegmentReader { inner })
    }
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        release(py, true, || self.inner.verify()).py_err(py)
    }
    #[pyo3(signature = (offset, max_bytes=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: &Bound<'py, PyAny>,
        max_bytes: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let offset = u63_arg(offset, "offset")?;
        let max = opt(max_bytes, 1 << 20, |o| size_arg(o, "max_bytes"))?;
        let out = release(py, true, || self.inner.read(offset, max)).py_err(py)?;
        Ok(PyBytes::new(py, &out))
    }
    fn locate(&self, py: Python<'_>, offset: &Bound<'_, PyAny>) -> PyResult<PyBlockLocation> {
        let offset = u63_arg(offset, "offset")?;
        Ok(PyBlockLocation {
            loc: self.inner.locate(offset).py_err(py)?,
        })
    }
    #[getter]
    fn footer(&self) -> PySegmentFooter {
        PySegmentFooter {
            footer: *self.inner.footer(),
        }
    }
    #[getter]
    fn blocks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        locations(py, self.inner.blocks())
    }
    #[getter]
    fn base_offset(&self) -> u64 {
        self.inner.footer().base_offset
    }
    #[getter]
    fn end_offset(&self) -> u64 {
        self.inner.footer().end_offset
    }
    #[getter]
    fn record_count(&self) -> u64 {
        self.inner.footer().end_offset - self.inner.footer().base_offset
    }
    #[getter]
    fn compression(&self) -> &'static str {
        self.inner.footer().compression.name()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySegmentBuffer>()?;
    m.add_class::<PySealedSegment>()?;
    m.add_class::<PySegmentReader>()?;
    m.add_class::<PySegmentFooter>()?;
    m.add_class::<PyBlockLocation>()?;
    m.add_function(wrap_pyfunction!(parse_segment_footer, m)?)?;
    m.add_function(wrap_pyfunction!(parse_segment_index, m)?)?;
    m.add_function(wrap_pyfunction!(decode_block, m)?)?;
    Ok(())
}
