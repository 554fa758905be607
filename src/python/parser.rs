//! Python binding of the streaming parser: `NativeParser` and `parse_completion`. Events
//! are built by `events.rs`, ids read by `token_ids.rs`; messages cross as plain tuples (see
//! `message_to_tuple`).

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use super::events::{self, events_to_py};
use super::token_ids::{int_value, read_ids, strict_rank, Id};
use super::{message_to_tuple, run_guarded as run, HarmonyError, PyLimits};
use crate::chat::Role;
use crate::limits::Limits;
use crate::parser::{self, Event, Mode, RepairKind, StreamParser};
use crate::tokenizer::Rank;

/// Above this many ids a `feed` releases the GIL while parsing.
const RELEASE_GIL_ABOVE: usize = 512;

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

/// Reads the ids of a parser's input (see [`read_ids`]): in the lenient and raw modes the
/// positions and texts of the ids outside 0..2^32 go to `outside`.
fn extract_ids(ids: &Bound<'_, PyAny>, mode: Mode, out: &mut Vec<Rank>, outside: &mut Vec<(usize, String)>) -> PyResult<()> {
    outside.clear();
    match mode {
        Mode::Lenient | Mode::Raw => read_ids(ids, out, lenient_rank(outside)),
        Mode::Strict | Mode::NonStrict => read_ids(ids, out, strict_rank),
    }
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
    events::register(m)?;
    m.add_function(wrap_pyfunction!(parse_completion, m)?)?;
    Ok(())
}
