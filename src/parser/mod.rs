//! Streaming parser of Harmony model output (token ids in, messages and events out).
//!
//! One [`StreamParser`] is fed ids one at a time or in batches ([`StreamParser::feed`]) and
//! does constant work per token: the current message's text is extended, never re-decoded or
//! re-encoded, and no JSON is produced (except by [`StreamParser::state_json`], on request).
//!
//! # Modes
//!
//! * [`Mode::Strict`]: openai-harmony 0.0.8's `StreamableParser(strict=True)`, bug for bug: the
//!   same messages, the same accessor values after every token, the same error (message text
//!   included) at the same token, and the same state after an error.
//! * [`Mode::NonStrict`]: the reference's `strict=False` (it only adds the "stop token inside a
//!   header" rescue of a first message when the role was given; it still raises otherwise).
//! * [`Mode::Lenient`]: never returns an error and never panics. On input that the reference
//!   parses without error it returns the same messages, except the documented deviations below
//!   (each one is a place where the reference silently loses text or misparses valid output).
//!   Everything else is repaired, and every repair is reported by an [`Event::Repair`] and marks
//!   its message in [`StreamParser::repaired`].
//! * [`Mode::Raw`]: no structure; every id's text (special tokens by name) is a content delta.
//!
//! # Lenient mode: documented outcomes
//!
//! `S` = `<|start|>`, `C` = `<|channel|>`, `M` = `<|message|>`, `K` = `<|constrain|>`,
//! `E`/`R`/`L` = `<|end|>`/`<|return|>`/`<|call|>`. Each row has a unit test (`lenient_*`, named
//! after it, in `tests/outcome_table.rs`).
//!
//! | input (model output)                                | reference (strict)            | lenient outcome                                                           | repair kinds |
//! |-----------------------------------------------------|-------------------------------|---------------------------------------------------------------------------|--------------|
//! | `S assistant to=functions.f C commentary K json M {..} L` | call                    | same: recipient `functions.f`, content type `<\|constrain\|>json`, ToolCall events | - |
//! | `S assistant C commentary to=functions.f K json M {..} L` | call                    | same (recipient after the channel)                                       | - |
//! | `S assistant C analysis to=functions.f M {..} L`    | call on analysis              | same; a tool call too                                                      | - |
//! | content type `K json`, `json`, `code`, none         | content type                  | same                                                                       | - |
//! | `S assistant C final K json M {..} R`               | recipient `<\|constrain\|>json` (misparse) | content type `<\|constrain\|>json`, no recipient (also a lone `json`/`code`) | - |
//! | `S assistant C final Hello E` (no `M`), role given  | message `Hello`               | same                                                                       | missing_message |
//! | the same without a given role, or a later message  | error / message silently lost | message `Hello` on channel `final`                                         | missing_message |
//! | `C final M Hi E` with no role (no `S`/role)          | error                         | assistant message `Hi`                                                     | missing_start, missing_role |
//! | `assistant C final M Hi E` after a message (no `S`)  | error                         | assistant message `Hi`                                                     | missing_start |
//! | `... E Hello S ...` (stray text between messages)    | error                         | `Hello` becomes its own assistant message (no channel)                     | stray_text |
//! | stray whitespace between messages                    | error                         | dropped (text in the repair's detail)                                      | stray_whitespace |
//! | `... E R` (`<\|return\|>` right after `<\|end\|>`)    | error                         | ignored; the stream's stop reason becomes `Return`                         | stray_token |
//! | `S S assistant ...` (double start)                  | error                         | second `S` ignored                                                         | double_start |
//! | `S assistant C analysis C analysis M ...`            | error                         | channel `analysis`                                                         | duplicate_channel |
//! | `... to=functions.f to=functions.g M` (doubled `to=`) | error                        | first recipient kept, the other in the detail                              | duplicate_recipient |
//! | `... to=functions.f L trailing text` (garbage after call) | error                   | the call, then a stray message `trailing text`; stream reason `Call`       | stray_text |
//! | `S robot M x E` (unknown role)                      | error                         | tool message with name `robot`                                             | unknown_role |
//! | `S assistantassistant C final M x E`                | error                         | assistant                                                                  | doubled_role |
//! | `S user:alice M hi E` (named author)                 | error                         | user message, author name `alice`                                          | - |
//! | `S assistant C M x E` (empty channel)                | error                         | no channel                                                                 | empty_channel |
//! | `S assistant C commentary ––commentary to=f M`      | error (leftover words)        | channel `commentary`, recipient `f`; extra words dropped from the header   | extra_header_words |
//! | `S assistant C ––commentary M x E`                  | channel `––commentary`        | same (custom channel names are kept verbatim)                              | - |
//! | unknown/out-of-range id in content                   | swallows the rest of the message | U+FFFD for that id, parsing goes on                                     | invalid_token |
//! | `<\|reserved_200013\|>`, `C`, `M`, `K` inside content | kept as their text       | same (text kept)                                                           | special_token_in_content |
//! | `S assistant C analysis M plan S assistant C final M Hi R` (no `E` before `S`) | `S`, the next header and its text kept as text | `plan` ends at `S` (`MessageDone` without stop token), then the message `Hi` on `final` | missing_end |
//! | `<\|endoftext\|>` inside content                     | kept as text                  | ends the message (stop token 199999, stream reason `EndOfText`)            | - |
//! | several tool calls in one stream                     | messages                      | same; `call_index` counts them                                             | - |
//! | truncated mid-header (`S assistant C fin`)           | error at EOS                  | message (channel `fin`, empty text), then `Incomplete{Truncated}`          | missing_message |
//! | truncated mid-content                                | message                       | same message, then `Incomplete{Truncated}` (or `Length` via `finish_length`) | - |
//! | header longer than `max_header_bytes`                | (no cap)                      | header text becomes content of an open message                            | header_too_long |
//! | header text that cannot be a header: a word after a line break, or more than [`MAX_HEADER_WORDS`] words (`S assistant Hello there, how are you today my friend`) | kept as header (error at `M`/EOS) | the text so far becomes content of an open message; what follows streams as content | header_as_content |
//! | content over `max_parsed_message_bytes`              | (no cap)                      | deltas go on; the retained message text stops at the cap                  | message_too_long |
//!
//! Other deviations from the reference in lenient mode (all on input the reference accepts):
//! the text of a message without `<|message|>` keeps its inner whitespace (the reference joins
//! words with one space), and leading `to=`/`<|constrain|>` words of such a header are header
//! fields; a `<|start|>` at the very beginning of a header is ignored (the reference makes
//! `<|start|>assistant` the recipient); a recipient or content type containing a special-token
//! name, or an empty `to=`, sends the header to the lenient header parser.
//!
//! # Events
//!
//! For every message: [`Event::MessageStart`] once its header is complete, then
//! [`Event::ContentDelta`]s (each one UTF-8 complete), then [`Event::MessageDone`]. A delta
//! is appended to the last event of the output when that is a delta of the same message (or
//! tool call): a batch ([`StreamParser::feed`]) holds one delta event per message part, not
//! one per token, and only the split of the text into deltas depends on the batching. A message
//! is a tool call when its author is the assistant and it has a recipient other than
//! `assistant`, `user`, `all`, `system`, `developer`: then [`Event::ToolCallStart`] follows the
//! `MessageStart`, [`Event::ToolCallDelta`]s replace the content deltas, and
//! [`Event::ToolCallDone`] precedes the `MessageDone` (tool results, `functions.x to=assistant`,
//! are not calls). [`StreamParser::finish`] ends the stream with [`Event::Done`] or
//! [`Event::Incomplete`].
//!
//! # Lossless guarantee (lenient mode)
//!
//! Let `E` be the concatenation, in event order, of every `MessageStart::raw_header`,
//! `ContentDelta::text`, `ToolCallDelta::arguments` and the `detail` of `stray_token` and
//! `stray_whitespace` repairs. Let `D` be the input decoded (special tokens by name, an
//! out-of-range id as U+FFFD, invalid UTF-8 replaced by U+FFFD per segment between the
//! structural tokens `<|start|>`, `<|message|>`, `<|end|>`, `<|return|>`, `<|call|>`,
//! `<|startoftext|>`, `<|endoftext|>`). With those seven names and all whitespace removed from
//! both, `E == D` (whitespace is only trimmed around the text of a message without
//! `<|message|>`). Content of well-formed messages is byte-exact.
//!
//! # Memory bounds
//!
//! * A header is never buffered past `Limits::max_header_bytes` (strict: `LimitExceeded`, the
//!   header is dropped; lenient: it becomes content), and in lenient mode not past a word
//!   after a line break or [`MAX_HEADER_WORDS`] words (it becomes content: output with no
//!   header streams). Text before a missing `<|start|>` is buffered at most
//!   [`ORPHAN_MAX_BYTES`] (or up to its first line break).
//! * The retained text of one message is at most `Limits::max_parsed_message_bytes` (strict:
//!   `LimitExceeded` and the message is abandoned; lenient/raw: the deltas go on, the retained
//!   text stops growing).
//! * Finished messages retained by [`StreamParser::messages`] total at most
//!   `Limits::max_parsed_total_bytes` plus one message (strict: `LimitExceeded`; lenient: the
//!   oldest messages are evicted, see [`StreamParser::first_message_index`]).
//! * The token history ([`StreamParser::tokens`]) keeps between `n` and `2n` most recent ids,
//!   `n` = [`DEFAULT_TOKEN_HISTORY`] unless set with [`StreamParser::set_token_history`]
//!   (0 keeps none). The reference keeps every id.
//!
//! # Where things are
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | this documentation, [`StreamParser`]'s fields, [`parse_completion`] |
//! | `types.rs` | the public vocabulary: [`Mode`], [`Event`], [`StopReason`], [`RepairKind`], [`StateKind`] |
//! | `stream.rs` | feeding and finishing: [`StreamParser::feed`], [`StreamParser::process`], [`StreamParser::finish`], a message's start and end (shared by every mode) |
//! | `accessors.rs` | reading the state: messages, `current_*`, `last_content_delta`, the reference's `state` JSON |
//! | `buffers.rs` | the state and its bounded buffers: header, open message, finished messages, token history, delta merging |
//! | `decode.rs` | token decoding: UTF-8 assembly across tokens, U+FFFD |
//! | `header.rs` | [`ParsedHeader`], tool calls ([`tool_call_of`]), the reference's header rules |
//! | `header_lex.rs`, `header_lenient.rs` | the lenient header lexer and rules |
//! | `reference.rs` | the strict and non-strict modes (openai-harmony bug for bug) |
//! | `lenient.rs` | the lenient mode: content, stop tokens, `<\|start\|>` in content, EOS |
//! | `lenient_repair.rs` | the lenient mode's header repairs: no `<\|message\|>`, no `<\|start\|>`, stray text, over-long headers |
//! | `lenient_run.rs` | the lenient mode's batch fast path for runs of ordinary content tokens |
//! | `raw.rs` | the raw mode |
//! | `tests/` | golden vectors, one test per outcome-table row, memory bounds, property tests |

