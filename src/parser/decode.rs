//! Token decoding: ids to UTF-8 text as they arrive.
//!
//! A token's bytes may end inside a multi-byte character, so the bytes of a message go
//! through one [`Dec`], which holds an incomplete trailing sequence until the next token.
//! Every mode uses the same decoder step; they differ only in how often it runs per token:
//!
//! * lossy ([`Dec::push_lossy`]: the lenient and raw modes, header text): everything that
//!   can be decoded now is, each invalid sequence becomes one U+FFFD;
//! * the reference's ([`Dec::push_ref`]: strict and non-strict): one step per token, so
//!   after an invalid sequence the rest waits for the next token, exactly like openai-harmony.
//!
//! An id outside the vocabulary is one U+FFFD in the lossy modes; in the reference modes it
//! poisons the message ([`Dec::poisoned`]).

use crate::error::{HarmonyError, Result};
use crate::tokenizer::{tokenizer, Rank};

/// The replacement character used for undecodable bytes and unknown ids.
pub const REPLACEMENT: &str = "\u{FFFD}";

/// Records the end offset of a piece of text the reference re-encodes on its own
/// (`content_tokens`); offsets past 4 GiB are not recorded.
pub(super) fn push_seg(segs: &mut Vec<u32>, end: usize) {
    if let Ok(e) = u32::try_from(end) {
        segs.push(e);
    }
}

/// Pending undecoded bytes of the current message.
#[derive(Debug, Clone, Default)]
pub(super) struct Dec {
    buf: Vec<u8>,
    start: usize,
    /// Reference modes: an id outside the vocabulary was seen; every later id of the message
    /// is swallowed and the message ends with one U+FFFD (the reference's behaviour).
    pub(super) poisoned: bool,
}

