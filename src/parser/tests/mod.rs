use super::buffers::push_delta;
use super::decode::{token_text, Dec};
use super::*;
use crate::chat::{Author, Content};
use crate::tokenizer::{ids, tokenizer};
use serde_json::{json, Value};

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

// ----- golden vectors of the reference ------------------------------------------------

fn message_dict(m: &Message) -> Value {
    let mut d = serde_json::Map::new();
    d.insert("role".into(), json!(m.author.role.as_str()));
    d.insert("name".into(), json!(m.author.name));
    d.insert(
        "content".into(),
        json!([{"type": "text", "text": m.text_content()}]),
    );
    if let Some(c) = &m.channel {
        d.insert("channel".into(), json!(c));
    }
    if let Some(c) = &m.recipient {
        d.insert("recipient".into(), json!(c));
    }
    if let Some(c) = &m.content_type {
        d.insert("content_type".into(), json!(c));
    }
    Value::Object(d)
}

fn dicts(ms: &[Message]) -> Value {
    Value::Array(ms.iter().map(message_dict).collect())
}

fn golden_rows() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/third_party/harmony/goldens/parse.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("goldens/parse.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn row_input(row: &Value) -> (Vec<Rank>, Option<Role>) {
    let tokens: Vec<Rank> = row["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as Rank)
        .collect();
    let role = row["role"].as_str().map(|r| Role::parse(r).unwrap());
    (tokens, role)
}

/// Replays one reference record (per-token accessors, error position, messages).
fn check_reference_row(row: &Value, mode: Mode) {
    let name = row["name"].as_str().unwrap_or("?");
    let (tokens, role) = row_input(row);
    // parse_messages_from_completion_tokens
    let res = parse_completion(&tokens, role, mode, Limits::unlimited());
    match (&row["result"], res) {
        (Value::Object(o), Err(e)) if o.contains_key("error") => {
            assert_eq!(
                o["error"].as_str().unwrap(),
                e.to_string(),
                "{name}: result error"
            )
        }
        (Value::Array(_), Ok(ms)) => assert_eq!(row["result"], dicts(&ms), "{name}: result"),
        (want, got) => panic!("{name}: result {want} vs {got:?}"),
    }
    // streaming
    let mut p = StreamParser::new(role, mode, Limits::unlimited());
    let stream = row["stream"].as_array().unwrap();
    for (i, &t) in tokens.iter().enumerate() {
        if let Err(e) = p.process(t) {
            let se = &row["stream_error"];
            assert_eq!(
                se["error"].as_str(),
                Some(e.to_string().as_str()),
                "{name}: error at {i}"
            );
            assert_eq!(se["at"].as_u64(), Some(i as u64), "{name}: error position");
            assert_eq!(
                row["messages_at_error"],
                dicts(p.messages()),
                "{name}: messages at error"
            );
            return;
        }
        let want = &stream[i];
        let got = json!({
            "state": p.state().as_str(),
            "delta": p.last_content_delta(),
            "channel": p.current_channel(),
            "recipient": p.current_recipient(),
            "content_type": p.current_content_type(),
            "role": p.current_role().map(|r| r.as_str()),
            "content": p.current_content(),
        });
        assert_eq!(want, &got, "{name}: token {i}");
    }
    assert!(
        row["stream_error"].is_null(),
        "{name}: expected a stream error"
    );
    match (p.process_eos(), &row["messages_after_eos"]) {
        (Ok(()), want @ Value::Array(_)) => {
            assert_eq!(want, &dicts(p.messages()), "{name}: messages after eos")
        }
        (Err(e), Value::Object(o)) => assert_eq!(
            o["error"].as_str().unwrap(),
            e.to_string(),
            "{name}: eos error"
        ),
        (got, want) => panic!("{name}: eos {got:?} vs {want}"),
    }
}

#[test]
fn golden_reference_strict_and_non_strict() {
    let rows = golden_rows();
    assert!(rows.len() >= 100, "{} rows", rows.len());
    for row in &rows {
        let mode = if row["strict"].as_bool().unwrap() {
            Mode::Strict
        } else {
            Mode::NonStrict
        };
        check_reference_row(row, mode);
    }
}

/// Golden rows where lenient mode intentionally differs from the reference's non-strict
/// result (the reference loses text or misparses); each has its own unit test below.
const LENIENT_DEVIATIONS: &[&str] = &[
    "final_constrain_json",
    "final_plain_json",
    "constrain_without_recipient_commentary",
    "channel_words_json_no_to",
    "constrain_twice",
    "missing_message_first",
    "missing_message_no_channel",
    "missing_message_second",
    "missing_message_then_valid",
    "role_given_but_start_present",
    "channel_then_recipient_then_channel",
    "to_with_space",
    "endoftext_in_content",
    "only_end_role_given",
    "start_token_in_content",
];

#[test]
fn golden_lenient_same_messages_where_the_reference_succeeds() {
    for row in golden_rows().iter().filter(|r| r["strict"] == json!(false)) {
        let name = row["name"].as_str().unwrap();
        let (tokens, role) = row_input(row);
        let res = parse_completion(&tokens, role, Mode::Lenient, Limits::default())
            .expect("lenient never fails");
        if row["result"].is_array() && !LENIENT_DEVIATIONS.contains(&name) {
            assert_eq!(row["result"], dicts(&res), "{name}");
        }
    }
}

// ----- lenient patterns (the table in the module documentation) -------------------------

#[test]
fn lenient_call_recipient_before_and_after_channel() {
    for s in [
        "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{\"a\":1}<|call|>",
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"a\":1}<|call|>",
    ] {
        let (ev, p) = lenient(s, None);
        assert_eq!(
            msgs(&p),
            vec![m(A, Some("commentary"), Some("functions.get_weather"), Some("<|constrain|>json"), "{\"a\":1}")]
        );
        assert!(ev.contains(&Event::ToolCallStart {
            index: 0,
            call_index: 0,
            name: "get_weather".into(),
            recipient: "functions.get_weather".into()
        }));
        let args: String = ev
            .iter()
            .filter_map(|e| match e {
                Event::ToolCallDelta { arguments, .. } => Some(arguments.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(args, "{\"a\":1}");
        assert!(!ev.iter().any(|e| matches!(e, Event::ContentDelta { .. })));
        assert!(ev.contains(&Event::ToolCallDone { index: 0, call_index: 0 }));
        assert!(ev.contains(&Event::MessageDone { index: 0, stop_token: Some(ids::CALL) }));
        assert_eq!(last(&ev), &Event::Done { reason: StopReason::Call });
        assert!(repairs(&ev).is_empty());
        assert_eq!(p.repaired(), &[false]);
    }
}

#[test]
fn lenient_call_on_analysis_and_content_types() {
    let cases = [
        (
            "<|channel|>analysis to=functions.f <|constrain|>json",
            Some("analysis"),
            Some("<|constrain|>json"),
        ),
        (
            "<|channel|>commentary to=functions.f json",
            Some("commentary"),
            Some("json"),
        ),
        (
            "<|channel|>analysis to=functions.f code",
            Some("analysis"),
            Some("code"),
        ),
        (
            "<|channel|>commentary to=functions.f",
            Some("commentary"),
            None,
        ),
    ];
    for (h, ch, ct) in cases {
        let (ev, p) = lenient(&format!("{S}{h}<|message|>{{}}<|call|>"), None);
        assert_eq!(
            msgs(&p),
            vec![m(A, ch, Some("functions.f"), ct, "{}")],
            "{h}"
        );
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::ToolCallStart { name, .. } if name == "f")),
            "{h}"
        );
    }
}

#[test]
fn lenient_tool_results_are_not_calls() {
    let s = "<|start|>functions.f to=assistant<|channel|>commentary<|message|>42<|end|>";
    let (ev, p) = lenient(s, None);
    assert_eq!(
        p.messages()[0].author,
        Author {
            role: T,
            name: Some("functions.f".into())
        }
    );
    assert!(!ev.iter().any(|e| matches!(e, Event::ToolCallStart { .. })));
    assert!(ev.contains(&Event::ContentDelta {
        index: 0,
        text: "42".into()
    }));
}

#[test]
fn lenient_structured_output_content_type_not_recipient() {
    for (h, ct) in [
        ("<|channel|>final <|constrain|>json", "<|constrain|>json"),
        ("<|channel|>final json", "json"),
        (
            "<|channel|>commentary <|constrain|>json",
            "<|constrain|>json",
        ),
    ] {
        let s = format!("{S}{h}<|message|>{{\"a\":1}}<|return|>");
        let (ev, p) = lenient(&s, None);
        let ch = if h.contains("final") {
            "final"
        } else {
            "commentary"
        };
        assert_eq!(msgs(&p), vec![m(A, Some(ch), None, Some(ct), "{\"a\":1}")]);
        assert!(!ev.iter().any(|e| matches!(e, Event::ToolCallStart { .. })));
        assert!(repairs(&ev).is_empty());
        // strict keeps the reference's misparse
        assert_eq!(
            strict_msgs(&s, None).unwrap(),
            vec![m(A, Some(ch), Some(ct), None, "{\"a\":1}")]
        );
    }
    // two constrain words: the first is the content type
    let (ev, p) = lenient(
        &format!(
            "{S}<|channel|>final <|constrain|>json <|constrain|>response<|message|>{{}}<|end|>"
        ),
        None,
    );
    assert_eq!(
        msgs(&p),
        vec![m(A, Some("final"), None, Some("<|constrain|>json"), "{}")]
    );
    assert_eq!(repairs(&ev), vec![RepairKind::ExtraHeaderWords]);
}

#[test]
fn lenient_missing_message_token() {
    // role given: same as the reference
    let (ev, p) = lenient("<|channel|>final Hello there<|end|>", Some(A));
    assert_eq!(
        msgs(&p),
        vec![m(A, Some("final"), None, None, "Hello there")]
    );
    assert_eq!(repairs(&ev), vec![RepairKind::MissingMessage]);
    assert_eq!(p.repaired(), &[true]);
    // no role given: the reference drops it
    let (_, p) = lenient(&format!("{S}<|channel|>final Hello there<|end|>"), None);
    assert_eq!(
        msgs(&p),
        vec![m(A, Some("final"), None, None, "Hello there")]
    );
    // refusal without channel
    let (_, p) = lenient(&format!("{S} I cannot help with that.<|end|>"), None);
    assert_eq!(
        msgs(&p),
        vec![m(A, None, None, None, "I cannot help with that.")]
    );
    // a later message (the reference silently loses it), inner whitespace kept
    let (_, p) = lenient(&format!("{S}<|channel|>analysis<|message|>ok<|end|>{S}<|channel|>final Hello\n  world<|return|>"), None);
    assert_eq!(
        msgs(&p),
        vec![
            m(A, Some("analysis"), None, None, "ok"),
            m(A, Some("final"), None, None, "Hello\n  world")
        ]
    );
    // then a valid message
    let (_, p) = lenient(
        &format!("{S}<|channel|>final Hello<|end|>{S}<|channel|>final<|message|>Hi<|end|>"),
        None,
    );
    assert_eq!(
        msgs(&p),
        vec![
            m(A, Some("final"), None, None, "Hello"),
            m(A, Some("final"), None, None, "Hi")
        ]
    );
    // a header ended by <|start|>
    let (ev, p) = lenient(
        &format!("{S}<|channel|>final Hello{S}<|channel|>final<|message|>Hi<|end|>"),
        None,
    );
    assert_eq!(
        msgs(&p),
        vec![
            m(A, Some("final"), None, None, "Hello"),
            m(A, Some("final"), None, None, "Hi")
        ]
    );
    assert!(ev.contains(&Event::MessageDone {
        index: 0,
        stop_token: None
    }));
}

#[test]
fn lenient_missing_start_and_role() {
    let (ev, p) = lenient("<|channel|>final<|message|>Hi<|end|>", None);
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "Hi")]);
    assert_eq!(
        repairs(&ev),
        vec![RepairKind::MissingStart, RepairKind::MissingRole]
    );
    let (ev, p) = lenient(&format!("{S}<|channel|>analysis<|message|>a<|end|>assistant<|channel|>final<|message|>b<|return|>"), None);
    assert_eq!(
        msgs(&p),
        vec![
            m(A, Some("analysis"), None, None, "a"),
            m(A, Some("final"), None, None, "b")
        ]
    );
    assert_eq!(repairs(&ev), vec![RepairKind::MissingStart]);
    assert_eq!(p.repaired(), &[false, true]);
    assert_eq!(
        last(&ev),
        &Event::Done {
            reason: StopReason::Return
        }
    );
    // <|message|> with no header at all
    let (ev, p) = lenient(
        &format!("{S}<|channel|>analysis<|message|>a<|end|><|message|>b<|end|>"),
        None,
    );
    assert_eq!(msgs(&p)[1], m(A, None, None, None, "b"));
    assert_eq!(repairs(&ev), vec![RepairKind::MissingStart]);
    // missing <|start|> and <|message|>
    let (_, p) = lenient(
        &format!("{S}<|channel|>analysis<|message|>a<|end|>assistant<|channel|>final Hi<|end|>"),
        None,
    );
    assert_eq!(msgs(&p)[1], m(A, Some("final"), None, None, "Hi"));
}

