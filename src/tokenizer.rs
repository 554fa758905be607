//! The o200k_harmony vocabulary and a byte-pair-encoding tokenizer for it.
//!
//! * Ranks 0..199,997 are o200k_base, embedded at build time (see `build.rs`); no file is read
//!   or downloaded at run time. The table is parsed once per process ([`tokenizer`]).
//! * Ids 199,998..=201,088 are special tokens (`<|start|>`, `<|channel|>`, ... and
//!   `<|reserved_N|>` for the rest), as in openai-harmony 0.0.8.
//! * Pre-tokenization follows the o200k pattern exactly. The pattern's one look-ahead
//!   alternative (`\s+(?!\S)`) is emulated after a look-ahead-free match, so a DFA can be
//!   used (the reference uses a backtracking engine): each piece starts where the previous one
//!   ended, and one anchored forward scan of a lazy DFA finds its end.
//! * Merging is the reference's "lowest rank first, leftmost on ties" rule; long pieces use a
//!   heap so that a 16,000-character piece costs O(n log n) instead of O(n^2).

use std::collections::BinaryHeap;
use std::cmp::Reverse;
use std::sync::OnceLock;

use rustc_hash::FxHashMap;

use crate::error::{HarmonyError, Result};

/// A token id.
pub type Rank = u32;

/// Number of ordinary (byte-pair) ranks: 0..199,997.
pub const N_BASE: Rank = 199_998;
/// Number of ids in o200k_harmony (0..=201,088), as in the reference.
pub const N_VOCAB: Rank = 201_089;

/// Ids of the Harmony formatting tokens.
pub mod ids {
    use super::Rank;
    pub const STARTOFTEXT: Rank = 199_998;
    pub const ENDOFTEXT: Rank = 199_999;
    pub const RETURN: Rank = 200_002;
    pub const CONSTRAIN: Rank = 200_003;
    pub const CHANNEL: Rank = 200_005;
    pub const START: Rank = 200_006;
    pub const END: Rank = 200_007;
    pub const MESSAGE: Rank = 200_008;
    pub const CALL: Rank = 200_012;
}

/// SHA-256 of the published o200k_base.tiktoken file.
pub const O200K_BASE_SHA256: &str =
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d";

/// The o200k pre-tokenizer pattern with its look-ahead alternative `\s+(?!\S)` folded into
/// the final `\s+` (the look-ahead is applied in [`Tokenizer::next_piece`]).
const PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+",
);

static RANKS_BIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_ranks.bin"));

/// The o200k_harmony tokenizer. Obtain the shared instance with [`tokenizer`].
pub struct Tokenizer {
    /// One 16-byte slot per rank, so decoding a token touches one cache line: byte 0 is the
    /// length; a token of up to 15 bytes is stored inline in bytes 1..16, a longer one
    /// (length byte 0xFF) as a u32 offset and u32 length into `blob`.
    slots: Vec<[u8; 16]>,
    blob: &'static [u8],
    /// Ordinary tokens of up to [`SHORT`] bytes by their bytes packed into a `u64`
    /// ([`short_key`]): a lookup hashes one integer and compares no bytes.
    short: FxHashMap<u64, Rank>,
    /// The longer ordinary tokens.
    encoder: FxHashMap<&'static [u8], Rank>,
    special_names: Vec<String>,
    special_ids: FxHashMap<String, Rank>,
    /// The pre-tokenizer as a forward lazy DFA: a piece starts where the previous one ended,
    /// so an anchored forward scan finds its end (no reverse scan for the start).
    dfa: regex_automata::hybrid::dfa::DFA,
    /// The same pattern for the rare searches the lazy DFA gives up on (built then).
    regex: OnceLock<regex_automata::meta::Regex>,
    /// Search caches not in use: a call takes one and gives it back, so the lazy DFA's states
    /// and the recent lookups outlive the threads that built them (a server thread per
    /// request); at most one per concurrent call is ever made.
    caches: std::sync::Mutex<Vec<SearchCache>>,
}

