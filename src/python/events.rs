//! The parser's events as Python objects: small native classes (`MessageStart`,
//! `ContentDelta`, ...; frozen, comparable, pattern-matchable) built directly from the core's
//! [`Event`]s, with no JSON and no Python code per event.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::parser::Event;

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
pub(super) fn events_to_py<'py>(py: Python<'py>, events: &mut Vec<Event>) -> PyResult<Bound<'py, PyList>> {
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

/// Registers the event classes in `_core`.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<MessageStart>()?;
    m.add_class::<ContentDelta>()?;
    m.add_class::<MessageDone>()?;
    m.add_class::<ToolCallStart>()?;
    m.add_class::<ToolCallDelta>()?;
    m.add_class::<ToolCallDone>()?;
    m.add_class::<Repair>()?;
    m.add_class::<Done>()?;
    m.add_class::<Incomplete>()?;
    Ok(())
}