#[test]
fn lenient_stray_text_and_whitespace_between_messages() {
    let (ev, p) = lenient(
        &format!(
            "{S}<|channel|>analysis<|message|>a<|end|>Hello{S}<|channel|>final<|message|>b<|end|>"
        ),
        None,
    );
    assert_eq!(
        msgs(&p),
        vec![
            m(A, Some("analysis"), None, None, "a"),
            m(A, None, None, None, "Hello"),
            m(A, Some("final"), None, None, "b")
        ]
    );
    assert_eq!(repairs(&ev), vec![RepairKind::StrayText]);
    assert_eq!(p.repaired(), &[false, true, false]);
    let (ev, p) = lenient(
        &format!(
            "{S}<|channel|>analysis<|message|>a<|end|>\n\n{S}<|channel|>final<|message|>b<|end|>"
        ),
        None,
    );
    assert_eq!(p.messages().len(), 2);
    assert!(ev.contains(&Event::Repair {
        index: None,
        kind: RepairKind::StrayWhitespace,
        detail: "\n\n".into()
    }));
    // a long stray text streams before its end
    let long = "word ".repeat(100);
    let mut p = StreamParser::new(None, Mode::Lenient, Limits::default());
    let ev = p
        .feed(&toks(&format!(
            "{S}<|channel|>final<|message|>a<|end|>{long}"
        )))
        .unwrap();
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::ContentDelta { index: 1, .. })));
}

