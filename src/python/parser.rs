//! Python binding of the streaming parser: `NativeParser`, the event classes and
//! `parse_completion`. Events are small native classes built directly (no JSON, no Python
//! code per event); messages cross as plain tuples (see `message_to_tuple`).


use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use super::{message_to_tuple, run_guarded as run, HarmonyError, PyLimits};
use crate::chat::Role;
use crate::limits::Limits;
use crate::parser::{self, Event, Mode, RepairKind, StreamParser};
use crate::tokenizer::{tokenizer, Rank};

/// Above this many ids a `feed` releases the GIL while parsing.
const RELEASE_GIL_ABOVE: usize = 512;

fn py_repr(py: Python<'_>, s: &str) -> String {
    PyString::new(py, s)
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| format!("{s:?}"))
}

fn py_opt_repr(py: Python<'_>, s: &Option<String>) -> String {
    s.as_deref().map_or_else(|| "None".to_string(), |s| py_repr(py, s))
}

macro_rules! event_class {
    ($rust:ident, $name:literal, $tag:literal, { $($field:ident : $ty:ty),* }, |$slf:ident, $py:ident| $repr:expr) => {
        #[doc = concat!("Parser event `", $name, "` (see the `llama_harmony` parser documentation).")]
        #[pyclass(name = $name, module = "llama_harmony._core", frozen, get_all, eq)]
        #[derive(Clone, PartialEq)]
        pub struct $rust {
            $(pub $field: $ty),*
        }

        #[pymethods]
        impl $rust {
            #[new]
            fn new($($field: $ty),*) -> Self {
                $rust { $($field),* }
            }
            /// The event type tag.
            #[classattr]
            fn r#type() -> &'static str {
                $tag
            }
            #[classattr]
            fn __match_args__(py: Python<'_>) -> PyResult<Py<PyTuple>> {
                Ok(PyTuple::new(py, [$(stringify!($field)),*])?.unbind())
            }
            fn __repr__(&self, py: Python<'_>) -> String {
                let $slf = self;
                let $py = py;
                $repr
            }
        }
    };
}

event_class!(MessageStart, "MessageStart", "message_start", {
    index: usize, role: String, name: Option<String>, channel: Option<String>,
    recipient: Option<String>, content_type: Option<String>, raw_header: String
}, |s, py| format!(
    "MessageStart(index={}, role={}, name={}, channel={}, recipient={}, content_type={}, raw_header={})",
    s.index, py_repr(py, &s.role), py_opt_repr(py, &s.name), py_opt_repr(py, &s.channel),
    py_opt_repr(py, &s.recipient), py_opt_repr(py, &s.content_type), py_repr(py, &s.raw_header)));
event_class!(ContentDelta, "ContentDelta", "content_delta", { index: usize, text: String },
    |s, py| format!("ContentDelta(index={}, text={})", s.index, py_repr(py, &s.text)));
event_class!(MessageDone, "MessageDone", "message_done", { index: usize, stop_token: Option<u32> },
    |s, _py| format!("MessageDone(index={}, stop_token={})", s.index, s.stop_token.map_or("None".into(), |t| t.to_string())));
event_class!(ToolCallStart, "ToolCallStart", "tool_call_start", { index: usize, call_index: usize, name: String, recipient: String },
    |s, py| format!("ToolCallStart(index={}, call_index={}, name={}, recipient={})", s.index, s.call_index, py_repr(py, &s.name), py_repr(py, &s.recipient)));
event_class!(ToolCallDelta, "ToolCallDelta", "tool_call_delta", { index: usize, call_index: usize, arguments: String },
    |s, py| format!("ToolCallDelta(index={}, call_index={}, arguments={})", s.index, s.call_index, py_repr(py, &s.arguments)));
event_class!(ToolCallDone, "ToolCallDone", "tool_call_done", { index: usize, call_index: usize },
    |s, _py| format!("ToolCallDone(index={}, call_index={})", s.index, s.call_index));
event_class!(Repair, "Repair", "repair", { index: Option<usize>, kind: String, detail: String },
    |s, py| format!("Repair(index={}, kind={}, detail={})", s.index.map_or("None".into(), |i| i.to_string()), py_repr(py, &s.kind), py_repr(py, &s.detail)));
