//! The parser's tests, by what they pin:
//!
//! * `golden.rs`: the reference's golden vectors (strict, non-strict, lenient where the
//!   reference succeeds) and the fuzzing differential test;
//! * `outcome_table.rs`: one test per row of the lenient outcome table;
//! * `bounds.rs`: the memory bounds;
//! * `api.rs`: the raw mode and the accessors;
//! * `properties.rs`: the property tests (chunking, fast path, round trip, lossless).
//!
//! Unit tests of single pieces (decoder, lexer) are beside them (`decode.rs`, `header_lex.rs`).
//! The helpers below are shared.

mod api;
mod bounds;
mod golden;
mod outcome_table;
mod properties;

use super::*;
use crate::tokenizer::tokenizer;

const S: &str = "<|start|>assistant";

fn toks(s: &str) -> Vec<Rank> {
    tokenizer().encode_with_special(s, |_| true)
}

fn run(mode: Mode, role: Option<Role>, ids: &[Rank]) -> (Vec<Event>, StreamParser) {
    let mut p = StreamParser::new(role, mode, Limits::default());
    let mut ev = p.feed(ids).expect("feed");
    ev.extend(p.finish().expect("finish"));
    (ev, p)
}

fn lenient(s: &str, role: Option<Role>) -> (Vec<Event>, StreamParser) {
    run(Mode::Lenient, role, &toks(s))
}

/// (role, name, channel, recipient, content type, text) of each message.
type M = (
    Role,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

fn msgs(p: &StreamParser) -> Vec<M> {
    p.messages()
        .iter()
        .map(|m| {
            (
                m.author.role,
                m.author.name.clone(),
                m.channel.clone(),
                m.recipient.clone(),
                m.content_type.clone(),
                m.text_content(),
            )
        })
        .collect()
}

fn m(role: Role, ch: Option<&str>, to: Option<&str>, ct: Option<&str>, text: &str) -> M {
    (
        role,
        None,
        ch.map(Into::into),
        to.map(Into::into),
        ct.map(Into::into),
        text.into(),
    )
}

fn repairs(ev: &[Event]) -> Vec<RepairKind> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Repair { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

fn last(ev: &[Event]) -> &Event {
    ev.last().unwrap()
}

fn strict_msgs(s: &str, role: Option<Role>) -> Result<Vec<M>> {
    let mut p = StreamParser::new(role, Mode::Strict, Limits::default());
    p.feed(&toks(s))?;
    p.finish()?;
    Ok(msgs(&p))
}

use Role::{Assistant as A, Tool as T, User as U};