#[test]
fn lenient_return_after_end_and_garbage_after_call() {
    let (ev, p) = lenient(
        &format!("{S}<|channel|>final<|message|>Hi<|end|><|return|>"),
        None,
    );
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "Hi")]);
    assert_eq!(repairs(&ev), vec![RepairKind::StrayToken]);
    assert_eq!(
        last(&ev),
        &Event::Done {
            reason: StopReason::Return
        }
    );
    let s = format!("{S}<|channel|>commentary to=functions.f <|constrain|>json<|message|>{{}}<|call|>trailing text");
    let (ev, p) = lenient(&s, None);
    assert_eq!(
        msgs(&p),
        vec![
            m(
                A,
                Some("commentary"),
                Some("functions.f"),
                Some("<|constrain|>json"),
                "{}"
            ),
            m(A, None, None, None, "trailing text")
        ]
    );
    assert_eq!(repairs(&ev), vec![RepairKind::StrayText]);
    assert_eq!(
        last(&ev),
        &Event::Done {
            reason: StopReason::Call
        }
    );
}

#[test]
fn lenient_double_start() {
    let (ev, p) = lenient(
        &format!("<|start|>{S}<|channel|>final<|message|>x<|end|>"),
        None,
    );
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
    assert_eq!(repairs(&ev), vec![RepairKind::DoubleStart]);
    // role given and the output repeats <|start|>assistant: not a recipient
    let (_, p) = lenient(&format!("{S}<|channel|>final<|message|>x<|end|>"), Some(A));
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
}

