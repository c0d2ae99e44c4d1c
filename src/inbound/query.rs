//! The callback query string: `msg_signature`, `timestamp`, `nonce` and (GET) `echostr`.
//!
//! Parsed by hand rather than with a form decoder because form decoding turns `+` into a space,
//! and a base64 `echostr` sent with a literal `+` must keep it. Values are percent-decoded only.

use percent_encoding::percent_decode_str;

use super::InboundError;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallbackQuery {
    pub msg_signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub echostr: Option<String>,
}

/// The three values every signature covers, all present.
pub(super) struct SignedQuery<'a> {
    pub msg_signature: &'a str,
    pub timestamp: &'a str,
    pub nonce: &'a str,
}

impl CallbackQuery {
    pub fn parse(raw_query: Option<&str>) -> CallbackQuery {
        let mut query = CallbackQuery::default();
        for pair in raw_query.unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
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
        fn present<'a>(value: &'a Option<String>, name: &'static str) -> Result<&'a str, InboundError> {
            value.as_deref().filter(|v| !v.is_empty()).ok_or(InboundError::MissingParameter(name))
        }
        Ok(SignedQuery {
            msg_signature: present(&self.msg_signature, "msg_signature")?,
            timestamp: present(&self.timestamp, "timestamp")?,
            nonce: present(&self.nonce, "nonce")?,
        })
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
    fn missing_or_empty_signed_values_are_reported_by_name() {
        let query = CallbackQuery::parse(Some("msg_signature=&timestamp=1&nonce=2"));
        assert!(matches!(query.signed(), Err(InboundError::MissingParameter("msg_signature"))));
        let query = CallbackQuery::parse(None);
        assert!(query.signed().is_err());
    }
}
