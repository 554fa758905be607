//! Conversation to token ids, token-for-token identical to openai-harmony 0.0.8.
//!
//! Each text field is tokenized on its own (never concatenated with its neighbours), exactly
//! as the reference does; formatting tokens are inserted as single special ids; text never
//! turns into special tokens (a user who types `<|end|>` gets ordinary tokens).
//!
//! Limits (message count, bytes, schema depth, prompt tokens) are checked before tokenizing.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use rustc_hash::{FxHashMap, FxHasher};

use crate::chat::{Content, DeveloperContent, Message, Role, SystemContent};
use crate::error::{HarmonyError, Result};
use crate::limits::{check, Limits};
use crate::schema_ts::{json_depth, tools_section};
use crate::tokenizer::{ids, tokenizer, Rank};

/// Options for rendering one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Adds the "Calls to these tools must go to the commentary channel" line to the system
    /// message. Conversation renders set it when a developer message has function tools.
    pub conversation_has_function_tools: bool,
}

/// Options for rendering a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderConversationConfig {
    /// The reference's rule: when the last assistant message is on `final`, drop the
    /// `analysis` messages that come before the FIRST `final` message.
    pub auto_drop_analysis: bool,
}

impl Default for RenderConversationConfig {
    fn default() -> Self {
        RenderConversationConfig { auto_drop_analysis: true }
    }
}

const CONSTRAIN_MARKER: &str = "<|constrain|>";

/// A bounded cache of rendered messages, so that a chat loop that re-renders a growing
/// conversation every turn tokenizes each message once. Keyed by a hash of the message and
/// confirmed by full equality (no collision can return wrong ids). When the cached text
/// exceeds its byte budget the cache starts over; messages over 1 MiB are not cached.
pub struct RenderCache {
    inner: Mutex<CacheInner>,
    max_bytes: usize,
}

#[derive(Default)]
struct CacheInner {
    map: FxHashMap<u64, Vec<(Message, bool, Arc<[Rank]>)>>,
    bytes: usize,
}

impl Default for RenderCache {
    fn default() -> Self {
        RenderCache { inner: Mutex::new(CacheInner::default()), max_bytes: 32 << 20 }
    }
}

const CACHE_MAX_MESSAGE_BYTES: usize = 1 << 20;

impl RenderCache {
    fn key(m: &Message, fn_tools: bool) -> u64 {
        let mut h = FxHasher::default();
        fn_tools.hash(&mut h);
        hash_message(m, &mut h);
        h.finish()
    }

    fn get(&self, key: u64, m: &Message, fn_tools: bool) -> Option<Arc<[Rank]>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .map
            .get(&key)?
            .iter()
            .find(|(cm, f, _)| *f == fn_tools && cm == m)
            .map(|(_, _, ids)| ids.clone())
    }

    fn put(&self, key: u64, m: &Message, fn_tools: bool, ids: Arc<[Rank]>) {
        let size = m.byte_size() + ids.len() * 4 + 64;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.bytes + size > self.max_bytes {
            inner.map.clear();
            inner.bytes = 0;
        }
        inner.bytes += size;
        inner.map.entry(key).or_default().push((m.clone(), fn_tools, ids));
    }

    /// Number of cached messages (for tests).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).map.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn hash_json(v: &serde_json::Value, h: &mut FxHasher) {
    use serde_json::Value;
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, *b).hash(h),
        Value::Number(n) => (2u8, n.to_string()).hash(h),
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(a) => {
            (4u8, a.len()).hash(h);
            a.iter().for_each(|x| hash_json(x, h));
        }
        Value::Object(o) => {
            (5u8, o.len()).hash(h);
            for (k, x) in o {
                k.hash(h);
                hash_json(x, h);
            }
        }
    }
}

fn hash_namespaces(t: &Option<std::collections::BTreeMap<String, crate::chat::ToolNamespaceConfig>>, h: &mut FxHasher) {
    if let Some(t) = t {
        for (k, ns) in t {
            (k, &ns.name, &ns.description, ns.tools.len()).hash(h);
            for tool in &ns.tools {
                (&tool.name, &tool.description).hash(h);
                if let Some(p) = &tool.parameters {
                    hash_json(p, h);
                }
            }
        }
    }
}

