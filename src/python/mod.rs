//! The PyO3 binding (`llama_harmony._core`). Thin: it reads the Python objects directly
//! (attribute access, no JSON), releases the GIL for tokenizing and rendering, and turns every
//! error and panic into a typed Python exception.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::create_exception;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::Value;

use crate::chat::{
    Author, ChannelConfig, Content, DeveloperContent, Message, ReasoningEffort, Role,
    SystemContent, ToolDescription, ToolNamespaceConfig,
};
use crate::error::HarmonyError as Err_;
use crate::limits::{check, Limits};
use crate::render::{self, RenderConversationConfig, RenderOptions};
use crate::tokenizer::{tokenizer, Rank, N_VOCAB};

mod events;
mod parser;
mod token_ids;

create_exception!(_core, HarmonyError, PyRuntimeError, "Error raised by llama-harmony (a RuntimeError, like openai_harmony's).");
create_exception!(_core, LimitExceeded, HarmonyError, "A configured size limit was exceeded; raised before the large work happens. Attributes: limit, cap, actual.");

/// Converts a crate error into the matching Python exception.
pub fn to_py_err(e: Err_) -> PyErr {
    match e {
        Err_::LimitExceeded { limit, cap, actual } => {
            let msg = Err_::LimitExceeded { limit, cap, actual }.to_string();
            Python::with_gil(|py| {
                let err = LimitExceeded::new_err(msg);
                let v = err.value(py);
                let _ = v.setattr("limit", limit);
                let _ = v.setattr("cap", cap);
                let _ = v.setattr("actual", actual);
                err
            })
        }
        other => HarmonyError::new_err(other.to_string()),
    }
}

/// Runs `f` without the GIL, turning a panic into `HarmonyError` (never an abort, never a
/// `PanicException`).
pub fn guarded<T: Send>(py: Python<'_>, f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    run_guarded(py, true, f)
}

