//! Message headers: [`ParsedHeader`], which headers are tool calls ([`tool_call_of`]), and the
//! reference's header rules ([`ref_parse_header`], used by the strict and non-strict modes and
//! tried first by the lenient one). The lenient rules are in `header_lex` and `header_lenient`.

use crate::chat::{Author, Role};

pub(super) const CHANNEL_MARK: &str = "<|channel|>";
pub(super) const CONSTRAIN_MARK: &str = "<|constrain|>";
pub(super) const KNOWN_CHANNELS: [&str; 3] = ["analysis", "commentary", "final"];
pub(super) const CONTENT_TYPE_WORDS: [&str; 2] = ["json", "code"];
const NOT_CALL_RECIPIENTS: [&str; 5] = ["assistant", "user", "all", "system", "developer"];

/// A message header: author, recipient, channel and content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    pub author: Author,
    pub recipient: Option<String>,
    pub channel: Option<String>,
    pub content_type: Option<String>,
}

impl ParsedHeader {
    pub(super) fn new(role: Role) -> Self {
        ParsedHeader {
            author: Author::new(role),
            recipient: None,
            channel: None,
            content_type: None,
        }
    }
}

/// The tool-call name of a message's header, if it is a call.
pub fn tool_call_of(h: &ParsedHeader) -> Option<(&str, &str)> {
    if h.author.role != Role::Assistant {
        return None;
    }
    let r = h.recipient.as_deref()?;
    if r.is_empty() || r.starts_with("<|") || NOT_CALL_RECIPIENTS.contains(&r) {
        return None;
    }
    Some((r.strip_prefix("functions.").unwrap_or(r), r))
}

/// The length of the word at the start of `s`: up to whitespace or a `<` (where a
/// `<|channel|>` value or a `<|constrain|>` word ends, in both rule sets).
pub(super) fn word_len(s: &str) -> usize {
    s.find(|c: char| c.is_whitespace() || c == '<')
        .unwrap_or(s.len())
}

/// The reference's header-string parsing. Returns the header and the leftover words (joined by
/// one space), or the reference's error text.
pub(super) fn ref_parse_header(
    header: &str,
    role: Option<Role>,
    parse_recipient_and_type: bool,
) -> std::result::Result<(ParsedHeader, Option<String>), String> {
    let mut h: String = header.to_string();
    let mut channel = None;
    if let Some(idx) = h.find(CHANNEL_MARK) {
        let after = &h[idx + CHANNEL_MARK.len()..];
        let end = word_len(after);
        if end == 0 {
            return Err("channel marker present but no channel value found in header".into());
        }
        channel = Some(after[..end].to_string());
        h = format!("{}{}", &h[..idx], &after[end..]);
    }
    let mut h = h.trim().to_string();
    if h.contains(CONSTRAIN_MARK) {
        h = h
            .replace(CONSTRAIN_MARK, " <|constrain|>")
            .trim()
            .to_string();
    }
    let mut parts: Vec<&str> = h.split_ascii_whitespace().collect();
    let mut role_word: Option<String> = None;
    let role = match role {
        Some(r) => r,
        None => {
            let first = *parts
                .first()
                .ok_or_else(|| "message header did not contain a role".to_string())?;
            role_word = Some(first.to_string());
            match Role::parse(first) {
                Some(r) => r,
                None => {
                    if parts.len() > 1 || first.starts_with("to=") {
                        parts.remove(0);
                        Role::Tool
                    } else {
                        return Err(format!("Unknown role: {first}"));
                    }
                }
            }
        }
    };
    if parts.first() == Some(&role.as_str()) {
        parts.remove(0);
    }
    let mut recipient = None;
    let mut content_type = None;
    if parse_recipient_and_type && !parts.is_empty() {
        let n = parts.len();
        let last = parts.pop().unwrap_or_default();
        if let Some(r) = last.strip_prefix("to=") {
            recipient = Some(r.to_string());
        } else if n == 1 {
            // (0.0.8 reads a lone `<|constrain|>json` as a recipient too)
            recipient = Some(last.to_string());
        } else {
            content_type = Some(last.to_string());
            if let Some(r) = parts.pop() {
                recipient = Some(r.strip_prefix("to=").unwrap_or(r).to_string());
            }
        }
    }
    let rest = if parts.is_empty() {
        None
    } else {
        Some(parts.join(" "))
    };
    let name = if role == Role::Tool { role_word } else { None };
    Ok((
        ParsedHeader {
            author: Author { role, name },
            recipient,
            channel,
            content_type,
        },
        rest,
    ))
}
