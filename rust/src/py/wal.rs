//! Bindings for the WAL: `Wal`, `WalFrame`, `WalRecovery`, `WalStats`. Appends, syncs, recovery and
//! truncation run with the GIL released, so concurrent appenders share one fdatasync.
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::errors::{type_err, value_err, IntoPyResult};
use super::{
    bytes_arg, opt, ranged_arg, release, size_arg, str_arg, type_name, u63_arg,
    RELEASE_THRESHOLD_BYTES,
};
use crate::codec::batch::{write_batch_header, BATCH_HEADER_LEN};
use crate::wal::{self, Producer, RecoveredFrame, Recovery, SyncPolicy, Wal, WalOptions};

/// One recovered frame.
#[pyclass(frozen, name = "WalFrame", module = "streamhouse._core")]
pub struct PyWalFrame {
    frame: RecoveredFrame,
}

#[pymethods]
impl PyWalFrame {
    #[getter]
    fn base_offset(&self) -> u64 {
        self.frame.base_offset
    }
    #[getter]
    fn end_offset(&self) -> u64 {
        self.frame.end_offset()
    }
    #[getter]
    fn epoch(&self) -> u64 {
        self.frame.epoch
    }
    #[getter]
    fn record_count(&self) -> u32 {
        self.frame.record_count
    }
    #[getter]
    fn base_timestamp_ms(&self) -> i64 {
        self.frame.base_timestamp_ms
    }
    /// 0 when the batch has no producer (always in a version-1 file).
    #[getter]
    fn producer_id(&self) -> u64 {
        self.frame.producer.id
    }
    #[getter]
    fn producer_epoch(&self) -> u32 {
        self.frame.producer.epoch
    }
    #[getter]
    fn base_sequence(&self) -> u32 {
        self.frame.producer.base_sequence
    }
    #[getter]
    fn batch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let f = &self.frame;
        PyBytes::new_with(py, BATCH_HEADER_LEN + f.payload.len(), |buf| {
            let mut head = Vec::with_capacity(BATCH_HEADER_LEN);
            write_batch_header(
                &mut head,
                f.record_count,
                f.base_timestamp_ms,
                f.payload.len() as u32,
            );
            let (h, p) = buf.split_at_mut(BATCH_HEADER_LEN);
            h.copy_from_slice(&head);
            p.copy_from_slice(&f.payload);
            Ok(())
        })
    }
    fn __repr__(&self) -> String {
        let f = &self.frame;
        let producer = if f.producer.is_none() {
            String::new()
        } else {
            format!(
                ", producer_id={}, producer_epoch={}, base_sequence={}",
                f.producer.id, f.producer.epoch, f.producer.base_sequence
            )
        };
        format!(
            "WalFrame(base_offset={}, record_count={}, epoch={}{producer})",
            f.base_offset, f.record_count, f.epoch
        )
    }
}

/// What recovery found.
#[pyclass(frozen, name = "WalRecovery", module = "streamhouse._core")]
pub struct PyWalRecovery {
    frames: Vec<Py<PyWalFrame>>,
    #[pyo3(get)]
    next_offset: u64,
    #[pyo3(get)]
    files: u64,
    #[pyo3(get)]
    torn_tail_bytes: u64,
    #[pyo3(get)]
    torn_tail_offsets: Option<(u64, u64)>,
}

#[pymethods]
impl PyWalRecovery {
    #[getter]
    fn frames<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.frames.iter().map(|f| f.clone_ref(py)))
    }
    fn __repr__(&self) -> String {
        let offsets = match self.torn_tail_offsets {
            Some((base, end)) => format!("({base}, {end})"),
            None => "None".to_string(),
        };
        format!(
            "WalRecovery(frames={}, next_offset={}, files={}, torn_tail_bytes={}, torn_tail_offsets={offsets})",
            self.frames.len(),
            self.next_offset,
            self.files,
            self.torn_tail_bytes
        )
    }
}

fn recovery_to_py(py: Python<'_>, rec: Recovery) -> PyResult<PyWalRecovery> {
    let frames = rec
        .frames
        .into_iter()
        .map(|frame| Py::new(py, PyWalFrame { frame }))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(PyWalRecovery {
        frames,
        next_offset: rec.next_offset,
        files: rec.files,
        torn_tail_bytes: rec.torn_tail_bytes,
        torn_tail_offsets: rec.torn_tail_offsets,
    })
}

