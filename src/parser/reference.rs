//! The reference modes: openai-harmony 0.0.8's `StreamableParser`, strict ([`Mode::Strict`])
//! and non-strict ([`Mode::NonStrict`]), bug for bug: the same messages, the same accessor
//! values after every token, the same error text at the same token and the same state after
//! an error (checked against the reference's golden vectors in `tests/golden.rs`). Memory is
//! capped by the limits (an error past a cap).

use super::buffers::{limit_err, push_delta, HeaderBuf, LastDelta, State};
use super::decode::ref_decode_utf8;
use super::header::ref_parse_header;
use super::stream::is_stop;
use super::{Event, Mode, StreamParser};
use crate::error::{HarmonyError, Result};
use crate::tokenizer::{ids, tokenizer, Rank};

fn parse_err(s: impl Into<String>) -> HarmonyError {
    HarmonyError::Parse(s.into())
}

impl StreamParser {
    /// One id in a reference mode.
    pub(super) fn step_ref(&mut self, t: Rank, out: &mut Vec<Event>) -> Result<()> {
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
                    h.push(t);
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

    /// EOS in a reference mode; returns whether the stream ended mid-message.
    pub(super) fn eos_ref(&mut self, out: &mut Vec<Event>) -> Result<bool> {
        match &self.state {
            State::ExpectStart => Ok(false),
            State::Header(_) => Err(parse_err(
                "Unexpected EOS while waiting for message header to complete",
            )),
            State::Content(_) => {
                self.end_message(None, out)?;
                Ok(true)
            }
        }
    }
}