event_class!(Done, "Done", "done", { reason: String },
    |s, py| format!("Done(reason={})", py_repr(py, &s.reason)));
event_class!(Incomplete, "Incomplete", "incomplete", { reason: String },
    |s, py| format!("Incomplete(reason={})", py_repr(py, &s.reason)));

fn event_to_py(py: Python<'_>, e: Event) -> PyResult<PyObject> {
    Ok(match e {
        Event::MessageStart {
            index,
            role,
            name,
            channel,
            recipient,
            content_type,
            raw_header,
        } => Py::new(
            py,
            MessageStart {
                index,
                role: role.as_str().to_string(),
                name,
                channel,
                recipient,
                content_type,
                raw_header,
            },
        )?
        .into_any(),
        Event::ContentDelta { index, text } => Py::new(py, ContentDelta { index, text })?.into_any(),
        Event::MessageDone { index, stop_token } => Py::new(py, MessageDone { index, stop_token })?.into_any(),
        Event::ToolCallStart {
            index,
            call_index,
            name,
            recipient,
        } => Py::new(
            py,
            ToolCallStart {
                index,
                call_index,
                name,
                recipient,
            },
        )?
        .into_any(),
        Event::ToolCallDelta {
            index,
            call_index,
            arguments,
        } => Py::new(
            py,
            ToolCallDelta {
                index,
                call_index,
                arguments,
            },
        )?
        .into_any(),
        Event::ToolCallDone { index, call_index } => Py::new(py, ToolCallDone { index, call_index })?.into_any(),
        Event::Repair { index, kind, detail } => Py::new(
            py,
            Repair {
                index,
                kind: kind.as_str().to_string(),
                detail,
            },
        )?
        .into_any(),
        Event::Done { reason } => Py::new(
            py,
            Done {
                reason: reason.as_str().to_string(),
            },
        )?
        .into_any(),
        Event::Incomplete { reason } => Py::new(
            py,
            Incomplete {
                reason: reason.as_str().to_string(),
            },
        )?
        .into_any(),
    })
}

/// Converts a batch of events (draining `events`, whose capacity is kept for the next batch).
/// The core already merged the adjacent text deltas of one message (or tool call) within the
/// batch: a `feed()` of many tokens costs one Python object per message part, not one per
/// token. Concatenating the deltas gives the same text whatever the batching.
fn events_to_py<'py>(py: Python<'py>, events: &mut Vec<Event>) -> PyResult<Bound<'py, PyList>> {
    if events.len() == 1 {
        // the common case (one text delta): no intermediate vector
        let e = events.pop().expect("one event");
        return PyList::new(py, [event_to_py(py, e)?]);
    }
    let items = events
        .drain(..)
        .map(|e| event_to_py(py, e))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

fn parse_mode(mode: &str) -> PyResult<Mode> {
    Mode::parse(mode).ok_or_else(|| {
        HarmonyError::new_err(format!(
            "unknown parser mode {mode:?} (strict, non_strict, lenient, raw)"
        ))
    })
}

fn parse_role(role: Option<&str>) -> PyResult<Option<Role>> {
    role.map(|r| Role::parse(r).ok_or_else(|| HarmonyError::new_err(format!("Unknown role: {r}"))))
        .transpose()
}

/// An id from Python as the reference reads it: OverflowError outside 0..2^32.
#[inline]
fn rank_or_overflow(id: i64) -> PyResult<Rank> {
    u32::try_from(id).map_err(|_| PyOverflowError::new_err("out of range integral type conversion attempted"))
}

/// An id as read from Python.
pub(super) enum Id<'py> {
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

/// The decimal text of an int that does not fit in an `i64` (or its size when Python refuses
/// to print it: more than `sys.get_int_max_str_digits()` digits).
fn big_int_text(obj: &Bound<'_, PyAny>) -> String {
    let text = obj.call_method0("__index__").and_then(|i| i.str().map(|s| s.to_string()));
    text.unwrap_or_else(|_| {
        let bits = obj
            .call_method0("__index__")
            .and_then(|i| i.call_method0("bit_length"))
            .and_then(|b| b.extract::<u64>());
        match bits {
            Ok(n) => format!("an integer of {n} bits"),
            Err(_) => "an integer too large to print".to_string(),
        }
    })
}

