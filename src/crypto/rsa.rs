//! RSA-2048 message keys: a ring of private keys by version, and key generation.
//!
//! Each chat record carries `service_encrypt_info{encrypted_secret_key, public_key_ver}`;
//! `secret_key = RSA_decrypt(base64(encrypted_secret_key))` with the private key *of that version*.
//! Keys are chosen by version, never by trial.
//!
//! Security note: WeCom encrypts with PKCS#1 v1.5 (the classic archive documents it; the zone does
//! not say, so OAEP is selectable). PKCS#1 v1.5 decryption is exposed to Bleichenbacher-style
//! oracles when an attacker can submit ciphertexts and observe failures. Here ciphertexts come only
//! from WeCom's authenticated `sync_msg` answers, failures are stored as a status rather than
//! reported to a caller, and aws-lc's implementation is constant-time; the RustCrypto `rsa` crate
//! (RUSTSEC-2023-0071) is not used.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::domain::DecryptStatus;

const KEY_BITS: usize = 2048;
const KEY_BYTES: usize = KEY_BITS / 8;

/// Why a private key could not be loaded. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM key or base64 DER")]
    NotAKey,
    #[error("encrypted private keys are not supported; decrypt it first (openssl rsa -in KEY -out KEY)")]
    Encrypted,
    #[error("unexpected PEM label `{0}`; expected RSA PRIVATE KEY or PRIVATE KEY")]
    UnexpectedLabel(String),
    #[error("not a valid RSA private key")]
    Invalid,
    #[error("the key has {0} bits; WeCom uses RSA-2048")]
    WrongSize(usize),
    #[error("version {0} is configured twice")]
    DuplicateVersion(u32),
    #[error("key generation failed")]
    Generation,
}

/// Why a record's secret key could not be decrypted. Stored with the record as its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    #[error("no private key for this version")]
    UnknownKeyVersion,
    #[error("encrypted_secret_key is missing")]
    Missing,
    #[error("encrypted_secret_key is not base64")]
    BadBase64,
    #[error("RSA decryption failed (wrong key or bad padding)")]
    BadCiphertext,
    #[error("the decrypted secret key is not UTF-8")]
    NotUtf8,
}

impl SecretKeyError {
    /// The status stored with the record.
    pub fn status(&self) -> DecryptStatus {
        match self {
            SecretKeyError::UnknownKeyVersion => DecryptStatus::UnknownKeyVersion,
            SecretKeyError::Missing => DecryptStatus::Missing,
            SecretKeyError::BadBase64 => DecryptStatus::BadBase64,
            SecretKeyError::BadCiphertext => DecryptStatus::BadCiphertext,
            SecretKeyError::NotUtf8 => DecryptStatus::NotUtf8,
        }
    }
}

/// RSA padding of `encrypted_secret_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RsaPadding {
    #[default]
    Pkcs1,
    /// OAEP with SHA-1 and MGF1-SHA-1 (Java's `OAEPWithSHA-1AndMGF1Padding`).
    OaepSha1,
}

enum Decryptor {
    Pkcs1(Pkcs1PrivateDecryptingKey),
    Oaep(OaepPrivateDecryptingKey),
}

/// Private keys by version. Immutable once built; share it behind an `Arc`.
#[derive(Default)]
pub struct KeyRing {
    keys: BTreeMap<u32, Decryptor>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing {{ versions: {:?} }}", self.versions())
    }
}

impl KeyRing {
    /// Adds the key of `version` in `padding`.
    pub fn insert(&mut self, version: u32, key: PrivateDecryptingKey, padding: RsaPadding) -> Result<(), KeyError> {
        if self.keys.contains_key(&version) {
            return Err(KeyError::DuplicateVersion(version));
        }
        let decryptor = match padding {
            RsaPadding::Pkcs1 => Decryptor::Pkcs1(Pkcs1PrivateDecryptingKey::new(key).map_err(|_| KeyError::Invalid)?),
            RsaPadding::OaepSha1 => Decryptor::Oaep(OaepPrivateDecryptingKey::new(key).map_err(|_| KeyError::Invalid)?),
        };
        self.keys.insert(version, decryptor);
        Ok(())
    }

    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    pub fn has_version(&self, version: u32) -> bool {
        self.keys.contains_key(&version)
    }

    /// Decrypts a record's `encrypted_secret_key` with the key of `version`.
    pub fn decrypt_secret_key(&self, version: u32, encrypted_secret_key: &str) -> Result<String, SecretKeyError> {
        if encrypted_secret_key.is_empty() {
            return Err(SecretKeyError::Missing);
        }
        let decryptor = self.keys.get(&version).ok_or(SecretKeyError::UnknownKeyVersion)?;
        let ciphertext = STANDARD.decode(encrypted_secret_key.trim()).map_err(|_| SecretKeyError::BadBase64)?;
        if ciphertext.len() != KEY_BYTES {
            return Err(SecretKeyError::BadCiphertext);
        }
        let mut output = [0u8; KEY_BYTES];
        let plain = match decryptor {
            Decryptor::Pkcs1(key) => key.decrypt(&ciphertext, &mut output),
            Decryptor::Oaep(key) => key.decrypt(&OAEP_SHA1_MGF1SHA1, &ciphertext, &mut output, None),
        }
        .map_err(|_| SecretKeyError::BadCiphertext)?;
        std::str::from_utf8(plain).map(str::to_owned).map_err(|_| SecretKeyError::NotUtf8)
    }
}

