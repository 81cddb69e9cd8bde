//! Bindings for checksums, codecs and the batch/record-set codec. `encode_batch` walks the Python
//! records once, writing straight into the output buffer; the decoders build `bytes` from slices.
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::errors::{type_err, value_err, IntoPyResult};
use super::records;
use super::{
    bytes_arg, i64_arg, opt, release, size_arg, str_arg, type_name, u63_arg,
    RELEASE_THRESHOLD_BYTES,
};
use crate::codec::record::header_size;
use crate::codec::{self as core, BatchEncoder, RecordView};
use crate::compress::{self as codecs, Codec};

pub fn codec_arg(obj: &Bound<'_, PyAny>) -> PyResult<Codec> {
    let name = str_arg(obj, "codec")?;
    Codec::from_name(&name).py_err(obj.py())
}

#[pyfunction]
#[pyo3(name = "crc32c")]
fn py_crc32c(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u32> {
    let data = bytes_arg(data, "data")?;
    Ok(release(py, data.len() >= RELEASE_THRESHOLD_BYTES, || {
        core::crc32c(&data)
    }))
}

#[pyfunction]
#[pyo3(name = "compress")]
#[pyo3(signature = (codec, data, level=None))]
fn py_compress<'py>(
    py: Python<'py>,
    codec: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    level: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let codec = codec_arg(codec)?;
    let level = opt(level, 3, |o| i64_arg(o, "level"))?;
    let level = i32::try_from(level).map_err(|_| value_err(py, "level out of range"))?;
    let data = bytes_arg(data, "data")?;
    let out = release(py, true, || codecs::compress(codec, &data, level)).py_err(py)?;
    Ok(PyBytes::new(py, &out))
}

#[pyfunction]
#[pyo3(name = "decompress")]
fn py_decompress<'py>(
    py: Python<'py>,
    codec: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    uncompressed_length: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let codec = codec_arg(codec)?;
    let data = bytes_arg(data, "data")?;
    let n = size_arg(uncompressed_length, "uncompressed_length")?;
    let out = release(py, true, || codecs::decompress(codec, &data, n)).py_err(py)?;
    Ok(PyBytes::new(py, &out))
}

fn opt_bytes<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Option<&'a [u8]>> {
    if obj.is_none() {
        return Ok(None);
    }
    obj.cast::<PyBytes>()
        .map(|b| Some(b.as_bytes()))
        .map_err(|_| {
            type_err(
                obj.py(),
                format!("{what} must be bytes or None, not {}", type_name(obj)),
            )
        })
}

fn header_pair<'py>(
    h: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyString>, Bound<'py, PyBytes>)> {
    let py = h.py();
    let t = h.cast::<PyTuple>().map_err(|_| {
        type_err(
            py,
            format!(
                "a header must be a (str, bytes) tuple, not {}",
                type_name(h)
            ),
        )
    })?;
    if t.len() != 2 {
        return Err(type_err(py, "a header must be a (str, bytes) tuple"));
    }
    let name = t
        .get_item(0)?
        .cast_into::<PyString>()
        .map_err(|_| type_err(py, "header name must be str"))?;
    let value = t
        .get_item(1)?
        .cast_into::<PyBytes>()
        .map_err(|_| type_err(py, "header value must be bytes"))?;
    Ok((name, value))
}

fn name_str<'a>(py: Python<'_>, n: &'a Bound<'_, PyString>) -> PyResult<&'a str> {
    n.to_str()
        .map_err(|_| value_err(py, "header name is not valid UTF-8"))
}