/// Like [`guarded`], releasing the GIL only when `release` (short calls keep it: releasing
/// costs more than they do).
pub fn run_guarded<T: Send>(py: Python<'_>, release: bool, f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    let r = if release {
        py.allow_threads(|| catch_unwind(AssertUnwindSafe(f)))
    } else {
        catch_unwind(AssertUnwindSafe(f))
    };
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py_err(e)),
        Err(panic) => Err(HarmonyError::new_err(format!("internal error (please report): {}", panic_message(&panic)))),
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading Python objects (ours or openai_harmony's: same attribute names)
// ---------------------------------------------------------------------------------------------

/// Reads a `str`, checking the byte cap before copying anything large. Lone surrogates
/// (which Python allows) become U+FFFD.
fn read_str(obj: &Bound<'_, PyAny>, what: &'static str, cap: usize) -> PyResult<String> {
    let s = obj.downcast::<PyString>().map_err(|_| {
        HarmonyError::new_err(format!("{what} must be a str, not {}", type_name(obj)))
    })?;
    // A code point is at least one UTF-8 byte: a string longer than the cap in code points
    // is over the cap in bytes too, and is rejected without encoding it.
    let n_chars = s.len()?;
    check(what, cap, n_chars).map_err(to_py_err)?;
    let owned = match s.to_cow() {
        Ok(c) => c.into_owned(),
        Err(_) => {
            let b = s.call_method1("encode", ("utf-8", "replace"))?;
            let bytes = b.downcast::<PyBytes>()?.as_bytes();
            String::from_utf8_lossy(bytes).into_owned()
        }
    };
    check(what, cap, owned.len()).map_err(to_py_err)?;
    Ok(owned)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// `obj.name`, the name interned once: no Python string is built (and hashed) per lookup.
macro_rules! attr {
    ($obj:expr, $name:literal) => {{
        let o: &Bound<'_, PyAny> = $obj;
        o.getattr(pyo3::intern!(o.py(), $name))
    }};
}

/// An optional `str` attribute (`None` or a `str` within `cap` bytes).
macro_rules! opt_str {
    ($obj:expr, $name:literal, $cap:expr) => {
        opt_str_value(attr!($obj, $name)?, $name, $cap)
    };
}

fn opt_str_value(v: Bound<'_, PyAny>, name: &'static str, cap: usize) -> PyResult<Option<String>> {
    if v.is_none() {
        Ok(None)
    } else {
        read_str(&v, name, cap).map(Some)
    }
}

/// Reads a role from a `Role` enum member or a plain string.
fn read_role(obj: &Bound<'_, PyAny>) -> PyResult<Role> {
    let by_name = |s: &str| Role::parse(s).ok_or_else(|| HarmonyError::new_err(format!("Unknown role: {s}")));
    if let Ok(s) = obj.downcast_exact::<PyString>() {
        return by_name(&s.to_cow()?);
    }
    let s: String = if let Ok(v) = attr!(obj, "value") { v.extract()? } else { obj.extract()? };
    by_name(&s)
}

/// Python value (dict/list/str/int/float/bool/None) to JSON, like `json.dumps` then a JSON
/// parser would: key order kept, int keys stringified, big ints as floats; depth-capped.
pub fn py_to_json(obj: &Bound<'_, PyAny>, depth_left: usize) -> PyResult<Value> {
    if depth_left == 0 {
        return Err(to_py_err(Err_::LimitExceeded {
            limit: "JSON Schema depth",
            cap: 0,
            actual: 0,
        }));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.downcast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.downcast::<PyInt>().is_ok() {
        if let Ok(v) = obj.extract::<i64>() {
            return Ok(Value::from(v));
        }
        if let Ok(v) = obj.extract::<u64>() {
            return Ok(Value::from(v));
        }
        let f: f64 = obj.extract()?;
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| HarmonyError::new_err("integer too large for JSON"));
    }
    if let Ok(f) = obj.downcast::<PyFloat>() {
        return serde_json::Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| HarmonyError::new_err("NaN and infinity are not valid JSON numbers"));
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        return Ok(Value::String(s.to_cow().map(|c| c.into_owned()).unwrap_or_else(|_| {
            s.to_string_lossy().into_owned()
        })));
    }
    if let Ok(d) = obj.downcast::<PyDict>() {
        let mut map = serde_json::Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = if let Ok(s) = k.downcast::<PyString>() {
                s.to_string_lossy().into_owned()
            } else if k.is_none() {
                "null".into()
            } else if let Ok(b) = k.downcast::<PyBool>() {
                if b.is_true() { "true".into() } else { "false".into() }
            } else if k.downcast::<PyInt>().is_ok() || k.downcast::<PyFloat>().is_ok() {
                k.str()?.to_string()
            } else {
                return Err(HarmonyError::new_err(format!("JSON object keys must be str, not {}", type_name(&k))));
            };
            map.insert(key, py_to_json(&v, depth_left - 1)?);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(l) = obj.downcast::<PyList>() {
        return l.iter().map(|x| py_to_json(&x, depth_left - 1)).collect::<PyResult<Vec<_>>>().map(Value::Array);
    }
    if let Ok(t) = obj.downcast::<PyTuple>() {
        return t.iter().map(|x| py_to_json(&x, depth_left - 1)).collect::<PyResult<Vec<_>>>().map(Value::Array);
    }
    Err(HarmonyError::new_err(format!("value of type {} is not JSON serializable", type_name(obj))))
}

/// JSON to Python objects.
pub fn json_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let items = a.iter().map(|x| json_to_py(py, x)).collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

fn read_namespaces(obj: &Bound<'_, PyAny>, limits: &Limits) -> PyResult<Option<BTreeMap<String, ToolNamespaceConfig>>> {
    if obj.is_none() {
        return Ok(None);
    }
    let d = obj.downcast::<PyDict>().map_err(|_| HarmonyError::new_err("tools must be a dict of name -> ToolNamespaceConfig"))?;
    let cap = limits.max_message_bytes;
    let mut out = BTreeMap::new();
    for (k, ns) in d.iter() {
        let key = read_str(&k, "tool namespace name", cap)?;
        let tools_obj = attr!(&ns, "tools")?;
        let mut tools = Vec::new();
        for t in tools_obj.try_iter()? {
            let t = t?;
            let params = attr!(&t, "parameters")?;
            let parameters = if params.is_none() {
                None
            } else {
                let depth_cap = limits.max_schema_depth.saturating_add(1);
                Some(py_to_json(&params, depth_cap).map_err(|e| {
                    Python::with_gil(|py| {
                        if e.is_instance_of::<LimitExceeded>(py) {
                            to_py_err(Err_::LimitExceeded {
                                limit: "JSON Schema depth",
                                cap: limits.max_schema_depth as u64,
                                actual: depth_cap as u64,
                            })
                        } else {
                            e
                        }
                    })
                })?)
            };
            tools.push(ToolDescription {
                name: read_str(&attr!(&t, "name")?, "tool name", cap)?,
                description: read_str(&attr!(&t, "description")?, "tool description", cap)?,
                parameters,
            });
        }
        out.insert(
            key,
            ToolNamespaceConfig {
                name: read_str(&attr!(&ns, "name")?, "tool namespace name", cap)?,
                description: opt_str!(&ns, "description", cap)?,
                tools,
            },
        );
    }
    Ok(Some(out))
}

fn read_content(obj: &Bound<'_, PyAny>, limits: &Limits) -> PyResult<Content> {
    let cap = limits.max_message_bytes;
    if let Ok(s) = obj.downcast::<PyString>() {
        return Ok(Content::Text(read_str(s.as_any(), "message text", cap)?));
    }
    let ty = obj.get_type();
    let kind = ty.name()?;
    match &*kind.to_cow()? {
        "TextContent" => Ok(Content::Text(read_str(&attr!(obj, "text")?, "message text", cap)?)),
        "SystemContent" => {
            let effort = attr!(obj, "reasoning_effort")?;
            let reasoning_effort = if effort.is_none() {
                None
            } else {
                let s: String = if let Ok(v) = attr!(&effort, "value") { v.extract()? } else { effort.extract()? };
                Some(ReasoningEffort::parse(&s).ok_or_else(|| HarmonyError::new_err(format!("unknown reasoning effort: {s}")))?)
            };
            let cc = attr!(obj, "channel_config")?;
            let channel_config = if cc.is_none() {
                None
            } else {
                let mut valid_channels = Vec::new();
                for c in attr!(&cc, "valid_channels")?.try_iter()? {
                    valid_channels.push(read_str(&c?, "channel", cap)?);
                }
                Some(ChannelConfig { valid_channels, channel_required: attr!(&cc, "channel_required")?.is_truthy()? })
            };
            Ok(Content::System(SystemContent {
                model_identity: opt_str!(obj, "model_identity", cap)?,
                reasoning_effort,
                conversation_start_date: opt_str!(obj, "conversation_start_date", cap)?,
                knowledge_cutoff: opt_str!(obj, "knowledge_cutoff", cap)?,
                channel_config,
                tools: read_namespaces(&attr!(obj, "tools")?, limits)?,
            }))
        }
        "DeveloperContent" => Ok(Content::Developer(DeveloperContent {
            instructions: opt_str!(obj, "instructions", cap)?,
            tools: read_namespaces(&attr!(obj, "tools")?, limits)?,
        })),
        other => Err(HarmonyError::new_err(format!(
            "unsupported content of type {other}: expected TextContent, SystemContent or DeveloperContent"
        ))),
    }
}

/// Reads a `Message` object (ours, openai_harmony's, or anything with the same attributes).
pub fn read_message(obj: &Bound<'_, PyAny>, limits: &Limits) -> PyResult<Message> {
    let cap = limits.max_message_bytes;
    let author = attr!(obj, "author")?;
    let role = read_role(&attr!(&author, "role")?)?;
    let name = opt_str!(&author, "name", cap)?;
    let mut content = Vec::new();
    for c in attr!(obj, "content")?.try_iter()? {
        content.push(read_content(&c?, limits)?);
    }
    let m = Message {
        author: Author { role, name },
        content,
        channel: opt_str!(obj, "channel", cap)?,
        recipient: opt_str!(obj, "recipient", cap)?,
        content_type: opt_str!(obj, "content_type", cap)?,
    };
    render::check_message(&m, limits).map_err(to_py_err)?;
    Ok(m)
}

/// Reads a `Conversation` (anything with `.messages`) or a sequence of messages.
pub fn read_messages(obj: &Bound<'_, PyAny>, limits: &Limits) -> PyResult<Vec<Message>> {
    let seq = if obj.hasattr(pyo3::intern!(obj.py(), "messages"))? { attr!(obj, "messages")? } else { obj.clone() };
    let n = seq.len().unwrap_or(0);
    check("messages", limits.max_messages, n).map_err(to_py_err)?;
    let mut out = Vec::with_capacity(n);
    let mut total = 0usize;
    for m in seq.try_iter()? {
        let m = read_message(&m?, limits)?;
        total = total.saturating_add(m.byte_size());
        check("conversation bytes", limits.max_conversation_bytes, total).map_err(to_py_err)?;
        out.push(m);
        check("messages", limits.max_messages, out.len()).map_err(to_py_err)?;
    }
    Ok(out)
}

/// A parsed message as a plain tuple `(role, name, channel, recipient, content_type, text)`,
/// wrapped into `Message` objects by the Python layer.
pub fn message_to_tuple<'py>(py: Python<'py>, m: &Message) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            m.author.role.as_str().into_pyobject(py)?.into_any(),
            m.author.name.as_deref().into_pyobject(py)?.into_any(),
            m.channel.as_deref().into_pyobject(py)?.into_any(),
            m.recipient.as_deref().into_pyobject(py)?.into_any(),
            m.content_type.as_deref().into_pyobject(py)?.into_any(),
            PyString::new(py, &m.text_content()).into_any(),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

/// Size caps checked before any large allocation (see the README's Limits section).
#[pyclass(name = "Limits", module = "llama_harmony", eq)]
#[derive(Clone, PartialEq)]
pub struct PyLimits {
    pub inner: Limits,
}

macro_rules! limit_props {
    ($($f:ident),*) => {
        #[pymethods]
        impl PyLimits {
            #[new]
            #[pyo3(signature = (*, $($f = None),*))]
            fn new($($f: Option<usize>),*) -> Self {
                let mut inner = Limits::default();
                $( if let Some(v) = $f { inner.$f = v; } )*
                PyLimits { inner }
            }
            /// Limits that never trigger.
            #[staticmethod]
            fn unlimited() -> Self { PyLimits { inner: Limits::unlimited() } }
            $(
                #[getter] fn $f(&self) -> usize { self.inner.$f }
            )*
            #[pyo3(signature = (**kwargs))]
            fn replace(&self, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
                let mut inner = self.inner;
                if let Some(kw) = kwargs {
                    for (k, v) in kw.iter() {
                        let k: String = k.extract()?;
                        let v: usize = v.extract()?;
                        match k.as_str() {
                            $( stringify!($f) => inner.$f = v, )*
                            other => return Err(pyo3::exceptions::PyTypeError::new_err(format!("unknown limit: {other}"))),
                        }
                    }
                }
                Ok(PyLimits { inner })
            }
            fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
                let d = PyDict::new(py);
                $( d.set_item(stringify!($f), self.inner.$f)?; )*
                Ok(d)
            }
            fn __repr__(&self) -> String {
                let mut parts = Vec::new();
                $( parts.push(format!("{}={}", stringify!($f), self.inner.$f)); )*
                format!("Limits({})", parts.join(", "))
            }
        }
    };
}

