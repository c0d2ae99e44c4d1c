use std::fmt;

/// Everything that can go wrong in WXBizMsgCrypt, one variant per official return code.
///
/// Messages never contain key material, ciphertext or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// -40001: the signature is absent, malformed or does not match.
    #[error("signature check failed")]
    ValidateSignature,
    /// -40002: the XML or JSON envelope could not be read.
    #[error("envelope could not be parsed: {0}")]
    ParseEnvelope(EnvelopeProblem),
    /// -40004: the EncodingAESKey is not 43 base64 characters decoding to 32 bytes.
    #[error("invalid EncodingAESKey: {0}")]
    IllegalAesKey(&'static str),
    /// -40005: the ReceiveId inside the plaintext is not one we accept.
    #[error("receive id does not match")]
    ValidateReceiveId,
    /// -40007: the ciphertext length or padding is wrong.
    #[error("AES decryption failed")]
    DecryptAes,
    /// -40008: the decrypted buffer is too short for its declared layout.
    #[error("decrypted buffer is malformed")]
    IllegalBuffer,
    /// -40010: the ciphertext is not valid base64.
    #[error("ciphertext is not valid base64")]
    DecodeBase64,
}

impl CryptoError {
    /// The return code the official WXBizMsgCrypt libraries use for this failure.
    pub fn code(&self) -> i32 {
        match self {
            CryptoError::ValidateSignature => -40001,
            CryptoError::ParseEnvelope(_) => -40002,
            CryptoError::IllegalAesKey(_) => -40004,
            CryptoError::ValidateReceiveId => -40005,
            CryptoError::DecryptAes => -40007,
            CryptoError::IllegalBuffer => -40008,
            CryptoError::DecodeBase64 => -40010,
        }
    }

    /// A short stable label, used as a metrics label value.
    pub fn reason(&self) -> &'static str {
        match self {
            CryptoError::ValidateSignature => "signature",
            CryptoError::ParseEnvelope(_) => "envelope",
            CryptoError::IllegalAesKey(_) => "aes_key",
            CryptoError::ValidateReceiveId => "receive_id",
            CryptoError::DecryptAes => "aes",
            CryptoError::IllegalBuffer => "buffer",
            CryptoError::DecodeBase64 => "base64",
        }
    }
}

/// Why an envelope could not be read. Carries no request content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeProblem {
    Empty,
    NotXmlOrJson,
    InvalidXml,
    InvalidJson,
    MissingEncrypt,
    NotUtf8,
}

impl fmt::Display for EnvelopeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            EnvelopeProblem::Empty => "empty body",
            EnvelopeProblem::NotXmlOrJson => "body is neither XML nor JSON",
            EnvelopeProblem::InvalidXml => "invalid XML",
            EnvelopeProblem::InvalidJson => "invalid JSON",
            EnvelopeProblem::MissingEncrypt => "no Encrypt field",
            EnvelopeProblem::NotUtf8 => "body is not UTF-8",
        };
        f.write_str(text)
    }
}