fn encode_one(enc: &mut BatchEncoder, rec: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = rec.py();
    let t = rec.cast::<PyTuple>().map_err(|_| {
        type_err(
            py,
            format!("a record must be a 4-tuple, not {}", type_name(rec)),
        )
    })?;
    if t.len() != 4 {
        return Err(type_err(
            py,
            format!("a record must be a 4-tuple, got {} items", t.len()),
        ));
    }
    let key = t.get_borrowed_item(0)?;
    let value = t.get_borrowed_item(1)?;
    let ts = t.get_borrowed_item(2)?;
    let headers = t.get_borrowed_item(3)?;
    let key = opt_bytes(&key, "key")?;
    let value_obj = value.cast::<PyBytes>().map_err(|_| {
        type_err(
            py,
            format!("value must be bytes, not {}", type_name(&value)),
        )
    })?;
    let value = value_obj.as_bytes();
    let ts = if ts.is_none() {
        None
    } else {
        Some(i64_arg(&ts, "timestamp_ms")?)
    };
    if headers.is_none() {
        return enc.begin_record(key, value, ts, 0, 0).py_err(py);
    }
    let seq: Bound<'_, PyTuple> = match headers.cast::<PyTuple>() {
        Ok(t) => t.to_owned(),
        Err(_) => match headers.cast::<PyList>() {
            Ok(l) => l.to_tuple(),
            Err(_) => match headers.try_iter() {
                Ok(it) => PyTuple::new(py, it.collect::<PyResult<Vec<_>>>()?)?,
                Err(_) => {
                    return Err(type_err(
                        py,
                        "headers must be a sequence of (str, bytes) or None",
                    ))
                }
            },
        },
    };
    let mut size = 0usize;
    for h in seq.iter() {
        let (n, v) = header_pair(&h)?;
        size += header_size(name_str(py, &n)?.len(), v.as_bytes().len());
    }
    enc.begin_record(key, value, ts, seq.len(), size)
        .py_err(py)?;
    for h in seq.iter() {
        let (n, v) = header_pair(&h)?;
        enc.header(name_str(py, &n)?.as_bytes(), v.as_bytes());
    }
    Ok(())
}

#[pyfunction]
#[pyo3(name = "encode_batch")]
fn py_encode_batch<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    default_timestamp_ms: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let default_ts = i64_arg(default_timestamp_ms, "default_timestamp_ms")?;
    let mut enc;
    if let Ok(list) = records.cast::<PyList>() {
        enc = BatchEncoder::new(default_ts, 0);
        enc.expect_records(list.len());
        for rec in list.iter() {
            encode_one(&mut enc, &rec)?;
        }
    } else if let Ok(tuple) = records.cast::<PyTuple>() {
        enc = BatchEncoder::new(default_ts, 0);
        enc.expect_records(tuple.len());
        for rec in tuple.iter() {
            encode_one(&mut enc, &rec)?;
        }
    } else if records.cast::<PyBytes>().is_err() && records.cast::<PyString>().is_err() {
        let it = records
            .try_iter()
            .map_err(|_| type_err(py, "records must be a sequence of 4-tuples"))?;
        enc = BatchEncoder::new(default_ts, 0);
        for rec in it {
            encode_one(&mut enc, &rec?)?;
        }
    } else {
        return Err(type_err(py, "records must be a sequence of 4-tuples"));
    }
    let out = enc.finish().py_err(py)?;
    Ok(PyBytes::new(py, &out))
}

/// What `batch_info` learnt about a batch.
#[pyclass(frozen, name = "BatchInfo", module = "streamhouse._core")]
pub struct PyBatchInfo {
    #[pyo3(get)]
    record_count: u32,
    #[pyo3(get)]
    base_timestamp_ms: i64,
    #[pyo3(get)]
    max_timestamp_ms: i64,
    #[pyo3(get)]
    payload_length: u32,
    #[pyo3(get)]
    max_record_size: usize,
}

#[pymethods]
impl PyBatchInfo {
    fn __repr__(&self) -> String {
        format!(
            "BatchInfo(record_count={}, base_timestamp_ms={}, max_timestamp_ms={}, payload_length={}, max_record_size={})",
            self.record_count, self.base_timestamp_ms, self.max_timestamp_ms, self.payload_length, self.max_record_size
        )
    }
}