limit_props!(
    max_prompt_tokens,
    max_message_bytes,
    max_conversation_bytes,
    max_messages,
    max_schema_depth,
    max_header_bytes,
    max_parsed_message_bytes,
    max_parsed_total_bytes
);

fn limits_of(l: Option<PyRef<'_, PyLimits>>, default: &Limits) -> Limits {
    l.map(|l| l.inner).unwrap_or(*default)
}

// ---------------------------------------------------------------------------------------------
// The encoding
// ---------------------------------------------------------------------------------------------

/// The native o200k_harmony encoding: tokenizer and renderer. Cheap to create; the vocabulary
/// is built once per process and shared.
#[pyclass(name = "NativeEncoding", module = "llama_harmony._core", frozen)]
pub struct NativeEncoding {
    limits: std::sync::RwLock<Limits>,
    cache: Option<render::RenderCache>,
}

fn ids_to_list<'py>(py: Python<'py>, ids: Vec<Rank>) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, ids)
}

fn cfg(auto_drop_analysis: Option<bool>) -> Option<RenderConversationConfig> {
    auto_drop_analysis.map(|a| RenderConversationConfig { auto_drop_analysis: a })
}

#[pymethods]
impl NativeEncoding {
    #[new]
    #[pyo3(signature = (limits=None, render_cache=true))]
    fn new(py: Python<'_>, limits: Option<PyRef<'_, PyLimits>>, render_cache: bool) -> PyResult<Self> {
        guarded(py, || {
            tokenizer();
            Ok(())
        })?;
        Ok(NativeEncoding { limits: std::sync::RwLock::new(limits_of(limits, &Limits::default())), cache: render_cache.then(Default::default) })
    }

