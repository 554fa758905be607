//! Reading a [`StreamParser`]'s state between ids: the finished messages, the token history,
//! the open message (`current_*`, `last_content_delta`), and the reference's `state` and
//! `content_tokens`, as openai-harmony's `StreamableParser` exposes them.

use super::buffers::{LastDelta, State};
use super::header::ParsedHeader;
use super::{Mode, StateKind, StreamParser};
use crate::chat::{Message, Role};
use crate::tokenizer::{tokenizer, Rank};

impl StreamParser {
    /// Finished messages (the oldest may have been evicted, see
    /// [`first_message_index`](Self::first_message_index)).
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Whether each of [`messages`](Self::messages) was repaired (lenient mode).
    pub fn repaired(&self) -> &[bool] {
        &self.repaired
    }

    /// Stream index of `messages()[0]` (the number of evicted messages).
    pub fn first_message_index(&self) -> usize {
        self.evicted
    }

    /// Bytes retained by the finished messages (`Message::byte_size` sum).
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }

    /// Takes the finished messages out of the parser (frees their memory).
    pub fn take_messages(&mut self) -> Vec<Message> {
        self.evicted += self.messages.len();
        self.retained_bytes = 0;
        self.repaired.clear();
        std::mem::take(&mut self.messages)
    }

    /// Recent ids fed (see [`set_token_history`](Self::set_token_history)).
    pub fn tokens(&self) -> &[Rank] {
        &self.tokens
    }

    /// Ids fed but no longer retained by [`tokens`](Self::tokens).
    pub fn tokens_dropped(&self) -> u64 {
        self.tokens_dropped
    }

    pub fn state(&self) -> StateKind {
        match &self.state {
            State::ExpectStart => StateKind::ExpectStart,
            State::Header(_) => StateKind::Header,
            State::Content(_) => StateKind::Content,
        }
    }

    /// The header ids buffered so far (Header state).
    pub fn header_tokens(&self) -> &[Rank] {
        match &self.state {
            State::Header(h) => &h.tokens,
            _ => &[],
        }
    }

    /// The open message's header (Content state).
    pub fn current_header(&self) -> Option<&ParsedHeader> {
        match &self.state {
            State::Content(b) if self.mode != Mode::Raw => Some(&b.header),
            _ => None,
        }
    }

    /// Stream index of the open message (Content state).
    pub fn current_index(&self) -> Option<usize> {
        match &self.state {
            State::Content(b) if self.mode != Mode::Raw => Some(b.index),
            _ => None,
        }
    }

    pub fn current_role(&self) -> Option<Role> {
        match self.current_header() {
            Some(h) => Some(h.author.role),
            None => self.next_role,
        }
    }

    pub fn current_channel(&self) -> Option<&str> {
        self.current_header().and_then(|h| h.channel.as_deref())
    }

    pub fn current_recipient(&self) -> Option<&str> {
        self.current_header().and_then(|h| h.recipient.as_deref())
    }

    pub fn current_content_type(&self) -> Option<&str> {
        self.current_header()
            .and_then(|h| h.content_type.as_deref())
    }

    /// The open message's text so far (decoded; undecodable bytes pending).
    pub fn current_content(&self) -> &str {
        match &self.state {
            State::Content(b) => &b.text,
            _ => "",
        }
    }

    /// Text produced by the last id (`None` if it produced none), as the reference.
    pub fn last_content_delta(&self) -> Option<&str> {
        match self.last {
            LastDelta::None => None,
            LastDelta::Buf => Some(&self.last_delta),
            LastDelta::Text(start) => match &self.state {
                State::Content(b) => b.text.get(start..),
                _ => None,
            },
        }
    }

    /// The reference's `content_tokens`: each decoded piece re-encoded on its own.
    pub fn content_tokens(&self) -> Vec<Rank> {
        let State::Content(b) = &self.state else {
            return Vec::new();
        };
        let tk = tokenizer();
        let mut out = Vec::new();
        let mut prev = 0;
        for &e in &b.segs {
            let e = e as usize;
            if e > prev
                && e <= b.text.len()
                && b.text.is_char_boundary(prev)
                && b.text.is_char_boundary(e)
            {
                tk.encode_ordinary_into(&b.text[prev..e], &mut out);
            }
            prev = e;
        }
        if prev < b.text.len() {
            tk.encode_ordinary_into(&b.text[prev..], &mut out);
        }
        out
    }

    /// The reference's `state` JSON (`{"state":"ExpectStart"}`, ...). Built on request only.
    pub fn state_json(&self) -> String {
        use serde_json::{json, Map, Value};
        let v = match &self.state {
            State::ExpectStart => json!({"state": "ExpectStart"}),
            State::Header(h) => json!({"state": "Header", "header_tokens": h.tokens}),
            State::Content(b) => {
                let mut author = Map::new();
                author.insert(
                    "role".into(),
                    Value::String(b.header.author.role.as_str().into()),
                );
                if let Some(n) = &b.header.author.name {
                    author.insert("name".into(), Value::String(n.clone()));
                }
                json!({
                    "state": "Content",
                    "header": {
                        "author": author,
                        "recipient": b.header.recipient,
                        "channel": b.header.channel,
                        "content_type": b.header.content_type,
                    },
                    "content_tokens": self.content_tokens(),
                })
            }
        };
        v.to_string()
    }
}
