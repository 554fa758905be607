//! The Harmony message model: roles, authors, contents, messages and conversations.
//!
//! These mirror openai-harmony 0.0.8's public data model field for field, so a conversation
//! converts losslessly between the two (the Python binding reads the Python objects directly,
//! with no JSON in between).

use std::collections::BTreeMap;

use crate::error::{HarmonyError, Result};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Assistant,
    System,
    Developer,
    Tool,
}

impl Role {
    /// The role's wire name (`"assistant"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Developer => "developer",
            Role::Tool => "tool",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "system" => Role::System,
            "developer" => Role::Developer,
            "tool" => Role::Tool,
            _ => return None,
        })
    }

    /// Like [`parse`](Self::parse) with a typed error.
    pub fn try_parse(s: &str) -> Result<Role> {
        Role::parse(s).ok_or_else(|| HarmonyError::InvalidArgument(format!("Unknown role: {s}")))
    }
}

/// A message's author: a role and an optional name (for tools, the tool's name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Author {
    pub role: Role,
    pub name: Option<String>,
}

impl Author {
    pub fn new(role: Role) -> Self {
        Author { role, name: None }
    }
}

/// Reasoning effort of the system message (`Reasoning: low|medium|high`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasoningEffort {
    Low,
    Medium,
    High,
}

impl ReasoningEffort {
    /// The lower-case name rendered in the system message.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }

    /// Parses `low`/`medium`/`high`, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Some(ReasoningEffort::Low),
            "medium" => Some(ReasoningEffort::Medium),
            "high" => Some(ReasoningEffort::High),
            _ => None,
        }
    }
}

/// The valid channels announced in the system message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelConfig {
    pub valid_channels: Vec<String>,
    pub channel_required: bool,
}

impl ChannelConfig {
    pub fn require_channels(channels: &[&str]) -> Self {
        ChannelConfig {
            valid_channels: channels.iter().map(|s| s.to_string()).collect(),
            channel_required: true,
        }
    }
}

/// One tool: name, description and an optional JSON Schema for its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDescription {
    pub name: String,
    pub description: String,
    pub parameters: Option<serde_json::Value>,
}

/// A namespace of tools (`functions`, `browser`, `python`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolNamespaceConfig {
    pub name: String,
    pub description: Option<String>,
    pub tools: Vec<ToolDescription>,
}

/// The system message's content.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemContent {
    pub model_identity: Option<String>,
    pub reasoning_effort: Option<ReasoningEffort>,
    pub conversation_start_date: Option<String>,
    pub knowledge_cutoff: Option<String>,
    pub channel_config: Option<ChannelConfig>,
    /// Namespaces by name; rendered in name order.
    pub tools: Option<BTreeMap<String, ToolNamespaceConfig>>,
}

/// The default model identity line.
pub const DEFAULT_IDENTITY: &str = "You are ChatGPT, a large language model trained by OpenAI.";

impl Default for SystemContent {
    fn default() -> Self {
        SystemContent {
            model_identity: Some(DEFAULT_IDENTITY.to_string()),
            reasoning_effort: Some(ReasoningEffort::Medium),
            conversation_start_date: None,
            knowledge_cutoff: Some("2024-06".to_string()),
            channel_config: Some(ChannelConfig::require_channels(&[
                "analysis",
                "commentary",
                "final",
            ])),
            tools: None,
        }
    }
}

/// The developer message's content: instructions and tool namespaces.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeveloperContent {
    pub instructions: Option<String>,
    pub tools: Option<BTreeMap<String, ToolNamespaceConfig>>,
}

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    System(SystemContent),
    Developer(DeveloperContent),
}

/// A Harmony message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub author: Author,
    pub content: Vec<Content>,
    pub channel: Option<String>,
    pub recipient: Option<String>,
    pub content_type: Option<String>,
}

impl Message {
    /// A message with one text content.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            author: Author::new(role),
            content: vec![Content::Text(text.into())],
            channel: None,
            recipient: None,
            content_type: None,
        }
    }

    pub fn with_channel(mut self, c: impl Into<String>) -> Self {
        self.channel = Some(c.into());
        self
    }

    pub fn with_recipient(mut self, r: impl Into<String>) -> Self {
        self.recipient = Some(r.into());
        self
    }

    pub fn with_content_type(mut self, t: impl Into<String>) -> Self {
        self.content_type = Some(t.into());
        self
    }

    /// All text of the message's text contents, concatenated.
    pub fn text_content(&self) -> String {
        let mut s = String::new();
        for c in &self.content {
            if let Content::Text(t) = c {
                s.push_str(t);
            }
        }
        s
    }

    /// Approximate UTF-8 size of the message (header fields and every string it holds),
    /// used for the byte limits. Tool schemas count by their serialized JSON size.
    pub fn byte_size(&self) -> usize {
        let opt = |o: &Option<String>| o.as_ref().map_or(0, |s| s.len());
        let ns = |t: &Option<BTreeMap<String, ToolNamespaceConfig>>| {
            t.as_ref().map_or(0, |m| {
                m.values()
                    .map(|n| {
                        n.name.len()
                            + opt(&n.description)
                            + n.tools
                                .iter()
                                .map(|t| {
                                    t.name.len()
                                        + t.description.len()
                                        + t.parameters.as_ref().map_or(0, json_size)
                                })
                                .sum::<usize>()
                    })
                    .sum()
            })
        };
        let mut n = opt(&self.author.name) + opt(&self.channel) + opt(&self.recipient) + opt(&self.content_type);
        for c in &self.content {
            n += match c {
                Content::Text(t) => t.len(),
                Content::System(s) => {
                    opt(&s.model_identity)
                        + opt(&s.conversation_start_date)
                        + opt(&s.knowledge_cutoff)
                        + s.channel_config.as_ref().map_or(0, |c| {
                            c.valid_channels.iter().map(|v| v.len() + 2).sum()
                        })
                        + ns(&s.tools)
                }
                Content::Developer(d) => opt(&d.instructions) + ns(&d.tools),
            };
        }
        n
    }
}

/// Serialized size of a JSON value, computed without allocating the serialization.
pub fn json_size(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|x| json_size(x) + 1).sum::<usize>(),
        Value::Object(o) => 2 + o.iter().map(|(k, x)| k.len() + 4 + json_size(x)).sum::<usize>(),
    }
}
