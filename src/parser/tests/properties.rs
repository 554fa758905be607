//! Property tests (proptest) of the invariants the module documentation states: batching
//! changes nothing but the split of deltas, the batch fast path equals the per-token path,
//! render then parse is the identity, the lenient mode never fails and loses nothing, the
//! reference modes never panic. Plus an ignored throughput measurement.

use super::*;
use crate::chat::{Author, Content};
use crate::parser::buffers::push_delta;
use crate::parser::decode::{token_text, Dec};
use crate::tokenizer::{ids, tokenizer};

use proptest::prelude::*;

const STRUCTURAL: [Rank; 7] = [
    ids::START,
    ids::MESSAGE,
    ids::END,
    ids::RETURN,
    ids::CALL,
    ids::STARTOFTEXT,
    ids::ENDOFTEXT,
];

fn normalize(s: &str) -> String {
    let mut s = s.to_string();
    for t in STRUCTURAL {
        s = s.replace(&token_text(t), "");
    }
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The input's text per the lossless guarantee (module documentation).
fn decoded_input(ids: &[Rank]) -> String {
    let mut out = String::new();
    let mut dec = Dec::default();
    for &t in ids {
        if STRUCTURAL.contains(&t) {
            dec.flush_lossy(&mut out);
            continue;
        }
        match tokenizer().token_bytes(t) {
            Some(b) => dec.push_lossy(b, &mut out),
            None => {
                dec.flush_lossy(&mut out);
                out.push_str(REPLACEMENT);
            }
        }
    }
    dec.flush_lossy(&mut out);
    out
}

fn event_text(ev: &[Event]) -> String {
    let mut s = String::new();
    for e in ev {
        match e {
            Event::MessageStart { raw_header, .. } => s.push_str(raw_header),
            Event::ContentDelta { text, .. } => s.push_str(text),
            Event::ToolCallDelta { arguments, .. } => s.push_str(arguments),
            Event::Repair {
                kind: RepairKind::StrayToken | RepairKind::StrayWhitespace,
                detail,
                ..
            } => s.push_str(detail),
            _ => {}
        }
    }
    s
}

/// Checks the lenient invariants on one stream; returns the events.
pub(super) fn check_lenient(ids: &[Rank], role: Option<Role>) -> Vec<Event> {
    let mut p = StreamParser::new(role, Mode::Lenient, Limits::default());
    let mut ev = p.feed(ids).expect("lenient feed");
    ev.extend(p.finish().expect("lenient finish"));
    assert_eq!(
        normalize(&event_text(&ev)),
        normalize(&decoded_input(ids)),
        "ids {ids:?}"
    );
    // well-formed event sequence
    let mut open: Option<usize> = None;
    for e in &ev {
        match e {
            Event::MessageStart { index, .. } => {
                assert!(open.is_none(), "{ev:?}");
                open = Some(*index);
            }
            Event::ContentDelta { index, text }
            | Event::ToolCallDelta {
                index,
                arguments: text,
                ..
            } => {
                assert_eq!(open, Some(*index));
                assert!(!text.is_empty());
            }
            Event::MessageDone { index, .. } => {
                assert_eq!(open, Some(*index));
                open = None;
            }
            _ => {}
        }
    }
    assert!(open.is_none());
    assert!(matches!(
        last(&ev),
        Event::Done { .. } | Event::Incomplete { .. }
    ));
    assert_eq!(p.messages().len(), p.repaired().len());
    ev
}

fn special_id() -> impl Strategy<Value = Rank> {
    prop_oneof![
        Just(ids::START),
        Just(ids::MESSAGE),
        Just(ids::END),
        Just(ids::RETURN),
        Just(ids::CALL),
        Just(ids::CHANNEL),
        Just(ids::CONSTRAIN),
        Just(ids::ENDOFTEXT),
        Just(ids::STARTOFTEXT),
        200_000u32..201_100,
    ]
}

fn any_id() -> impl Strategy<Value = Rank> {
    prop_oneof![4 => 0u32..201_100, 2 => special_id(), 1 => 0u32..256, 1 => Just(u32::MAX)]
}

fn header_word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("assistant".to_string()),
        Just("commentary".to_string()),
        Just("final".to_string()),
        Just(" to=functions.f".to_string()),
        Just(" <|constrain|>json".to_string()),
        Just(" json".to_string()),
        Just("<|channel|>".to_string()),
        Just("––".to_string()),
        "[a-z. ]{0,6}",
    ]
}

