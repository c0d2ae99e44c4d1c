//! WXBizMsgCrypt: WeCom's callback encryption (AES-256-CBC, 32-byte PKCS#7, SHA1 signature).
//!
//! Layout of the plaintext: `random(16) | msg_len (u32 BE) | msg | receive_id`, padded to a
//! multiple of 32 bytes. Three traps catch most implementations, and all three are handled here:
//! real EncodingAESKeys have non-zero base64 trailing bits, pads run 1..=32 (not 1..=16), and the
//! message must not be parsed by the decryptor (an official sample decrypts to invalid JSON).

use aes::Aes256;
use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::envelope::SealedReply;
use super::error::CryptoError;

/// Length of the AES-256 key decoded from an EncodingAESKey.
pub const AES_KEY_LEN: usize = 32;
/// Length of the random prefix of every plaintext.
pub const RANDOM_PREFIX_LEN: usize = 16;

const ENCODING_AES_KEY_LEN: usize = 43;
const PAD_BLOCK: usize = 32;
const AES_BLOCK: usize = 16;
const LENGTH_FIELD_LEN: usize = 4;

/// Standard alphabet, tolerant of non-zero trailing bits and of missing or present padding,
/// as the official libraries (Python `b64decode`, Go `StdEncoding`, OpenSSL) are.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One callback endpoint's credentials: the Token and the AES key derived from EncodingAESKey.
///
/// Which ReceiveIds are acceptable is the caller's decision; see [`WxBizMsgCrypt::open`].
#[derive(Clone)]
pub struct WxBizMsgCrypt {
    token: String,
    key: [u8; AES_KEY_LEN],
    /// The expanded key schedule, made once: every callback decrypts, and expanding the key
    /// each time showed in the front door's profile.
    cipher: Aes256,
}

impl std::fmt::Debug for WxBizMsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WxBizMsgCrypt { token: [redacted], key: [redacted] }")
    }
}

impl WxBizMsgCrypt {
    /// Derives the AES key; fails with -40004 unless `encoding_aes_key` is 43 base64 characters
    /// that decode to 32 bytes.
    pub fn new(token: &str, encoding_aes_key: &str) -> Result<Self, CryptoError> {
        let key = derive_aes_key(encoding_aes_key)?;
        Ok(WxBizMsgCrypt { token: token.to_owned(), key, cipher: Aes256::new(&key.into()) })
    }