/// How the lenient and raw parsers read ids: an id outside 0..2^32 (of any size) becomes
/// the unknown id `u32::MAX` (U+FFFD, parsing goes on); its position and decimal text are
/// added to `outside`, so the `invalid_token` repair can name the real id.
fn lenient_rank(outside: &mut Vec<(usize, String)>) -> impl FnMut(usize, Id<'_>) -> PyResult<Rank> + '_ {
    move |position, id| {
        let text = match id {
            Id::Int(v) => match u32::try_from(v) {
                Ok(r) => return Ok(r),
                Err(_) => v.to_string(),
            },
            Id::Big(_, obj) => big_int_text(&obj),
        };
        outside.push((position, text));
        Ok(u32::MAX)
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
fn int_value<'py>(item: &Bound<'py, PyAny>) -> PyResult<Id<'py>> {
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

/// Reads the ids of a parser's input (see [`read_ids`]): in the lenient and raw modes the
/// positions and texts of the ids outside 0..2^32 go to `outside`.
fn extract_ids(ids: &Bound<'_, PyAny>, mode: Mode, out: &mut Vec<Rank>, outside: &mut Vec<(usize, String)>) -> PyResult<()> {
    outside.clear();
    match mode {
        Mode::Lenient | Mode::Raw => read_ids(ids, out, lenient_rank(outside)),
        Mode::Strict | Mode::NonStrict => read_ids(ids, out, strict_rank),
    }
}

/// Reads a sequence of ids (a list or tuple directly, any other iterable item by item) into
/// `out`, each converted by `conv` (given its position), without an intermediate
/// `Vec<i64>`. A `str` is refused, as a `Vec` extraction does.
pub(super) fn read_ids<'py>(
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

/// Feeds `ranks` whose ids at the `outside` positions were outside 0..2^32 (read as the
/// unknown id `u32::MAX`; lenient and raw modes, which never fail): each of those is fed on
/// its own, and the `invalid_token` repair it causes names the id that was given.
fn feed_naming_outside(
    py: Python<'_>,
    inner: &mut StreamParser,
    ranks: &[Rank],
    outside: &[(usize, String)],
    events: &mut Vec<Event>,
) -> PyResult<()> {
    let mut start = 0;
    for (pos, text) in outside {
        let pos = *pos;
        run(py, false, || inner.feed_into(&ranks[start..pos], events))?;
        let first = events.len();
        run(py, false, || inner.feed_into(&ranks[pos..pos + 1], events))?;
        for e in &mut events[first..] {
            if let Event::Repair { kind: RepairKind::InvalidToken, detail, .. } = e {
                detail.clone_from(text);
            }
        }
        start = pos + 1;
    }
    run(py, ranks.len() - start > RELEASE_GIL_ABOVE, || inner.feed_into(&ranks[start..], events))
}

/// The native streaming parser. `llama_harmony.StreamableParser` subclasses it, so the
/// per-token calls (`process`, `last_content_delta`, `current_content`, ...) and `feed` reach
/// Rust without a Python frame in between.
#[pyclass(name = "NativeParser", module = "llama_harmony._core", subclass)]
#[derive(Clone)]
pub struct NativeParser {
    inner: StreamParser,
    /// Reused between `feed` calls (ids read from Python, events of the batch).
    ids: Vec<Rank>,
    events: Vec<Event>,
    /// Positions and texts of the batch's ids outside 0..2^32 (lenient and raw modes).
    outside: Vec<(usize, String)>,
}

#[pymethods]
impl NativeParser {
    /// `role`: the role whose header is open (`None`: expect `<|start|>`); `mode`: `strict`,
    /// `non_strict`, `lenient` or `raw`; `token_history`: recent ids kept for `tokens`.
    #[new]
    #[pyo3(signature = (role=None, mode="strict", limits=None, token_history=None))]
    fn new(
        role: Option<&str>,
        mode: &str,
        limits: Option<PyRef<'_, PyLimits>>,
        token_history: Option<usize>,
    ) -> PyResult<Self> {
        let limits = limits.map(|l| l.inner).unwrap_or_default();
        let mut inner = StreamParser::new(parse_role(role)?, parse_mode(mode)?, limits);
        if let Some(n) = token_history {
            inner.set_token_history(n);
        }
        Ok(NativeParser {
            inner,
            ids: Vec::new(),
            events: Vec::new(),
            outside: Vec::new(),
        })
    }

    /// Feeds one id (the reference's `process`); returns the parser.
    /// In the lenient and raw modes an id outside 0..2^32 (of any size) is an unknown id.
    fn process<'a>(mut slf: PyRefMut<'a, Self>, token: &Bound<'_, PyAny>) -> PyResult<PyRefMut<'a, Self>> {
        let py = slf.py();
        let id = int_value(token)?;
        let t = match slf.inner.mode() {
            Mode::Lenient | Mode::Raw => match id {
                Id::Int(v) => u32::try_from(v).unwrap_or(u32::MAX),
                Id::Big(..) => u32::MAX,
            },
            Mode::Strict | Mode::NonStrict => strict_rank(0, id)?,
        };
        let p = &mut slf.inner;
        run(py, false, || p.process(t))?;
        Ok(slf)
    }

    /// Signals the end of the stream (closes an open message); returns the parser.
    fn process_eos(mut slf: PyRefMut<'_, Self>) -> PyResult<PyRefMut<'_, Self>> {
        let py = slf.py();
        let p = &mut slf.inner;
        run(py, false, || p.process_eos())?;
        Ok(slf)
    }

    /// Feeds ids and returns their events. A strict-mode error is raised after the ids before
    /// it were processed (their events are lost; use `process` for exact error positions).
    /// `ids`: a list (fastest), a tuple or any iterable of ints.
    fn feed<'py>(&mut self, py: Python<'py>, ids: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let NativeParser { inner, ids: ranks, events, outside } = self;
        extract_ids(ids, inner.mode(), ranks, outside)?;
        events.clear();
        let r = if outside.is_empty() {
            run(py, ranks.len() > RELEASE_GIL_ABOVE, || inner.feed_into(ranks, events))
        } else {
            feed_naming_outside(py, inner, ranks, outside, events)
        };
        if let Err(e) = r {
            events.clear();
            return Err(e);
        }
        // a long batch's buffers are not kept
        if ranks.capacity() > 1 << 16 {
            *ranks = Vec::new();
        }
        let list = events_to_py(py, events);
        if events.capacity() > 1 << 10 {
            *events = Vec::new();
        }
        list
    }

    /// End of stream: closes the open message and ends with `Done` or `Incomplete`.
    /// `length=True`: the caller cut generation (max tokens).
    #[pyo3(signature = (length=false))]
    fn finish<'py>(&mut self, py: Python<'py>, length: bool) -> PyResult<Bound<'py, PyList>> {
        let p = &mut self.inner;
        let mut events = run(py, false, || if length { p.finish_length() } else { p.finish() })?;
        events_to_py(py, &mut events)
    }

    /// Back to the initial state (same role, mode and limits).
    fn reset(&mut self) {
        self.inner.reset();
    }

    /// A copy of the whole parser state (a new `NativeParser`).
    fn copy_state(&self) -> NativeParser {
        NativeParser {
            inner: self.inner.clone(),
            ids: Vec::new(),
            events: Vec::new(),
            outside: Vec::new(),
        }
    }

    /// Restores a state taken by `copy_state` (copied: it can be restored again).
    fn restore_state(&mut self, snapshot: PyRef<'_, NativeParser>) {
        self.inner.clone_from(&snapshot.inner);
    }

    fn set_token_history(&mut self, n: usize) {
        self.inner.set_token_history(n);
    }

    #[getter]
    fn mode(&self) -> &'static str {
        self.inner.mode().as_str()
    }

    #[getter]
    fn current_content(&self) -> &str {
        self.inner.current_content()
    }

    /// The role of the message being parsed, as a string.
    #[getter]
    fn current_role_name(&self) -> Option<&'static str> {
        self.inner.current_role().map(|r| r.as_str())
    }

    #[getter]
    fn current_channel(&self) -> Option<&str> {
        self.inner.current_channel()
    }

    #[getter]
    fn current_recipient(&self) -> Option<&str> {
        self.inner.current_recipient()
    }

    #[getter]
    fn current_content_type(&self) -> Option<&str> {
        self.inner.current_content_type()
    }

    /// Stream index of the open message (Content state).
    #[getter]
    fn current_index(&self) -> Option<usize> {
        self.inner.current_index()
    }

    #[getter]
    fn last_content_delta(&self) -> Option<&str> {
        self.inner.last_content_delta()
    }

    /// `ExpectStart`, `Header` or `Content`.
    #[getter]
    fn state_name(&self) -> &'static str {
        self.inner.state().as_str()
    }

    /// The reference's state description as a dict (built on request; no JSON crosses the
    /// FFI boundary).
    #[getter]
    fn state_data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v: serde_json::Value = serde_json::from_str(&self.inner.state_json())
            .map_err(|e| super::HarmonyError::new_err(e.to_string()))?;
        super::json_to_py(py, &v)
    }

    #[getter]
    fn tokens<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.inner.tokens())
    }

    #[getter]
    fn tokens_dropped(&self) -> u64 {
        self.inner.tokens_dropped()
    }

    #[getter]
    fn header_tokens<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.inner.header_tokens())
    }

    /// Stream index of the oldest retained message (messages before it were evicted).
    #[getter]
    fn first_message_index(&self) -> usize {
        self.inner.first_message_index()
    }

    /// Number of finished messages since the start (evicted ones included).
    #[getter]
    fn n_messages(&self) -> usize {
        self.inner.first_message_index() + self.inner.messages().len()
    }

    /// Retained finished messages with stream index >= `start`, as
    /// `(role, name, channel, recipient, content_type, text, repaired)` tuples.
    #[pyo3(signature = (start=0))]
    fn messages_since<'py>(&self, py: Python<'py>, start: usize) -> PyResult<Bound<'py, PyList>> {
        let first = self.inner.first_message_index();
        let skip = start.saturating_sub(first);
        let ms = self.inner.messages();
        let rep = self.inner.repaired();
        let items = ms
            .iter()
            .zip(rep)
            .skip(skip)
            .map(|(m, &r)| -> PyResult<Bound<'py, PyTuple>> {
                let t = message_to_tuple(py, m)?;
                let mut v: Vec<Bound<'py, PyAny>> = t.iter().collect();
                v.push(pyo3::types::PyBool::new(py, r).to_owned().into_any());
                PyTuple::new(py, v)
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }
}