#[pyfunction]
#[pyo3(name = "batch_info")]
#[pyo3(signature = (batch, max_record_bytes=None))]
fn py_batch_info(
    py: Python<'_>,
    batch: &Bound<'_, PyAny>,
    max_record_bytes: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyBatchInfo> {
    let max = opt(max_record_bytes, crate::DEFAULT_MAX_RECORD_BYTES, |o| {
        size_arg(o, "max_record_bytes")
    })?;
    let batch = bytes_arg(batch, "batch")?;
    let (info, _) = release(py, batch.len() >= RELEASE_THRESHOLD_BYTES, || {
        core::batch_info(&batch, Some(max))
    })
    .py_err(py)?;
    Ok(PyBatchInfo {
        record_count: info.record_count,
        base_timestamp_ms: info.base_timestamp_ms,
        max_timestamp_ms: info.max_timestamp_ms,
        payload_length: info.payload_length,
        max_record_size: info.max_record_size,
    })
}

/// `(offset, timestamp_ms, key, value, headers)` for one record.
fn record_tuple<'py>(
    py: Python<'py>,
    offset: u64,
    ts: i64,
    r: &RecordView<'_>,
) -> PyResult<Bound<'py, PyTuple>> {
    let key = r.key.map(|k| PyBytes::new(py, k));
    let value = PyBytes::new(py, r.value);
    let headers = if r.header_count == 0 {
        PyTuple::empty(py)
    } else {
        let items = r
            .headers()
            .map(|(n, v)| {
                PyTuple::new(
                    py,
                    [
                        PyString::new(py, n).into_any(),
                        PyBytes::new(py, v).into_any(),
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, items)?
    };
    (offset, ts, key, value, headers).into_pyobject(py)
}

#[pyfunction]
#[pyo3(name = "decode_batch")]
#[pyo3(signature = (batch, base_offset=None))]
fn py_decode_batch<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyAny>,
    base_offset: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let base = opt(base_offset, 0, |o| u63_arg(o, "base_offset"))?;
    let batch = bytes_arg(batch, "batch")?;
    let (info, payload) = core::batch_info(&batch, None).py_err(py)?;
    if base
        .checked_add(u64::from(info.record_count))
        .is_none_or(|e| e > i64::MAX as u64)
    {
        return Err(value_err(py, "base_offset + record_count passes 2**63"));
    }
    let out = PyList::empty(py);
    let mut err = None;
    let _ = crate::codec::batch::walk_payload(
        payload,
        info.record_count,
        info.base_timestamp_ms,
        None,
        |i, ts, r| {
            keep_py_err(
                &mut err,
                record_tuple(py, base + i, ts, r).and_then(|t| out.append(t)),
            )
        },
    );
    err.map_or(Ok(out), Err)
}

#[pyfunction]
#[pyo3(name = "decode_records")]
#[pyo3(signature = (record_set, start_offset=None, max_records=None, *, record_type=None, partition=None))]
fn py_decode_records<'py>(
    py: Python<'py>,
    record_set: &Bound<'py, PyAny>,
    start_offset: Option<&Bound<'py, PyAny>>,
    max_records: Option<&Bound<'py, PyAny>>,
    record_type: Option<&Bound<'py, PyAny>>,
    partition: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let start = opt(start_offset, 0, |o| u63_arg(o, "start_offset"))?;
    let max = opt(max_records, None, |o| size_arg(o, "max_records").map(Some))?;
    let shape = records::Shape::from_args(py, record_type, partition)?;
    let data = bytes_arg(record_set, "record_set")?;
    // One validating walk (GIL released for big inputs) collects borrowed views, so a malformed set
    // raises before any object is built; then the objects are built straight from the views.
    let views = release(py, data.len() >= RELEASE_THRESHOLD_BYTES, || {
        let mut views = Vec::new();
        core::visit_record_set(&data, start, max, |o, ts, r| {
            views.push((o, ts, *r));
            Ok(())
        })
        .map(|_| views)
    })
    .py_err(py)?;
    records::record_list(py, &views, &shape)
}

/// Stash a Python error raised inside a storage visitor and stop the walk.
fn keep_py_err(slot: &mut Option<PyErr>, r: PyResult<()>) -> crate::Result<()> {
    r.map_err(|e| {
        *slot = Some(e);
        crate::Error::invalid("python error while building records")
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_crc32c, m)?)?;
    m.add_function(wrap_pyfunction!(py_compress, m)?)?;
    m.add_function(wrap_pyfunction!(py_decompress, m)?)?;
    m.add_function(wrap_pyfunction!(py_encode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(py_batch_info, m)?)?;
    m.add_function(wrap_pyfunction!(py_decode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(py_decode_records, m)?)?;
    m.add_class::<PyBatchInfo>()?;
    Ok(())
}
