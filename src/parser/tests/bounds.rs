//! The memory bounds of the module documentation (the caps of single messages and headers
//! are outcome-table rows, in `outcome_table.rs`).

use super::*;

/// The token history keeps between `n` and `2n` recent ids.
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

/// "Memory bounds": a ten-million-token stream, an endless message and an endless header
/// run in bounded memory.
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
