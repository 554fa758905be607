//! Streaming parser of Harmony model output (token ids in, messages and events out).
//!
//! One [`StreamParser`] is fed ids one at a time or in batches ([`StreamParser::feed`]) and
//! does constant work per token: the current message's text is extended, never re-decoded or
//! re-encoded, and no JSON is produced (except by [`StreamParser::state_json`], on request).
//!
//! # Modes
//!
//! * [`Mode::Strict`]: openai-harmony 0.0.8's `StreamableParser(strict=True)`, bug for bug: the
//!   same messages, the same accessor values after every token, the same error (message text
//!   included) at the same token, and the same state after an error.
//! * [`Mode::NonStrict`]: the reference's `strict=False` (it only adds the "stop token inside a
//!   header" rescue of a first message when the role was given; it still raises otherwise).
//! * [`Mode::Lenient`]: never returns an error and never panics. On input that the reference
//!   parses without error it returns the same messages, except the documented deviations below
//!   (each one is a place where the reference silently loses text or misparses valid output).
//!   Everything else is repaired, and every repair is reported by an [`Event::Repair`] and marks
//!   its message in [`StreamParser::repaired`].
//! * [`Mode::Raw`]: no structure; every id's text (special tokens by name) is a content delta.
//!
//! # Lenient mode: documented outcomes
//!
//! `S` = `<|start|>`, `C` = `<|channel|>`, `M` = `<|message|>`, `K` = `<|constrain|>`,
//! `E`/`R`/`L` = `<|end|>`/`<|return|>`/`<|call|>`. Each row has a unit test (`lenient_*`).
//!
//! | input (model output)                                | reference (strict)            | lenient outcome                                                           | repair kinds |
//! |-----------------------------------------------------|-------------------------------|---------------------------------------------------------------------------|--------------|
//! | `S assistant to=functions.f C commentary K json M {..} L` | call                    | same: recipient `functions.f`, content type `<\|constrain\|>json`, ToolCall events | - |
//! | `S assistant C commentary to=functions.f K json M {..} L` | call                    | same (recipient after the channel)                                       | - |
//! | `S assistant C analysis to=functions.f M {..} L`    | call on analysis              | same; a tool call too                                                      | - |
//! | content type `K json`, `json`, `code`, none         | content type                  | same                                                                       | - |
//! | `S assistant C final K json M {..} R`               | recipient `<\|constrain\|>json` (misparse) | content type `<\|constrain\|>json`, no recipient (also a lone `json`/`code`) | - |
//! | `S assistant C final Hello E` (no `M`), role given  | message `Hello`               | same                                                                       | missing_message |
//! | the same without a given role, or a later message  | error / message silently lost | message `Hello` on channel `final`                                         | missing_message |
//! | `C final M Hi E` with no role (no `S`/role)          | error                         | assistant message `Hi`                                                     | missing_start, missing_role |
//! | `assistant C final M Hi E` after a message (no `S`)  | error                         | assistant message `Hi`                                                     | missing_start |
//! | `... E Hello S ...` (stray text between messages)    | error                         | `Hello` becomes its own assistant message (no channel)                     | stray_text |
//! | stray whitespace between messages                    | error                         | dropped (text in the repair's detail)                                      | stray_whitespace |
//! | `... E R` (`<\|return\|>` right after `<\|end\|>`)    | error                         | ignored; the stream's stop reason becomes `Return`                         | stray_token |
//! | `S S assistant ...` (double start)                  | error                         | second `S` ignored                                                         | double_start |
//! | `S assistant C analysis C analysis M ...`            | error                         | channel `analysis`                                                         | duplicate_channel |
//! | `... to=functions.f to=functions.g M` (doubled `to=`) | error                        | first recipient kept, the other in the detail                              | duplicate_recipient |
//! | `... to=functions.f L trailing text` (garbage after call) | error                   | the call, then a stray message `trailing text`; stream reason `Call`       | stray_text |
//! | `S robot M x E` (unknown role)                      | error                         | tool message with name `robot`                                             | unknown_role |
//! | `S assistantassistant C final M x E`                | error                         | assistant                                                                  | doubled_role |
//! | `S user:alice M hi E` (named author)                 | error                         | user message, author name `alice`                                          | - |
//! | `S assistant C M x E` (empty channel)                | error                         | no channel                                                                 | empty_channel |
//! | `S assistant C commentary ––commentary to=f M`      | error (leftover words)        | channel `commentary`, recipient `f`; extra words dropped from the header   | extra_header_words |
//! | `S assistant C ––commentary M x E`                  | channel `––commentary`        | same (custom channel names are kept verbatim)                              | - |
//! | unknown/out-of-range id in content                   | swallows the rest of the message | U+FFFD for that id, parsing goes on                                     | invalid_token |
//! | `<\|reserved_200013\|>`, `C`, `M`, `K` inside content | kept as their text       | same (text kept)                                                           | special_token_in_content |
//! | `S assistant C analysis M plan S assistant C final M Hi R` (no `E` before `S`) | `S`, the next header and its text kept as text | `plan` ends at `S` (`MessageDone` without stop token), then the message `Hi` on `final` | missing_end |
//! | `<\|endoftext\|>` inside content                     | kept as text                  | ends the message (stop token 199999, stream reason `EndOfText`)            | - |
//! | several tool calls in one stream                     | messages                      | same; `call_index` counts them                                             | - |
//! | truncated mid-header (`S assistant C fin`)           | error at EOS                  | message (channel `fin`, empty text), then `Incomplete{Truncated}`          | missing_message |
//! | truncated mid-content                                | message                       | same message, then `Incomplete{Truncated}` (or `Length` via `finish_length`) | - |
//! | header longer than `max_header_bytes`                | (no cap)                      | header text becomes content of an open message                            | header_too_long |
//! | content over `max_parsed_message_bytes`              | (no cap)                      | deltas go on; the retained message text stops at the cap                  | message_too_long |
//!
//! Other deviations from the reference in lenient mode (all on input the reference accepts):
//! the text of a message without `<|message|>` keeps its inner whitespace (the reference joins
//! words with one space), and leading `to=`/`<|constrain|>` words of such a header are header
//! fields; a `<|start|>` at the very beginning of a header is ignored (the reference makes
//! `<|start|>assistant` the recipient); a recipient or content type containing a special-token
//! name, or an empty `to=`, sends the header to the lenient header parser.
//!
//! # Events
//!
//! For every message: [`Event::MessageStart`] once its header is complete, then
//! [`Event::ContentDelta`]s (each one UTF-8 complete), then [`Event::MessageDone`]. A delta
//! is appended to the last event of the output when that is a delta of the same message (or
//! tool call): a batch ([`StreamParser::feed`]) holds one delta event per message part, not
//! one per token, and only the split of the text into deltas depends on the batching. A message
//! is a tool call when its author is the assistant and it has a recipient other than
//! `assistant`, `user`, `all`, `system`, `developer`: then [`Event::ToolCallStart`] follows the
//! `MessageStart`, [`Event::ToolCallDelta`]s replace the content deltas, and
//! [`Event::ToolCallDone`] precedes the `MessageDone` (tool results, `functions.x to=assistant`,
//! are not calls). [`StreamParser::finish`] ends the stream with [`Event::Done`] or
//! [`Event::Incomplete`].
//!
//! # Lossless guarantee (lenient mode)
//!
//! Let `E` be the concatenation, in event order, of every `MessageStart::raw_header`,
//! `ContentDelta::text`, `ToolCallDelta::arguments` and the `detail` of `stray_token` and
//! `stray_whitespace` repairs. Let `D` be the input decoded (special tokens by name, an
//! out-of-range id as U+FFFD, invalid UTF-8 replaced by U+FFFD per segment between the
//! structural tokens `<|start|>`, `<|message|>`, `<|end|>`, `<|return|>`, `<|call|>`,
//! `<|startoftext|>`, `<|endoftext|>`). With those seven names and all whitespace removed from
//! both, `E == D` (whitespace is only trimmed around the text of a message without
//! `<|message|>`). Content of well-formed messages is byte-exact.
//!
//! # Memory bounds
//!
//! * A header is never buffered past `Limits::max_header_bytes` (strict: `LimitExceeded`, the
//!   header is dropped; lenient: it becomes content). Text before a missing `<|start|>` is
//!   buffered at most [`ORPHAN_MAX_BYTES`] (or up to its first line break).
//! * The retained text of one message is at most `Limits::max_parsed_message_bytes` (strict:
//!   `LimitExceeded` and the message is abandoned; lenient/raw: the deltas go on, the retained
//!   text stops growing).
//! * Finished messages retained by [`StreamParser::messages`] total at most
//!   `Limits::max_parsed_total_bytes` plus one message (strict: `LimitExceeded`; lenient: the
//!   oldest messages are evicted, see [`StreamParser::first_message_index`]).
//! * The token history ([`StreamParser::tokens`]) keeps between `n` and `2n` most recent ids,
//!   `n` = [`DEFAULT_TOKEN_HISTORY`] unless set with [`StreamParser::set_token_history`]
//!   (0 keeps none). The reference keeps every id.

use crate::chat::{Author, Content, Message, Role};
use crate::error::{HarmonyError, Result};
use crate::limits::Limits;
use crate::tokenizer::{ids, tokenizer, Rank, N_BASE};

/// The replacement character used for undecodable bytes and unknown ids.
pub const REPLACEMENT: &str = "\u{FFFD}";
/// Default number of recent token ids retained by [`StreamParser::tokens`] (1 Mi ids, 4 MiB).
pub const DEFAULT_TOKEN_HISTORY: usize = 1 << 20;
/// Lenient mode: text outside any message (no `<|start|>`) is held as a possible header for at
/// most this many bytes (or until a line break) before it is streamed as a stray message.
pub const ORPHAN_MAX_BYTES: usize = 256;

const CHANNEL_MARK: &str = "<|channel|>";
const CONSTRAIN_MARK: &str = "<|constrain|>";
const KNOWN_CHANNELS: [&str; 3] = ["analysis", "commentary", "final"];
const CONTENT_TYPE_WORDS: [&str; 2] = ["json", "code"];
const NOT_CALL_RECIPIENTS: [&str; 5] = ["assistant", "user", "all", "system", "developer"];

/// Parsing mode; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Strict,
    NonStrict,
    Lenient,
    Raw,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::NonStrict => "non_strict",
            Mode::Lenient => "lenient",
            Mode::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "strict" => Mode::Strict,
            "non_strict" | "nonstrict" => Mode::NonStrict,
            "lenient" => Mode::Lenient,
            "raw" => Mode::Raw,
            _ => return None,
        })
    }

    fn is_reference(self) -> bool {
        matches!(self, Mode::Strict | Mode::NonStrict)
    }
}

/// Why a message or the stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// `<|return|>`: the final answer is complete.
    Return,
    /// `<|call|>`: a tool call is complete.
    Call,
    /// `<|end|>`: a message is complete (the turn may go on).
    End,
    /// `<|endoftext|>`.
    EndOfText,
    /// The caller cut generation (max tokens) mid-turn ([`StreamParser::finish_length`]).
    Length,
    /// The stream ended mid-message (EOS without a stop token).
    Truncated,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Return => "return",
            StopReason::Call => "call",
            StopReason::End => "end",
            StopReason::EndOfText => "end_of_text",
            StopReason::Length => "length",
            StopReason::Truncated => "truncated",
        }
    }

    /// The reason a stop token stands for.
    pub fn from_token(t: Rank) -> Option<StopReason> {
        Some(match t {
            ids::RETURN => StopReason::Return,
            ids::CALL => StopReason::Call,
            ids::END => StopReason::End,
            ids::ENDOFTEXT => StopReason::EndOfText,
            _ => return None,
        })
    }
}

/// What a lenient-mode repair did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepairKind {
    /// A header or message without `<|start|>` (text or `<|channel|>` between messages).
    MissingStart,
    /// A header ended by a stop token or EOS without `<|message|>`: its trailing words are text.
    MissingMessage,
    /// A `<|start|>` inside a message's content: the message ended there (its `<|end|>` was
    /// missing) and a new header starts.
    MissingEnd,
    /// A header without a role: the assistant is assumed.
    MissingRole,
    /// An unknown role word: the message is a tool message with that name.
    UnknownRole,
    /// A role word repeated (`assistantassistant`) or glued to a channel (`assistantfinal`).
    DoubledRole,
    /// `<|start|>` at the beginning of a header, ignored.
    DoubleStart,
    /// Text between messages: it became its own (assistant, channel-less) message.
    StrayText,
    /// Whitespace between messages, dropped (the detail holds it).
    StrayWhitespace,
    /// A stop or special token between messages, ignored (the detail holds its text).
    StrayToken,
    /// Several `<|channel|>` markers: the first value is kept.
    DuplicateChannel,
    /// `<|channel|>` without a value.
    EmptyChannel,
    /// Several recipients: the first is kept.
    DuplicateRecipient,
    /// Header words that are neither role, channel, recipient nor content type (dropped).
    ExtraHeaderWords,
    /// Header bytes that are not valid UTF-8 or ids outside the vocabulary (U+FFFD).
    InvalidHeaderText,
    /// An id outside the vocabulary in content: U+FFFD.
    InvalidToken,
    /// A special token inside content, kept as its text (`<|start|>`, `<|reserved_200013|>`).
    SpecialTokenInContent,
    /// A header over `max_header_bytes`: its text became content.
    HeaderTooLong,
    /// A message over `max_parsed_message_bytes`: the retained text was cut (deltas go on).
    MessageTooLong,
    /// Finished messages over `max_parsed_total_bytes`: the oldest were evicted.
    MessagesEvicted,
}

impl RepairKind {
    pub fn as_str(self) -> &'static str {
        use RepairKind::*;
        match self {
            MissingStart => "missing_start",
            MissingMessage => "missing_message",
            MissingEnd => "missing_end",
            MissingRole => "missing_role",
            UnknownRole => "unknown_role",
            DoubledRole => "doubled_role",
            DoubleStart => "double_start",
            StrayText => "stray_text",
            StrayWhitespace => "stray_whitespace",
            StrayToken => "stray_token",
            DuplicateChannel => "duplicate_channel",
            EmptyChannel => "empty_channel",
            DuplicateRecipient => "duplicate_recipient",
            ExtraHeaderWords => "extra_header_words",
            InvalidHeaderText => "invalid_header_text",
            InvalidToken => "invalid_token",
            SpecialTokenInContent => "special_token_in_content",
            HeaderTooLong => "header_too_long",
            MessageTooLong => "message_too_long",
            MessagesEvicted => "messages_evicted",
        }
    }
}

/// A parser event. `index` is the message's position in the whole stream (0-based, counting
/// evicted messages too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    MessageStart {
        index: usize,
        role: Role,
        /// Author name (a tool's name; `role:name` authors in lenient mode).
        name: Option<String>,
        channel: Option<String>,
        recipient: Option<String>,
        content_type: Option<String>,
        /// The header text as received (for logs and the lossless guarantee).
        raw_header: String,
    },
    ContentDelta {
        index: usize,
        text: String,
    },
    MessageDone {
        index: usize,
        /// The stop token that ended the message (`None` at EOS or when a repair ended it).
        stop_token: Option<Rank>,
    },
    ToolCallStart {
        index: usize,
        call_index: usize,
        /// The recipient without a `functions.` prefix.
        name: String,
        /// The full recipient (`functions.get_weather`, `browser.search`, `python`).
        recipient: String,
    },
    ToolCallDelta {
        index: usize,
        call_index: usize,
        arguments: String,
    },
    ToolCallDone {
        index: usize,
        call_index: usize,
    },
    Repair {
        /// The message concerned (`None` between messages).
        index: Option<usize>,
        kind: RepairKind,
        detail: String,
    },
    /// The stream ended cleanly after a message (reason: its stop token).
    Done {
        reason: StopReason,
    },
    /// The stream ended mid-message or was cut (`Length`/`Truncated`).
    Incomplete {
        reason: StopReason,
    },
}

