//! The lenient header rules: what a header means when the reference's rules fail or
//! misparse it (roles glued or unknown, fields in any order or repeated, a missing
//! `<|message|>` whose text follows the header words). Every deviation is reported as a
//! repair. Works on the items of `header_lex`.

use super::header::{ParsedHeader, CONSTRAIN_MARK, CONTENT_TYPE_WORDS, KNOWN_CHANNELS};
use super::header_lex::{lex_header, ItemKind};
use super::RepairKind;
use crate::chat::{Author, Role};

/// Result of the lenient header parser.
pub(super) struct LenientHeader {
    pub(super) header: ParsedHeader,
    pub(super) repairs: Vec<(RepairKind, String)>,
    /// Byte offset in the header string where text starts (missing-`<|message|>` mode).
    pub(super) content_start: Option<usize>,
}

/// A role word split into (role, author name, repair, glued channel).
type RoleWord = (Role, Option<String>, Option<RepairKind>, Option<String>);

/// Splits a role word: exact role, `role:name`, doubled role or role glued to a channel.
fn split_role_word(w: &str) -> Option<RoleWord> {
    if let Some(r) = Role::parse(w) {
        return Some((r, None, None, None));
    }
    if let Some((r, name)) = w.split_once(':') {
        if let Some(r) = Role::parse(r) {
            if !name.is_empty() {
                return Some((r, Some(name.to_string()), None, None));
            }
        }
    }
    for r in [
        Role::Assistant,
        Role::User,
        Role::System,
        Role::Developer,
        Role::Tool,
    ] {
        if let Some(rest) = w.strip_prefix(r.as_str()) {
            if rest == r.as_str() {
                return Some((r, None, Some(RepairKind::DoubledRole), None));
            }
            if KNOWN_CHANNELS.contains(&rest) {
                return Some((
                    r,
                    None,
                    Some(RepairKind::DoubledRole),
                    Some(rest.to_string()),
                ));
            }
        }
    }
    None
}

/// A header field set once: a repeated value is reported (`kind`) and the first one kept.
fn set_once(
    slot: &mut Option<String>,
    v: &str,
    kind: RepairKind,
    repairs: &mut Vec<(RepairKind, String)>,
) {
    match slot {
        None => *slot = Some(v.to_string()),
        Some(c) if c == v => repairs.push((kind, v.to_string())),
        Some(c) => repairs.push((kind, format!("kept {c:?}, dropped {v:?}"))),
    }
}

