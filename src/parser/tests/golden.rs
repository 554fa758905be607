//! The reference's golden vectors (`third_party/harmony/goldens/parse.jsonl`, recorded from
//! openai-harmony 0.0.8): the strict and non-strict modes replay every record token by
//! token (accessors, errors and their position, messages), the lenient mode gives the same
//! messages wherever the reference succeeds (except the documented deviations).

use super::properties::check_lenient;
use super::*;
use serde_json::{json, Value};

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

/// Differential test against vectors recorded from the reference by a fuzzing script:
/// `LH_PARSE_FUZZ=/path/fuzz.jsonl cargo test --lib parser::tests::golden::reference_fuzz -- --ignored`.
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