/// This thread's search caches of the pre-tokenizer.
struct SearchCache {
    dfa: regex_automata::hybrid::dfa::Cache,
    regex: Option<regex_automata::meta::Cache>,
    /// Recent whole-piece lookups of short pieces, direct-mapped by key: `(key, rank)`,
    /// `Rank::MAX` for "not a token" (key 0: empty entry; no piece has key 0). Text repeats
    /// its frequent pieces, and this small table stays in cache where the full one cannot.
    hot: Box<[(u64, Rank)]>,
}

/// Entries of [`SearchCache::hot`] (a power of two; 16 bytes each).
const HOT: usize = 1 << 14;

/// Search caches kept for later threads (more are dropped when their thread ends).
const MAX_POOLED: usize = 8;

static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();

/// Tokens up to this many bytes are looked up by [`short_key`].
const SHORT: usize = 7;

/// The bytes (at most [`SHORT`], little-endian) and their length (top byte) packed into one
/// integer, then mixed: distinct byte strings give distinct keys. Built from two overlapping loads, in
/// registers (a byte-by-byte copy into a buffer read back as a `u64` stalls the load).
#[inline]
fn short_key(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    debug_assert!(n <= SHORT);
    let v = if n >= 4 {
        let a = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64;
        let b = u32::from_le_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]) as u64;
        a | (b << (8 * (n - 4)))
    } else if n > 0 {
        bytes[0] as u64 | (bytes[n / 2] as u64) << (8 * (n / 2)) | (bytes[n - 1] as u64) << (8 * (n - 1))
    } else {
        0
    };
    // a bijection (xor-shift, then an odd multiplier): distinct keys stay distinct, and
    // every bit of the bytes reaches the bits the hash table indexes with
    let k = v | (n as u64) << 56;
    (k ^ (k >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// The process-wide tokenizer, built on first use (a few milliseconds) and shared.
pub fn tokenizer() -> &'static Tokenizer {
    TOKENIZER.get_or_init(Tokenizer::build)
}

/// The name of special token `id` (199,998..=201,088).
fn special_name(id: Rank) -> String {
    match id {
        ids::STARTOFTEXT => "<|startoftext|>".into(),
        ids::ENDOFTEXT => "<|endoftext|>".into(),
        ids::RETURN => "<|return|>".into(),
        ids::CONSTRAIN => "<|constrain|>".into(),
        ids::CHANNEL => "<|channel|>".into(),
        ids::START => "<|start|>".into(),
        ids::END => "<|end|>".into(),
        ids::MESSAGE => "<|message|>".into(),
        ids::CALL => "<|call|>".into(),
        other => format!("<|reserved_{other}|>"),
    }
}

impl Tokenizer {
    fn build() -> Tokenizer {
        Self::build_with(regex_automata::hybrid::dfa::DFA::config())
    }

    /// `dfa`: the lazy DFA's configuration (tests make it give up, to check the fallback).
    fn build_with(dfa: regex_automata::hybrid::dfa::Config) -> Tokenizer {
        let n = u32::from_le_bytes(RANKS_BIN[0..4].try_into().unwrap());
        assert_eq!(n, N_BASE, "embedded rank table is corrupt");
        let lens = &RANKS_BIN[4..4 + 2 * n as usize];
        let blob: &'static [u8] = &RANKS_BIN[4 + 2 * n as usize..];
        let mut slots: Vec<[u8; 16]> = Vec::with_capacity(n as usize);
        let n_short = (0..n as usize)
            .filter(|&r| (u16::from_le_bytes([lens[2 * r], lens[2 * r + 1]]) as usize) <= SHORT)
            .count();
        let mut short = FxHashMap::with_capacity_and_hasher(n_short, Default::default());
        let mut encoder =
            FxHashMap::with_capacity_and_hasher(n as usize - n_short, Default::default());
        let mut pos = 0u32;
        for rank in 0..n {
            let len = u16::from_le_bytes([lens[2 * rank as usize], lens[2 * rank as usize + 1]]);
            let end = pos + len as u32;
            let bytes = &blob[pos as usize..end as usize];
            let mut slot = [0u8; 16];
            if bytes.len() <= 15 {
                slot[0] = bytes.len() as u8;
                slot[1..1 + bytes.len()].copy_from_slice(bytes);
            } else {
                slot[0] = 0xFF;
                slot[1..5].copy_from_slice(&pos.to_le_bytes());
                slot[5..9].copy_from_slice(&(len as u32).to_le_bytes());
            }
            slots.push(slot);
            if bytes.len() <= SHORT {
                short.insert(short_key(bytes), rank);
            } else {
                encoder.insert(bytes, rank);
            }
            pos = end;
        }
        assert_eq!(pos as usize, blob.len(), "embedded rank table is corrupt");
        let special_names: Vec<String> = (N_BASE..N_VOCAB).map(special_name).collect();
        let special_ids = special_names
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), N_BASE + i as Rank))
            .collect();
        let dfa = regex_automata::hybrid::dfa::DFA::builder()
            .configure(dfa)
            .build(PATTERN)
            .expect("o200k pattern compiles");
        Tokenizer {
            slots,
            blob,
            short,
            encoder,
            special_names,
            special_ids,
            dfa,
            regex: OnceLock::new(),
            caches: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Number of ids (201,089).
    pub fn n_vocab(&self) -> u32 {
        N_VOCAB
    }

    /// Whether `id` is a special token (199,998..=201,088).
    pub fn is_special(&self, id: Rank) -> bool {
        (N_BASE..N_VOCAB).contains(&id)
    }

    /// The bytes of one token (a special token's bytes are its name), or `None` if out of range.
    #[inline]
    pub fn token_bytes(&self, id: Rank) -> Option<&[u8]> {
        if id < N_BASE {
            let slot = &self.slots[id as usize];
            let len = slot[0];
            if len != 0xFF {
                Some(&slot[1..1 + len as usize])
            } else {
                Some(self.long_bytes(slot))
            }
        } else if id < N_VOCAB {
            Some(self.special_names[(id - N_BASE) as usize].as_bytes())
        } else {
            None
        }
    }

    /// Appends the bytes of ordinary token `id` to `out` (a fixed-size copy of its slot for
    /// the short ones); `false`, with `out` unchanged, for a special or unknown id.
    #[inline]
    pub fn append_ordinary(&self, id: Rank, out: &mut Vec<u8>) -> bool {
        let Some(slot) = self.slots.get(id as usize) else {
            return false;
        };
        let len = slot[0];
        if len != 0xFF {
            let old = out.len();
            out.extend_from_slice(&slot[1..]);
            out.truncate(old + len as usize);
        } else {
            out.extend_from_slice(self.long_bytes(slot));
        }
        true
    }

    /// The bytes of a token longer than 15 bytes, from its slot's offset and length.
    #[inline]
    fn long_bytes(&self, slot: &[u8; 16]) -> &[u8] {
        let off = u32::from_le_bytes([slot[1], slot[2], slot[3], slot[4]]) as usize;
        let n = u32::from_le_bytes([slot[5], slot[6], slot[7], slot[8]]) as usize;
        &self.blob[off..off + n]
    }

    /// Asks the CPU to start loading the slot of `id` (a hint: no effect on results). Reading
    /// a batch of ids from Python calls it per id, so the slots' cache misses overlap with
    /// that work instead of stalling the decode that follows.
    #[inline(always)]
    pub fn prefetch_id(&self, id: Rank) {
        #[cfg(target_arch = "x86_64")]
        if let Some(slot) = self.slots.get(id as usize) {
            // SAFETY: a prefetch never faults and changes nothing the program can observe;
            // the address is that of a live slot anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.as_ptr().cast());
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = id;
    }

    /// Touches the slots of `tokens` up front so that their cache misses overlap instead of
    /// being paid one after the other while a batch is decoded (a no-op semantically).
    #[inline]
    pub fn prefetch(&self, tokens: &[Rank]) {
        let mut acc = 0u8;
        for &t in tokens {
            if let Some(slot) = self.slots.get(t as usize) {
                acc ^= slot[0];
            }
        }
        std::hint::black_box(acc);
    }

    /// The id of a special token given its name (`"<|start|>"`).
    pub fn special_id(&self, name: &str) -> Option<Rank> {
        self.special_ids.get(name).copied()
    }

    /// All special token names, in id order.
    pub fn special_names(&self) -> &[String] {
        &self.special_names
    }

    /// The rank of an exact byte string, if it is a single ordinary token.
    #[inline]
    pub fn rank_of(&self, bytes: &[u8]) -> Option<Rank> {
        if bytes.len() <= SHORT {
            self.short.get(&short_key(bytes)).copied()
        } else {
            self.encoder.get(bytes).copied()
        }
    }

    /// Concatenated bytes of `tokens`; errors on an id outside the vocabulary.
    pub fn decode_bytes(&self, tokens: &[Rank]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(tokens.len() * 4);
        for &t in tokens {
            out.extend_from_slice(self.token_bytes(t).ok_or(HarmonyError::InvalidToken(t))?);
        }
        Ok(out)
    }

    /// Decodes `tokens` as UTF-8, failing on invalid ids or invalid UTF-8.
    pub fn decode_utf8(&self, tokens: &[Rank]) -> Result<String> {
        let bytes = self.decode_bytes(tokens).map_err(|e| match e {
            HarmonyError::InvalidToken(t) => HarmonyError::InvalidUtf8(format!(
                "Invalid token error: Invalid token for decoding: {t}"
            )),
            other => other,
        })?;
        String::from_utf8(bytes).map_err(|e| HarmonyError::InvalidUtf8(format!("Invalid utf-8 sequence: {}", e.utf8_error())))
    }

    /// Encodes text with no special-token handling: `<|end|>` in the text is ordinary text.
    pub fn encode_ordinary(&self, text: &str) -> Vec<Rank> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_ordinary_into(text, &mut out);
        out
    }

    /// Like [`encode_ordinary`](Self::encode_ordinary), appending to `out`.
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<Rank>) {
        self.with_cache(|cache| {
            let mut pos = 0;
            while pos < text.len() {
                let end = self.next_piece(cache, text, pos);
                let piece = &text.as_bytes()[pos..end];
                match self.rank_of_cached(&mut cache.hot, piece) {
                    Some(r) => out.push(r),
                    None => self.merge_piece(piece, out),
                }
                pos = end;
            }
        })
    }

    /// Runs `f` with a search cache (taken once per call rather than once per piece, as
    /// `Regex::search` would). The shared tokenizer keeps one per thread, so a thread's
    /// tables stay in its core's caches; a thread's cache goes back to the pool when the
    /// thread ends (a server thread per request), and new threads take from the pool.
    fn with_cache<R>(&self, f: impl FnOnce(&mut SearchCache) -> R) -> R {
        struct Local(Option<SearchCache>);
        impl Drop for Local {
            fn drop(&mut self) {
                if let (Some(c), Some(t)) = (self.0.take(), TOKENIZER.get()) {
                    t.give_back(c);
                }
            }
        }
        thread_local! {
            static LOCAL: std::cell::RefCell<Local> = const { std::cell::RefCell::new(Local(None)) };
        }
        let mut f = Some(f);
        if TOKENIZER.get().is_some_and(|t| std::ptr::eq(t, self)) {
            let r = LOCAL.try_with(|l| match l.try_borrow_mut() {
                Ok(mut l) => {
                    let c = l.0.get_or_insert_with(|| self.take_cache());
                    Some((f.take().expect("unused"))(c))
                }
                Err(_) => None, // (re-entered: never the case)
            });
            if let Ok(Some(r)) = r {
                return r;
            }
        }
        // another tokenizer (tests), or this thread's storage is gone (thread exit)
        let mut c = self.take_cache();
        let r = (f.take().expect("unused"))(&mut c);
        self.give_back(c);
        r
    }

    // (the pool is only ever tried, never waited for: a busy or poisoned lock, or one a fork
    // copied in its locked state, just means a fresh cache or one not kept)
    fn take_cache(&self) -> SearchCache {
        self.caches.try_lock().ok().and_then(|mut v| v.pop()).unwrap_or_else(|| SearchCache {
            dfa: self.dfa.create_cache(),
            regex: None,
            hot: vec![(0, 0); HOT].into_boxed_slice(),
        })
    }

    fn give_back(&self, c: SearchCache) {
        if let Ok(mut v) = self.caches.try_lock() {
            if v.len() < MAX_POOLED {
                v.push(c);
            }
        }
    }

    /// Calls `f` with each pre-tokenizer piece of `text` (for tests and tools).
    pub fn pieces<'a>(&self, text: &'a str) -> Vec<&'a str> {
        self.with_cache(|cache| {
            let mut v = Vec::new();
            let mut pos = 0;
            while pos < text.len() {
                let end = self.next_piece(cache, text, pos);
                v.push(&text[pos..end]);
                pos = end;
            }
            v
        })
    }

    /// End of the pre-tokenizer piece starting at `pos` (every position starts a piece).
    #[inline]
    fn next_piece(&self, cache: &mut SearchCache, text: &str, pos: usize) -> usize {
        let input = regex_automata::Input::new(text)
            .range(pos..)
            .anchored(regex_automata::Anchored::Yes);
        let end = match self.dfa.try_search_fwd(&mut cache.dfa, &input) {
            Ok(Some(m)) => Some(m.offset()),
            Ok(None) => None,
            // the lazy DFA gave up (its cache thrashed): the full regex engine
            Err(_) => {
                let re = self.regex.get_or_init(|| regex_automata::meta::Regex::new(PATTERN).expect("o200k pattern compiles"));
                let c = cache.regex.get_or_insert_with(|| re.create_cache());
                re.search_with(c, &input).filter(|m| m.start() == pos).map(|m| m.end())
            }
        };
        let end = match end {
            Some(end) if end > pos => end,
            // Unreachable for valid UTF-8: every character matches some alternative. Be safe.
            _ => {
                let c = text[pos..].chars().next().map_or(1, |c| c.len_utf8());
                return pos + c;
            }
        };
        let piece = &text[pos..end];
        // Emulate `\s+(?!\S)`: a whitespace run (without a trailing newline, which the
        // `\s*[\r\n]+` alternative would have taken) that is followed by a non-space
        // character gives its last character to the next piece, if it has two or more.
        if end < text.len() {
            let mut chars = piece.chars();
            if let Some(last) = chars.next_back() {
                if last != '\r'
                    && last != '\n'
                    && last.is_whitespace()
                    && chars.clone().next().is_some()
                    && chars.all(char::is_whitespace)
                {
                    return end - last.len_utf8();
                }
            }
        }
        end
    }

    /// [`rank_of`](Self::rank_of) through the `hot` table of recent short lookups.
    #[inline]
    fn rank_of_cached(&self, hot: &mut [(u64, Rank)], piece: &[u8]) -> Option<Rank> {
        if piece.is_empty() || piece.len() > SHORT {
            return self.rank_of(piece);
        }
        let key = short_key(piece);
        let e = &mut hot[(key >> (64 - HOT.trailing_zeros())) as usize];
        if e.0 != key {
            *e = (key, self.short.get(&key).copied().unwrap_or(Rank::MAX));
        }
        (e.1 != Rank::MAX).then_some(e.1)
    }

    /// Byte-pair merges a piece that is not a single token.
    fn merge_piece(&self, piece: &[u8], out: &mut Vec<Rank>) {
        if piece.len() <= 256 {
            self.merge_small(piece, out);
        } else {
            self.merge_heap(piece, out);
        }
    }

    /// Quadratic merge for short pieces (fast in practice): lowest rank first, leftmost on ties.
    fn merge_small(&self, piece: &[u8], out: &mut Vec<Rank>) {
        // parts[i] = (start offset, rank of the pair starting at part i)
        let rank = |parts: &[(usize, Rank)], i: usize| -> Rank {
            if i + 2 < parts.len() {
                self.rank_of(&piece[parts[i].0..parts[i + 2].0]).unwrap_or(Rank::MAX)
            } else {
                Rank::MAX
            }
        };
        let mut parts: Vec<(usize, Rank)> = (0..=piece.len()).map(|i| (i, Rank::MAX)).collect();
        for i in 0..parts.len().saturating_sub(2) {
            parts[i].1 = rank(&parts, i);
        }
        loop {
            if parts.len() <= 2 {
                break;
            }
            let mut best = (Rank::MAX, 0usize);
            for (i, p) in parts[..parts.len() - 2].iter().enumerate() {
                if p.1 < best.0 {
                    best = (p.1, i);
                }
            }
            if best.0 == Rank::MAX {
                break;
            }
            let i = best.1;
            parts.remove(i + 1);
            parts[i].1 = rank(&parts, i);
            if i > 0 {
                parts[i - 1].1 = rank(&parts, i - 1);
            }
        }
        for w in parts.windows(2) {
            out.push(self.rank_of(&piece[w[0].0..w[1].0]).expect("merged parts are tokens"));
        }
    }

    /// Heap-based merge with the same result as [`merge_small`](Self::merge_small), in
    /// O(n log n): used for long pieces (e.g. 16,000 identical letters).
    fn merge_heap(&self, piece: &[u8], out: &mut Vec<Rank>) {
        let n = piece.len();
        assert!(n < u32::MAX as usize);
        // Node i is a part starting at byte i; `next[i]` is where the following part starts
        // (n = the end); `rank[i]` is the rank of the pair starting at node i (MAX: none, or
        // dead node). Heap keys pack (rank, position): the smallest is the lowest rank,
        // leftmost on ties. An entry whose rank no longer equals `rank[i]` is stale (two
        // different byte strings never share a rank, so a changed pair has a changed rank).
        let mut next: Vec<u32> = (1..=n as u32).collect();
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        let pair_rank = |next: &[u32], i: usize| -> Rank {
            let j = next[i] as usize;
            if j >= n {
                return Rank::MAX;
            }
            self.rank_of(&piece[i..next[j] as usize]).unwrap_or(Rank::MAX)
        };
        let mut rank: Vec<Rank> = (0..n).map(|i| pair_rank(&next, i)).collect();
        let key = |r: Rank, i: usize| Reverse(((r as u64) << 32) | i as u64);
        let mut heap: BinaryHeap<Reverse<u64>> =
            rank.iter().enumerate().filter(|(_, &r)| r != Rank::MAX).map(|(i, &r)| key(r, i)).collect();
        while let Some(Reverse(k)) = heap.pop() {
            let (r, i) = ((k >> 32) as Rank, (k & 0xffff_ffff) as usize);
            if rank[i] != r {
                continue; // stale entry
            }
            let j = next[i] as usize;
            rank[j] = Rank::MAX;
            next[i] = next[j];
            if (next[i] as usize) < n {
                prev[next[i] as usize] = i as u32;
            }
            rank[i] = pair_rank(&next, i);
            if rank[i] != Rank::MAX {
                heap.push(key(rank[i], i));
            }
            let p = prev[i];
            if p != u32::MAX {
                let p = p as usize;
                rank[p] = pair_rank(&next, p);
                if rank[p] != Rank::MAX {
                    heap.push(key(rank[p], p));
                }
            }
        }
        let mut i = 0;
        while i < n {
            let j = next[i] as usize;
            out.push(self.rank_of(&piece[i..j]).expect("merged parts are tokens"));
            i = j;
        }
    }

    /// Finds the leftmost special-token string in `text` for which `pred(id)` is true.
    /// Returns (byte start, byte end, id).
    pub fn find_special(&self, text: &str, pred: impl Fn(Rank) -> bool) -> Option<(usize, usize, Rank)> {
        let bytes = text.as_bytes();
        let mut from = 0;
        while let Some(off) = find2(&bytes[from..], b'<', b'|') {
            let start = from + off;
            if let Some(close) = find2(&bytes[start + 2..], b'|', b'>') {
                let end = start + 2 + close + 2;
                if let Some(&id) = self.special_ids.get(&text[start..end]) {
                    if pred(id) {
                        return Some((start, end, id));
                    }
                }
            } else {
                return None;
            }
            from = start + 1;
        }
        None
    }

    /// Encodes text, turning the special-token strings for which `allowed(id)` is true into
    /// their ids and everything else into ordinary tokens (tiktoken's `encode` semantics;
    /// the disallowed-special check is done by the caller with [`find_special`](Self::find_special)).
    pub fn encode_with_special(&self, text: &str, allowed: impl Fn(Rank) -> bool) -> Vec<Rank> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut pos = 0;
        while let Some((s, e, id)) = self.find_special(&text[pos..], &allowed) {
            self.encode_ordinary_into(&text[pos..pos + s], &mut out);
            out.push(id);
            pos += e;
        }
        self.encode_ordinary_into(&text[pos..], &mut out);
        out
    }

    /// The exact text of the o200k_base.tiktoken file (base64 token, space, rank, newline),
    /// rebuilt from the embedded table: its SHA-256 is [`O200K_BASE_SHA256`].
    pub fn o200k_base_tiktoken_file(&self) -> Vec<u8> {
        use base64::Engine as _;
        let mut out = Vec::with_capacity(3_700_000);
        for rank in 0..N_BASE {
            let b = self.token_bytes(rank).unwrap();
            out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(b).as_bytes());
            out.push(b' ');
            out.extend_from_slice(rank.to_string().as_bytes());
            out.push(b'\n');
        }
        out
    }
}