#[derive(Debug, Clone)]
struct Gen {
    role: Role,
    name: Option<String>,
    channel: Option<String>,
    recipient: Option<String>,
    content_type: Option<String>,
    text: String,
}

fn gen_message() -> impl Strategy<Value = Gen> {
    let channel = prop::option::of(prop_oneof![
        Just("analysis".to_string()),
        Just("commentary".to_string()),
        Just("final".to_string()),
        "[a-z][a-z_]{0,8}",
    ]);
    let recipient = prop::option::of(prop_oneof![
        "functions\\.[a-z_]{1,12}".prop_map(String::from),
        Just("python".to_string()),
        Just("browser.search".to_string()),
    ]);
    let ct = prop::option::of(prop_oneof![
        Just("<|constrain|>json".to_string()),
        Just("json".to_string()),
        Just("code".to_string()),
    ]);
    let text = prop_oneof!["\\PC{0,40}", "[a-z {}\":,\n]{0,40}"];
    (0u8..6, channel, recipient, ct, text).prop_map(
        |(r, channel, recipient, content_type, text)| match r {
            0 => Gen {
                role: Role::User,
                name: None,
                channel: None,
                recipient: None,
                content_type: None,
                text,
            },
            1 => Gen {
                role: Role::Tool,
                name: Some("functions.lookup".into()),
                channel: channel.or(Some("commentary".into())),
                recipient: Some("assistant".into()),
                content_type: None,
                text,
            },
            _ => Gen {
                role: Role::Assistant,
                name: None,
                channel,
                recipient,
                content_type,
                text,
            },
        },
    )
}

fn to_message(g: &Gen) -> Message {
    Message {
        author: Author {
            role: g.role,
            name: g.name.clone(),
        },
        content: vec![Content::Text(g.text.clone())],
        channel: g.channel.clone(),
        recipient: g.recipient.clone(),
        content_type: g.content_type.clone(),
    }
}

fn render_all(ms: &[Message]) -> Vec<Rank> {
    let mut ids = Vec::new();
    for m in ms {
        ids.extend(
            crate::render::render_message(m, Default::default(), &Limits::default()).unwrap(),
        );
    }
    ids
}

fn rendered_stream() -> impl Strategy<Value = Vec<Rank>> {
    prop::collection::vec(gen_message(), 1..4)
        .prop_map(|gs| render_all(&gs.iter().map(to_message).collect::<Vec<_>>()))
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, Rank),
    Delete(usize),
    Replace(usize, Rank),
    InsertText(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any_id()).prop_map(|(i, t)| Edit::Insert(i, t)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), special_id()).prop_map(|(i, t)| Edit::Replace(i, t)),
        (any::<usize>(), header_word()).prop_map(|(i, w)| Edit::InsertText(i, w)),
    ]
}

fn apply(mut ids: Vec<Rank>, edits: &[Edit]) -> Vec<Rank> {
    for e in edits {
        let n = ids.len();
        match e {
            Edit::Insert(i, t) => ids.insert(i % (n + 1), *t),
            Edit::Delete(i) if n > 0 => {
                ids.remove(i % n);
            }
            Edit::Replace(i, t) if n > 0 => ids[i % n] = *t,
            Edit::InsertText(i, w) => {
                let at = i % (n + 1);
                let w = toks(w);
                ids.splice(at..at, w);
            }
            _ => {}
        }
    }
    ids
}

fn mutated_stream() -> impl Strategy<Value = Vec<Rank>> {
    (rendered_stream(), prop::collection::vec(edit(), 0..6))
        .prop_map(|(ids, edits)| apply(ids, &edits))
}

/// How [`events_in_chunks`] feeds the ids.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Feeding {
    /// `feed_into` per chunk, all into one output vector.
    Shared,
    /// `feed` per chunk (a new vector each; deltas then split at chunk boundaries).
    Fresh,
    /// The per-token path of `process` (no batch fast path), with its events.
    Steps,
}

/// Merges adjacent deltas of one message (what a single batch would hold).
fn coalesce(ev: Vec<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    for e in ev {
        match e {
            Event::ContentDelta { index, text } => push_delta(&mut out, index, None, &text),
            Event::ToolCallDelta {
                index,
                call_index,
                arguments,
            } => push_delta(&mut out, index, Some(call_index), &arguments),
            e => out.push(e),
        }
    }
    out
}

