//! Building the records a read returns, straight through the C API: this is the cost of a read that
//! Python sees, so each record is one presized tuple filled in place (each `*SetItem` steals its
//! reference), taken out of the cyclic collector once filled, in a list that is presized too.
//!
//! Two shapes: the engine's plain 5-tuple `(offset, timestamp_ms, key, value, headers)`, or, when the
//! caller passes `record_type`, an instance of that tuple type with the partition as a sixth item (the
//! client's `Record`), so a consumer gets its final objects in one pass instead of re-wrapping each
//! tuple in Python.
//!
//! Invariant: an instance of `record_type` is only ever built the way `tuple.__new__(record_type, items)`
//! builds it, and only for types that store nothing beside the items (checked in [`Shape::from_args`]).
use std::os::raw::c_void;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple, PyType};

use super::errors::{type_err, value_err};
use super::u63_arg;
use crate::codec::RecordView;

/// How an instance of the caller's record type is allocated.
pub enum Alloc<'py> {
    /// `record_type` is `tuple` itself.
    Tuple,
    /// The type's `tp_alloc`, called as `tuple.__new__` does for a subclass (CPython before 3.14).
    Slot(ffi::allocfunc),
    /// `tuple.__new__(record_type, items)`: CPython 3.14 caches a tuple's hash in the object, and only
    /// `tuple.__new__` knows how to initialise that field, so the type's allocator is not called
    /// directly there.
    TupleNew(Bound<'py, PyAny>),
}

/// The shape of each record a decode returns.
pub enum Shape<'py> {
    /// `(offset, timestamp_ms, key, value, headers)`.
    Plain,
    /// `record_type(offset, timestamp_ms, key, value, headers, partition)`.
    Typed {
        ty: Bound<'py, PyType>,
        partition: Bound<'py, PyAny>,
        alloc: Alloc<'py>,
    },
}