impl Dec {
    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Holds bytes as pending (the undecoded tail of a header that became content).
    pub(super) fn hold(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
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

    /// One decoder step over the pending bytes: the valid prefix, then one U+FFFD if an
    /// invalid sequence follows it. `piece` gets the end offset (in `out`) of each piece
    /// pushed. Returns whether bytes after an invalid sequence are left to decode.
    #[inline]
    fn step(&mut self, out: &mut String, piece: &mut impl FnMut(usize)) -> bool {
        let s = &self.buf[self.start..];
        match std::str::from_utf8(s) {
            Ok(v) => {
                out.push_str(v);
                piece(out.len());
                self.start = self.buf.len();
                false
            }
            Err(e) => {
                let valid = e.valid_up_to();
                if valid > 0 {
                    // the prefix is valid UTF-8 by construction
                    out.push_str(std::str::from_utf8(&s[..valid]).unwrap_or_default());
                    piece(out.len());
                    self.start += valid;
                }
                match e.error_len() {
                    Some(n) => {
                        out.push_str(REPLACEMENT);
                        piece(out.len());
                        self.start += n;
                        true
                    }
                    None => false,
                }
            }
        }
    }

    /// Appends `bytes` and decodes them after the pending ones: all the way (`once` false)
    /// or with a single step (`once`: the reference's behaviour).
    #[inline]
    fn push_with(
        &mut self,
        bytes: &[u8],
        out: &mut String,
        once: bool,
        mut piece: impl FnMut(usize),
    ) {
        if self.start == self.buf.len() {
            if let Ok(s) = std::str::from_utf8(bytes) {
                out.push_str(s);
                piece(out.len());
                return;
            }
        }
        self.buf.extend_from_slice(bytes);
        while self.step(out, &mut piece) && !once {}
        self.compact();
    }

    /// Lossy and complete: decodes everything except an incomplete trailing sequence.
    #[inline]
    pub(super) fn push_lossy(&mut self, bytes: &[u8], out: &mut String) {
        self.push_with(bytes, out, false, |_| {});
    }

    /// The reference's step: decode the pending bytes once; on an error emit the valid prefix
    /// and one U+FFFD and keep the rest for the next token. `segs` receives the end offsets
    /// (in `out`) of the pieces the reference re-encodes separately (see [`push_seg`]).
    #[inline]
    pub(super) fn push_ref(&mut self, bytes: &[u8], out: &mut String, segs: &mut Vec<u32>) {
        self.push_with(bytes, out, true, |end| push_seg(segs, end));
    }

    /// Lossy decoding of one id: its bytes, or (an id outside the vocabulary) the pending
    /// bytes flushed and one U+FFFD. Returns whether the id is in the vocabulary.
    #[inline]
    pub(super) fn push_token_lossy(&mut self, t: Rank, out: &mut String) -> bool {
        match tokenizer().token_bytes(t) {
            Some(b) => {
                self.push_lossy(b, out);
                true
            }
            None => {
                self.flush_lossy(out);
                out.push_str(REPLACEMENT);
                false
            }
        }
    }

    /// Flushes pending bytes lossily (an incomplete sequence becomes U+FFFD).
    pub(super) fn flush_lossy(&mut self, out: &mut String) {
        let p = self.pending();
        if !p.is_empty() {
            out.push_str(&String::from_utf8_lossy(p));
        }
        self.buf.clear();
        self.start = 0;
    }
}

/// Lossy decoding of header ids: returns the text, whether it was clean (valid UTF-8, no
/// unknown id), and the bytes of an incomplete trailing sequence when `keep_tail`.
pub(super) fn decode_header(tokens: &[Rank], keep_tail: bool) -> (String, bool, Vec<u8>) {
    let mut dec = Dec::default();
    let mut out = String::new();
    let mut clean = true;
    for &t in tokens {
        clean &= dec.push_token_lossy(t, &mut out);
    }
    clean = clean && tokenizer().decode_utf8(tokens).is_ok();
    let tail = if keep_tail {
        dec.pending().to_vec()
    } else {
        dec.flush_lossy(&mut out);
        Vec::new()
    };
    (out, clean, tail)
}

/// The text of one id (lossy; U+FFFD for an id outside the vocabulary), for repair details.
pub(super) fn token_text(t: Rank) -> String {
    match tokenizer().token_bytes(t) {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => REPLACEMENT.to_string(),
    }
}

/// The reference's `decode_utf8` errors (used by its non-strict header rescue).
pub(super) fn ref_decode_utf8(tokens: &[Rank]) -> Result<String> {
    let tk = tokenizer();
    let mut bytes = Vec::new();
    for &t in tokens {
        match tk.token_bytes(t) {
            Some(b) => bytes.extend_from_slice(b),
            None => {
                return Err(HarmonyError::Parse(format!(
                    "Could not decode tokens: Invalid token error: Invalid token for decoding: {t}"
                )))
            }
        }
    }
    String::from_utf8(bytes).map_err(|e| {
        HarmonyError::Parse(format!(
            "Could not decode tokens: Invalid utf-8 sequence: {}",
            e.utf8_error()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes fed in arbitrary pieces decode like the whole (an incomplete sequence waits).
    #[test]
    fn lossy_decoding_ignores_where_the_bytes_are_cut() {
        let bytes = "é€😀 x"
            .as_bytes()
            .iter()
            .chain(&[0xFF, b'y', 0xE2, 0x82])
            .copied()
            .collect::<Vec<u8>>();
        for cut in 0..bytes.len() {
            let mut dec = Dec::default();
            let mut out = String::new();
            dec.push_lossy(&bytes[..cut], &mut out);
            dec.push_lossy(&bytes[cut..], &mut out);
            // the incomplete `€` prefix at the end is pending until flushed
            assert_eq!(out, "é€😀 x\u{FFFD}y", "cut at {cut}");
            dec.flush_lossy(&mut out);
            assert_eq!(out, "é€😀 x\u{FFFD}y\u{FFFD}", "cut at {cut}");
        }
    }

    /// The reference's step decodes once per token: after an invalid byte the rest of that
    /// token's bytes wait for the next token; each piece is a re-encoding segment.
    #[test]
    fn reference_decoding_steps_once_per_token() {
        let mut dec = Dec::default();
        let (mut out, mut segs) = (String::new(), Vec::new());
        dec.push_ref(b"a\xFFb", &mut out, &mut segs);
        assert_eq!((out.as_str(), segs.as_slice()), ("a\u{FFFD}", &[1, 4][..]));
        assert_eq!(dec.pending(), b"b");
        dec.push_ref(b"c", &mut out, &mut segs);
        assert_eq!(
            (out.as_str(), segs.as_slice()),
            ("a\u{FFFD}bc", &[1, 4, 6][..])
        );
        assert!(dec.pending().is_empty());
    }

    /// An id outside the vocabulary flushes the pending bytes and is one U+FFFD.
    #[test]
    fn unknown_ids_are_one_replacement_character() {
        let tk = tokenizer();
        let first_byte_of_e_acute = tk.rank_of(&[0xC3]).unwrap();
        let ids = [tk.rank_of(b"a").unwrap(), first_byte_of_e_acute, u32::MAX];
        let (text, clean, tail) = decode_header(&ids, false);
        assert_eq!(
            (text.as_str(), clean, tail.len()),
            ("a\u{FFFD}\u{FFFD}", false, 0)
        );
        let (text, clean, tail) = decode_header(&ids[..2], true);
        assert_eq!((text.as_str(), clean, tail), ("a", false, vec![0xC3]));
        assert_eq!(token_text(u32::MAX), REPLACEMENT);
        assert_eq!(
            ref_decode_utf8(&ids[..2]).unwrap_err().to_string(),
            "Could not decode tokens: Invalid utf-8 sequence: incomplete utf-8 byte sequence from index 1"
        );
    }
}