/// Position of the first occurrence of the two-byte sequence `a b` in `hay`.
#[inline]
fn find2(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    let mut i = 0;
    while i + 1 < hay.len() {
        match hay[i..hay.len() - 1].iter().position(|&c| c == a) {
            Some(p) => {
                let k = i + p;
                if hay[k + 1] == b {
                    return Some(k);
                }
                i = k + 1;
            }
            None => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn hot_lookup_table_never_changes_the_result() {
        // 60,000 random short words: far more distinct pieces than the table's 16,384 entries
        // (collisions, evictions, cached misses), encoded twice (second time: hot)
        let t = tokenizer();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut text = String::new();
        for _ in 0..60_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 7) as usize;
            text.push(' ');
            for k in 0..len {
                text.push((b'a' + ((x >> (8 + 5 * k)) % 26) as u8) as char);
            }
        }
        let want: Vec<Rank> = t
            .pieces(&text)
            .iter()
            .flat_map(|p| {
                let mut out = Vec::new();
                match t.rank_of(p.as_bytes()) {
                    Some(r) => out.push(r),
                    None => t.merge_piece(p.as_bytes(), &mut out),
                }
                out
            })
            .collect();
        assert_eq!(t.encode_ordinary(&text), want);
        assert_eq!(t.encode_ordinary(&text), want);
    }

    #[test]
    fn rank_of_finds_every_token_and_nothing_else() {
        let t = tokenizer();
        let mut all = std::collections::HashMap::new();
        for r in 0..N_BASE {
            let b = t.token_bytes(r).unwrap();
            assert_eq!(t.rank_of(b), Some(r), "rank {r}");
            all.insert(b.to_vec(), r);
        }
        // near misses: every token with a byte added or dropped at either end (zero bytes
        // included: the short keys pad with zeros), and every string of 0..=2 bytes
        let mut probes: Vec<Vec<u8>> = vec![Vec::new()];
        for a in 0..=255u8 {
            probes.push(vec![a]);
            for b in 0..=255u8 {
                probes.push(vec![a, b]);
            }
        }
        for b in all.keys().take(20_000) {
            for extra in [0u8, b'a', 0xFF] {
                let mut x = b.clone();
                x.push(extra);
                probes.push(x);
                let mut y = vec![extra];
                y.extend_from_slice(b);
                probes.push(y);
            }
            probes.push(b[1..].to_vec());
            probes.push(b[..b.len() - 1].to_vec());
        }
        for p in &probes {
            assert_eq!(t.rank_of(p), all.get(p).copied(), "{p:?}");
        }
    }

    #[test]
    fn embedded_ranks_hash_to_published_sha256() {
        let file = tokenizer().o200k_base_tiktoken_file();
        assert_eq!(file.len(), 3_613_922);
        let digest = Sha256::digest(&file);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, O200K_BASE_SHA256);
    }

    #[test]
    fn specials() {
        let t = tokenizer();
        assert_eq!(t.special_id("<|start|>"), Some(200_006));
        assert_eq!(t.special_id("<|reserved_200013|>"), Some(200_013));
        assert_eq!(t.special_id("<|endofprompt|>"), None);
        assert_eq!(t.token_bytes(201_088), Some(&b"<|reserved_201088|>"[..]));
        assert_eq!(t.token_bytes(201_089), None);
        assert_eq!(t.special_names().len(), 1091);
    }

    #[test]
    fn whitespace_lookahead_emulation() {
        let t = tokenizer();
        assert_eq!(t.pieces("a   b"), vec!["a", "  ", " b"]);
        assert_eq!(t.pieces("a \n  b"), vec!["a", " \n", " ", " b"]);
        assert_eq!(t.pieces("a   "), vec!["a", "   "]);
        assert_eq!(t.pieces("x\t\ty"), vec!["x", "\t", "\ty"]);
    }

    fn merge_both(piece: &[u8]) -> (Vec<Rank>, Vec<Rank>) {
        let t = tokenizer();
        let (mut a, mut b) = (vec![], vec![]);
        t.merge_small(piece, &mut a);
        t.merge_heap(piece, &mut b);
        (a, b)
    }

    #[test]
    fn heap_merge_equals_quadratic_merge() {
        for s in ["aaaaaaaaaaaaaaaaaaaaaaa", "hello world", "ababababababab", "\u{1F600}\u{1F600}xx"] {
            let (a, b) = merge_both(s.as_bytes());
            assert_eq!(a, b, "{s}");
        }
    }

    proptest::proptest! {
        #[test]
        fn prop_dfa_fallback_gives_the_same_pieces(s in "\\PC{0,120}|[ \t\r\n\u{a0}\u{3000}a-z'.]{0,60}") {
            // a lazy DFA that gives up at once: every piece comes from the fallback engine
            use std::sync::OnceLock;
            static GIVE_UP: OnceLock<Tokenizer> = OnceLock::new();
            let t = GIVE_UP.get_or_init(|| {
                Tokenizer::build_with(
                    regex_automata::hybrid::dfa::DFA::config()
                        .cache_capacity(0)
                        .skip_cache_capacity_check(true)
                        .minimum_cache_clear_count(Some(0)),
                )
            });
            proptest::prop_assert_eq!(t.pieces(&s), tokenizer().pieces(&s));
            proptest::prop_assert_eq!(t.encode_ordinary(&s), tokenizer().encode_ordinary(&s));
        }

        #[test]
        fn prop_heap_equals_small(s in "\\PC{0,80}") {
            let (a, b) = merge_both(s.as_bytes());
            proptest::prop_assert_eq!(a, b);
        }

        #[test]
        fn prop_heap_equals_small_long_runs(s in "[ab ]{200,600}|[a]{100,700}|[\\x{4e00}-\\x{4e10}]{50,200}") {
            let (a, b) = merge_both(s.as_bytes());
            proptest::prop_assert_eq!(a, b);
        }

        #[test]
        fn prop_roundtrip(s in "\\PC{0,200}") {
            let t = tokenizer();
            let ids = t.encode_ordinary(&s);
            proptest::prop_assert_eq!(t.decode_utf8(&ids).unwrap(), s);
        }
    }
}
