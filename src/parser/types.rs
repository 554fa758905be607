//! The parser's public vocabulary: [`Mode`], [`Event`] (with [`StopReason`] and
//! [`RepairKind`]) and [`StateKind`]. Plain data; the parsers that produce them live in the
//! sibling modules.

use crate::chat::Role;
use crate::tokenizer::{ids, Rank};

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

    pub(super) fn is_reference(self) -> bool {
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
    /// The caller cut generation (max tokens) mid-turn
    /// ([`StreamParser::finish_length`](super::StreamParser::finish_length)).
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
    /// A header whose text cannot be a Harmony header (a word after a line break, or more than
    /// [`MAX_HEADER_WORDS`](super::MAX_HEADER_WORDS) words): its text became content, streamed
    /// from then on (output without any header is not held back).
    HeaderAsContent,
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
            HeaderAsContent => "header_as_content",
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

impl Event {
    /// A [`Event::Repair`] (how every module reports one).
    pub(super) fn repair(
        index: Option<usize>,
        kind: RepairKind,
        detail: impl Into<String>,
    ) -> Event {
        Event::Repair {
            index,
            kind,
            detail: detail.into(),
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