/// Everything observable after a chunked feed: events (merged), the error, the messages,
/// `last_content_delta`, `current_content`, the token history and `tokens_dropped`.
type Observed = (
    Vec<Event>,
    Option<String>,
    Vec<Message>,
    Option<String>,
    String,
    Vec<Rank>,
    u64,
);

fn events_in_chunks(
    mode: Mode,
    role: Option<Role>,
    ids: &[Rank],
    cuts: &[usize],
    how: Feeding,
    history: Option<usize>,
    limits: Limits,
) -> Observed {
    let mut p = StreamParser::new(role, mode, limits);
    if let Some(n) = history {
        p.set_token_history(n);
    }
    let mut ev = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (ids.len() + 1)).collect();
    cuts.sort_unstable();
    let mut prev = 0;
    let mut err = None;
    for c in cuts.into_iter().chain([ids.len()]) {
        let r = match how {
            Feeding::Shared => p.feed_into(&ids[prev..c], &mut ev),
            Feeding::Fresh => p.feed(&ids[prev..c]).map(|e| ev.extend(e)),
            Feeding::Steps => ids[prev..c].iter().try_for_each(|&t| p.step(t, &mut ev)),
        };
        prev = c;
        if let Err(e) = r {
            err = Some(e.to_string());
            break;
        }
    }
    let last = (
        p.last_content_delta().map(String::from),
        p.current_content().to_string(),
    );
    if err.is_none() {
        err = p.finish_into(false, &mut ev).err().map(|e| e.to_string());
    }
    let ev = if how == Feeding::Shared {
        ev
    } else {
        coalesce(ev)
    };
    (
        ev,
        err,
        p.messages().to_vec(),
        last.0,
        last.1,
        p.tokens().to_vec(),
        p.tokens_dropped(),
    )
}