    /// `hex_lower(SHA1(concat(sort([token, timestamp, nonce, encrypted]))))`.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypted: &str) -> String {
        hex_lower(&self.digest(timestamp, nonce, encrypted))
    }

    fn digest(&self, timestamp: &str, nonce: &str, encrypted: &str) -> [u8; SIGNATURE_BYTES] {
        let mut parts = [self.token.as_bytes(), timestamp.as_bytes(), nonce.as_bytes(), encrypted.as_bytes()];
        parts.sort_unstable();
        let mut hasher = Sha1::new();
        for part in parts {
            hasher.update(part);
        }
        hasher.finalize().into()
    }

    /// Checks `msg_signature` in constant time. Upper-case hex is accepted.
    pub fn verify_signature(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypted: &str,
    ) -> Result<(), CryptoError> {
        // Decode the given hex (either case) rather than format ours: no allocation on this path.
        let given: [u8; SIGNATURE_BYTES] = decode_hex(msg_signature).ok_or(CryptoError::ValidateSignature)?;
        let expected = self.digest(timestamp, nonce, encrypted);
        if bool::from(expected.ct_eq(&given)) { Ok(()) } else { Err(CryptoError::ValidateSignature) }
    }

    /// Verifies the signature, then decrypts, then checks the ReceiveId with `accept`.
    /// Returns the raw message bytes, unparsed.
    pub fn open(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypted: &str,
        accept_receive_id: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<u8>, CryptoError> {
        self.verify_signature(msg_signature, timestamp, nonce, encrypted)?;
        self.decrypt_for(encrypted, accept_receive_id)
    }

    /// Decrypts base64 `encrypted` and returns the message if `accept_receive_id` accepts its
    /// ReceiveId. Like [`WxBizMsgCrypt::decrypt`], checks no signature; one allocation.
    pub fn decrypt_for(
        &self,
        encrypted: &str,
        accept_receive_id: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<u8>, CryptoError> {
        let (mut buffer, msg_end) = self.decrypt_in_place(encrypted)?;
        if !accept_receive_id(&buffer[msg_end..]) {
            return Err(CryptoError::ValidateReceiveId);
        }
        buffer.truncate(msg_end);
        buffer.drain(..RANDOM_PREFIX_LEN + LENGTH_FIELD_LEN);
        Ok(buffer)
    }

    /// Decrypts base64 `encrypted` into `(msg, receive_id)`. Does not check the signature:
    /// use [`WxBizMsgCrypt::open`] for anything that came over the network.
    pub fn decrypt(&self, encrypted: &str) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let (mut buffer, msg_end) = self.decrypt_in_place(encrypted)?;
        let receive_id = buffer.split_off(msg_end);
        buffer.drain(..RANDOM_PREFIX_LEN + LENGTH_FIELD_LEN);
        Ok((buffer, receive_id))
    }

    /// The unpadded plaintext `random | len | msg | receive_id`, and where `msg` ends.
    fn decrypt_in_place(&self, encrypted: &str) -> Result<(Vec<u8>, usize), CryptoError> {
        let mut buffer = LENIENT_BASE64.decode(encrypted).map_err(|_| CryptoError::DecodeBase64)?;
        if buffer.is_empty() || buffer.len() % AES_BLOCK != 0 {
            return Err(CryptoError::DecryptAes);
        }
        let iv = self.iv();
        let plain_len = cbc::Decryptor::<Aes256>::inner_iv_init(self.cipher.clone(), &iv.into())
            .decrypt_padded::<NoPadding>(&mut buffer)
            .map_err(|_| CryptoError::DecryptAes)?
            .len();
        buffer.truncate(plain_len);
        let unpadded_len = strip_pad(&buffer)?;
        buffer.truncate(unpadded_len);
        let msg_end = message_end(&buffer)?;
        Ok((buffer, msg_end))
    }

    /// Encrypts `msg` for `receive_id` with the given random prefix, returning base64.
    pub fn encrypt(&self, random: [u8; RANDOM_PREFIX_LEN], msg: &[u8], receive_id: &[u8]) -> String {
        let content_len = RANDOM_PREFIX_LEN + LENGTH_FIELD_LEN + msg.len() + receive_id.len();
        let pad = PAD_BLOCK - content_len % PAD_BLOCK;
        let mut buffer = Vec::with_capacity(content_len + pad);
        buffer.extend_from_slice(&random);
        // A message longer than u32::MAX cannot be represented; the HTTP body limit keeps us
        // far below it, and saturating keeps this function total.
        let msg_len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        buffer.extend_from_slice(&msg_len.to_be_bytes());
        buffer.extend_from_slice(msg);
        buffer.extend_from_slice(receive_id);
        // `pad` is in 1..=32, so the cast is lossless.
        buffer.resize(content_len + pad, pad as u8);
        let total = buffer.len();
        let iv = self.iv();
        let encrypted = cbc::Encryptor::<Aes256>::inner_iv_init(self.cipher.clone(), &iv.into())
            .encrypt_padded::<NoPadding>(&mut buffer, total)
            .map(<[u8]>::to_vec)
            // The buffer length is a multiple of 32 by construction, so NoPadding cannot fail.
            .unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(encrypted)
    }

    /// Encrypts and signs a reply, ready to be written as an XML or JSON envelope.
    pub fn seal(
        &self,
        random: [u8; RANDOM_PREFIX_LEN],
        msg: &[u8],
        receive_id: &[u8],
        timestamp: &str,
        nonce: &str,
    ) -> SealedReply {
        let encrypt = self.encrypt(random, msg, receive_id);
        let msg_signature = self.signature(timestamp, nonce, &encrypt);
        SealedReply { encrypt, msg_signature, timestamp: timestamp.to_owned(), nonce: nonce.to_owned() }
    }

    fn iv(&self) -> [u8; AES_BLOCK] {
        let mut iv = [0u8; AES_BLOCK];
        iv.copy_from_slice(&self.key[..AES_BLOCK]);
        iv
    }
}

fn derive_aes_key(encoding_aes_key: &str) -> Result<[u8; AES_KEY_LEN], CryptoError> {
    if encoding_aes_key.len() != ENCODING_AES_KEY_LEN {
        return Err(CryptoError::IllegalAesKey("must be 43 characters"));
    }
    if !encoding_aes_key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/') {
        return Err(CryptoError::IllegalAesKey("must contain only base64 characters"));
    }
    let decoded =
        LENIENT_BASE64.decode(encoding_aes_key).map_err(|_| CryptoError::IllegalAesKey("is not valid base64"))?;
    decoded.try_into().map_err(|_| CryptoError::IllegalAesKey("must decode to 32 bytes"))
}