/// A WAL stats snapshot.
#[pyclass(frozen, name = "WalStats", module = "streamhouse._core")]
pub struct PyWalStats {
    #[pyo3(get)]
    bytes_on_disk: u64,
    #[pyo3(get)]
    files: u64,
    #[pyo3(get)]
    frames: u64,
    #[pyo3(get)]
    first_offset: u64,
    #[pyo3(get)]
    next_offset: u64,
    #[pyo3(get)]
    synced_offset: u64,
}

#[pymethods]
impl PyWalStats {
    fn __repr__(&self) -> String {
        format!(
            "WalStats(bytes_on_disk={}, files={}, frames={}, first_offset={}, next_offset={}, synced_offset={})",
            self.bytes_on_disk, self.files, self.frames, self.first_offset, self.next_offset, self.synced_offset
        )
    }
}

/// `producer`: `None`, or a tuple `(producer_id, producer_epoch, base_sequence)` with the id in
/// `[1, 2^63 - 1]` and the other two in `[0, 2^32 - 1]`.
fn producer_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Producer>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let py = obj.py();
    let t = obj.cast::<PyTuple>().map_err(|_| {
        type_err(
            py,
            format!(
                "producer must be None or a tuple (producer_id, producer_epoch, base_sequence), not {}",
                type_name(obj)
            ),
        )
    })?;
    if t.len() != 3 {
        return Err(value_err(
            py,
            format!(
                "producer must be a tuple of 3 ints (producer_id, producer_epoch, base_sequence), not of {}",
                t.len()
            ),
        ));
    }
    let u32_max = u64::from(u32::MAX);
    let id = ranged_arg(&t.get_item(0)?, "producer_id", 1, Producer::MAX_ID)?;
    let epoch = ranged_arg(&t.get_item(1)?, "producer_epoch", 0, u32_max)?;
    let sequence = ranged_arg(&t.get_item(2)?, "base_sequence", 0, u32_max)?;
    let narrow = |v: u64| u32::try_from(v).map_err(|_| value_err(py, "out of range"));
    Producer::new(id, narrow(epoch)?, narrow(sequence)?)
        .map(Some)
        .py_err(py)
}

fn dir_arg(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(str_arg(s.as_any(), "directory")?.into_owned());
    }
    // os.PathLike: accept pathlib paths too.
    match obj.call_method0("__fspath__") {
        Ok(p) => Ok(str_arg(&p, "directory")?.into_owned()),
        Err(_) => Err(type_err(obj.py(), "directory must be str or os.PathLike")),
    }
}

/// An open WAL.
#[pyclass(frozen, name = "Wal", module = "streamhouse._core")]
pub struct PyWal {
    inner: Arc<Wal>,
    directory: String,
}