#[test]
fn lenient_duplicated_channel_and_recipient() {
    let (ev, p) = lenient(
        &format!("{S}<|channel|>analysis<|channel|>analysis<|message|>x<|end|>"),
        None,
    );
    assert_eq!(msgs(&p), vec![m(A, Some("analysis"), None, None, "x")]);
    assert_eq!(repairs(&ev), vec![RepairKind::DuplicateChannel]);
    let (_, p) = lenient(
        &format!(
            "{S}<|channel|>commentary to=functions.f<|channel|>commentary<|message|>{{}}<|call|>"
        ),
        None,
    );
    assert_eq!(
        msgs(&p),
        vec![m(A, Some("commentary"), Some("functions.f"), None, "{}")]
    );
    for h in [
        "<|channel|>commentary to=functions.f to=functions.g",
        " to=functions.f<|channel|>commentary to=functions.g",
    ] {
        let (ev, p) = lenient(&format!("{S}{h}<|message|>{{}}<|call|>"), None);
        assert_eq!(
            msgs(&p),
            vec![m(A, Some("commentary"), Some("functions.f"), None, "{}")],
            "{h}"
        );
        assert_eq!(repairs(&ev), vec![RepairKind::DuplicateRecipient]);
    }
    let (_, p) = lenient(
        &format!("{S}<|channel|>commentary to= functions.f<|message|>{{}}<|call|>"),
        None,
    );
    assert_eq!(
        msgs(&p),
        vec![m(A, Some("commentary"), Some("functions.f"), None, "{}")]
    );
}

#[test]
fn lenient_roles() {
    let (ev, p) = lenient("<|start|>robot<|message|>x<|end|>", None);
    assert_eq!(
        p.messages()[0].author,
        Author {
            role: T,
            name: Some("robot".into())
        }
    );
    assert_eq!(repairs(&ev), vec![RepairKind::UnknownRole]);
    let (ev, p) = lenient("<|start|>functions.lookup<|message|>r<|end|>", None);
    assert_eq!(
        p.messages()[0].author,
        Author {
            role: T,
            name: Some("functions.lookup".into())
        }
    );
    assert!(repairs(&ev).is_empty());
    let (ev, p) = lenient(
        "<|start|>assistantassistant<|channel|>final<|message|>x<|end|>",
        None,
    );
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
    assert_eq!(repairs(&ev), vec![RepairKind::DoubledRole]);
    let (_, p) = lenient("<|start|>assistantfinal<|message|>x<|end|>", None);
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
    let (ev, p) = lenient("<|start|>user:alice<|message|>hi<|end|>", None);
    assert_eq!(
        p.messages()[0].author,
        Author {
            role: U,
            name: Some("alice".into())
        }
    );
    assert!(repairs(&ev).is_empty());
}

#[test]
fn lenient_empty_channel_and_odd_words() {
    let (ev, p) = lenient(&format!("{S}<|channel|><|message|>x<|end|>"), None);
    assert_eq!(msgs(&p), vec![m(A, None, None, None, "x")]);
    assert_eq!(repairs(&ev), vec![RepairKind::EmptyChannel]);
    let (_, p) = lenient(&format!("{S}<|channel|> final<|message|>x<|end|>"), None);
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
    let (ev, p) = lenient(
        &format!("{S}<|channel|>commentary ––commentary to=functions.f<|message|>{{}}<|call|>"),
        None,
    );
    assert_eq!(
        msgs(&p),
        vec![m(A, Some("commentary"), Some("functions.f"), None, "{}")]
    );
    assert!(ev.contains(&Event::Repair {
        index: Some(0),
        kind: RepairKind::ExtraHeaderWords,
        detail: "––commentary".into()
    }));
    // accepted by the reference: kept verbatim (custom channel names too)
    let (ev, p) = lenient(&format!("{S}<|channel|>––commentary<|message|>x<|end|>{S}<|channel|>reasoning<|message|>y<|end|>"), None);
    assert_eq!(
        msgs(&p),
        vec![
            m(A, Some("––commentary"), None, None, "x"),
            m(A, Some("reasoning"), None, None, "y")
        ]
    );
    assert!(repairs(&ev).is_empty());
    let (ev, p) = lenient(
        &format!("{S}<|reserved_200010|><|channel|>final<|message|>x<|end|>"),
        None,
    );
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
    assert_eq!(repairs(&ev), vec![RepairKind::ExtraHeaderWords]);
    let (_, p) = lenient(
        &format!(
            "{S}<|channel|>commentary to=functions.f <|constrain|>json json<|message|>{{}}<|call|>"
        ),
        None,
    );
    assert_eq!(
        msgs(&p),
        vec![m(
            A,
            Some("commentary"),
            Some("functions.f"),
            Some("<|constrain|>json"),
            "{}"
        )]
    );
}

