//! Pure cryptography: no IO, no logging, no clocks, no randomness of its own.
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
mod wxbiz;

pub use envelope::{Envelope, EnvelopeFormat, SealedReply};
pub use error::CryptoError;
pub use wxbiz::{AES_KEY_LEN, RANDOM_PREFIX_LEN, WxBizMsgCrypt};
