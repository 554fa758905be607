//! Parser: arbitrary id streams, fed in arbitrary chunks, never make the lenient parser fail
//! or panic, give the same messages whatever the chunking, and never panic in strict mode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llama_harmony::chat::Role;
use llama_harmony::limits::Limits;
use llama_harmony::parser::{Mode, StreamParser};

const INTERESTING: [u32; 10] = [200002, 200003, 200005, 200006, 200007, 200008, 200012, 199999, 201088, 525];

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let role = if data[0] & 1 == 1 { Some(Role::Assistant) } else { None };
    let ids: Vec<u32> = data[1..]
        .chunks(2)
        .map(|c| {
            let v = c.iter().fold(0u32, |a, &b| a * 256 + b as u32);
            if v % 3 == 0 { INTERESTING[(v as usize / 3) % INTERESTING.len()] } else { v.wrapping_mul(7919) % 201_200 }
        })
        .collect();
    let limits = Limits { max_header_bytes: 64, max_parsed_message_bytes: 256, max_parsed_total_bytes: 1024, ..Limits::default() };
    let mut whole = StreamParser::new(role, Mode::Lenient, limits);
    whole.feed(&ids).expect("lenient never fails");
    whole.finish().expect("lenient never fails");
    let mut chunked = StreamParser::new(role, Mode::Lenient, limits);
    let step = (data[0] as usize >> 1).max(1);
    for c in ids.chunks(step) {
        chunked.feed(c).expect("lenient never fails");
    }
    chunked.finish().expect("lenient never fails");
    assert_eq!(whole.messages(), chunked.messages());
    for mode in [Mode::Strict, Mode::NonStrict, Mode::Raw] {
        let mut p = StreamParser::new(role, mode, limits);
        for &t in &ids {
            if p.process(t).is_err() {
                break;
            }
        }
        let _ = p.process_eos();
    }
});