#[test]
fn lenient_invalid_ids_never_swallow() {
    let mut ids = toks(&format!("{S}<|channel|>final<|message|>a"));
    ids.push(999_999);
    ids.extend(toks("b<|end|>"));
    let (ev, p) = run(Mode::Lenient, None, &ids);
    assert_eq!(
        msgs(&p),
        vec![m(A, Some("final"), None, None, "a\u{FFFD}b")]
    );
    assert_eq!(repairs(&ev), vec![RepairKind::InvalidToken]);
    // strict: the reference swallows the rest of the message
    let (_, p) = run(Mode::Strict, None, &ids);
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "a\u{FFFD}")]);
    // between messages and in a header
    let mut ids = vec![201_089];
    ids.extend(toks(S));
    ids.push(u32::MAX);
    ids.extend(toks("<|channel|>final<|message|>x<|end|>"));
    let (ev, p) = run(Mode::Lenient, None, &ids);
    assert_eq!(p.messages().len(), 1);
    assert_eq!(p.messages()[0].text_content(), "x");
    assert!(repairs(&ev).contains(&RepairKind::StrayToken));
    assert!(repairs(&ev).contains(&RepairKind::InvalidHeaderText));
}

#[test]
fn lenient_special_tokens_in_content_are_kept() {
    for sp in [
        "<|reserved_200013|>",
        "<|channel|>",
        "<|message|>",
        "<|constrain|>",
        "<|startoftext|>",
    ] {
        let (ev, p) = lenient(
            &format!("{S}<|channel|>final<|message|>a{sp}b<|end|>"),
            None,
        );
        assert_eq!(
            msgs(&p),
            vec![m(A, Some("final"), None, None, &format!("a{sp}b"))],
            "{sp}"
        );
        assert_eq!(repairs(&ev), vec![RepairKind::SpecialTokenInContent]);
    }
    // <|endoftext|> ends the message
    let (ev, p) = lenient(
        &format!("{S}<|channel|>final<|message|>a<|endoftext|>"),
        None,
    );
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "a")]);
    assert_eq!(
        last(&ev),
        &Event::Done {
            reason: StopReason::EndOfText
        }
    );
}

#[test]
fn lenient_missing_end_before_start() {
    // gpt-oss sometimes omits <|end|> before the next message
    let body =
        format!("<|channel|>analysis<|message|>plan{S}<|channel|>final<|message|>Hi<|return|>");
    for (s, role) in [(format!("{S}{body}"), None), (body.clone(), Some(A))] {
        let (ev, p) = lenient(&s, role);
        assert_eq!(
            msgs(&p),
            vec![
                m(A, Some("analysis"), None, None, "plan"),
                m(A, Some("final"), None, None, "Hi")
            ]
        );
        assert_eq!(repairs(&ev), vec![RepairKind::MissingEnd]);
        assert!(ev.contains(&Event::MessageDone {
            index: 0,
            stop_token: None
        }));
        assert_eq!(p.repaired(), &[true, false]);
        assert_eq!(
            last(&ev),
            &Event::Done {
                reason: StopReason::Return
            }
        );
        // strict and the reference's non-strict mode keep it as text
        let (_, p) = run(Mode::NonStrict, role, &toks(&s));
        assert_eq!(
            msgs(&p),
            vec![m(
                A,
                Some("analysis"),
                None,
                None,
                "plan<|start|>assistant<|channel|>final<|message|>Hi"
            )]
        );
        assert_eq!(strict_msgs(&s, role).unwrap(), msgs(&p));
    }
    // a tool call without <|call|>: the call is done, then the next message
    let s = format!("{S}<|channel|>commentary to=functions.f <|constrain|>json<|message|>{{\"a\": 1}}{S}<|channel|>analysis<|message|>ok<|end|>");
    let (ev, p) = lenient(&s, None);
    assert_eq!(p.messages()[0].text_content(), "{\"a\": 1}");
    assert_eq!(p.messages()[1].text_content(), "ok");
    let at = |want: &Event| ev.iter().position(|e| e == want).unwrap();
    assert!(
        at(&Event::Repair {
            index: Some(0),
            kind: RepairKind::MissingEnd,
            detail: String::new()
        }) < at(&Event::ToolCallDone {
            index: 0,
            call_index: 0
        })
    );
    assert!(
        at(&Event::ToolCallDone {
            index: 0,
            call_index: 0
        }) < at(&Event::MessageDone {
            index: 0,
            stop_token: None
        })
    );
    // undecoded bytes before the <|start|> are flushed into the message (U+FFFD)
    let byte_id = tokenizer().rank_of(&[0xC3]).unwrap(); // the first byte of `é`
    let mut ids = toks(&format!("{S}<|channel|>final<|message|>a"));
    ids.push(byte_id);
    ids.extend(toks(&format!("{S}<|channel|>final<|message|>b<|end|>")));
    let (_, p) = run(Mode::Lenient, None, &ids);
    assert_eq!(p.messages()[0].text_content(), "a\u{FFFD}");
    assert_eq!(p.messages()[1].text_content(), "b");
    // in a header, <|start|> already ended it (the missing <|message|> repair)
    let (ev, p) = lenient(
        &format!("{S}<|channel|>final Hello{S}<|channel|>final<|message|>Hi<|end|>"),
        None,
    );
    assert_eq!(
        msgs(&p),
        vec![
            m(A, Some("final"), None, None, "Hello"),
            m(A, Some("final"), None, None, "Hi")
        ]
    );
    assert_eq!(repairs(&ev), vec![RepairKind::MissingMessage]);
    // a message the parser made from stray text ends at <|start|> without a repair
    let long = "word ".repeat(100);
    let (ev, p) = lenient(
        &format!(
            "{S}<|channel|>final<|message|>a<|end|>{long}{S}<|channel|>final<|message|>b<|end|>"
        ),
        None,
    );
    assert_eq!(p.messages().len(), 3);
    assert!(!repairs(&ev).contains(&RepairKind::MissingEnd));
    // raw mode: text
    let (ev, _) = run(Mode::Raw, None, &toks(&s));
    assert!(!repairs(&ev).contains(&RepairKind::MissingEnd));
}