fn hash_message(m: &Message, h: &mut FxHasher) {
    (m.author.role.as_str(), &m.author.name, &m.channel, &m.recipient, &m.content_type).hash(h);
    for c in &m.content {
        match c {
            Content::Text(t) => (0u8, t).hash(h),
            Content::System(s) => {
                (1u8, &s.model_identity, s.reasoning_effort.map(|e| e.as_str()), &s.conversation_start_date, &s.knowledge_cutoff).hash(h);
                if let Some(cc) = &s.channel_config {
                    (&cc.valid_channels, cc.channel_required).hash(h);
                }
                hash_namespaces(&s.tools, h);
            }
            Content::Developer(d) => {
                (2u8, &d.instructions).hash(h);
                hash_namespaces(&d.tools, h);
            }
        }
    }
}

/// Token sink that enforces the prompt-token cap while rendering.
struct Sink<'a> {
    out: &'a mut Vec<Rank>,
    cap: usize,
}

impl Sink<'_> {
    fn text(&mut self, s: &str) -> Result<()> {
        tokenizer().encode_ordinary_into(s, self.out);
        self.checked()
    }
    fn special(&mut self, id: Rank) -> Result<()> {
        self.out.push(id);
        self.checked()
    }
    fn checked(&self) -> Result<()> {
        check("prompt tokens", self.cap, self.out.len())
    }
}

/// The system message's text (identity, reasoning, tools, channels).
pub fn system_text(sys: &SystemContent, opts: RenderOptions) -> String {
    let mut sections: Vec<String> = Vec::new();
    let mut top: Vec<String> = Vec::new();
    if let Some(id) = &sys.model_identity {
        top.push(id.clone());
    }
    if let Some(k) = &sys.knowledge_cutoff {
        top.push(format!("Knowledge cutoff: {k}"));
    }
    if let Some(d) = &sys.conversation_start_date {
        top.push(format!("Current date: {d}"));
    }
    if !top.is_empty() {
        sections.push(top.join("\n"));
    }
    if let Some(effort) = sys.reasoning_effort {
        sections.push(format!("Reasoning: {}", effort.as_str()));
    }
    if let Some(tools) = &sys.tools {
        if !tools.is_empty() {
            sections.push(tools_section(tools));
        }
    }
    if let Some(cc) = &sys.channel_config {
        if !cc.valid_channels.is_empty() {
            let mut s = format!("# Valid channels: {}.", cc.valid_channels.join(", "));
            if cc.channel_required {
                s.push_str(" Channel must be included for every message.");
            }
            if opts.conversation_has_function_tools {
                s.push_str("\nCalls to these tools must go to the commentary channel: 'functions'.");
            }
            sections.push(s);
        }
    }
    sections.join("\n\n")
}

/// The developer message's text (instructions, tools).
pub fn developer_text(dev: &DeveloperContent) -> String {
    let mut sections: Vec<String> = Vec::new();
    if let Some(i) = &dev.instructions {
        sections.push("# Instructions".into());
        sections.push(i.clone());
    }
    if let Some(tools) = &dev.tools {
        if !tools.is_empty() {
            sections.push(tools_section(tools));
        }
    }
    sections.join("\n\n")
}

/// Whether a developer message declares a non-empty `functions` namespace.
pub fn has_function_tools(messages: &[Message]) -> bool {
    messages.iter().any(|m| {
        m.content.iter().any(|c| match c {
            Content::Developer(d) => d
                .tools
                .as_ref()
                .and_then(|t| t.get("functions"))
                .is_some_and(|ns| !ns.tools.is_empty()),
            _ => false,
        })
    })
}

fn role_debug_name(r: Role) -> &'static str {
    match r {
        Role::User => "User",
        Role::Assistant => "Assistant",
        Role::System => "System",
        Role::Developer => "Developer",
        Role::Tool => "Tool",
    }
}

/// Checks a message against the byte and schema-depth caps.
pub fn check_message(m: &Message, limits: &Limits) -> Result<()> {
    check("message bytes", limits.max_message_bytes, m.byte_size())?;
    for c in &m.content {
        let tools = match c {
            Content::System(s) => s.tools.as_ref(),
            Content::Developer(d) => d.tools.as_ref(),
            Content::Text(_) => None,
        };
        for ns in tools.into_iter().flat_map(|t| t.values()) {
            for tool in &ns.tools {
                if let Some(p) = &tool.parameters {
                    check("JSON Schema depth", limits.max_schema_depth, json_depth(p))?;
                }
            }
        }
    }
    Ok(())
}