/// A message header: author, recipient, channel and content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    pub author: Author,
    pub recipient: Option<String>,
    pub channel: Option<String>,
    pub content_type: Option<String>,
}

impl ParsedHeader {
    fn new(role: Role) -> Self {
        ParsedHeader {
            author: Author::new(role),
            recipient: None,
            channel: None,
            content_type: None,
        }
    }
}

/// The three states of the reference's parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    ExpectStart,
    Header,
    Content,
}

impl StateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::ExpectStart => "ExpectStart",
            StateKind::Header => "Header",
            StateKind::Content => "Content",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// UTF-8 decoding
// ---------------------------------------------------------------------------------------------

/// Pending undecoded bytes of the current message.
#[derive(Debug, Clone, Default)]
struct Dec {
    buf: Vec<u8>,
    start: usize,
    /// Reference modes: an id outside the vocabulary was seen; every later id of the message
    /// is swallowed and the message ends with one U+FFFD (the reference's behaviour).
    poisoned: bool,
}

impl Dec {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Lossy and complete: decodes everything except an incomplete trailing sequence.
    fn push_lossy(&mut self, bytes: &[u8], out: &mut String) {
        if self.start == self.buf.len() {
            if let Ok(s) = std::str::from_utf8(bytes) {
                out.push_str(s);
                return;
            }
        }
        self.buf.extend_from_slice(bytes);
        loop {
            let s = &self.buf[self.start..];
            match std::str::from_utf8(s) {
                Ok(v) => {
                    out.push_str(v);
                    self.start = self.buf.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: the prefix is valid UTF-8 by construction.
                    out.push_str(std::str::from_utf8(&s[..valid]).unwrap_or_default());
                    self.start += valid;
                    match e.error_len() {
                        Some(n) => {
                            out.push_str(REPLACEMENT);
                            self.start += n;
                        }
                        None => break,
                    }
                }
            }
        }
        self.compact();
    }

    /// Flushes pending bytes lossily (an incomplete sequence becomes U+FFFD).
    fn flush_lossy(&mut self, out: &mut String) {
        let p = self.pending();
        if !p.is_empty() {
            out.push_str(&String::from_utf8_lossy(p));
        }
        self.buf.clear();
        self.start = 0;
    }

    /// The reference's step: decode the pending bytes once; on an error emit the valid prefix
    /// and one U+FFFD and keep the rest for the next token. `segs` receives the end offsets
    /// (in `out`) of the pieces the reference re-encodes separately (not past 4 GiB).
    fn push_ref(&mut self, bytes: &[u8], out: &mut String, segs: &mut Vec<u32>) {
        let mut seg = |n: usize| {
            if let Ok(e) = u32::try_from(n) {
                segs.push(e);
            }
        };
        if self.start == self.buf.len() {
            if let Ok(v) = std::str::from_utf8(bytes) {
                out.push_str(v);
                seg(out.len());
                return;
            }
        }
        self.buf.extend_from_slice(bytes);
        let s = &self.buf[self.start..];
        match std::str::from_utf8(s) {
            Ok(v) => {
                out.push_str(v);
                seg(out.len());
                self.start = self.buf.len();
            }
            Err(e) => {
                let valid = e.valid_up_to();
                if valid > 0 {
                    out.push_str(std::str::from_utf8(&s[..valid]).unwrap_or_default());
                    seg(out.len());
                    self.start += valid;
                }
                if let Some(n) = e.error_len() {
                    out.push_str(REPLACEMENT);
                    seg(out.len());
                    self.start += n;
                }
            }
        }
        self.compact();
    }
}

/// Lossy decoding of header ids: returns the text, whether it was clean (valid UTF-8, no
/// unknown id), and the bytes of an incomplete trailing sequence when `keep_tail`.
fn decode_header(tokens: &[Rank], keep_tail: bool) -> (String, bool, Vec<u8>) {
    let tk = tokenizer();
    let mut dec = Dec::default();
    let mut out = String::new();
    let mut clean = true;
    for &t in tokens {
        match tk.token_bytes(t) {
            Some(b) => dec.push_lossy(b, &mut out),
            None => {
                clean = false;
                dec.flush_lossy(&mut out);
                out.push_str(REPLACEMENT);
            }
        }
    }
    clean = clean && tk.decode_utf8(tokens).is_ok();
    let tail = if keep_tail {
        dec.pending().to_vec()
    } else {
        dec.flush_lossy(&mut out);
        Vec::new()
    };
    (out, clean, tail)
}

// ---------------------------------------------------------------------------------------------
// Header parsing: the reference's algorithm
// ---------------------------------------------------------------------------------------------