#[pymethods]
impl PyWal {
    #[staticmethod]
    #[pyo3(signature = (directory, *, epoch, committed_next_offset=None, max_file_bytes=None, sync_policy=None,
                        sync_interval_ms=None, max_record_bytes=None))]
    #[allow(clippy::too_many_arguments)]
    fn open(
        py: Python<'_>,
        directory: &Bound<'_, PyAny>,
        epoch: &Bound<'_, PyAny>,
        committed_next_offset: Option<&Bound<'_, PyAny>>,
        max_file_bytes: Option<&Bound<'_, PyAny>>,
        sync_policy: Option<&Bound<'_, PyAny>>,
        sync_interval_ms: Option<&Bound<'_, PyAny>>,
        max_record_bytes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(PyWal, PyWalRecovery)> {
        let dir = dir_arg(directory)?;
        let opts = WalOptions {
            epoch: u63_arg(epoch, "epoch")?,
            committed_next_offset: opt(committed_next_offset, 0, |o| {
                u63_arg(o, "committed_next_offset")
            })?,
            max_file_bytes: opt(max_file_bytes, crate::DEFAULT_WAL_MAX_FILE_BYTES, |o| {
                u63_arg(o, "max_file_bytes")
            })?,
            sync_policy: opt(sync_policy, SyncPolicy::Batch, |o| {
                SyncPolicy::from_name(&str_arg(o, "sync_policy")?).py_err(py)
            })?,
            sync_interval_ms: opt(sync_interval_ms, 50, |o| u63_arg(o, "sync_interval_ms"))?,
            max_record_bytes: opt(max_record_bytes, crate::DEFAULT_MAX_RECORD_BYTES, |o| {
                size_arg(o, "max_record_bytes")
            })?,
        };
        let (wal, rec) = release(py, true, || Wal::open(&dir, opts)).py_err(py)?;
        Ok((
            PyWal {
                inner: Arc::new(wal),
                directory: dir,
            },
            recovery_to_py(py, rec)?,
        ))
    }

    #[staticmethod]
    #[pyo3(signature = (directory, *, committed_next_offset=None))]
    fn inspect(
        py: Python<'_>,
        directory: &Bound<'_, PyAny>,
        committed_next_offset: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyWalRecovery> {
        let dir = dir_arg(directory)?;
        let committed = opt(committed_next_offset, 0, |o| {
            u63_arg(o, "committed_next_offset")
        })?;
        let rec = release(py, true, || {
            wal::inspect(std::path::Path::new(&dir), committed)
        })
        .py_err(py)?;
        recovery_to_py(py, rec)
    }

    #[pyo3(signature = (batch, producer=None))]
    fn append(
        &self,
        py: Python<'_>,
        batch: &Bound<'_, PyAny>,
        producer: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let producer = producer_arg(producer)?;
        let batch = bytes_arg(batch, "batch")?;
        let wal = &self.inner;
        // A small append that cannot fsync (policy `never`: the agent's default, it syncs separately)
        // is one write to the page cache: done with the GIL held, because giving it up and taking it
        // back costs more, and on a busy event loop the taking back waits for other threads.
        let heavy = batch.len() >= RELEASE_THRESHOLD_BYTES
            || wal.options().sync_policy != SyncPolicy::Never;
        release(py, heavy, || wal.append_with_producer(&batch, producer)).py_err(py)
    }

    /// `append`, only if it needs no new WAL file and no fsync (else None, nothing written): see
    /// `Wal::try_append`. Never gives the GIL up for a small batch, whatever the sync policy: it cannot
    /// block on the disk.
    #[pyo3(signature = (batch, producer=None))]
    fn try_append(
        &self,
        py: Python<'_>,
        batch: &Bound<'_, PyAny>,
        producer: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<u64>> {
        let producer = producer_arg(producer)?;
        let batch = bytes_arg(batch, "batch")?;
        let wal = &self.inner;
        let heavy = batch.len() >= RELEASE_THRESHOLD_BYTES;
        release(py, heavy, || wal.try_append(&batch, producer)).py_err(py)
    }

    /// Create the file appends go to if there is none (an fsync and a directory fsync, GIL released):
    /// see `Wal::prepare`.
    fn prepare(&self, py: Python<'_>) -> PyResult<bool> {
        let wal = &self.inner;
        release(py, true, || wal.prepare()).py_err(py)
    }

    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let wal = &self.inner;
        release(py, true, || wal.sync()).py_err(py)
    }

    fn truncate(&self, py: Python<'_>, committed_next_offset: &Bound<'_, PyAny>) -> PyResult<u64> {
        let committed = u63_arg(committed_next_offset, "committed_next_offset")?;
        let wal = &self.inner;
        release(py, true, || wal.truncate(committed)).py_err(py)
    }

    fn set_epoch(&self, py: Python<'_>, epoch: &Bound<'_, PyAny>) -> PyResult<()> {
        let epoch = u63_arg(epoch, "epoch")?;
        let wal = &self.inner;
        release(py, true, || wal.set_epoch(epoch)).py_err(py)
    }

    fn stats(&self, py: Python<'_>) -> PyResult<PyWalStats> {
        let wal = &self.inner;
        // Reading the counters takes microseconds: done with the GIL held unless a lock is busy (an
        // append or truncation in progress), because a worker thread that gives the GIL up has to
        // wait for the event loop to get it back, and the flush reads the stats of every partition.
        let s = match wal.try_stats() {
            Some(s) => s,
            None => release(py, true, || wal.stats()),
        }
        .py_err(py)?;
        Ok(PyWalStats {
            bytes_on_disk: s.bytes_on_disk,
            files: s.files,
            frames: s.frames,
            first_offset: s.first_offset,
            next_offset: s.next_offset,
            synced_offset: s.synced_offset,
        })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let wal = &self.inner;
        release(py, true, || wal.close()).py_err(py)
    }

    #[getter]
    fn next_offset(&self, py: Python<'_>) -> u64 {
        let wal = &self.inner;
        release(py, true, || wal.next_offset())
    }
    #[getter]
    fn epoch(&self, py: Python<'_>) -> u64 {
        let wal = &self.inner;
        release(py, true, || wal.epoch())
    }
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        let wal = &self.inner;
        release(py, true, || wal.closed())
    }
    #[getter]
    fn directory(&self) -> &str {
        &self.directory
    }
    fn __repr__(&self) -> String {
        format!("Wal(directory={:?})", self.directory)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyWal>()?;
    m.add_class::<PyWalFrame>()?;
    m.add_class::<PyWalRecovery>()?;
    m.add_class::<PyWalStats>()?;
    Ok(())
}
