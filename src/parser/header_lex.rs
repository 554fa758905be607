//! The lenient header lexer: a header string split into [`Item`]s (words, special-token
//! names, `<|channel|>` with its value, `<|constrain|>` with its word). The lenient rules in
//! `header_lenient` read these items; the reference's rules (`header`) work on the string.

use super::header::{word_len, CHANNEL_MARK, CONSTRAIN_MARK};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ItemKind {
    /// `<|channel|>` and its value (the value may be empty).
    Channel,
    /// `<|constrain|>` and the word glued to it.
    Constrain,
    /// Any other special-token name.
    Special,
    Word,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Item {
    pub(super) kind: ItemKind,
    pub(super) start: usize,
    pub(super) end: usize,
    /// For `Channel`: where the value starts.
    pub(super) value_start: usize,
}

/// The length of a special-token name (`<|...|>`) at the start of `s`, if any.
fn special_at(s: &str) -> Option<usize> {
    if !s.starts_with("<|") {
        return None;
    }
    let close = s[2..].find("|>")? + 4;
    if close > 40 || s[2..close - 2].contains(|c: char| c.is_whitespace() || c == '<') {
        return None;
    }
    Some(close)
}

/// Splits a header string into items (whitespace is a separator; special-token names are
/// items of their own, except `<|channel|>` and `<|constrain|>`, which take the word glued
/// to them).
pub(super) fn lex_header(h: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut i = 0;
    let b = h.as_bytes();
    while i < h.len() {
        let c = h[i..].chars().next().unwrap_or(' ');
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        if b[i] == b'<' {
            let marked = [
                (CHANNEL_MARK, ItemKind::Channel),
                (CONSTRAIN_MARK, ItemKind::Constrain),
            ]
            .into_iter()
            .find(|(mark, _)| h[i..].starts_with(mark));
            if let Some((mark, kind)) = marked {
                let value_start = i + mark.len();
                let end = value_start + word_len(&h[value_start..]);
                items.push(Item {
                    kind,
                    start: i,
                    end,
                    value_start,
                });
                i = end;
                continue;
            }
            if let Some(n) = special_at(&h[i..]) {
                items.push(Item {
                    kind: ItemKind::Special,
                    start: i,
                    end: i + n,
                    value_start: i,
                });
                i += n;
                continue;
            }
        }
        // A word: up to whitespace or the next special-token name.
        let mut j = i + c.len_utf8();
        while j < h.len() {
            let d = h[j..].chars().next().unwrap_or(' ');
            if d.is_whitespace() || (d == '<' && special_at(&h[j..]).is_some()) {
                break;
            }
            j += d.len_utf8();
        }
        items.push(Item {
            kind: ItemKind::Word,
            start: i,
            end: j,
            value_start: i,
        });
        i = j;
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_and_texts(h: &str) -> Vec<(ItemKind, &str, &str)> {
        lex_header(h)
            .iter()
            .map(|it| (it.kind, &h[it.start..it.end], &h[it.value_start..it.end]))
            .collect()
    }

    #[test]
    fn lexer_splits_words_marks_and_special_names() {
        use ItemKind::*;
        assert_eq!(
            kinds_and_texts("assistant<|channel|>commentary to=functions.f <|constrain|>json"),
            vec![
                (Word, "assistant", "assistant"),
                (Channel, "<|channel|>commentary", "commentary"),
                (Word, "to=functions.f", "to=functions.f"),
                (Constrain, "<|constrain|>json", "json"),
            ]
        );
        // an empty channel value, another special name, a `<` that is no special name
        assert_eq!(
            kinds_and_texts("<|channel|><|reserved_200010|> a<b"),
            vec![
                (Channel, "<|channel|>", ""),
                (Special, "<|reserved_200010|>", "<|reserved_200010|>"),
                (Word, "a<b", "a<b"),
            ]
        );
    }
}
