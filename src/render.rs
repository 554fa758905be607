//! Conversation to token ids, token-for-token identical to openai-harmony 0.0.8.
//!
//! Each text field is tokenized on its own (never concatenated with its neighbours), exactly
//! as the reference does; formatting tokens are inserted as single special ids; text never
//! turns into special tokens (a user who types `<|end|>` gets ordinary tokens).
//!
//! Limits (message count, bytes, schema depth, prompt tokens) are checked before tokenizing.

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
) -> Result<()> {
    let all: Vec<&Message> = messages.iter().collect();
    check_conversation(&all, limits)?;
    let opts = RenderOptions { conversation_has_function_tools: has_function_tools(messages) };
    let mut sink = Sink { out, cap: limits.max_prompt_tokens };
    for m in kept_messages(messages, config) {
        render_message_into(m, opts, &mut sink)?;
    }
    Ok(())
}

/// `render_conversation`.
pub fn render_conversation(
    messages: &[Message],
    config: Option<RenderConversationConfig>,
    limits: &Limits,
) -> Result<Vec<Rank>> {
    let mut out = Vec::new();
    render_conversation_into(messages, config, limits, &mut out)?;
    Ok(out)
}

/// `render_conversation_for_completion`: the conversation, then `<|start|>{next_role}`.
pub fn render_conversation_for_completion(
    messages: &[Message],
    next_role: Role,
    config: Option<RenderConversationConfig>,
    limits: &Limits,
) -> Result<Vec<Rank>> {
    let mut out = Vec::new();
    render_conversation_into(messages, config, limits, &mut out)?;
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
) -> Result<Vec<Rank>> {
    let mut out = render_conversation(messages, config, limits)?;
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
        let ids = render_conversation_for_completion(&msgs, Role::Assistant, Some(Default::default()), &Limits::default()).unwrap();
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