#[test]
fn lenient_several_tool_calls() {
    let call = |f: &str| {
        format!(
            "{S}<|channel|>commentary to=functions.{f} <|constrain|>json<|message|>{{}}<|call|>"
        )
    };
    let s = format!("{S}<|channel|>analysis<|message|>plan<|end|>{}{}{S}<|channel|>analysis to=browser.search<|message|>{{}}<|call|>", call("a"), call("b"));
    let (ev, _) = lenient(&s, None);
    let starts: Vec<(usize, usize, String)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::ToolCallStart {
                index,
                call_index,
                name,
                ..
            } => Some((*index, *call_index, name.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        vec![
            (1, 0, "a".into()),
            (2, 1, "b".into()),
            (3, 2, "browser.search".into())
        ]
    );
}

#[test]
fn lenient_truncation() {
    // mid-header
    let (ev, p) = lenient(&format!("{S}<|channel|>fin"), None);
    assert_eq!(msgs(&p), vec![m(A, Some("fin"), None, None, "")]);
    assert_eq!(
        last(&ev),
        &Event::Incomplete {
            reason: StopReason::Truncated
        }
    );
    let (ev, p) = lenient("<|start|>", None);
    assert!(p.messages().is_empty());
    assert_eq!(
        last(&ev),
        &Event::Incomplete {
            reason: StopReason::Truncated
        }
    );
    // mid-content
    let ids = toks(&format!("{S}<|channel|>final<|message|>Hello wor"));
    let (ev, p) = run(Mode::Lenient, None, &ids);
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "Hello wor")]);
    assert!(ev.contains(&Event::MessageDone {
        index: 0,
        stop_token: None
    }));
    assert_eq!(
        last(&ev),
        &Event::Incomplete {
            reason: StopReason::Truncated
        }
    );
    let mut p = StreamParser::new(None, Mode::Lenient, Limits::default());
    p.feed(&ids).unwrap();
    assert_eq!(
        last(&p.finish_length().unwrap()),
        &Event::Incomplete {
            reason: StopReason::Length
        }
    );
    // after <|end|> the turn may go on: a length cut is incomplete, a clean end is not
    let ids = toks(&format!("{S}<|channel|>analysis<|message|>a<|end|>"));
    let mut p = StreamParser::new(None, Mode::Lenient, Limits::default());
    p.feed(&ids).unwrap();
    let mut q = p.clone();
    assert_eq!(
        last(&p.finish().unwrap()),
        &Event::Done {
            reason: StopReason::End
        }
    );
    assert_eq!(
        last(&q.finish_length().unwrap()),
        &Event::Incomplete {
            reason: StopReason::Length
        }
    );
    // a UTF-8 sequence cut at the end
    let mut ids = toks(&format!("{S}<|channel|>final<|message|>x"));
    ids.push(tokenizer().rank_of(&[0xF0]).unwrap());
    let (_, p) = run(Mode::Lenient, None, &ids);
    assert_eq!(p.messages()[0].text_content(), "x\u{FFFD}");
}

