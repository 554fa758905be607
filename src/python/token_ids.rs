//! Reading token ids from Python (the input of `decode*` and of the parser): a list is read
//! item by item with one C call per exact `int`, a tuple likewise, any other iterable
//! through the general conversion. The only `unsafe` of the binding, each block with its
//! safety argument.

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::tokenizer::{tokenizer, Rank};

/// An id from Python as the reference reads it: OverflowError outside 0..2^32.
#[inline]
fn rank_or_overflow(id: i64) -> PyResult<Rank> {
    u32::try_from(id).map_err(|_| PyOverflowError::new_err("out of range integral type conversion attempted"))
}

/// An id as read from Python.
pub(crate) enum Id<'py> {
    /// Its value (any id that fits in an `i64`).
    Int(i64),
    /// An int that does not fit in an `i64`: the conversion's `OverflowError` and the object.
    Big(PyErr, Bound<'py, PyAny>),
}

/// The reference's reading of an id (decode, the strict and non-strict parsers):
/// `OverflowError` outside 0..2^32.
#[inline]
pub(super) fn strict_rank(_position: usize, id: Id<'_>) -> PyResult<Rank> {
    match id {
        Id::Int(v) => rank_or_overflow(v),
        Id::Big(e, _) => Err(e),
    }
}

/// The value of an exact `int`, or `Id::Big` when it does not fit in an `i64`.
///
/// # Safety
/// `p` points to a live exact `int` and the GIL is held.
#[inline]
unsafe fn exact_int<'py>(py: Python<'py>, p: *mut pyo3::ffi::PyObject) -> PyResult<Id<'py>> {
    // SAFETY: per the contract; on overflow it returns -1 with an exception set, which is
    // taken. No Python code runs. The object is owned (`from_borrowed_ptr` increfs it) only
    // on that rare path.
    let v = unsafe { pyo3::ffi::PyLong_AsLongLong(p) };
    if v == -1 {
        if let Some(e) = PyErr::take(py) {
            if e.is_instance_of::<PyOverflowError>(py) {
                return Ok(Id::Big(e, unsafe { Bound::from_borrowed_ptr(py, p) }));
            }
            return Err(e);
        }
    }
    Ok(Id::Int(v))
}

/// An id read from any object: an exact `int` with one C call; anything else (a subclass,
/// an `__index__` object) through the general conversion, which may run Python code.
#[inline]
pub(crate) fn int_value<'py>(item: &Bound<'py, PyAny>) -> PyResult<Id<'py>> {
    let p = item.as_ptr();
    // SAFETY: `item` keeps `p` alive; the GIL is held.
    if unsafe { pyo3::ffi::PyLong_CheckExact(p) } != 0 {
        return unsafe { exact_int(item.py(), p) };
    }
    match item.extract::<i64>() {
        Ok(v) => Ok(Id::Int(v)),
        Err(e) if e.is_instance_of::<PyOverflowError>(item.py()) => Ok(Id::Big(e, item.clone())),
        Err(e) => Err(e),
    }
}

/// Reads a sequence of ids (a list or tuple directly, any other iterable item by item) into
/// `out`, each converted by `conv` (given its position), without an intermediate
/// `Vec<i64>`. A `str` is refused, as a `Vec` extraction does.
pub(crate) fn read_ids<'py>(
    ids: &Bound<'py, PyAny>,
    out: &mut Vec<Rank>,
    mut conv: impl FnMut(usize, Id<'py>) -> PyResult<Rank>,
) -> PyResult<()> {
    out.clear();
    // each id's token bytes start loading while the next ids are read
    let tk = tokenizer();
    if let Ok(list) = ids.downcast::<PyList>() {
        let n = list.len();
        out.reserve(n);
        for i in 0..n {
            // SAFETY: `list` is a live list and the GIL is held. `PyList_GetItem` checks the
            // index (NULL and IndexError if the list shrank, which only Python code run by a
            // non-int item's conversion can do) and returns a borrowed reference. An exact
            // int is read at once (no Python code runs, so the list still holds it); any
            // other item is owned first (`from_borrowed_ptr` increfs it), so it stays alive
            // whatever its conversion does to the list.
            let v = unsafe {
                let p = pyo3::ffi::PyList_GetItem(list.as_ptr(), i as pyo3::ffi::Py_ssize_t);
                if p.is_null() {
                    return Err(PyErr::fetch(list.py()));
                }
                if pyo3::ffi::PyLong_CheckExact(p) != 0 {
                    exact_int(list.py(), p)?
                } else {
                    int_value(&Bound::from_borrowed_ptr(list.py(), p))?
                }
            };
            let r = conv(i, v)?;
            tk.prefetch_id(r);
            out.push(r);
        }
    } else if let Ok(tuple) = ids.downcast::<PyTuple>() {
        out.reserve(tuple.len());
        // borrowed items: a tuple cannot change
        for (i, item) in tuple.iter_borrowed().enumerate() {
            let r = conv(i, int_value(&item)?)?;
            tk.prefetch_id(r);
            out.push(r);
        }
    } else if ids.is_instance_of::<PyString>() {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "Can't extract `str` to a sequence of token ids",
        ));
    } else {
        for (i, item) in ids.try_iter()?.enumerate() {
            out.push(conv(i, int_value(&item?)?)?);
        }
    }
    Ok(())
}
