//! The crate's error type. Every fallible public function returns [`Result`].
//!
//! The Python binding maps [`HarmonyError::LimitExceeded`] to `llama_harmony.LimitExceeded`
//! (a subclass of `HarmonyError`) and everything else to `llama_harmony.HarmonyError`
//! (a subclass of `RuntimeError`, like the reference's).

/// Errors raised by the tokenizer, the renderer and the parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HarmonyError {
    /// A token id outside the vocabulary was given to a decoder.
    #[error("Invalid token for decoding: {0}")]
    InvalidToken(u32),
    /// Decoded bytes are not valid UTF-8 (only `decode_utf8` reports this).
    #[error("Could not decode tokens: {0}")]
    InvalidUtf8(String),
    /// Text contains a special-token string that the caller did not allow.
    #[error(
        "Encountered text corresponding to disallowed special token {token:?}. \
         Pass it in `allowed_special` to encode it as the special token, or remove it from \
         `disallowed_special` (e.g. `disallowed_special=()`) to encode it as ordinary text."
    )]
    DisallowedSpecial { token: String },
    /// A configured cap was exceeded; raised before the large work or allocation happens.
    #[error("limit exceeded: {limit} is {actual}, over the cap of {cap} (raise it with Limits(...) if this is intended)")]
    LimitExceeded { limit: &'static str, cap: u64, actual: u64 },
    /// The conversation or message cannot be rendered (e.g. a tool message without a name).
    #[error("{0}")]
    Render(String),
    /// Strict parsing met malformed model output.
    #[error("{0}")]
    Parse(String),
    /// An argument is not valid (unknown role, bad JSON value, ...).
    #[error("{0}")]
    InvalidArgument(String),
}

pub type Result<T> = std::result::Result<T, HarmonyError>;