impl<'py> Shape<'py> {
    /// The shape asked for by `decode_records`' keyword arguments. `record_type` must be `tuple` or a
    /// subclass whose instances hold nothing but the items (a named tuple: `__slots__ = ()`), so an
    /// instance is safe to build item by item and to keep out of the cyclic collector.
    pub fn from_args(
        py: Python<'py>,
        record_type: Option<&Bound<'py, PyAny>>,
        partition: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Self> {
        let Some(rt) = record_type.filter(|o| !o.is_none()) else {
            if partition.is_some_and(|p| !p.is_none()) {
                return Err(value_err(py, "partition is given only with record_type"));
            }
            return Ok(Shape::Plain);
        };
        let not_a_tuple_type = || {
            type_err(
                py,
                "record_type must be tuple or a tuple subclass without instance attributes \
                 (a named tuple)",
            )
        };
        let ty = rt.cast::<PyType>().map_err(|_| not_a_tuple_type())?.clone();
        if !ty.is_subclass_of::<PyTuple>()? {
            return Err(not_a_tuple_type());
        }
        let partition = match partition.filter(|p| !p.is_none()) {
            Some(p) => {
                u63_arg(p, "partition")?;
                p.clone()
            }
            None => 0_i32.into_pyobject(py)?.into_any(),
        };
        let tuple = py.get_type::<PyTuple>();
        if ty.is(&tuple) {
            return Ok(Shape::Typed {
                ty,
                partition,
                alloc: Alloc::Tuple,
            });
        }
        let same_layout = ty
            .getattr("__basicsize__")?
            .eq(tuple.getattr("__basicsize__")?)?
            && ty.getattr("__dictoffset__")?.extract::<isize>()? == 0
            && ty.getattr("__weakrefoffset__")?.extract::<isize>()? == 0;
        if !same_layout {
            return Err(not_a_tuple_type());
        }
        let alloc = if py.version_info() >= (3, 14) {
            Alloc::TupleNew(tuple.getattr("__new__")?)
        } else {
            // SAFETY: `ty` is a live type object; every type has a tp_alloc slot (inherited from
            // tuple here), so the pointer is a non-null `allocfunc`.
            let slot: *mut c_void =
                unsafe { ffi::PyType_GetSlot(ty.as_type_ptr(), ffi::Py_tp_alloc) };
            if slot.is_null() {
                return Err(not_a_tuple_type());
            }
            // SAFETY: the Py_tp_alloc slot holds an `allocfunc` (CPython's type slot table).
            Alloc::Slot(unsafe { std::mem::transmute::<*mut c_void, ffi::allocfunc>(slot) })
        };
        Ok(Shape::Typed {
            ty,
            partition,
            alloc,
        })
    }
}

fn owned(py: Python<'_>, ptr: *mut ffi::PyObject) -> PyResult<*mut ffi::PyObject> {
    if ptr.is_null() {
        Err(PyErr::fetch(py))
    } else {
        Ok(ptr)
    }
}

/// Take a finished tuple out of the cyclic garbage collector. Safe because it holds only ints, bytes,
/// str, None and tuples already untracked, and (for a subclass) no attribute storage: it can never be
/// part of a reference cycle. CPython does the same lazily during a collection for exact tuples
/// (`_PyTuple_MaybeUntrack`); doing it now spares every collection that runs while a large read is
/// being built (half the cost of a read, measured).
///
/// SAFETY: `t` must be a live tuple (or tuple subclass instance) whose items obey the rule above.
unsafe fn untrack(t: *mut ffi::PyObject) {
    ffi::PyObject_GC_UnTrack(t.cast());
}

fn bytes(py: Python<'_>, b: &[u8]) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: the pointer and length describe a live slice; CPython copies it.
    owned(py, unsafe {
        ffi::PyBytes_FromStringAndSize(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t)
    })
}

fn headers(py: Python<'_>, r: &RecordView<'_>) -> PyResult<*mut ffi::PyObject> {
    if r.header_count == 0 {
        // SAFETY: PyTuple_New(0) returns the shared empty tuple (a new reference).
        return owned(py, unsafe { ffi::PyTuple_New(0) });
    }
    let items: Vec<_> = r.headers().collect();
    // SAFETY: a fresh tuple of len(items); every slot is set below before it is exposed, and on an
    // error the half-filled tuple is released (tuple dealloc tolerates NULL slots).
    unsafe {
        let t = owned(py, ffi::PyTuple_New(items.len() as ffi::Py_ssize_t))?;
        let guard = Bound::from_owned_ptr(py, t);
        for (i, (name, value)) in items.iter().enumerate() {
            let pair = owned(py, ffi::PyTuple_New(2))?;
            ffi::PyTuple_SetItem(t, i as ffi::Py_ssize_t, pair);
            let n = owned(
                py,
                ffi::PyUnicode_FromStringAndSize(
                    name.as_ptr().cast(),
                    name.len() as ffi::Py_ssize_t,
                ),
            )?;
            ffi::PyTuple_SetItem(pair, 0, n);
            ffi::PyTuple_SetItem(pair, 1, bytes(py, value)?);
            untrack(pair);
        }
        untrack(t);
        Ok(guard.into_ptr())
    }
}

/// A fresh tuple of `n` empty slots for one record, of the shape's type where it can be allocated
/// directly (a new reference).
fn alloc_record(py: Python<'_>, shape: &Shape<'_>, n: isize) -> PyResult<*mut ffi::PyObject> {
    match shape {
        Shape::Typed {
            ty,
            alloc: Alloc::Slot(alloc),
            ..
        } => {
            // SAFETY: the type's own allocator, as `tuple.__new__` calls it for a subclass: a zeroed
            // instance with `n` NULL items, its size set, a new reference (NULL and an exception set on
            // failure).
            owned(py, unsafe { alloc(ty.as_type_ptr(), n) })
        }
        // SAFETY: a fresh exact tuple with NULL items.
        _ => owned(py, unsafe { ffi::PyTuple_New(n) }),
    }
}

fn record(
    py: Python<'_>,
    shape: &Shape<'_>,
    offset: u64,
    ts: i64,
    r: &RecordView<'_>,
) -> PyResult<*mut ffi::PyObject> {
    let n = if matches!(shape, Shape::Plain) { 5 } else { 6 };
    // SAFETY: a fresh tuple of `n` items owned by `guard` until returned; each SetItem steals, and
    // every slot is set before the tuple is exposed (on an error dealloc tolerates NULL slots).
    unsafe {
        let t = alloc_record(py, shape, n)?;
        let guard = Bound::from_owned_ptr(py, t);
        ffi::PyTuple_SetItem(t, 0, owned(py, ffi::PyLong_FromUnsignedLongLong(offset))?);
        ffi::PyTuple_SetItem(t, 1, owned(py, ffi::PyLong_FromLongLong(ts))?);
        let key = match r.key {
            Some(k) => bytes(py, k)?,
            None => {
                let none = ffi::Py_None();
                ffi::Py_IncRef(none);
                none
            }
        };
        ffi::PyTuple_SetItem(t, 2, key);
        ffi::PyTuple_SetItem(t, 3, bytes(py, r.value)?);
        ffi::PyTuple_SetItem(t, 4, headers(py, r)?);
        if let Shape::Typed {
            ty,
            partition,
            alloc,
        } = shape
        {
            ffi::PyTuple_SetItem(t, 5, partition.clone().into_ptr());
            if let Alloc::TupleNew(tuple_new) = alloc {
                let made = tuple_new.call1((ty, guard))?;
                untrack(made.as_ptr());
                return Ok(made.into_ptr());
            }
        }
        untrack(t);
        Ok(guard.into_ptr())
    }
}

/// The list of records for `views`, each in `shape`.
pub fn record_list<'py>(
    py: Python<'py>,
    views: &[(u64, i64, RecordView<'_>)],
    shape: &Shape<'py>,
) -> PyResult<Bound<'py, PyList>> {
    // SAFETY: a fresh list of len(views) whose slots are all set before it is returned; on an error
    // it is released with NULL slots left, which list dealloc tolerates.
    //
    // The list stays out of the collector while it is filled: every allocation of a record counts
    // towards a young-generation collection, and each such collection would walk the whole growing
    // list (quadratic in the number of records). It is tracked again before Python can see it, so a
    // cycle the caller later builds through it is still found.
    unsafe {
        let list = owned(py, ffi::PyList_New(views.len() as ffi::Py_ssize_t))?;
        let bound = Bound::from_owned_ptr(py, list);
        ffi::PyObject_GC_UnTrack(list.cast());
        let filled = views
            .iter()
            .enumerate()
            .try_for_each(|(i, (offset, ts, r))| {
                ffi::PyList_SetItem(
                    list,
                    i as ffi::Py_ssize_t,
                    record(py, shape, *offset, *ts, r)?,
                );
                Ok::<(), PyErr>(())
            });
        ffi::PyObject_GC_Track(list.cast());
        filled?;
        Ok(bound.cast_into_unchecked())
    }
}
