//! The lenient outcome table of the module documentation: one test per row (or pair of
//! rows), named after it and in its order. Each compares with the reference where the row
//! says the reference succeeds.

use super::*;
use crate::chat::Author;
use crate::error::HarmonyError;
use crate::tokenizer::{ids, tokenizer};

/// Rows `S assistant to=functions.f C commentary K json M {..} L` and the recipient after the channel.
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

/// Rows "call on analysis" and "content type `K json`, `json`, `code`, none".
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

/// Tool results (`functions.x to=assistant`) are not calls (module documentation, "Events").
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

/// Row `S assistant C final K json M {..} R`: a content type, not a recipient.
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

/// Row `S assistant C final Hello E` (no `M`), role given.
#[test]
fn lenient_missing_message_role_given() {
    // role given: same as the reference
    let (ev, p) = lenient("<|channel|>final Hello there<|end|>", Some(A));
    assert_eq!(
        msgs(&p),
        vec![m(A, Some("final"), None, None, "Hello there")]
    );
    assert_eq!(repairs(&ev), vec![RepairKind::MissingMessage]);
    assert_eq!(p.repaired(), &[true]);
}

/// Row "the same without a given role, or a later message".
#[test]
fn lenient_missing_message_without_role_or_in_a_later_message() {
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

/// Row `C final M Hi E` with no role (no `S`/role).
#[test]
fn lenient_missing_start_and_role() {
    let (ev, p) = lenient("<|channel|>final<|message|>Hi<|end|>", None);
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "Hi")]);
    assert_eq!(
        repairs(&ev),
        vec![RepairKind::MissingStart, RepairKind::MissingRole]
    );
}

