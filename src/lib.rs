//! llama-harmony: an exact, offline and fast implementation of OpenAI's Harmony format
//! (the chat format of the gpt-oss models).
//!
//! * [`tokenizer`]: the o200k_harmony vocabulary (embedded) and BPE tokenizer.
//! * [`chat`]: the message model.
//! * [`schema_ts`]: JSON Schema to the TypeScript-like tool signatures of the developer message.
//! * [`render`]: conversation to token ids, token-for-token identical to openai-harmony 0.0.8.
//! * [`parser`]: streaming, lossless parser of model output.
//! * [`limits`], [`error`]: caps and typed errors.
//! * `python` (feature `python`): the PyO3 binding.

pub mod chat;
pub mod error;
pub mod limits;
pub mod parser;
pub mod render;
pub mod schema_ts;
pub mod tokenizer;

#[cfg(feature = "python")]
mod python;

pub use error::{HarmonyError, Result};
pub use limits::Limits;