fn check_conversation(messages: &[&Message], limits: &Limits) -> Result<()> {
    check("messages", limits.max_messages, messages.len())?;
    let mut total = 0usize;
    for m in messages {
        check_message(m, limits)?;
        total = total.saturating_add(m.byte_size());
        check("conversation bytes", limits.max_conversation_bytes, total)?;
    }
    Ok(())
}

fn render_message_into(m: &Message, opts: RenderOptions, sink: &mut Sink) -> Result<()> {
    sink.special(ids::START)?;
    if m.author.role == Role::Tool {
        match &m.author.name {
            Some(name) => sink.text(name)?,
            None => return Err(HarmonyError::Render("Tools should have a name!".into())),
        }
    } else {
        sink.text(m.author.role.as_str())?;
        if let Some(name) = &m.author.name {
            sink.text(&format!(":{name}"))?;
        }
    }
    if let Some(r) = &m.recipient {
        if r != "all" {
            sink.text(&format!(" to={r}"))?;
        }
    }
    if let Some(ch) = &m.channel {
        sink.special(ids::CHANNEL)?;
        sink.text(ch)?;
    }
    if let Some(ct) = &m.content_type {
        if let Some(rest) = ct.strip_prefix(CONSTRAIN_MARKER) {
            sink.text(" ")?;
            sink.special(ids::CONSTRAIN)?;
            if !rest.is_empty() {
                sink.text(rest)?;
            }
        } else {
            sink.text(&format!(" {ct}"))?;
        }
    }
    sink.special(ids::MESSAGE)?;
    for c in &m.content {
        match c {
            Content::Text(t) => sink.text(t)?,
            Content::System(s) => {
                if m.author.role != Role::System {
                    return Err(HarmonyError::Render(format!(
                        "SystemContent may only appear in system messages, found in {}",
                        role_debug_name(m.author.role)
                    )));
                }
                sink.text(&system_text(s, opts))?
            }
            Content::Developer(d) => {
                if m.author.role != Role::Developer {
                    return Err(HarmonyError::Render(format!(
                        "DeveloperContent may only appear in developer messages, found in {}",
                        role_debug_name(m.author.role)
                    )));
                }
                sink.text(&developer_text(d))?
            }
        }
    }
    if m.author.role == Role::Assistant && m.recipient.is_some() {
        sink.special(ids::CALL)
    } else {
        sink.special(ids::END)
    }
}

/// Renders one message through the cache (when given).
fn render_message_cached(m: &Message, opts: RenderOptions, sink: &mut Sink, cache: Option<&RenderCache>) -> Result<()> {
    let cache = match cache {
        Some(c) if m.byte_size() <= CACHE_MAX_MESSAGE_BYTES => c,
        _ => return render_message_into(m, opts, sink),
    };
    let fn_tools = opts.conversation_has_function_tools;
    let key = RenderCache::key(m, fn_tools);
    if let Some(ids) = cache.get(key, m, fn_tools) {
        sink.out.extend_from_slice(&ids);
        return sink.checked();
    }
    let mut tmp = Vec::new();
    render_message_into(m, opts, &mut Sink { out: &mut tmp, cap: sink.cap })?;
    sink.out.extend_from_slice(&tmp);
    cache.put(key, m, fn_tools, tmp.into());
    sink.checked()
}

/// Renders one message (`HarmonyEncoding.render`).
pub fn render_message(m: &Message, opts: RenderOptions, limits: &Limits) -> Result<Vec<Rank>> {
    check_message(m, limits)?;
    let mut out = Vec::new();
    render_message_into(m, opts, &mut Sink { out: &mut out, cap: limits.max_prompt_tokens })?;
    Ok(out)
}

/// The messages the reference renders, after its `auto_drop_analysis` rule.
pub fn kept_messages<'a>(messages: &'a [Message], config: Option<RenderConversationConfig>) -> Vec<&'a Message> {
    let last_assistant_is_final = messages
        .iter()
        .rev()
        .find(|m| m.author.role == Role::Assistant)
        .is_some_and(|m| m.channel.as_deref() == Some("final"));
    let drop = config.is_some_and(|c| c.auto_drop_analysis) && last_assistant_is_final;
    let first_final = messages.iter().position(|m| m.channel.as_deref() == Some("final"));
    messages
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            !(drop
                && first_final.is_some_and(|f| *i < f)
                && m.channel.as_deref() == Some("analysis"))
        })
        .map(|(_, m)| m)
        .collect()
}

