//! The lenient mode's header repairs: how a header is read when it ends with `<|message|>`
//! (the reference's rules first, the lenient rules when they fail or misparse), and what
//! becomes of a header that never gets its `<|message|>` (ended by a stop token, a
//! `<|start|>` or EOS, or grown past `max_header_bytes`) and of text found between messages
//! without a `<|start|>` (a header that lost its start, or stray text).

use super::buffers::{HeaderBuf, State};
use super::decode::decode_header;
use super::header::{ref_parse_header, ParsedHeader};
use super::header_lenient::{fix_lone_content_type, lenient_header, looks_like_header, suspicious};
use super::{Event, RepairKind, StreamParser};
use crate::chat::Role;
use crate::tokenizer::Rank;

/// Lenient mode: text outside any message (no `<|start|>`) is held as a possible header for at
/// most this many bytes (or until a line break) before it is streamed as a stray message.
pub const ORPHAN_MAX_BYTES: usize = 256;
/// Lenient mode: a header with more words than this cannot be a Harmony header (role, `to=`,
/// channel, content type: four at most, a few more when malformed), nor can one with a word
/// after a line break: its text becomes content at once and streams (`header_as_content`).
pub const MAX_HEADER_WORDS: usize = 8;

/// Reports the repairs of message `idx`; returns whether there were any.
fn report(idx: usize, repairs: Vec<(RepairKind, String)>, out: &mut Vec<Event>) -> bool {
    let any = !repairs.is_empty();
    for (kind, detail) in repairs {
        out.push(Event::repair(Some(idx), kind, detail));
    }
    any
}

impl StreamParser {
    /// Lenient: a token of text between messages (no `<|start|>`).
    pub(super) fn orphan_push(&mut self, t: Rank, out: &mut Vec<Event>) {
        if !matches!(&self.state, State::Header(h) if h.orphan) {
            self.state = State::Header(HeaderBuf {
                orphan: true,
                ..Default::default()
            });
        }
        let State::Header(h) = &mut self.state else {
            return;
        };
        let bytes = h.push(t);
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
    pub(super) fn lenient_message_token(&mut self, h: HeaderBuf, out: &mut Vec<Event>) {
        let idx = self.next_index;
        let (s, clean, _) = decode_header(&h.tokens, false);
        let role = self.next_role.take();
        let mut repaired = h.repaired;
        if h.orphan {
            out.push(Event::repair(
                Some(idx),
                RepairKind::MissingStart,
                s.clone(),
            ));
            repaired = true;
        }
        if !clean {
            out.push(Event::repair(Some(idx), RepairKind::InvalidHeaderText, ""));
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
                repaired |= report(idx, l.repairs, out);
                l.header
            }
        };
        self.open_body(hdr, s, repaired, h.orphan, out);
    }

    /// Lenient: the header string `s` of a header without `<|message|>`, read by the lenient
    /// rules (repairs reported): the header, its raw text, and the text after it (the first
    /// word that is not header-like starts the message text).
    fn header_and_text(
        &mut self,
        s: String,
        idx: usize,
        out: &mut Vec<Event>,
    ) -> (ParsedHeader, String, String) {
        let role = self.next_role.take();
        let l = lenient_header(&s, role, true);
        report(idx, l.repairs, out);
        match l.content_start {
            Some(c) => (l.header, s[..c].to_string(), s[c..].to_string()),
            None => (l.header, s, String::new()),
        }
    }

    /// Lenient: a header that ended without `<|message|>` (stop token, EOS, `<|start|>`):
    /// header fields from its leading words, the rest is the text of a finished message.
    pub(super) fn header_without_message(
        &mut self,
        h: HeaderBuf,
        stop: Option<Rank>,
        out: &mut Vec<Event>,
    ) {
        let idx = self.next_index;
        let (s, clean, _) = decode_header(&h.tokens, false);
        if h.orphan {
            self.next_role = None;
            if !h.nonws || s.trim().is_empty() {
                self.state = State::ExpectStart;
                out.push(Event::repair(None, RepairKind::StrayWhitespace, s));
                return;
            }
            if !looks_like_header(&s) {
                out.push(Event::repair(Some(idx), RepairKind::StrayText, ""));
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
            out.push(Event::repair(Some(idx), RepairKind::MissingStart, ""));
        }
        out.push(Event::repair(Some(idx), RepairKind::MissingMessage, ""));
        if !clean {
            out.push(Event::repair(Some(idx), RepairKind::InvalidHeaderText, ""));
        }
        let (header, head, mut text) = self.header_and_text(s, idx, out);
        text.truncate(text.trim_end().len());
        self.open_body(header, head, true, false, out);
        self.retain_and_emit(&text, out);
        let _ = self.end_message(stop, out);
    }

    /// Lenient: a header (or orphan text) that grew too long becomes an open message whose
    /// text streams from now on.
    pub(super) fn header_to_content(
        &mut self,
        h: HeaderBuf,
        kind: RepairKind,
        out: &mut Vec<Event>,
    ) {
        let idx = self.next_index;
        let (s, _, tail) = decode_header(&h.tokens, true);
        out.push(Event::repair(Some(idx), kind, ""));
        let orphan = h.orphan && !looks_like_header(&s);
        if h.orphan && !orphan {
            out.push(Event::repair(Some(idx), RepairKind::MissingStart, ""));
        }
        let (hdr, head, text) = if orphan {
            self.next_role = None;
            (ParsedHeader::new(Role::Assistant), String::new(), s)
        } else {
            self.header_and_text(s, idx, out)
        };
        self.open_body(hdr, head, true, true, out);
        if let State::Content(b) = &mut self.state {
            b.dec.hold(&tail);
            b.from_orphan = orphan;
        }
        self.retain_and_emit(&text, out);
    }
}
