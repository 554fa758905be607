//! Feeding and finishing a [`StreamParser`]: construction, [`StreamParser::feed`] /
//! [`StreamParser::process`] and the end of the stream, dispatched to the mode's step
//! (`reference`, `lenient`, `raw`), and the start and end of a message, which every mode
//! shares.

use super::buffers::{Body, HeaderBuf, LastDelta, State, DEFAULT_TOKEN_HISTORY};
use super::decode::REPLACEMENT;
use super::header::{tool_call_of, ParsedHeader};
use super::{Event, Mode, StopReason, StreamParser};
use crate::chat::{Content, Message, Role};
use crate::error::Result;
use crate::limits::Limits;
use crate::tokenizer::{ids, tokenizer, Rank};

/// `<|return|>`, `<|end|>` or `<|call|>`.
pub(super) fn is_stop(t: Rank) -> bool {
    t == ids::RETURN || t == ids::END || t == ids::CALL
}

/// A stop token or `<|endoftext|>`: what ends a message in the lenient and raw modes.
pub(super) fn ends_message(t: Rank) -> bool {
    is_stop(t) || t == ids::ENDOFTEXT
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
            return State::Content(Body::new(
                0,
                ParsedHeader::new(Role::Assistant),
                None,
                false,
                false,
            ));
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

    /// One id through the per-token path of the mode (the history extended first).
    pub(super) fn step(&mut self, t: Rank, out: &mut Vec<Event>) -> Result<()> {
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
    pub(super) fn eos(&mut self, out: &mut Vec<Event>) -> Result<bool> {
        match self.mode {
            Mode::Strict | Mode::NonStrict => self.eos_ref(out),
            Mode::Lenient => Ok(self.eos_lenient(out)),
            Mode::Raw => Ok(self.eos_raw(out)),
        }
    }

    // ----- a message's start and end (every mode) ---------------------------------------------

    /// Opens a message with a complete header: emits `MessageStart` (and `ToolCallStart`
    /// for a call) and enters the Content state. `stray`: a message the reference would not
    /// have made (see [`Body`]).
    pub(super) fn open_body(
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
        self.state = State::Content(Body::new(index, header, call.map(|c| c.0), repaired, stray));
    }

    /// Emits text without touching `last_content_delta` (raw mode, reference end-of-message).
    pub(super) fn emit_text(&mut self, text: &str, out: &mut Vec<Event>) {
        if text.is_empty() {
            return;
        }
        let (cap, seg) = self.retention();
        if let State::Content(b) = &mut self.state {
            b.retain_and_push(text, cap, seg, out);
        }
    }

    /// Ends the open message: flushes undecoded bytes, stores the message, emits the done
    /// events. Strict modes fail only on the total-bytes cap.
    pub(super) fn end_message(&mut self, stop: Option<Rank>, out: &mut Vec<Event>) -> Result<()> {
        let State::Content(mut b) = std::mem::replace(&mut self.state, State::ExpectStart) else {
            return Ok(());
        };
        let mut tail = String::new();
        if self.mode.is_reference() && b.dec.poisoned {
            tail.push_str(REPLACEMENT);
        }
        b.dec.flush_lossy(&mut tail);
        if !tail.is_empty() {
            let (cap, seg) = self.retention();
            b.retain_and_push(&tail, cap, seg, out);
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
}
