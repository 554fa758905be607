//! The lenient mode's batch fast path ([`StreamParser::feed`] only): a run of ordinary ids
//! in a message's content is decoded at once, with one delta event for the run. It gives
//! exactly what stepping the ids one by one gives (property-tested in
//! `tests/properties.rs`), which is why it stops before any id that needs the per-token path:
//! special ids, ids outside the vocabulary, and text that could reach the message cap.

use super::buffers::{push_delta, LastDelta, State};
use super::{Event, StreamParser};
use crate::tokenizer::{tokenizer, Rank, N_BASE};

impl StreamParser {
    /// Lenient fast path of [`feed_into`](Self::feed_into): the leading ordinary (not special)
    /// ids of `ids` in the content of a message, decoded straight into its text with one
    /// delta event for the run. Returns how many ids it consumed (0: the per-token path
    /// [`step_lenient`](Self::step_lenient) takes the next id). The same outcome as stepping
    /// them one by one: it stops before an id whose text could cross the message cap.
    #[inline]
    pub(super) fn content_run(&mut self, ids: &[Rank], out: &mut Vec<Event>) -> usize {
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
}