    #[getter]
    fn limits(&self) -> PyLimits {
        PyLimits { inner: *self.limits.read().unwrap() }
    }

    #[setter]
    fn set_limits(&self, l: PyRef<'_, PyLimits>) {
        *self.limits.write().unwrap() = l.inner;
    }

    #[getter]
    fn n_vocab(&self) -> u32 {
        N_VOCAB
    }

    fn special_tokens(&self) -> Vec<String> {
        tokenizer().special_names().to_vec()
    }

    fn is_special_token(&self, id: i64) -> bool {
        u32::try_from(id).is_ok_and(|i| tokenizer().is_special(i))
    }

    /// Id of a special token name, or None.
    fn special_token_id(&self, name: &str) -> Option<Rank> {
        tokenizer().special_id(name)
    }

    fn encode_ordinary<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyList>> {
        let ids = guarded(py, || Ok(tokenizer().encode_ordinary(text)))?;
        ids_to_list(py, ids)
    }

    /// Encodes `text`. `allowed`: the special ids whose strings become special tokens (None:
    /// all of them). `disallowed`: the special ids whose strings are an error; `disallow_rest`:
    /// every special id that is not allowed is disallowed (the default of `encode`).
    #[pyo3(signature = (text, allowed=None, disallowed=None, disallow_rest=false))]
    fn encode<'py>(&self, py: Python<'py>, text: &str, allowed: Option<Vec<Rank>>, disallowed: Option<Vec<Rank>>, disallow_rest: bool) -> PyResult<Bound<'py, PyList>> {
        let ids = guarded(py, || {
            let t = tokenizer();
            let n_special = (N_VOCAB - crate::tokenizer::N_BASE) as usize;
            let idx = move |id: Rank| id.checked_sub(crate::tokenizer::N_BASE).map(|i| i as usize).filter(|&i| i < n_special);
            let mut allow = vec![allowed.is_none(); n_special];
            for a in allowed.iter().flatten() {
                if let Some(i) = idx(*a) {
                    allow[i] = true;
                }
            }
            let deny: Option<Vec<bool>> = if disallow_rest {
                Some(allow.iter().map(|a| !a).collect())
            } else {
                disallowed.map(|dis| {
                    let mut deny = vec![false; n_special];
                    for d in dis {
                        if let Some(i) = idx(d) {
                            deny[i] = true;
                        }
                    }
                    deny
                })
            };
            if let Some(deny) = deny.filter(|d| d.contains(&true)) {
                if let Some((s, e, _)) = t.find_special(text, |id| deny[idx(id).unwrap()]) {
                    return Err(Err_::DisallowedSpecial { token: text[s..e].to_string() });
                }
            }
            Ok(t.encode_with_special(text, |id| allow[idx(id).unwrap()]))
        })?;
        ids_to_list(py, ids)
    }

    /// `ids`: a list (fastest), a tuple or any iterable of ints.
    fn decode_bytes<'py>(&self, py: Python<'py>, ids: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let mut ranks = Vec::new();
        token_ids::read_ids(ids, &mut ranks, token_ids::strict_rank)?;
        let bytes = guarded(py, || tokenizer().decode_bytes(&ranks))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// `ids`: a list (fastest), a tuple or any iterable of ints.
    fn decode_utf8(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<String> {
        let mut ranks = Vec::new();
        token_ids::read_ids(ids, &mut ranks, token_ids::strict_rank)?;
        guarded(py, || tokenizer().decode_utf8(&ranks))
    }

    /// Bytes of every token id 0..n (special tokens: their names), for building GGUF vocabularies.
    fn token_bytes_table<'py>(&self, py: Python<'py>, n: u32) -> PyResult<Bound<'py, PyList>> {
        let t = tokenizer();
        let items = (0..n.min(N_VOCAB)).map(|i| PyBytes::new(py, t.token_bytes(i).unwrap()));
        PyList::new(py, items)
    }

    #[pyo3(signature = (conversation, auto_drop_analysis=None, limits=None))]
    fn render_conversation<'py>(&self, py: Python<'py>, conversation: &Bound<'py, PyAny>, auto_drop_analysis: Option<bool>, limits: Option<PyRef<'py, PyLimits>>) -> PyResult<Bound<'py, PyList>> {
        let l = limits_of(limits, &self.limits.read().unwrap());
        let msgs = read_messages(conversation, &l)?;
        let ids = guarded(py, || render::render_conversation(&msgs, cfg(auto_drop_analysis), &l, self.cache.as_ref()))?;
        ids_to_list(py, ids)
    }

    #[pyo3(signature = (conversation, next_turn_role, auto_drop_analysis=None, limits=None))]
    fn render_conversation_for_completion<'py>(&self, py: Python<'py>, conversation: &Bound<'py, PyAny>, next_turn_role: &Bound<'py, PyAny>, auto_drop_analysis: Option<bool>, limits: Option<PyRef<'py, PyLimits>>) -> PyResult<Bound<'py, PyList>> {
        let l = limits_of(limits, &self.limits.read().unwrap());
        let role = read_role(next_turn_role)?;
        let msgs = read_messages(conversation, &l)?;
        let ids = guarded(py, || render::render_conversation_for_completion(&msgs, role, cfg(auto_drop_analysis), &l, self.cache.as_ref()))?;
        ids_to_list(py, ids)
    }

    #[pyo3(signature = (conversation, auto_drop_analysis=None, limits=None))]
    fn render_conversation_for_training<'py>(&self, py: Python<'py>, conversation: &Bound<'py, PyAny>, auto_drop_analysis: Option<bool>, limits: Option<PyRef<'py, PyLimits>>) -> PyResult<Bound<'py, PyList>> {
        let l = limits_of(limits, &self.limits.read().unwrap());
        let msgs = read_messages(conversation, &l)?;
        let ids = guarded(py, || render::render_conversation_for_training(&msgs, cfg(auto_drop_analysis), &l, self.cache.as_ref()))?;
        ids_to_list(py, ids)
    }

    #[pyo3(signature = (message, conversation_has_function_tools=false, limits=None))]
    fn render<'py>(&self, py: Python<'py>, message: &Bound<'py, PyAny>, conversation_has_function_tools: bool, limits: Option<PyRef<'py, PyLimits>>) -> PyResult<Bound<'py, PyList>> {
        let l = limits_of(limits, &self.limits.read().unwrap());
        let m = read_message(message, &l)?;
        let opts = RenderOptions { conversation_has_function_tools };
        let ids = guarded(py, || render::render_message(&m, opts, &l))?;
        ids_to_list(py, ids)
    }

    /// The exact bytes of o200k_base.tiktoken, rebuilt from the embedded table.
    fn o200k_base_tiktoken_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let b = guarded(py, || Ok(tokenizer().o200k_base_tiktoken_file()))?;
        Ok(PyBytes::new(py, &b))
    }
}


/// The browser and python tool namespaces, as the reference ships them (generated data in
/// third_party/harmony/builtin_tools.json), as plain dicts.
#[pyfunction]
fn builtin_tool_namespace<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    static DATA: &str = include_str!("../../third_party/harmony/builtin_tools.json");
    let v: Value = serde_json::from_str(DATA).map_err(|e| HarmonyError::new_err(e.to_string()))?;
    match v.get(name) {
        Some(ns) => json_to_py(py, ns),
        None => Err(HarmonyError::new_err(format!("unknown built-in tool namespace: {name} (known: browser, python)"))),
    }
}

/// Raises a Rust panic inside a guarded call (tests prove it becomes HarmonyError).
#[pyfunction]
fn _debug_panic(py: Python<'_>) -> PyResult<()> {
    guarded(py, || -> crate::Result<()> { panic!("deliberate test panic") })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("HarmonyError", py.get_type::<HarmonyError>())?;
    m.add("LimitExceeded", py.get_type::<LimitExceeded>())?;
    m.add_class::<PyLimits>()?;
    m.add_class::<NativeEncoding>()?;
    parser::register(m)?;
    m.add_function(wrap_pyfunction!(builtin_tool_namespace, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_panic, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
