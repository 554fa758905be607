//! Generates the embedded o200k_base rank table at build time.
//!
//! The ranks come from the `tiktoken-rs` crate (a build dependency that embeds the official
//! o200k_base file). We write a compact binary table into OUT_DIR:
//!   u32 LE count, then `count` u16 LE lengths, then the concatenated token bytes in rank order.
//! Nothing is downloaded and no vocabulary file is committed to the repository.
use std::io::Write;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let bpe = tiktoken_rs::o200k_base().expect("tiktoken-rs o200k_base");
    const N: u32 = 199_998;
    let mut lens: Vec<u8> = Vec::with_capacity(N as usize * 2);
    let mut blob: Vec<u8> = Vec::with_capacity(1 << 21);
    for rank in 0..N {
        let bytes = bpe
            .decode_bytes(&[rank])
            .unwrap_or_else(|_| panic!("rank {rank} missing from o200k_base"));
        assert!(!bytes.is_empty() && bytes.len() < u16::MAX as usize);
        lens.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        blob.extend_from_slice(&bytes);
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("o200k_ranks.bin");
    let mut f = std::fs::File::create(&out).unwrap();
    f.write_all(&N.to_le_bytes()).unwrap();
    f.write_all(&lens).unwrap();
    f.write_all(&blob).unwrap();
}