/// Lenient header parsing. `missing_message`: the header was ended by a stop token / EOS /
/// the size cap, so the first word that is not header-like starts the message text.
pub(super) fn lenient_header(h: &str, role: Option<Role>, missing_message: bool) -> LenientHeader {
    let items = lex_header(h);
    let mut repairs: Vec<(RepairKind, String)> = Vec::new();
    let mut hd = ParsedHeader::new(role.unwrap_or(Role::Assistant));
    let mut i = 0;
    let mut glued_channel: Option<String> = None;
    // 1. role
    let first_word = items
        .first()
        .filter(|it| it.kind == ItemKind::Word)
        .map(|it| &h[it.start..it.end]);
    match role {
        Some(r) => {
            if let Some(w) = first_word {
                if w == r.as_str() {
                    i = 1;
                } else if let Some((r2, _, Some(kind), ch)) = split_role_word(w) {
                    if r2 == r {
                        i = 1;
                        repairs.push((kind, w.to_string()));
                        glued_channel = ch;
                    }
                }
            }
        }
        None => match first_word.map(|w| (w, split_role_word(w))) {
            Some((w, Some((r, name, kind, ch)))) => {
                i = 1;
                hd.author.role = r;
                hd.author.name = if r == Role::Tool {
                    Some(name.unwrap_or_else(|| w.to_string()))
                } else {
                    name
                };
                if let Some(k) = kind {
                    repairs.push((k, w.to_string()));
                }
                glued_channel = ch;
            }
            Some((w, None)) if !missing_message && !w.starts_with("to=") => {
                i = 1;
                hd.author = Author {
                    role: Role::Tool,
                    name: Some(w.to_string()),
                };
                if !w.contains('.') {
                    repairs.push((RepairKind::UnknownRole, w.to_string()));
                }
            }
            _ => repairs.push((RepairKind::MissingRole, String::new())),
        },
    }
    // 2. the rest
    let mut saw_empty_channel = false;
    let mut extra: Vec<&str> = Vec::new();
    let mut later: Vec<&str> = Vec::new();
    let mut content_start = None;
    while i < items.len() {
        let it = items[i];
        let text = &h[it.start..it.end];
        match it.kind {
            ItemKind::Channel => {
                let v = &h[it.value_start..it.end];
                if v.is_empty() {
                    saw_empty_channel = true;
                } else {
                    set_once(
                        &mut hd.channel,
                        v,
                        RepairKind::DuplicateChannel,
                        &mut repairs,
                    );
                }
            }
            ItemKind::Constrain => {
                if missing_message && hd.content_type.is_some() {
                    content_start = Some(it.start);
                    break;
                }
                if hd.content_type.is_none() {
                    hd.content_type = Some(text.to_string());
                } else {
                    extra.push(text);
                }
            }
            ItemKind::Special => {
                if missing_message {
                    content_start = Some(it.start);
                    break;
                }
                extra.push(text);
            }
            ItemKind::Word => {
                if let Some(r) = text.strip_prefix("to=") {
                    let mut r = r;
                    if r.is_empty() {
                        if let Some(next) = items.get(i + 1).filter(|n| n.kind == ItemKind::Word) {
                            r = &h[next.start..next.end];
                            i += 1;
                        }
                    }
                    if !r.is_empty() {
                        set_once(
                            &mut hd.recipient,
                            r,
                            RepairKind::DuplicateRecipient,
                            &mut repairs,
                        );
                    }
                } else if missing_message {
                    if saw_empty_channel && hd.channel.is_none() && KNOWN_CHANNELS.contains(&text) {
                        hd.channel = Some(text.to_string());
                    } else {
                        content_start = Some(it.start);
                        break;
                    }
                } else if hd.channel.is_none() && KNOWN_CHANNELS.contains(&text) {
                    hd.channel = Some(text.to_string());
                    if !saw_empty_channel {
                        repairs.push((
                            RepairKind::ExtraHeaderWords,
                            format!("channel {text:?} without <|channel|>"),
                        ));
                    }
                } else {
                    later.push(text);
                }
            }
        }
        i += 1;
    }
    for w in later {
        if hd.content_type.is_none() && CONTENT_TYPE_WORDS.contains(&w) {
            hd.content_type = Some(w.to_string());
        } else if hd.recipient.is_none() && w.contains('.') {
            hd.recipient = Some(w.to_string());
        } else {
            extra.push(w);
        }
    }
    if let Some(ch) = glued_channel {
        if hd.channel.is_none() {
            hd.channel = Some(ch);
        }
    }
    if saw_empty_channel {
        repairs.push((RepairKind::EmptyChannel, String::new()));
    }
    if !extra.is_empty() {
        repairs.push((RepairKind::ExtraHeaderWords, extra.join(" ")));
    }
    LenientHeader {
        header: hd,
        repairs,
        content_start,
    }
}

/// Whether text found between messages starts like a header (a role word or `<|channel|>`).
pub(super) fn looks_like_header(s: &str) -> bool {
    match lex_header(s).first() {
        Some(it) if it.kind == ItemKind::Channel => true,
        Some(it) if it.kind == ItemKind::Word => split_role_word(&s[it.start..it.end]).is_some(),
        _ => false,
    }
}

/// Whether a header the reference parsed is a misparse that the lenient parser redoes.
pub(super) fn suspicious(h: &ParsedHeader) -> bool {
    let has_marker = |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains("<|"));
    has_marker(&h.channel)
        || has_marker(&h.recipient)
        || has_marker(&h.author.name)
        || h.recipient.as_deref() == Some("")
        || h.content_type
            .as_deref()
            .is_some_and(|c| c.strip_prefix(CONSTRAIN_MARK).unwrap_or(c).contains("<|"))
}

/// The lenient fix of the reference's lone content type parsed as a recipient.
pub(super) fn fix_lone_content_type(h: &mut ParsedHeader) {
    if h.content_type.is_none() {
        if let Some(r) = &h.recipient {
            if r.starts_with(CONSTRAIN_MARK) || CONTENT_TYPE_WORDS.contains(&r.as_str()) {
                h.content_type = h.recipient.take();
            }
        }
    }
}