/// The reference's header-string parsing. Returns the header and the leftover words (joined by
/// one space), or the reference's error text.
fn ref_parse_header(
    header: &str,
    role: Option<Role>,
    parse_recipient_and_type: bool,
) -> std::result::Result<(ParsedHeader, Option<String>), String> {
    let mut h: String = header.to_string();
    let mut channel = None;
    if let Some(idx) = h.find(CHANNEL_MARK) {
        let after = &h[idx + CHANNEL_MARK.len()..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '<')
            .unwrap_or(after.len());
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

// ---------------------------------------------------------------------------------------------
// Header parsing: lenient
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    /// `<|channel|>` and its value (the value may be empty).
    Channel,
    /// `<|constrain|>` and the word glued to it.
    Constrain,
    /// Any other special-token name.
    Special,
    Word,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    kind: ItemKind,
    start: usize,
    end: usize,
    /// For `Channel`: where the value starts.
    value_start: usize,
}

/// The length of a special-token name (`<|...|>`) at the start of `s`, if any.
fn special_at(s: &str) -> Option<usize> {
    if !s.starts_with("<|") {
        return None;
    }
    let close = s[2..].find("|>")? + 4;
    if close > 40 || s[2..close - 2].contains(|c: char| c.is_whitespace() || c == '<') {
        return None;
    }
    Some(close)
}

/// Splits a header string into items (whitespace is a separator; special-token names are
/// items of their own, except `<|constrain|>` which takes the word glued to it).
fn lex_header(h: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut i = 0;
    let b = h.as_bytes();
    while i < h.len() {
        let c = h[i..].chars().next().unwrap_or(' ');
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let word_end = |from: usize| -> usize {
            let rest = &h[from..];
            rest.find(|c: char| c.is_whitespace() || c == '<')
                .map_or(h.len(), |k| from + k)
        };
        if b[i] == b'<' {
            if h[i..].starts_with(CHANNEL_MARK) {
                let vs = i + CHANNEL_MARK.len();
                let end = word_end(vs);
                items.push(Item {
                    kind: ItemKind::Channel,
                    start: i,
                    end,
                    value_start: vs,
                });
                i = end;
                continue;
            }
            if h[i..].starts_with(CONSTRAIN_MARK) {
                let vs = i + CONSTRAIN_MARK.len();
                let end = word_end(vs);
                items.push(Item {
                    kind: ItemKind::Constrain,
                    start: i,
                    end,
                    value_start: vs,
                });
                i = end;
                continue;
            }
            if let Some(n) = special_at(&h[i..]) {
                items.push(Item {
                    kind: ItemKind::Special,
                    start: i,
                    end: i + n,
                    value_start: i,
                });
                i += n;
                continue;
            }
        }
        // A word: up to whitespace or the next special-token name.
        let mut j = i + c.len_utf8();
        while j < h.len() {
            let d = h[j..].chars().next().unwrap_or(' ');
            if d.is_whitespace() || (d == '<' && special_at(&h[j..]).is_some()) {
                break;
            }
            j += d.len_utf8();
        }
        items.push(Item {
            kind: ItemKind::Word,
            start: i,
            end: j,
            value_start: i,
        });
        i = j;
    }
    items
}

/// Result of the lenient header parser.
struct Lenient {
    header: ParsedHeader,
    repairs: Vec<(RepairKind, String)>,
    /// Byte offset in the header string where text starts (missing-`<|message|>` mode).
    content_start: Option<usize>,
}

/// Splits a role word: exact role, `role:name`, doubled role or role glued to a channel.
/// A role word split into (role, author name, repair, glued channel).
type RoleWord = (Role, Option<String>, Option<RepairKind>, Option<String>);

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

/// Lenient header parsing. `missing_message`: the header was ended by a stop token / EOS /
/// the size cap, so the first word that is not header-like starts the message text.
fn lenient_header(h: &str, role: Option<Role>, missing_message: bool) -> Lenient {
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
    let set_channel =
        |hd: &mut ParsedHeader, v: &str, repairs: &mut Vec<(RepairKind, String)>| match &hd.channel
        {
            None => hd.channel = Some(v.to_string()),
            Some(c) if c == v => repairs.push((RepairKind::DuplicateChannel, v.to_string())),
            Some(c) => repairs.push((
                RepairKind::DuplicateChannel,
                format!("kept {c:?}, dropped {v:?}"),
            )),
        };
    let set_recipient =
        |hd: &mut ParsedHeader, v: &str, repairs: &mut Vec<(RepairKind, String)>| match &hd
            .recipient
        {
            None => hd.recipient = Some(v.to_string()),
            Some(c) if c == v => repairs.push((RepairKind::DuplicateRecipient, v.to_string())),
            Some(c) => repairs.push((
                RepairKind::DuplicateRecipient,
                format!("kept {c:?}, dropped {v:?}"),
            )),
        };
    while i < items.len() {
        let it = items[i];
        let text = &h[it.start..it.end];
        match it.kind {
            ItemKind::Channel => {
                let v = &h[it.value_start..it.end];
                if v.is_empty() {
                    saw_empty_channel = true;
                } else {
                    set_channel(&mut hd, v, &mut repairs);
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
                        set_recipient(&mut hd, r, &mut repairs);
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
    Lenient {
        header: hd,
        repairs,
        content_start,
    }
}

/// Whether text found between messages starts like a header (a role word or `<|channel|>`).
fn looks_like_header(s: &str) -> bool {
    match lex_header(s).first() {
        Some(it) if it.kind == ItemKind::Channel => true,
        Some(it) if it.kind == ItemKind::Word => split_role_word(&s[it.start..it.end]).is_some(),
        _ => false,
    }
}

/// Whether a header the reference parsed is a misparse that the lenient parser redoes.
fn suspicious(h: &ParsedHeader) -> bool {
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
fn fix_lone_content_type(h: &mut ParsedHeader) {
    if h.content_type.is_none() {
        if let Some(r) = &h.recipient {
            if r.starts_with(CONSTRAIN_MARK) || CONTENT_TYPE_WORDS.contains(&r.as_str()) {
                h.content_type = h.recipient.take();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parser state
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct HeaderBuf {
    tokens: Vec<Rank>,
    bytes: usize,
    /// Lenient: text seen between messages without `<|start|>`.
    orphan: bool,
    /// Lenient: the orphan has a non-whitespace character / a line break.
    nonws: bool,
    newline: bool,
    /// Lenient: repairs already reported for this header.
    repaired: bool,
}

#[derive(Debug, Clone)]
struct Body {
    index: usize,
    header: ParsedHeader,
    call: Option<usize>,
    /// Retained text (`current_content`).
    text: String,
    /// Reference modes: end offsets in `text` of the pieces the reference re-encodes
    /// separately (for `content_tokens`); not recorded past 4 GiB.
    segs: Vec<u32>,
    truncated: bool,
    repaired: bool,
    /// Lenient: a message the reference would not have made (stray text, lost header):
    /// a `<|start|>` in its content ends it without a `missing_end` repair.
    stray: bool,
    /// Lenient: the message is text found between messages (it has no header at all).
    from_orphan: bool,
    dec: Dec,
}

#[derive(Debug, Clone)]
enum State {
    ExpectStart,
    Header(HeaderBuf),
    Content(Box<Body>),
}

/// Where the text of the last id (`last_content_delta`) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastDelta {
    None,
    /// In `StreamParser::last_delta`.
    Buf,
    /// The open message's retained text from this offset to its end.
    Text(usize),
}

/// The streaming parser. `Clone` is a cheap snapshot (restore by assignment).
#[derive(Debug, Clone)]
pub struct StreamParser {
    mode: Mode,
    limits: Limits,
    initial_role: Option<Role>,
    next_role: Option<Role>,
    state: State,
    /// Where `last_content_delta` is.
    last: LastDelta,
    /// A reused buffer (`last_content_delta` when `last` is `Buf`; scratch otherwise).
    last_delta: String,
    messages: Vec<Message>,
    repaired: Vec<bool>,
    evicted: usize,
    retained_bytes: usize,
    next_index: usize,
    calls: usize,
    tokens: Vec<Rank>,
    token_cap: usize,
    tokens_dropped: u64,
    last_stop: Option<Rank>,
    scratch: Vec<Event>,
    /// The bytes of a run of content tokens, decoded at once (see `content_run`).
    raw: Vec<u8>,
    /// Set during [`StreamParser::process`]: its events are discarded, so no delta events
    /// are built.
    discard_deltas: bool,
}

fn is_stop(t: Rank) -> bool {
    t == ids::RETURN || t == ids::END || t == ids::CALL
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

fn token_text(t: Rank) -> String {
    match tokenizer().token_bytes(t) {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => REPLACEMENT.to_string(),
    }
}

fn parse_err(s: impl Into<String>) -> HarmonyError {
    HarmonyError::Parse(s.into())
}

fn limit_err(limit: &'static str, cap: usize, actual: usize) -> HarmonyError {
    HarmonyError::LimitExceeded {
        limit,
        cap: cap as u64,
        actual: actual as u64,
    }
}

impl StreamParser {
    /// A parser expecting `<|start|>` (role `None`) or already inside the header of a message
    /// by `role` (the prompt ended with `<|start|>{role}`).
    pub fn new(role: Option<Role>, mode: Mode, limits: Limits) -> Self {
        StreamParser {
            mode,
            limits,
            initial_role: role,
            next_role: role,
            state: Self::initial_state(role, mode),
            last: LastDelta::None,
            last_delta: String::new(),
            messages: Vec::new(),
            repaired: Vec::new(),
            evicted: 0,
            retained_bytes: 0,
            next_index: 0,
            calls: 0,
            tokens: Vec::new(),
            token_cap: DEFAULT_TOKEN_HISTORY,
            tokens_dropped: 0,
            last_stop: None,
            scratch: Vec::new(),
            raw: Vec::new(),
            discard_deltas: false,
        }
    }

    fn initial_state(role: Option<Role>, mode: Mode) -> State {
        if mode == Mode::Raw {
            return State::Content(Box::new(Body {
                index: 0,
                header: ParsedHeader::new(Role::Assistant),
                call: None,
                text: String::new(),
                segs: Vec::new(),
                truncated: false,
                repaired: false,
                stray: false,
                from_orphan: false,
                dec: Dec::default(),
            }));
        }
        match role {
            Some(_) => State::Header(HeaderBuf::default()),
            None => State::ExpectStart,
        }
    }

    /// Back to the state right after [`new`](Self::new) (same role, mode, limits, history cap).
    pub fn reset(&mut self) {
        let cap = self.token_cap;
        *self = StreamParser::new(self.initial_role, self.mode, self.limits);
        self.token_cap = cap;
    }

    /// Number of recent ids kept by [`tokens`](Self::tokens) (between `n` and `2n`; 0: none).
    pub fn set_token_history(&mut self, n: usize) {
        self.token_cap = n;
        if n == 0 {
            self.tokens_dropped += self.tokens.len() as u64;
            self.tokens = Vec::new();
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    // ----- feeding ---------------------------------------------------------------------------

    /// Feeds ids, appending events to `out`. Strict modes stop at the first error (the events
    /// of the ids before it are in `out`). A text delta is appended to the last event of `out`
    /// when that is a delta of the same message (one delta event per message part and batch,
    /// not one per token; see [`Event`]).
    pub fn feed_into(&mut self, ids: &[Rank], out: &mut Vec<Event>) -> Result<()> {
        self.discard_deltas = false; // (in case a panic in `process` left it set)
        tokenizer().prefetch(ids);
        match self.mode {
            Mode::Strict | Mode::NonStrict => {
                for &t in ids {
                    self.step(t, out)?;
                }
            }
            // these never fail: the history is extended once per batch
            Mode::Lenient => {
                self.push_tokens(ids);
                let mut i = 0;
                while i < ids.len() {
                    let n = self.content_run(&ids[i..], out);
                    if n == 0 {
                        self.step_lenient(ids[i], out);
                        i += 1;
                    } else {
                        i += n;
                    }
                }
            }
            Mode::Raw => {
                self.push_tokens(ids);
                for &t in ids {
                    self.step_raw(t, out);
                }
            }
        }
        Ok(())
    }

    /// Feeds ids and returns their events.
    pub fn feed(&mut self, ids: &[Rank]) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        self.feed_into(ids, &mut out)?;
        Ok(out)
    }

    /// Feeds one id (the reference's `process`); events are discarded.
    pub fn process(&mut self, id: Rank) -> Result<()> {
        let mut out = std::mem::take(&mut self.scratch);
        self.discard_deltas = true;
        let r = self.step(id, &mut out);
        self.discard_deltas = false;
        out.clear();
        self.scratch = out;
        r
    }

    /// End of stream (the reference's `process_eos`); events are discarded.
    pub fn process_eos(&mut self) -> Result<()> {
        let mut out = Vec::new();
        self.eos(&mut out).map(|_| ())
    }

    /// End of stream: closes the open message and appends [`Event::Done`] or
    /// [`Event::Incomplete`]. Strict modes fail inside a header, like the reference.
    pub fn finish(&mut self) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        self.finish_into(false, &mut out)?;
        Ok(out)
    }

    /// Like [`finish`](Self::finish) for a stream the caller cut (max tokens): unless the
    /// last message ended the turn (`<|return|>`, `<|call|>`, `<|endoftext|>`) the stream is
    /// `Incomplete { reason: Length }`.
    pub fn finish_length(&mut self) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        self.finish_into(true, &mut out)?;
        Ok(out)
    }

    /// [`finish`](Self::finish) / [`finish_length`](Self::finish_length) into `out`.
    pub fn finish_into(&mut self, length_cut: bool, out: &mut Vec<Event>) -> Result<()> {
        self.discard_deltas = false;
        let mid_message = self.eos(out)?;
        let turn_ended = matches!(
            self.last_stop,
            Some(ids::RETURN | ids::CALL | ids::ENDOFTEXT)
        );
        let ev = if mid_message || self.last_stop.is_none() {
            Event::Incomplete {
                reason: if length_cut {
                    StopReason::Length
                } else {
                    StopReason::Truncated
                },
            }
        } else if length_cut && !turn_ended {
            Event::Incomplete {
                reason: StopReason::Length,
            }
        } else {
            let reason = self
                .last_stop
                .and_then(StopReason::from_token)
                .unwrap_or(StopReason::End);
            Event::Done { reason }
        };
        out.push(ev);
        Ok(())
    }

    fn push_token(&mut self, t: Rank) {
        self.push_tokens(std::slice::from_ref(&t));
    }

    /// Appends ids to the history: the same result as pushing them one by one, each push
    /// dropping the oldest ids down to `token_cap` once `2 * token_cap` are held.
    #[inline]
    fn push_tokens(&mut self, ids: &[Rank]) {
        let cap = self.token_cap;
        let (l, m) = (self.tokens.len(), ids.len());
        if cap == 0 || m == 0 {
            self.tokens_dropped += if cap == 0 { m as u64 } else { 0 };
            return;
        }
        let new_len = if l + m < cap.saturating_mul(2) {
            l + m
        } else {
            // the first drop happens after `d` pushes, then one every `cap` pushes
            let d = cap.saturating_mul(2).saturating_sub(l).max(1);
            cap + (m - d) % cap
        };
        self.tokens_dropped += (l + m - new_len) as u64;
        if new_len <= m {
            self.tokens.clear();
            self.tokens.extend_from_slice(&ids[m - new_len..]);
        } else {
            self.tokens.drain(..l + m - new_len);
            self.tokens.extend_from_slice(ids);
        }
    }

    fn step(&mut self, t: Rank, out: &mut Vec<Event>) -> Result<()> {
        self.push_token(t);
        match self.mode {
            Mode::Raw => {
                self.step_raw(t, out);
                Ok(())
            }
            Mode::Lenient => {
                self.step_lenient(t, out);
                Ok(())
            }
            Mode::Strict | Mode::NonStrict => self.step_ref(t, out),
        }
    }

    /// Processes EOS; returns whether the stream ended mid-message.
    fn eos(&mut self, out: &mut Vec<Event>) -> Result<bool> {
        match self.mode {
            Mode::Strict | Mode::NonStrict => match &self.state {
                State::ExpectStart => Ok(false),
                State::Header(_) => Err(parse_err(
                    "Unexpected EOS while waiting for message header to complete",
                )),
                State::Content(_) => {
                    self.end_message(None, out)?;
                    Ok(true)
                }
            },
            Mode::Raw => {
                let mut text = String::new();
                if let State::Content(b) = &mut self.state {
                    b.dec.flush_lossy(&mut text);
                }
                self.emit_text(&text, out);
                self.last = LastDelta::None;
                let last = self.tokens.last().copied();
                let ended = last.is_some_and(|t| is_stop(t) || t == ids::ENDOFTEXT);
                if ended {
                    self.last_stop = last;
                }
                Ok(!ended)
            }
            Mode::Lenient => Ok(self.eos_lenient(out)),
        }
    }

    // ----- reference modes -------------------------------------------------------------------

    fn step_ref(&mut self, t: Rank, out: &mut Vec<Event>) -> Result<()> {
        match &mut self.state {
            State::ExpectStart => {
                if t == ids::START {
                    self.state = State::Header(HeaderBuf::default());
                    Ok(())
                } else {
                    Err(parse_err(format!(
                        "Unexpected token {t} while expecting start token {}",
                        ids::START
                    )))
                }
            }
            State::Header(h) => {
                if t == ids::MESSAGE {
                    let tokens = std::mem::take(&mut h.tokens);
                    self.state = State::ExpectStart;
                    let s = tokenizer()
                        .decode_utf8(&tokens)
                        .map_err(|_| parse_err("could not decode header"))?;
                    let (hdr, rest) =
                        ref_parse_header(&s, self.next_role, true).map_err(parse_err)?;
                    if rest.is_some() {
                        return Err(parse_err(format!(
                            "unexpected tokens remaining in message header: {rest:?}"
                        )));
                    }
                    self.next_role = None;
                    self.open_body(hdr, s, false, false, out);
                    Ok(())
                } else if self.mode == Mode::NonStrict && is_stop(t) {
                    if let Some(role) = self.next_role {
                        if !h.tokens.is_empty() {
                            let s = ref_decode_utf8(&h.tokens)?;
                            let (hdr, rest) =
                                ref_parse_header(&s, Some(role), false).map_err(parse_err)?;
                            self.open_body(hdr, s, false, false, out);
                            self.emit_text(rest.as_deref().unwrap_or_default(), out);
                            self.end_message(Some(t), out)?;
                        }
                    }
                    self.state = State::ExpectStart;
                    self.next_role = None;
                    self.last_stop = Some(t);
                    Ok(())
                } else {
                    h.tokens.push(t);
                    h.bytes += tokenizer().token_bytes(t).map_or(3, |b| b.len());
                    if h.bytes > self.limits.max_header_bytes {
                        let n = h.bytes;
                        self.state = State::ExpectStart;
                        return Err(limit_err("header bytes", self.limits.max_header_bytes, n));
                    }
                    Ok(())
                }
            }
            State::Content(b) => {
                if is_stop(t) {
                    return self.end_message(Some(t), out);
                }
                self.last = LastDelta::None;
                if b.dec.poisoned {
                    return Ok(());
                }
                let Some(bytes) = tokenizer().token_bytes(t) else {
                    b.dec.poisoned = true;
                    return Ok(());
                };
                // decoded straight into the retained text (the body is dropped on the error
                // below), which then holds `last_content_delta`: no allocation per token
                let base = b.text.len();
                b.dec.push_ref(bytes, &mut b.text, &mut b.segs);
                let n = b.text.len();
                if n == base {
                    return Ok(());
                }
                let cap = self.limits.max_parsed_message_bytes;
                if n > cap {
                    self.state = State::ExpectStart;
                    return Err(limit_err("parsed message bytes", cap, n));
                }
                self.last = LastDelta::Text(base);
                if !self.discard_deltas {
                    push_delta(out, b.index, b.call, &b.text[base..]);
                }
                Ok(())
            }
        }
    }

    // ----- raw mode --------------------------------------------------------------------------

    fn step_raw(&mut self, t: Rank, out: &mut Vec<Event>) {
        if is_stop(t) || t == ids::ENDOFTEXT {
            self.last_stop = Some(t);
        }
        // `last_delta` is only scratch here (raw mode has no `last_content_delta`)
        self.last = LastDelta::None;
        let State::Content(b) = &mut self.state else {
            return;
        };
        let delta = &mut self.last_delta;
        delta.clear();
        match tokenizer().token_bytes(t) {
            Some(bytes) => b.dec.push_lossy(bytes, delta),
            None => {
                b.dec.flush_lossy(delta);
                delta.push_str(REPLACEMENT);
            }
        }
        if delta.is_empty() {
            return;
        }
        retain(b, delta, self.limits.max_parsed_message_bytes, false);
        if !self.discard_deltas {
            push_delta(out, 0, None, delta);
        }
    }

    // ----- lenient mode ----------------------------------------------------------------------

    fn repair(
        &mut self,
        index: Option<usize>,
        kind: RepairKind,
        detail: impl Into<String>,
        out: &mut Vec<Event>,
    ) {
        out.push(Event::Repair {
            index,
            kind,
            detail: detail.into(),
        });
    }

    fn step_lenient(&mut self, t: Rank, out: &mut Vec<Event>) {
        let tk = tokenizer();
        match &mut self.state {
            State::ExpectStart => {
                self.last = LastDelta::None;
                match t {
                    ids::START => self.state = State::Header(HeaderBuf::default()),
                    ids::MESSAGE => {
                        let idx = self.next_index;
                        let role = self.next_role.take().unwrap_or(Role::Assistant);
                        self.repair(
                            Some(idx),
                            RepairKind::MissingStart,
                            "<|message|> without a header",
                            out,
                        );
                        self.open_body(ParsedHeader::new(role), String::new(), true, true, out);
                    }
                    ids::CHANNEL | ids::CONSTRAIN => self.orphan_push(t, out),
                    _ if is_stop(t) || t == ids::ENDOFTEXT => {
                        self.last_stop = Some(t);
                        self.repair(None, RepairKind::StrayToken, token_text(t), out);
                    }
                    _ if tk.is_special(t) || tk.token_bytes(t).is_none() => {
                        self.repair(None, RepairKind::StrayToken, token_text(t), out);
                    }
                    _ => self.orphan_push(t, out),
                }
            }
            State::Header(h) => match t {
                ids::MESSAGE => {
                    let h = std::mem::take(h);
                    self.lenient_message_token(h, out);
                }
                ids::START => {
                    if h.tokens.is_empty() {
                        h.repaired = true;
                        let idx = self.next_index;
                        self.repair(Some(idx), RepairKind::DoubleStart, "", out);
                    } else {
                        let h = std::mem::take(h);
                        self.header_without_message(h, None, out);
                        self.state = State::Header(HeaderBuf::default());
                    }
                }
                _ if is_stop(t) || t == ids::ENDOFTEXT => {
                    let h = std::mem::take(h);
                    self.last_stop = Some(t);
                    if h.tokens.is_empty() {
                        self.state = State::ExpectStart;
                        self.next_role = None;
                        self.repair(None, RepairKind::StrayToken, token_text(t), out);
                    } else {
                        self.header_without_message(h, Some(t), out);
                    }
                }
                _ => {
                    let orphan = h.orphan;
                    if orphan {
                        self.orphan_push(t, out);
                    } else {
                        h.tokens.push(t);
                        h.bytes += tk.token_bytes(t).map_or(3, |b| b.len());
                        if h.bytes > self.limits.max_header_bytes {
                            let h = std::mem::take(h);
                            self.header_to_content(h, RepairKind::HeaderTooLong, out);
                        }
                    }
                }
            },
            State::Content(b) => {
                if is_stop(t) || t == ids::ENDOFTEXT {
                    let _ = self.end_message(Some(t), out);
                    return;
                }
                if t == ids::START {
                    // a `<|start|>` in content: the next message's header follows and this
                    // message's `<|end|>` is missing (messages the reference would not have
                    // made, stray text and lost headers, end here without a repair)
                    if !b.stray {
                        b.repaired = true;
                        out.push(Event::Repair {
                            index: Some(b.index),
                            kind: RepairKind::MissingEnd,
                            detail: String::new(),
                        });
                    }
                    let _ = self.end_message(None, out);
                    self.state = State::Header(HeaderBuf::default());
                    return;
                }
                let index = b.index;
                // decoded straight into the retained text, which then holds
                // `last_content_delta` (into the `last_delta` buffer once the text is cut)
                let base = b.text.len();
                let delta = if b.truncated {
                    self.last_delta.clear();
                    &mut self.last_delta
                } else {
                    &mut b.text
                };
                match tk.token_bytes(t) {
                    Some(bytes) => {
                        b.dec.push_lossy(bytes, delta);
                        if tk.is_special(t) {
                            b.repaired = true;
                            out.push(Event::Repair {
                                index: Some(index),
                                kind: RepairKind::SpecialTokenInContent,
                                detail: token_text(t),
                            });
                        }
                    }
                    None => {
                        b.dec.flush_lossy(delta);
                        delta.push_str(REPLACEMENT);
                        b.repaired = true;
                        out.push(Event::Repair {
                            index: Some(index),
                            kind: RepairKind::InvalidToken,
                            detail: t.to_string(),
                        });
                    }
                }
                if b.truncated {
                    self.emit_last_delta(out);
                    return;
                }
                let cap = self.limits.max_parsed_message_bytes;
                if b.text.len() > cap {
                    // over the cap: the retained text is cut (rare; the slow path)
                    let delta = b.text.split_off(base);
                    self.retain_and_emit(&delta, out);
                    return;
                }
                if b.text.len() == base {
                    self.last = LastDelta::None;
                    return;
                }
                self.last = LastDelta::Text(base);
                if !self.discard_deltas {
                    push_delta(out, index, b.call, &b.text[base..]);
                }
            }
        }
    }

    /// Lenient fast path of [`feed_into`](Self::feed_into): the leading ordinary (not special)
    /// ids of `ids` in the content of a message, decoded straight into its text with one
    /// delta event for the run. Returns how many ids it consumed (0: the per-token path
    /// [`step_lenient`](Self::step_lenient) takes the next id). The same outcome as stepping
    /// them one by one: it stops before an id whose text could cross the message cap.
    #[inline]
    fn content_run(&mut self, ids: &[Rank], out: &mut Vec<Event>) -> usize {
        let State::Content(b) = &mut self.state else {
            return 0;
        };
        if b.truncated {
            return 0;
        }
        let tk = tokenizer();
        let cap = self.limits.max_parsed_message_bytes;
        let start = b.text.len();
        let mut last = self.last;
        let mut n = 0;
        // Fast path: the bytes of up to RUN tokens are gathered and decoded at once, the
        // last token's separately (for `last_content_delta`). Decoding a byte stream gives the
        // same text wherever it is cut (an incomplete sequence waits for the next bytes
        // either way), so this equals the token-by-token loop below, which it leaves to
        // finish the run when the run might come near the cap: decoding yields at most 3
        // bytes per byte, pending ones (<= 3) included.
        const RUN: usize = 256;
        let budget = (cap.saturating_sub(start) / 3).checked_sub(b.dec.pending().len() + 3);
        if let Some(budget) = budget {
            let raw = &mut self.raw;
            raw.clear();
            let mut last_off = 0;
            for &t in &ids[..ids.len().min(RUN)] {
                let off = raw.len();
                if t >= N_BASE || !tk.append_ordinary(t, raw) {
                    break;
                }
                if raw.len() > budget {
                    raw.truncate(off);
                    break;
                }
                last_off = off;
                n += 1;
            }
            if n > 0 {
                if last_off > 0 {
                    b.dec.push_lossy(&raw[..last_off], &mut b.text);
                }
                let base = b.text.len();
                b.dec.push_lossy(&raw[last_off..], &mut b.text);
                last = if b.text.len() > base {
                    LastDelta::Text(base)
                } else {
                    LastDelta::None
                };
            }
            if raw.capacity() > 1 << 16 {
                *raw = Vec::new();
            }
        }
        if n == RUN {
            // the caller comes back for the rest
        } else {
            for &t in &ids[n..] {
                if t >= N_BASE {
                    break;
                }
                let Some(bytes) = tk.token_bytes(t) else {
                    break;
                };
                let base = b.text.len();
                if base + 3 * (bytes.len() + 3) > cap {
                    break;
                }
                b.dec.push_lossy(bytes, &mut b.text);
                last = if b.text.len() > base {
                    LastDelta::Text(base)
                } else {
                    LastDelta::None
                };
                n += 1;
            }
        }
        if n > 0 {
            self.last = last;
            if !self.discard_deltas {
                push_delta(out, b.index, b.call, &b.text[start..]);
            }
        }
        n
    }

    /// Lenient: a token of text between messages (no `<|start|>`).
    fn orphan_push(&mut self, t: Rank, out: &mut Vec<Event>) {
        if !matches!(&self.state, State::Header(h) if h.orphan) {
            self.state = State::Header(HeaderBuf {
                orphan: true,
                ..Default::default()
            });
        }
        let State::Header(h) = &mut self.state else {
            return;
        };
        let bytes = tokenizer().token_bytes(t).unwrap_or(REPLACEMENT.as_bytes());
        h.tokens.push(t);
        h.bytes += bytes.len();
        if bytes.iter().any(|c| !c.is_ascii_whitespace()) {
            h.nonws = true;
        }
        if bytes.contains(&b'\n') && h.nonws {
            h.newline = true;
        }
        if h.nonws && (h.newline || h.bytes > ORPHAN_MAX_BYTES.min(self.limits.max_header_bytes)) {
            let h = std::mem::take(h);
            self.header_to_content(h, RepairKind::StrayText, out);
        }
    }

    /// Lenient: `<|message|>` ends a header.
    fn lenient_message_token(&mut self, h: HeaderBuf, out: &mut Vec<Event>) {
        let idx = self.next_index;
        let (s, clean, _) = decode_header(&h.tokens, false);
        let role = self.next_role.take();
        let mut repaired = h.repaired;
        if h.orphan {
            self.repair(Some(idx), RepairKind::MissingStart, s.clone(), out);
            repaired = true;
        }
        if !clean {
            self.repair(Some(idx), RepairKind::InvalidHeaderText, "", out);
            repaired = true;
        }
        let mut parsed = None;
        if clean {
            if let Ok((mut hdr, None)) = ref_parse_header(&s, role, true) {
                fix_lone_content_type(&mut hdr);
                if !suspicious(&hdr) {
                    parsed = Some(hdr);
                }
            }
        }
        let hdr = match parsed {
            Some(h) => h,
            None => {
                let l = lenient_header(&s, role, false);
                for (k, d) in l.repairs {
                    repaired = true;
                    self.repair(Some(idx), k, d, out);
                }
                l.header
            }
        };
        self.open_body(hdr, s, repaired, h.orphan, out);
    }

    /// Lenient: a header that ended without `<|message|>` (stop token, EOS, `<|start|>`):
    /// header fields from its leading words, the rest is the text of a finished message.
    fn header_without_message(&mut self, h: HeaderBuf, stop: Option<Rank>, out: &mut Vec<Event>) {
        let idx = self.next_index;
        let (s, clean, _) = decode_header(&h.tokens, false);
        if h.orphan {
            self.next_role = None;
            if !h.nonws || s.trim().is_empty() {
                self.state = State::ExpectStart;
                self.repair(None, RepairKind::StrayWhitespace, s, out);
                return;
            }
            if !looks_like_header(&s) {
                self.repair(Some(idx), RepairKind::StrayText, "", out);
                self.open_body(
                    ParsedHeader::new(Role::Assistant),
                    String::new(),
                    true,
                    true,
                    out,
                );
                if let State::Content(b) = &mut self.state {
                    b.from_orphan = true;
                }
                self.retain_and_emit(&s, out);
                let _ = self.end_message(stop, out);
                return;
            }
            self.repair(Some(idx), RepairKind::MissingStart, "", out);
        }
        let role = self.next_role.take();
        let l = lenient_header(&s, role, true);
        self.repair(Some(idx), RepairKind::MissingMessage, "", out);
        if !clean {
            self.repair(Some(idx), RepairKind::InvalidHeaderText, "", out);
        }
        for (k, d) in l.repairs {
            self.repair(Some(idx), k, d, out);
        }
        let (head, text) = match l.content_start {
            Some(c) => (s[..c].to_string(), s[c..].trim_end().to_string()),
            None => (s, String::new()),
        };
        self.open_body(l.header, head, true, false, out);
        self.retain_and_emit(&text, out);
        let _ = self.end_message(stop, out);
    }

    /// Lenient: a header (or orphan text) that grew too long becomes an open message whose
    /// text streams from now on.
    fn header_to_content(&mut self, h: HeaderBuf, kind: RepairKind, out: &mut Vec<Event>) {
        let idx = self.next_index;
        let (s, _, tail) = decode_header(&h.tokens, true);
        self.repair(Some(idx), kind, "", out);
        let orphan = h.orphan && !looks_like_header(&s);
        if h.orphan && !orphan {
            self.repair(Some(idx), RepairKind::MissingStart, "", out);
        }
        let (hdr, head, text) = if orphan {
            self.next_role = None;
            (ParsedHeader::new(Role::Assistant), String::new(), s)
        } else {
            let role = self.next_role.take();
            let l = lenient_header(&s, role, true);
            for (k, d) in l.repairs {
                self.repair(Some(idx), k, d, out);
            }
            match l.content_start {
                Some(c) => (l.header, s[..c].to_string(), s[c..].to_string()),
                None => (l.header, s, String::new()),
            }
        };
        self.open_body(hdr, head, true, true, out);
        if let State::Content(b) = &mut self.state {
            b.dec.buf.extend_from_slice(&tail);
            b.from_orphan = orphan;
        }
        self.retain_and_emit(&text, out);
    }

    /// Lenient EOS; returns whether the stream ended mid-message.
    fn eos_lenient(&mut self, out: &mut Vec<Event>) -> bool {
        match std::mem::replace(&mut self.state, State::ExpectStart) {
            State::ExpectStart => false,
            State::Header(h) => {
                if h.tokens.is_empty() {
                    self.next_role = None;
                    return true;
                }
                let orphan = h.orphan;
                self.header_without_message(h, None, out);
                !orphan
            }
            State::Content(b) => {
                let orphan = b.from_orphan;
                self.state = State::Content(b);
                let _ = self.end_message(None, out);
                !orphan
            }
        }
    }

    // ----- shared ----------------------------------------------------------------------------

    fn open_body(
        &mut self,
        header: ParsedHeader,
        raw_header: String,
        repaired: bool,
        stray: bool,
        out: &mut Vec<Event>,
    ) {
        let index = self.next_index;
        self.next_index += 1;
        let call = tool_call_of(&header).map(|(name, recipient)| {
            let ci = self.calls;
            self.calls += 1;
            (ci, name.to_string(), recipient.to_string())
        });
        out.push(Event::MessageStart {
            index,
            role: header.author.role,
            name: header.author.name.clone(),
            channel: header.channel.clone(),
            recipient: header.recipient.clone(),
            content_type: header.content_type.clone(),
            raw_header,
        });
        if let Some((call_index, name, recipient)) = &call {
            out.push(Event::ToolCallStart {
                index,
                call_index: *call_index,
                name: name.clone(),
                recipient: recipient.clone(),
            });
        }
        self.state = State::Content(Box::new(Body {
            index,
            header,
            call: call.map(|c| c.0),
            text: String::new(),
            segs: Vec::new(),
            truncated: false,
            repaired,
            stray,
            from_orphan: false,
            dec: Dec::default(),
        }));
    }

    /// Emits text without touching `last_content_delta` (raw mode, reference end-of-message).
    fn emit_text(&mut self, text: &str, out: &mut Vec<Event>) {
        if text.is_empty() {
            return;
        }
        let State::Content(b) = &mut self.state else {
            return;
        };
        if self.mode == Mode::Raw {
            retain(b, text, self.limits.max_parsed_message_bytes, false);
            push_delta(out, 0, None, text);
        } else {
            retain(b, text, usize::MAX, true);
            push_delta(out, b.index, b.call, text);
        }
    }

    /// Lenient: retains (up to the cap) and emits `delta`; sets `last_content_delta`.
    fn retain_and_emit(&mut self, delta: &str, out: &mut Vec<Event>) {
        self.last_delta.clear();
        self.last_delta.push_str(delta);
        self.emit_last_delta(out);
    }

    /// Lenient: retains (up to the cap) and emits the text in `last_delta`, which becomes
    /// `last_content_delta` (none when it is empty).
    fn emit_last_delta(&mut self, out: &mut Vec<Event>) {
        let delta = self.last_delta.as_str();
        self.last = LastDelta::None;
        let State::Content(b) = &mut self.state else {
            return;
        };
        if delta.is_empty() {
            return;
        }
        self.last = LastDelta::Buf;
        let cap = self.limits.max_parsed_message_bytes;
        if retain(b, delta, cap, false) {
            b.repaired = true;
            out.push(Event::Repair {
                index: Some(b.index),
                kind: RepairKind::MessageTooLong,
                detail: format!("retained text cut at {cap} bytes"),
            });
        }
        if !self.discard_deltas {
            push_delta(out, b.index, b.call, delta);
        }
    }

    /// Ends the open message: flushes undecoded bytes, stores the message, emits the done
    /// events. Strict modes fail only on the total-bytes cap.
    fn end_message(&mut self, stop: Option<Rank>, out: &mut Vec<Event>) -> Result<()> {
        let State::Content(mut b) = std::mem::replace(&mut self.state, State::ExpectStart) else {
            return Ok(());
        };
        let mut tail = String::new();
        if self.mode.is_reference() && b.dec.poisoned {
            tail.push_str(REPLACEMENT);
        }
        b.dec.flush_lossy(&mut tail);
        let cap = if self.mode.is_reference() {
            usize::MAX
        } else {
            self.limits.max_parsed_message_bytes
        };
        if !tail.is_empty() {
            retain(&mut b, &tail, cap, self.mode.is_reference());
            push_delta(out, b.index, b.call, &tail);
        }
        self.last = LastDelta::None;
        if let Some(t) = stop {
            self.last_stop = Some(t);
        }
        if let Some(call_index) = b.call {
            out.push(Event::ToolCallDone {
                index: b.index,
                call_index,
            });
        }
        out.push(Event::MessageDone {
            index: b.index,
            stop_token: stop,
        });
        let Body {
            header,
            text,
            repaired,
            index,
            ..
        } = *b;
        let msg = Message {
            author: header.author,
            content: vec![Content::Text(text)],
            channel: header.channel,
            recipient: header.recipient,
            content_type: header.content_type,
        };
        self.store(msg, repaired, index, out)
    }

    fn store(
        &mut self,
        msg: Message,
        repaired: bool,
        index: usize,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        let size = msg.byte_size();
        let cap = self.limits.max_parsed_total_bytes;
        if self.mode.is_reference() && self.retained_bytes.saturating_add(size) > cap {
            return Err(limit_err(
                "parsed total bytes",
                cap,
                self.retained_bytes.saturating_add(size),
            ));
        }
        self.messages.push(msg);
        self.repaired.push(repaired);
        self.retained_bytes += size;
        if self.retained_bytes > cap {
            let target = cap - cap / 4;
            let mut n = 0;
            while self.retained_bytes > target && self.messages.len() - n > 1 {
                self.retained_bytes -= self.messages[n].byte_size();
                n += 1;
            }
            self.messages.drain(..n);
            self.repaired.drain(..n);
            self.evicted += n;
            out.push(Event::Repair {
                index: Some(index),
                kind: RepairKind::MessagesEvicted,
                detail: format!("{n} oldest messages evicted from the parser"),
            });
        }
        Ok(())
    }

    // ----- accessors -------------------------------------------------------------------------

    /// Finished messages (the oldest may have been evicted, see
    /// [`first_message_index`](Self::first_message_index)).
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Whether each of [`messages`](Self::messages) was repaired (lenient mode).
    pub fn repaired(&self) -> &[bool] {
        &self.repaired
    }

    /// Stream index of `messages()[0]` (the number of evicted messages).
    pub fn first_message_index(&self) -> usize {
        self.evicted
    }

    /// Bytes retained by the finished messages (`Message::byte_size` sum).
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }

    /// Takes the finished messages out of the parser (frees their memory).
    pub fn take_messages(&mut self) -> Vec<Message> {
        self.evicted += self.messages.len();
        self.retained_bytes = 0;
        self.repaired.clear();
        std::mem::take(&mut self.messages)
    }

    /// Recent ids fed (see [`set_token_history`](Self::set_token_history)).
    pub fn tokens(&self) -> &[Rank] {
        &self.tokens
    }

    /// Ids fed but no longer retained by [`tokens`](Self::tokens).
    pub fn tokens_dropped(&self) -> u64 {
        self.tokens_dropped
    }

    pub fn state(&self) -> StateKind {
        match &self.state {
            State::ExpectStart => StateKind::ExpectStart,
            State::Header(_) => StateKind::Header,
            State::Content(_) => StateKind::Content,
        }
    }

    /// The header ids buffered so far (Header state).
    pub fn header_tokens(&self) -> &[Rank] {
        match &self.state {
            State::Header(h) => &h.tokens,
            _ => &[],
        }
    }

    /// The open message's header (Content state).
    pub fn current_header(&self) -> Option<&ParsedHeader> {
        match &self.state {
            State::Content(b) if self.mode != Mode::Raw => Some(&b.header),
            _ => None,
        }
    }

    /// Stream index of the open message (Content state).
    pub fn current_index(&self) -> Option<usize> {
        match &self.state {
            State::Content(b) if self.mode != Mode::Raw => Some(b.index),
            _ => None,
        }
    }

    pub fn current_role(&self) -> Option<Role> {
        match self.current_header() {
            Some(h) => Some(h.author.role),
            None => self.next_role,
        }
    }

    pub fn current_channel(&self) -> Option<&str> {
        self.current_header().and_then(|h| h.channel.as_deref())
    }

    pub fn current_recipient(&self) -> Option<&str> {
        self.current_header().and_then(|h| h.recipient.as_deref())
    }

    pub fn current_content_type(&self) -> Option<&str> {
        self.current_header()
            .and_then(|h| h.content_type.as_deref())
    }

    /// The open message's text so far (decoded; undecodable bytes pending).
    pub fn current_content(&self) -> &str {
        match &self.state {
            State::Content(b) => &b.text,
            _ => "",
        }
    }

    /// Text produced by the last id (`None` if it produced none), as the reference.
    pub fn last_content_delta(&self) -> Option<&str> {
        match self.last {
            LastDelta::None => None,
            LastDelta::Buf => Some(&self.last_delta),
            LastDelta::Text(start) => match &self.state {
                State::Content(b) => b.text.get(start..),
                _ => None,
            },
        }
    }

    /// The reference's `content_tokens`: each decoded piece re-encoded on its own.
    pub fn content_tokens(&self) -> Vec<Rank> {
        let State::Content(b) = &self.state else {
            return Vec::new();
        };
        let tk = tokenizer();
        let mut out = Vec::new();
        let mut prev = 0;
        for &e in &b.segs {
            let e = e as usize;
            if e > prev
                && e <= b.text.len()
                && b.text.is_char_boundary(prev)
                && b.text.is_char_boundary(e)
            {
                tk.encode_ordinary_into(&b.text[prev..e], &mut out);
            }
            prev = e;
        }
        if prev < b.text.len() {
            tk.encode_ordinary_into(&b.text[prev..], &mut out);
        }
        out
    }

    /// The reference's `state` JSON (`{"state":"ExpectStart"}`, ...). Built on request only.
    pub fn state_json(&self) -> String {
        use serde_json::{json, Map, Value};
        let v = match &self.state {
            State::ExpectStart => json!({"state": "ExpectStart"}),
            State::Header(h) => json!({"state": "Header", "header_tokens": h.tokens}),
            State::Content(b) => {
                let mut author = Map::new();
                author.insert(
                    "role".into(),
                    Value::String(b.header.author.role.as_str().into()),
                );
                if let Some(n) = &b.header.author.name {
                    author.insert("name".into(), Value::String(n.clone()));
                }
                json!({
                    "state": "Content",
                    "header": {
                        "author": author,
                        "recipient": b.header.recipient,
                        "channel": b.header.channel,
                        "content_type": b.header.content_type,
                    },
                    "content_tokens": self.content_tokens(),
                })
            }
        };
        v.to_string()
    }
}

/// Emits a content (or, for a tool call, an argument) delta: appended to the last event of
/// `out` when that is a delta of the same message, so a batch never holds one event per token.
#[inline]
fn push_delta(out: &mut Vec<Event>, index: usize, call: Option<usize>, text: &str) {
    if text.is_empty() {
        return;
    }
    match (out.last_mut(), call) {
        (Some(Event::ContentDelta { index: i, text: t }), None) if *i == index => t.push_str(text),
        (
            Some(Event::ToolCallDelta {
                index: i,
                call_index: c,
                arguments,
            }),
            Some(ci),
        ) if *i == index && *c == ci => arguments.push_str(text),
        (_, None) => out.push(Event::ContentDelta {
            index,
            text: delta_string(text),
        }),
        (_, Some(call_index)) => out.push(Event::ToolCallDelta {
            index,
            call_index,
            arguments: delta_string(text),
        }),
    }
}

/// The string of a new delta event, with room for the next tokens of the batch.
fn delta_string(text: &str) -> String {
    let mut s = String::with_capacity(text.len().max(64));
    s.push_str(text);
    s
}

/// Appends to the retained text up to `cap` bytes (recording a re-encoding segment when
/// `seg`); returns true when it cut the text now.
fn retain(b: &mut Body, s: &str, cap: usize, seg: bool) -> bool {
    if b.truncated {
        return false;
    }
    let mut room = s.len();
    if b.text.len() + s.len() > cap {
        room = cap.saturating_sub(b.text.len());
        while room > 0 && !s.is_char_boundary(room) {
            room -= 1;
        }
        b.truncated = true;
    }
    b.text.push_str(&s[..room]);
    if seg {
        if let Ok(e) = u32::try_from(b.text.len()) {
            b.segs.push(e);
        }
    }
    b.truncated
}

/// The reference's `decode_utf8` errors (used by its non-strict header rescue).
fn ref_decode_utf8(tokens: &[Rank]) -> Result<String> {
    let tk = tokenizer();
    let mut bytes = Vec::new();
    for &t in tokens {
        match tk.token_bytes(t) {
            Some(b) => bytes.extend_from_slice(b),
            None => {
                return Err(parse_err(format!(
                    "Could not decode tokens: Invalid token error: Invalid token for decoding: {t}"
                )))
            }
        }
    }
    String::from_utf8(bytes).map_err(|e| {
        parse_err(format!(
            "Could not decode tokens: Invalid utf-8 sequence: {}",
            e.utf8_error()
        ))
    })
}

/// Parses a complete completion (the reference's `parse_messages_from_completion_tokens`):
/// feeds every id, then EOS, and returns the messages.
pub fn parse_completion(
    tokens: &[Rank],
    role: Option<Role>,
    mode: Mode,
    limits: Limits,
) -> Result<Vec<Message>> {
    let mut p = StreamParser::new(role, mode, limits);
    p.set_token_history(0);
    p.discard_deltas = true;
    let mut sink = Vec::new();
    for &t in tokens {
        p.step(t, &mut sink)?;
        sink.clear();
    }
    p.eos(&mut sink)?;
    Ok(p.take_messages())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const S: &str = "<|start|>assistant";

    fn toks(s: &str) -> Vec<Rank> {
        tokenizer().encode_with_special(s, |_| true)
    }

    fn run(mode: Mode, role: Option<Role>, ids: &[Rank]) -> (Vec<Event>, StreamParser) {
        let mut p = StreamParser::new(role, mode, Limits::default());
        let mut ev = p.feed(ids).expect("feed");
        ev.extend(p.finish().expect("finish"));
        (ev, p)
    }

    fn lenient(s: &str, role: Option<Role>) -> (Vec<Event>, StreamParser) {
        run(Mode::Lenient, role, &toks(s))
    }

    /// (role, name, channel, recipient, content type, text) of each message.
    type M = (
        Role,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );

    fn msgs(p: &StreamParser) -> Vec<M> {
        p.messages()
            .iter()
            .map(|m| {
                (
                    m.author.role,
                    m.author.name.clone(),
                    m.channel.clone(),
                    m.recipient.clone(),
                    m.content_type.clone(),
                    m.text_content(),
                )
            })
            .collect()
    }

    fn m(role: Role, ch: Option<&str>, to: Option<&str>, ct: Option<&str>, text: &str) -> M {
        (
            role,
            None,
            ch.map(Into::into),
            to.map(Into::into),
            ct.map(Into::into),
            text.into(),
        )
    }

    fn repairs(ev: &[Event]) -> Vec<RepairKind> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Repair { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect()
    }

    fn last(ev: &[Event]) -> &Event {
        ev.last().unwrap()
    }

    fn strict_msgs(s: &str, role: Option<Role>) -> Result<Vec<M>> {
        let mut p = StreamParser::new(role, Mode::Strict, Limits::default());
        p.feed(&toks(s))?;
        p.finish()?;
        Ok(msgs(&p))
    }

    use Role::{Assistant as A, Tool as T, User as U};

    // ----- golden vectors of the reference ------------------------------------------------

    fn message_dict(m: &Message) -> Value {
        let mut d = serde_json::Map::new();
        d.insert("role".into(), json!(m.author.role.as_str()));
        d.insert("name".into(), json!(m.author.name));
        d.insert(
            "content".into(),
            json!([{"type": "text", "text": m.text_content()}]),
        );
        if let Some(c) = &m.channel {
            d.insert("channel".into(), json!(c));
        }
        if let Some(c) = &m.recipient {
            d.insert("recipient".into(), json!(c));
        }
        if let Some(c) = &m.content_type {
            d.insert("content_type".into(), json!(c));
        }
        Value::Object(d)
    }

    fn dicts(ms: &[Message]) -> Value {
        Value::Array(ms.iter().map(message_dict).collect())
    }

    fn golden_rows() -> Vec<Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/third_party/harmony/goldens/parse.jsonl"
        );
        let text = std::fs::read_to_string(path).expect("goldens/parse.jsonl");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn row_input(row: &Value) -> (Vec<Rank>, Option<Role>) {
        let tokens: Vec<Rank> = row["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as Rank)
            .collect();
        let role = row["role"].as_str().map(|r| Role::parse(r).unwrap());
        (tokens, role)
    }

    /// Replays one reference record (per-token accessors, error position, messages).
    fn check_reference_row(row: &Value, mode: Mode) {
        let name = row["name"].as_str().unwrap_or("?");
        let (tokens, role) = row_input(row);
        // parse_messages_from_completion_tokens
        let res = parse_completion(&tokens, role, mode, Limits::unlimited());
        match (&row["result"], res) {
            (Value::Object(o), Err(e)) if o.contains_key("error") => {
                assert_eq!(
                    o["error"].as_str().unwrap(),
                    e.to_string(),
                    "{name}: result error"
                )
            }
            (Value::Array(_), Ok(ms)) => assert_eq!(row["result"], dicts(&ms), "{name}: result"),
            (want, got) => panic!("{name}: result {want} vs {got:?}"),
        }
        // streaming
        let mut p = StreamParser::new(role, mode, Limits::unlimited());
        let stream = row["stream"].as_array().unwrap();
        for (i, &t) in tokens.iter().enumerate() {
            if let Err(e) = p.process(t) {
                let se = &row["stream_error"];
                assert_eq!(
                    se["error"].as_str(),
                    Some(e.to_string().as_str()),
                    "{name}: error at {i}"
                );
                assert_eq!(se["at"].as_u64(), Some(i as u64), "{name}: error position");
                assert_eq!(
                    row["messages_at_error"],
                    dicts(p.messages()),
                    "{name}: messages at error"
                );
                return;
            }
            let want = &stream[i];
            let got = json!({
                "state": p.state().as_str(),
                "delta": p.last_content_delta(),
                "channel": p.current_channel(),
                "recipient": p.current_recipient(),
                "content_type": p.current_content_type(),
                "role": p.current_role().map(|r| r.as_str()),
                "content": p.current_content(),
            });
            assert_eq!(want, &got, "{name}: token {i}");
        }
        assert!(
            row["stream_error"].is_null(),
            "{name}: expected a stream error"
        );
        match (p.process_eos(), &row["messages_after_eos"]) {
            (Ok(()), want @ Value::Array(_)) => {
                assert_eq!(want, &dicts(p.messages()), "{name}: messages after eos")
            }
            (Err(e), Value::Object(o)) => assert_eq!(
                o["error"].as_str().unwrap(),
                e.to_string(),
                "{name}: eos error"
            ),
            (got, want) => panic!("{name}: eos {got:?} vs {want}"),
        }
    }

    #[test]
    fn golden_reference_strict_and_non_strict() {
        let rows = golden_rows();
        assert!(rows.len() >= 100, "{} rows", rows.len());
        for row in &rows {
            let mode = if row["strict"].as_bool().unwrap() {
                Mode::Strict
            } else {
                Mode::NonStrict
            };
            check_reference_row(row, mode);
        }
    }

    /// Golden rows where lenient mode intentionally differs from the reference's non-strict
    /// result (the reference loses text or misparses); each has its own unit test below.
    const LENIENT_DEVIATIONS: &[&str] = &[
        "final_constrain_json",
        "final_plain_json",
        "constrain_without_recipient_commentary",
        "channel_words_json_no_to",
        "constrain_twice",
        "missing_message_first",
        "missing_message_no_channel",
        "missing_message_second",
        "missing_message_then_valid",
        "role_given_but_start_present",
        "channel_then_recipient_then_channel",
        "to_with_space",
        "endoftext_in_content",
        "only_end_role_given",
        "start_token_in_content",
    ];

    #[test]
    fn golden_lenient_same_messages_where_the_reference_succeeds() {
        for row in golden_rows().iter().filter(|r| r["strict"] == json!(false)) {
            let name = row["name"].as_str().unwrap();
            let (tokens, role) = row_input(row);
            let res = parse_completion(&tokens, role, Mode::Lenient, Limits::default())
                .expect("lenient never fails");
            if row["result"].is_array() && !LENIENT_DEVIATIONS.contains(&name) {
                assert_eq!(row["result"], dicts(&res), "{name}");
            }
        }
    }

    // ----- lenient patterns (the table in the module documentation) -------------------------

    #[test]
    fn lenient_call_recipient_before_and_after_channel() {
        for s in [
            "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{\"a\":1}<|call|>",
            "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"a\":1}<|call|>",
        ] {
            let (ev, p) = lenient(s, None);
            assert_eq!(
                msgs(&p),
                vec![m(A, Some("commentary"), Some("functions.get_weather"), Some("<|constrain|>json"), "{\"a\":1}")]
            );
            assert!(ev.contains(&Event::ToolCallStart {
                index: 0,
                call_index: 0,
                name: "get_weather".into(),
                recipient: "functions.get_weather".into()
            }));
            let args: String = ev
                .iter()
                .filter_map(|e| match e {
                    Event::ToolCallDelta { arguments, .. } => Some(arguments.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(args, "{\"a\":1}");
            assert!(!ev.iter().any(|e| matches!(e, Event::ContentDelta { .. })));
            assert!(ev.contains(&Event::ToolCallDone { index: 0, call_index: 0 }));
            assert!(ev.contains(&Event::MessageDone { index: 0, stop_token: Some(ids::CALL) }));
            assert_eq!(last(&ev), &Event::Done { reason: StopReason::Call });
            assert!(repairs(&ev).is_empty());
            assert_eq!(p.repaired(), &[false]);
        }
    }

    #[test]
    fn lenient_call_on_analysis_and_content_types() {
        let cases = [
            (
                "<|channel|>analysis to=functions.f <|constrain|>json",
                Some("analysis"),
                Some("<|constrain|>json"),
            ),
            (
                "<|channel|>commentary to=functions.f json",
                Some("commentary"),
                Some("json"),
            ),
            (
                "<|channel|>analysis to=functions.f code",
                Some("analysis"),
                Some("code"),
            ),
            (
                "<|channel|>commentary to=functions.f",
                Some("commentary"),
                None,
            ),
        ];
        for (h, ch, ct) in cases {
            let (ev, p) = lenient(&format!("{S}{h}<|message|>{{}}<|call|>"), None);
            assert_eq!(
                msgs(&p),
                vec![m(A, ch, Some("functions.f"), ct, "{}")],
                "{h}"
            );
            assert!(
                ev.iter()
                    .any(|e| matches!(e, Event::ToolCallStart { name, .. } if name == "f")),
                "{h}"
            );
        }
    }

    #[test]
    fn lenient_tool_results_are_not_calls() {
        let s = "<|start|>functions.f to=assistant<|channel|>commentary<|message|>42<|end|>";
        let (ev, p) = lenient(s, None);
        assert_eq!(
            p.messages()[0].author,
            Author {
                role: T,
                name: Some("functions.f".into())
            }
        );
        assert!(!ev.iter().any(|e| matches!(e, Event::ToolCallStart { .. })));
        assert!(ev.contains(&Event::ContentDelta {
            index: 0,
            text: "42".into()
        }));
    }

    #[test]
    fn lenient_structured_output_content_type_not_recipient() {
        for (h, ct) in [
            ("<|channel|>final <|constrain|>json", "<|constrain|>json"),
            ("<|channel|>final json", "json"),
            (
                "<|channel|>commentary <|constrain|>json",
                "<|constrain|>json",
            ),
        ] {
            let s = format!("{S}{h}<|message|>{{\"a\":1}}<|return|>");
            let (ev, p) = lenient(&s, None);
            let ch = if h.contains("final") {
                "final"
            } else {
                "commentary"
            };
            assert_eq!(msgs(&p), vec![m(A, Some(ch), None, Some(ct), "{\"a\":1}")]);
            assert!(!ev.iter().any(|e| matches!(e, Event::ToolCallStart { .. })));
            assert!(repairs(&ev).is_empty());
            // strict keeps the reference's misparse
            assert_eq!(
                strict_msgs(&s, None).unwrap(),
                vec![m(A, Some(ch), Some(ct), None, "{\"a\":1}")]
            );
        }
        // two constrain words: the first is the content type
        let (ev, p) = lenient(
            &format!(
                "{S}<|channel|>final <|constrain|>json <|constrain|>response<|message|>{{}}<|end|>"
            ),
            None,
        );
        assert_eq!(
            msgs(&p),
            vec![m(A, Some("final"), None, Some("<|constrain|>json"), "{}")]
        );
        assert_eq!(repairs(&ev), vec![RepairKind::ExtraHeaderWords]);
    }

    #[test]
    fn lenient_missing_message_token() {
        // role given: same as the reference
        let (ev, p) = lenient("<|channel|>final Hello there<|end|>", Some(A));
        assert_eq!(
            msgs(&p),
            vec![m(A, Some("final"), None, None, "Hello there")]
        );
        assert_eq!(repairs(&ev), vec![RepairKind::MissingMessage]);
        assert_eq!(p.repaired(), &[true]);
        // no role given: the reference drops it
        let (_, p) = lenient(&format!("{S}<|channel|>final Hello there<|end|>"), None);
        assert_eq!(
            msgs(&p),
            vec![m(A, Some("final"), None, None, "Hello there")]
        );
        // refusal without channel
        let (_, p) = lenient(&format!("{S} I cannot help with that.<|end|>"), None);
        assert_eq!(
            msgs(&p),
            vec![m(A, None, None, None, "I cannot help with that.")]
        );
        // a later message (the reference silently loses it), inner whitespace kept
        let (_, p) = lenient(&format!("{S}<|channel|>analysis<|message|>ok<|end|>{S}<|channel|>final Hello\n  world<|return|>"), None);
        assert_eq!(
            msgs(&p),
            vec![
                m(A, Some("analysis"), None, None, "ok"),
                m(A, Some("final"), None, None, "Hello\n  world")
            ]
        );
        // then a valid message
        let (_, p) = lenient(
            &format!("{S}<|channel|>final Hello<|end|>{S}<|channel|>final<|message|>Hi<|end|>"),
            None,
        );
        assert_eq!(
            msgs(&p),
            vec![
                m(A, Some("final"), None, None, "Hello"),
                m(A, Some("final"), None, None, "Hi")
            ]
        );
        // a header ended by <|start|>
        let (ev, p) = lenient(
            &format!("{S}<|channel|>final Hello{S}<|channel|>final<|message|>Hi<|end|>"),
            None,
        );
        assert_eq!(
            msgs(&p),
            vec![
                m(A, Some("final"), None, None, "Hello"),
                m(A, Some("final"), None, None, "Hi")
            ]
        );
        assert!(ev.contains(&Event::MessageDone {
            index: 0,
            stop_token: None
        }));
    }

    #[test]
    fn lenient_missing_start_and_role() {
        let (ev, p) = lenient("<|channel|>final<|message|>Hi<|end|>", None);
        assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "Hi")]);
        assert_eq!(
            repairs(&ev),
            vec![RepairKind::MissingStart, RepairKind::MissingRole]
        );
        let (ev, p) = lenient(&format!("{S}<|channel|>analysis<|message|>a<|end|>assistant<|channel|>final<|message|>b<|return|>"), None);
        assert_eq!(
            msgs(&p),
            vec![
                m(A, Some("analysis"), None, None, "a"),
                m(A, Some("final"), None, None, "b")
            ]
        );
        assert_eq!(repairs(&ev), vec![RepairKind::MissingStart]);
        assert_eq!(p.repaired(), &[false, true]);
        assert_eq!(
            last(&ev),
            &Event::Done {
                reason: StopReason::Return
            }
        );
        // <|message|> with no header at all
        let (ev, p) = lenient(
            &format!("{S}<|channel|>analysis<|message|>a<|end|><|message|>b<|end|>"),
            None,
        );
        assert_eq!(msgs(&p)[1], m(A, None, None, None, "b"));
        assert_eq!(repairs(&ev), vec![RepairKind::MissingStart]);
        // missing <|start|> and <|message|>
        let (_, p) = lenient(
            &format!(
                "{S}<|channel|>analysis<|message|>a<|end|>assistant<|channel|>final Hi<|end|>"
            ),
            None,
        );
        assert_eq!(msgs(&p)[1], m(A, Some("final"), None, None, "Hi"));
    }

    #[test]
    fn lenient_stray_text_and_whitespace_between_messages() {
        let (ev, p) = lenient(&format!("{S}<|channel|>analysis<|message|>a<|end|>Hello{S}<|channel|>final<|message|>b<|end|>"), None);
        assert_eq!(
            msgs(&p),
            vec![
                m(A, Some("analysis"), None, None, "a"),
                m(A, None, None, None, "Hello"),
                m(A, Some("final"), None, None, "b")
            ]
        );
        assert_eq!(repairs(&ev), vec![RepairKind::StrayText]);
        assert_eq!(p.repaired(), &[false, true, false]);
        let (ev, p) = lenient(&format!("{S}<|channel|>analysis<|message|>a<|end|>\n\n{S}<|channel|>final<|message|>b<|end|>"), None);
        assert_eq!(p.messages().len(), 2);
        assert!(ev.contains(&Event::Repair {
            index: None,
            kind: RepairKind::StrayWhitespace,
            detail: "\n\n".into()
        }));
        // a long stray text streams before its end
        let long = "word ".repeat(100);
        let mut p = StreamParser::new(None, Mode::Lenient, Limits::default());
        let ev = p
            .feed(&toks(&format!(
                "{S}<|channel|>final<|message|>a<|end|>{long}"
            )))
            .unwrap();
        assert!(ev
            .iter()
            .any(|e| matches!(e, Event::ContentDelta { index: 1, .. })));
    }

    #[test]
    fn lenient_return_after_end_and_garbage_after_call() {
        let (ev, p) = lenient(
            &format!("{S}<|channel|>final<|message|>Hi<|end|><|return|>"),
            None,
        );
        assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "Hi")]);
        assert_eq!(repairs(&ev), vec![RepairKind::StrayToken]);
        assert_eq!(
            last(&ev),
            &Event::Done {
                reason: StopReason::Return
            }
        );
        let s = format!("{S}<|channel|>commentary to=functions.f <|constrain|>json<|message|>{{}}<|call|>trailing text");
        let (ev, p) = lenient(&s, None);
        assert_eq!(
            msgs(&p),
            vec![
                m(
                    A,
                    Some("commentary"),
                    Some("functions.f"),
                    Some("<|constrain|>json"),
                    "{}"
                ),
                m(A, None, None, None, "trailing text")
            ]
        );
        assert_eq!(repairs(&ev), vec![RepairKind::StrayText]);
        assert_eq!(
            last(&ev),
            &Event::Done {
                reason: StopReason::Call
            }
        );
    }

    #[test]
    fn lenient_double_start() {
        let (ev, p) = lenient(
            &format!("<|start|>{S}<|channel|>final<|message|>x<|end|>"),
            None,
        );
        assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
        assert_eq!(repairs(&ev), vec![RepairKind::DoubleStart]);
        // role given and the output repeats <|start|>assistant: not a recipient
        let (_, p) = lenient(&format!("{S}<|channel|>final<|message|>x<|end|>"), Some(A));
        assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
    }

    #[test]
    fn lenient_duplicated_channel_and_recipient() {
        let (ev, p) = lenient(
            &format!("{S}<|channel|>analysis<|channel|>analysis<|message|>x<|end|>"),
            None,
        );
        assert_eq!(msgs(&p), vec![m(A, Some("analysis"), None, None, "x")]);
        assert_eq!(repairs(&ev), vec![RepairKind::DuplicateChannel]);
        let (_, p) = lenient(&format!("{S}<|channel|>commentary to=functions.f<|channel|>commentary<|message|>{{}}<|call|>"), None);
        assert_eq!(
            msgs(&p),
            vec![m(A, Some("commentary"), Some("functions.f"), None, "{}")]
        );
        for h in [
            "<|channel|>commentary to=functions.f to=functions.g",
            " to=functions.f<|channel|>commentary to=functions.g",
        ] {
            let (ev, p) = lenient(&format!("{S}{h}<|message|>{{}}<|call|>"), None);
            assert_eq!(
                msgs(&p),
                vec![m(A, Some("commentary"), Some("functions.f"), None, "{}")],
                "{h}"
            );
            assert_eq!(repairs(&ev), vec![RepairKind::DuplicateRecipient]);
        }
        let (_, p) = lenient(
            &format!("{S}<|channel|>commentary to= functions.f<|message|>{{}}<|call|>"),
            None,
        );
        assert_eq!(
            msgs(&p),
            vec![m(A, Some("commentary"), Some("functions.f"), None, "{}")]
        );
    }

    #[test]
    fn lenient_roles() {
        let (ev, p) = lenient("<|start|>robot<|message|>x<|end|>", None);
        assert_eq!(
            p.messages()[0].author,
            Author {
                role: T,
                name: Some("robot".into())
            }
        );
        assert_eq!(repairs(&ev), vec![RepairKind::UnknownRole]);
        let (ev, p) = lenient("<|start|>functions.lookup<|message|>r<|end|>", None);
        assert_eq!(
            p.messages()[0].author,
            Author {
                role: T,
                name: Some("functions.lookup".into())
            }
        );
        assert!(repairs(&ev).is_empty());
        let (ev, p) = lenient(
            "<|start|>assistantassistant<|channel|>final<|message|>x<|end|>",
            None,
        );
        assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
        assert_eq!(repairs(&ev), vec![RepairKind::DoubledRole]);
        let (_, p) = lenient("<|start|>assistantfinal<|message|>x<|end|>", None);
        assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
        let (ev, p) = lenient("<|start|>user:alice<|message|>hi<|end|>", None);
        assert_eq!(
            p.messages()[0].author,
            Author {
                role: U,
                name: Some("alice".into())
            }
        );
        assert!(repairs(&ev).is_empty());
    }

    #[test]
    fn lenient_empty_channel_and_odd_words() {
        let (ev, p) = lenient(&format!("{S}<|channel|><|message|>x<|end|>"), None);
        assert_eq!(msgs(&p), vec![m(A, None, None, None, "x")]);
        assert_eq!(repairs(&ev), vec![RepairKind::EmptyChannel]);
        let (_, p) = lenient(&format!("{S}<|channel|> final<|message|>x<|end|>"), None);
        assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
        let (ev, p) = lenient(
            &format!("{S}<|channel|>commentary ––commentary to=functions.f<|message|>{{}}<|call|>"),
            None,
        );
        assert_eq!(
            msgs(&p),
            vec![m(A, Some("commentary"), Some("functions.f"), None, "{}")]
        );
        assert!(ev.contains(&Event::Repair {
            index: Some(0),
            kind: RepairKind::ExtraHeaderWords,
            detail: "––commentary".into()
        }));
        // accepted by the reference: kept verbatim (custom channel names too)
        let (ev, p) = lenient(&format!("{S}<|channel|>––commentary<|message|>x<|end|>{S}<|channel|>reasoning<|message|>y<|end|>"), None);
        assert_eq!(
            msgs(&p),
            vec![
                m(A, Some("––commentary"), None, None, "x"),
                m(A, Some("reasoning"), None, None, "y")
            ]
        );
        assert!(repairs(&ev).is_empty());
        let (ev, p) = lenient(
            &format!("{S}<|reserved_200010|><|channel|>final<|message|>x<|end|>"),
            None,
        );
        assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
        assert_eq!(repairs(&ev), vec![RepairKind::ExtraHeaderWords]);
        let (_, p) = lenient(&format!("{S}<|channel|>commentary to=functions.f <|constrain|>json json<|message|>{{}}<|call|>"), None);
        assert_eq!(
            msgs(&p),
            vec![m(
                A,
                Some("commentary"),
                Some("functions.f"),
                Some("<|constrain|>json"),
                "{}"
            )]
        );
    }

    #[test]
    fn lenient_invalid_ids_never_swallow() {
        let mut ids = toks(&format!("{S}<|channel|>final<|message|>a"));
        ids.push(999_999);
        ids.extend(toks("b<|end|>"));
        let (ev, p) = run(Mode::Lenient, None, &ids);
        assert_eq!(
            msgs(&p),
            vec![m(A, Some("final"), None, None, "a\u{FFFD}b")]
        );
        assert_eq!(repairs(&ev), vec![RepairKind::InvalidToken]);
        // strict: the reference swallows the rest of the message
        let (_, p) = run(Mode::Strict, None, &ids);
        assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "a\u{FFFD}")]);
        // between messages and in a header
        let mut ids = vec![201_089];
        ids.extend(toks(S));
        ids.push(u32::MAX);
        ids.extend(toks("<|channel|>final<|message|>x<|end|>"));
        let (ev, p) = run(Mode::Lenient, None, &ids);
        assert_eq!(p.messages().len(), 1);
        assert_eq!(p.messages()[0].text_content(), "x");
        assert!(repairs(&ev).contains(&RepairKind::StrayToken));
        assert!(repairs(&ev).contains(&RepairKind::InvalidHeaderText));
    }

    #[test]
    fn lenient_special_tokens_in_content_are_kept() {
        for sp in [
            "<|reserved_200013|>",
            "<|channel|>",
            "<|message|>",
            "<|constrain|>",
            "<|startoftext|>",
        ] {
            let (ev, p) = lenient(
                &format!("{S}<|channel|>final<|message|>a{sp}b<|end|>"),
                None,
            );
            assert_eq!(
                msgs(&p),
                vec![m(A, Some("final"), None, None, &format!("a{sp}b"))],
                "{sp}"
            );
            assert_eq!(repairs(&ev), vec![RepairKind::SpecialTokenInContent]);
        }
        // <|endoftext|> ends the message
        let (ev, p) = lenient(
            &format!("{S}<|channel|>final<|message|>a<|endoftext|>"),
            None,
        );
        assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "a")]);
        assert_eq!(
            last(&ev),
            &Event::Done {
                reason: StopReason::EndOfText
            }
        );
    }

    #[test]
    fn lenient_missing_end_before_start() {
        // gpt-oss sometimes omits <|end|> before the next message
        let body =
            format!("<|channel|>analysis<|message|>plan{S}<|channel|>final<|message|>Hi<|return|>");
        for (s, role) in [(format!("{S}{body}"), None), (body.clone(), Some(A))] {
            let (ev, p) = lenient(&s, role);
            assert_eq!(
                msgs(&p),
                vec![
                    m(A, Some("analysis"), None, None, "plan"),
                    m(A, Some("final"), None, None, "Hi")
                ]
            );
            assert_eq!(repairs(&ev), vec![RepairKind::MissingEnd]);
            assert!(ev.contains(&Event::MessageDone {
                index: 0,
                stop_token: None
            }));
            assert_eq!(p.repaired(), &[true, false]);
            assert_eq!(
                last(&ev),
                &Event::Done {
                    reason: StopReason::Return
                }
            );
            // strict and the reference's non-strict mode keep it as text
            let (_, p) = run(Mode::NonStrict, role, &toks(&s));
            assert_eq!(
                msgs(&p),
                vec![m(
                    A,
                    Some("analysis"),
                    None,
                    None,
                    "plan<|start|>assistant<|channel|>final<|message|>Hi"
                )]
            );
            assert_eq!(strict_msgs(&s, role).unwrap(), msgs(&p));
        }
        // a tool call without <|call|>: the call is done, then the next message
        let s = format!("{S}<|channel|>commentary to=functions.f <|constrain|>json<|message|>{{\"a\": 1}}{S}<|channel|>analysis<|message|>ok<|end|>");
        let (ev, p) = lenient(&s, None);
        assert_eq!(p.messages()[0].text_content(), "{\"a\": 1}");
        assert_eq!(p.messages()[1].text_content(), "ok");
        let at = |want: &Event| ev.iter().position(|e| e == want).unwrap();
        assert!(
            at(&Event::Repair {
                index: Some(0),
                kind: RepairKind::MissingEnd,
                detail: String::new()
            }) < at(&Event::ToolCallDone {
                index: 0,
                call_index: 0
            })
        );
        assert!(
            at(&Event::ToolCallDone {
                index: 0,
                call_index: 0
            }) < at(&Event::MessageDone {
                index: 0,
                stop_token: None
            })
        );
        // undecoded bytes before the <|start|> are flushed into the message (U+FFFD)
        let byte_id = tokenizer().rank_of(&[0xC3]).unwrap(); // the first byte of `é`
        let mut ids = toks(&format!("{S}<|channel|>final<|message|>a"));
        ids.push(byte_id);
        ids.extend(toks(&format!("{S}<|channel|>final<|message|>b<|end|>")));
        let (_, p) = run(Mode::Lenient, None, &ids);
        assert_eq!(p.messages()[0].text_content(), "a\u{FFFD}");
        assert_eq!(p.messages()[1].text_content(), "b");
        // in a header, <|start|> already ended it (the missing <|message|> repair)
        let (ev, p) = lenient(
            &format!("{S}<|channel|>final Hello{S}<|channel|>final<|message|>Hi<|end|>"),
            None,
        );
        assert_eq!(
            msgs(&p),
            vec![
                m(A, Some("final"), None, None, "Hello"),
                m(A, Some("final"), None, None, "Hi")
            ]
        );
        assert_eq!(repairs(&ev), vec![RepairKind::MissingMessage]);
        // a message the parser made from stray text ends at <|start|> without a repair
        let long = "word ".repeat(100);
        let (ev, p) = lenient(
            &format!("{S}<|channel|>final<|message|>a<|end|>{long}{S}<|channel|>final<|message|>b<|end|>"),
            None,
        );
        assert_eq!(p.messages().len(), 3);
        assert!(!repairs(&ev).contains(&RepairKind::MissingEnd));
        // raw mode: text
        let (ev, _) = run(Mode::Raw, None, &toks(&s));
        assert!(!repairs(&ev).contains(&RepairKind::MissingEnd));
    }

    #[test]
    fn lenient_several_tool_calls() {
        let call = |f: &str| {
            format!("{S}<|channel|>commentary to=functions.{f} <|constrain|>json<|message|>{{}}<|call|>")
        };
        let s = format!("{S}<|channel|>analysis<|message|>plan<|end|>{}{}{S}<|channel|>analysis to=browser.search<|message|>{{}}<|call|>", call("a"), call("b"));
        let (ev, _) = lenient(&s, None);
        let starts: Vec<(usize, usize, String)> = ev
            .iter()
            .filter_map(|e| match e {
                Event::ToolCallStart {
                    index,
                    call_index,
                    name,
                    ..
                } => Some((*index, *call_index, name.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            starts,
            vec![
                (1, 0, "a".into()),
                (2, 1, "b".into()),
                (3, 2, "browser.search".into())
            ]
        );
    }

    #[test]
    fn lenient_truncation() {
        // mid-header
        let (ev, p) = lenient(&format!("{S}<|channel|>fin"), None);
        assert_eq!(msgs(&p), vec![m(A, Some("fin"), None, None, "")]);
        assert_eq!(
            last(&ev),
            &Event::Incomplete {
                reason: StopReason::Truncated
            }
        );
        let (ev, p) = lenient("<|start|>", None);
        assert!(p.messages().is_empty());
        assert_eq!(
            last(&ev),
            &Event::Incomplete {
                reason: StopReason::Truncated
            }
        );
        // mid-content
        let ids = toks(&format!("{S}<|channel|>final<|message|>Hello wor"));
        let (ev, p) = run(Mode::Lenient, None, &ids);
        assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "Hello wor")]);
        assert!(ev.contains(&Event::MessageDone {
            index: 0,
            stop_token: None
        }));
        assert_eq!(
            last(&ev),
            &Event::Incomplete {
                reason: StopReason::Truncated
            }
        );
        let mut p = StreamParser::new(None, Mode::Lenient, Limits::default());
        p.feed(&ids).unwrap();
        assert_eq!(
            last(&p.finish_length().unwrap()),
            &Event::Incomplete {
                reason: StopReason::Length
            }
        );
        // after <|end|> the turn may go on: a length cut is incomplete, a clean end is not
        let ids = toks(&format!("{S}<|channel|>analysis<|message|>a<|end|>"));
        let mut p = StreamParser::new(None, Mode::Lenient, Limits::default());
        p.feed(&ids).unwrap();
        let mut q = p.clone();
        assert_eq!(
            last(&p.finish().unwrap()),
            &Event::Done {
                reason: StopReason::End
            }
        );
        assert_eq!(
            last(&q.finish_length().unwrap()),
            &Event::Incomplete {
                reason: StopReason::Length
            }
        );
        // a UTF-8 sequence cut at the end
        let mut ids = toks(&format!("{S}<|channel|>final<|message|>x"));
        ids.push(tokenizer().rank_of(&[0xF0]).unwrap());
        let (_, p) = run(Mode::Lenient, None, &ids);
        assert_eq!(p.messages()[0].text_content(), "x\u{FFFD}");
    }

    #[test]
    fn lenient_header_too_long_becomes_content() {
        let limits = Limits {
            max_header_bytes: 64,
            ..Limits::default()
        };
        let mut p = StreamParser::new(None, Mode::Lenient, limits);
        let text = "lorem ipsum ".repeat(20);
        let mut ev = p
            .feed(&toks(&format!("{S}<|channel|>final {text}")))
            .unwrap();
        assert_eq!(p.state(), StateKind::Content);
        assert!(p.header_tokens().is_empty());
        ev.extend(p.feed(&toks("tail<|end|>")).unwrap());
        assert_eq!(
            msgs(&p),
            vec![m(A, Some("final"), None, None, &format!("{text}tail"))]
        );
        assert!(repairs(&ev).contains(&RepairKind::HeaderTooLong));
        // strict: an error, and the header is dropped
        let mut p = StreamParser::new(None, Mode::Strict, limits);
        let e = p
            .feed(&toks(&format!("{S}<|channel|>final {text}")))
            .unwrap_err();
        assert!(matches!(
            e,
            HarmonyError::LimitExceeded {
                limit: "header bytes",
                ..
            }
        ));
        assert!(p.header_tokens().len() < 64);
    }

    #[test]
    fn lenient_message_and_total_caps() {
        let limits = Limits {
            max_parsed_message_bytes: 10,
            max_parsed_total_bytes: 100,
            ..Limits::default()
        };
        let mut p = StreamParser::new(None, Mode::Lenient, limits);
        let ev = p
            .feed(&toks(&format!(
                "{S}<|channel|>final<|message|>0123456789abcdef<|end|>"
            )))
            .unwrap();
        let streamed: String = ev
            .iter()
            .filter_map(|e| match e {
                Event::ContentDelta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(streamed, "0123456789abcdef");
        assert_eq!(p.messages()[0].text_content(), "0123456789");
        assert!(repairs(&ev).contains(&RepairKind::MessageTooLong));
        for _ in 0..20 {
            p.feed(&toks(&format!(
                "{S}<|channel|>final<|message|>0123456789<|end|>"
            )))
            .unwrap();
        }
        assert!(p.retained_bytes() <= 100);
        assert!(p.first_message_index() > 0);
        assert_eq!(p.first_message_index() + p.messages().len(), 21);
        // strict: errors
        let mut p = StreamParser::new(None, Mode::Strict, limits);
        let e = p
            .feed(&toks(&format!(
                "{S}<|channel|>final<|message|>0123456789abcdef<|end|>"
            )))
            .unwrap_err();
        assert!(matches!(
            e,
            HarmonyError::LimitExceeded {
                limit: "parsed message bytes",
                ..
            }
        ));
    }

    #[test]
    fn raw_mode_is_every_token_text() {
        let mut ids = toks(&format!("{S}<|channel|>final<|message|>héllo<|end|>"));
        ids.push(999_999);
        let (ev, p) = run(Mode::Raw, None, &ids);
        let text: String = ev
            .iter()
            .filter_map(|e| match e {
                Event::ContentDelta { index: 0, text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            text,
            "<|start|>assistant<|channel|>final<|message|>héllo<|end|>\u{FFFD}"
        );
        assert!(p.messages().is_empty());
        assert_eq!(
            last(&ev),
            &Event::Incomplete {
                reason: StopReason::Truncated
            }
        );
    }

    #[test]
    fn accessors_state_json_reset_snapshot() {
        let mut p = StreamParser::new(None, Mode::Strict, Limits::default());
        assert_eq!(p.state_json(), r#"{"state":"ExpectStart"}"#);
        p.feed(&toks(
            "<|start|>functions.f to=assistant<|channel|>commentary json<|message|>ab",
        ))
        .unwrap();
        let v: Value = serde_json::from_str(&p.state_json()).unwrap();
        assert_eq!(
            v,
            json!({"state": "Content", "header": {"author": {"role": "tool", "name": "functions.f"},
                   "recipient": "assistant", "channel": "commentary", "content_type": "json"},
                   "content_tokens": [378]})
        );
        let snap = p.clone();
        p.feed(&toks("cd<|end|>")).unwrap();
        assert_eq!(p.messages().len(), 1);
        p = snap;
        assert!(p.messages().is_empty());
        assert_eq!(p.current_content(), "ab");
        p.reset();
        assert_eq!(p.state(), StateKind::ExpectStart);
        assert!(p.tokens().is_empty());
        let mut p = StreamParser::new(Some(A), Mode::Strict, Limits::default());
        p.feed(&toks("<|channel|>")).unwrap();
        assert_eq!(
            p.state_json(),
            r#"{"state":"Header","header_tokens":[200005]}"#
        );
        assert_eq!(p.current_role(), Some(A));
    }

    #[test]
    fn token_history_is_capped() {
        let mut p = StreamParser::new(None, Mode::Lenient, Limits::default());
        p.set_token_history(10);
        let ids = toks(&format!(
            "{S}<|channel|>final<|message|>{}<|end|>",
            "a b c d e f g h i j k l ".repeat(5)
        ));
        p.feed(&ids).unwrap();
        assert!(p.tokens().len() >= 10 && p.tokens().len() < 20);
        assert_eq!(p.tokens_dropped() as usize + p.tokens().len(), ids.len());
        assert_eq!(p.tokens(), &ids[ids.len() - p.tokens().len()..]);
    }

    #[test]
    fn ten_million_tokens_stay_bounded() {
        let limits = Limits {
            max_header_bytes: 256,
            max_parsed_message_bytes: 4096,
            max_parsed_total_bytes: 64 << 10,
            ..Limits::default()
        };
        let unit = toks(&format!(
            "{S}<|channel|>analysis<|message|>Thinking about it.<|end|>{S}<|channel|>commentary to=functions.f <|constrain|>json<|message|>{{\"q\": 1}}<|call|>junk{S}<|channel|>final<|message|>Done.<|return|>"
        ));
        let mut p = StreamParser::new(None, Mode::Lenient, limits);
        p.set_token_history(4096);
        let mut batch = Vec::with_capacity(1 << 16);
        let mut out = Vec::new();
        let mut fed = 0usize;
        while fed < 10_000_000 {
            batch.clear();
            while batch.len() < (1 << 16) - unit.len() {
                batch.extend_from_slice(&unit);
            }
            out.clear();
            p.feed_into(&batch, &mut out).unwrap();
            fed += batch.len();
            assert!(p.retained_bytes() <= limits.max_parsed_total_bytes + 4096);
            assert!(p.tokens().len() < 2 * 4096);
        }
        assert!(p.first_message_index() > 1_000_000);
        // one endless message and one endless header
        let mut p = StreamParser::new(None, Mode::Lenient, limits);
        p.set_token_history(0);
        p.feed(&toks(&format!("{S}<|channel|>final<|message|>")))
            .unwrap();
        let words = toks(&"endless text ".repeat(1000));
        for _ in 0..200 {
            p.feed(&words).unwrap();
            assert!(p.current_content().len() <= 4096);
        }
        let mut p = StreamParser::new(None, Mode::Lenient, limits);
        p.feed(&toks("<|start|>")).unwrap();
        for _ in 0..200 {
            p.feed(&words).unwrap();
            assert!(p.header_tokens().len() <= 256 && p.current_content().len() <= 4096);
        }
    }

    // ----- property tests ---------------------------------------------------------------------

    use proptest::prelude::*;

    const STRUCTURAL: [Rank; 7] = [
        ids::START,
        ids::MESSAGE,
        ids::END,
        ids::RETURN,
        ids::CALL,
        ids::STARTOFTEXT,
        ids::ENDOFTEXT,
    ];

    fn normalize(s: &str) -> String {
        let mut s = s.to_string();
        for t in STRUCTURAL {
            s = s.replace(&token_text(t), "");
        }
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    /// The input's text per the lossless guarantee (module documentation).
    fn decoded_input(ids: &[Rank]) -> String {
        let mut out = String::new();
        let mut dec = Dec::default();
        for &t in ids {
            if STRUCTURAL.contains(&t) {
                dec.flush_lossy(&mut out);
                continue;
            }
            match tokenizer().token_bytes(t) {
                Some(b) => dec.push_lossy(b, &mut out),
                None => {
                    dec.flush_lossy(&mut out);
                    out.push_str(REPLACEMENT);
                }
            }
        }
        dec.flush_lossy(&mut out);
        out
    }

    fn event_text(ev: &[Event]) -> String {
        let mut s = String::new();
        for e in ev {
            match e {
                Event::MessageStart { raw_header, .. } => s.push_str(raw_header),
                Event::ContentDelta { text, .. } => s.push_str(text),
                Event::ToolCallDelta { arguments, .. } => s.push_str(arguments),
                Event::Repair {
                    kind: RepairKind::StrayToken | RepairKind::StrayWhitespace,
                    detail,
                    ..
                } => s.push_str(detail),
                _ => {}
            }
        }
        s
    }

    /// Checks the lenient invariants on one stream; returns the events.
    fn check_lenient(ids: &[Rank], role: Option<Role>) -> Vec<Event> {
        let mut p = StreamParser::new(role, Mode::Lenient, Limits::default());
        let mut ev = p.feed(ids).expect("lenient feed");
        ev.extend(p.finish().expect("lenient finish"));
        assert_eq!(
            normalize(&event_text(&ev)),
            normalize(&decoded_input(ids)),
            "ids {ids:?}"
        );
        // well-formed event sequence
        let mut open: Option<usize> = None;
        for e in &ev {
            match e {
                Event::MessageStart { index, .. } => {
                    assert!(open.is_none(), "{ev:?}");
                    open = Some(*index);
                }
                Event::ContentDelta { index, text }
                | Event::ToolCallDelta {
                    index,
                    arguments: text,
                    ..
                } => {
                    assert_eq!(open, Some(*index));
                    assert!(!text.is_empty());
                }
                Event::MessageDone { index, .. } => {
                    assert_eq!(open, Some(*index));
                    open = None;
                }
                _ => {}
            }
        }
        assert!(open.is_none());
        assert!(matches!(
            last(&ev),
            Event::Done { .. } | Event::Incomplete { .. }
        ));
        assert_eq!(p.messages().len(), p.repaired().len());
        ev
    }

    fn special_id() -> impl Strategy<Value = Rank> {
        prop_oneof![
            Just(ids::START),
            Just(ids::MESSAGE),
            Just(ids::END),
            Just(ids::RETURN),
            Just(ids::CALL),
            Just(ids::CHANNEL),
            Just(ids::CONSTRAIN),
            Just(ids::ENDOFTEXT),
            Just(ids::STARTOFTEXT),
            200_000u32..201_100,
        ]
    }

    fn any_id() -> impl Strategy<Value = Rank> {
        prop_oneof![4 => 0u32..201_100, 2 => special_id(), 1 => 0u32..256, 1 => Just(u32::MAX)]
    }

    fn header_word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("assistant".to_string()),
            Just("commentary".to_string()),
            Just("final".to_string()),
            Just(" to=functions.f".to_string()),
            Just(" <|constrain|>json".to_string()),
            Just(" json".to_string()),
            Just("<|channel|>".to_string()),
            Just("––".to_string()),
            "[a-z. ]{0,6}",
        ]
    }

    #[derive(Debug, Clone)]
    struct Gen {
        role: Role,
        name: Option<String>,
        channel: Option<String>,
        recipient: Option<String>,
        content_type: Option<String>,
        text: String,
    }

    fn gen_message() -> impl Strategy<Value = Gen> {
        let channel = prop::option::of(prop_oneof![
            Just("analysis".to_string()),
            Just("commentary".to_string()),
            Just("final".to_string()),
            "[a-z][a-z_]{0,8}",
        ]);
        let recipient = prop::option::of(prop_oneof![
            "functions\\.[a-z_]{1,12}".prop_map(String::from),
            Just("python".to_string()),
            Just("browser.search".to_string()),
        ]);
        let ct = prop::option::of(prop_oneof![
            Just("<|constrain|>json".to_string()),
            Just("json".to_string()),
            Just("code".to_string()),
        ]);
        let text = prop_oneof!["\\PC{0,40}", "[a-z {}\":,\n]{0,40}"];
        (0u8..6, channel, recipient, ct, text).prop_map(
            |(r, channel, recipient, content_type, text)| match r {
                0 => Gen {
                    role: Role::User,
                    name: None,
                    channel: None,
                    recipient: None,
                    content_type: None,
                    text,
                },
                1 => Gen {
                    role: Role::Tool,
                    name: Some("functions.lookup".into()),
                    channel: channel.or(Some("commentary".into())),
                    recipient: Some("assistant".into()),
                    content_type: None,
                    text,
                },
                _ => Gen {
                    role: Role::Assistant,
                    name: None,
                    channel,
                    recipient,
                    content_type,
                    text,
                },
            },
        )
    }

    fn to_message(g: &Gen) -> Message {
        Message {
            author: Author {
                role: g.role,
                name: g.name.clone(),
            },
            content: vec![Content::Text(g.text.clone())],
            channel: g.channel.clone(),
            recipient: g.recipient.clone(),
            content_type: g.content_type.clone(),
        }
    }

    fn render_all(ms: &[Message]) -> Vec<Rank> {
        let mut ids = Vec::new();
        for m in ms {
            ids.extend(
                crate::render::render_message(m, Default::default(), &Limits::default()).unwrap(),
            );
        }
        ids
    }

    fn rendered_stream() -> impl Strategy<Value = Vec<Rank>> {
        prop::collection::vec(gen_message(), 1..4)
            .prop_map(|gs| render_all(&gs.iter().map(to_message).collect::<Vec<_>>()))
    }

    #[derive(Debug, Clone)]
    enum Edit {
        Insert(usize, Rank),
        Delete(usize),
        Replace(usize, Rank),
        InsertText(usize, String),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<usize>(), any_id()).prop_map(|(i, t)| Edit::Insert(i, t)),
            any::<usize>().prop_map(Edit::Delete),
            (any::<usize>(), special_id()).prop_map(|(i, t)| Edit::Replace(i, t)),
            (any::<usize>(), header_word()).prop_map(|(i, w)| Edit::InsertText(i, w)),
        ]
    }

    fn apply(mut ids: Vec<Rank>, edits: &[Edit]) -> Vec<Rank> {
        for e in edits {
            let n = ids.len();
            match e {
                Edit::Insert(i, t) => ids.insert(i % (n + 1), *t),
                Edit::Delete(i) if n > 0 => {
                    ids.remove(i % n);
                }
                Edit::Replace(i, t) if n > 0 => ids[i % n] = *t,
                Edit::InsertText(i, w) => {
                    let at = i % (n + 1);
                    let w = toks(w);
                    ids.splice(at..at, w);
                }
                _ => {}
            }
        }
        ids
    }

    fn mutated_stream() -> impl Strategy<Value = Vec<Rank>> {
        (rendered_stream(), prop::collection::vec(edit(), 0..6))
            .prop_map(|(ids, edits)| apply(ids, &edits))
    }

    /// How [`events_in_chunks`] feeds the ids.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Feeding {
        /// `feed_into` per chunk, all into one output vector.
        Shared,
        /// `feed` per chunk (a new vector each; deltas then split at chunk boundaries).
        Fresh,
        /// The per-token path of `process` (no batch fast path), with its events.
        Steps,
    }

    /// Merges adjacent deltas of one message (what a single batch would hold).
    fn coalesce(ev: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::new();
        for e in ev {
            match e {
                Event::ContentDelta { index, text } => push_delta(&mut out, index, None, &text),
                Event::ToolCallDelta {
                    index,
                    call_index,
                    arguments,
                } => push_delta(&mut out, index, Some(call_index), &arguments),
                e => out.push(e),
            }
        }
        out
    }

    /// Everything observable after a chunked feed: events (merged), the error, the messages,
    /// `last_content_delta`, `current_content`, the token history and `tokens_dropped`.
    type Observed = (
        Vec<Event>,
        Option<String>,
        Vec<Message>,
        Option<String>,
        String,
        Vec<Rank>,
        u64,
    );

    fn events_in_chunks(
        mode: Mode,
        role: Option<Role>,
        ids: &[Rank],
        cuts: &[usize],
        how: Feeding,
        history: Option<usize>,
        limits: Limits,
    ) -> Observed {
        let mut p = StreamParser::new(role, mode, limits);
        if let Some(n) = history {
            p.set_token_history(n);
        }
        let mut ev = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (ids.len() + 1)).collect();
        cuts.sort_unstable();
        let mut prev = 0;
        let mut err = None;
        for c in cuts.into_iter().chain([ids.len()]) {
            let r = match how {
                Feeding::Shared => p.feed_into(&ids[prev..c], &mut ev),
                Feeding::Fresh => p.feed(&ids[prev..c]).map(|e| ev.extend(e)),
                Feeding::Steps => ids[prev..c].iter().try_for_each(|&t| p.step(t, &mut ev)),
            };
            prev = c;
            if let Err(e) = r {
                err = Some(e.to_string());
                break;
            }
        }
        let last = (
            p.last_content_delta().map(String::from),
            p.current_content().to_string(),
        );
        if err.is_none() {
            err = p.finish_into(false, &mut ev).err().map(|e| e.to_string());
        }
        let ev = if how == Feeding::Shared {
            ev
        } else {
            coalesce(ev)
        };
        (
            ev,
            err,
            p.messages().to_vec(),
            last.0,
            last.1,
            p.tokens().to_vec(),
            p.tokens_dropped(),
        )
    }

    proptest! {
        // PROPTEST_CASES=N overrides the default of 256 cases per property.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            ..ProptestConfig::default()
        })]

        #[test]
        fn prop_chunk_boundaries_do_not_matter(ids in prop_oneof![mutated_stream(), prop::collection::vec(any_id(), 0..60)],
                                               cuts in prop::collection::vec(any::<usize>(), 0..8),
                                               role in prop::option::of(Just(Role::Assistant)),
                                               history in prop::option::of(0usize..6),
                                               caps in prop::option::of((0usize..40, 0usize..30, 0usize..120))) {
            // the same events (deltas merged), messages, accessors and token history whatever
            // the batching, and the batch fast path agrees with the per-token path (also
            // with tiny caps: cut messages, over-long headers, evictions)
            let limits = match caps {
                None => Limits::default(),
                Some((msg, header, total)) => Limits {
                    max_parsed_message_bytes: msg,
                    max_header_bytes: header,
                    max_parsed_total_bytes: total,
                    ..Limits::default()
                },
            };
            for mode in [Mode::Lenient, Mode::Strict, Mode::NonStrict, Mode::Raw] {
                let whole = events_in_chunks(mode, role, &ids, &[], Feeding::Shared, history, limits);
                let one_by_one: Vec<usize> = (0..ids.len()).collect();
                for how in [Feeding::Shared, Feeding::Fresh, Feeding::Steps] {
                    for c in [&cuts, &one_by_one] {
                        let mut got = events_in_chunks(mode, role, &ids, c, how, history, limits);
                        if how == Feeding::Fresh && got.1.is_some() {
                            // a strict error: `feed` does not return the failing batch's events
                            got.0.clone_from(&whole.0);
                        }
                        prop_assert_eq!(&whole, &got, "{:?}", how);
                    }
                }
            }
        }

        #[test]
        fn prop_long_content_runs_decode_like_single_tokens(
            body in prop::collection::vec(prop_oneof![4 => 0u32..256, 4 => 0u32..5_000, 1 => 5_000u32..199_998, 1 => special_id()], 0..700),
            cuts in prop::collection::vec(any::<usize>(), 0..4),
            cap in prop::option::of(0usize..3_000)) {
            // runs longer than the batch fast path's chunk, split UTF-8 sequences (byte
            // tokens), invalid bytes, and caps the run may reach: the same as token by token
            let limits = Limits {
                max_parsed_message_bytes: cap.unwrap_or(Limits::default().max_parsed_message_bytes),
                ..Limits::default()
            };
            let mut ids = vec![ids::MESSAGE];
            ids.extend(body);
            let role = Some(Role::Assistant);
            let one_by_one: Vec<usize> = (0..ids.len()).collect();
            let want = events_in_chunks(Mode::Lenient, role, &ids, &one_by_one, Feeding::Steps, None, limits);
            for c in [&[][..], &cuts[..]] {
                let got = events_in_chunks(Mode::Lenient, role, &ids, c, Feeding::Shared, None, limits);
                prop_assert_eq!(&want, &got);
            }
        }

        #[test]
        fn prop_render_then_parse_round_trip(gs in prop::collection::vec(gen_message(), 1..5)) {
            let ms: Vec<Message> = gs.iter().map(to_message).collect();
            let ids = render_all(&ms);
            let got = parse_completion(&ids, None, Mode::Lenient, Limits::default()).unwrap();
            prop_assert_eq!(&got, &ms);
            // strict reproduces the reference, which reads a lone content type as a recipient
            let strict_ok = gs.iter().all(|g| g.content_type.is_none() || g.recipient.is_some());
            if strict_ok {
                prop_assert_eq!(&parse_completion(&ids, None, Mode::Strict, Limits::default()).unwrap(), &ms);
            }
            // and with the role given (the prompt ended with <|start|>assistant)
            if ms[0].author.role == Role::Assistant {
                let got = parse_completion(&ids[2..], Some(Role::Assistant), Mode::Lenient, Limits::default()).unwrap();
                prop_assert_eq!(&got, &ms);
            }
        }

        #[test]
        fn prop_lenient_never_fails_and_loses_nothing(ids in prop_oneof![
                mutated_stream(),
                prop::collection::vec(any_id(), 0..80),
                prop::collection::vec(special_id(), 0..30),
            ],
            role in prop::option::of(Just(Role::Assistant))) {
            check_lenient(&ids, role);
        }

        #[test]
        fn prop_lenient_content_is_exact_when_headers_are_intact(gs in prop::collection::vec(gen_message(), 1..4),
                                                                 junk in prop::collection::vec(any_id(), 0..6)) {
            // junk appended after the last message: the messages before it are unchanged
            let ms: Vec<Message> = gs.iter().map(to_message).collect();
            let mut ids = render_all(&ms);
            ids.extend(junk.iter().filter(|&&t| t != ids::START));
            let got = parse_completion(&ids, None, Mode::Lenient, Limits::default()).unwrap();
            prop_assert!(got.len() >= ms.len());
            prop_assert_eq!(&got[..ms.len()], &ms[..]);
        }

        #[test]
        fn prop_strict_never_panics(ids in prop_oneof![mutated_stream(), prop::collection::vec(any_id(), 0..80)],
                                    role in prop::option::of(Just(Role::Assistant))) {
            for mode in [Mode::Strict, Mode::NonStrict, Mode::Raw] {
                let mut p = StreamParser::new(role, mode, Limits::default());
                for &t in &ids {
                    let _ = p.process(t);
                    let _ = p.state_json();
                }
                let _ = p.finish();
            }
        }
    }

    /// Throughput: `cargo test --release --lib parser::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        let unit = toks(&format!(
            "{S}<|channel|>analysis<|message|>{}<|end|>{S}<|channel|>final<|message|>{}<|return|>",
            "The user asks about the weather in Paris; we should call the tool. ".repeat(20),
            "It is sunny and 21 degrees in Paris today. ".repeat(20)
        ));
        let ids: Vec<Rank> = unit.iter().copied().cycle().take(2_000_000).collect();
        for mode in [Mode::Strict, Mode::Lenient, Mode::Raw] {
            for chunk_len in [0, 1, 16, 2000] {
                let mut p = StreamParser::new(None, mode, Limits::default());
                let mut out = Vec::new();
                let t0 = std::time::Instant::now();
                if chunk_len == 0 {
                    for &t in &ids {
                        p.process(t).unwrap();
                        std::hint::black_box(p.last_content_delta());
                    }
                } else {
                    for chunk in ids.chunks(chunk_len) {
                        out.clear();
                        p.feed_into(chunk, &mut out).unwrap();
                    }
                }
                let dt = t0.elapsed();
                let how = match chunk_len {
                    0 => "process() per token".to_string(),
                    n => format!("feed, {n}-token batches"),
                };
                eprintln!(
                    "{mode:?}, {how}: {:.1} ns/token",
                    dt.as_nanos() as f64 / ids.len() as f64
                );
            }
        }
    }

    /// Differential test against vectors recorded from the reference by a fuzzing script:
    /// `LH_PARSE_FUZZ=/path/fuzz.jsonl cargo test --lib parser::tests::reference_fuzz -- --ignored`.
    #[test]
    #[ignore]
    fn reference_fuzz() {
        let Ok(path) = std::env::var("LH_PARSE_FUZZ") else {
            return;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let mut n = 0;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let row: Value = serde_json::from_str(line).unwrap();
            let mode = if row["strict"].as_bool().unwrap() {
                Mode::Strict
            } else {
                Mode::NonStrict
            };
            check_reference_row(&row, mode);
            if let Some(states) = row["states"].as_array() {
                let (tokens, role) = row_input(&row);
                let mut p = StreamParser::new(role, mode, Limits::unlimited());
                for (i, st) in states.iter().enumerate() {
                    if p.process(tokens[i]).is_err() {
                        break;
                    }
                    let got: Value = serde_json::from_str(&p.state_json()).unwrap();
                    assert_eq!(st, &got, "{}: state at {i}", row["name"]);
                    assert_eq!(row["tokens_fed"][i].as_u64(), Some(p.tokens().len() as u64));
                }
            }
            // the reference keeps going after an error: so do we, in the same state
            if let Some(cont) = row["cont"].as_array() {
                let (tokens, role) = row_input(&row);
                let mut p = StreamParser::new(role, mode, Limits::unlimited());
                for (i, want) in cont.iter().enumerate() {
                    let state =
                        |p: &StreamParser| serde_json::from_str::<Value>(&p.state_json()).unwrap();
                    if i == tokens.len() {
                        match p.process_eos() {
                            Ok(()) => assert_eq!(
                                want["eos"],
                                dicts(p.messages()),
                                "{}: cont eos",
                                row["name"]
                            ),
                            Err(e) => {
                                assert_eq!(
                                    want["error"].as_str(),
                                    Some(e.to_string().as_str()),
                                    "{}: cont eos",
                                    row["name"]
                                );
                                assert_eq!(want["state"], state(&p));
                            }
                        }
                        break;
                    }
                    let r = p.process(tokens[i]);
                    let ctx = format!("{}: cont {i} {:?}", row["name"], tokens);
                    match r {
                        Ok(()) => {
                            assert!(want.get("error").is_none(), "{ctx}: expected {want}");
                            assert_eq!(want["delta"].as_str(), p.last_content_delta(), "{ctx}");
                            assert_eq!(
                                want["content"].as_str(),
                                Some(p.current_content()),
                                "{ctx}"
                            );
                        }
                        Err(e) => assert_eq!(
                            want["error"].as_str(),
                            Some(e.to_string().as_str()),
                            "{ctx}"
                        ),
                    }
                    assert_eq!(want["state"], state(&p), "{ctx}");
                    assert_eq!(want["n"].as_u64(), Some(p.messages().len() as u64), "{ctx}");
                }
            }
            // lenient never fails on it
            let (tokens, role) = row_input(&row);
            check_lenient(&tokens, role);
            n += 1;
        }
        eprintln!("{n} fuzz rows checked");
    }
}