/// Parses a whole completion (GIL released) and returns message tuples
/// `(role, name, channel, recipient, content_type, text)`.
#[pyfunction]
#[pyo3(signature = (ids, role=None, mode="strict", limits=None))]
fn parse_completion<'py>(
    py: Python<'py>,
    ids: &Bound<'py, PyAny>,
    role: Option<&str>,
    mode: &str,
    limits: Option<PyRef<'py, PyLimits>>,
) -> PyResult<Bound<'py, PyList>> {
    let mode = parse_mode(mode)?;
    let role = parse_role(role)?;
    let limits: Limits = limits.map(|l| l.inner).unwrap_or_default();
    let mut ranks = Vec::new();
    extract_ids(ids, mode, &mut ranks, &mut Vec::new())?;
    let ms = run(py, ranks.len() > RELEASE_GIL_ABOVE, || {
        parser::parse_completion(&ranks, role, mode, limits)
    })?;
    let items = ms
        .iter()
        .map(|m| message_to_tuple(py, m))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// Registers the parser classes and functions in `_core` (called from `mod.rs`).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeParser>()?;
    m.add_class::<MessageStart>()?;
    m.add_class::<ContentDelta>()?;
    m.add_class::<MessageDone>()?;
    m.add_class::<ToolCallStart>()?;
    m.add_class::<ToolCallDelta>()?;
    m.add_class::<ToolCallDone>()?;
    m.add_class::<Repair>()?;
    m.add_class::<Done>()?;
    m.add_class::<Incomplete>()?;
    m.add_function(wrap_pyfunction!(parse_completion, m)?)?;
    Ok(())
}