/// Renders a conversation (`render_conversation`), appending to `out`.
pub fn render_conversation_into(
    messages: &[Message],
    config: Option<RenderConversationConfig>,
    limits: &Limits,
    out: &mut Vec<Rank>,
    cache: Option<&RenderCache>,
) -> Result<()> {
    let all: Vec<&Message> = messages.iter().collect();
    check_conversation(&all, limits)?;
    let opts = RenderOptions { conversation_has_function_tools: has_function_tools(messages) };
    let mut sink = Sink { out, cap: limits.max_prompt_tokens };
    for m in kept_messages(messages, config) {
        render_message_cached(m, opts, &mut sink, cache)?;
    }
    Ok(())
}

/// `render_conversation`.
pub fn render_conversation(
    messages: &[Message],
    config: Option<RenderConversationConfig>,
    limits: &Limits,
    cache: Option<&RenderCache>,
) -> Result<Vec<Rank>> {
    let mut out = Vec::new();
    render_conversation_into(messages, config, limits, &mut out, cache)?;
    Ok(out)
}

/// `render_conversation_for_completion`: the conversation, then `<|start|>{next_role}`.
pub fn render_conversation_for_completion(
    messages: &[Message],
    next_role: Role,
    config: Option<RenderConversationConfig>,
    limits: &Limits,
    cache: Option<&RenderCache>,
) -> Result<Vec<Rank>> {
    let mut out = render_conversation(messages, config, limits, cache)?;
    let mut sink = Sink { out: &mut out, cap: limits.max_prompt_tokens };
    sink.special(ids::START)?;
    sink.text(next_role.as_str())?;
    Ok(out)
}

/// `render_conversation_for_training`: like `render_conversation`, with the last `<|end|>`
/// turned into `<|return|>` when the last message is an assistant message on `final`.
pub fn render_conversation_for_training(
    messages: &[Message],
    config: Option<RenderConversationConfig>,
    limits: &Limits,
    cache: Option<&RenderCache>,
) -> Result<Vec<Rank>> {
    let mut out = render_conversation(messages, config, limits, cache)?;
    if let Some(last) = messages.last() {
        if last.author.role == Role::Assistant && last.channel.as_deref() == Some("final") {
            if let Some(t) = out.last_mut() {
                *t = ids::RETURN;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::*;

    fn decode(ids: &[Rank]) -> String {
        tokenizer().decode_utf8(ids).unwrap()
    }

    #[test]
    fn simple_chat() {
        let msgs = vec![
            Message { author: Author::new(Role::System), content: vec![Content::System(SystemContent::default())], channel: None, recipient: None, content_type: None },
            Message::text(Role::User, "hi <|end|>"),
        ];
        let ids = render_conversation_for_completion(&msgs, Role::Assistant, Some(Default::default()), &Limits::default(), None).unwrap();
        let cache = RenderCache::default();
        for _ in 0..2 {
            let again = render_conversation_for_completion(&msgs, Role::Assistant, Some(Default::default()), &Limits::default(), Some(&cache)).unwrap();
            assert_eq!(again, ids);
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(
            decode(&ids),
            "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|><|start|>user<|message|>hi <|end|><|end|><|start|>assistant"
        );
        // The user's "<|end|>" is ordinary text, not the special token.
        assert_eq!(ids.iter().filter(|&&t| t == ids::END).count(), 2);
    }

    #[test]
    fn tool_call_header() {
        let m = Message::text(Role::Assistant, "{}")
            .with_channel("commentary")
            .with_recipient("functions.f")
            .with_content_type("<|constrain|>json");
        let ids = render_message(&m, RenderOptions::default(), &Limits::default()).unwrap();
        assert_eq!(decode(&ids), "<|start|>assistant to=functions.f<|channel|>commentary <|constrain|>json<|message|>{}<|call|>");
        assert!(ids.contains(&ids::CONSTRAIN));
    }

    #[test]
    fn huge_message_fails_fast() {
        let m = Message::text(Role::User, "x".repeat(9 << 20));
        let err = render_message(&m, RenderOptions::default(), &Limits::default()).unwrap_err();
        assert!(matches!(err, HarmonyError::LimitExceeded { limit: "message bytes", .. }));
    }

    #[test]
    fn prompt_token_cap() {
        let m = Message::text(Role::User, "word ".repeat(100));
        let limits = Limits { max_prompt_tokens: 50, ..Limits::default() };
        let err = render_message(&m, RenderOptions::default(), &limits).unwrap_err();
        assert!(matches!(err, HarmonyError::LimitExceeded { limit: "prompt tokens", cap: 50, .. }));
    }
}
