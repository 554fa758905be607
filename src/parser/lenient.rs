//! The lenient mode ([`Mode::Lenient`](super::Mode::Lenient)): never fails, loses nothing
//! (see the module documentation's outcome table and lossless guarantee). This file reads
//! the ids of each state: content (with its repairs: ids outside the vocabulary, special
//! tokens in content, a `<|start|>` where `<|end|>` was missing), stop tokens, and EOS.
//! Headers that need repair are in `lenient_repair`; the batch fast path for content is
//! in `lenient_run`.

use super::buffers::{push_delta, HeaderBuf, LastDelta, State};
use super::decode::token_text;
use super::header::ParsedHeader;
use super::stream::ends_message;
use super::{Event, RepairKind, StreamParser, MAX_HEADER_WORDS};
use crate::chat::Role;
use crate::tokenizer::{ids, tokenizer, Rank};

impl StreamParser {
    /// One id in lenient mode.
    pub(super) fn step_lenient(&mut self, t: Rank, out: &mut Vec<Event>) {
        let tk = tokenizer();
        match &mut self.state {
            State::ExpectStart => {
                self.last = LastDelta::None;
                match t {
                    ids::START => self.state = State::Header(HeaderBuf::default()),
                    ids::MESSAGE => {
                        let idx = self.next_index;
                        let role = self.next_role.take().unwrap_or(Role::Assistant);
                        out.push(Event::repair(
                            Some(idx),
                            RepairKind::MissingStart,
                            "<|message|> without a header",
                        ));
                        self.open_body(ParsedHeader::new(role), String::new(), true, true, out);
                    }
                    ids::CHANNEL | ids::CONSTRAIN => self.orphan_push(t, out),
                    _ if ends_message(t) => {
                        self.last_stop = Some(t);
                        out.push(Event::repair(None, RepairKind::StrayToken, token_text(t)));
                    }
                    _ if tk.is_special(t) || tk.token_bytes(t).is_none() => {
                        out.push(Event::repair(None, RepairKind::StrayToken, token_text(t)));
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
                        out.push(Event::repair(Some(idx), RepairKind::DoubleStart, ""));
                    } else {
                        let h = std::mem::take(h);
                        self.header_without_message(h, None, out);
                        self.state = State::Header(HeaderBuf::default());
                    }
                }
                _ if ends_message(t) => {
                    let h = std::mem::take(h);
                    self.last_stop = Some(t);
                    if h.tokens.is_empty() {
                        self.state = State::ExpectStart;
                        self.next_role = None;
                        out.push(Event::repair(None, RepairKind::StrayToken, token_text(t)));
                    } else {
                        self.header_without_message(h, Some(t), out);
                    }
                }
                _ => {
                    let orphan = h.orphan;
                    if orphan {
                        self.orphan_push(t, out);
                    } else {
                        let bytes = h.push(t);
                        let special = tk.is_special(t);
                        if h.bytes > self.limits.max_header_bytes {
                            let h = std::mem::take(h);
                            self.header_to_content(h, RepairKind::HeaderTooLong, out);
                        } else if h.note_text(bytes, special, MAX_HEADER_WORDS) {
                            let h = std::mem::take(h);
                            self.header_to_content(h, RepairKind::HeaderAsContent, out);
                        }
                    }
                }
            },
            State::Content(b) => {
                if ends_message(t) {
                    let _ = self.end_message(Some(t), out);
                    return;
                }
                if t == ids::START {
                    // a `<|start|>` in content: the next message's header follows and this
                    // message's `<|end|>` is missing (messages the reference would not have
                    // made, stray text and lost headers, end here without a repair)
                    if !b.stray {
                        b.repaired = true;
                        out.push(Event::repair(Some(b.index), RepairKind::MissingEnd, ""));
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
                if !b.dec.push_token_lossy(t, delta) {
                    b.repaired = true;
                    out.push(Event::repair(
                        Some(index),
                        RepairKind::InvalidToken,
                        t.to_string(),
                    ));
                } else if tk.is_special(t) {
                    b.repaired = true;
                    out.push(Event::repair(
                        Some(index),
                        RepairKind::SpecialTokenInContent,
                        token_text(t),
                    ));
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

    /// Lenient EOS; returns whether the stream ended mid-message.
    pub(super) fn eos_lenient(&mut self, out: &mut Vec<Event>) -> bool {
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

    /// Lenient: retains (up to the cap) and emits `delta`; sets `last_content_delta`.
    pub(super) fn retain_and_emit(&mut self, delta: &str, out: &mut Vec<Event>) {
        self.last_delta.clear();
        self.last_delta.push_str(delta);
        self.emit_last_delta(out);
    }

    /// Lenient: retains (up to the cap) and emits the text in `last_delta`, which becomes
    /// `last_content_delta` (none when it is empty).
    pub(super) fn emit_last_delta(&mut self, out: &mut Vec<Event>) {
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
        if b.retain(delta, cap, false) {
            b.repaired = true;
            out.push(Event::repair(
                Some(b.index),
                RepairKind::MessageTooLong,
                format!("retained text cut at {cap} bytes"),
            ));
        }
        if !self.discard_deltas {
            push_delta(out, b.index, b.call, delta);
        }
    }
}
