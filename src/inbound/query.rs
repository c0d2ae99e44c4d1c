//! The callback query string: `msg_signature`, `timestamp`, `nonce` and (GET) `echostr`.
//!
//! Parsed by hand rather than with a form decoder because form decoding turns `+` into a space,
//! and a base64 `echostr` sent with a literal `+` must keep it. Values are percent-decoded only,
//! and borrowed from the query when they hold no `%`. (percent-encoding's decoder feeds a `Vec`
//! byte by byte, which showed in the front door's profile; `decode` here copies runs.)

use std::borrow::Cow;

use super::InboundError;

/// Values borrow from the raw query unless they had to be percent-decoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallbackQuery<'a> {
    pub msg_signature: Option<Cow<'a, str>>,
    pub timestamp: Option<Cow<'a, str>>,
    pub nonce: Option<Cow<'a, str>>,
    pub echostr: Option<Cow<'a, str>>,
}

/// The three values every signature covers, all present.
pub(super) struct SignedQuery<'a> {
    pub msg_signature: &'a str,
    pub timestamp: &'a str,
    pub nonce: &'a str,
}

impl<'a> CallbackQuery<'a> {
    pub fn parse(raw_query: Option<&'a str>) -> CallbackQuery<'a> {
        let mut query = CallbackQuery::default();
        for pair in raw_query.unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value);
            let slot = match name {
                "msg_signature" => &mut query.msg_signature,
                "timestamp" => &mut query.timestamp,
                "nonce" => &mut query.nonce,
                "echostr" => &mut query.echostr,
                _ => continue,
            };
            // The first occurrence wins; later duplicates are ignored.
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        query
    }

    pub(super) fn signed(&self) -> Result<SignedQuery<'_>, InboundError> {
        fn present<'b>(value: &'b Option<Cow<'_, str>>, name: &'static str) -> Result<&'b str, InboundError> {
            value.as_deref().filter(|v| !v.is_empty()).ok_or(InboundError::MissingParameter(name))
        }
        Ok(SignedQuery {
            msg_signature: present(&self.msg_signature, "msg_signature")?,
            timestamp: present(&self.timestamp, "timestamp")?,
            nonce: present(&self.nonce, "nonce")?,
        })
    }
}

/// Percent-decodes `value` (invalid escapes are kept as they are, invalid UTF-8 is replaced).
fn decode(value: &str) -> Cow<'_, str> {
    if !value.contains('%') {
        return Cow::Borrowed(value);
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&byte| byte == b'%') {
        out.extend_from_slice(&rest[..at]);
        let escaped = rest
            .get(at + 1..at + 3)
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                rest = &rest[at + 3..];
            }
            None => {
                out.push(b'%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.extend_from_slice(rest);
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        Err(error) => Cow::Owned(String::from_utf8_lossy(error.as_bytes()).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decodes_and_keeps_literal_plus() {
        let query = CallbackQuery::parse(Some("msg_signature=ab&timestamp=1&nonce=2&echostr=a%2Bb%3D+c&x=y"));
        assert_eq!(query.echostr.as_deref(), Some("a+b=+c"));
        assert_eq!(query.msg_signature.as_deref(), Some("ab"));
    }

    #[test]
    fn decoding_agrees_with_percent_encoding() {
        for value in ["plain", "a%2Bb%3D%3d", "%", "%4", "%zz%41", "%E4%BD%A0%e5%a5%bd", "%FF%FE", "100%25", "%+1%-1"] {
            let expected = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            assert_eq!(decode(value), expected, "{value}");
        }
        assert!(matches!(decode("no-escapes"), Cow::Borrowed(_)));
    }

    proptest::proptest! {
        #[test]
        fn decoding_agrees_with_percent_encoding_on_any_input(value in "([a-zA-Z0-9+/=]|%[0-9a-fA-F+-]{0,2}|\\PC){0,40}") {
            let expected = percent_encoding::percent_decode_str(&value).decode_utf8_lossy();
            proptest::prop_assert_eq!(decode(&value), expected);
        }
    }

    #[test]
    fn missing_or_empty_signed_values_are_reported_by_name() {
        let query = CallbackQuery::parse(Some("msg_signature=&timestamp=1&nonce=2"));
        assert!(matches!(query.signed(), Err(InboundError::MissingParameter("msg_signature"))));
        let query = CallbackQuery::parse(None);
        assert!(query.signed().is_err());
    }
}