mod accessors;
mod buffers;
mod decode;
mod header;
mod header_lenient;
mod header_lex;
mod lenient;
mod lenient_repair;
mod lenient_run;
mod raw;
mod reference;
mod stream;
mod types;

#[cfg(test)]
mod tests;

pub use buffers::DEFAULT_TOKEN_HISTORY;
pub use decode::REPLACEMENT;
pub use header::{tool_call_of, ParsedHeader};
pub use lenient_repair::{MAX_HEADER_WORDS, ORPHAN_MAX_BYTES};
pub use types::{Event, Mode, RepairKind, StateKind, StopReason};

use crate::chat::{Message, Role};
use crate::error::Result;
use crate::limits::Limits;
use crate::tokenizer::Rank;
use buffers::{LastDelta, State};

/// The streaming parser. `Clone` is a cheap snapshot (restore by assignment).
///
/// Its methods are spread over the files of this module by concern: feeding and finishing
/// in `stream.rs`, reading the state in `accessors.rs`, each mode's step in `reference.rs`,
/// `lenient*.rs` and `raw.rs`, the buffers in `buffers.rs`.
#[derive(Debug, Clone)]
pub struct StreamParser {
    mode: Mode,
    limits: Limits,
    /// The role given to [`StreamParser::new`] (kept for [`StreamParser::reset`]).
    initial_role: Option<Role>,
    /// The role of the next header when it was given (the first message only).
    next_role: Option<Role>,
    state: State,
    /// Where `last_content_delta` is.
    last: LastDelta,
    /// A reused buffer (`last_content_delta` when `last` is `Buf`; scratch otherwise).
    last_delta: String,
    /// Finished messages still retained, and whether each was repaired.
    messages: Vec<Message>,
    repaired: Vec<bool>,
    /// Finished messages evicted or taken (the stream index of `messages[0]`).
    evicted: usize,
    /// `Message::byte_size` sum of `messages`.
    retained_bytes: usize,
    /// Stream index of the next message, and number of tool calls so far.
    next_index: usize,
    calls: usize,
    /// Recent ids (between `token_cap` and `2 * token_cap`) and the count of older ones.
    tokens: Vec<Rank>,
    token_cap: usize,
    tokens_dropped: u64,
    /// The last stop token seen (the stream's stop reason).
    last_stop: Option<Rank>,
    /// Reused event buffer of [`StreamParser::process`].
    scratch: Vec<Event>,
    /// The bytes of a run of content tokens, decoded at once (see `content_run`).
    raw: Vec<u8>,
    /// Set during [`StreamParser::process`]: its events are discarded, so no delta events
    /// are built.
    discard_deltas: bool,
}

/// Parses a complete completion (the reference's `parse_messages_from_completion_tokens`):
/// feeds every id, then EOS, and returns the messages.
pub fn parse_completion(
    tokens: &[Rank],
    role: Option<Role>,
    mode: Mode,
    limits: Limits,
) -> Result<Vec<Message>> {
    let mut p = StreamParser::new(role, mode, limits);
    p.set_token_history(0);
    p.discard_deltas = true;
    let mut sink = Vec::new();
    for &t in tokens {
        p.step(t, &mut sink)?;
        sink.clear();
    }
    p.eos(&mut sink)?;
    Ok(p.take_messages())
}
