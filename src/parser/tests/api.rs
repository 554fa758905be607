//! The raw mode and the accessors (the reference's `state` JSON, snapshots, `reset`).

use super::*;
use serde_json::{json, Value};

/// The raw mode: every id's text, special tokens by name, U+FFFD for unknown ids.
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

/// The reference's `state` JSON, snapshots by `clone`, `reset`, the role of an open header.
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
