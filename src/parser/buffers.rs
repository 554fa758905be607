//! The parser's state and its bounded buffers (the "Memory bounds" of the module
//! documentation): the header being read ([`HeaderBuf`]), the open message ([`Body`]: its
//! retained text stops at the message cap), the finished messages (evicted or refused past
//! the total cap), the token history (between `n` and `2n` recent ids), and the merging of
//! text deltas into one event per message part ([`push_delta`]).

use super::decode::{push_seg, Dec, REPLACEMENT};
use super::header::ParsedHeader;
use super::{Event, RepairKind, StreamParser};
use crate::chat::Message;
use crate::error::{HarmonyError, Result};
use crate::tokenizer::{tokenizer, Rank};

/// Default number of recent token ids retained by [`StreamParser::tokens`] (1 Mi ids, 4 MiB).
pub const DEFAULT_TOKEN_HISTORY: usize = 1 << 20;

/// The parser's state: the reference's three states, with their buffers.
#[derive(Debug, Clone)]
pub(super) enum State {
    ExpectStart,
    Header(HeaderBuf),
    Content(Box<Body>),
}

/// The ids of a header being read (capped by `Limits::max_header_bytes`).
#[derive(Debug, Clone, Default)]
pub(super) struct HeaderBuf {
    pub(super) tokens: Vec<Rank>,
    pub(super) bytes: usize,
    /// Lenient: text seen between messages without `<|start|>`.
    pub(super) orphan: bool,
    /// Lenient: the orphan has a non-whitespace character / a line break.
    pub(super) nonws: bool,
    pub(super) newline: bool,
    /// Lenient: repairs already reported for this header.
    pub(super) repaired: bool,
    /// Lenient: words of the header text so far (special tokens separate words), and whether
    /// the last byte was inside a word.
    pub(super) words: usize,
    pub(super) in_word: bool,
}

impl HeaderBuf {
    /// Buffers one id; returns its bytes (U+FFFD's for an id outside the vocabulary), which
    /// are counted in `bytes`.
    #[inline]
    pub(super) fn push(&mut self, t: Rank) -> &'static [u8] {
        let bytes = tokenizer().token_bytes(t).unwrap_or(REPLACEMENT.as_bytes());
        self.tokens.push(t);
        self.bytes += bytes.len();
        bytes
    }

    /// Lenient: counts the words of an id's text (`bytes`; `special`: a special token, a word
    /// boundary); true when the header can no longer be a Harmony header: more than
    /// `max_words` words, or a word after a line break (a line break before `<|message|>` is
    /// tolerated, as the reference does).
    #[inline]
    pub(super) fn note_text(&mut self, bytes: &[u8], special: bool, max_words: usize) -> bool {
        if special {
            self.in_word = false;
            return false;
        }
        let mut word_after_newline = false;
        for &b in bytes {
            if b == b'\n' {
                self.newline = true;
            }
            if b.is_ascii_whitespace() {
                self.in_word = false;
            } else if !self.in_word {
                self.in_word = true;
                self.words += 1;
                word_after_newline |= self.newline;
            }
        }
        word_after_newline || self.words > max_words
    }
}

/// The open message.
#[derive(Debug, Clone)]
pub(super) struct Body {
    pub(super) index: usize,
    pub(super) header: ParsedHeader,
    pub(super) call: Option<usize>,
    /// Retained text (`current_content`).
    pub(super) text: String,
    /// Reference modes: end offsets in `text` of the pieces the reference re-encodes
    /// separately (for `content_tokens`); not recorded past 4 GiB.
    pub(super) segs: Vec<u32>,
    pub(super) truncated: bool,
    pub(super) repaired: bool,
    /// Lenient: a message the reference would not have made (stray text, lost header):
    /// a `<|start|>` in its content ends it without a `missing_end` repair.
    pub(super) stray: bool,
    /// Lenient: the message is text found between messages (it has no header at all).
    pub(super) from_orphan: bool,
    pub(super) dec: Dec,
}

impl Body {
    pub(super) fn new(
        index: usize,
        header: ParsedHeader,
        call: Option<usize>,
        repaired: bool,
        stray: bool,
    ) -> Box<Body> {
        Box::new(Body {
            index,
            header,
            call,
            text: String::new(),
            segs: Vec::new(),
            truncated: false,
            repaired,
            stray,
            from_orphan: false,
            dec: Dec::default(),
        })
    }

    /// Appends to the retained text up to `cap` bytes (recording a re-encoding segment when
    /// `seg`); returns true when it cut the text now.
    pub(super) fn retain(&mut self, s: &str, cap: usize, seg: bool) -> bool {
        if self.truncated {
            return false;
        }
        let mut room = s.len();
        if self.text.len() + s.len() > cap {
            room = cap.saturating_sub(self.text.len());
            while room > 0 && !s.is_char_boundary(room) {
                room -= 1;
            }
            self.truncated = true;
        }
        self.text.push_str(&s[..room]);
        if seg {
            push_seg(&mut self.segs, self.text.len());
        }
        self.truncated
    }

    /// Retains `s` (see [`retain`](Self::retain)) and emits it as a delta of this message.
    pub(super) fn retain_and_push(&mut self, s: &str, cap: usize, seg: bool, out: &mut Vec<Event>) {
        self.retain(s, cap, seg);
        push_delta(out, self.index, self.call, s);
    }
}

/// Where the text of the last id (`last_content_delta`) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LastDelta {
    None,
    /// In `StreamParser::last_delta`.
    Buf,
    /// The open message's retained text from this offset to its end.
    Text(usize),
}

/// Emits a content (or, for a tool call, an argument) delta: appended to the last event of
/// `out` when that is a delta of the same message, so a batch never holds one event per token.
#[inline]
pub(super) fn push_delta(out: &mut Vec<Event>, index: usize, call: Option<usize>, text: &str) {
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

pub(super) fn limit_err(limit: &'static str, cap: usize, actual: usize) -> HarmonyError {
    HarmonyError::LimitExceeded {
        limit,
        cap: cap as u64,
        actual: actual as u64,
    }
}

impl StreamParser {
    /// The cap and segment recording of the retained text of a message: the reference
    /// modes record re-encoding segments and are capped per token (an error), the others
    /// cut the retained text at `max_parsed_message_bytes`.
    pub(super) fn retention(&self) -> (usize, bool) {
        if self.mode.is_reference() {
            (usize::MAX, true)
        } else {
            (self.limits.max_parsed_message_bytes, false)
        }
    }

    pub(super) fn push_token(&mut self, t: Rank) {
        self.push_tokens(std::slice::from_ref(&t));
    }

    /// Appends ids to the history: the same result as pushing them one by one, each push
    /// dropping the oldest ids down to `token_cap` once `2 * token_cap` are held.
    #[inline]
    pub(super) fn push_tokens(&mut self, ids: &[Rank]) {
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

    /// Stores a finished message. Over `max_parsed_total_bytes` the reference modes fail;
    /// the others evict the oldest messages down to three quarters of the cap (keeping the
    /// newest) and report it.
    pub(super) fn store(
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
            out.push(Event::repair(
                Some(index),
                RepairKind::MessagesEvicted,
                format!("{n} oldest messages evicted from the parser"),
            ));
        }
        Ok(())
    }
}
