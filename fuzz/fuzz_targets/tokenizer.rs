//! Tokenizer: any text encodes without panicking, decodes back to itself, and special-token
//! handling splits the text exactly at the special strings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama_harmony::tokenizer::{tokenizer, N_BASE};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let t = tokenizer();
    let ids = t.encode_ordinary(&text);
    assert!(ids.iter().all(|&i| i < N_BASE));
    assert_eq!(t.decode_utf8(&ids).unwrap(), text);
    assert_eq!(t.pieces(&text).concat(), text);
    let with_special = t.encode_with_special(&text, |_| true);
    assert_eq!(t.decode_bytes(&with_special).unwrap(), text.as_bytes());
    // decoding arbitrary ids never panics
    let raw: Vec<u32> = data.chunks(3).map(|c| c.iter().fold(0u32, |a, &b| a * 256 + b as u32) % 201_200).collect();
    let _ = t.decode_bytes(&raw);
    let _ = t.decode_utf8(&raw);
});
