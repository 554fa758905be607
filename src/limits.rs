//! Memory and size caps, checked before any large allocation or tokenization.

use crate::error::{HarmonyError, Result};

/// Caps applied when rendering and parsing. Every field has a documented default; the
/// Python `Limits` object mirrors these fields one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tokens in one rendered prompt (default 131,072: the gpt-oss context length).
    pub max_prompt_tokens: usize,
    /// UTF-8 bytes of one message: header fields plus all of its text (default 8 MiB).
    pub max_message_bytes: usize,
    /// UTF-8 bytes of a whole conversation (default 32 MiB).
    pub max_conversation_bytes: usize,
    /// Messages in one conversation (default 100,000).
    pub max_messages: usize,
    /// Nesting depth of a tool's JSON Schema (default 64).
    pub max_schema_depth: usize,
    /// Bytes of one message header while parsing (default 4,096). An over-long header is
    /// turned into content (lenient) or an error (strict); it is never buffered forever.
    pub max_header_bytes: usize,
    /// Bytes of one parsed message's content (default 8 MiB).
    pub max_parsed_message_bytes: usize,
    /// Bytes a parser keeps in its finished messages (default 64 MiB).
    pub max_parsed_total_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_prompt_tokens: 131_072,
            max_message_bytes: 8 << 20,
            max_conversation_bytes: 32 << 20,
            max_messages: 100_000,
            max_schema_depth: 64,
            max_header_bytes: 4096,
            max_parsed_message_bytes: 8 << 20,
            max_parsed_total_bytes: 64 << 20,
        }
    }
}

impl Limits {
    /// Limits that never trigger (for the reference-compatible paths and tests).
    pub fn unlimited() -> Self {
        Limits {
            max_prompt_tokens: usize::MAX,
            max_message_bytes: usize::MAX,
            max_conversation_bytes: usize::MAX,
            max_messages: usize::MAX,
            max_schema_depth: usize::MAX,
            max_header_bytes: usize::MAX,
            max_parsed_message_bytes: usize::MAX,
            max_parsed_total_bytes: usize::MAX,
        }
    }
}

/// Returns `LimitExceeded` when `actual > cap`.
#[inline]
pub fn check(limit: &'static str, cap: usize, actual: usize) -> Result<()> {
    if actual > cap {
        Err(HarmonyError::LimitExceeded { limit, cap: cap as u64, actual: actual as u64 })
    } else {
        Ok(())
    }
}