/// Returns the length without the pad. Accepts pads 1..=32 (official encoders pad to 32; some
/// third-party ones pad to 16) and requires every pad byte to carry the pad value.
fn strip_pad(buffer: &[u8]) -> Result<usize, CryptoError> {
    let Some(&last) = buffer.last() else {
        return Err(CryptoError::DecryptAes);
    };
    let pad = usize::from(last);
    if pad == 0 || pad > PAD_BLOCK || pad > buffer.len() {
        return Err(CryptoError::DecryptAes);
    }
    let body_len = buffer.len() - pad;
    if buffer[body_len..].iter().any(|&b| b != last) {
        return Err(CryptoError::DecryptAes);
    }
    Ok(body_len)
}

/// Where `msg` ends in `random | len | msg | receive_id`, bounds-checked.
fn message_end(buffer: &[u8]) -> Result<usize, CryptoError> {
    let header_len = RANDOM_PREFIX_LEN + LENGTH_FIELD_LEN;
    let Some(length_field) = buffer.get(RANDOM_PREFIX_LEN..header_len) else {
        return Err(CryptoError::IllegalBuffer);
    };
    let mut length_bytes = [0u8; LENGTH_FIELD_LEN];
    length_bytes.copy_from_slice(length_field);
    let msg_len = usize::try_from(u32::from_be_bytes(length_bytes)).map_err(|_| CryptoError::IllegalBuffer)?;
    let msg_end = header_len.checked_add(msg_len).ok_or(CryptoError::IllegalBuffer)?;
    if msg_end > buffer.len() {
        return Err(CryptoError::IllegalBuffer);
    }
    Ok(msg_end)
}

/// SHA1's output length.
const SIGNATURE_BYTES: usize = 20;

/// `text` as exactly `N` bytes of hex (upper or lower case), or `None`.
fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    let digits = text.as_bytes();
    if digits.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_of_every_length_from_1_to_32_are_stripped() {
        for pad in 1..=32u8 {
            let mut buffer = vec![7u8; 40];
            buffer.extend(std::iter::repeat_n(pad, usize::from(pad)));
            assert_eq!(strip_pad(&buffer), Ok(40), "pad {pad}");
        }
    }

    #[test]
    fn zero_oversized_and_inconsistent_pads_are_rejected() {
        assert_eq!(strip_pad(&[]), Err(CryptoError::DecryptAes));
        assert_eq!(strip_pad(&[1, 2, 0]), Err(CryptoError::DecryptAes));
        assert_eq!(strip_pad(&[33; 64]), Err(CryptoError::DecryptAes));
        assert_eq!(strip_pad(&[3, 3]), Err(CryptoError::DecryptAes));
        assert_eq!(strip_pad(&[9, 2, 3, 3]), Err(CryptoError::DecryptAes));
    }

    #[test]
    fn layout_bounds_are_checked_before_slicing() {
        assert_eq!(message_end(&[0; 19]), Err(CryptoError::IllegalBuffer));
        let mut declares_too_much = vec![0; 16];
        declares_too_much.extend_from_slice(&5u32.to_be_bytes());
        declares_too_much.extend_from_slice(b"abcd");
        assert_eq!(message_end(&declares_too_much), Err(CryptoError::IllegalBuffer));
        let mut huge = vec![0; 16];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(message_end(&huge), Err(CryptoError::IllegalBuffer));
        let mut fits = vec![0; 16];
        fits.extend_from_slice(&2u32.to_be_bytes());
        fits.extend_from_slice(b"hiww");
        assert_eq!(message_end(&fits), Ok(22));
    }

    #[test]
    fn signatures_are_checked_in_either_case_and_by_length() {
        let crypto = WxBizMsgCrypt::new("token", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C").unwrap();
        let signature = crypto.signature("1", "2", "abc");
        assert_eq!(crypto.verify_signature(&signature, "1", "2", "abc"), Ok(()));
        assert_eq!(crypto.verify_signature(&signature.to_uppercase(), "1", "2", "abc"), Ok(()));
        assert!(crypto.verify_signature(&signature[..39], "1", "2", "abc").is_err());
        assert!(crypto.verify_signature(&format!("{signature}0"), "1", "2", "abc").is_err());
        assert!(crypto.verify_signature(&signature.replace(&signature[..1], "g"), "1", "2", "abc").is_err());
        assert!(crypto.verify_signature(&signature, "1", "2", "abd").is_err());
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex_lower(&[0x00, 0xab, 0xff]), "00abff");
    }
}