#[test]
fn lenient_header_too_long_becomes_content() {
    let limits = Limits {
        max_header_bytes: 64,
        ..Limits::default()
    };
    let mut p = StreamParser::new(None, Mode::Lenient, limits);
    let text = "lorem ipsum ".repeat(20);
    let mut ev = p
        .feed(&toks(&format!("{S}<|channel|>final {text}")))
        .unwrap();
    assert_eq!(p.state(), StateKind::Content);
    assert!(p.header_tokens().is_empty());
    ev.extend(p.feed(&toks("tail<|end|>")).unwrap());
    assert_eq!(
        msgs(&p),
        vec![m(A, Some("final"), None, None, &format!("{text}tail"))]
    );
    assert!(repairs(&ev).contains(&RepairKind::HeaderTooLong));
    // strict: an error, and the header is dropped
    let mut p = StreamParser::new(None, Mode::Strict, limits);
    let e = p
        .feed(&toks(&format!("{S}<|channel|>final {text}")))
        .unwrap_err();
    assert!(matches!(
        e,
        HarmonyError::LimitExceeded {
            limit: "header bytes",
            ..
        }
    ));
    assert!(p.header_tokens().len() < 64);
}

#[test]
fn lenient_message_and_total_caps() {
    let limits = Limits {
        max_parsed_message_bytes: 10,
        max_parsed_total_bytes: 100,
        ..Limits::default()
    };
    let mut p = StreamParser::new(None, Mode::Lenient, limits);
    let ev = p
        .feed(&toks(&format!(
            "{S}<|channel|>final<|message|>0123456789abcdef<|end|>"
        )))
        .unwrap();
    let streamed: String = ev
        .iter()
        .filter_map(|e| match e {
            Event::ContentDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, "0123456789abcdef");
    assert_eq!(p.messages()[0].text_content(), "0123456789");
    assert!(repairs(&ev).contains(&RepairKind::MessageTooLong));
    for _ in 0..20 {
        p.feed(&toks(&format!(
            "{S}<|channel|>final<|message|>0123456789<|end|>"
        )))
        .unwrap();
    }
    assert!(p.retained_bytes() <= 100);
    assert!(p.first_message_index() > 0);
    assert_eq!(p.first_message_index() + p.messages().len(), 21);
    // strict: errors
    let mut p = StreamParser::new(None, Mode::Strict, limits);
    let e = p
        .feed(&toks(&format!(
            "{S}<|channel|>final<|message|>0123456789abcdef<|end|>"
        )))
        .unwrap_err();
    assert!(matches!(
        e,
        HarmonyError::LimitExceeded {
            limit: "parsed message bytes",
            ..
        }
    ));
}

#[test]
fn raw_mode_is_every_token_text() {
    let mut ids = toks(&format!("{S}<|channel|>final<|message|>héllo<|end|>"));
    ids.push(999_999);
    let (ev, p) = run(Mode::Raw, None, &ids);
    let text: String = ev
        .iter()
        .filter_map(|e| match e {
            Event::ContentDelta { index: 0, text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        text,
        "<|start|>assistant<|channel|>final<|message|>héllo<|end|>\u{FFFD}"
    );
    assert!(p.messages().is_empty());
    assert_eq!(
        last(&ev),
        &Event::Incomplete {
            reason: StopReason::Truncated
        }
    );
}

#[test]
fn accessors_state_json_reset_snapshot() {
    let mut p = StreamParser::new(None, Mode::Strict, Limits::default());
    assert_eq!(p.state_json(), r#"{"state":"ExpectStart"}"#);
    p.feed(&toks(
        "<|start|>functions.f to=assistant<|channel|>commentary json<|message|>ab",
    ))
    .unwrap();
    let v: Value = serde_json::from_str(&p.state_json()).unwrap();
    assert_eq!(
        v,
        json!({"state": "Content", "header": {"author": {"role": "tool", "name": "functions.f"},
               "recipient": "assistant", "channel": "commentary", "content_type": "json"},
               "content_tokens": [378]})
    );
    let snap = p.clone();
    p.feed(&toks("cd<|end|>")).unwrap();
    assert_eq!(p.messages().len(), 1);
    p = snap;
    assert!(p.messages().is_empty());
    assert_eq!(p.current_content(), "ab");
    p.reset();
    assert_eq!(p.state(), StateKind::ExpectStart);
    assert!(p.tokens().is_empty());
    let mut p = StreamParser::new(Some(A), Mode::Strict, Limits::default());
    p.feed(&toks("<|channel|>")).unwrap();
    assert_eq!(
        p.state_json(),
        r#"{"state":"Header","header_tokens":[200005]}"#
    );
    assert_eq!(p.current_role(), Some(A));
}

#[test]
fn token_history_is_capped() {
    let mut p = StreamParser::new(None, Mode::Lenient, Limits::default());
    p.set_token_history(10);
    let ids = toks(&format!(
        "{S}<|channel|>final<|message|>{}<|end|>",
        "a b c d e f g h i j k l ".repeat(5)
    ));
    p.feed(&ids).unwrap();
    assert!(p.tokens().len() >= 10 && p.tokens().len() < 20);
    assert_eq!(p.tokens_dropped() as usize + p.tokens().len(), ids.len());
    assert_eq!(p.tokens(), &ids[ids.len() - p.tokens().len()..]);
}

#[test]
fn ten_million_tokens_stay_bounded() {
    let limits = Limits {
        max_header_bytes: 256,
        max_parsed_message_bytes: 4096,
        max_parsed_total_bytes: 64 << 10,
        ..Limits::default()
    };
    let unit = toks(&format!(
        "{S}<|channel|>analysis<|message|>Thinking about it.<|end|>{S}<|channel|>commentary to=functions.f <|constrain|>json<|message|>{{\"q\": 1}}<|call|>junk{S}<|channel|>final<|message|>Done.<|return|>"
    ));
    let mut p = StreamParser::new(None, Mode::Lenient, limits);
    p.set_token_history(4096);
    let mut batch = Vec::with_capacity(1 << 16);
    let mut out = Vec::new();
    let mut fed = 0usize;
    while fed < 10_000_000 {
        batch.clear();
        while batch.len() < (1 << 16) - unit.len() {
            batch.extend_from_slice(&unit);
        }
        out.clear();
        p.feed_into(&batch, &mut out).unwrap();
        fed += batch.len();
        assert!(p.retained_bytes() <= limits.max_parsed_total_bytes + 4096);
        assert!(p.tokens().len() < 2 * 4096);
    }
    assert!(p.first_message_index() > 1_000_000);
    // one endless message and one endless header
    let mut p = StreamParser::new(None, Mode::Lenient, limits);
    p.set_token_history(0);
    p.feed(&toks(&format!("{S}<|channel|>final<|message|>")))
        .unwrap();
    let words = toks(&"endless text ".repeat(1000));
    for _ in 0..200 {
        p.feed(&words).unwrap();
        assert!(p.current_content().len() <= 4096);
    }
    let mut p = StreamParser::new(None, Mode::Lenient, limits);
    p.feed(&toks("<|start|>")).unwrap();
    for _ in 0..200 {
        p.feed(&words).unwrap();
        assert!(p.header_tokens().len() <= 256 && p.current_content().len() <= 4096);
    }
}

// ----- property tests ---------------------------------------------------------------------

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
fn check_lenient(ids: &[Rank], role: Option<Role>) -> Vec<Event> {
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

/// Throughput: `cargo test --release --lib parser::tests::throughput -- --ignored --nocapture`.
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

/// Differential test against vectors recorded from the reference by a fuzzing script:
/// `LH_PARSE_FUZZ=/path/fuzz.jsonl cargo test --lib parser::tests::reference_fuzz -- --ignored`.
#[test]
#[ignore]
fn reference_fuzz() {
    let Ok(path) = std::env::var("LH_PARSE_FUZZ") else {
        return;
    };
    let text = std::fs::read_to_string(path).unwrap();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let row: Value = serde_json::from_str(line).unwrap();
        let mode = if row["strict"].as_bool().unwrap() {
            Mode::Strict
        } else {
            Mode::NonStrict
        };
        check_reference_row(&row, mode);
        if let Some(states) = row["states"].as_array() {
            let (tokens, role) = row_input(&row);
            let mut p = StreamParser::new(role, mode, Limits::unlimited());
            for (i, st) in states.iter().enumerate() {
                if p.process(tokens[i]).is_err() {
                    break;
                }
                let got: Value = serde_json::from_str(&p.state_json()).unwrap();
                assert_eq!(st, &got, "{}: state at {i}", row["name"]);
                assert_eq!(row["tokens_fed"][i].as_u64(), Some(p.tokens().len() as u64));
            }
        }
        // the reference keeps going after an error: so do we, in the same state
        if let Some(cont) = row["cont"].as_array() {
            let (tokens, role) = row_input(&row);
            let mut p = StreamParser::new(role, mode, Limits::unlimited());
            for (i, want) in cont.iter().enumerate() {
                let state =
                    |p: &StreamParser| serde_json::from_str::<Value>(&p.state_json()).unwrap();
                if i == tokens.len() {
                    match p.process_eos() {
                        Ok(()) => assert_eq!(
                            want["eos"],
                            dicts(p.messages()),
                            "{}: cont eos",
                            row["name"]
                        ),
                        Err(e) => {
                            assert_eq!(
                                want["error"].as_str(),
                                Some(e.to_string().as_str()),
                                "{}: cont eos",
                                row["name"]
                            );
                            assert_eq!(want["state"], state(&p));
                        }
                    }
                    break;
                }
                let r = p.process(tokens[i]);
                let ctx = format!("{}: cont {i} {:?}", row["name"], tokens);
                match r {
                    Ok(()) => {
                        assert!(want.get("error").is_none(), "{ctx}: expected {want}");
                        assert_eq!(want["delta"].as_str(), p.last_content_delta(), "{ctx}");
                        assert_eq!(want["content"].as_str(), Some(p.current_content()), "{ctx}");
                    }
                    Err(e) => assert_eq!(
                        want["error"].as_str(),
                        Some(e.to_string().as_str()),
                        "{ctx}"
                    ),
                }
                assert_eq!(want["state"], state(&p), "{ctx}");
                assert_eq!(want["n"].as_u64(), Some(p.messages().len() as u64), "{ctx}");
            }
        }
        // lenient never fails on it
        let (tokens, role) = row_input(&row);
        check_lenient(&tokens, role);
        n += 1;
    }
    eprintln!("{n} fuzz rows checked");
}