proptest! {
    // PROPTEST_CASES=N overrides the default of 256 cases per property.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_chunk_boundaries_do_not_matter(ids in prop_oneof![mutated_stream(), prop::collection::vec(any_id(), 0..60)],
                                           cuts in prop::collection::vec(any::<usize>(), 0..8),
                                           role in prop::option::of(Just(Role::Assistant)),
                                           history in prop::option::of(0usize..6),
                                           caps in prop::option::of((0usize..40, 0usize..30, 0usize..120))) {
        // the same events (deltas merged), messages, accessors and token history whatever
        // the batching, and the batch fast path agrees with the per-token path (also
        // with tiny caps: cut messages, over-long headers, evictions)
        let limits = match caps {
            None => Limits::default(),
            Some((msg, header, total)) => Limits {
                max_parsed_message_bytes: msg,
                max_header_bytes: header,
                max_parsed_total_bytes: total,
                ..Limits::default()
            },
        };
        for mode in [Mode::Lenient, Mode::Strict, Mode::NonStrict, Mode::Raw] {
            let whole = events_in_chunks(mode, role, &ids, &[], Feeding::Shared, history, limits);
            let one_by_one: Vec<usize> = (0..ids.len()).collect();
            for how in [Feeding::Shared, Feeding::Fresh, Feeding::Steps] {
                for c in [&cuts, &one_by_one] {
                    let mut got = events_in_chunks(mode, role, &ids, c, how, history, limits);
                    if how == Feeding::Fresh && got.1.is_some() {
                        // a strict error: `feed` does not return the failing batch's events
                        got.0.clone_from(&whole.0);
                    }
                    prop_assert_eq!(&whole, &got, "{:?}", how);
                }
            }
        }
    }

    #[test]
    fn prop_long_content_runs_decode_like_single_tokens(
        body in prop::collection::vec(prop_oneof![4 => 0u32..256, 4 => 0u32..5_000, 1 => 5_000u32..199_998, 1 => special_id()], 0..700),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
        cap in prop::option::of(0usize..3_000)) {
        // runs longer than the batch fast path's chunk, split UTF-8 sequences (byte
        // tokens), invalid bytes, and caps the run may reach: the same as token by token
        let limits = Limits {
            max_parsed_message_bytes: cap.unwrap_or(Limits::default().max_parsed_message_bytes),
            ..Limits::default()
        };
        let mut ids = vec![ids::MESSAGE];
        ids.extend(body);
        let role = Some(Role::Assistant);
        let one_by_one: Vec<usize> = (0..ids.len()).collect();
        let want = events_in_chunks(Mode::Lenient, role, &ids, &one_by_one, Feeding::Steps, None, limits);
        for c in [&[][..], &cuts[..]] {
            let got = events_in_chunks(Mode::Lenient, role, &ids, c, Feeding::Shared, None, limits);
            prop_assert_eq!(&want, &got);
        }
    }

    #[test]
    fn prop_render_then_parse_round_trip(gs in prop::collection::vec(gen_message(), 1..5)) {
        let ms: Vec<Message> = gs.iter().map(to_message).collect();
        let ids = render_all(&ms);
        let got = parse_completion(&ids, None, Mode::Lenient, Limits::default()).unwrap();
        prop_assert_eq!(&got, &ms);
        // strict reproduces the reference, which reads a lone content type as a recipient
        let strict_ok = gs.iter().all(|g| g.content_type.is_none() || g.recipient.is_some());
        if strict_ok {
            prop_assert_eq!(&parse_completion(&ids, None, Mode::Strict, Limits::default()).unwrap(), &ms);
        }
        // and with the role given (the prompt ended with <|start|>assistant)
        if ms[0].author.role == Role::Assistant {
            let got = parse_completion(&ids[2..], Some(Role::Assistant), Mode::Lenient, Limits::default()).unwrap();
            prop_assert_eq!(&got, &ms);
        }
    }

    #[test]
    fn prop_lenient_never_fails_and_loses_nothing(ids in prop_oneof![
            mutated_stream(),
            prop::collection::vec(any_id(), 0..80),
            prop::collection::vec(special_id(), 0..30),
        ],
        role in prop::option::of(Just(Role::Assistant))) {
        check_lenient(&ids, role);
    }

    #[test]
    fn prop_lenient_content_is_exact_when_headers_are_intact(gs in prop::collection::vec(gen_message(), 1..4),
                                                             junk in prop::collection::vec(any_id(), 0..6)) {
        // junk appended after the last message: the messages before it are unchanged
        let ms: Vec<Message> = gs.iter().map(to_message).collect();
        let mut ids = render_all(&ms);
        ids.extend(junk.iter().filter(|&&t| t != ids::START));
        let got = parse_completion(&ids, None, Mode::Lenient, Limits::default()).unwrap();
        prop_assert!(got.len() >= ms.len());
        prop_assert_eq!(&got[..ms.len()], &ms[..]);
    }

    #[test]
    fn prop_strict_never_panics(ids in prop_oneof![mutated_stream(), prop::collection::vec(any_id(), 0..80)],
                                role in prop::option::of(Just(Role::Assistant))) {
        for mode in [Mode::Strict, Mode::NonStrict, Mode::Raw] {
            let mut p = StreamParser::new(role, mode, Limits::default());
            for &t in &ids {
                let _ = p.process(t);
                let _ = p.state_json();
            }
            let _ = p.finish();
        }
    }
}
/// Throughput: `cargo test --release --lib parser::tests::properties::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let unit = toks(&format!(
        "{S}<|channel|>analysis<|message|>{}<|end|>{S}<|channel|>final<|message|>{}<|return|>",
        "The user asks about the weather in Paris; we should call the tool. ".repeat(20),
        "It is sunny and 21 degrees in Paris today. ".repeat(20)
    ));
    let ids: Vec<Rank> = unit.iter().copied().cycle().take(2_000_000).collect();
    for mode in [Mode::Strict, Mode::Lenient, Mode::Raw] {
        for chunk_len in [0, 1, 16, 2000] {
            let mut p = StreamParser::new(None, mode, Limits::default());
            let mut out = Vec::new();
            let t0 = std::time::Instant::now();
            if chunk_len == 0 {
                for &t in &ids {
                    p.process(t).unwrap();
                    std::hint::black_box(p.last_content_delta());
                }
            } else {
                for chunk in ids.chunks(chunk_len) {
                    out.clear();
                    p.feed_into(chunk, &mut out).unwrap();
                }
            }
            let dt = t0.elapsed();
            let how = match chunk_len {
                0 => "process() per token".to_string(),
                n => format!("feed, {n}-token batches"),
            };
            eprintln!(
                "{mode:?}, {how}: {:.1} ns/token",
                dt.as_nanos() as f64 / ids.len() as f64
            );
        }
    }
}