/// Row `assistant C final M Hi E` after a message (no `S`).
#[test]
fn lenient_missing_start_after_a_message() {
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

/// Row `... E Hello S ...` (stray text between messages).
#[test]
fn lenient_stray_text_between_messages() {
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

/// Row "stray whitespace between messages".
#[test]
fn lenient_stray_whitespace_between_messages() {
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
}

/// Row `... E R` (`<|return|>` right after `<|end|>`).
#[test]
fn lenient_return_after_end() {
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
}

/// Row `S S assistant ...` (double start).
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

/// Row `S assistant C analysis C analysis M ...` (duplicated channel).
#[test]
fn lenient_duplicate_channel() {
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
}

/// Row `... to=functions.f to=functions.g M` (doubled `to=`).
#[test]
fn lenient_duplicate_recipient() {
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
}

/// An empty `to=` followed by a word (module documentation, the deviations after the table).
#[test]
fn lenient_empty_to_takes_the_next_word() {
    let (_, p) = lenient(
        &format!("{S}<|channel|>commentary to= functions.f<|message|>{{}}<|call|>"),
        None,
    );
    assert_eq!(
        msgs(&p),
        vec![m(A, Some("commentary"), Some("functions.f"), None, "{}")]
    );
}

/// Row `... to=functions.f L trailing text` (garbage after a call).
#[test]
fn lenient_garbage_after_call() {
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

/// Row `S robot M x E` (unknown role); a dotted name is a tool without repair.
#[test]
fn lenient_unknown_role() {
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
}

/// Row `S assistantassistant C final M x E` (and a role glued to its channel).
#[test]
fn lenient_doubled_role() {
    let (ev, p) = lenient(
        "<|start|>assistantassistant<|channel|>final<|message|>x<|end|>",
        None,
    );
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
    assert_eq!(repairs(&ev), vec![RepairKind::DoubledRole]);
    let (_, p) = lenient("<|start|>assistantfinal<|message|>x<|end|>", None);
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
}

/// Row `S user:alice M hi E` (named author).
#[test]
fn lenient_named_author() {
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

/// Row `S assistant C M x E` (empty channel).
#[test]
fn lenient_empty_channel() {
    let (ev, p) = lenient(&format!("{S}<|channel|><|message|>x<|end|>"), None);
    assert_eq!(msgs(&p), vec![m(A, None, None, None, "x")]);
    assert_eq!(repairs(&ev), vec![RepairKind::EmptyChannel]);
    let (_, p) = lenient(&format!("{S}<|channel|> final<|message|>x<|end|>"), None);
    assert_eq!(msgs(&p), vec![m(A, Some("final"), None, None, "x")]);
}

/// Row `S assistant C commentary ––commentary to=f M` (extra header words).
#[test]
fn lenient_extra_header_words() {
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

/// Row `S assistant C ––commentary M x E` (custom channel names kept verbatim).
#[test]
fn lenient_custom_channel_names_are_kept() {
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
}

/// Row "unknown/out-of-range id in content" (and between messages, in a header).
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

/// Row `<|reserved_200013|>`, `C`, `M`, `K` inside content.
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
}

/// Row `S assistant C analysis M plan S assistant C final M Hi R` (no `E` before `S`).
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

/// Row `<|endoftext|>` inside content.
#[test]
fn lenient_endoftext_in_content_ends_the_message() {
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

/// Row "several tool calls in one stream".
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

/// Row "truncated mid-header" (`S assistant C fin`).
#[test]
fn lenient_truncated_mid_header() {
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
}

/// Row "truncated mid-content" (`Truncated`, or `Length` via `finish_length`).
#[test]
fn lenient_truncated_mid_content() {
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

/// Row "header text that cannot be a header": too many words, or a line break.
#[test]
fn lenient_header_as_content_streams_at_once() {
    let mut p = StreamParser::new(Some(Role::Assistant), Mode::Lenient, Limits::default());
    // the model skips the header (prompt ends with `<|start|>assistant`): text streams at the
    // ninth word, not at the end or at `max_header_bytes`
    let ev = p.feed(&toks(" Hello there, how are you today my dear")).unwrap();
    assert!(ev.is_empty(), "eight words may still be a (malformed) header: {ev:?}");
    let ev = p.feed(&toks(" friend")).unwrap();
    assert!(repairs(&ev).contains(&RepairKind::HeaderAsContent));
    assert_eq!(p.state(), StateKind::Content);
    let streamed: String = ev
        .iter()
        .filter_map(|e| match e {
            Event::ContentDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, "Hello there, how are you today my dear friend");
    let ev = p.feed(&toks(" and more")).unwrap();
    assert!(matches!(&ev[..], [Event::ContentDelta { text, .. }] if text == " and more"));
    p.feed(&toks("<|return|>")).unwrap();
    assert_eq!(
        msgs(&p),
        vec![m(A, None, None, None, "Hello there, how are you today my dear friend and more")]
    );
    // a word after a line break: at once (a line break alone before `<|message|>` is fine)
    let mut p = StreamParser::new(Some(Role::Assistant), Mode::Lenient, Limits::default());
    assert!(p.feed(&toks("Hi\n")).unwrap().is_empty());
    let ev = p.feed(&toks("there")).unwrap();
    assert!(repairs(&ev).contains(&RepairKind::HeaderAsContent));
    // a real header with several (malformed) words is still a header
    let mut p = StreamParser::new(None, Mode::Lenient, Limits::default());
    p.feed(&toks("<|start|>assistant<|channel|>commentary ––commentary to=functions.f <|constrain|>json<|message|>{}<|call|>"))
        .unwrap();
    assert_eq!(msgs(&p)[0].3.as_deref(), Some("functions.f"));
}

/// Row "header longer than `max_header_bytes`".
#[test]
fn lenient_header_too_long_becomes_content() {
    let limits = Limits {
        max_header_bytes: 64,
        ..Limits::default()
    };
    let mut p = StreamParser::new(None, Mode::Lenient, limits);
    // one long word (more words would make it content earlier: see the next row)
    let text = "lorem-ipsum-".repeat(20);
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

/// Row "content over `max_parsed_message_bytes`" (and the total cap's eviction).
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
