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
pub(crate) fn rank_or_overflow(id: i64) -> PyResult<Rank> {
    u32::try_from(id).map_err(|_| PyOverflowError::new_err("out of range integral type conversion attempted"))
}

/// The value of an exact `int`.
///
/// # Safety
/// `p` points to a live exact `int` and the GIL is held.
#[inline]
unsafe fn exact_int(py: Python<'_>, p: *mut pyo3::ffi::PyObject) -> PyResult<i64> {
    // SAFETY: per the contract; on overflow it returns -1 with an exception set, which is
    // taken and returned. No Python code runs.
    let v = unsafe { pyo3::ffi::PyLong_AsLongLong(p) };
    if v == -1 {
        if let Some(e) = PyErr::take(py) {
            return Err(e);
        }
    }
    Ok(v)
}

/// The value of an id read from Python. An exact `int` (what every caller passes) is read
/// with one C call; anything else (a subclass, an `__index__` object) goes through the
/// general conversion, which may run Python code.
#[inline]
fn int_value(item: &Bound<'_, PyAny>) -> PyResult<i64> {
    let p = item.as_ptr();
    // SAFETY: `item` keeps `p` alive; the GIL is held.
    if unsafe { pyo3::ffi::PyLong_CheckExact(p) } != 0 {
        return unsafe { exact_int(item.py(), p) };
    }
    item.extract::<i64>()
}

/// Reads a sequence of ids (a list or tuple directly, any other iterable item by item) into
/// `out`, each converted by `conv`, without an intermediate `Vec<i64>`. A `str` is refused,
/// as a `Vec` extraction does.
pub(crate) fn read_ids(ids: &Bound<'_, PyAny>, out: &mut Vec<Rank>, conv: impl Fn(i64) -> PyResult<Rank>) -> PyResult<()> {
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
                    Bound::from_borrowed_ptr(list.py(), p).extract::<i64>()?
                }
            };
            let r = conv(v)?;
            tk.prefetch_id(r);
            out.push(r);
        }
    } else if let Ok(tuple) = ids.downcast::<PyTuple>() {
        out.reserve(tuple.len());
        // borrowed items: a tuple cannot change
        for item in tuple.iter_borrowed() {
            let r = conv(int_value(&item)?)?;
            tk.prefetch_id(r);
            out.push(r);
        }
    } else if ids.is_instance_of::<PyString>() {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "Can't extract `str` to a sequence of token ids",
        ));
    } else {
        for item in ids.try_iter()? {
            out.push(conv(int_value(&item?)?)?);
        }
    }
    Ok(())
}
