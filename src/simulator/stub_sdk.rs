//! The stand-in finance SDK (`stub-sdk/finance_sdk_stub.c`, built by `build.rs`): the library's
//! bytes, a way to put it on disk for a worker to load, and the Rust side of its DecryptData
//! scheme, which the simulator uses to encrypt its corpus. The scheme is the stub's own (WeCom's
//! is not public): a 4-byte tag and the plaintext XORed with a keystream, both drawn from a
//! splitmix64 generator seeded with FNV-1a of the 88-character key; unauthenticated on purpose,
//! like the real one.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::SplitMix;

/// The compiled stub library.
pub const LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libWeWorkFinanceSdk_stub.so"));

/// Writes the stub library into `dir` and returns its path.
pub fn install(dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join("libWeWorkFinanceSdk_stub.so");
    std::fs::write(&path, LIBRARY)?;
    Ok(path)
}

/// `encrypt_chat_msg` for `plaintext` under `encrypt_key` (the 88-character base64 string that
/// `encrypt_random_key` RSA-decrypts to).
pub fn seal(encrypt_key: &str, plaintext: &[u8]) -> String {
    let mut generator = SplitMix::new(fnv1a(encrypt_key.as_bytes()));
    let tag = generator.next_u64();
    let mut sealed = tag.to_le_bytes()[..4].to_vec();
    let mut stream = [0u8; 8];
    for (index, byte) in plaintext.iter().enumerate() {
        if index % 8 == 0 {
            stream = generator.next_u64().to_le_bytes();
        }
        sealed.push(byte ^ stream[index % 8]);
    }
    STANDARD.encode(sealed)
}

/// A fresh `encrypt_key` as WeCom makes them: 64 random bytes, base64 (88 characters).
pub fn random_encrypt_key(random: &mut SplitMix) -> String {
    let bytes: Vec<u8> = (0..8).flat_map(|_| random.next_u64().to_le_bytes()).collect();
    STANDARD.encode(bytes)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}