/// Parses a private key: PEM `RSA PRIVATE KEY` (PKCS#1) or `PRIVATE KEY` (PKCS#8), or header-less
/// base64 DER (PKCS#8 tried first, then PKCS#1). Only unencrypted RSA-2048 keys are accepted.
pub fn parse_private_key(text: &str) -> Result<PrivateDecryptingKey, KeyError> {
    let text = text.trim();
    if text.contains("ENCRYPTED") {
        return Err(KeyError::Encrypted);
    }
    let key = if text.starts_with("-----BEGIN") {
        let pem = pem::parse(text).map_err(|_| KeyError::NotAKey)?;
        match pem.tag() {
            "PRIVATE KEY" => PrivateDecryptingKey::from_pkcs8(pem.contents()).map_err(|_| KeyError::Invalid)?,
            "RSA PRIVATE KEY" => {
                PrivateDecryptingKey::from_pkcs8(&pkcs1_to_pkcs8(pem.contents())).map_err(|_| KeyError::Invalid)?
            }
            other => return Err(KeyError::UnexpectedLabel(other.to_owned())),
        }
    } else {
        let compact: String = text.split_whitespace().collect();
        let der = STANDARD.decode(compact).map_err(|_| KeyError::NotAKey)?;
        PrivateDecryptingKey::from_pkcs8(&der)
            .or_else(|_| PrivateDecryptingKey::from_pkcs8(&pkcs1_to_pkcs8(&der)))
            .map_err(|_| KeyError::Invalid)?
    };
    if key.key_size_bits() != KEY_BITS {
        return Err(KeyError::WrongSize(key.key_size_bits()));
    }
    Ok(key)
}

/// SHA-256 of the key's public half (SubjectPublicKeyInfo DER), lowercase hex: names a key pair
/// without revealing anything of the private key.
pub fn public_key_fingerprint(key: &PrivateDecryptingKey) -> Result<String, KeyError> {
    let der = key.public_key().as_der().map_err(|_| KeyError::Invalid)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    Ok(digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect())
}

/// A new RSA-2048 key pair as PEM: (PKCS#8 private key, SPKI public key), as WeCom's
/// 消息加密公钥 expects the public half.
pub fn generate_key_pair_pem() -> Result<(String, String), KeyError> {
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generation)?;
    let private_der = key.as_der().map_err(|_| KeyError::Generation)?;
    let public_der = key.public_key().as_der().map_err(|_| KeyError::Generation)?;
    let private_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", private_der.as_ref()));
    let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", public_der.as_ref()));
    Ok((private_pem, public_pem))
}

/// Encrypts with a public key (SPKI PEM), PKCS#1 v1.5, returning base64: what WeCom does to each
/// record's secret key. Used by the simulator and tests.
pub struct PublicKeyEncryptor {
    key: Pkcs1PublicEncryptingKey,
}

impl PublicKeyEncryptor {
    pub fn from_pem(public_pem: &str) -> Result<Self, KeyError> {
        let pem = pem::parse(public_pem.trim()).map_err(|_| KeyError::NotAKey)?;
        let key = PublicEncryptingKey::from_der(pem.contents()).map_err(|_| KeyError::Invalid)?;
        Ok(PublicKeyEncryptor { key: Pkcs1PublicEncryptingKey::new(key).map_err(|_| KeyError::Invalid)? })
    }

    /// Raw ciphertext (256 bytes).
    pub fn encrypt_raw(&self, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut output = vec![0u8; KEY_BYTES];
        let written = self.key.encrypt(plaintext, &mut output).map_err(|_| KeyError::Invalid)?.len();
        output.truncate(written);
        Ok(output)
    }

    pub fn encrypt_base64(&self, plaintext: &[u8]) -> Result<String, KeyError> {
        Ok(STANDARD.encode(self.encrypt_raw(plaintext)?))
    }
}

/// Wraps a PKCS#1 `RSAPrivateKey` in a PKCS#8 `PrivateKeyInfo` (rsaEncryption, NULL parameters),
/// because aws-lc-rs loads decrypting keys from PKCS#8 only.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const VERSION_0: [u8; 3] = [0x02, 0x01, 0x00];
    const RSA_ALGORITHM: [u8; 15] =
        [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut octet_string = vec![0x04];
    octet_string.extend(der_length(pkcs1.len()));
    octet_string.extend_from_slice(pkcs1);
    let body_len = VERSION_0.len() + RSA_ALGORITHM.len() + octet_string.len();
    let mut out = vec![0x30];
    out.extend(der_length(body_len));
    out.extend_from_slice(&VERSION_0);
    out.extend_from_slice(&RSA_ALGORITHM);
    out.extend(octet_string);
    out
}

fn der_length(length: usize) -> Vec<u8> {
    if length < 0x80 {
        // Fits in the short form.
        return vec![length as u8];
    }
    let bytes: Vec<u8> = length.to_be_bytes().into_iter().skip_while(|&b| b == 0).collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_use_short_and_long_forms() {
        assert_eq!(der_length(5), vec![5]);
        assert_eq!(der_length(0x80), vec![0x81, 0x80]);
        assert_eq!(der_length(1190), vec![0x82, 0x04, 0xa6]);
    }
}
