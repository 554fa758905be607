//! The raw mode ([`Mode::Raw`](super::Mode::Raw)): no structure. Every id's text (special
//! tokens by name, U+FFFD for an id outside the vocabulary) is a content delta of one message
//! that never ends; the stream's stop reason is its last stop token, if it ended on one.

use super::buffers::{push_delta, LastDelta, State};
use super::stream::ends_message;
use super::{Event, StreamParser};
use crate::tokenizer::Rank;

impl StreamParser {
    /// One id in raw mode.
    pub(super) fn step_raw(&mut self, t: Rank, out: &mut Vec<Event>) {
        if ends_message(t) {
            self.last_stop = Some(t);
        }
        // `last_delta` is only scratch here (raw mode has no `last_content_delta`)
        self.last = LastDelta::None;
        let State::Content(b) = &mut self.state else {
            return;
        };
        let delta = &mut self.last_delta;
        delta.clear();
        b.dec.push_token_lossy(t, delta);
        if delta.is_empty() {
            return;
        }
        b.retain(delta, self.limits.max_parsed_message_bytes, false);
        if !self.discard_deltas {
            push_delta(out, b.index, b.call, delta);
        }
    }

    /// EOS in raw mode: flushes undecoded bytes; returns whether the stream ended
    /// mid-message (not on a stop token).
    pub(super) fn eos_raw(&mut self, out: &mut Vec<Event>) -> bool {
        let mut text = String::new();
        if let State::Content(b) = &mut self.state {
            b.dec.flush_lossy(&mut text);
        }
        self.emit_text(&text, out);
        self.last = LastDelta::None;
        let last = self.tokens.last().copied();
        let ended = last.is_some_and(ends_message);
        if ended {
            self.last_stop = last;
        }
        !ended
    }
}
