//! Pure cryptography: no IO, no logging, no clocks. WXBizMsgCrypt has no randomness of its own;
//! only RSA key generation and public-key encryption (keygen, simulator) draw from aws-lc's RNG.
//!
//! Two schemes live here: WXBizMsgCrypt for callbacks (`wxbiz`, `envelope`) and RSA-2048 for
//! chat records' secret keys (`rsa`).
//!
//! Everything here is a function of its inputs, so every path can be tested with known-answer
//! vectors and property tests. Callers supply randomness (the 16-byte prefix) and time (the
//! timestamp and nonce they sign).
//!
//! Security note: WXBizMsgCrypt is AES-256-CBC without a MAC; CBC is malleable and its unpadding
//! is a classic padding oracle. What protects it is the SHA1 signature over the ciphertext, keyed
//! by the secret Token: callers must verify the signature *before* decrypting, which
//! [`WxBizMsgCrypt::open`] enforces by doing both in that order.

mod envelope;
mod error;
mod rsa;
mod wxbiz;

pub use envelope::{Envelope, EnvelopeFormat, SealedReply};
pub use error::CryptoError;
pub use rsa::{
    KeyError, KeyRing, PublicKeyEncryptor, RsaPadding, SecretKeyError, generate_key_pair_pem, parse_private_key,
    public_key_fingerprint,
};
pub use wxbiz::{AES_KEY_LEN, RANDOM_PREFIX_LEN, WxBizMsgCrypt};
